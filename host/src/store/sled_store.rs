//! The embedded default: sled 0.34. A write of several keys goes through a [`WriteSet`]
//! (recorded, applied, replayed after a crash) rather than a sled transaction, and the store's
//! own locks keep two writers off the same keys; see `write_set` for why.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::durability::GroupCommit;
use super::identity::{normalize_email, normalize_phone};
use super::values::{
    contact_and_journeys, contact_value, event_sequence, event_value, merge_journeys,
};
use super::write_set::{TreeId, Unsettled, WriteSet};
use super::{
    ContactUpsert, PARTITIONS, Recorded, Store, StoreError, Upserted, WorkItem, partition_of,
};
use crate::model::{Contact, Event, Millis, Value};

/// Tree names, fixed on disk.
pub(super) mod trees {
    /// contact id → contact, then its records of the journeys it entered (see `values`).
    pub const CONTACTS: &str = "contacts";
    /// `email:<normalised>` or `phone:<normalised>` → contact id.
    pub const IDENTITIES: &str = "identities";
    /// event id → event, then the sequence of the inbox item that queued it (see `values`); an
    /// id present here has been recorded.
    pub const EVENTS: &str = "events";
    /// `<plugin name>\0<key>` → value: the plugins' private key-value spaces.
    pub const PLUGIN_KV: &str = "plugin_kv";
    /// plugin name → number of keys it holds (u64 big-endian), kept with every insert and removal.
    pub const PLUGIN_KV_COUNTS: &str = "plugin_kv_counts";
    /// journey id → journey record (MessagePack).
    pub const JOURNEYS: &str = "journeys";
    /// `<journey id>\0<version u32 BE>` → published version (MessagePack), never rewritten.
    pub const JOURNEY_VERSIONS: &str = "journey_versions";
    /// `<partition u8><sequence u64 BE>` → work item (MessagePack): the journeys' durable inbox.
    pub const INBOX: &str = "inbox";
    /// inbox key → an item that could not run, set aside with why (MessagePack).
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// `<journey id>\0<request id>` → contact id: API enrollments already queued.
    pub const ENROLL_REQUESTS: &str = "enroll_requests";
    /// `<due_at as ordered u64 BE><enrollment id>` → contact id, scanned in due order.
    pub const TIMERS: &str = "timers";
    /// enrollment id → enrollment (MessagePack).
    pub const ENROLLMENTS: &str = "enrollments";
    /// `<contact id>\0<journey id>` → that contact's record of that journey, as earlier
    /// versions kept them; opening the store moves them into the contacts' values.
    pub const CONTACT_JOURNEYS: &str = "contact_journeys";
    /// `<contact id>\0<sequence u64 BE>` → message waiting for its channel (MessagePack).
    pub const OUTBOX: &str = "outbox";
    /// `<journey id>\0<version u32 BE><node>\0<metric>\xff<shard u8>` → count (i64 BE): one
    /// count per shard, each written by one writer at a time; a key without the shard suffix
    /// was written by an earlier version.
    pub const COUNTERS: &str = "counters";
    /// `<id u64 BE><chunk u32 BE><chunks u32 BE>` → a write set being applied (see `write_set`).
    pub const INTENTS: &str = "intents";
}

/// Who may write what at once. Taken in this order, each at most once per writer: `identities`,
/// `plugin_kv`, then partitions in ascending order, then event ids.
pub(super) struct Locks {
    /// Email and phone ownership.
    pub identities: Mutex<()>,
    /// The plugins' key-value spaces and their key counts.
    pub plugin_kv: Mutex<()>,
    /// Publishing journey versions.
    pub publish: Mutex<()>,
    /// Everything of the contacts in a partition: the contact, its enrollments, timers and
    /// messages, and the counters' shard of that number.
    pub partitions: Vec<Mutex<()>>,
    /// Recording an event id (and an enrollment request id), striped by its hash.
    pub ids: Vec<Mutex<()>>,
}

