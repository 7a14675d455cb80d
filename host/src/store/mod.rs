//! Durable state: contacts (de-duplicated by email and phone), events (recorded once per id),
//! the plugins' private key-value spaces, and the journeys' state: definitions and versions,
//! enrollments, the work inbox, timers, the outbox and per-node counters.
//!
//! Owns the layout on disk and nothing else: it knows no journeys, no HTTP and no wasm. Backends
//! implement [`Store`]; [`SledStore`] is the embedded default, and a shared SQL backend can be
//! added beside it without touching callers.

mod access;
mod aside;
mod audiences;
mod backup;
mod codec;
mod commit;
mod contact_events;
mod contact_search;
mod contact_upsert;
mod durability;
mod erasure;
mod failpoint;
mod identity;
mod layout;
mod legacy;
mod merge;
mod merge_scores;
mod messaging;
mod open;
mod records;
mod relayout;
mod scoring;
mod sled_access;
mod sled_audiences;
mod sled_journeys;
mod sled_messaging;
mod sled_scoring;
mod sled_store;
mod sled_uploads;
mod uploads;
mod watchdog;
mod write_set;

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;

pub use access::{AccessStore, TokenRecord, Workspace};
pub(crate) use aside::truncated;
pub use audiences::{
    AudienceKind, AudienceRecord, AudienceStore, AudienceWrite, MemberPage, SweepRecord, SweepWork,
};
pub use backup::{BackupSummary, RestoreSummary, restore, verify};
pub use contact_events::EventPage;
pub use contact_search::{ContactPage, ContactQuery, MAX_SCANNED};
pub use erasure::erasure_reference;
pub use identity::{normalize_email, normalize_phone};
pub use layout::{MAX_RECORD_BYTES, MAX_STORED_BYTES};
pub use messaging::*;
pub use open::Recovery;
pub use records::*;
pub use scoring::{
    ActivityWrite, ModelScoreWrite, ScoreEntry, ScorePage, ScoringModelRecord, ScoringStore,
};
pub use sled_audiences::sweep_item;
pub use sled_store::SledStore;
pub use uploads::{PluginStore, PluginUpload};
pub use watchdog::{DEFAULT_LIMIT, WEDGED_EXIT};
pub use write_set::Replayed;

use crate::model::{Attributes, ConsentState, Contact, Event, Millis};

/// What a caller sends to create or update a contact. Attributes are merged (set), tags are
/// added, consents are set per channel; everything else is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactUpsert {
    /// The caller's id for the contact; without one, the contact is found by email or phone, or
    /// created with a new id.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub attributes: Attributes,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub consents: BTreeMap<String, ConsentState>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub lifecycle_stage: Option<String>,
    /// A contact this creates is known only by an anonymous id (Segment's `anonymousId`).
    #[serde(skip)]
    pub anonymous: bool,
}

impl ContactUpsert {
    /// What names the contact, normalised: `id:…`, `email:…`, `phone:…` (the same person in
    /// two rows of an import shares one). Refused like [`ContactUpsert::check`], and for an
    /// email or phone that is not one.
    pub fn identities(&self) -> Result<Vec<String>, StoreError> {
        self.check()?;
        let (email, phone) = sled_store::identities_in(&self.attributes)?;
        Ok((self.id.iter().map(|id| format!("id:{id}")))
            .chain(email.map(|e| format!("email:{e}")))
            .chain(phone.map(|p| format!("phone:{p}")))
            .collect())
    }

    /// Refuse what no contact may hold, naming the field: an id outside 1 to 256 characters,
    /// an attribute, tag or consent channel without a name, a time zone that is not an IANA
    /// name, an empty lifecycle stage.
    pub fn check(&self) -> Result<(), StoreError> {
        let invalid = |message: String| Err(StoreError::Invalid(message));
        if let Some(id) = &self.id
            && (id.trim().is_empty() || id.len() > 256 || id.chars().any(char::is_control))
        {
            return invalid(
                "`id` must be 1 to 256 characters, none of them control characters".into(),
            );
        }
        for name in self.attributes.keys() {
            if let Err(problem) = crate::model::check_name(name) {
                return invalid(format!(
                    "attribute name `{}`: {problem}",
                    name.escape_debug()
                ));
            }
        }
        for tag in &self.tags {
            if let Err(problem) = crate::model::check_name(tag) {
                return invalid(format!("tag `{}`: {problem}", tag.escape_debug()));
            }
        }
        for channel in self.consents.keys() {
            if let Err(problem) = crate::model::check_name(channel) {
                return invalid(format!(
                    "consent channel `{}`: {problem}",
                    channel.escape_debug()
                ));
            }
        }
        if let Some(timezone) = &self.timezone
            && jiff::tz::TimeZone::get(timezone).is_err()
        {
            return invalid(format!(
                "`timezone` `{}` is not an IANA time zone name (like \"Asia/Shanghai\" or \"UTC\")",
                timezone.escape_debug()
            ));
        }
        if let Some(stage) = &self.lifecycle_stage
            && let Err(problem) = crate::model::check_name(stage)
        {
            return invalid(format!("`lifecycle_stage`: {problem}"));
        }
        Ok(())
    }

