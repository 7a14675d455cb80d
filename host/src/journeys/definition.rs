//! A journey as a marketer writes it: nodes and the edges between them, as JSON.
//!
//! ```json
//! {"name": "Welcome",
//!  "reentry": "once",
//!  "goals": [{"event": "purchased"}],
//!  "nodes": [
//!    {"id": "registered", "type": "entry", "plugin": "event-trigger", "config": {"event": "registered"}},
//!    {"id": "welcome", "type": "action", "plugin": "update-contact", "config": {"send": {"channel": "email", "template": "welcome"}}},
//!    {"id": "opened?", "type": "wait", "until_event": "email_opened", "timeout": "24h"},
//!    {"id": "guide", "type": "action", "plugin": "update-contact", "config": {"send": {"channel": "email", "template": "product-guide"}}},
//!    {"id": "simplified", "type": "action", "plugin": "update-contact", "config": {"send": {"channel": "email", "template": "welcome-simplified"}}}],
//!  "edges": [
//!    {"from": "registered", "to": "welcome"}, {"from": "welcome", "to": "opened?"},
//!    {"from": "opened?", "to": "guide", "label": "event"},
//!    {"from": "opened?", "to": "simplified", "label": "timeout"}]}
//! ```
//! Parsing only checks shapes; [`super::validate`] checks the graph and the plugins.

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::Millis;

/// A journey definition: a draft, or the body of a published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub reentry: Reentry,
    /// Conversion events: one ends the journey wherever the contact is, counted as a conversion.
    #[serde(default)]
    pub goals: Vec<Goal>,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub edges: Vec<Edge>,
    /// Publishing enrolls the segment's members of that moment (a backfill), throttled;
    /// members who join later come in through the journey's trigger (`segment_entered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Backfill>,
}

/// A segment whose current members a journey enrolls when it is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    pub segment: String,
    /// Most enrollments queued per second, so a large segment does not crowd out live events.
    #[serde(default = "Backfill::default_rate")]
    pub per_second: u32,
}

impl Backfill {
    /// The fastest a backfill may go.
    pub const MAX_RATE: u32 = 200_000;

    fn default_rate() -> u32 {
        10_000
    }
}

/// May a contact enter a journey again?
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Reentry {
    /// Once ever (the default).
    #[default]
    Once,
    /// Again once this long has passed since they last entered, and only when not in it now.
    After(Millis),
    /// Any number of times, even while already in it.
    Concurrent,
}

impl Serialize for Reentry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Reentry::Once => serializer.serialize_str("once"),
            Reentry::Concurrent => serializer.serialize_str("concurrent"),
            Reentry::After(ms) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("after", &format_duration(*ms))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Reentry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Word(String),
            After { after: Duration },
        }
        match Shape::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "`reentry` is \"once\", \"concurrent\" or {\"after\": \"30d\"}",
            )
        })? {
            Shape::Word(word) if word == "once" => Ok(Reentry::Once),
            Shape::Word(word) if word == "concurrent" => Ok(Reentry::Concurrent),
            Shape::Word(word) => Err(serde::de::Error::custom(format!(
                "unknown reentry policy `{word}`: use \"once\", \"concurrent\" or {{\"after\": \"30d\"}}"
            ))),
            Shape::After { after } => Ok(Reentry::After(after.0)),
        }
    }
}

/// A conversion event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    pub event: String,
}

/// One step of a journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    #[serde(flatten)]
    pub kind: NodeKind,
}

/// What a node does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeKind {
    /// Where contacts come in: a trigger plugin decides which events enroll whom. Contacts
    /// enrolled through the API start at an entry node too.
    Entry {
        #[serde(default)]
        plugin: Option<String>,
        #[serde(default)]
        config: Option<serde_json::Value>,
        /// The plugin binary's sha256, pinned when the journey is published.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// A condition plugin returns a branch label; the edge with that label is taken, or the
    /// unlabelled edge when none has it.
    Condition {
        plugin: String,
        #[serde(default)]
        config: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// An action plugin returns effects, applied atomically with the step.
    Action {
        plugin: String,
        #[serde(default)]
        config: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// Hold the contact: for a while, until a time of day, or until an event (with a timeout).
    Wait(WaitSpec),
    /// Random but deterministic per contact: the same contact always takes the same path.
    Split { paths: Vec<SplitPath> },
    /// The contact leaves the journey here.
    Exit,
}

/// The three kinds of wait, written flat in the node: exactly one of `delay`, `until` or
/// `until_event` (with `timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// A fixed delay: "24h", "3d", "90m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Until the next listed time on a listed weekday, in the contact's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<TimeWindow>,
    /// Until the contact does this (event name); leaves by the edge labelled `event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_event: Option<String>,
    /// With `until_event`: give up after this long and leave by the edge labelled `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// "Weekdays at 10:00 or 15:00".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// `mon` … `sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, 24-hour.
    pub times: Vec<String>,
}

/// One way out of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitPath {
    pub label: String,
    /// Share of contacts, 0–100; the paths of a split add up to 100.
    pub percent: f64,
}

/// A directed edge; `label` selects it among a node's ways out (a branch label, a split path,
/// `event` or `timeout` of a wait). An edge without a label is the default way out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A length of time written as `90s`, `15m`, `24h`, `3d`, `1w` or combined (`1d12h`), or as
/// whole milliseconds. Days are 24 hours. At most [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Duration(pub Millis);