impl Default for Locks {
    fn default() -> Self {
        Locks {
            identities: Mutex::default(),
            plugin_kv: Mutex::default(),
            publish: Mutex::default(),
            partitions: (0..PARTITIONS).map(|_| Mutex::default()).collect(),
            ids: (0..64).map(|_| Mutex::default()).collect(),
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
}

/// Contacts, events and journey state in a sled database on disk.
pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) contacts: sled::Tree,
    pub(super) identities: sled::Tree,
    pub(super) events: sled::Tree,
    pub(super) plugin_kv: sled::Tree,
    pub(super) plugin_kv_counts: sled::Tree,
    pub(super) journeys: sled::Tree,
    pub(super) journey_versions: sled::Tree,
    pub(super) inbox: sled::Tree,
    pub(super) dead_letters: sled::Tree,
    pub(super) enroll_requests: sled::Tree,
    pub(super) timers: sled::Tree,
    pub(super) enrollments: sled::Tree,
    pub(super) contact_journeys: sled::Tree,
    pub(super) outbox: sled::Tree,
    pub(super) counters: sled::Tree,
    pub(super) intents: sled::Tree,
    pub(super) locks: Locks,
    pub(super) unsettled: Unsettled,
    /// Set when a write of several keys failed part-way (see [`SledStore::check_writable`]).
    pub(super) broken: std::sync::atomic::AtomicBool,
    group_commit: GroupCommit,
}

pub(super) fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Records are MessagePack maps with named fields: self-describing like JSON (so fields can
/// be added with defaults), but smaller and cheaper to write and read, which is most of what a
/// journey step costs. A record that starts with `{` was written as JSON by an earlier version
/// and is read as such.
pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Backend(format!("corrupt record: {e}"));
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| corrupt(&e))
    } else {
        rmp_serde::from_slice(bytes).map_err(|e| corrupt(&e))
    }
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

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("model types serialize")
}

/// The sequence an inbox key carries after its partition.
pub(super) fn inbox_sequence(key: &[u8]) -> u64 {
    key.get(1..9)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// An inbox key: the partition first, so a worker scans only its own.
pub(super) fn inbox_key(partition: u8, sequence: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = partition;
    key[1..].copy_from_slice(&sequence.to_be_bytes());
    key
}

pub(super) fn identity_key(field: &str, value: &str) -> Vec<u8> {
    format!("{field}:{value}").into_bytes()
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

fn new_contact_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    format!("c_{}", hex::encode(bytes))
}

impl SledStore {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::with_config(sled::Config::new().path(dir))
    }

    /// A store that lives in memory and vanishes when dropped: journey simulations.
    pub fn temporary() -> Result<Self, StoreError> {
        Self::with_config(sled::Config::new().temporary(true))
    }

    fn with_config(config: sled::Config) -> Result<Self, StoreError> {
        // sled's page cache defaults to 1 GiB; the store should not be most of the process.
        let db = config.cache_capacity(256 << 20).open().map_err(backend)?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let store = SledStore {
            contacts: tree(trees::CONTACTS)?,
            identities: tree(trees::IDENTITIES)?,
            events: tree(trees::EVENTS)?,
            plugin_kv: tree(trees::PLUGIN_KV)?,
            plugin_kv_counts: tree(trees::PLUGIN_KV_COUNTS)?,
            journeys: tree(trees::JOURNEYS)?,
            journey_versions: tree(trees::JOURNEY_VERSIONS)?,
            inbox: tree(trees::INBOX)?,
            dead_letters: tree(trees::DEAD_LETTERS)?,
            enroll_requests: tree(trees::ENROLL_REQUESTS)?,
            timers: tree(trees::TIMERS)?,
            enrollments: tree(trees::ENROLLMENTS)?,
            contact_journeys: tree(trees::CONTACT_JOURNEYS)?,
            outbox: tree(trees::OUTBOX)?,
            counters: tree(trees::COUNTERS)?,
            intents: tree(trees::INTENTS)?,
            locks: Locks::default(),
            unsettled: Unsettled::default(),
            broken: Default::default(),
            group_commit: GroupCommit::default(),
            db,
        };
        store.recover()?;
        Ok(store)
    }

    /// Put the store back in order after a crash: finish interrupted write sets, move journey
    /// records an earlier version kept apart into their contacts, and settle inbox items whose
    /// ingest stopped half-way: record the event of one queued but not recorded, drop one a
    /// duplicate queued before finding its id taken.
    fn recover(&self) -> Result<(), StoreError> {
        let mut repaired = self.replay_intents()?;
        repaired += self.move_journey_records_into_contacts()?;
        for entry in self.inbox.iter() {
            let (key, value) = entry.map_err(backend)?;
            let Ok(WorkItem::Event {
                event: Some(event), ..
            }) = decode::<WorkItem>(&value)
            else {
                continue;
            };
            let sequence = inbox_sequence(&key);
            match self.events.get(&event.id).map_err(backend)? {
                None => {
                    self.events
                        .insert(event.id.as_bytes(), event_value(&event, sequence))
                        .map_err(backend)?;
                }
                Some(stored) if event_sequence(&stored)?.is_some_and(|s| s != sequence) => {
                    self.inbox.remove(key).map_err(backend)?;
                }
                Some(_) => continue,
            }
            repaired += 1;
        }
        if repaired > 0 {
            tracing::info!(repaired, "finished writes a crash interrupted");
            self.db.flush().map_err(backend)?;
        }
        Ok(())
    }

    /// Earlier versions kept each contact's record of a journey under its own key. Each is
    /// merged into its contact's value, then removed; run again after a crash, a merge writes
    /// the same value again. A record whose contact is gone goes with it.
    fn move_journey_records_into_contacts(&self) -> Result<usize, StoreError> {
        let mut moved = 0;
        for entry in self.contact_journeys.iter() {
            let (key, value) = entry.map_err(backend)?;
            let record: super::ContactJourney = decode(&value)?;
            if let Some(bytes) = self.contacts.get(&record.contact_id).map_err(backend)? {
                let (contact, mut journeys) = contact_and_journeys(&bytes)?;
                merge_journeys(&mut journeys, [&record]);
                self.contacts
                    .insert(
                        record.contact_id.as_bytes(),
                        contact_value(&contact, &journeys),
                    )
                    .map_err(backend)?;
            }
            self.contact_journeys.remove(key).map_err(backend)?;
            moved += 1;
        }
        Ok(moved)
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
            TreeId::PluginKvCounts => &self.plugin_kv_counts,
            TreeId::Journeys => &self.journeys,
            TreeId::JourneyVersions => &self.journey_versions,
            TreeId::Inbox => &self.inbox,
            TreeId::DeadLetters => &self.dead_letters,
            TreeId::EnrollRequests => &self.enroll_requests,
            TreeId::Timers => &self.timers,
            TreeId::Enrollments => &self.enrollments,
            TreeId::ContactJourneys => &self.contact_journeys,
            TreeId::Outbox => &self.outbox,
            TreeId::Counters => &self.counters,
        }
    }
}

