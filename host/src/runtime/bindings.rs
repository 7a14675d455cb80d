//! Host bindings generated from the WIT contract, and conversions between the WIT types and the
//! domain's own types in [`crate::model`].

use crate::model;

mod generated {
    /// `wayline:plugin@0.1.0`. The channel world imports everything the host offers in that
    /// version; the other worlds reuse its import bindings so the host implements each
    /// interface once per version.
    pub mod v1 {
        wasmtime::component::bindgen!({
            world: "channel-plugin",
            path: "../wit/0.1.0",
            imports: {
                "wayline:plugin/http.send": async,
                default: trappable,
            },
            exports: { default: async },
        });

        macro_rules! world {
            ($module:ident, $world:literal) => {
                pub mod $module {
                    wasmtime::component::bindgen!({
                        world: $world,
                        path: "../wit/0.1.0",
                        with: {
                            "wayline:plugin/types": super::wayline::plugin::types,
                            "wayline:plugin/log": super::wayline::plugin::log,
                            "wayline:plugin/clock": super::wayline::plugin::clock,
                            "wayline:plugin/kv": super::wayline::plugin::kv,
                        },
                    });
                }
            };
        }

        world!(trigger, "trigger-plugin");
        world!(condition, "condition-plugin");
        world!(action, "action-plugin");
        world!(scorer, "scorer-plugin");
    }

    /// `wayline:plugin@0.2.0`, the same way.
    pub mod v2 {
        wasmtime::component::bindgen!({
            world: "channel-plugin",
            path: "../wit/0.2.0",
            imports: {
                "wayline:plugin/http.send": async,
                "wayline:plugin/smtp.send": async,
                default: trappable,
            },
            exports: { default: async },
        });

        macro_rules! world {
            ($module:ident, $world:literal) => {
                pub mod $module {
                    wasmtime::component::bindgen!({
                        world: $world,
                        path: "../wit/0.2.0",
                        with: {
                            "wayline:plugin/types": super::wayline::plugin::types,
                            "wayline:plugin/log": super::wayline::plugin::log,
                            "wayline:plugin/clock": super::wayline::plugin::clock,
                            "wayline:plugin/kv": super::wayline::plugin::kv,
                        },
                    });
                }
            };
        }

        world!(trigger, "trigger-plugin");
        world!(condition, "condition-plugin");
        world!(action, "action-plugin");
        world!(scorer, "scorer-plugin");
    }
}

/// The host's view of 0.1.0, and the types every version shares in shape. wasmtime checks
/// a plugin's function types by structure (field and case names, in order), so the shapes
/// 0.2.0 kept from 0.1.0 (contact, event, effects, score changes, plugin info, configs,
/// deliveries) are called with these types whichever version the plugin implements.
pub use generated::v1::wayline::plugin::{clock, http, kv, log, types as wit};
pub use generated::v1::{
    ChannelPlugin, action::ActionPlugin, condition::ConditionPlugin, scorer::ScorerPlugin,
    trigger::TriggerPlugin,
};

/// What 0.2.0 added or changed: its message, webhooks, SMTP and signatures, and its worlds.
pub mod v2 {
    pub use super::generated::v2::wayline::plugin::{
        clock, http, kv, log, signatures, smtp, types,
    };
    pub use super::generated::v2::{
        ChannelPlugin, action::ActionPlugin, condition::ConditionPlugin, scorer::ScorerPlugin,
        trigger::TriggerPlugin,
    };
}

impl From<&model::Value> for wit::Value {
    fn from(value: &model::Value) -> Self {
        match value {
            model::Value::Boolean(b) => wit::Value::Boolean(*b),
            model::Value::Integer(i) => wit::Value::Integer(*i),
            model::Value::Number(n) => wit::Value::Number(*n),
            model::Value::Text(s) => wit::Value::Text(s.clone()),
            model::Value::Timestamp(ms) => wit::Value::Timestamp(*ms),
            model::Value::TextList(items) => wit::Value::TextList(items.clone()),
        }
    }
}

impl From<wit::Value> for model::Value {
    fn from(value: wit::Value) -> Self {
        match value {
            wit::Value::Boolean(b) => model::Value::Boolean(b),
            wit::Value::Integer(i) => model::Value::Integer(i),
            wit::Value::Number(n) => model::Value::Number(n),
            wit::Value::Text(s) => model::Value::Text(s),
            wit::Value::Timestamp(ms) => model::Value::Timestamp(ms),
            wit::Value::TextList(items) => model::Value::TextList(items),
        }
    }
}