    /// Apply to `contact`: attributes set, tags added, consents set, timezone and stage
    /// replaced when given.
    pub fn apply(self, contact: &mut Contact, now: Millis) {
        contact.attributes.extend(self.attributes);
        for tag in self.tags {
            if !contact.tags.contains(&tag) {
                contact.tags.push(tag);
            }
        }
        contact.consents.extend(self.consents);
        if let Some(timezone) = self.timezone {
            contact.timezone = timezone;
        }
        if let Some(stage) = self.lifecycle_stage {
            contact.lifecycle_stage = stage;
        }
        contact.updated_at = now;
    }
}

/// The contact after an upsert, and whether it was new.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    pub contact: Contact,
    pub created: bool,
}

/// Whether an event was new or had been recorded before (same id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate,
}

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The email or phone in the request belongs to another contact.
    #[error("{field} `{value}` already belongs to contact `{owner}`")]
    IdentityConflict {
        field: &'static str,
        value: String,
        owner: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// A journey, version or enrollment that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A record too large to keep.
    #[error("{what} is {size} bytes; the limit is {limit}")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
    },
    /// The request conflicts with what is stored (a dead letter whose place is taken).
    #[error("{0}")]
    Conflict(String),
    /// A stored record that does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("storage: {0}")]
    Backend(String),
}

impl StoreError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::IdentityConflict { .. } => "contact_identity_conflict",
            StoreError::Invalid(_) => "invalid_contact",
            StoreError::NotFound(_) => "not_found",
            StoreError::TooLarge { .. } => "too_large",
            StoreError::Conflict(_) => "conflict",
            StoreError::Corrupt(_) => "corrupt_record",
            StoreError::Backend(_) => "storage_error",
        }
    }
}

