//! The domain's data as the host stores and serves it: contacts, events, effects, messages.
//!
//! These are the serde shapes of the API and the store. The runtime converts them to and from the
//! WIT types at the plugin boundary; nothing here knows about wasm.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC: the one time unit inside Wayline.
pub type Millis = i64;

/// A typed attribute or property value.
///
/// In JSON: booleans, integers, numbers, strings and lists of strings map to themselves; a string
/// that is an RFC 3339 timestamp (`"2026-11-22T10:00:00Z"`) becomes a [`Value::Timestamp`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Boolean(bool),
    Integer(i64),
    Number(f64),
    Text(String),
    Timestamp(Millis),
    TextList(Vec<String>),
}

/// Named values: a contact's attributes or an event's properties, sorted by name.
pub type Attributes = BTreeMap<String, Value>;

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Boolean(b) => serializer.serialize_bool(*b),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Number(n) => serializer.serialize_f64(*n),
            Value::Text(s) => serializer.serialize_str(s),
            Value::Timestamp(ms) => serializer.serialize_str(&format_timestamp(*ms)),
            Value::TextList(items) => items.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Reads a value straight from the input (no intermediate `serde_json::Value`): every contact
/// and event read from the store or the API goes through here. Strings that are RFC 3339
/// timestamps become timestamps; null, objects and lists of non-strings are refused.
struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a boolean, number, string, timestamp or list of strings")
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Boolean(b))
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Integer(i))
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::Number(u as f64), Value::Integer))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Number(n))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(match parse_timestamp(s) {
            Some(ms) => Value::Timestamp(ms),
            None => Value::Text(s.to_owned()),
        })
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
        Ok(match parse_timestamp(&s) {
            Some(ms) => Value::Timestamp(ms),
            None => Value::Text(s),
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            match item {
                serde_json::Value::String(s) => items.push(s),
                _ => {
                    return Err(serde::de::Error::custom(
                        "a list value may only hold strings",
                    ));
                }
            }
        }
        Ok(Value::TextList(items))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Err(E::custom(
            "null is not a value; unset the attribute instead",
        ))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(serde::de::Error::custom(
            "nested objects are not values; flatten them into names like \"address.city\"",
        ))
    }
}

impl Value {
    /// Convert a JSON value; null, objects and lists of non-strings are refused.
    pub fn from_json(json: &serde_json::Value) -> Result<Value, String> {
        Value::deserialize(json).map_err(|e| e.to_string())
    }
}

/// Longest name of an attribute, property, tag, channel or stage.
pub const MAX_NAME_BYTES: usize = 128;

/// Whether `name` may name an attribute, property, tag, consent channel or stage: 1 to
/// [`MAX_NAME_BYTES`] bytes, no control characters. `Err` says what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        Err("a name cannot be empty".into())
    } else if name.len() > MAX_NAME_BYTES {
        Err(format!("a name is at most {MAX_NAME_BYTES} bytes"))
    } else if name.chars().any(char::is_control) {
        Err("a name cannot hold control characters".into())
    } else {
        Ok(())
    }
}

/// Parse an RFC 3339 timestamp into milliseconds, if `text` is one.
pub fn parse_timestamp(text: &str) -> Option<Millis> {
    // Cheap pre-check so ordinary strings never reach the parser.
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[10] != b'T' {
        return None;
    }
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// Format milliseconds as RFC 3339 in UTC.
pub fn format_timestamp(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_string(),
        Err(_) => ms.to_string(),
    }
}