impl Store for SledStore {
    fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        read(&self.contacts, id)
    }

    fn contact_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.contacts.contains_key(id).map_err(backend)
    }

    fn upsert_contact(&self, upsert: ContactUpsert, now: Millis) -> Result<Upserted, StoreError> {
        if upsert
            .id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty() || id.len() > 256)
        {
            return Err(StoreError::Invalid(
                "`id` must be 1 to 256 characters".into(),
            ));
        }
        let (email, phone) = identities_in(&upsert.attributes)?;
        let _identities =
            (email.is_some() || phone.is_some()).then(|| lock(&self.locks.identities));
        let owner = |field: &str, value: &Option<String>| -> Result<Option<String>, StoreError> {
            Ok(match value {
                Some(value) => self
                    .identities
                    .get(identity_key(field, value))
                    .map_err(backend)?
                    .map(|id| String::from_utf8_lossy(&id).into_owned()),
                None => None,
            })
        };
        let (email_owner, phone_owner) = (owner("email", &email)?, owner("phone", &phone)?);
        let id = match (&upsert.id, &email_owner, &phone_owner) {
            (Some(id), _, _) => id.clone(),
            (None, Some(by_email), Some(by_phone)) if by_email != by_phone => {
                return Err(StoreError::IdentityConflict {
                    field: "phone",
                    value: phone.clone().unwrap_or_default(),
                    owner: by_phone.clone(),
                });
            }
            (None, Some(found), _) | (None, None, Some(found)) => found.clone(),
            (None, None, None) => new_contact_id(),
        };
        for (field, value, found) in [
            ("email", &email, &email_owner),
            ("phone", &phone, &phone_owner),
        ] {
            if let (Some(value), Some(found)) = (value, found)
                && *found != id
            {
                return Err(StoreError::IdentityConflict {
                    field,
                    value: value.clone(),
                    owner: found.clone(),
                });
            }
        }
        let _contact = lock(&self.locks.partitions[partition_of(&id) as usize]);
        let existing = self.contacts.get(&id).map_err(backend)?;
        let created = existing.is_none();
        let (mut contact, journeys) = match existing {
            Some(bytes) => contact_and_journeys(&bytes)?,
            None => (Contact::new(id.clone(), now), Vec::new()),
        };
        let (old_email, old_phone) = identities_in(&contact.attributes).unwrap_or_default();
        upsert.apply(&mut contact, now);
        let mut writes = WriteSet::new(self);
        // Identity keys follow the contact: a changed email releases the old one.
        for (field, old, new) in [("email", &old_email, &email), ("phone", &old_phone, &phone)] {
            if let Some(old) = old
                && new.is_some()
                && Some(old) != new.as_ref()
            {
                writes.remove(TreeId::Identities, identity_key(field, old));
            }
            if let Some(new) = new {
                writes.put(
                    TreeId::Identities,
                    identity_key(field, new),
                    id.clone().into_bytes(),
                );
            }
        }
        writes.put(
            TreeId::Contacts,
            id.as_bytes(),
            contact_value(&contact, &journeys),
        );
        writes.apply()?;
        Ok(Upserted { contact, created })
    }

    fn record_events(&self, events: &[Event]) -> Result<Vec<Recorded>, StoreError> {
        if let Some(bad) = events.iter().find(|e| e.id.is_empty() || e.id.len() > 256) {
            return Err(StoreError::Invalid(format!(
                "an event `id` must be 1 to 256 characters (`{}`)",
                bad.id
            )));
        }
        // Each event is queued, then recorded if its id is new; a duplicate takes back the
        // item it queued. Workers leave the item alone until that is settled, so nothing they
        // do can be durable while the event is not. Should the process die in between, opening
        // the store records the event of an item queued but not recorded, and drops an item
        // whose event names another item's sequence (see `recover`).
        self.check_writable()?;
        let mut recorded = Vec::with_capacity(events.len());
        for event in events {
            let _id = self.locks.id(event.id.as_bytes());
            let sequence = self.db.generate_id().map_err(backend)?;
            let key = inbox_key(partition_of(&event.contact_id), sequence);
            let work = encode(&WorkItem::Event {
                contact_id: event.contact_id.clone(),
                event_id: event.id.clone(),
                event: Some(event.clone()),
            });
            self.unsettled.hold(&[key]);
            self.inbox.insert(&key[..], work).map_err(backend)?;
            let new = self.events.compare_and_swap(
                event.id.as_bytes(),
                None::<&[u8]>,
                Some(event_value(event, sequence)),
            );
            let outcome = match new {
                Ok(Ok(())) => Ok(Recorded::New),
                Ok(Err(_taken)) => self.inbox.remove(&key[..]).map(|_| Recorded::Duplicate),
                Err(error) => Err(error),
            };
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

    fn flush(&self) -> Result<(), StoreError> {
        self.group_commit
            .sync(|| self.db.flush().map(drop).map_err(|e| e.to_string()))
            .map_err(StoreError::Backend)
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
        max_keys: u64,
    ) -> Result<bool, StoreError> {
        let _kv = lock(&self.locks.plugin_kv);
        let mut writes = WriteSet::new(self);
        let written = kv_write(&mut writes, namespace, key, Some(value), max_keys)?;
        writes.apply()?;
        Ok(written)
    }

    fn plugin_kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let _kv = lock(&self.locks.plugin_kv);
        let mut writes = WriteSet::new(self);
        kv_write(&mut writes, namespace, key, None, u64::MAX)?;
        writes.apply()
    }
}

