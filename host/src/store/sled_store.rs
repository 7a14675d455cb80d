//! The embedded default: sled 0.34. A write of several keys goes through a [`WriteSet`]
//! (recorded, applied, replayed after a crash) rather than a sled transaction, and the store's
//! own locks keep two writers off the same keys; see `write_set` for why. Opening the store
//! (converting an earlier layout, finishing interrupted writes) is `open`'s business.

use std::sync::{Mutex, MutexGuard};

use super::codec::{decode, event_value};
use super::durability::GroupCommit;
use super::identity::{normalize_email, normalize_phone};
use super::layout::{MAX_RECORD_BYTES, TreeId, kv_key, kv_usage, kv_usage_value};
use super::open::Recovery;
use super::write_set::{Unsettled, WriteSet};
use super::{
    ContactUpsert, KvUsage, PARTITIONS, Recorded, Store, StoreError, Upserted, WorkItem,
    partition_of,
};
use crate::model::{Contact, Event, Millis, Value};

/// Who may write what at once. Taken in this order, each at most once per writer: `publish`,
/// `identities`, `plugin_kv`, then partitions in ascending order, then `suppressions`, then
/// event ids.
pub(super) struct Locks {
    /// Journey definitions and versions.
    pub publish: Mutex<()>,
    /// Email and phone ownership.
    pub identities: Mutex<()>,
    /// The plugins' key-value spaces and their usage.
    pub plugin_kv: Mutex<()>,
    /// Everything of the contacts in a partition: the contact, its enrollments, timers,
    /// messages and inbox items, and the counters' shard of that number.
    pub partitions: Vec<Mutex<()>>,
    /// The suppressed addresses: one address may be written for messages of several
    /// contacts, so several partitions, at once (a bounce must not be replaced by a complaint
    /// read before it was written).
    pub suppressions: Mutex<()>,
    /// Recording an event id (and an enrollment request id), striped by its hash.
    pub ids: Vec<Mutex<()>>,
    /// The dead letters and the audit log.
    pub operations: Mutex<()>,
    /// The sweeps' records; taken after any partition lock, never before one.
    pub sweeps: Mutex<()>,
}

impl Default for Locks {
    fn default() -> Self {
        Locks {
            publish: Mutex::default(),
            identities: Mutex::default(),
            plugin_kv: Mutex::default(),
            partitions: (0..PARTITIONS).map(|_| Mutex::default()).collect(),
            suppressions: Mutex::default(),
            ids: (0..64).map(|_| Mutex::default()).collect(),
            operations: Mutex::default(),
            sweeps: Mutex::default(),
        }
    }
}

pub(super) fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Locks {
    /// The stripe for an id (FNV-1a).
    pub fn id(&self, id: &[u8]) -> MutexGuard<'_, ()> {
        lock(&self.ids[self.stripe(id)])
    }

    /// The stripes of several ids, in stripe order.
    pub fn ids<'i>(&self, ids: impl Iterator<Item = &'i [u8]>) -> Vec<MutexGuard<'_, ()>> {
        let stripes: std::collections::BTreeSet<usize> = ids.map(|id| self.stripe(id)).collect();
        stripes.into_iter().map(|s| lock(&self.ids[s])).collect()
    }

    fn stripe(&self, id: &[u8]) -> usize {
        let hash = id.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ *byte as u64).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % self.ids.len() as u64) as usize
    }

    /// The partitions in `partitions` (sorted, without repeats).
    pub fn partitions(&self, partitions: &[u8]) -> Vec<MutexGuard<'_, ()>> {
        partitions
            .iter()
            .map(|p| lock(&self.partitions[*p as usize]))
            .collect()
    }

    /// One partition.
    pub fn partition(&self, partition: u8) -> MutexGuard<'_, ()> {
        lock(&self.partitions[partition as usize])
    }
}

