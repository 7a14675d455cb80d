//! Lead scoring from a rule table: points per behaviour (event) and per attribute, optionally
//! weighted, every change explained. Both tables of the DOMAIN guide fit:
//!
//! ```json
//! {"rules": [
//!   {"event": "form_submitted", "points": 10, "reason": "filled a form"},
//!   {"event": "page_viewed", "where": [{"property": "page_type", "op": "eq", "value": "product"}], "points": 5},
//!   {"event": "whitepaper_downloaded", "points": 5, "weight": 0.2},
//!   {"attribute": "company_size", "op": "gte", "value": 500, "points": 15, "once": true}],
//!  "max_per_event": 50}
//! ```
//! - An event rule matches an event by name, and its `where` filters (as in the event trigger).
//! - An attribute rule is checked on every scored event: `op` and `value` compare the contact's
//!   attribute (`op` defaults to `eq` with a value, `exists` without).
//! - `points` may be negative; `weight` (0–1, default 1) scales them: the change is
//!   `points × weight`. `reason` explains it; the default is generated
//!   (`whitepaper_downloaded: 5 × 20%`, `company_size ≥ 500`).
//! - `once: true` awards a rule at most once per contact, remembered in the plugin's key-value
//!   space under `once/{contact_id}/{rule_index}` (so reordering rules resets it).
//! - `max_per_event` caps one event's total in either direction; the cut is its own
//!   explained change (`capped at 50 points per event`), so the changes still add up.

use serde::{Deserialize, Serialize};
use wayline_rules::{
    Check, Literal, Op, Path, Problems, PropertyFilter, ROOT, Subject, Text, check_filters,
};
use wayline_sdk::scorer::*;

/// The scorer's config: a rule table.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    // Required; it defaults so that a missing table is reported at `rules`.
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    max_per_event: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    event: Option<Text>,
    #[serde(default, rename = "where")]
    filters: Vec<PropertyFilter>,
    #[serde(default)]
    attribute: Option<Text>,
    #[serde(default)]
    op: Option<Op>,
    #[serde(default)]
    value: Option<Literal>,
    points: f64,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    reason: Option<Text>,
    #[serde(default)]
    once: bool,
}

impl Rule {
    /// The attribute comparison: `eq` when a value is given, `exists` when not.
    fn attribute_op(&self) -> Op {
        self.op.unwrap_or(if self.value.is_some() {
            Op::Eq
        } else {
            Op::Exists
        })
    }

    /// Does this rule score `event` for `contact`? Allocates nothing: it runs for every rule.
    fn applies(&self, contact: &Contact, event: &Event) -> bool {
        match (&self.event, &self.attribute) {
            (Some(name), None) => {
                name.is(&event.name) && self.filters.iter().all(|f| f.holds(event))
            }
            (None, Some(attribute)) => {
                let subject = attribute
                    .as_str()
                    .and_then(|name| contact.attribute(name))
                    .map(Subject::from);
                self.attribute_op().holds(subject, self.value.as_ref())
            }
            // Refused by `check`.
            _ => false,
        }
    }

    fn change(&self) -> ScoreChange {
        let delta = self.points * self.weight.unwrap_or(1.0);
        let reason = match &self.reason {
            Some(reason) => reason.to_string_lossy(),
            None => self.explain(),
        };
        ScoreChange::new(delta, reason)
    }

    /// The generated reason: what matched, and the weighting when there is one.
    fn explain(&self) -> String {
        let what = match (&self.event, &self.attribute, &self.value) {
            (Some(event), _, _) => event.to_string(),
            (None, Some(attribute), Some(value)) => {
                format!("{attribute} {} {value}", self.attribute_op().symbol())
            }
            (None, Some(attribute), None) => {
                format!("{attribute} {}", self.attribute_op().symbol())
            }
            (None, None, _) => String::new(),
        };
        match self.weight {
            Some(weight) => format!("{what}: {} × {}%", self.points, percent(weight)),
            None => what,
        }
    }

