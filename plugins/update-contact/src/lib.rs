//! Changes a contact: attributes, tags, score, lifecycle stage; emits events; sends messages.
//! Returns declarative effects, applied by the host atomically with the journey step.
//!
//! ```json
//! {"set": {"industry": "tech", "last_offer": "{{event.offer}}"}, "unset": ["temp"],
//!  "add_tags": ["mql"], "remove_tags": ["cold"], "score": {"delta": 10, "reason": "attended webinar"},
//!  "stage": "growth", "emit": {"name": "became_mql", "properties": {}},
//!  "send": {"channel": "email", "template": "welcome", "variables": {"offer": "SPRING10"}}}
//! ```
//! Effects come out in that order. `send` may be a list. Text in `set` may use
//! `{{attribute.NAME}}` and `{{event.NAME}}`, filled at run time (empty when missing).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;
use wayline_rules::PluginConfig;
use wayline_sdk::action::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    set: BTreeMap<String, Json>,
    #[serde(default)]
    unset: Vec<String>,
    #[serde(default)]
    add_tags: Vec<String>,
    #[serde(default)]
    remove_tags: Vec<String>,
    #[serde(default)]
    score: Option<Score>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    emit: Option<Emit>,
    #[serde(default)]
    send: Option<OneOrMany<Send>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Score {
    delta: f64,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Emit {
    name: String,
    #[serde(default)]
    properties: BTreeMap<String, Json>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    channel: String,
    template: String,
    #[serde(default)]
    variables: BTreeMap<String, Json>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
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

/// A config literal as a typed value; `None` for null and objects.
fn to_value(json: &Json) -> Option<Value> {
    Some(match json {
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64()?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(items) => Value::TextList(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
        ),
        Json::Null | Json::Object(_) => return None,
    })
}

fn check_values<'a>(
    values: impl Iterator<Item = (&'a String, &'a Json)>,
    path: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    for (name, value) in values {
        if name.is_empty() {
            problems.push(ConfigProblem::new(path, "names must not be empty"));
        }
        if to_value(value).is_none() {
            problems.push(ConfigProblem::new(
                format!("{path}.{name}"),
                "a value must be a string, number, boolean or list of strings",
            ));
        }
    }
}

/// Fill `{{attribute.NAME}}` and `{{event.NAME}}` from the contact and event.
fn fill(template: &str, contact: &Contact, event: Option<&Event>) -> String {
    let mut output = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        output.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let key = rest[start + 2..start + end].trim();
        let value = match key.split_once('.') {
            Some(("attribute", name)) => contact.attribute(name),
            Some(("event", name)) => event.and_then(|e| e.property(name)),
            _ => None,
        };
        output.push_str(&value.map(display).unwrap_or_default());
        rest = &rest[start + end + 2..];
    }
    output.push_str(rest);
    output
}

fn display(value: &Value) -> String {
    match value {
        Value::Text(s) => s.clone(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) | Value::Timestamp(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::TextList(items) => items.join(", "),
    }
}

fn attributes(values: &BTreeMap<String, Json>) -> Vec<Attribute> {
    values
        .iter()
        .filter_map(|(name, json)| to_value(json).map(|v| Attribute::new(name.clone(), v)))
        .collect()
}

impl PluginConfig for Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        let config = self;
        let mut problems = Vec::new();
        check_values(config.set.iter(), "set", &mut problems);
        if let Some(emit) = &config.emit {
            if emit.name.is_empty() {
                problems.push(ConfigProblem::new("emit.name", "must not be empty"));
            }
            check_values(emit.properties.iter(), "emit.properties", &mut problems);
        }
        for (i, send) in config
            .send
            .as_ref()
            .map(OneOrMany::items)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if send.channel.is_empty() || send.template.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("send[{i}]"),
                    "`channel` and `template` must not be empty",
                ));
            }
            check_values(
                send.variables.iter(),
                &format!("send[{i}].variables"),
                &mut problems,
            );
        }
        if config.stage.as_deref() == Some("") {
            problems.push(ConfigProblem::new("stage", "must not be empty"));
        }
        if config.score.as_ref().is_some_and(|s| !s.delta.is_finite()) {
            problems.push(ConfigProblem::new("score.delta", "must be a finite number"));
        }
        problems
    }
}