/// Contacts, events and journey state in a sled database on disk.
pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) contacts: sled::Tree,
    pub(super) identities: sled::Tree,
    pub(super) events: sled::Tree,
    pub(super) plugin_kv: sled::Tree,
    pub(super) plugin_kv_usage: sled::Tree,
    pub(super) journeys: sled::Tree,
    pub(super) journey_versions: sled::Tree,
    pub(super) inbox: sled::Tree,
    pub(super) dead_letters: sled::Tree,
    pub(super) enroll_requests: sled::Tree,
    pub(super) timers: sled::Tree,
    pub(super) enrollments: sled::Tree,
    pub(super) outbox: sled::Tree,
    pub(super) counters: sled::Tree,
    pub(super) intents: sled::Tree,
    pub(super) audit: sled::Tree,
    pub(super) meta: sled::Tree,
    pub(super) aliases: sled::Tree,
    pub(super) channels: sled::Tree,
    pub(super) templates: sled::Tree,
    pub(super) message_ids: sled::Tree,
    pub(super) deliveries: sled::Tree,
    pub(super) suppressions: sled::Tree,
    pub(super) send_windows: sled::Tree,
    pub(super) tokens: sled::Tree,
    pub(super) plugins: sled::Tree,
    pub(super) plugin_binaries: sled::Tree,
    pub(super) settings: sled::Tree,
    pub(super) contact_events: sled::Tree,
    pub(super) erased: sled::Tree,
    pub(super) scoring_models: sled::Tree,
    pub(super) score_history: sled::Tree,
    pub(super) audiences: sled::Tree,
    pub(super) segment_members: sled::Tree,
    pub(super) sweeps: sled::Tree,
    /// Whether a lifecycle stage rule reads what a contact update changes: then each update
    /// queues a look at the contact (see `sled_access`).
    pub(super) stages_read_contacts: std::sync::atomic::AtomicBool,
    /// What the `erased` tree's keys are made with (see `layout::trees::ERASURE_SALT`).
    pub(super) erasure_salt: [u8; 16],
    pub(super) locks: Locks,
    pub(super) unsettled: Unsettled,
    /// Set when a write of several keys failed part-way (see [`SledStore::check_writable`]).
    pub(super) broken: std::sync::atomic::AtomicBool,
    /// What opening the store repaired.
    pub(super) recovery: Recovery,
    group_commit: GroupCommit,
    /// Every write passes here (read side); a running backup's tap is in it (`backup`).
    pub(super) tap: std::sync::RwLock<Option<std::sync::Arc<super::backup::Tap>>>,
    /// The directory the store lives in, where a backup keeps its log of writes (none for a
    /// temporary store).
    pub(super) dir: Option<std::path::PathBuf>,
}

pub(super) fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// The record at `key`, decoded.
pub(super) fn read<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: impl AsRef<[u8]>,
) -> Result<Option<T>, StoreError> {
    tree.get(key)
        .map_err(backend)?
        .map(|bytes| decode(&bytes))
        .transpose()
}

/// The normalised email and phone a set of attributes carries; a malformed one is an error.
pub(super) fn identities_in(
    attributes: &crate::model::Attributes,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let read =
        |name: &str, normalize: fn(&str) -> Option<String>| -> Result<Option<String>, StoreError> {
            match attributes.get(name) {
                None => Ok(None),
                Some(Value::Text(text)) => normalize(text).map(Some).ok_or_else(|| {
                    StoreError::Invalid(format!("`{name}` is not a valid {name}: `{text}`"))
                }),
                Some(_) => Err(StoreError::Invalid(format!("`{name}` must be text"))),
            }
        };
    Ok((
        read("email", normalize_email)?,
        read("phone", normalize_phone)?,
    ))
}

/// A new contact's id: one that sorts by creation (see [`crate::ids`]).
pub(super) fn new_contact_id() -> String {
    crate::ids::time_ordered("c_")
}