/// Set (`Some`) or delete (`None`) a key in a plugin's space, keeping the space's key count;
/// `Ok(false)` when a new key would exceed `max_keys`. The caller holds the `plugin_kv` lock.
pub(super) fn kv_write(
    writes: &mut WriteSet<'_>,
    namespace: &str,
    key: &str,
    value: Option<&[u8]>,
    max_keys: u64,
) -> Result<bool, StoreError> {
    let full_key = kv_key(namespace, key);
    let count = writes
        .get(TreeId::PluginKvCounts, namespace.as_bytes())?
        .map_or(0, |bytes| {
            u64::from_be_bytes(bytes.as_ref().try_into().unwrap_or_default())
        });
    let exists = writes.get(TreeId::PluginKv, &full_key)?.is_some();
    match value {
        Some(value) => {
            if !exists {
                if count >= max_keys {
                    return Ok(false);
                }
                writes.put(
                    TreeId::PluginKvCounts,
                    namespace.as_bytes(),
                    (count + 1).to_be_bytes().to_vec(),
                );
            }
            writes.put(TreeId::PluginKv, full_key, value.to_vec());
        }
        None => {
            if exists {
                writes.remove(TreeId::PluginKv, full_key);
                writes.put(
                    TreeId::PluginKvCounts,
                    namespace.as_bytes(),
                    count.saturating_sub(1).to_be_bytes().to_vec(),
                );
            }
        }
    }
    Ok(true)
}

