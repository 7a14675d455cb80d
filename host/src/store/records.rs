//! What the store keeps for journeys: definitions and versions, enrollments, the work inbox,
//! timers, the message outbox and per-node counters, and the [`Commit`] that writes a step.
//!
//! Journey definitions are kept as JSON documents: their meaning belongs to the journeys module.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Attributes, Effect, Event, Millis};

/// Where a journey stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JourneyStatus {
    /// Never published: enrolls no one.
    Draft,
    /// Its latest published version enrolls contacts.
    Active,
    /// Enrolls no one new; contacts already in it carry on.
    Paused,
    /// Finished with: enrolls no one, and contacts still in it leave at their next step.
    Archived,
}

/// A journey: its editable draft and how far it has been published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneyRecord {
    pub id: String,
    pub status: JourneyStatus,
    /// The draft definition (JSON), edited freely; publishing freezes a copy as a version.
    pub draft: serde_json::Value,
    /// The latest published version, 0 when never published.
    pub published_version: u32,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    #[serde(with = "crate::model::timestamp_json")]
    pub updated_at: Millis,
}

/// A published, immutable version of a journey. Contacts stay on the version they entered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneyVersion {
    pub journey_id: String,
    pub version: u32,
    /// The definition with every plugin pinned to `name@version`.
    pub definition: serde_json::Value,
    #[serde(with = "crate::model::timestamp_json")]
    pub published_at: Millis,
}

/// Where one contact is in one journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentState {
    /// Held at a wait node until its time or event.
    Waiting,
    /// A plugin failed at this node; the step is tried again later.
    Retrying,
    /// A plugin kept failing; held here with the error until someone looks.
    Parked,
    /// Reached an exit node or the end of a path.
    Completed,
    /// Did a goal event.
    Converted,
    /// Left for another reason: the journey was archived, the trigger no longer matched.
    Exited,
}

impl EnrollmentState {
    /// Still in the journey.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            EnrollmentState::Waiting | EnrollmentState::Retrying | EnrollmentState::Parked
        )
    }
}

/// One node a contact passed, when, and by which way out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passed {
    pub node: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What an enrollment is waiting for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// When the timer fires: the end of a delay, the window's time, an event wait's timeout,
    /// or the next retry.
    #[serde(with = "crate::model::timestamp_json")]
    pub due_at: Millis,
    /// An event that ends the wait early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// One contact's passage through one journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub id: String,
    pub contact_id: String,
    pub journey_id: String,
    pub version: u32,
    pub state: EnrollmentState,
    /// The node the contact is at (or left from, once no longer active).
    pub node: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub entered_at: Millis,
    #[serde(with = "crate::model::timestamp_json")]
    pub updated_at: Millis,
    /// The event that brought the contact to this step, which conditions and actions see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// Failed attempts at the current node.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    pub history: Vec<Passed>,
}

/// One contact's record of one journey: for re-entry rules and for listing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContactJourney {
    pub contact_id: String,
    pub journey_id: String,
    /// Enrollments still in the journey.
    pub active: Vec<String>,
    /// The most recent enrollments, active or not, newest last (at most [`RECENT_ENROLLMENTS`]).
    pub recent: Vec<String>,
    pub entries: u32,
    #[serde(with = "crate::model::timestamp_json")]
    pub last_entered_at: Millis,
}

/// How many enrollments per contact and journey are listed.
pub const RECENT_ENROLLMENTS: usize = 20;

/// Work for the contact's journey worker, queued durably.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkItem {
    /// An event arrived: goals, waits and triggers look at it.
    Event {
        contact_id: String,
        event_id: String,
        /// The event itself, so the worker need not read it back; absent in items queued
        /// before it was carried here, which read it by id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<Event>,
    },
    /// Enroll the contact now (API call), at the journey's first entry node.
    Enroll {
        contact_id: String,
        journey_id: String,
        /// The caller's id for this request; the same id enrolls once.
        request_id: String,
    },
    /// Run a parked enrollment's node again (an operator fixed what made it fail).
    Retry {
        contact_id: String,
        enrollment_id: String,
    },
    /// An enrollment's timer fired.
    Wake {
        contact_id: String,
        enrollment_id: String,
        #[serde(with = "crate::model::timestamp_json")]
        due_at: Millis,
    },
}