impl SledStore {
    /// Build the store over an open database (`open` decides which and repairs it).
    pub(super) fn over(db: sled::Db) -> Result<Self, StoreError> {
        use super::layout::trees;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        Ok(SledStore {
            contacts: tree(trees::CONTACTS)?,
            identities: tree(trees::IDENTITIES)?,
            events: tree(trees::EVENTS)?,
            plugin_kv: tree(trees::PLUGIN_KV)?,
            plugin_kv_usage: tree(trees::PLUGIN_KV_USAGE)?,
            journeys: tree(trees::JOURNEYS)?,
            journey_versions: tree(trees::JOURNEY_VERSIONS)?,
            inbox: tree(trees::INBOX)?,
            dead_letters: tree(trees::DEAD_LETTERS)?,
            enroll_requests: tree(trees::ENROLL_REQUESTS)?,
            timers: tree(trees::TIMERS)?,
            enrollments: tree(trees::ENROLLMENTS)?,
            outbox: tree(trees::OUTBOX)?,
            counters: tree(trees::COUNTERS)?,
            intents: tree(trees::INTENTS)?,
            audit: tree(trees::AUDIT)?,
            meta: tree(trees::META)?,
            aliases: tree(trees::ALIASES)?,
            channels: tree(trees::CHANNELS)?,
            templates: tree(trees::TEMPLATES)?,
            message_ids: tree(trees::MESSAGE_IDS)?,
            deliveries: tree(trees::DELIVERIES)?,
            suppressions: tree(trees::SUPPRESSIONS)?,
            send_windows: tree(trees::SEND_WINDOWS)?,
            tokens: tree(trees::TOKENS)?,
            plugins: tree(trees::PLUGINS)?,
            plugin_binaries: tree(trees::PLUGIN_BINARIES)?,
            settings: tree(trees::SETTINGS)?,
            contact_events: tree(trees::CONTACT_EVENTS)?,
            erased: tree(trees::ERASED)?,
            scoring_models: tree(trees::SCORING_MODELS)?,
            score_history: tree(trees::SCORE_HISTORY)?,
            audiences: tree(trees::AUDIENCES)?,
            segment_members: tree(trees::SEGMENT_MEMBERS)?,
            sweeps: tree(trees::SWEEPS)?,
            stages_read_contacts: super::sled_access::stages_read_contacts(&tree(
                trees::SETTINGS,
            )?)?
            .into(),
            erasure_salt: erasure_salt(&tree(trees::META)?)?,
            locks: Locks::default(),
            unsettled: Unsettled::default(),
            broken: Default::default(),
            recovery: Recovery::default(),
            group_commit: GroupCommit::default(),
            tap: Default::default(),
            dir: None,
            db,
        })
    }