    fn check(&self, at: &Path<'_>, problems: &mut Problems) {
        match (&self.event, &self.attribute) {
            (Some(_), Some(_)) => problems.add(
                at,
                "a rule scores either an `event` or an `attribute`, not both",
            ),
            (None, None) => {
                problems.add(at, "give the `event` or the `attribute` this rule scores")
            }
            (Some(event), None) => self.check_event_rule(event, at, problems),
            (None, Some(attribute)) => self.check_attribute_rule(attribute, at, problems),
        }
        if !self.points.is_finite() {
            problems.add(&at.field("points"), "must be a finite number");
        }
        if self.weight.is_some_and(|w| !(0.0..=1.0).contains(&w)) {
            problems.add(
                &at.field("weight"),
                "must be between 0 and 1 (a share: 0.2 for 20%)",
            );
        }
        if self.reason.as_ref().is_some_and(Text::is_empty) {
            problems.add(
                &at.field("reason"),
                "must not be empty (leave it out for a generated one)",
            );
        }
    }

    fn check_event_rule(&self, event: &Text, at: &Path<'_>, problems: &mut Problems) {
        problems.require_text(&at.field("event"), event);
        if self.op.is_some() || self.value.is_some() {
            let key = if self.op.is_some() { "op" } else { "value" };
            problems.add(
                &at.field(key),
                "`op` and `value` belong to attribute rules; filter an event's properties with `where`",
            );
        }
        check_filters(&self.filters, &at.field("where"), problems);
    }

    fn check_attribute_rule(&self, attribute: &Text, at: &Path<'_>, problems: &mut Problems) {
        problems.require_text(&at.field("attribute"), attribute);
        if !self.filters.is_empty() {
            problems.add(
                &at.field("where"),
                "`where` filters an event's properties; an attribute rule compares with `op` and `value`",
            );
        }
        let op = self.attribute_op();
        if let Some(problem) = op.literal_problem(self.value.as_ref()) {
            let key = if self.value.is_some() { "value" } else { "op" };
            problems.add(&at.field(key), problem);
        }
    }
}

/// A weight as a percentage without float noise: 0.3 → "30", 0.125 → "12.5".
fn percent(weight: f64) -> f64 {
    (weight * 10_000.0).round() / 100.0
}

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        let rules = ROOT.field("rules");
        if self.rules.is_empty() {
            problems.add(&rules, "give at least one rule");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.check(&rules.index(i), problems);
        }
        if self
            .max_per_event
            .is_some_and(|m| !m.is_finite() || m <= 0.0)
        {
            problems.add(&ROOT.field("max_per_event"), "must be a positive number");
        }
    }
}

impl PluginConfig for Config {
    /// Parse and check the table, then write each rule's generated reason into it, so scoring
    /// copies a prepared reason instead of formatting one on every call.
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        let mut config: Config = wayline_rules::parse(json)?;
        for rule in &mut config.rules {
            if rule.reason.is_none() {
                rule.reason = Some(rule.explain().into());
            }
        }
        Ok(config)
    }

    /// The attributes that attribute rules compare; event rules read the event only.
    fn attributes(&self) -> Option<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for name in self.rules.iter().filter_map(|rule| rule.attribute.as_ref()) {
            let name = name.to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Some(names)
    }
}

impl Config {
    /// Score `event` for `contact`, one change per matching rule in table order.
    /// `already_awarded(rule_index)` is asked only for matching `once` rules; it says whether
    /// that rule was awarded to this contact before (and remembers that it now is).
    pub fn score(
        &self,
        contact: &Contact,
        event: &Event,
        mut already_awarded: impl FnMut(usize) -> bool,
    ) -> Vec<ScoreChange> {
        let mut changes = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.applies(contact, event) && !(rule.once && already_awarded(index)) {
                changes.push(rule.change());
            }
        }
        if let Some(cap) = self.max_per_event {
            cap_total(&mut changes, cap);
        }
        changes
    }
}

