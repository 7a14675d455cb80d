//! Changes a contact — attributes, tags, score, lifecycle stage — emits events and sends
//! messages, as declarative effects the host applies atomically with the journey step.
//!
//! ```json
//! {"set": {"industry": "tech", "greeting": "Dear {{attribute.first_name}}"}, "unset": ["temp"],
//!  "add_tags": ["mql"], "remove_tags": ["cold"], "score": {"delta": 10, "reason": "attended webinar"},
//!  "stage": "growth", "emit": {"name": "became_mql", "properties": {}},
//!  "send": {"channel": "email", "template": "welcome", "variables": {"offer": "SPRING10"}}}
//! ```
//! Every key is optional (but give at least one); effects come out in the order above, `set`
//! entries in the order written. `send` may also be a list of sends. Values are strings,
//! numbers (whole numbers become integers), booleans, or lists of strings. Strings in `set`,
//! `emit.properties` and `send.variables` may use `{{attribute.NAME}}` and `{{event.NAME}}`,
//! filled from the contact and the triggering event when the step runs (empty when missing).

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use wayline_rules::{Check, Entries, Literal, Path, Problems, ROOT};
use wayline_sdk::action::*;

/// The action's config.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    set: Entries<Literal>,
    #[serde(default)]
    unset: Vec<String>,
    #[serde(default)]
    add_tags: Vec<String>,
    #[serde(default)]
    remove_tags: Vec<String>,
    #[serde(default)]
    score: Option<ScoreAdjustment>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    emit: Option<Emit>,
    #[serde(default)]
    send: Option<OneOrMany<Send>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreAdjustment {
    delta: f64,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Emit {
    name: String,
    #[serde(default)]
    properties: Entries<Literal>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    channel: String,
    template: String,
    #[serde(default)]
    variables: Entries<Literal>,
}

/// `{...}` or `[{...}, ...]`.
#[derive(Debug)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn items(&self) -> &[T] {
        match self {
            OneOrMany::One(item) => std::slice::from_ref(item),
            OneOrMany::Many(items) => items,
        }
    }
}

/// Always a list when prepared: there a struct is a list too, so a lone object could not be
/// told from a list of fields.
impl<T: Serialize> Serialize for OneOrMany<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OneOrMany::One(item) if serializer.is_human_readable() => item.serialize(serializer),
            _ => serializer.collect_seq(self.items()),
        }
    }
}

// Written out rather than `#[serde(untagged)]`, which would hide where inside a send the
// mistake is behind "did not match any variant".
impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object or a list of objects")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(OneOrMany::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(OneOrManyVisitor(std::marker::PhantomData))
        } else {
            Vec::deserialize(deserializer).map(OneOrMany::Many)
        }
    }
}

/// Where a run's values come from when filling placeholders.
#[derive(Clone, Copy)]
struct Sources<'a> {
    contact: &'a Contact,
    event: Option<&'a Event>,
}

/// A piece of a text with placeholders.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    /// The inside of `{{...}}`, trimmed.
    Placeholder(&'a str),
    /// A `{{` with no `}}` after it, and the rest of the text.
    Unclosed(&'a str),
}

/// Split `text` into plain text and `{{placeholders}}`.
fn pieces(text: &str) -> impl Iterator<Item = Piece<'_>> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(open) = rest.find("{{") else {
            return Some(Piece::Text(std::mem::take(&mut rest)));
        };
        if open > 0 {
            let (before, after) = rest.split_at(open);
            rest = after;
            return Some(Piece::Text(before));
        }
        match rest.find("}}") {
            Some(close) => {
                let inner = rest[2..close].trim();
                rest = &rest[close + 2..];
                Some(Piece::Placeholder(inner))
            }
            None => Some(Piece::Unclosed(std::mem::take(&mut rest))),
        }
    })
}

/// What a placeholder names: `attribute.NAME` or `event.NAME`.
fn placeholder_source(inner: &str) -> Option<(&str, &str)> {
    match inner.split_once('.')? {
        (_, "") => None,
        (source @ ("attribute" | "event"), name) => Some((source, name)),
        _ => None,
    }
}

fn check_placeholders(text: &str, at: &Path<'_>, problems: &mut Problems) {
    for piece in pieces(text) {
        match piece {
            Piece::Text(_) => {}
            Piece::Placeholder(inner) if placeholder_source(inner).is_some() => {}
            Piece::Placeholder(inner) => problems.add(
                at,
                format!("unknown placeholder `{{{{{inner}}}}}`; use {{{{attribute.NAME}}}} or {{{{event.NAME}}}}"),
            ),
            Piece::Unclosed(_) => problems.add(at, "a `{{` is not closed by `}}`"),
        }
    }
}

