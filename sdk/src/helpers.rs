//! Typed helpers over the generated WIT types, so plugin code reads like the domain.

use crate::{
    Attribute, ConfigProblem, Contact, Effect, EmittedEvent, Event, PluginInfo, ScoreChange,
    SendRequest, Value,
};

impl Value {
    /// The value as a number, for integers and floats alike.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Integer(i) => Some(*i as f64),
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value as text, if it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

fn find<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Value> {
    attributes.iter().find(|a| a.name == name).map(|a| &a.value)
}

impl Contact {
    /// The attribute called `name`, if the contact has it.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        find(&self.attributes, name)
    }

    /// The attribute called `name` as text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.attribute(name).and_then(Value::as_text)
    }

    /// The attribute called `name` as a number.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.attribute(name).and_then(Value::as_f64)
    }

    /// Whether the contact carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

impl Event {
    /// The property called `name`, if the event has it.
    pub fn property(&self, name: &str) -> Option<&Value> {
        find(&self.properties, name)
    }

    /// The property called `name` as text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.property(name).and_then(Value::as_text)
    }

    /// The property called `name` as a number.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.property(name).and_then(Value::as_f64)
    }
}

impl Attribute {
    /// An attribute with a name and a value.
    pub fn new(name: impl Into<String>, value: Value) -> Self {
        Attribute {
            name: name.into(),
            value,
        }
    }
}

impl ScoreChange {
    /// A change of `delta` points, explained by `reason`.
    pub fn new(delta: f64, reason: impl Into<String>) -> Self {
        ScoreChange {
            delta,
            reason: reason.into(),
        }
    }
}

impl PluginInfo {
    /// Info for a plugin that takes no config and reaches no outbound host.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            config_schema: "{}".into(),
            outbound_hosts: Vec::new(),
        }
    }
}

impl ConfigProblem {
    /// A problem at `path` in the config document.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Effect {
    /// Set attribute `name` to `value`.
    pub fn set(name: impl Into<String>, value: Value) -> Self {
        Effect::SetAttribute(Attribute::new(name, value))
    }

    /// Emit an event for this contact.
    pub fn emit(name: impl Into<String>, properties: Vec<Attribute>) -> Self {
        Effect::EmitEvent(EmittedEvent {
            name: name.into(),
            properties,
        })
    }

    /// Send `template` through `channel`.
    pub fn send(
        channel: impl Into<String>,
        template: impl Into<String>,
        variables: Vec<Attribute>,
    ) -> Self {
        Effect::SendMessage(SendRequest {
            channel: channel.into(),
            template: template.into(),
            variables,
        })
    }
}
