//! Lead scoring from a rule table: points per behaviour (event) and per attribute, optionally
//! weighted, each change explained. Both tables of the DOMAIN guide fit:
//!
//! ```json
//! {"rules": [
//!   {"event": "form_submitted", "points": 10, "reason": "filled a form"},
//!   {"event": "page_viewed", "where": [{"property": "page_type", "op": "eq", "value": "product"}], "points": 5},
//!   {"event": "whitepaper_downloaded", "points": 5, "weight": 0.2},
//!   {"attribute": "company_size", "op": "gte", "value": 500, "points": 15, "once": true}],
//!  "max_per_event": 50}
//! ```
//! Attribute rules are checked on every scored event; `once` awards one at most once per contact
//! (remembered in the plugin's key-value space). `max_per_event` caps one call's total.

use serde::Deserialize;
use serde_json::Value as Json;
pub use wayline_rules::PluginConfig;
use wayline_rules::{Op, PropertyFilter};
use wayline_sdk::scorer::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    rules: Vec<Rule>,
    #[serde(default)]
    max_per_event: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    event: Option<String>,
    #[serde(default, rename = "where")]
    filters: Vec<PropertyFilter>,
    #[serde(default)]
    attribute: Option<String>,
    #[serde(default)]
    op: Option<Op>,
    #[serde(default)]
    value: Option<Json>,
    points: f64,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    once: bool,
}

impl Rule {
    fn check(&self, path: &str, problems: &mut Vec<ConfigProblem>) {
        match (&self.event, &self.attribute) {
            (Some(_), Some(_)) | (None, None) => problems.push(ConfigProblem::new(
                path,
                "a rule scores either an `event` or an `attribute`",
            )),
            (Some(name), None) if name.is_empty() => problems.push(ConfigProblem::new(
                format!("{path}.event"),
                "must not be empty",
            )),
            (None, Some(_)) => {
                let op = self.op.unwrap_or(Op::Eq);
                if let Err(problem) =
                    op.check_literal(self.value.as_ref(), &format!("{path}.value"))
                {
                    problems.push(problem);
                }
            }
            _ => {}
        }
        problems.extend(
            self.filters
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.check(&format!("{path}.where[{i}]"))),
        );
        if !self.points.is_finite() {
            problems.push(ConfigProblem::new(
                format!("{path}.points"),
                "must be a finite number",
            ));
        }
        if self.weight.is_some_and(|w| !(0.0..=1.0).contains(&w)) {
            problems.push(ConfigProblem::new(
                format!("{path}.weight"),
                "must be between 0 and 1 (a share, e.g. 0.2 for 20%)",
            ));
        }
    }

    fn applies(&self, contact: &Contact, event: &Event) -> bool {
        match (&self.event, &self.attribute) {
            (Some(name), None) => {
                *name == event.name && self.filters.iter().all(|f| f.holds(event))
            }
            (None, Some(attribute)) => self
                .op
                .unwrap_or(Op::Eq)
                .holds(contact.attribute(attribute), self.value.as_ref()),
            _ => false,
        }
    }

    fn change(&self) -> ScoreChange {
        let weight = self.weight.unwrap_or(1.0);
        let reason = match (&self.reason, &self.event, &self.attribute) {
            (Some(reason), _, _) => reason.clone(),
            (None, Some(event), _) if self.weight.is_some() => {
                format!("{event}: {} × {}%", self.points, weight * 100.0)
            }
            (None, Some(event), _) => event.clone(),
            (None, None, Some(attribute)) => format!("attribute {attribute}"),
            _ => String::new(),
        };
        ScoreChange::new(self.points * weight, reason)
    }
}

impl PluginConfig for Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        let config = self;
        let mut problems = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            rule.check(&format!("rules[{i}]"), &mut problems);
        }
        if config
            .max_per_event
            .is_some_and(|m| !m.is_finite() || m < 0.0)
        {
            problems.push(ConfigProblem::new(
                "max_per_event",
                "must be a positive number",
            ));
        }
        problems
    }
}

impl Config {
    /// Score `event`; `already_awarded(index)` says whether a `once` rule was awarded before.
    pub fn score(
        &self,
        contact: &Contact,
        event: &Event,
        mut already_awarded: impl FnMut(usize) -> bool,
    ) -> Vec<ScoreChange> {
        let mut changes: Vec<ScoreChange> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(index, rule)| {
                rule.applies(contact, event) && !(rule.once && already_awarded(*index))
            })
            .map(|(_, rule)| rule.change())
            .collect();
        if let Some(cap) = self.max_per_event {
            let total: f64 = changes.iter().map(|c| c.delta).sum();
            if total.abs() > cap {
                let scale = cap / total.abs();
                changes.iter_mut().for_each(|c| c.delta *= scale);
                changes.push(ScoreChange::new(
                    0.0,
                    format!("capped at {cap} points per event"),
                ));
            }
        }
        changes
    }
}