impl Config {
    pub fn effects(&self, contact: &Contact, event: Option<&Event>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (name, json) in &self.set {
            let value = match json {
                Json::String(text) if text.contains("{{") => {
                    Some(Value::Text(fill(text, contact, event)))
                }
                other => to_value(other),
            };
            effects.extend(value.map(|v| Effect::set(name.clone(), v)));
        }
        effects.extend(self.unset.iter().cloned().map(Effect::UnsetAttribute));
        effects.extend(self.add_tags.iter().cloned().map(Effect::AddTag));
        effects.extend(self.remove_tags.iter().cloned().map(Effect::RemoveTag));
        if let Some(score) = &self.score {
            effects.push(Effect::AdjustScore(ScoreChange::new(
                score.delta,
                score
                    .reason
                    .clone()
                    .unwrap_or_else(|| "journey action".into()),
            )));
        }
        effects.extend(self.stage.clone().map(Effect::SetLifecycleStage));
        if let Some(emit) = &self.emit {
            effects.push(Effect::emit(
                emit.name.clone(),
                attributes(&emit.properties),
            ));
        }
        for send in self.send.as_ref().map(OneOrMany::items).unwrap_or_default() {
            effects.push(Effect::send(
                send.channel.clone(),
                send.template.clone(),
                attributes(&send.variables),
            ));
        }
        effects
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct UpdateContact;

impl Action for UpdateContact {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            "update-contact",
            "0.1.0",
            "Sets attributes, tags, score and stage; emits events; sends messages",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        Config::parse(&config).map(drop)
    }

    fn run(config: String, contact: Contact, event: Option<Event>) -> Result<Vec<Effect>, String> {
        let config = Config::load(&config)?;
        Ok(config.effects(&contact, event.as_ref()))
    }
}

const CONFIG_SCHEMA: &str = r#"{"type":"object","properties":{"set":{"type":"object"},"unset":{"type":"array","items":{"type":"string"}},"add_tags":{"type":"array","items":{"type":"string"}},"remove_tags":{"type":"array","items":{"type":"string"}},"score":{"type":"object","required":["delta"]},"stage":{"type":"string"},"emit":{"type":"object","required":["name"]},"send":{}},"additionalProperties":false}"#;

export!(UpdateContact);

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> Contact {
        Contact {
            id: "c1".into(),
            attributes: vec![Attribute::new("first_name", Value::Text("Wei".into()))],
            tags: vec![],
            score: 0.0,
            lifecycle_stage: "new".into(),
            consents: vec![],
            timezone: "UTC".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn effects_come_out_in_order_with_placeholders_filled() {
        let config = Config::parse(r#"{"set": {"greeting": "Dear {{attribute.first_name}}", "vip": true, "employees": 600},
            "add_tags": ["mql"], "score": {"delta": 10, "reason": "attended webinar"}, "stage": "growth",
            "send": [{"channel": "email", "template": "welcome", "variables": {"offer": "SPRING10"}}]}"#)
        .unwrap();
        let effects = config.effects(&contact(), None);
        assert_eq!(effects.len(), 7);
        assert!(
            matches!(&effects[1], Effect::SetAttribute(a) if a.name == "greeting" && a.value == Value::Text("Dear Wei".into()))
        );
        assert!(
            matches!(&effects[0], Effect::SetAttribute(a) if a.name == "employees" && a.value == Value::Integer(600))
        );
        assert!(matches!(&effects[3], Effect::AddTag(t) if t == "mql"));
        assert!(
            matches!(&effects[4], Effect::AdjustScore(c) if c.delta == 10.0 && c.reason == "attended webinar")
        );
        assert!(matches!(&effects[5], Effect::SetLifecycleStage(s) if s == "growth"));
        assert!(
            matches!(&effects[6], Effect::SendMessage(s) if s.channel == "email" && s.template == "welcome" && s.variables.len() == 1)
        );
    }

    #[test]
    fn nulls_objects_and_empty_names_are_refused() {
        let problems = Config::parse(
            r#"{"set": {"a": null, "b": {"c": 1}}, "send": {"channel": "", "template": "t"}}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["set.a", "set.b", "send[0]"]);
    }
}