/// Timestamps in JSON are RFC 3339 strings; integers are accepted as milliseconds.
pub mod timestamp_json {
    use super::{Millis, format_timestamp, parse_timestamp};
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    /// Serialize as RFC 3339 for people (JSON); as integer milliseconds in the store's binary
    /// encoding, which no one reads by eye.
    pub fn serialize<S: Serializer>(ms: &Millis, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&format_timestamp(*ms))
        } else {
            serializer.serialize_i64(*ms)
        }
    }

    /// Deserialize from RFC 3339 or integer milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
        deserializer.deserialize_any(TimestampVisitor)
    }

    /// A visitor rather than an untagged enum: that one builds (and throws away) an error
    /// message for every string it reads, and timestamps are in every stored record.
    struct TimestampVisitor;

    impl Visitor<'_> for TimestampVisitor {
        type Value = Millis;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp or integer milliseconds")
        }

        fn visit_i64<E: Error>(self, ms: i64) -> Result<Millis, E> {
            Ok(ms)
        }

        fn visit_u64<E: Error>(self, ms: u64) -> Result<Millis, E> {
            Millis::try_from(ms).map_err(|_| E::custom(format!("{ms} ms is out of range")))
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Millis, E> {
            parse_timestamp(text)
                .ok_or_else(|| E::custom(format!("`{text}` is not an RFC 3339 timestamp")))
        }
    }

    /// The same for an optional time.
    pub mod option {
        use super::Millis;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        struct Shown(Millis);

        impl Serialize for Shown {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                super::serialize(&self.0, serializer)
            }
        }

        struct Read(Millis);

        impl<'de> Deserialize<'de> for Read {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                super::deserialize(deserializer).map(Read)
            }
        }

        pub fn serialize<S: Serializer>(
            ms: &Option<Millis>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            ms.map(Shown).serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Millis>, D::Error> {
            Ok(Option::<Read>::deserialize(deserializer)?.map(|read| read.0))
        }
    }
}

/// Whether a contact agreed to be messaged on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    #[default]
    Unknown,
    Granted,
    Revoked,
}

/// A person the journeys move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub id: String,
    #[serde(default)]
    pub attributes: Attributes,
    #[serde(default)]
    pub tags: Vec<String>,
    /// What journeys' actions added (`adjust-score`): the score plugins see.
    #[serde(default)]
    pub score: f64,
    /// The contact's score in each scoring model, by model name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, ModelScore>,
    #[serde(default = "default_stage")]
    pub lifecycle_stage: String,
    /// Per channel ("email", "sms", "wecom", …).
    #[serde(default)]
    pub consents: BTreeMap<String, ConsentState>,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default, with = "timestamp_json")]
    pub created_at: Millis,
    #[serde(default, with = "timestamp_json")]
    pub updated_at: Millis,
    /// What the lifecycle rules track of the contact, when rules are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
    /// What segments and tag rules keep of the contact, when some are defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    /// Known only by an anonymous id (a visitor before they log in): an identified contact
    /// that turns out to be the same person takes this one over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
}

impl Contact {
    /// A contact seen for the first time at `now`.
    pub fn new(id: String, now: Millis) -> Self {
        Contact {
            id,
            attributes: Attributes::new(),
            tags: Vec::new(),
            score: 0.0,
            scores: BTreeMap::new(),
            lifecycle_stage: default_stage(),
            consents: BTreeMap::new(),
            timezone: default_timezone(),
            created_at: now,
            updated_at: now,
            anonymous: false,
            activity: None,
            audience: None,
        }
    }
}

impl Contact {
    /// Apply one effect an action asked for. Tags are a set; a score moves by its delta.
    pub fn apply(&mut self, effect: &Effect, now: Millis) {
        match effect {
            Effect::SetAttribute { name, value } => {
                self.attributes.insert(name.clone(), value.clone());
            }
            Effect::UnsetAttribute { name } => {
                self.attributes.remove(name);
            }
            Effect::AddTag { tag } => {
                if !self.tags.contains(tag) {
                    self.tags.push(tag.clone());
                }
            }
            Effect::RemoveTag { tag } => self.tags.retain(|t| t != tag),
            Effect::AdjustScore { delta, .. } => self.score += delta,
            Effect::SetLifecycleStage { stage } => self.lifecycle_stage = stage.clone(),
            // Events and messages are the host's to record, not changes to the contact.
            Effect::EmitEvent { .. } | Effect::SendMessage { .. } => return,
        }
        self.updated_at = now;
    }
}

fn default_stage() -> String {
    "new".into()
}

fn default_timezone() -> String {
    "UTC".into()
}