impl WorkItem {
    pub fn contact_id(&self) -> &str {
        match self {
            WorkItem::Event { contact_id, .. }
            | WorkItem::Enroll { contact_id, .. }
            | WorkItem::Retry { contact_id, .. }
            | WorkItem::Wake { contact_id, .. } => contact_id,
        }
    }
}

/// A record that could not be used, set aside so that everything else goes on: journey work
/// that kept failing or does not decode, or a record found unreadable when the store opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id among the dead letters (requeue and delete name it).
    pub id: String,
    /// The tree it came from: `inbox` for journey work, else the kind of record it was.
    pub tree: String,
    /// Where it sat there (hex).
    pub key: String,
    /// The work item, when it is one and decodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<WorkItem>,
    /// The start of the stored bytes as text (invalid UTF-8 replaced), when they do not decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// How many bytes the record had.
    #[serde(default)]
    pub size: usize,
    pub error: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub set_aside_at: Millis,
}

/// A change an operator made through the API, kept in the order made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub at: Millis,
    /// Who: the credential the request carried.
    pub actor: String,
    /// What, as `object_kind.verb` (`dead_letter.requeue`).
    pub action: String,
    /// The object's id.
    pub object: String,
    /// What it was before and after, or other particulars.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Where a work item sits in the inbox; opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkKey(pub Vec<u8>);

/// Journey work is spread over this many partitions by contact; one worker owns a partition at
/// a time, so one contact's steps never run concurrently.
pub const PARTITIONS: u8 = 64;

/// The partition of a contact (FNV-1a, stable across versions and hosts).
pub fn partition_of(contact_id: &str) -> u8 {
    let hash = contact_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % PARTITIONS as u64) as u8
}

/// A message a journey asked to send, waiting in the outbox for its channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Stable for the step that asked for it: a provider's idempotency key.
    pub id: String,
    pub contact_id: String,
    pub channel: String,
    pub template: String,
    pub variables: Attributes,
    pub journey_id: String,
    pub version: u32,
    pub node: String,
    pub enrollment_id: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    pub status: String,
}

/// A per-node counter: `entered`, `passed:LABEL` (or `passed`), `waiting`, `failed`,
/// `converted`, `completed`, `exited`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CounterKey {
    pub journey_id: String,
    pub version: u32,
    pub node: String,
    pub metric: String,
}

/// One change to a plugin's key-value space, made during a step.
#[derive(Debug, Clone, PartialEq)]
pub struct KvWrite {
    pub namespace: String,
    pub key: String,
    /// `None` deletes.
    pub value: Option<Vec<u8>>,
}

/// Everything one batch of journey work changes, written as one write set: the effects on
/// contacts, the enrollments' new positions, timers, messages, emitted events, counters, the
/// plugins' key-value writes, and the inbox items it consumed. All or nothing.
#[derive(Debug, Default)]
pub struct Commit {
    /// Effects per contact, applied in order to the stored contact.
    pub contact_effects: Vec<(String, Vec<Effect>)>,
    pub enrollments: Vec<Enrollment>,
    pub contact_journeys: Vec<ContactJourney>,
    /// `(due_at, enrollment_id, contact_id)`.
    pub timers_set: Vec<(Millis, String, String)>,
    /// `(due_at, enrollment_id)`.
    pub timers_cleared: Vec<(Millis, String)>,
    pub messages: Vec<OutboxMessage>,
    /// Events the step emitted: recorded and queued like ingested ones.
    pub events: Vec<Event>,
    pub counters: BTreeMap<CounterKey, i64>,
    pub kv: Vec<KvWrite>,
    /// Inbox items this batch consumed.
    pub done: Vec<WorkKey>,
    pub now: Millis,
}

impl Commit {
    /// Add `delta` to a counter.
    pub fn count(&mut self, journey_id: &str, version: u32, node: &str, metric: &str, delta: i64) {
        *self
            .counters
            .entry(CounterKey {
                journey_id: journey_id.to_owned(),
                version,
                node: node.to_owned(),
                metric: metric.to_owned(),
            })
            .or_default() += delta;
    }
}
