//! Typed helpers over the generated WIT types, so plugin code reads like the domain.

use crate::{
    Attribute, ConfigProblem, Contact, Delivery, DeliveryFailure, Effect, EmittedEvent, Event,
    FailureKind, Message, PluginInfo, ScoreChange, SendRequest, Value,
};

impl Delivery {
    /// Accepted by the provider, which knows the message as `provider_id`.
    pub fn accepted(provider_id: impl Into<String>) -> Self {
        Delivery {
            provider_id: provider_id.into(),
        }
    }
}

impl DeliveryFailure {
    /// Worth another try later (a rate limit, a timeout, a 5xx); `retry_after_ms` if the
    /// provider said when.
    pub fn retry(message: impl Into<String>, retry_after_ms: Option<u64>) -> Self {
        DeliveryFailure {
            kind: FailureKind::Retryable,
            message: message.into(),
            retry_after_ms,
        }
    }

    /// Will never succeed as configured (bad credentials, rejected content).
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryFailure {
            kind: FailureKind::Permanent,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The recipient's address is wrong: the host suppresses later sends to it.
    pub fn invalid_recipient(message: impl Into<String>) -> Self {
        DeliveryFailure {
            kind: FailureKind::InvalidRecipient,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// What an HTTP status from a provider usually means: 2xx is not a failure (`None`), 429
    /// and 5xx are retried (with `retry_after_ms` if the provider said), 404 and 410 are an
    /// invalid recipient, anything else is permanent.
    pub fn from_status(status: u16, retry_after_ms: Option<u64>, body: &[u8]) -> Option<Self> {
        let excerpt: String = String::from_utf8_lossy(body).chars().take(200).collect();
        let message = format!("HTTP {status}: {excerpt}");
        match status {
            200..=299 => None,
            429 | 500..=599 => Some(Self::retry(message, retry_after_ms)),
            404 | 410 => Some(Self::invalid_recipient(message)),
            _ => Some(Self::permanent(message)),
        }
    }
}

impl Message {
    /// The value of metadata entry `name` (`template`, `journey_id`, `node`).
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The text body, or the HTML when there is no text.
    pub fn body(&self) -> &str {
        self.text
            .as_deref()
            .or(self.html.as_deref())
            .unwrap_or_default()
    }
}

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