/// Something a contact did, or that happened to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub id: String,
    pub contact_id: String,
    pub name: String,
    #[serde(default)]
    pub properties: Attributes,
    #[serde(with = "timestamp_json")]
    pub timestamp: Millis,
    /// How many events that actions emitted led to this one: 0 for an event from outside,
    /// one more than its cause for an event an action emitted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A contact's points in one scoring model. With decay the points shrink from `at` on; what
/// they come to at a moment is `crate::scoring::Decay::value`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelScore {
    /// The points as they were at `at`.
    pub points: f64,
    #[serde(with = "timestamp_json")]
    pub at: Millis,
    /// How many of the model's thresholds the score had reached when last looked at: a
    /// crossing is a change of this number, so each is announced once.
    #[serde(default)]
    pub level: u32,
    /// The revision of the model `level` counts the thresholds of: after a change of the
    /// model, the level is counted again against its new thresholds, announcing nothing.
    #[serde(default)]
    pub revision: u32,
    /// When the model's decay next takes the score across a threshold (its timer), if ever.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "timestamp_json::option"
    )]
    pub timer_at: Option<Millis>,
}

/// What segments and tag rules keep of a contact (see `crate::audiences`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// The times of the events each window clause counts, oldest first, by counter (see
    /// `audiences::condition::Counter`): only those still inside the longest window.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub windows: BTreeMap<String, Vec<Millis>>,
    /// The segments the contact is in, each with the segment's generation (random, given when
    /// it was made): membership of a segment deleted and made again under its name does not
    /// count for the new one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segments: BTreeMap<String, u64>,
    /// How many times the contact entered or left a segment: names those events.
    #[serde(default)]
    pub moves: u64,
    /// The tags tag rules gave the contact, which only they take away again (a tag set by hand
    /// stays when a rule of its name stops holding, and goes when its rule is deleted only if
    /// the rule gave it). `None` in records from before this was kept: then every tag a rule
    /// is named for counts as the rule's, as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruled: Option<BTreeSet<String>>,
    /// When the contact's audience timer fires (a window slides, a score decays), if set.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "timestamp_json::option"
    )]
    pub timer_at: Option<Millis>,
}

/// What the lifecycle stage rules track of a contact (see `crate::lifecycle`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// When the contact last did something: an event from outside.
    #[serde(with = "timestamp_json")]
    pub last_at: Millis,
    /// The events the rules count (purchases), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// When the contact's stage timer fires, if one is set.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "timestamp_json::option"
    )]
    pub timer_at: Option<Millis>,
}

/// One explained movement of a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreChange {
    pub delta: f64,
    pub reason: String,
}

/// A change an action plugin asks the host to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    SetAttribute {
        name: String,
        value: Value,
    },
    UnsetAttribute {
        name: String,
    },
    AddTag {
        tag: String,
    },
    RemoveTag {
        tag: String,
    },
    AdjustScore {
        delta: f64,
        reason: String,
    },
    SetLifecycleStage {
        stage: String,
    },
    EmitEvent {
        name: String,
        properties: Attributes,
    },
    SendMessage {
        channel: String,
        template: String,
        variables: Attributes,
    },
}

/// A rendered message for a channel plugin to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub id: String,
    pub contact_id: String,
    pub recipient: String,
    #[serde(default)]
    pub class: MessageClass,
    /// Sent by test-send to an internal address.
    #[serde(default)]
    pub test: bool,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    /// Headers the message must carry as they are (`List-Unsubscribe`, ...).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Whether a message needs consent and an unsubscribe (marketing) or not (transactional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageClass {
    #[default]
    Marketing,
    Transactional,
}

impl MessageClass {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageClass::Marketing => "marketing",
            MessageClass::Transactional => "transactional",
        }
    }
}

/// Why a channel could not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Retryable,
    Permanent,
    InvalidRecipient,
}

/// What a channel plugin reports for one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered {
        provider_id: String,
    },
    Failed {
        kind: FailureKind,
        message: String,
        retry_after_ms: Option<u64>,
    },
}

/// A request a provider sent to a channel's webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRequest {
    pub method: String,
    pub query: String,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a provider can report about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderEventKind {
    Delivered,
    Bounced,
    Complaint,
    Opened,
    Clicked,
    Unsubscribed,
}