/// `text` with its placeholders filled from the contact and event.
fn fill(text: &str, sources: Sources<'_>) -> String {
    let mut filled = String::with_capacity(text.len());
    for piece in pieces(text) {
        match piece {
            Piece::Text(plain) | Piece::Unclosed(plain) => filled.push_str(plain),
            Piece::Placeholder(inner) => {
                let value = match placeholder_source(inner) {
                    Some(("attribute", name)) => sources.contact.attribute(name),
                    Some((_, name)) => sources.event.and_then(|e| e.property(name)),
                    None => None,
                };
                if let Some(value) = value {
                    push_display(&mut filled, value);
                }
            }
        }
    }
    filled
}

fn push_display(out: &mut String, value: &Value) {
    use std::fmt::Write;
    let _ = match value {
        Value::Text(text) => write!(out, "{text}"),
        Value::Boolean(b) => write!(out, "{b}"),
        Value::Integer(i) | Value::Timestamp(i) => write!(out, "{i}"),
        Value::Number(n) => write!(out, "{n}"),
        Value::TextList(items) => write!(out, "{}", items.join(", ")),
    };
}

/// A config value as a contact value: lists must hold strings only (checked by `check_values`).
fn to_value(literal: &Literal, sources: Sources<'_>) -> Value {
    match literal {
        Literal::Bool(b) => Value::Boolean(*b),
        Literal::Integer(i) => Value::Integer(*i),
        Literal::Number(n) => Value::Number(*n),
        Literal::Text(text) if text.contains("{{") => Value::Text(fill(text, sources)),
        Literal::Text(text) => Value::Text(text.clone()),
        Literal::List(items) => Value::TextList(
            items
                .iter()
                .filter_map(|item| item.as_text().map(str::to_owned))
                .collect(),
        ),
    }
}

fn to_attributes(values: &Entries<Literal>, sources: Sources<'_>) -> Vec<Attribute> {
    values
        .iter()
        .map(|(name, literal)| Attribute::new(name, to_value(literal, sources)))
        .collect()
}

fn check_values(values: &Entries<Literal>, at: &Path<'_>, problems: &mut Problems) {
    values.check_names(at, str::eq, problems);
    for (name, literal) in values.iter() {
        let value_at = at.field(name);
        match literal {
            Literal::List(items) if items.iter().any(|i| i.as_text().is_none()) => {
                problems.add(&value_at, "a list value holds strings only");
            }
            Literal::Text(text) => check_placeholders(text, &value_at, problems),
            _ => {}
        }
    }
}

fn check_names(names: &[String], at: &Path<'_>, problems: &mut Problems) {
    for (i, name) in names.iter().enumerate() {
        problems.require_text(&at.index(i), name);
    }
}

/// Report the `names` that `taken` says are also asked for elsewhere: asking for both (set and
/// unset, add and remove) is a contradiction.
fn check_disjoint(
    names: &[String],
    taken: impl Fn(&str) -> bool,
    at: &Path<'_>,
    message: &str,
    problems: &mut Problems,
) {
    for (i, name) in names.iter().enumerate() {
        // An empty name is reported as such already.
        if !name.is_empty() && taken(name) {
            problems.add(&at.index(i), format!("`{name}` {message}"));
        }
    }
}

impl Config {
    fn sends(&self) -> &[Send] {
        self.send.as_ref().map_or(&[], OneOrMany::items)
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.unset.is_empty()
            && self.add_tags.is_empty()
            && self.remove_tags.is_empty()
            && self.score.is_none()
            && self.stage.is_none()
            && self.emit.is_none()
            && self.sends().is_empty()
    }

