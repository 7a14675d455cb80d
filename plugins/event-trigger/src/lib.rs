//! Enrolls a contact when an event of a given name arrives and its properties pass filters.
//!
//! ```json
//! {"event": "registered", "where": [{"property": "source", "op": "eq", "value": "web"}]}
//! ```
//! `"events": ["registered", "signed_up"]` matches any of several names. Filter operators:
//! eq, ne, gt, gte, lt, lte, in, not_in, contains, starts_with, exists, not_exists.

use serde::Deserialize;
use wayline_rules::{PluginConfig, PropertyFilter};
use wayline_sdk::trigger::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default, rename = "where")]
    filters: Vec<PropertyFilter>,
}

impl Config {
    pub fn matches(&self, event: &Event) -> bool {
        let named =
            self.event.as_deref() == Some(event.name.as_str()) || self.events.contains(&event.name);
        named && self.filters.iter().all(|f| f.holds(event))
    }
}

impl PluginConfig for Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        let config = self;
        let mut problems = Vec::new();
        if config.event.is_none() && config.events.is_empty() {
            problems.push(ConfigProblem::new(
                "event",
                "name the event that triggers the journey (`event` or `events`)",
            ));
        }
        if config.event.as_deref() == Some("") || config.events.iter().any(String::is_empty) {
            problems.push(ConfigProblem::new("event", "event names must not be empty"));
        }
        problems.extend(
            config
                .filters
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.check(&format!("where[{i}]"))),
        );
        problems
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct EventTrigger;

impl Trigger for EventTrigger {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            "event-trigger",
            "0.1.0",
            "Enrolls on an event by name, with property filters",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        Config::parse(&config).map(drop)
    }

    fn matches(config: String, event: Event, _contact: Contact) -> Result<bool, String> {
        let config = Config::load(&config)?;
        Ok(config.matches(&event))
    }
}

const CONFIG_SCHEMA: &str = r#"{"type":"object","properties":{"event":{"type":"string"},"events":{"type":"array","items":{"type":"string"}},"where":{"type":"array","items":{"type":"object","required":["property","op"],"properties":{"property":{"type":"string"},"op":{"enum":["eq","ne","gt","gte","lt","lte","in","not_in","contains","starts_with","exists","not_exists"]},"value":{}}}}},"additionalProperties":false}"#;

export!(EventTrigger);

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, properties: Vec<Attribute>) -> Event {
        Event {
            id: "e1".into(),
            contact_id: "c1".into(),
            name: name.into(),
            properties,
            timestamp: 0,
        }
    }

    #[test]
    fn matches_by_name_and_filters() {
        let config = Config::parse(r#"{"event": "registered", "where": [{"property": "source", "op": "eq", "value": "web"}]}"#).unwrap();
        assert!(config.matches(&event(
            "registered",
            vec![Attribute::new("source", Value::Text("web".into()))]
        )));
        assert!(!config.matches(&event(
            "registered",
            vec![Attribute::new("source", Value::Text("crm".into()))]
        )));
        assert!(!config.matches(&event("registered", vec![])));
        assert!(!config.matches(&event(
            "logged_in",
            vec![Attribute::new("source", Value::Text("web".into()))]
        )));
    }

    #[test]
    fn any_of_several_names() {
        let config = Config::parse(r#"{"events": ["registered", "signed_up"]}"#).unwrap();
        assert!(config.matches(&event("signed_up", vec![])));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let problems =
            Config::parse(r#"{"where": [{"property": "n", "op": "gte", "value": "x"}]}"#)
                .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["event", "where[0].value"]);
        assert!(Config::parse(r#"{"event": "x", "typo": 1}"#).is_err());
    }
}