/// One thing a provider reported, as the channel plugin read it from a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEvent {
    pub kind: ProviderEventKind,
    pub message_id: Option<String>,
    pub provider_id: Option<String>,
    pub reason: Option<String>,
    pub url: Option<String>,
}

/// Why a channel plugin refused a webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookRejection {
    /// Not signed or authenticated as the provider does it.
    Unauthenticated(String),
    /// Authenticated, but not a payload the plugin understands.
    Malformed(String),
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    /// JSON Schema of the config, as the plugin wrote it.
    pub config_schema: serde_json::Value,
    pub outbound_hosts: Vec<String>,
}

impl PluginInfo {
    /// The plugin's address, `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A plugin's config as its `validate-config` prepared it: what every call of that plugin
/// takes. The bytes are opaque to the host and belong to the plugin binary that made them.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedConfig {
    pub bytes: Vec<u8>,
    /// The contact attributes the config reads; calls receive only these. `None`: all of them.
    pub attributes: Option<Vec<String>>,
}

impl PreparedConfig {
    /// Bytes that ask for every attribute: for tests and tools that hand a plugin raw bytes.
    pub fn reading_everything(bytes: impl Into<Vec<u8>>) -> Self {
        PreparedConfig {
            bytes: bytes.into(),
            attributes: None,
        }
    }
}

/// One reason a plugin refused a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_keep_their_types_and_timestamps_round_trip() {
        let attributes: Attributes = serde_json::from_str(
            r#"{"vip": true, "employees": 600, "ltv": 12.5, "city": "Shenzhen",
                "registered_at": "2026-11-01T10:00:00Z", "interests": ["crm", "ai"]}"#,
        )
        .unwrap();
        assert_eq!(attributes["vip"], Value::Boolean(true));
        assert_eq!(attributes["employees"], Value::Integer(600));
        assert_eq!(attributes["ltv"], Value::Number(12.5));
        assert_eq!(attributes["city"], Value::Text("Shenzhen".into()));
        assert_eq!(
            attributes["registered_at"],
            Value::Timestamp(1_793_527_200_000)
        );
        let back = serde_json::to_value(&attributes).unwrap();
        assert_eq!(back["registered_at"], "2026-11-01T10:00:00Z");
    }

    #[test]
    fn null_and_nested_objects_are_refused_with_a_reason() {
        let err = serde_json::from_str::<Attributes>(r#"{"a": null}"#).unwrap_err();
        assert!(err.to_string().contains("null is not a value"), "{err}");
        let err = serde_json::from_str::<Attributes>(r#"{"a": {"b": 1}}"#).unwrap_err();
        assert!(err.to_string().contains("nested objects"), "{err}");
        let err = Value::from_json(&serde_json::json!(["a", 1])).unwrap_err();
        assert!(err.contains("a list value may only hold strings"), "{err}");
        assert_eq!(
            Value::from_json(&serde_json::json!(u64::MAX)),
            Ok(Value::Number(u64::MAX as f64))
        );
    }

    #[test]
    fn event_timestamps_read_rfc_3339_or_milliseconds_and_name_what_is_wrong() {
        let event = |timestamp: &str| {
            serde_json::from_str::<Event>(&format!(
                r#"{{"id": "e1", "contact_id": "c1", "name": "n", "timestamp": {timestamp}}}"#
            ))
        };
        assert_eq!(
            event(r#""2026-11-01T10:00:00Z""#).unwrap().timestamp,
            1_793_527_200_000
        );
        assert_eq!(event("1793527200000").unwrap().timestamp, 1_793_527_200_000);
        assert_eq!(event("-5").unwrap().timestamp, -5);
        let err = event(r#""yesterday""#).unwrap_err().to_string();
        assert!(
            err.contains("`yesterday` is not an RFC 3339 timestamp"),
            "{err}"
        );
        let err = event("18446744073709551615").unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
        let err = event("true").unwrap_err().to_string();
        assert!(
            err.contains("RFC 3339 timestamp or integer milliseconds"),
            "{err}"
        );
    }
}