fn to_wit_attributes(attributes: &model::Attributes) -> Vec<wit::Attribute> {
    attributes
        .iter()
        .map(|(name, value)| wit::Attribute {
            name: name.clone(),
            value: value.into(),
        })
        .collect()
}

fn from_wit_attributes(attributes: Vec<wit::Attribute>) -> model::Attributes {
    attributes
        .into_iter()
        .map(|a| (a.name, a.value.into()))
        .collect()
}

impl From<&model::Contact> for wit::Contact {
    fn from(contact: &model::Contact) -> Self {
        wit::Contact {
            id: contact.id.clone(),
            attributes: to_wit_attributes(&contact.attributes),
            tags: contact.tags.clone(),
            score: contact.score,
            lifecycle_stage: contact.lifecycle_stage.clone(),
            consents: contact
                .consents
                .iter()
                .map(|(channel, state)| wit::ChannelConsent {
                    channel: channel.clone(),
                    state: match state {
                        model::ConsentState::Unknown => wit::ConsentState::Unknown,
                        model::ConsentState::Granted => wit::ConsentState::Granted,
                        model::ConsentState::Revoked => wit::ConsentState::Revoked,
                    },
                })
                .collect(),
            timezone: contact.timezone.clone(),
            created_at: contact.created_at,
            updated_at: contact.updated_at,
        }
    }
}

impl From<&model::Event> for wit::Event {
    fn from(event: &model::Event) -> Self {
        wit::Event {
            id: event.id.clone(),
            contact_id: event.contact_id.clone(),
            name: event.name.clone(),
            properties: to_wit_attributes(&event.properties),
            timestamp: event.timestamp,
        }
    }
}

impl From<&model::Message> for v2::types::Message {
    fn from(message: &model::Message) -> Self {
        v2::types::Message {
            id: message.id.clone(),
            contact_id: message.contact_id.clone(),
            recipient: message.recipient.clone(),
            class: match message.class {
                model::MessageClass::Marketing => v2::types::MessageClass::Marketing,
                model::MessageClass::Transactional => v2::types::MessageClass::Transactional,
            },
            test: message.test,
            subject: message.subject.clone(),
            text: message.text.clone(),
            html: message.html.clone(),
            headers: message.headers.clone(),
            metadata: pairs(&message.metadata),
        }
    }
}

/// A message in 0.1.0's shape: one body (the HTML when there is HTML, its text version then in
/// `metadata.text`), and what 0.2.0 gives as fields in `metadata` (`message_class`, `test`,
/// and each required header under its lower-case name with `-` as `_`, e.g.
/// `list_unsubscribe`).
impl From<&model::Message> for wit::Message {
    fn from(message: &model::Message) -> Self {
        let mut metadata = message.metadata.clone();
        let (body, content_type) = match (&message.html, &message.text) {
            (Some(html), text) => {
                if let Some(text) = text {
                    metadata.insert("text".into(), text.clone());
                }
                (html.clone(), "text/html")
            }
            (None, text) => (text.clone().unwrap_or_default(), "text/plain"),
        };
        metadata.insert("message_class".into(), message.class.as_str().into());
        if message.test {
            metadata.insert("test".into(), "true".into());
        }
        for (name, value) in &message.headers {
            metadata.insert(name.to_ascii_lowercase().replace('-', "_"), value.clone());
        }
        wit::Message {
            id: message.id.clone(),
            contact_id: message.contact_id.clone(),
            recipient: message.recipient.clone(),
            subject: message.subject.clone(),
            body,
            content_type: content_type.into(),
            metadata: pairs(&metadata),
        }
    }
}

