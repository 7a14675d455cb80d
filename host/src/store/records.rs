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
    /// Plugins this journey was moved to, by plugin name: every version of the journey runs
    /// the named plugin at this version, whatever version its definition pins, so contacts
    /// already in it take their next step on it too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_versions: BTreeMap<String, PluginPin>,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    #[serde(with = "crate::model::timestamp_json")]
    pub updated_at: Millis,
}

/// A plugin version a journey was moved to, and when and by whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginPin {
    /// `name@version`.
    pub id: String,
    pub sha256: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub moved_at: Millis,
    pub moved_by: String,
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
    /// The template versions its sends were published with, by template name.
    #[serde(default)]
    pub templates: BTreeMap<String, u32>,
}

/// Where one contact is in one journey. Each state carries what it needs and nothing else.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Moving through nodes inside a step; a step always leaves it in another state, so it is
    /// never stored.
    Running,
    /// Enrolled by an event whose trigger failed to answer, so whether the event enrolls the
    /// contact is not known yet: the trigger is asked again at `due_at`. Not yet an entry: it
    /// does not count as one, for re-entry or in the journey's counters, until the trigger says
    /// yes (while pending, it keeps a second event from enrolling the contact again).
    Pending {
        due_at: Millis,
        attempts: u32,
        error: String,
    },
    /// Held at a wait node until its time, or until an event comes first.
    Waiting {
        due_at: Millis,
        event: Option<String>,
    },
    /// A plugin failed at this node; the node runs again at `due_at`.
    Retrying {
        due_at: Millis,
        attempts: u32,
        error: String,
    },
    /// Held here with the error until someone looks: the attempts are spent, or running again
    /// would not help.
    Parked { attempts: u32, error: String },
    /// Out of the journey.
    Done { outcome: Outcome, reason: String },
}

/// How an enrollment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Reached an exit node or the end of a path.
    Completed,
    /// Did a goal event.
    Converted,
    /// Left for another reason: the journey was archived, the trigger no longer matched.
    Exited,
}

impl State {
    /// Still in the journey.
    pub fn is_active(&self) -> bool {
        !matches!(self, State::Done { .. })
    }

    /// The timer the state waits on, if any.
    pub fn due_at(&self) -> Option<Millis> {
        match self {
            State::Waiting { due_at, .. }
            | State::Retrying { due_at, .. }
            | State::Pending { due_at, .. } => Some(*due_at),
            _ => None,
        }
    }