/// Durable contacts, events and journey state.
pub trait Store:
    JourneyStore
    + MessageStore
    + AccessStore
    + PluginStore
    + ScoringStore
    + AudienceStore
    + Send
    + Sync
    + 'static
{
    /// The contact with this id.
    fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError>;
    /// The contact a merged contact's id now belongs to, if it was merged into another.
    fn alias(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Whether a contact with this id exists, without reading it.
    fn contact_exists(&self, id: &str) -> Result<bool, StoreError>;
    /// Create or update a contact, de-duplicating by normalised email and phone.
    fn upsert_contact(&self, upsert: ContactUpsert, now: Millis) -> Result<Upserted, StoreError>;
    /// Like [`Store::upsert_contact`] for many at once, in one write: each gets its own answer
    /// (a later one naming a contact an earlier one did updates it); `Err` only when the write
    /// failed.
    fn upsert_contacts(
        &self,
        upserts: Vec<ContactUpsert>,
        now: Millis,
    ) -> Result<Vec<Result<Upserted, StoreError>>, StoreError>;
    /// Record events by id and queue each new one for the journeys, in one write per event; an
    /// id seen before is reported as a duplicate and not stored or queued again.
    fn record_events(&self, events: &[Event]) -> Result<Vec<Recorded>, StoreError>;
    /// The event with this id.
    fn event(&self, id: &str) -> Result<Option<Event>, StoreError>;
    /// A contact's processed events, newest first: at most `limit` before the cursor `before`
    /// (the `next` of the page before), and the cursor of the next page if there is one.
    fn contact_events(
        &self,
        contact_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<EventPage, StoreError>;
    /// Contacts that match `query`, in id order, a page at a time.
    fn search_contacts(&self, query: &ContactQuery) -> Result<ContactPage, StoreError>;
    /// The trees with `needle` in a key or value: what checks that an erasure left nothing.
    fn trees_holding(&self, needle: &[u8]) -> Result<Vec<&'static str>, StoreError>;
    /// Make everything written so far durable. Concurrent callers share one flush (group
    /// commit), so durability does not cost a disk sync per request.
    fn flush(&self) -> Result<(), StoreError>;
    /// Write a backup of the whole store to `out` while it keeps taking writes: the store as
    /// it was at one moment, restored by [`restore`].
    fn backup(&self, out: &mut dyn std::io::Write) -> Result<BackupSummary, StoreError>;
    /// What opening the store found and repaired.
    fn recovery(&self) -> Recovery;
    /// `Err` while the store refuses writes (a write failed part-way; restart to finish it).
    fn writable(&self) -> Result<(), StoreError>;

    /// A value in a plugin's private key-value space.
    fn plugin_kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store a value; `Ok(false)` when the space would then hold more than `quota`.
    fn plugin_kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        quota: KvUsage,
    ) -> Result<bool, StoreError>;
    /// Remove a key.
    fn plugin_kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError>;
    /// How much a plugin's space holds.
    fn plugin_kv_usage(&self, namespace: &str) -> Result<KvUsage, StoreError>;

    /// Up to `limit` records set aside, oldest first.
    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Put a dead letter back where it came from (journey work runs again), and record it.
    fn requeue_dead_letter(&self, id: &str, audit: AuditEntry) -> Result<DeadLetter, StoreError>;
    /// Remove a dead letter for good, and record it.
    fn delete_dead_letter(&self, id: &str, audit: AuditEntry) -> Result<DeadLetter, StoreError>;
    /// The audit entries `query` asks for, newest first.
    fn audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError>;
}

/// How much a plugin's key-value space holds, or may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KvUsage {
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

impl KvUsage {
    pub const UNLIMITED: KvUsage = KvUsage {
        keys: u64::MAX,
        bytes: u64::MAX,
    };
}

/// The journeys' durable state. Only the journeys module and the scheduler write it.
pub trait JourneyStore {
    /// The journey with this id.
    fn journey(&self, id: &str) -> Result<Option<JourneyRecord>, StoreError>;
    /// Every journey, by id.
    fn journeys(&self) -> Result<Vec<JourneyRecord>, StoreError>;
    /// Create or replace a journey record, with the audit entry that says who and why.
    fn put_journey(&self, record: &JourneyRecord, audit: AuditEntry) -> Result<(), StoreError>;
    /// Write the record, its new version and the audit entry together.
    fn publish_journey(
        &self,
        record: &JourneyRecord,
        version: &JourneyVersion,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
    /// A published version.
    fn journey_version(&self, id: &str, version: u32)
    -> Result<Option<JourneyVersion>, StoreError>;

    /// Queue a work item for its contact's worker.
    fn enqueue(&self, item: &WorkItem) -> Result<(), StoreError>;
    /// Queue an API enrollment; `Ok(false)` when this request id was queued before.
    fn enqueue_enrollment(&self, item: &WorkItem) -> Result<bool, StoreError>;
    /// About `limit` queued items of a partition, oldest first. A sweep's bundle (several
    /// contacts' items in one record) comes whole, each item with the key they share, so up
    /// to a bundle's size more may come. A record that does not decode would stall its
    /// partition for good: it is set aside (see [`JourneyStore::set_aside`]) at `now` instead.
    fn pending_work(
        &self,
        partition: u8,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<(WorkKey, WorkItem)>, StoreError>;
    /// Move a queued item that cannot run out of the inbox, keeping it and `error` where an
    /// operator can see it; nothing if it is no longer queued.
    fn set_aside(&self, key: &WorkKey, error: &str, now: Millis) -> Result<(), StoreError>;
    /// Replace the bundle at `key` with a record per item where it sat (their keys follow
    /// `key`, before the next record), so that each contact's work runs, fails and is set aside
    /// on its own. `Ok(false)` when no bundle is there.
    fn split_bundle(&self, key: &WorkKey) -> Result<bool, StoreError>;
    /// Whether any work is queued.
    fn has_pending_work(&self) -> Result<bool, StoreError>;
    /// Move up to `limit` timers due at or before `now` into the inbox; the partitions that got
    /// work, one entry per item.
    fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<Vec<u8>, StoreError>;
    /// When the earliest timer is due.
    fn next_timer_due(&self) -> Result<Option<Millis>, StoreError>;
    /// How many timers are pending.
    fn pending_timers(&self) -> Result<usize, StoreError>;

    /// An enrollment by id.
    fn enrollment(&self, id: &str) -> Result<Option<Enrollment>, StoreError>;
    /// One contact's records of every journey they entered.
    fn contact_journeys(&self, contact_id: &str) -> Result<Vec<ContactJourney>, StoreError>;
    /// A contact and its records of every journey they entered, read together.
    fn contact_with_journeys(
        &self,
        contact_id: &str,
    ) -> Result<Option<(Contact, Vec<ContactJourney>)>, StoreError>;
    /// The messages journeys asked to send to a contact, oldest first.
    fn messages(&self, contact_id: &str) -> Result<Vec<OutboxMessage>, StoreError>;
    /// A journey's per-node counters.
    fn counters(&self, journey_id: &str) -> Result<Vec<(CounterKey, i64)>, StoreError>;
    /// Write a batch of journey work atomically; the partitions that got new work (work
    /// forwarded to the contact another was merged into), one entry per item.
    fn commit(&self, commit: Commit) -> Result<Vec<u8>, StoreError>;
}
