//! The embedded default: sled 0.34, whose multi-tree transactions make each write atomic.

use std::path::Path;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::durability::GroupCommit;
use super::identity::{normalize_email, normalize_phone};
use super::{ContactUpsert, Recorded, Store, StoreError, Upserted, WorkItem, partition_of};
use crate::model::{Contact, Event, Millis, Value};

/// Tree names, fixed on disk.
pub(super) mod trees {
    /// contact id → contact (MessagePack).
    pub const CONTACTS: &str = "contacts";
    /// `email:<normalised>` or `phone:<normalised>` → contact id.
    pub const IDENTITIES: &str = "identities";
    /// event id → event (MessagePack); an id present here has been recorded.
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
    /// `<contact id>\0<journey id>` → that contact's record of that journey (MessagePack).
    pub const CONTACT_JOURNEYS: &str = "contact_journeys";
    /// `<contact id>\0<sequence u64 BE>` → message waiting for its channel (MessagePack).
    pub const OUTBOX: &str = "outbox";
    /// `<journey id>\0<version u32 BE><node>\0<metric>` → count (i64 BE).
    pub const COUNTERS: &str = "counters";
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
        Ok(SledStore {
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
            group_commit: GroupCommit::default(),
            db,
        })
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
        let result = (&self.contacts, &self.identities).transaction(|(contacts, identities)| {
            let abort = |error: StoreError| ConflictableTransactionError::Abort(error);
            let owner = |field: &str,
                             value: &Option<String>|
                 -> Result<
                    Option<String>,
                    ConflictableTransactionError<StoreError>,
                > {
                    Ok(match value {
                        Some(value) => identities
                            .get(identity_key(field, value))?
                            .map(|id| String::from_utf8_lossy(&id).into_owned()),
                        None => None,
                    })
                };
            let (email_owner, phone_owner) = (owner("email", &email)?, owner("phone", &phone)?);
            let id = match (&upsert.id, &email_owner, &phone_owner) {
                (Some(id), _, _) => id.clone(),
                (None, Some(by_email), Some(by_phone)) if by_email != by_phone => {
                    return Err(abort(StoreError::IdentityConflict {
                        field: "phone",
                        value: phone.clone().unwrap_or_default(),
                        owner: by_phone.clone(),
                    }));
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
                    return Err(abort(StoreError::IdentityConflict {
                        field,
                        value: value.clone(),
                        owner: found.clone(),
                    }));
                }
            }
            let existing: Option<Contact> = contacts
                .get(id.as_bytes())?
                .map(|bytes| decode(&bytes))
                .transpose()
                .map_err(abort)?;
            let created = existing.is_none();
            let mut contact = existing.unwrap_or_else(|| Contact::new(id.clone(), now));
            let (old_email, old_phone) = identities_in(&contact.attributes).unwrap_or_default();
            upsert.clone().apply(&mut contact, now);
            // Identity keys follow the contact: a changed email releases the old one.
            for (field, old, new) in [("email", &old_email, &email), ("phone", &old_phone, &phone)]
            {
                if let Some(old) = old
                    && new.is_some()
                    && Some(old) != new.as_ref()
                {
                    identities.remove(identity_key(field, old))?;
                }
                if let Some(new) = new {
                    identities.insert(identity_key(field, new), id.as_bytes())?;
                }
            }
            contacts.insert(id.as_bytes(), encode(&contact))?;
            Ok(Upserted { contact, created })
        });
        result.map_err(|error| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => backend(error),
        })
    }

    fn record_events(&self, events: &[Event]) -> Result<Vec<Recorded>, StoreError> {
        if let Some(bad) = events.iter().find(|e| e.id.is_empty() || e.id.len() > 256) {
            return Err(StoreError::Invalid(format!(
                "an event `id` must be 1 to 256 characters (`{}`)",
                bad.id
            )));
        }
        // Number and encode first: the transaction's closure may run more than once.
        let mut prepared = Vec::with_capacity(events.len());
        for event in events {
            let sequence = self.db.generate_id().map_err(backend)?;
            let work = encode(&WorkItem::Event {
                contact_id: event.contact_id.clone(),
                event_id: event.id.clone(),
                event: Some(event.clone()),
            });
            let key = inbox_key(partition_of(&event.contact_id), sequence);
            prepared.push((event.id.as_bytes(), encode(event), key, work));
        }
        // One transaction for the whole batch: each event with its inbox entry, or neither.
        let result = (&self.events, &self.inbox).transaction(|(events, inbox)| {
            let mut recorded = Vec::with_capacity(prepared.len());
            for (id, record, key, work) in &prepared {
                if events.get(*id)?.is_some() {
                    recorded.push(Recorded::Duplicate);
                    continue;
                }
                events.insert(*id, record.as_slice())?;
                inbox.insert(&key[..], work.as_slice())?;
                recorded.push(Recorded::New);
            }
            Ok(recorded)
        });
        result.map_err(|error: TransactionError<StoreError>| backend(error))
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
        let result = (&self.plugin_kv, &self.plugin_kv_counts).transaction(|(entries, counts)| {
            kv_write(entries, counts, namespace, key, Some(value), max_keys)
        });
        result.map_err(|error: TransactionError<StoreError>| backend(error))
    }

    fn plugin_kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let result = (&self.plugin_kv, &self.plugin_kv_counts).transaction(|(entries, counts)| {
            kv_write(entries, counts, namespace, key, None, u64::MAX)
        });
        result
            .map(drop)
            .map_err(|error: TransactionError<StoreError>| backend(error))
    }
}

/// Set (`Some`) or delete (`None`) a key in a plugin's space inside a transaction, keeping the
/// space's key count; `Ok(false)` when a new key would exceed `max_keys`.
pub(super) fn kv_write(
    entries: &sled::transaction::TransactionalTree,
    counts: &sled::transaction::TransactionalTree,
    namespace: &str,
    key: &str,
    value: Option<&[u8]>,
    max_keys: u64,
) -> sled::transaction::ConflictableTransactionResult<bool, StoreError> {
    let full_key = kv_key(namespace, key);
    let count = counts.get(namespace)?.map_or(0, |bytes| {
        u64::from_be_bytes(bytes.as_ref().try_into().unwrap_or_default())
    });
    let exists = entries.get(&full_key)?.is_some();
    match value {
        Some(value) => {
            if !exists {
                if count >= max_keys {
                    return Ok(false);
                }
                counts.insert(namespace, &(count + 1).to_be_bytes())?;
            }
            entries.insert(full_key.as_slice(), value)?;
        }
        None => {
            if exists {
                entries.remove(full_key.as_slice())?;
                counts.insert(namespace, &count.saturating_sub(1).to_be_bytes())?;
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
        assert_eq!(reopened.event("evt-1").unwrap(), Some(event));
        assert!(reopened.contact("a").unwrap().is_some());
    }
}
