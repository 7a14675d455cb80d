//! A multi-way branch on a contact's score, stage, tags, attributes, consent, or the triggering
//! event's properties. The first branch whose predicates all hold (`when`) or any holds (`any`)
//! wins; otherwise `default`.
//!
//! ```json
//! {"branches": [
//!    {"label": "high-potential", "when": [{"field": "score", "op": "gte", "value": 70}, {"field": "score", "op": "lte", "value": 90}]},
//!    {"label": "watching", "when": [{"field": "score", "op": "gte", "value": 40}]}],
//!  "default": "low-intent"}
//! ```
//! Fields: `score`, `stage`, `tag` (ops `has` / `not_has`), `attribute.NAME`, `event.NAME`,
//! `consent.CHANNEL` (`granted`, `revoked`, `unknown`).

use serde::Deserialize;
use serde_json::Value as Json;
use wayline_rules::{Op, PluginConfig};
use wayline_sdk::condition::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    branches: Vec<Branch>,
    default: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Branch {
    label: String,
    #[serde(default)]
    when: Vec<Predicate>,
    #[serde(default)]
    any: Vec<Predicate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Predicate {
    field: String,
    op: String,
    #[serde(default)]
    value: Option<Json>,
}

/// A predicate's field, resolved once.
enum Field<'a> {
    Score,
    Stage,
    Tag,
    Attribute(&'a str),
    EventProperty(&'a str),
    Consent(&'a str),
}

impl Predicate {
    fn field(&self) -> Option<Field<'_>> {
        Some(match self.field.as_str() {
            "score" => Field::Score,
            "stage" => Field::Stage,
            "tag" => Field::Tag,
            other => match other.split_once('.') {
                Some(("attribute", name)) if !name.is_empty() => Field::Attribute(name),
                Some(("event", name)) if !name.is_empty() => Field::EventProperty(name),
                Some(("consent", channel)) if !channel.is_empty() => Field::Consent(channel),
                _ => return None,
            },
        })
    }

    fn check(&self, path: &str) -> Option<ConfigProblem> {
        let Some(field) = self.field() else {
            return Some(ConfigProblem::new(
                format!("{path}.field"),
                format!(
                    "unknown field `{}`; use score, stage, tag, attribute.NAME, event.NAME or consent.CHANNEL",
                    self.field
                ),
            ));
        };
        if let Field::Tag = field {
            return match (self.op.as_str(), &self.value) {
                ("has" | "not_has", Some(Json::String(_))) => None,
                ("has" | "not_has", _) => Some(ConfigProblem::new(
                    format!("{path}.value"),
                    "name the tag as a string",
                )),
                _ => Some(ConfigProblem::new(
                    format!("{path}.op"),
                    "tags take `has` or `not_has`",
                )),
            };
        }
        match serde_json::from_value::<Op>(Json::String(self.op.clone())) {
            Ok(op) => op
                .check_literal(self.value.as_ref(), &format!("{path}.value"))
                .err(),
            Err(_) => Some(ConfigProblem::new(
                format!("{path}.op"),
                format!("unknown operator `{}`", self.op),
            )),
        }
    }

    fn holds(&self, contact: &Contact, event: Option<&Event>) -> bool {
        let value: Option<Value> = match self.field() {
            None => return false,
            Some(Field::Tag) => {
                let has = self
                    .value
                    .as_ref()
                    .and_then(Json::as_str)
                    .is_some_and(|tag| contact.has_tag(tag));
                return (self.op == "has") == has;
            }
            Some(Field::Score) => Some(Value::Number(contact.score)),
            Some(Field::Stage) => Some(Value::Text(contact.lifecycle_stage.clone())),
            Some(Field::Attribute(name)) => contact.attribute(name).cloned(),
            Some(Field::EventProperty(name)) => event.and_then(|e| e.property(name)).cloned(),
            Some(Field::Consent(channel)) => Some(Value::Text(consent(contact, channel).into())),
        };
        serde_json::from_value::<Op>(Json::String(self.op.clone()))
            .is_ok_and(|op| op.holds(value.as_ref(), self.value.as_ref()))
    }
}

fn consent(contact: &Contact, channel: &str) -> &'static str {
    match contact
        .consents
        .iter()
        .find(|c| c.channel == channel)
        .map(|c| c.state)
    {
        Some(ConsentState::Granted) => "granted",
        Some(ConsentState::Revoked) => "revoked",
        _ => "unknown",
    }
}

impl Config {
    pub fn branch(&self, contact: &Contact, event: Option<&Event>) -> &str {
        self.branches
            .iter()
            .find(|b| {
                if b.any.is_empty() {
                    b.when.iter().all(|p| p.holds(contact, event))
                } else {
                    b.any.iter().any(|p| p.holds(contact, event))
                }
            })
            .map_or(self.default.as_str(), |b| b.label.as_str())
    }
}

impl PluginConfig for Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        let config = self;
        let mut problems = Vec::new();
        if config.default.is_empty() {
            problems.push(ConfigProblem::new(
                "default",
                "the default branch label must not be empty",
            ));
        }
        for (i, branch) in config.branches.iter().enumerate() {
            let path = format!("branches[{i}]");
            if branch.label.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{path}.label"),
                    "must not be empty",
                ));
            }
            if config.branches[..i].iter().any(|b| b.label == branch.label) {
                problems.push(ConfigProblem::new(
                    format!("{path}.label"),
                    format!("label `{}` is used twice", branch.label),
                ));
            }
            if branch.when.is_empty() == branch.any.is_empty() {
                problems.push(ConfigProblem::new(
                    path.clone(),
                    "give exactly one of `when` (all must hold) or `any` (one must hold)",
                ));
            }
            problems.extend(
                branch
                    .when
                    .iter()
                    .enumerate()
                    .filter_map(|(j, p)| p.check(&format!("{path}.when[{j}]"))),
            );
            problems.extend(
                branch
                    .any
                    .iter()
                    .enumerate()
                    .filter_map(|(j, p)| p.check(&format!("{path}.any[{j}]"))),
            );
        }
        problems
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct AttributeCondition;