/// Keep one event's total within ±`cap` by adding the cut as its own change, so every change
/// stays as its rule explains it and the list still sums to what the score moves by.
fn cap_total(changes: &mut Vec<ScoreChange>, cap: f64) {
    let total: f64 = changes.iter().map(|c| c.delta).sum();
    if total.abs() > cap {
        changes.push(ScoreChange::new(
            total.signum() * cap - total,
            format!("capped at {cap} points per event"),
        ));
    }
}

/// Whether a `once` rule was awarded to the contact before; records that it now is.
fn awarded_before(contact_id: &str, rule: usize) -> bool {
    use wayline_sdk::host::{Level, kv, log};
    let key = format!("once/{contact_id}/{rule}");
    if kv::get(&key).is_some() {
        return true;
    }
    if let Err(error) = kv::set(&key, &[1]) {
        // Awarding it again later beats never awarding it; say why it may repeat.
        log(
            Level::Warn,
            &format!("could not remember rule {rule} for contact {contact_id}: {error}"),
        );
    }
    false
}

/// The plugin; its exports exist in the wasm build.
pub struct RuleScorer;

impl Scorer for RuleScorer {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Lead scoring from a table of weighted points per behaviour and per attribute",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info
    }

    fn score(config: Config, contact: Contact, event: Event) -> Result<Vec<ScoreChange>, String> {
        Ok(config.score(&contact, &event, |rule| awarded_before(&contact.id, rule)))
    }
}