    /// A write that failed part-way has left keys half written until the store is reopened
    /// and finishes it from its intent; until then nothing more is written, so no step builds
    /// on that state.
    pub(super) fn check_writable(&self) -> Result<(), StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Backend(
                "an earlier write failed part-way; restart the server to finish it".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn break_writes(&self, error: &StoreError) {
        self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::error!(%error, "a write failed part-way; the store takes no more writes until it is reopened");
    }

    pub(super) fn tree(&self, id: TreeId) -> &sled::Tree {
        match id {
            TreeId::Contacts => &self.contacts,
            TreeId::Identities => &self.identities,
            TreeId::Events => &self.events,
            TreeId::PluginKv => &self.plugin_kv,
            TreeId::PluginKvUsage => &self.plugin_kv_usage,
            TreeId::Journeys => &self.journeys,
            TreeId::JourneyVersions => &self.journey_versions,
            TreeId::Inbox => &self.inbox,
            TreeId::DeadLetters => &self.dead_letters,
            TreeId::EnrollRequests => &self.enroll_requests,
            TreeId::Timers => &self.timers,
            TreeId::Enrollments => &self.enrollments,
            TreeId::Outbox => &self.outbox,
            TreeId::Counters => &self.counters,
            TreeId::Audit => &self.audit,
            TreeId::Aliases => &self.aliases,
            TreeId::Channels => &self.channels,
            TreeId::Templates => &self.templates,
            TreeId::MessageIds => &self.message_ids,
            TreeId::Deliveries => &self.deliveries,
            TreeId::Suppressions => &self.suppressions,
            TreeId::SendWindows => &self.send_windows,
            TreeId::Tokens => &self.tokens,
            TreeId::Plugins => &self.plugins,
            TreeId::PluginBinaries => &self.plugin_binaries,
            TreeId::Settings => &self.settings,
            TreeId::ContactEvents => &self.contact_events,
            TreeId::Erased => &self.erased,
            TreeId::ScoringModels => &self.scoring_models,
            TreeId::ScoreHistory => &self.score_history,
            TreeId::Audiences => &self.audiences,
            TreeId::SegmentMembers => &self.segment_members,
            TreeId::Sweeps => &self.sweeps,
        }
    }
}

/// The store's erasure salt, made on first use.
fn erasure_salt(meta: &sled::Tree) -> Result<[u8; 16], StoreError> {
    use super::layout::trees::ERASURE_SALT;
    if let Some(salt) = meta.get(ERASURE_SALT).map_err(backend)?
        && let Ok(salt) = <[u8; 16]>::try_from(salt.as_ref())
    {
        return Ok(salt);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS provides randomness");
    meta.insert(ERASURE_SALT, &salt).map_err(backend)?;
    Ok(salt)
}

impl SledStore {
    /// The `erased` tree's key for a contact id.
    pub(super) fn erased_key(&self, contact_id: &str) -> Vec<u8> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(self.erasure_salt);
        hash.update(contact_id.as_bytes());
        hash.finalize().to_vec()
    }

    /// Whether a contact with this id was erased.
    pub(super) fn was_erased(&self, contact_id: &str) -> Result<bool, StoreError> {
        self.erased
            .contains_key(self.erased_key(contact_id))
            .map_err(backend)
    }
}

/// Refuse a record a caller may not store, naming what it is.
pub(super) fn check_record(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<(), StoreError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(StoreError::TooLarge {
            what: what(),
            size: bytes.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    Ok(())
}

impl Store for SledStore {
    fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        read(&self.contacts, id)
    }

    fn alias(&self, id: &str) -> Result<Option<String>, StoreError> {
        // A merged contact's id points to the one it went into, which may itself have been
        // merged since: follow a few steps.
        let mut found = None;
        let mut current = id.to_owned();
        for _ in 0..8 {
            match self.aliases.get(&current).map_err(backend)? {
                Some(into) => {
                    current = String::from_utf8_lossy(&into).into_owned();
                    found = Some(current.clone());
                }
                None => break,
            }
        }
        Ok(found)
    }

    fn contact_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.contacts.contains_key(id).map_err(backend)
    }

    fn upsert_contact(&self, upsert: ContactUpsert, now: Millis) -> Result<Upserted, StoreError> {
        self.upsert_many(vec![upsert], now)?
            .pop()
            .expect("one answer per upsert")
    }

    fn upsert_contacts(
        &self,
        upserts: Vec<ContactUpsert>,
        now: Millis,
    ) -> Result<Vec<Result<Upserted, StoreError>>, StoreError> {
        self.upsert_many(upserts, now)
    }

    fn record_events(&self, events: &[Event]) -> Result<Vec<Recorded>, StoreError> {
        if let Some(bad) = events.iter().find(|e| e.id.is_empty() || e.id.len() > 256) {
            return Err(StoreError::Invalid(format!(
                "an event `id` must be 1 to 256 characters (`{}`)",
                bad.id
            )));
        }
        let items: Vec<Vec<u8>> = events
            .iter()
            .map(|event| {
                let item = super::codec::encode(&WorkItem::Event {
                    contact_id: event.contact_id.clone(),
                    event_id: event.id.clone(),
                    event: Some(event.clone()),
                });
                check_record(|| format!("event `{}`", event.id), &item).map(|()| item)
            })
            .collect::<Result<_, _>>()?;
        // Each event is queued, then recorded if its id is new; a duplicate takes back the
        // item it queued. Workers leave the item alone until that is settled, so nothing they
        // do can be durable while the event is not. Should the process die in between, opening
        // the store records the event of an item queued but not recorded, and drops an item
        // whose event names another item's sequence (see `open`). Each write is one key, and
        // the id lock keeps the pair apart from every other writer of the id; a backup's tap
        // holds its log across the pair, as across a write set.
        self.check_writable()?;
        let mut recorded = Vec::with_capacity(events.len());
        for (event, item) in events.iter().zip(items) {
            let _id = self.locks.id(event.id.as_bytes());
            let key = self
                .unsettled
                .reserve(&self.db, partition_of(&event.contact_id))?;
            let sequence = super::layout::inbox_sequence(&key);
            let value = event_value(event, Some(sequence));
            let gate = self.write_gate();
            let mut log = gate.as_ref().map(|tap| tap.hold());
            let outcome = self.inbox.insert(&key[..], item.as_slice()).and_then(|_| {
                super::failpoint::reached("ingest.queued", &self.db);
                match self.events.compare_and_swap(
                    event.id.as_bytes(),
                    None::<&[u8]>,
                    Some(value.as_slice()),
                )? {
                    Ok(()) => Ok(Recorded::New),
                    Err(_taken) => self.inbox.remove(&key[..]).map(|_| Recorded::Duplicate),
                }
            });
            match (&outcome, log.as_mut()) {
                (Ok(Recorded::New), Some(log)) => {
                    log.note(TreeId::Inbox, &key, Some(&item));
                    log.note(TreeId::Events, event.id.as_bytes(), Some(&value));
                }
                // The copy may have read the item between its insert and its removal.
                (Ok(Recorded::Duplicate), Some(log)) => log.note(TreeId::Inbox, &key, None),
                _ => {}
            }
            drop(log);
            drop(gate);
            match outcome {
                Ok(outcome) => recorded.push(outcome),
                Err(error) => {
                    let error = backend(error);
                    self.break_writes(&error);
                    return Err(error);
                }
            }
            self.unsettled.release(&[key]);
        }
        Ok(recorded)
    }

    fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        read(&self.events, id)
    }