fn pairs(map: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl From<wit::ScoreChange> for model::ScoreChange {
    fn from(change: wit::ScoreChange) -> Self {
        model::ScoreChange {
            delta: change.delta,
            reason: change.reason,
        }
    }
}

impl From<wit::Effect> for model::Effect {
    fn from(effect: wit::Effect) -> Self {
        match effect {
            wit::Effect::SetAttribute(a) => model::Effect::SetAttribute {
                name: a.name,
                value: a.value.into(),
            },
            wit::Effect::UnsetAttribute(name) => model::Effect::UnsetAttribute { name },
            wit::Effect::AddTag(tag) => model::Effect::AddTag { tag },
            wit::Effect::RemoveTag(tag) => model::Effect::RemoveTag { tag },
            wit::Effect::AdjustScore(c) => model::Effect::AdjustScore {
                delta: c.delta,
                reason: c.reason,
            },
            wit::Effect::SetLifecycleStage(stage) => model::Effect::SetLifecycleStage { stage },
            wit::Effect::EmitEvent(e) => model::Effect::EmitEvent {
                name: e.name,
                properties: from_wit_attributes(e.properties),
            },
            wit::Effect::SendMessage(s) => model::Effect::SendMessage {
                channel: s.channel,
                template: s.template,
                variables: from_wit_attributes(s.variables),
            },
        }
    }
}

impl From<Result<wit::Delivery, wit::DeliveryFailure>> for model::DeliveryOutcome {
    fn from(result: Result<wit::Delivery, wit::DeliveryFailure>) -> Self {
        match result {
            Ok(delivery) => model::DeliveryOutcome::Delivered {
                provider_id: delivery.provider_id,
            },
            Err(failure) => model::DeliveryOutcome::Failed {
                kind: match failure.kind {
                    wit::FailureKind::Retryable => model::FailureKind::Retryable,
                    wit::FailureKind::Permanent => model::FailureKind::Permanent,
                    wit::FailureKind::InvalidRecipient => model::FailureKind::InvalidRecipient,
                },
                message: failure.message,
                retry_after_ms: failure.retry_after_ms,
            },
        }
    }
}

impl From<wit::PluginInfo> for model::PluginInfo {
    fn from(info: wit::PluginInfo) -> Self {
        model::PluginInfo {
            config_schema: serde_json::from_str(&info.config_schema)
                .unwrap_or(serde_json::Value::String(info.config_schema)),
            name: info.name,
            version: info.version,
            description: info.description,
            outbound_hosts: info.outbound_hosts,
        }
    }
}

impl From<wit::PreparedConfig> for model::PreparedConfig {
    fn from(prepared: wit::PreparedConfig) -> Self {
        // Each name once, in the plugin's order.
        let attributes = prepared.attributes.map(|mut names| {
            let mut seen = std::collections::HashSet::new();
            names.retain(|name| seen.insert(name.clone()));
            names
        });
        model::PreparedConfig {
            bytes: prepared.config,
            attributes,
        }
    }
}

impl From<wit::ConfigProblem> for model::ConfigProblem {
    fn from(problem: wit::ConfigProblem) -> Self {
        model::ConfigProblem {
            path: problem.path,
            message: problem.message,
        }
    }
}

impl From<&model::WebhookRequest> for v2::types::WebhookRequest {
    fn from(request: &model::WebhookRequest) -> Self {
        v2::types::WebhookRequest {
            method: request.method.clone(),
            query: request.query.clone(),
            headers: request.headers.clone(),
            body: request.body.clone(),
        }
    }
}

impl From<v2::types::ProviderEvent> for model::ProviderEvent {
    fn from(event: v2::types::ProviderEvent) -> Self {
        use v2::types::ProviderEventKind as Wit;
        model::ProviderEvent {
            kind: match event.kind {
                Wit::Delivered => model::ProviderEventKind::Delivered,
                Wit::Bounced => model::ProviderEventKind::Bounced,
                Wit::Complaint => model::ProviderEventKind::Complaint,
                Wit::Opened => model::ProviderEventKind::Opened,
                Wit::Clicked => model::ProviderEventKind::Clicked,
                Wit::Unsubscribed => model::ProviderEventKind::Unsubscribed,
            },
            message_id: event.message_id,
            provider_id: event.provider_id,
            reason: event.reason,
            url: event.url,
        }
    }
}

impl From<v2::types::WebhookError> for model::WebhookRejection {
    fn from(error: v2::types::WebhookError) -> Self {
        match error {
            v2::types::WebhookError::Unauthenticated(why) => {
                model::WebhookRejection::Unauthenticated(why)
            }
            v2::types::WebhookError::Malformed(why) => model::WebhookRejection::Malformed(why),
        }
    }
}
