//! Borrowed views of the host's contact and event in the WIT contract's shapes.
//!
//! A call lowers these straight from the host's own data into the guest's memory. The owned
//! WIT types that `bindgen!` generates would first clone every attribute name, text value and
//! tag on the host, then drop them again: about a tenth of a scorer call on a 20-attribute
//! contact. Field and case names and their order are the WIT contract's; wasmtime checks them
//! against the plugin's export before every call, so a mismatch is an error, never a bad call.

use wasmtime::component::{ComponentType, Lower};

use super::bindings::wit;
use crate::model;

/// `types.value`.
#[derive(ComponentType, Lower)]
#[component(variant)]
pub(crate) enum ValueRef<'a> {
    #[component(name = "boolean")]
    Boolean(bool),
    #[component(name = "integer")]
    Integer(i64),
    #[component(name = "number")]
    Number(f64),
    #[component(name = "text")]
    Text(&'a str),
    #[component(name = "timestamp")]
    Timestamp(i64),
    #[component(name = "text-list")]
    TextList(&'a [String]),
}

/// `types.attribute`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct AttributeRef<'a> {
    #[component(name = "name")]
    name: &'a str,
    #[component(name = "value")]
    value: ValueRef<'a>,
}

/// `types.channel-consent`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ChannelConsentRef<'a> {
    #[component(name = "channel")]
    channel: &'a str,
    #[component(name = "state")]
    state: wit::ConsentState,
}

/// `types.contact`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ContactRef<'a> {
    #[component(name = "id")]
    id: &'a str,
    #[component(name = "attributes")]
    attributes: Vec<AttributeRef<'a>>,
    #[component(name = "tags")]
    tags: &'a [String],
    #[component(name = "score")]
    score: f64,
    #[component(name = "lifecycle-stage")]
    lifecycle_stage: &'a str,
    #[component(name = "consents")]
    consents: Vec<ChannelConsentRef<'a>>,
    #[component(name = "timezone")]
    timezone: &'a str,
    #[component(name = "created-at")]
    created_at: i64,
    #[component(name = "updated-at")]
    updated_at: i64,
}

/// `types.event`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct EventRef<'a> {
    #[component(name = "id")]
    id: &'a str,
    #[component(name = "contact-id")]
    contact_id: &'a str,
    #[component(name = "name")]
    name: &'a str,
    #[component(name = "properties")]
    properties: Vec<AttributeRef<'a>>,
    #[component(name = "timestamp")]
    timestamp: i64,
}

impl<'a> From<&'a model::Value> for ValueRef<'a> {
    fn from(value: &'a model::Value) -> Self {
        match value {
            model::Value::Boolean(b) => ValueRef::Boolean(*b),
            model::Value::Integer(i) => ValueRef::Integer(*i),
            model::Value::Number(n) => ValueRef::Number(*n),
            model::Value::Text(s) => ValueRef::Text(s),
            model::Value::Timestamp(ms) => ValueRef::Timestamp(*ms),
            model::Value::TextList(items) => ValueRef::TextList(items),
        }
    }
}

fn attributes(attributes: &model::Attributes) -> Vec<AttributeRef<'_>> {
    attributes
        .iter()
        .map(|(name, value)| AttributeRef {
            name,
            value: value.into(),
        })
        .collect()
}

impl<'a> ContactRef<'a> {
    /// The contact as a plugin sees it: with only the attributes its config reads (`reads`),
    /// or all of them.
    pub(crate) fn new(contact: &'a model::Contact, reads: Option<&'a [String]>) -> Self {
        let attributes = match reads {
            None => attributes(&contact.attributes),
            Some(names) => names
                .iter()
                .filter_map(|name| {
                    let (name, value) = contact.attributes.get_key_value(name.as_str())?;
                    Some(AttributeRef {
                        name,
                        value: value.into(),
                    })
                })
                .collect(),
        };
        ContactRef {
            id: &contact.id,
            attributes,
            tags: &contact.tags,
            score: contact.score,
            lifecycle_stage: &contact.lifecycle_stage,
            consents: contact
                .consents
                .iter()
                .map(|(channel, state)| ChannelConsentRef {
                    channel,
                    state: match state {
                        model::ConsentState::Unknown => wit::ConsentState::Unknown,
                        model::ConsentState::Granted => wit::ConsentState::Granted,
                        model::ConsentState::Revoked => wit::ConsentState::Revoked,
                    },
                })
                .collect(),
            timezone: &contact.timezone,
            created_at: contact.created_at,
            updated_at: contact.updated_at,
        }
    }
}

impl<'a> From<&'a model::Event> for EventRef<'a> {
    fn from(event: &'a model::Event) -> Self {
        EventRef {
            id: &event.id,
            contact_id: &event.contact_id,
            name: &event.name,
            properties: attributes(&event.properties),
            timestamp: event.timestamp,
        }
    }
}