    fn contact_events(
        &self,
        contact_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<super::EventPage, StoreError> {
        self.events_of(contact_id, before, limit)
    }

    fn search_contacts(
        &self,
        query: &super::ContactQuery,
    ) -> Result<super::ContactPage, StoreError> {
        self.find_contacts(query)
    }

    fn trees_holding(&self, needle: &[u8]) -> Result<Vec<&'static str>, StoreError> {
        self.holding(needle)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.group_commit
            .sync(|| self.db.flush().map(drop).map_err(|e| e.to_string()))
            .map_err(StoreError::Backend)
    }

    fn backup(&self, out: &mut dyn std::io::Write) -> Result<super::BackupSummary, StoreError> {
        self.write_backup(out)
    }

    fn recovery(&self) -> Recovery {
        self.recovery
    }

    fn writable(&self) -> Result<(), StoreError> {
        self.check_writable()
    }

    fn plugin_kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .plugin_kv
            .get(kv_key(namespace, key))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn plugin_kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        quota: KvUsage,
    ) -> Result<bool, StoreError> {
        let _kv = lock(&self.locks.plugin_kv);
        let mut writes = WriteSet::new(self);
        let written = kv_write(&mut writes, namespace, key, Some(value), quota)?;
        writes.apply()?;
        Ok(written)
    }

    fn plugin_kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let _kv = lock(&self.locks.plugin_kv);
        let mut writes = WriteSet::new(self);
        kv_write(&mut writes, namespace, key, None, KvUsage::UNLIMITED)?;
        writes.apply()
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<super::DeadLetter>, StoreError> {
        super::aside::dead_letters(self, limit)
    }

    fn requeue_dead_letter(
        &self,
        id: &str,
        audit: super::AuditEntry,
    ) -> Result<super::DeadLetter, StoreError> {
        super::aside::requeue(self, id, audit)
    }

    fn delete_dead_letter(
        &self,
        id: &str,
        audit: super::AuditEntry,
    ) -> Result<super::DeadLetter, StoreError> {
        super::aside::delete(self, id, audit)
    }

    fn audit(&self, query: &super::AuditQuery) -> Result<super::AuditPage, StoreError> {
        super::aside::audit(self, query)
    }

    fn plugin_kv_usage(&self, namespace: &str) -> Result<KvUsage, StoreError> {
        let (keys, bytes) = kv_usage(
            self.plugin_kv_usage
                .get(namespace.as_bytes())
                .map_err(backend)?
                .as_deref(),
        );
        Ok(KvUsage { keys, bytes })
    }
}