/// Records a `once` rule in the plugin's key-value space; true if it was already recorded.
fn awarded_before(contact_id: &str, rule: usize) -> bool {
    let key = format!("once/{contact_id}/{rule}");
    if wayline_sdk::host::kv::get(&key).is_some() {
        return true;
    }
    // If the space is full the rule is awarded again next time; better than never.
    let _ = wayline_sdk::host::kv::set(&key, &[1]);
    false
}

/// The plugin; its exports exist in the wasm build.
pub struct RuleScorer;

impl Scorer for RuleScorer {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            "rule-scorer",
            "0.1.0",
            "Lead scoring from a rule table of behaviours and attributes",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        Config::parse(&config).map(drop)
    }

    fn score(config: String, contact: Contact, event: Event) -> Result<Vec<ScoreChange>, String> {
        let config = Config::load(&config)?;
        Ok(config.score(&contact, &event, |rule| awarded_before(&contact.id, rule)))
    }
}

const CONFIG_SCHEMA: &str = r#"{"type":"object","required":["rules"],"properties":{"rules":{"type":"array","items":{"type":"object","required":["points"],"properties":{"event":{"type":"string"},"where":{"type":"array"},"attribute":{"type":"string"},"op":{"type":"string"},"value":{},"points":{"type":"number"},"weight":{"type":"number","minimum":0,"maximum":1},"reason":{"type":"string"},"once":{"type":"boolean"}}}},"max_per_event":{"type":"number","minimum":0}},"additionalProperties":false}"#;

export!(RuleScorer);

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(company_size: i64) -> Contact {
        Contact {
            id: "c1".into(),
            attributes: vec![Attribute::new("company_size", Value::Integer(company_size))],
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

    const POINTS_TABLE: &str = r#"{"rules": [
        {"event": "form_submitted", "points": 10, "reason": "filled a form"},
        {"event": "whitepaper_downloaded", "points": 20},
        {"event": "page_viewed", "where": [{"property": "page_type", "op": "eq", "value": "product"}], "points": 5},
        {"event": "email_opened", "points": 3},
        {"attribute": "company_size", "op": "gte", "value": 500, "points": 15, "once": true}]}"#;

    const WEIGHTED_TABLE: &str = r#"{"rules": [
        {"event": "whitepaper_downloaded", "points": 5, "weight": 0.2},
        {"event": "webinar_attended", "points": 10, "weight": 0.3},
        {"event": "email_clicked", "where": [{"property": "link", "op": "eq", "value": "pricing"}], "points": 8, "weight": 0.25},
        {"event": "sales_contacted", "points": 15, "weight": 0.25}]}"#;

    fn total(changes: &[ScoreChange]) -> f64 {
        changes.iter().map(|c| c.delta).sum()
    }

    #[test]
    fn the_points_table_scores_behaviour_and_company_size_once() {
        let config = Config::parse(POINTS_TABLE).unwrap();
        let mut awarded = std::collections::BTreeSet::new();
        let mut once = |rule| !awarded.insert(rule);
        assert_eq!(
            total(&config.score(&contact(600), &event("form_submitted", vec![]), &mut once)),
            25.0
        );
        assert_eq!(
            total(&config.score(&contact(600), &event("form_submitted", vec![]), &mut once)),
            10.0
        );
        let product = event(
            "page_viewed",
            vec![Attribute::new("page_type", Value::Text("product".into()))],
        );
        assert_eq!(total(&config.score(&contact(10), &product, |_| false)), 5.0);
        assert_eq!(
            total(&config.score(&contact(10), &event("page_viewed", vec![]), |_| false)),
            0.0
        );
    }

    #[test]
    fn the_weighted_table_explains_each_change() {
        let config = Config::parse(WEIGHTED_TABLE).unwrap();
        let changes = config.score(
            &contact(10),
            &event("whitepaper_downloaded", vec![]),
            |_| false,
        );
        assert_eq!(changes.len(), 1);
        assert!((changes[0].delta - 1.0).abs() < 1e-9);
        assert_eq!(changes[0].reason, "whitepaper_downloaded: 5 × 20%");
        let pricing = event(
            "email_clicked",
            vec![Attribute::new("link", Value::Text("pricing".into()))],
        );
        assert_eq!(total(&config.score(&contact(10), &pricing, |_| false)), 2.0);
    }

    #[test]
    fn a_cap_limits_one_event() {
        let config = Config::parse(r#"{"rules": [{"event": "x", "points": 40}, {"event": "x", "points": 40}], "max_per_event": 50}"#).unwrap();
        assert_eq!(
            total(&config.score(&contact(0), &event("x", vec![]), |_| false)),
            50.0
        );
    }

    #[test]
    fn bad_rules_are_located() {
        let problems = Config::parse(r#"{"rules": [{"points": 1}, {"event": "x", "points": 1, "weight": 20}, {"attribute": "size", "op": "gte", "value": "big", "points": 1}]}"#).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["rules[0]", "rules[1].weight", "rules[2].value"]);
        assert!(
            Config::parse(r#"{"rules": [{"event": "x", "points": "ten"}]}"#).unwrap_err()[0].path
                == "rules[0].points"
        );
    }
}