    /// The effects, in the documented order.
    pub fn effects(&self, contact: &Contact, event: Option<&Event>) -> Vec<Effect> {
        let sources = Sources { contact, event };
        let mut effects = Vec::new();
        effects.extend(
            self.set
                .iter()
                .map(|(name, literal)| Effect::set(name, to_value(literal, sources))),
        );
        effects.extend(self.unset.iter().cloned().map(Effect::UnsetAttribute));
        effects.extend(self.add_tags.iter().cloned().map(Effect::AddTag));
        effects.extend(self.remove_tags.iter().cloned().map(Effect::RemoveTag));
        if let Some(score) = &self.score {
            let reason = score.reason.as_deref().unwrap_or("journey action");
            effects.push(Effect::AdjustScore(ScoreChange::new(score.delta, reason)));
        }
        effects.extend(self.stage.clone().map(Effect::SetLifecycleStage));
        if let Some(emit) = &self.emit {
            effects.push(Effect::emit(
                &emit.name,
                to_attributes(&emit.properties, sources),
            ));
        }
        for send in self.sends() {
            let variables = to_attributes(&send.variables, sources);
            effects.push(Effect::send(&send.channel, &send.template, variables));
        }
        effects
    }
}

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        if self.is_empty() {
            problems.add(&ROOT, "the action changes nothing; give at least one of set, unset, add_tags, remove_tags, score, stage, emit, send");
        }
        let set = ROOT.field("set");
        check_values(&self.set, &set, problems);
        let unset = ROOT.field("unset");
        check_names(&self.unset, &unset, problems);
        let in_set = |name: &str| self.set.iter().any(|(n, _)| n == name);
        check_disjoint(&self.unset, in_set, &unset, "is also in `set`", problems);
        check_names(&self.add_tags, &ROOT.field("add_tags"), problems);
        let remove_tags = ROOT.field("remove_tags");
        check_names(&self.remove_tags, &remove_tags, problems);
        let added = |tag: &str| self.add_tags.iter().any(|t| t == tag);
        check_disjoint(
            &self.remove_tags,
            added,
            &remove_tags,
            "is also in `add_tags`",
            problems,
        );
        if let Some(score) = &self.score {
            let score_at = ROOT.field("score");
            if !score.delta.is_finite() {
                problems.add(&score_at.field("delta"), "must be a finite number");
            }
            if score.reason.as_deref() == Some("") {
                problems.add(
                    &score_at.field("reason"),
                    "must not be empty (leave it out for the default)",
                );
            }
        }
        if let Some(stage) = &self.stage {
            problems.require_text(&ROOT.field("stage"), stage);
        }
        if let Some(emit) = &self.emit {
            let emit_at = ROOT.field("emit");
            problems.require_text(&emit_at.field("name"), &emit.name);
            check_values(&emit.properties, &emit_at.field("properties"), problems);
        }
        self.check_sends(problems);
    }
}

impl Config {
    fn check_sends(&self, problems: &mut Problems) {
        let send_at = ROOT.field("send");
        let check = |send: &Send, at: &Path<'_>, problems: &mut Problems| {
            problems.require_text(&at.field("channel"), &send.channel);
            problems.require_text(&at.field("template"), &send.template);
            check_values(&send.variables, &at.field("variables"), problems);
        };
        match &self.send {
            None => {}
            Some(OneOrMany::One(send)) => check(send, &send_at, problems),
            Some(OneOrMany::Many(sends)) => {
                if sends.is_empty() {
                    problems.add(&send_at, "give at least one send, or leave `send` out");
                }
                for (i, send) in sends.iter().enumerate() {
                    check(send, &send_at.index(i), problems);
                }
            }
        }
    }
}

impl PluginConfig for Config {
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        wayline_rules::parse(json)
    }

    /// The attributes that `{{attribute.NAME}}` placeholders fill in.
    fn attributes(&self) -> Option<Vec<String>> {
        let emitted = self.emit.iter().flat_map(|emit| emit.properties.iter());
        let sent = self.sends().iter().flat_map(|send| send.variables.iter());
        let mut names: Vec<String> = Vec::new();
        for (_, literal) in self.set.iter().chain(emitted).chain(sent) {
            let Literal::Text(text) = literal else {
                continue;
            };
            for piece in pieces(text) {
                if let Piece::Placeholder(inner) = piece
                    && let Some(("attribute", name)) = placeholder_source(inner)
                    && !names.iter().any(|n| n == name)
                {
                    names.push(name.to_owned());
                }
            }
        }
        Some(names)
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct UpdateContact;

impl Action for UpdateContact {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Sets attributes, tags, score and lifecycle stage; emits events; sends messages",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info
    }

    fn run(config: Config, contact: Contact, event: Option<Event>) -> Result<Vec<Effect>, String> {
        Ok(config.effects(&contact, event.as_ref()))
    }
}