/// The longest duration a journey may name: ten years of 365 days. Longer is a mistake, and
/// bounding it keeps every `now + duration` far from overflowing.
pub const MAX_DURATION: Millis = 3_650 * 86_400_000;

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Millis(u64),
            Text(String),
        }
        let ms = match Shape::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("a duration is text like \"24h\" or whole milliseconds")
        })? {
            Shape::Millis(ms) => Millis::try_from(ms).unwrap_or(Millis::MAX),
            Shape::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom)?,
        };
        if ms > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "`{}` is longer than the longest duration, {}",
                format_duration(ms),
                format_duration(MAX_DURATION)
            )));
        }
        Ok(Duration(ms))
    }
}

const UNITS: [(&str, Millis); 6] = [
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("ms", 1),
    ("m", 60_000),
    ("s", 1_000),
];

/// Parse `1d12h`, `24h`, `90s`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Millis, String> {
    let invalid =
        || format!("`{text}` is not a duration: write it like \"24h\", \"3d\" or \"1d12h\"");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: Millis = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid());
        }
        let amount: Millis = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS
            .iter()
            .find(|(unit, _)| rest.starts_with(unit) && !(*unit == "m" && rest.starts_with("ms")))
            .ok_or_else(invalid)?;
        rest = &rest[unit.len()..];
        total = amount
            .checked_mul(*scale)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    }
    Ok(total)
}

/// The shortest text [`parse_duration`] reads back as `ms`.
pub fn format_duration(ms: Millis) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut left = ms;
    let mut text = String::new();
    for (unit, scale) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if left >= scale {
            text.push_str(&format!("{}{unit}", left / scale));
            left %= scale;
        }
    }
    text
}

/// A node's plugin as its definition names it, to resolve and pin.
pub struct PluginRef<'a> {
    /// `name` or `name@version`; pinned to `name@version` when published.
    pub plugin: &'a mut String,
    /// The binary's sha256, pinned when published.
    pub sha256: &'a mut Option<String>,
    pub config: serde_json::Value,
    pub kind: crate::runtime::PluginKind,
}

impl Node {
    /// The plugin this node names (`name` or `name@version`), if it runs one.
    pub fn plugin_name(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Entry {
                plugin: Some(plugin),
                ..
            }
            | NodeKind::Condition { plugin, .. }
            | NodeKind::Action { plugin, .. } => Some(plugin),
            _ => None,
        }
    }

    /// The plugin this node runs, if it runs one.
    pub fn plugin_mut(&mut self) -> Option<PluginRef<'_>> {
        use crate::runtime::PluginKind;
        let (plugin, sha256, config, kind) = match &mut self.kind {
            NodeKind::Entry {
                plugin: Some(plugin),
                config,
                sha256,
            } => (
                plugin,
                sha256,
                config.clone().unwrap_or(serde_json::Value::Null),
                PluginKind::Trigger,
            ),
            NodeKind::Condition {
                plugin,
                config,
                sha256,
            } => (plugin, sha256, config.clone(), PluginKind::Condition),
            NodeKind::Action {
                plugin,
                config,
                sha256,
            } => (plugin, sha256, config.clone(), PluginKind::Action),
            _ => return None,
        };
        Some(PluginRef {
            plugin,
            sha256,
            config,
            kind,
        })
    }
}

impl Definition {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node's way out for `label`: the edge with that label, else its unlabelled edge.
    pub fn next(&self, from: &str, label: Option<&str>) -> Option<&str> {
        let mut default = None;
        for edge in self.edges.iter().filter(|e| e.from == from) {
            match (&edge.label, label) {
                (Some(l), Some(wanted)) if l == wanted => return Some(&edge.to),
                (None, _) => default = default.or(Some(edge.to.as_str())),
                _ => {}
            }
        }
        default
    }

    /// The entry nodes, in the order written.
    pub fn entries(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Entry { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_the_way_marketers_write_them() {
        assert_eq!(parse_duration("24h"), Ok(86_400_000));
        assert_eq!(parse_duration("3d"), Ok(3 * 86_400_000));
        assert_eq!(parse_duration("1d12h"), Ok(36 * 3_600_000));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        let too_long = serde_json::from_value::<Duration>(serde_json::json!("106751991167d"));
        assert!(
            too_long
                .unwrap_err()
                .to_string()
                .contains("longest duration")
        );
        assert!(serde_json::from_value::<Duration>(serde_json::json!(u64::MAX)).is_err());
        assert_eq!(
            serde_json::from_value::<Duration>(serde_json::json!("3650d")).unwrap(),
            Duration(MAX_DURATION)
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(36 * 3_600_000), "1d12h");
    }

    #[test]
    fn an_edge_with_the_label_wins_over_the_default() {
        let definition: Definition = serde_json::from_value(serde_json::json!({
            "name": "t",
            "nodes": [{"id": "a", "type": "exit"}],
            "edges": [{"from": "c", "to": "x"}, {"from": "c", "to": "y", "label": "yes"}]
        }))
        .unwrap();
        assert_eq!(definition.next("c", Some("yes")), Some("y"));
        assert_eq!(definition.next("c", Some("no")), Some("x"));
        assert_eq!(definition.next("c", None), Some("x"));
    }

    #[test]
    fn reentry_reads_all_three_policies() {
        let read = |v: serde_json::Value| serde_json::from_value::<Reentry>(v);
        assert_eq!(read(serde_json::json!("once")).unwrap(), Reentry::Once);
        assert_eq!(
            read(serde_json::json!("concurrent")).unwrap(),
            Reentry::Concurrent
        );
        assert_eq!(
            read(serde_json::json!({"after": "30d"})).unwrap(),
            Reentry::After(30 * 86_400_000)
        );
        assert!(read(serde_json::json!("twice")).is_err());
    }
}