export!(RuleScorer);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "rule-scorer config",
  "type": "object",
  "required": ["rules"],
  "properties": {
    "rules": {
      "type": "array",
      "minItems": 1,
      "items": {
        "type": "object",
        "required": ["points"],
        "properties": {
          "event": {"type": "string", "minLength": 1, "description": "Score events of this name"},
          "where": {"type": "array", "items": {"$ref": "#/$defs/filter"}, "description": "Event property filters; all must hold"},
          "attribute": {"type": "string", "minLength": 1, "description": "Score contacts whose attribute compares true, on every event"},
          "op": {"$ref": "#/$defs/op"},
          "value": {"$ref": "#/$defs/value"},
          "points": {"type": "number"},
          "weight": {"type": "number", "minimum": 0, "maximum": 1, "description": "Share of the points awarded (0.2 for 20%)"},
          "reason": {"type": "string", "minLength": 1},
          "once": {"type": "boolean", "description": "Award at most once per contact"}
        },
        "oneOf": [{"required": ["event"]}, {"required": ["attribute"]}],
        "additionalProperties": false
      }
    },
    "max_per_event": {"type": "number", "exclusiveMinimum": 0, "description": "Cap on one event's total change, either direction"}
  },
  "additionalProperties": false,
  "$defs": {
    "op": {"enum": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "starts_with", "has", "not_has", "exists", "not_exists"]},
    "literal": {"type": ["string", "number", "boolean"]},
    "value": {"anyOf": [{"$ref": "#/$defs/literal"}, {"type": "array", "items": {"$ref": "#/$defs/literal"}}]},
    "filter": {
      "type": "object",
      "required": ["property", "op"],
      "properties": {"property": {"type": "string", "minLength": 1}, "op": {"$ref": "#/$defs/op"}, "value": {"$ref": "#/$defs/value"}},
      "additionalProperties": false
    }
  }
}"##;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn contact(company_size: i64) -> Contact {
        Contact {
            id: "c1".into(),
            attributes: vec![
                Attribute::new("industry", Value::Text("tech".into())),
                Attribute::new("company_size", Value::Integer(company_size)),
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

    fn event(name: &str, properties: Vec<Attribute>) -> Event {
        Event {
            id: "e".into(),
            contact_id: "c1".into(),
            name: name.into(),
            properties,
            timestamp: 0,
        }
    }

    fn text(name: &str, value: &str) -> Attribute {
        Attribute::new(name, Value::Text(value.into()))
    }

    fn total(changes: &[ScoreChange]) -> f64 {
        changes.iter().map(|c| c.delta).sum()
    }

    fn paths(config: &str) -> Vec<String> {
        Config::parse(config)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    /// DOMAIN.md §2, first table.
    const POINTS_TABLE: &str = r#"{"rules": [
        {"event": "form_submitted", "points": 10, "reason": "filled a form"},
        {"event": "whitepaper_downloaded", "points": 20},
        {"event": "page_viewed", "where": [{"property": "page_type", "op": "eq", "value": "product"}], "points": 5},
        {"event": "email_opened", "points": 3},
        {"attribute": "company_size", "op": "gte", "value": 500, "points": 15, "once": true}]}"#;

    /// DOMAIN.md §2, second table.
    const WEIGHTED_TABLE: &str = r#"{"rules": [
        {"event": "whitepaper_downloaded", "points": 5, "weight": 0.2},
        {"event": "webinar_attended", "points": 10, "weight": 0.3},
        {"event": "email_clicked", "where": [{"property": "link", "op": "eq", "value": "pricing"}], "points": 8, "weight": 0.25},
        {"event": "sales_contacted", "points": 15, "weight": 0.25}]}"#;

    #[test]
    fn a_big_company_filling_a_form_gets_the_company_points_only_once() {
        let config = Config::parse(POINTS_TABLE).unwrap();
        let mut awarded = BTreeSet::new();
        let mut once = |rule| !awarded.insert(rule);
        let form = event("form_submitted", vec![]);
        let first = config.score(&contact(600), &form, &mut once);
        let reasons: Vec<&str> = first.iter().map(|c| c.reason.as_str()).collect();
        assert_eq!(reasons, ["filled a form", "company_size ≥ 500"]);
        assert_eq!(total(&first), 25.0);
        assert_eq!(total(&config.score(&contact(600), &form, &mut once)), 10.0);
    }

    #[test]
    fn the_config_reads_only_the_attributes_its_rules_compare() {
        let config = Config::parse(POINTS_TABLE).unwrap();
        assert_eq!(config.attributes(), Some(vec!["company_size".to_owned()]));
        let events_only = Config::parse(WEIGHTED_TABLE).unwrap();
        assert_eq!(events_only.attributes(), Some(vec![]));
    }

    #[test]
    fn only_product_pages_score_a_page_view() {
        let config = Config::parse(POINTS_TABLE).unwrap();
        let product = event("page_viewed", vec![text("page_type", "product")]);
        let blog = event("page_viewed", vec![text("page_type", "blog")]);
        assert_eq!(total(&config.score(&contact(10), &product, |_| false)), 5.0);
        assert!(config.score(&contact(10), &blog, |_| false).is_empty());
        assert!(
            config
                .score(&contact(10), &event("page_viewed", vec![]), |_| false)
                .is_empty()
        );
    }

    #[test]
    fn the_weighted_table_explains_each_change() {
        let config = Config::parse(WEIGHTED_TABLE).unwrap();
        let score = |e: &Event| config.score(&contact(10), e, |_| false);
        let download = score(&event("whitepaper_downloaded", vec![]));
        assert_eq!(download.len(), 1);
        assert!((download[0].delta - 1.0).abs() < 1e-9);
        assert_eq!(download[0].reason, "whitepaper_downloaded: 5 × 20%");
        let webinar = score(&event("webinar_attended", vec![]));
        assert!((webinar[0].delta - 3.0).abs() < 1e-9);
        assert_eq!(webinar[0].reason, "webinar_attended: 10 × 30%");
        let pricing = event("email_clicked", vec![text("link", "pricing")]);
        assert!((total(&score(&pricing)) - 2.0).abs() < 1e-9);
        assert!(score(&event("email_clicked", vec![text("link", "blog")])).is_empty());
    }

    #[test]
    fn the_cap_is_an_explained_change_of_its_own() {
        let config = Config::parse(
            r#"{"rules": [{"event": "x", "points": 40}, {"event": "x", "points": 40}], "max_per_event": 50}"#,
        )
        .unwrap();
        let changes = config.score(&contact(0), &event("x", vec![]), |_| false);
        assert_eq!(changes.len(), 3);
        assert_eq!(
            (changes[2].delta, changes[2].reason.as_str()),
            (-30.0, "capped at 50 points per event")
        );
        assert_eq!(total(&changes), 50.0);

        let penalties = Config::parse(
            r#"{"rules": [{"event": "unsubscribed", "points": -80}], "max_per_event": 50}"#,
        )
        .unwrap();
        let changes = penalties.score(&contact(0), &event("unsubscribed", vec![]), |_| false);
        assert_eq!(total(&changes), -50.0);

        let under = config.score(&contact(0), &event("y", vec![]), |_| false);
        assert!(under.is_empty());
    }

    #[test]
    fn attribute_rules_default_to_eq_or_exists_and_explain_themselves() {
        let config = Config::parse(
            r#"{"rules": [{"attribute": "industry", "value": "tech", "points": 5},
                          {"attribute": "phone", "points": 2},
                          {"attribute": "industry", "op": "in", "value": ["tech", "finance"], "points": 1, "weight": 0.5}]}"#,
        )
        .unwrap();
        let changes = config.score(&contact(0), &event("any", vec![]), |_| false);
        let explained: Vec<(f64, &str)> = changes
            .iter()
            .map(|c| (c.delta, c.reason.as_str()))
            .collect();
        assert_eq!(
            explained,
            [
                (5.0, "industry = tech"),
                (0.5, "industry in [tech, finance]: 1 × 50%")
            ]
        );
    }

    #[test]
    fn a_once_rule_is_looked_up_only_when_it_matches() {
        let config = Config::parse(POINTS_TABLE).unwrap();
        let mut asked = Vec::new();
        config.score(&contact(10), &event("email_opened", vec![]), |rule| {
            asked.push(rule);
            false
        });
        assert!(asked.is_empty(), "a small company never matches rule 4");
    }

    #[test]
    fn bad_rules_are_located() {
        assert_eq!(
            paths(
                r#"{"rules": [{"points": 1},
                              {"event": "x", "points": 1, "weight": 20},
                              {"attribute": "size", "op": "gte", "value": "big", "points": 1},
                              {"event": "x", "op": "gte", "value": 1, "points": 1},
                              {"attribute": "size", "where": [], "op": "gte", "points": 1},
                              {"event": "", "attribute": "y", "points": 1},
                              {"event": "x", "points": 1, "reason": ""}],
                    "max_per_event": 0}"#
            ),
            [
                "rules[0]",
                "rules[1].weight",
                "rules[2].value",
                "rules[3].op",
                "rules[4].op",
                "rules[5]",
                "rules[6].reason",
                "max_per_event"
            ]
        );
        assert_eq!(
            paths(r#"{"rules": [{"event": "x", "points": "ten"}]}"#),
            ["rules[0].points"]
        );
        assert_eq!(paths(r#"{}"#), ["rules"]);
        assert_eq!(
            paths(
                r#"{"rules": [{"event": "x", "points": 1, "where": [{"property": "p", "op": "in", "value": "a"}]}]}"#
            ),
            ["rules[0].where[0].value"]
        );
    }

    #[test]
    fn a_config_survives_being_prepared() {
        use wayline_sdk::config::{load, prepare};
        for table in [POINTS_TABLE, WEIGHTED_TABLE] {
            let prepared = prepare::<Config>(table, "rule-scorer@0.1.0").unwrap();
            let config = load::<Config>(&prepared.config, "rule-scorer@0.1.0").unwrap();
            let parsed = Config::parse(table).unwrap();
            assert_eq!(format!("{config:?}"), format!("{parsed:?}"));
        }
    }

    #[test]
    fn a_rule_that_scores_nothing_is_refused() {
        let problems = Config::parse(r#"{"rules": [{"points": 1}]}"#).unwrap_err();
        assert_eq!(problems[0].path, "rules[0]");
    }

    #[test]
    fn the_schema_is_a_json_object() {
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert!(schema.is_object());
    }
}