export!(UpdateContact);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "update-contact config",
  "type": "object",
  "minProperties": 1,
  "properties": {
    "set": {"$ref": "#/$defs/values", "description": "Attributes to set; strings may use {{attribute.NAME}} / {{event.NAME}}"},
    "unset": {"$ref": "#/$defs/names", "description": "Attributes to remove"},
    "add_tags": {"$ref": "#/$defs/names"},
    "remove_tags": {"$ref": "#/$defs/names"},
    "score": {
      "type": "object",
      "required": ["delta"],
      "properties": {"delta": {"type": "number"}, "reason": {"type": "string", "minLength": 1}},
      "additionalProperties": false
    },
    "stage": {"type": "string", "minLength": 1, "description": "The new lifecycle stage"},
    "emit": {
      "type": "object",
      "required": ["name"],
      "properties": {"name": {"type": "string", "minLength": 1}, "properties": {"$ref": "#/$defs/values"}},
      "additionalProperties": false
    },
    "send": {"anyOf": [{"$ref": "#/$defs/send"}, {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/send"}}]}
  },
  "additionalProperties": false,
  "$defs": {
    "names": {"type": "array", "items": {"type": "string", "minLength": 1}},
    "values": {
      "type": "object",
      "additionalProperties": {"anyOf": [{"type": ["string", "number", "boolean"]}, {"type": "array", "items": {"type": "string"}}]}
    },
    "send": {
      "type": "object",
      "required": ["channel", "template"],
      "properties": {
        "channel": {"type": "string", "minLength": 1},
        "template": {"type": "string", "minLength": 1},
        "variables": {"$ref": "#/$defs/values"}
      },
      "additionalProperties": false
    }
  }
}"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> Contact {
        Contact {
            id: "c1".into(),
            attributes: vec![
                Attribute::new("first_name", Value::Text("Wei".into())),
                Attribute::new("purchases", Value::Integer(2)),
            ],
            tags: vec![],
            score: 0.0,
            lifecycle_stage: "new".into(),
            consents: vec![],
            timezone: "UTC".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn webinar() -> Event {
        Event {
            id: "e1".into(),
            contact_id: "c1".into(),
            name: "webinar_attended".into(),
            properties: vec![Attribute::new("title", Value::Text("CRM 101".into()))],
            timestamp: 0,
        }
    }

    fn effects(config: &str) -> Vec<Effect> {
        Config::parse(config)
            .unwrap()
            .effects(&contact(), Some(&webinar()))
    }

    fn paths(config: &str) -> Vec<String> {
        Config::parse(config)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn every_kind_of_effect_comes_out_in_the_documented_order() {
        let effects = effects(
            r#"{"send": {"channel": "email", "template": "welcome", "variables": {"offer": "SPRING10"}},
                "emit": {"name": "became_mql", "properties": {"via": "webinar"}},
                "stage": "growth", "score": {"delta": 10, "reason": "attended webinar"},
                "remove_tags": ["cold"], "add_tags": ["mql"], "unset": ["temp"],
                "set": {"industry": "tech", "employees": 600, "revenue": 1.5, "vip": true, "interests": ["crm", "ai"]}}"#,
        );
        assert_eq!(
            effects,
            [
                Effect::set("industry", text("tech")),
                Effect::set("employees", Value::Integer(600)),
                Effect::set("revenue", Value::Number(1.5)),
                Effect::set("vip", Value::Boolean(true)),
                Effect::set(
                    "interests",
                    Value::TextList(vec!["crm".into(), "ai".into()])
                ),
                Effect::UnsetAttribute("temp".into()),
                Effect::AddTag("mql".into()),
                Effect::RemoveTag("cold".into()),
                Effect::AdjustScore(ScoreChange::new(10.0, "attended webinar")),
                Effect::SetLifecycleStage("growth".into()),
                Effect::emit("became_mql", vec![Attribute::new("via", text("webinar"))]),
                Effect::send(
                    "email",
                    "welcome",
                    vec![Attribute::new("offer", text("SPRING10"))]
                ),
            ]
        );
    }

    #[test]
    fn the_config_reads_only_the_attributes_its_placeholders_name() {
        let config = Config::parse(
            r#"{"set": {"greeting": "Dear {{attribute.first_name}}", "plain": "x", "n": 1},
                "emit": {"name": "greeted", "properties": {"city": "{{ attribute.city }}"}},
                "send": [{"channel": "sms", "template": "t", "variables": {"name": "{{attribute.first_name}}", "p": "{{event.page}}"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            config.attributes(),
            Some(vec!["first_name".to_owned(), "city".to_owned()])
        );
    }

    #[test]
    fn personalisation_is_filled_from_the_contact_and_the_event() {
        let effects = effects(
            r#"{"set": {"greeting": "Dear {{attribute.first_name}}, your solution is ready",
                        "last_webinar": "{{ event.title }} ({{attribute.purchases}} purchases)",
                        "missing": "[{{attribute.nickname}}]"},
                "send": [{"channel": "sms", "template": "thanks", "variables": {"name": "{{attribute.first_name}}"}},
                         {"channel": "wecom", "template": "followup"}]}"#,
        );
        assert_eq!(
            effects,
            [
                Effect::set("greeting", text("Dear Wei, your solution is ready")),
                Effect::set("last_webinar", text("CRM 101 (2 purchases)")),
                Effect::set("missing", text("[]")),
                Effect::send("sms", "thanks", vec![Attribute::new("name", text("Wei"))]),
                Effect::send("wecom", "followup", vec![]),
            ]
        );
    }

    #[test]
    fn without_an_event_event_placeholders_are_empty() {
        let config = Config::parse(r#"{"set": {"last": "seen at {{event.title}}"}}"#).unwrap();
        assert_eq!(
            config.effects(&contact(), None),
            [Effect::set("last", text("seen at "))]
        );
    }

    #[test]
    fn a_score_without_a_reason_gets_a_default_one() {
        assert_eq!(
            effects(r#"{"score": {"delta": -5}}"#),
            [Effect::AdjustScore(ScoreChange::new(
                -5.0,
                "journey action"
            ))]
        );
    }

    #[test]
    fn placeholders_split_into_pieces() {
        let split: Vec<Piece<'_>> = pieces("a {{ x.y }}b{{z").collect();
        assert_eq!(
            split,
            [
                Piece::Text("a "),
                Piece::Placeholder("x.y"),
                Piece::Text("b"),
                Piece::Unclosed("{{z")
            ]
        );
        assert_eq!(pieces("").count(), 0);
    }

    #[test]
    fn nulls_objects_and_mixed_lists_are_refused_where_they_stand() {
        assert_eq!(paths(r#"{"set": {"a": null}}"#), ["set.a"]);
        assert_eq!(paths(r#"{"set": {"b": {"c": 1}}}"#), ["set.b"]);
        assert_eq!(paths(r#"{"set": {"c": ["x", 1]}}"#), ["set.c"]);
        assert_eq!(
            paths(r#"{"send": [{"channel": "email", "template": "t", "variables": {"v": null}}]}"#),
            ["send[0].variables.v"]
        );
    }

    #[test]
    fn bad_configs_name_each_problem() {
        assert_eq!(
            paths(
                r#"{"set": {"x": "{{contact.name}}", "y": "{{attribute.a", "": 1, "x": 2},
                    "unset": ["y", ""], "add_tags": ["mql"], "remove_tags": ["mql"],
                    "score": {"delta": 1, "reason": ""}, "stage": "",
                    "emit": {"name": ""}, "send": {"channel": "", "template": "t"}}"#
            ),
            [
                "set",
                "set.x",
                "set.x",
                "set.y",
                "unset[1]",
                "unset[0]",
                "remove_tags[0]",
                "score.reason",
                "stage",
                "emit.name",
                "send.channel"
            ]
        );
        assert_eq!(paths("{}"), [""]);
        assert_eq!(paths(r#"{"send": []}"#), ["", "send"]);
        assert_eq!(paths(r#"{"send": [{"channel": "email"}]}"#), ["send[0]"]);
        assert_eq!(paths(r#"{"tags": ["x"]}"#), ["tags"]);
    }

    #[test]
    fn a_config_survives_being_prepared() {
        use wayline_sdk::config::{load, prepare};
        for json in [
            r#"{"set": {"z": "Dear {{attribute.first_name}}", "a": 5, "b": 0.5, "c": true, "d": ["x", "y"]},
                "unset": ["temp"], "add_tags": ["mql"], "remove_tags": ["cold"],
                "score": {"delta": 10, "reason": "webinar"}, "stage": "growth",
                "emit": {"name": "became_mql", "properties": {"p": 1}},
                "send": {"channel": "email", "template": "welcome", "variables": {"offer": "SPRING10"}}}"#,
            r#"{"send": [{"channel": "email", "template": "a"}, {"channel": "sms", "template": "b"}]}"#,
        ] {
            let prepared = prepare::<Config>(json, "update-contact@0.1.0").unwrap();
            let config = load::<Config>(&prepared.config, "update-contact@0.1.0").unwrap();
            let parsed = Config::parse(json).unwrap();
            let (contact, event) = (contact(), webinar());
            assert_eq!(
                config.effects(&contact, Some(&event)),
                parsed.effects(&contact, Some(&event))
            );
        }
    }

    #[test]
    fn configs_of_the_wrong_shape_are_refused() {
        assert!(Config::parse("{}").is_err());
        assert!(Config::parse(r#"{"set": {"a": null}}"#).is_err());
        assert!(Config::parse(r#"{"add_tags": "mql"}"#).is_err());
    }

    #[test]
    fn the_schema_is_a_json_object() {
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert!(schema.is_object());
    }
}