impl Condition for AttributeCondition {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            "attribute-condition",
            "0.1.0",
            "Branches on score, stage, tags, attributes, consent or event properties",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        Config::parse(&config).map(drop)
    }

    fn evaluate(config: String, contact: Contact, event: Option<Event>) -> Result<String, String> {
        let config = Config::load(&config)?;
        Ok(config.branch(&contact, event.as_ref()).to_owned())
    }
}

const CONFIG_SCHEMA: &str = r#"{"type":"object","required":["branches","default"],"properties":{"branches":{"type":"array","items":{"type":"object","required":["label"],"properties":{"label":{"type":"string"},"when":{"type":"array"},"any":{"type":"array"}}}},"default":{"type":"string"}},"additionalProperties":false}"#;

export!(AttributeCondition);

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(score: f64, attributes: Vec<Attribute>, tags: &[&str]) -> Contact {
        Contact {
            id: "c1".into(),
            attributes,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            score,
            lifecycle_stage: "new".into(),
            consents: vec![ChannelConsent {
                channel: "email".into(),
                state: ConsentState::Granted,
            }],
            timezone: "UTC".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    const NURTURE_TIERS: &str = r#"{"branches": [
        {"label": "high-potential", "when": [{"field": "score", "op": "gte", "value": 70}, {"field": "score", "op": "lte", "value": 90}]},
        {"label": "watching", "when": [{"field": "score", "op": "gte", "value": 40}, {"field": "score", "op": "lt", "value": 70}]}],
        "default": "low-intent"}"#;

    #[test]
    fn nurture_tiers_by_score() {
        let config = Config::parse(NURTURE_TIERS).unwrap();
        assert_eq!(
            config.branch(&contact(85.0, vec![], &[]), None),
            "high-potential"
        );
        assert_eq!(config.branch(&contact(40.0, vec![], &[]), None), "watching");
        assert_eq!(
            config.branch(&contact(12.0, vec![], &[]), None),
            "low-intent"
        );
        assert_eq!(
            config.branch(&contact(95.0, vec![], &[]), None),
            "low-intent"
        );
    }

    #[test]
    fn attributes_tags_consent_and_any() {
        let config = Config::parse(r#"{"branches": [
            {"label": "south-china-tech", "when": [{"field": "attribute.region", "op": "eq", "value": "South China"}, {"field": "attribute.industry", "op": "eq", "value": "tech"}]},
            {"label": "engaged", "any": [{"field": "tag", "op": "has", "value": "high-intent"}, {"field": "event.link", "op": "eq", "value": "pricing"}]},
            {"label": "emailable", "when": [{"field": "consent.email", "op": "eq", "value": "granted"}]}],
            "default": "other"}"#)
        .unwrap();
        let tech = contact(
            0.0,
            vec![
                Attribute::new("region", Value::Text("South China".into())),
                Attribute::new("industry", Value::Text("tech".into())),
            ],
            &[],
        );
        assert_eq!(config.branch(&tech, None), "south-china-tech");
        assert_eq!(
            config.branch(&contact(0.0, vec![], &["high-intent"]), None),
            "engaged"
        );
        let click = Event {
            id: "e".into(),
            contact_id: "c1".into(),
            name: "email_clicked".into(),
            properties: vec![Attribute::new("link", Value::Text("pricing".into()))],
            timestamp: 0,
        };
        assert_eq!(
            config.branch(&contact(0.0, vec![], &[]), Some(&click)),
            "engaged"
        );
        assert_eq!(config.branch(&contact(0.0, vec![], &[]), None), "emailable");
    }

    #[test]
    fn bad_configs_name_each_problem() {
        let problems = Config::parse(
            r#"{"branches": [
            {"label": "a", "when": [{"field": "scroe", "op": "gte", "value": 1}]},
            {"label": "a", "when": [{"field": "tag", "op": "eq", "value": "x"}]},
            {"label": "b"}], "default": ""}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "default",
                "branches[0].when[0].field",
                "branches[1].label",
                "branches[1].when[0].op",
                "branches[2]"
            ]
        );
    }
}
