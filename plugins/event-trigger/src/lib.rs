//! Enrolls a contact when an event of a given name arrives and its properties pass filters
//! ("contact registers from the web site → start the welcome journey").
//!
//! ```json
//! {"event": "registered", "where": [{"property": "source", "op": "eq", "value": "web"}]}
//! ```
//! - `event`: the event name; or `events: ["registered", "signed_up"]` for any of several.
//! - `where` (optional): filters that must all hold. Operators: `eq`, `ne`, `gt`, `gte`, `lt`,
//!   `lte`, `in` / `not_in` (value is a list), `contains` (substring, or list membership),
//!   `starts_with`, `has` / `not_has` (list membership), `exists` / `not_exists` (no value).

use serde::{Deserialize, Serialize};
use wayline_rules::{Check, Problems, PropertyFilter, ROOT, check_filters};
use wayline_sdk::trigger::*;

/// The trigger's config.
#[derive(Debug, Serialize, Deserialize)]
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
    /// Does `event` enroll the contact?
    pub fn matches(&self, event: &Event) -> bool {
        self.names(&event.name) && self.filters.iter().all(|f| f.holds(event))
    }

    fn names(&self, name: &str) -> bool {
        match &self.event {
            Some(event) => event == name,
            None => self.events.iter().any(|e| e == name),
        }
    }
}

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        match (&self.event, self.events.is_empty()) {
            (None, true) => problems.add(
                &ROOT.field("event"),
                "name the event that triggers the journey (`event`, or `events` for several)",
            ),
            (Some(_), false) => problems.add(
                &ROOT.field("events"),
                "give either `event` or `events`, not both",
            ),
            (Some(event), true) => problems.require_text(&ROOT.field("event"), event),
            (None, false) => {
                let events = ROOT.field("events");
                for (i, name) in self.events.iter().enumerate() {
                    problems.require_text(&events.index(i), name);
                }
            }
        }
        check_filters(&self.filters, &ROOT.field("where"), problems);
    }
}

impl PluginConfig for Config {
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        wayline_rules::parse(json)
    }

    /// The trigger looks at the event only.
    fn attributes(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct EventTrigger;

impl Trigger for EventTrigger {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Enrolls a contact on an event by name, when the event's properties pass filters",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info
    }

    fn matches(config: Config, event: Event, _contact: Contact) -> Result<bool, String> {
        Ok(config.matches(&event))
    }
}

export!(EventTrigger);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "event-trigger config",
  "type": "object",
  "properties": {
    "event": {"type": "string", "minLength": 1, "description": "The event name that enrolls"},
    "events": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "description": "Any of these event names enrolls"},
    "where": {"type": "array", "items": {"$ref": "#/$defs/filter"}, "description": "Filters on the event's properties; all must hold"}
  },
  "oneOf": [{"required": ["event"]}, {"required": ["events"]}],
  "additionalProperties": false,
  "$defs": {
    "literal": {"type": ["string", "number", "boolean"]},
    "filter": {
      "type": "object",
      "required": ["property", "op"],
      "properties": {
        "property": {"type": "string", "minLength": 1},
        "op": {"enum": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "starts_with", "has", "not_has", "exists", "not_exists"]},
        "value": {"anyOf": [{"$ref": "#/$defs/literal"}, {"type": "array", "items": {"$ref": "#/$defs/literal"}}]}
      },
      "additionalProperties": false
    }
  }
}"##;

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

    fn text(name: &str, value: &str) -> Attribute {
        Attribute::new(name, Value::Text(value.into()))
    }

    fn paths(config: &str) -> Vec<String> {
        Config::parse(config)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn the_trigger_reads_no_contact_attributes() {
        let config = Config::parse(r#"{"event": "registered"}"#).unwrap();
        assert_eq!(config.attributes(), Some(vec![]));
    }

    #[test]
    fn a_registration_from_the_web_enrolls_and_one_from_the_crm_does_not() {
        let config = Config::parse(
            r#"{"event": "registered", "where": [{"property": "source", "op": "eq", "value": "web"}]}"#,
        )
        .unwrap();
        assert!(config.matches(&event("registered", vec![text("source", "web")])));
        assert!(!config.matches(&event("registered", vec![text("source", "crm")])));
        assert!(!config.matches(&event("registered", vec![])));
        assert!(!config.matches(&event("logged_in", vec![text("source", "web")])));
    }

    #[test]
    fn any_of_several_event_names() {
        let config = Config::parse(r#"{"events": ["registered", "signed_up"]}"#).unwrap();
        assert!(config.matches(&event("signed_up", vec![])));
        assert!(!config.matches(&event("logged_in", vec![])));
    }

    #[test]
    fn a_landing_page_stay_over_two_minutes() {
        let config = Config::parse(
            r#"{"event": "page_left", "where": [
                {"property": "page_type", "op": "in", "value": ["landing", "pricing"]},
                {"property": "seconds_on_page", "op": "gt", "value": 120},
                {"property": "bot", "op": "not_exists"}]}"#,
        )
        .unwrap();
        let stay = |page: &str, seconds: i64| {
            event(
                "page_left",
                vec![
                    text("page_type", page),
                    Attribute::new("seconds_on_page", Value::Integer(seconds)),
                ],
            )
        };
        assert!(config.matches(&stay("landing", 150)));
        assert!(!config.matches(&stay("landing", 90)));
        assert!(!config.matches(&stay("blog", 150)));
    }

    #[test]
    fn bad_configs_name_each_problem() {
        assert_eq!(
            paths(r#"{"where": [{"property": "n", "op": "gte", "value": "x"}]}"#),
            ["event", "where[0].value"]
        );
        assert_eq!(paths(r#"{"event": "a", "events": ["b"]}"#), ["events"]);
        assert_eq!(paths(r#"{"events": ["a", ""]}"#), ["events[1]"]);
        assert_eq!(paths(r#"{"event": "x", "typo": 1}"#), ["typo"]);
        assert_eq!(
            paths(r#"{"event": "x", "where": [{"property": "p", "op": "like", "value": "x"}]}"#),
            ["where[0].op"]
        );
    }

    #[test]
    fn a_config_survives_being_prepared() {
        use wayline_sdk::config::{load, prepare};
        let json = r#"{"events": ["registered", "signed_up"], "where": [{"property": "source", "op": "in", "value": ["web", 1, true, 0.5]}, {"property": "x", "op": "exists"}]}"#;
        let prepared = prepare::<Config>(json, "event-trigger@0.1.0").unwrap();
        let config = load::<Config>(&prepared.config, "event-trigger@0.1.0").unwrap();
        let parsed = Config::parse(json).unwrap();
        assert_eq!(format!("{config:?}"), format!("{parsed:?}"));
    }

    #[test]
    fn a_trigger_without_events_is_refused() {
        let problems = Config::parse(r#"{"events": []}"#).unwrap_err();
        assert_eq!(problems[0].path, "event");
        assert!(Config::parse("not json").is_err());
    }

    #[test]
    fn the_schema_is_a_json_object() {
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert!(schema.is_object());
    }
}