    /// The error that holds the enrollment where it is, if any.
    pub fn error(&self) -> Option<&str> {
        match self {
            State::Pending { error, .. }
            | State::Retrying { error, .. }
            | State::Parked { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Why the enrollment left the journey, once done.
    pub fn reason(&self) -> Option<&str> {
        match self {
            State::Done { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The state's name, as the API shows it.
    pub fn name(&self) -> StateName {
        match self {
            State::Running => StateName::Running,
            State::Pending { .. } => StateName::Pending,
            State::Waiting { .. } => StateName::Waiting,
            State::Retrying { .. } => StateName::Retrying,
            State::Parked { .. } => StateName::Parked,
            State::Done { outcome, .. } => match outcome {
                Outcome::Completed => StateName::Completed,
                Outcome::Converted => StateName::Converted,
                Outcome::Exited => StateName::Exited,
            },
        }
    }
}

/// A state by name: how records and the API spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Running,
    Pending,
    Waiting,
    Retrying,
    Parked,
    Completed,
    Converted,
    Exited,
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

/// What an enrollment is waiting for, as records and the API show it.
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

/// Most nodes an enrollment's history keeps: the first ones it passed, and the latest; the
/// count of those left out in between is kept.
pub const HISTORY_KEPT: usize = 200;

/// One contact's passage through one journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "EnrollmentRecord", into = "EnrollmentRecord")]
pub struct Enrollment {
    pub id: String,
    pub contact_id: String,
    pub journey_id: String,
    pub version: u32,
    /// The node the contact is at (or left from, once done).
    pub node: String,
    pub state: State,
    pub entered_at: Millis,
    pub updated_at: Millis,
    /// The event that brought the contact to this step, which conditions and actions see.
    pub event_id: Option<String>,
    /// The nodes passed, oldest first; at most [`HISTORY_KEPT`], the middle left out.
    pub history: Vec<Passed>,
    /// How many passed nodes the history left out.
    pub history_dropped: u32,
}

impl Enrollment {
    /// Record that the contact passed its node by `label` at `at`.
    pub fn passed(&mut self, label: Option<String>, at: Millis) {
        if self.history.len() >= HISTORY_KEPT {
            // Keep the first half (how it began) and make room at the end.
            self.history.remove(HISTORY_KEPT / 2);
            self.history_dropped += 1;
        }
        self.history.push(Passed {
            node: self.node.clone(),
            at,
            label,
        });
        self.updated_at = at;
    }
}

/// An enrollment as records and the API spell it: flat fields, which earlier versions wrote
/// and clients read.
#[derive(Serialize, Deserialize)]
struct EnrollmentRecord {
    id: String,
    contact_id: String,
    journey_id: String,
    version: u32,
    state: StateName,
    node: String,
    #[serde(with = "crate::model::timestamp_json")]
    entered_at: Millis,
    #[serde(with = "crate::model::timestamp_json")]
    updated_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waiting: Option<Waiting>,
    /// Failed attempts at the current node.
    #[serde(default)]
    attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_reason: Option<String>,
    history: Vec<Passed>,
    #[serde(default, skip_serializing_if = "is_zero")]
    history_dropped: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl From<Enrollment> for EnrollmentRecord {
    fn from(e: Enrollment) -> Self {
        let name = e.state.name();
        let (waiting, attempts, error, exit_reason) = match e.state {
            State::Running => (None, 0, None, None),
            State::Waiting { due_at, event } => (Some(Waiting { due_at, event }), 0, None, None),
            State::Retrying {
                due_at,
                attempts,
                error,
            }
            | State::Pending {
                due_at,
                attempts,
                error,
            } => (
                Some(Waiting {
                    due_at,
                    event: None,
                }),
                attempts,
                Some(error),
                None,
            ),
            State::Parked { attempts, error } => (None, attempts, Some(error), None),
            State::Done { reason, .. } => (None, 0, None, Some(reason)),
        };
        EnrollmentRecord {
            id: e.id,
            contact_id: e.contact_id,
            journey_id: e.journey_id,
            version: e.version,
            state: name,
            node: e.node,
            entered_at: e.entered_at,
            updated_at: e.updated_at,
            event_id: e.event_id,
            waiting,
            attempts,
            error,
            exit_reason,
            history: e.history,
            history_dropped: e.history_dropped,
        }
    }
}

impl TryFrom<EnrollmentRecord> for Enrollment {
    type Error = String;

    fn try_from(r: EnrollmentRecord) -> Result<Self, String> {
        let error = || r.error.clone().unwrap_or_default();
        let state = match (r.state, &r.waiting) {
            (StateName::Waiting, Some(waiting)) => State::Waiting {
                due_at: waiting.due_at,
                event: waiting.event.clone(),
            },
            (StateName::Retrying, Some(waiting)) => State::Retrying {
                due_at: waiting.due_at,
                attempts: r.attempts,
                error: error(),
            },
            (StateName::Pending, Some(waiting)) => State::Pending {
                due_at: waiting.due_at,
                attempts: r.attempts,
                error: error(),
            },
            (StateName::Parked, _) => State::Parked {
                attempts: r.attempts,
                error: error(),
            },
            (name @ (StateName::Completed | StateName::Converted | StateName::Exited), _) => {
                State::Done {
                    outcome: match name {
                        StateName::Completed => Outcome::Completed,
                        StateName::Converted => Outcome::Converted,
                        _ => Outcome::Exited,
                    },
                    reason: r.exit_reason.clone().unwrap_or_default(),
                }
            }
            (name, _) => {
                return Err(format!(
                    "enrollment `{}` is stored as {name:?} without what that state needs",
                    r.id
                ));
            }
        };
        Ok(Enrollment {
            id: r.id,
            contact_id: r.contact_id,
            journey_id: r.journey_id,
            version: r.version,
            node: r.node,
            state,
            entered_at: r.entered_at,
            updated_at: r.updated_at,
            event_id: r.event_id,
            history: r.history,
            history_dropped: r.history_dropped,
        })
    }
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
pub const RECENT_ENROLLMENTS: usize = 10;

/// Most enrollments one contact may have in one journey at once (re-entry `concurrent`): a
/// contact's value holds them all, and a bound keeps it small.
pub const MAX_ACTIVE_ENROLLMENTS: usize = 100;

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
    /// Merge the contact into another (the same person, now identified): its attributes,
    /// tags, journeys and enrollments go to `into`, and its id becomes an alias of `into`. In
    /// the contact's own partition, so it comes after the work queued for it before.
    Merge { contact_id: String, into: String },
    /// Look at the contact's segments and tags again: a definition changed, or the contact
    /// was updated from outside.
    Refresh { contact_id: String },
    /// An enrollment's timer fired.
    Wake {
        contact_id: String,
        enrollment_id: String,
        #[serde(with = "crate::model::timestamp_json")]
        due_at: Millis,
    },
    /// Erase the contact (the right to erasure), after the work queued for it before: done by
    /// the worker that owns its partition, so no other step for it runs meanwhile.
    Erase {
        contact_id: String,
        /// Who asked, for the audit log.
        actor: String,
        /// What the audit log names the erasure by: random, so it says nothing of whom.
        reference: String,
        #[serde(with = "crate::model::timestamp_json")]
        requested_at: Millis,
    },
}

impl WorkItem {
    pub fn contact_id(&self) -> &str {
        match self {
            WorkItem::Event { contact_id, .. }
            | WorkItem::Enroll { contact_id, .. }
            | WorkItem::Retry { contact_id, .. }
            | WorkItem::Merge { contact_id, .. }
            | WorkItem::Refresh { contact_id }
            | WorkItem::Wake { contact_id, .. }
            | WorkItem::Erase { contact_id, .. } => contact_id,
        }
    }

    /// The same work, for another contact (one this contact was merged into).
    pub fn for_contact(&self, into: &str) -> WorkItem {
        let mut item = self.clone();
        match &mut item {
            WorkItem::Event {
                contact_id, event, ..
            } => {
                *contact_id = into.to_owned();
                if let Some(event) = event {
                    event.contact_id = into.to_owned();
                }
            }
            WorkItem::Enroll { contact_id, .. }
            | WorkItem::Retry { contact_id, .. }
            | WorkItem::Merge { contact_id, .. }
            | WorkItem::Refresh { contact_id }
            | WorkItem::Wake { contact_id, .. }
            | WorkItem::Erase { contact_id, .. } => *contact_id = into.to_owned(),
        }
        item
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

impl AuditEntry {
    /// An entry for the store to record; its id is given when it is written.
    pub fn new(
        at: Millis,
        actor: &str,
        action: &str,
        object: &str,
        detail: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            id: String::new(),
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            object: object.to_owned(),
            detail,
        }
    }
}

/// Which audit entries to list: newest first, within a time range, by actor, action or object,
/// a page at a time.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// From this time on (inclusive).
    pub since: Option<Millis>,
    /// Up to this time (inclusive).
    pub until: Option<Millis>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object: Option<String>,
    /// The `next` of the page before: entries older than the last one it had.
    pub before: Option<String>,
    pub limit: usize,
}

/// A page of audit entries, and the cursor of the next page if there are more.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub audit: Vec<AuditEntry>,
    pub next: Option<String>,
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
    pub status: super::messaging::DeliveryStatus,
    /// The template version it was (or will be) rendered from: the journey's pinned one, else
    /// the newest at the first attempt.
    #[serde(default)]
    pub template_version: Option<u32>,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When it is due for its next attempt, while it waits for one.
    #[serde(default, with = "crate::model::timestamp_json::option")]
    pub due_at: Option<Millis>,
    /// The address it went to, once known.
    #[serde(default)]
    pub recipient: Option<String>,
    /// The provider's id for it, once accepted.
    #[serde(default)]
    pub provider_id: Option<String>,
    /// What happened to it, oldest first (the first step and the latest ones).
    #[serde(default)]
    pub history: Vec<super::messaging::DeliveryStep>,
    /// A test send from a template's `test-send`: goes only to the test address given.
    #[serde(default)]
    pub test: bool,
}

/// A per-node counter: `entered`, `passed:LABEL` (or `passed`), `waiting`, `retried`,
/// `failed`, `emit_refused`, `converted`, `completed`, `exited`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CounterKey {
    pub journey_id: String,
    pub version: u32,
    pub node: String,
    pub metric: String,
}

/// A contact to erase and who asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Erasure {
    pub contact_id: String,
    pub actor: String,
    pub reference: String,
    pub requested_at: Millis,
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
    /// Events the batch emitted and ran: recorded like ingested ones, not queued.
    pub events: Vec<Event>,
    pub counters: BTreeMap<CounterKey, i64>,
    pub kv: Vec<KvWrite>,
    /// Inbox items this batch consumed.
    pub done: Vec<WorkKey>,
    /// Contacts to merge, `(from, into)`, after the batch's other changes to them.
    pub merges: Vec<(String, String)>,
    /// Work for contacts merged into others, queued again for the contact it now belongs to.
    pub forwards: Vec<WorkItem>,
    /// Events processed for a contact, `(contact id, event time, event id)`: its event list.
    pub seen: Vec<(String, Millis, String)>,
    /// Contacts to erase, after (and instead of) the batch's other changes to them.
    pub erasures: Vec<Erasure>,
    /// Scoring models' scores the batch moved, applied to the stored scores.
    pub model_scores: Vec<super::ModelScoreWrite>,
    /// Score changes for the contacts' histories.
    pub score_history: Vec<super::ScoreEntry>,
    /// What the lifecycle rules track of contacts, as the batch left it.
    pub activities: Vec<super::ActivityWrite>,
    /// Contacts' audience state (windows, segments, timer) as the batch left it.
    pub audiences: Vec<super::AudienceWrite>,
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