/// Set (`Some`) or delete (`None`) a key in a plugin's space, keeping the space's usage;
/// `Ok(false)` when the write would take the space past `quota`. The caller holds the
/// `plugin_kv` lock.
pub(super) fn kv_write(
    writes: &mut WriteSet<'_>,
    namespace: &str,
    key: &str,
    value: Option<&[u8]>,
    quota: KvUsage,
) -> Result<bool, StoreError> {
    let full_key = kv_key(namespace, key);
    let (keys, bytes) = kv_usage(
        writes
            .get(TreeId::PluginKvUsage, namespace.as_bytes())?
            .as_deref(),
    );
    let old = writes
        .get(TreeId::PluginKv, &full_key)?
        .map(|old| (key.len() + old.len()) as u64);
    let new = value.map(|value| (key.len() + value.len()) as u64);
    let keys_after = keys + u64::from(new.is_some()) - u64::from(old.is_some());
    let bytes_after = (bytes + new.unwrap_or(0)).saturating_sub(old.unwrap_or(0));
    let grows = keys_after > keys || bytes_after > bytes;
    if grows && (keys_after > quota.keys || bytes_after > quota.bytes) {
        return Ok(false);
    }
    if old.is_none() && new.is_none() {
        return Ok(true);
    }
    match value {
        Some(value) => writes.put(TreeId::PluginKv, full_key, value.to_vec()),
        None => writes.remove(TreeId::PluginKv, full_key),
    }
    writes.put(
        TreeId::PluginKvUsage,
        namespace.as_bytes(),
        kv_usage_value(keys_after, bytes_after),
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConsentState;

    fn upsert(json: serde_json::Value) -> ContactUpsert {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn records_keep_every_kind_of_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let attributes = serde_json::json!({"vip": true, "employees": 600, "ltv": 12.5,
            "big": u64::MAX, "city": "Shenzhen", "registered_at": "2026-11-01T10:00:00Z",
            "interests": ["crm", "ai"]});
        let stored = store
            .upsert_contact(
                upsert(serde_json::json!({"id": "a", "attributes": attributes})),
                -1_000,
            )
            .unwrap()
            .contact;
        let read = store.contact("a").unwrap().unwrap();
        assert_eq!(read, stored);
        assert_eq!(read.created_at, -1_000);
        assert_eq!(
            read.attributes["registered_at"],
            Value::Timestamp(1_793_527_200_000)
        );
        assert_eq!(read.attributes["big"], Value::Number(u64::MAX as f64));
        assert_eq!(
            store.contacts.get("a").unwrap().unwrap()[0],
            super::super::codec::MESSAGEPACK,
            "the record says its format"
        );
    }

    #[test]
    fn a_contact_too_large_to_keep_is_refused_and_the_stored_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .upsert_contact(
                upsert(serde_json::json!({"id": "a", "attributes": {"plan": "pro"}})),
                1,
            )
            .unwrap();
        let huge: serde_json::Map<String, serde_json::Value> = (0..100)
            .map(|n| (format!("note_{n}"), "x".repeat(1_000).into()))
            .collect();
        let error = store
            .upsert_contact(
                upsert(serde_json::json!({"id": "a", "attributes": huge})),
                2,
            )
            .unwrap_err();
        assert_eq!(error.code(), "too_large");
        assert!(error.to_string().contains("contact `a`"), "{error}");
        let kept = store.contact("a").unwrap().unwrap();
        assert_eq!(kept.attributes.len(), 1);
        assert_eq!(kept.updated_at, 1);
    }

    #[test]
    fn contact_fields_that_no_contact_may_hold_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for (body, named) in [
            (
                serde_json::json!({"attributes": {"": "x"}}),
                "attribute name",
            ),
            (serde_json::json!({"tags": [""]}), "tag"),
            (
                serde_json::json!({"timezone": "Mars/Olympus"}),
                "Mars/Olympus",
            ),
            (serde_json::json!({"id": " "}), "`id`"),
            (
                serde_json::json!({"consents": {"": "granted"}}),
                "consent channel",
            ),
        ] {
            let error = store.upsert_contact(upsert(body.clone()), 1).unwrap_err();
            assert_eq!(error.code(), "invalid_contact", "{body}");
            assert!(error.to_string().contains(named), "{body}: {error}");
        }
        assert!(store.contacts.is_empty());
        store
            .upsert_contact(
                upsert(serde_json::json!({"id": "a", "timezone": "Asia/Shanghai"})),
                1,
            )
            .unwrap();
    }

    #[test]
    fn a_second_registration_with_the_same_email_updates_the_same_contact() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let first = store.upsert_contact(upsert(serde_json::json!({"attributes": {"email": "Li.Wei@Example.com", "source": "web-form"}})), 1_000).unwrap();
        assert!(first.created);
        let second = store
            .upsert_contact(upsert(serde_json::json!({"attributes": {"email": " li.wei@example.com", "company": "Example Tech"}, "tags": ["webinar"]})), 2_000)
            .unwrap();
        assert!(!second.created);
        assert_eq!(second.contact.id, first.contact.id);
        assert_eq!(
            second.contact.attributes["source"],
            Value::Text("web-form".into())
        );
        assert_eq!(
            second.contact.attributes["company"],
            Value::Text("Example Tech".into())
        );
        assert_eq!(second.contact.tags, ["webinar"]);
        assert_eq!(
            (second.contact.created_at, second.contact.updated_at),
            (1_000, 2_000)
        );
    }

    #[test]
    fn phone_numbers_match_whatever_their_formatting() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let crm = store.upsert_contact(upsert(serde_json::json!({"id": "crm-77", "attributes": {"phone": "+86 138-0013-8000"}})), 1).unwrap();
        let shop = store.upsert_contact(upsert(serde_json::json!({"attributes": {"phone": "+8613800138000"}, "consents": {"sms": "granted"}})), 2).unwrap();
        assert_eq!(shop.contact.id, "crm-77");
        assert_eq!(shop.contact.consents["sms"], ConsentState::Granted);
        assert!(crm.created && !shop.created);
    }

    #[test]
    fn an_email_owned_by_another_contact_is_a_conflict_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .upsert_contact(
                upsert(serde_json::json!({"id": "a", "attributes": {"email": "x@example.com"}})),
                1,
            )
            .unwrap();
        store
            .upsert_contact(
                upsert(serde_json::json!({"id": "b", "attributes": {"email": "y@example.com"}})),
                1,
            )
            .unwrap();
        let error = store.upsert_contact(upsert(serde_json::json!({"id": "b", "attributes": {"email": "x@example.com", "plan": "pro"}})), 2).unwrap_err();
        assert_eq!(error.code(), "contact_identity_conflict");
        assert!(error.to_string().contains("`a`"), "{error}");
        let b = store.contact("b").unwrap().unwrap();
        assert_eq!(b.attributes["email"], Value::Text("y@example.com".into()));
        assert!(!b.attributes.contains_key("plan"));
    }

    #[test]
    fn a_changed_email_releases_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .upsert_contact(
                upsert(serde_json::json!({"id": "a", "attributes": {"email": "old@example.com"}})),
                1,
            )
            .unwrap();
        store
            .upsert_contact(
                upsert(serde_json::json!({"id": "a", "attributes": {"email": "new@example.com"}})),
                2,
            )
            .unwrap();
        let someone_else = store
            .upsert_contact(
                upsert(serde_json::json!({"attributes": {"email": "old@example.com"}})),
                3,
            )
            .unwrap();
        assert!(someone_else.created);
        assert_ne!(someone_else.contact.id, "a");
    }

    #[test]
    fn malformed_identities_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let error = store
            .upsert_contact(
                upsert(serde_json::json!({"attributes": {"email": "nope"}})),
                1,
            )
            .unwrap_err();
        assert_eq!(error.code(), "invalid_contact");
    }

    #[test]
    fn plugin_spaces_are_separate_bounded_in_keys_and_bytes_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let two_keys = KvUsage {
            keys: 2,
            bytes: 1_000,
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert!(store.plugin_kv_set("scorer", "a", b"1", two_keys).unwrap());
            assert!(store.plugin_kv_set("scorer", "b", b"2", two_keys).unwrap());
            assert!(
                !store.plugin_kv_set("scorer", "c", b"3", two_keys).unwrap(),
                "a third key is refused"
            );
            assert!(
                store
                    .plugin_kv_set("scorer", "a", b"updated", two_keys)
                    .unwrap(),
                "an existing key can change"
            );
            assert!(
                !store
                    .plugin_kv_set("scorer", "a", &[0; 1_000], two_keys)
                    .unwrap(),
                "a value that takes the space past its bytes is refused"
            );
            assert_eq!(
                store.plugin_kv_get("other", "a").unwrap(),
                None,
                "another plugin sees nothing"
            );
            store.plugin_kv_delete("scorer", "b").unwrap();
            assert!(
                store.plugin_kv_set("scorer", "c", b"3", two_keys).unwrap(),
                "a delete frees a slot"
            );
            store.flush().unwrap();
        }
        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.plugin_kv_get("scorer", "a").unwrap().as_deref(),
            Some(&b"updated"[..])
        );
        assert_eq!(
            reopened.plugin_kv_usage("scorer").unwrap(),
            KvUsage {
                keys: 2,
                bytes: 1 + 7 + 1 + 1
            },
            "usage survives reopening"
        );
        assert!(
            !reopened
                .plugin_kv_set("scorer", "d", b"4", two_keys)
                .unwrap(),
            "the count survived reopening"
        );
    }

    #[test]
    fn events_are_recorded_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let event: Event = serde_json::from_value(serde_json::json!({"id": "evt-1", "contact_id": "a", "name": "registered", "timestamp": 5})).unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(
                store
                    .record_events(&[event.clone(), event.clone()])
                    .unwrap(),
                [Recorded::New, Recorded::Duplicate]
            );
            assert_eq!(store.inbox.len(), 1, "the duplicate is not queued");
            store
                .upsert_contact(upsert(serde_json::json!({"id": "a"})), 1)
                .unwrap();
            store.flush().unwrap();
        }
        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened
                .record_events(std::slice::from_ref(&event))
                .unwrap(),
            [Recorded::Duplicate]
        );
        assert_eq!(reopened.inbox.len(), 1);
        assert_eq!(reopened.event("evt-1").unwrap(), Some(event));
        assert!(reopened.contact("a").unwrap().is_some());
    }
}