/// Plugin names never contain NUL, so `name\0key` cannot collide across plugins.
fn kv_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut full = Vec::with_capacity(namespace.len() + 1 + key.len());
    full.extend_from_slice(namespace.as_bytes());
    full.push(0);
    full.extend_from_slice(key.as_bytes());
    full
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConsentState;

    fn upsert(json: serde_json::Value) -> ContactUpsert {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn records_keep_every_kind_of_value_and_those_written_as_json_are_still_read() {
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
        assert_ne!(store.contacts.get("a").unwrap().unwrap()[0], b'{');

        // An earlier version wrote JSON, with RFC 3339 times.
        let mut old = serde_json::to_value(&stored).unwrap();
        old["id"] = "b".into();
        store
            .contacts
            .insert("b", serde_json::to_vec(&old).unwrap())
            .unwrap();
        let read_old = store.contact("b").unwrap().unwrap();
        assert_eq!(
            (read_old.id.as_str(), &read_old.attributes),
            ("b", &stored.attributes)
        );
        assert_eq!(read_old.created_at, -1_000);
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
    fn plugin_spaces_are_separate_bounded_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert!(store.plugin_kv_set("scorer", "a", b"1", 2).unwrap());
            assert!(store.plugin_kv_set("scorer", "b", b"2", 2).unwrap());
            assert!(
                !store.plugin_kv_set("scorer", "c", b"3", 2).unwrap(),
                "a third key is refused"
            );
            assert!(
                store.plugin_kv_set("scorer", "a", b"updated", 2).unwrap(),
                "an existing key can change"
            );
            assert_eq!(
                store.plugin_kv_get("other", "a").unwrap(),
                None,
                "another plugin sees nothing"
            );
            store.plugin_kv_delete("scorer", "b").unwrap();
            assert!(
                store.plugin_kv_set("scorer", "c", b"3", 2).unwrap(),
                "a delete frees a slot"
            );
            store.flush().unwrap();
        }
        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.plugin_kv_get("scorer", "a").unwrap().as_deref(),
            Some(&b"updated"[..])
        );
        assert!(
            !reopened.plugin_kv_set("scorer", "d", b"4", 2).unwrap(),
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

    #[test]
    fn journey_records_an_earlier_version_kept_apart_move_into_their_contacts() {
        use crate::store::{ContactJourney, JourneyStore};
        let dir = tempfile::tempdir().unwrap();
        let record = |contact: &str, journey: &str| ContactJourney {
            contact_id: contact.into(),
            journey_id: journey.into(),
            active: vec![format!("en_{contact}_{journey}")],
            entries: 1,
            ..ContactJourney::default()
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            let contact = Contact::new("a".into(), 1);
            // As an earlier version wrote them: the contact alone, each journey record apart.
            store.contacts.insert("a", encode(&contact)).unwrap();
            for (contact, journey) in [("a", "welcome"), ("a", "winback"), ("gone", "welcome")] {
                let key = format!("{contact}\0{journey}");
                store
                    .contact_journeys
                    .insert(key.as_bytes(), encode(&record(contact, journey)))
                    .unwrap();
            }
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let (contact, journeys) = store.contact_with_journeys("a").unwrap().unwrap();
        assert_eq!(contact.id, "a");
        assert_eq!(journeys, [record("a", "welcome"), record("a", "winback")]);
        assert!(store.contact_journeys("gone").unwrap().is_empty());
        assert!(store.contact_journeys.is_empty(), "nothing is left apart");
        store
            .upsert_contact(upsert(serde_json::json!({"id": "a", "tags": ["vip"]})), 2)
            .unwrap();
        assert_eq!(
            store.contact_journeys("a").unwrap().len(),
            2,
            "an API update keeps the contact's journeys"
        );
    }
}
