//! Stores written by earlier versions (layout 1), and their conversion to the records of layout 2
//! (which layout 3 keeps).
//!
//! Layout 1 kept records without a format byte. Its first builds wrote JSON; later ones wrote
//! MessagePack maps, and a reader told them apart by the first byte, `{` meaning JSON. For a
//! whole layout-1 record that rule is exact (a MessagePack map never starts with `{`), but
//! layout 1 also put a second value after some records (a contact's journeys, an event's inbox
//! sequence), and applying the rule there read the sequence 123, which is the byte `{`, as
//! JSON: such a store could not be opened. Here the rule is applied once per record, to the
//! record alone, as it moves to layout 2; what follows a record is always MessagePack.
//!
//! Layout 1's first builds also kept each contact's record of a journey under its own key
//! (`contact_journeys`); those move into their contacts. Interrupted write sets are finished
//! first, as layout 1 did. A record that cannot be read is set aside in the new store as a
//! dead letter, and the conversion goes on.

use std::io::Cursor;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::StoreError;
use super::codec::{contact_value, encode, event_value, merge_journeys};
use super::layout::{TreeId, kv_usage_value};
use super::records::{
    ContactJourney, DeadLetter, Enrollment, JourneyRecord, JourneyVersion, OutboxMessage, WorkItem,
};
use super::sled_store::{SledStore, backend};
use super::write_set::{Intent, decode_op_list, intents_in};
use crate::clock::{Clock, SystemClock};
use crate::model::{Contact, Event};

/// What a conversion did.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Converted {
    pub records: usize,
    pub set_aside: usize,
}

/// Layout 1's trees by the codes its write sets used.
const TREES: [&str; 15] = [
    "contacts",
    "identities",
    "events",
    "plugin_kv",
    "plugin_kv_counts",
    "journeys",
    "journey_versions",
    "inbox",
    "dead_letters",
    "enroll_requests",
    "timers",
    "enrollments",
    "contact_journeys",
    "outbox",
    "counters",
];

/// A whole layout-1 record, and the bytes after it (a second value some records carry).
fn record<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), String> {
    if bytes.first() == Some(&b'{') {
        // JSON records carried nothing after them.
        return serde_json::from_slice(bytes)
            .map(|value| (value, &[][..]))
            .map_err(|e| e.to_string());
    }
    let mut reader = rmp_serde::Deserializer::new(Cursor::new(bytes));
    let value = T::deserialize(&mut reader).map_err(|e| e.to_string())?;
    let end = reader.position() as usize;
    Ok((value, &bytes[end..]))
}

/// The MessagePack value after a record, if there is one.
fn after<T: DeserializeOwned>(rest: &[u8]) -> Result<Option<T>, String> {
    if rest.is_empty() {
        return Ok(None);
    }
    rmp_serde::from_slice(rest)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Convert the layout-1 store in `dir` into `into`, a new, empty store of this layout that nobody
/// else uses yet (so it is written directly, not through write sets).
pub(super) fn convert(dir: &Path, into: &SledStore) -> Result<Converted, StoreError> {
    let db = super::open::open_db(&sled::Config::new().path(dir).cache_capacity(64 << 20))?;
    let tree = |name: &str| db.open_tree(name).map_err(backend);
    let mut conversion = Conversion {
        into,
        now: SystemClock.now(),
        done: Converted::default(),
    };
    conversion.replay_intents(&db)?;

    let journey_records = tree("contact_journeys")?;
    let mut apart: std::collections::BTreeMap<String, Vec<ContactJourney>> = Default::default();
    for entry in journey_records.iter() {
        let (key, value) = entry.map_err(backend)?;
        match record::<ContactJourney>(&value) {
            Ok((journey, _)) => apart
                .entry(journey.contact_id.clone())
                .or_default()
                .push(journey),
            Err(error) => conversion.set_aside("contact_journeys", &key, &value, &error)?,
        }
    }
    for entry in tree("contacts")?.iter() {
        let (key, value) = entry.map_err(backend)?;
        let converted = record::<Contact>(&value).and_then(|(contact, rest)| {
            let mut journeys: Vec<ContactJourney> = after(rest)?.unwrap_or_default();
            merge_journeys(&mut journeys, apart.get(&contact.id).into_iter().flatten());
            Ok(contact_value(&contact, &journeys))
        });
        conversion.put(TreeId::Contacts, "contacts", &key, &value, converted)?;
    }
    for entry in tree("events")?.iter() {
        let (key, value) = entry.map_err(backend)?;
        let converted = record::<Event>(&value)
            .and_then(|(event, rest)| Ok(event_value(&event, after::<u64>(rest)?)));
        conversion.put(TreeId::Events, "events", &key, &value, converted)?;
    }
    conversion.records::<JourneyRecord>(&tree("journeys")?, TreeId::Journeys)?;
    conversion.records::<JourneyVersion>(&tree("journey_versions")?, TreeId::JourneyVersions)?;
    conversion.records::<WorkItem>(&tree("inbox")?, TreeId::Inbox)?;
    conversion.records::<Enrollment>(&tree("enrollments")?, TreeId::Enrollments)?;
    conversion.records::<OutboxMessage>(&tree("outbox")?, TreeId::Outbox)?;
    for entry in tree("dead_letters")?.iter() {
        let (key, value) = entry.map_err(backend)?;
        // Layout 1 set aside inbox items only, keyed by where they sat.
        match record::<DeadLetter>(&value) {
            Ok((letter, _)) => {
                let bytes = match &letter.item {
                    Some(item) => encode(item),
                    None => letter.raw.clone().unwrap_or_default().into_bytes(),
                };
                into.keep_aside("inbox", &key, &bytes, &letter.error, letter.set_aside_at)?;
                conversion.done.records += 1;
            }
            Err(error) => conversion.set_aside("dead_letters", &key, &value, &error)?,
        }
    }
    for (name, id) in [
        ("identities", TreeId::Identities),
        ("plugin_kv", TreeId::PluginKv),
        ("enroll_requests", TreeId::EnrollRequests),
        ("timers", TreeId::Timers),
        ("counters", TreeId::Counters),
    ] {
        for entry in tree(name)?.iter() {
            let (key, value) = entry.map_err(backend)?;
            into.tree(id).insert(key, value).map_err(backend)?;
            conversion.done.records += 1;
        }
    }
    // Layout 1 counted a plugin's keys; layout 2 counts its bytes too.
    let mut usage: std::collections::BTreeMap<Vec<u8>, (u64, u64)> = Default::default();
    for entry in into.plugin_kv.iter() {
        let (key, value) = entry.map_err(backend)?;
        let split = key.iter().position(|b| *b == 0).unwrap_or(key.len());
        let (keys, bytes) = usage.entry(key[..split].to_vec()).or_default();
        *keys += 1;
        *bytes += (key.len().saturating_sub(split + 1) + value.len()) as u64;
    }
    for (namespace, (keys, bytes)) in usage {
        into.plugin_kv_usage
            .insert(namespace, kv_usage_value(keys, bytes))
            .map_err(backend)?;
    }
    tracing::info!(
        records = conversion.done.records,
        set_aside = conversion.done.set_aside,
        "converted the store to the new layout"
    );
    Ok(conversion.done)
}

struct Conversion<'a> {
    into: &'a SledStore,
    now: crate::model::Millis,
    done: Converted,
}

impl Conversion<'_> {
    /// Write a converted record, or set the original aside if it did not convert.
    fn put(
        &mut self,
        tree: TreeId,
        name: &str,
        key: &[u8],
        original: &[u8],
        converted: Result<Vec<u8>, String>,
    ) -> Result<(), StoreError> {
        match converted {
            Ok(bytes) => {
                self.into.tree(tree).insert(key, bytes).map_err(backend)?;
                self.done.records += 1;
                Ok(())
            }
            Err(error) => self.set_aside(name, key, original, &error),
        }
    }

    /// Every record of a tree that holds one kind of record and nothing after it.
    fn records<T: DeserializeOwned + serde::Serialize>(
        &mut self,
        source: &sled::Tree,
        tree: TreeId,
    ) -> Result<(), StoreError> {
        for entry in source.iter() {
            let (key, value) = entry.map_err(backend)?;
            let converted = record::<T>(&value).map(|(record, _)| encode(&record));
            self.put(tree, tree.name(), &key, &value, converted)?;
        }
        Ok(())
    }

    fn set_aside(
        &mut self,
        tree: &str,
        key: &[u8],
        bytes: &[u8],
        error: &str,
    ) -> Result<(), StoreError> {
        tracing::error!(tree, key = %hex::encode(key), error, "a record of the earlier layout cannot be read; set aside as a dead letter");
        self.into.keep_aside(
            tree,
            key,
            bytes,
            &format!("not converted from layout 1: {error}"),
            self.now,
        )?;
        self.done.set_aside += 1;
        Ok(())
    }

    /// Finish layout 1's interrupted write sets in the old database, as layout 1 would have.
    fn replay_intents(&mut self, db: &sled::Db) -> Result<(), StoreError> {
        let (intents, malformed) = intents_in(&db.open_tree("intents").map_err(backend)?)?;
        for (key, value) in malformed {
            self.set_aside("intents", &key, &value, "malformed intent key")?;
        }
        for Intent { id, count, chunks } in intents {
            if chunks.len() != count as usize {
                tracing::warn!(
                    intent = id,
                    "dropping a layout-1 write set that was not recorded whole"
                );
                continue;
            }
            let ops: Option<Vec<_>> = chunks
                .iter()
                .map(|(_, bytes)| decode_op_list(bytes, |code| TREES.get(code as usize).copied()))
                .collect();
            let Some(ops) = ops else {
                for (key, bytes) in &chunks {
                    self.set_aside(
                        "intents",
                        key,
                        bytes,
                        &format!("layout-1 write set {id} does not decode"),
                    )?;
                }
                continue;
            };
            for (name, key, value) in ops.into_iter().flatten() {
                let tree = db.open_tree(name).map_err(backend)?;
                match value {
                    Some(value) => tree.insert(key, value),
                    None => tree.remove(key),
                }
                .map_err(backend)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JourneyStore, Store};

    fn v1(value: &impl serde::Serialize) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    fn journey_record(contact: &str, journey: &str) -> ContactJourney {
        ContactJourney {
            contact_id: contact.into(),
            journey_id: journey.into(),
            active: vec![format!("en_{contact}_{journey}")],
            entries: 1,
            ..ContactJourney::default()
        }
    }

    fn event(n: u64) -> Event {
        serde_json::from_value(serde_json::json!({"id": format!("evt-{n}"),
            "contact_id": "a", "name": "registered", "timestamp": 5}))
        .unwrap()
    }

    /// A store as layout 1 left it: every kind of record, in every shape its builds wrote.
    fn layout_1_store(dir: &Path) {
        let db = sled::Config::new().path(dir).open().unwrap();
        let tree = |name: &str| db.open_tree(name).unwrap();
        let contacts = tree("contacts");
        // The first builds wrote JSON ...
        let mut json_contact = serde_json::to_value(Contact::new("json".into(), -1_000)).unwrap();
        json_contact["attributes"] = serde_json::json!({"city": "Shenzhen"});
        contacts
            .insert("json", serde_json::to_vec(&json_contact).unwrap())
            .unwrap();
        // ... then MessagePack, a contact alone (its journeys kept apart) ...
        contacts
            .insert("a", v1(&Contact::new("a".into(), 1)))
            .unwrap();
        for journey in ["welcome", "winback"] {
            tree("contact_journeys")
                .insert(format!("a\0{journey}"), v1(&journey_record("a", journey)))
                .unwrap();
        }
        // ... and a contact followed by its journeys.
        let mut with_journeys = v1(&Contact::new("b".into(), 2));
        with_journeys.extend(v1(&vec![journey_record("b", "welcome")]));
        contacts.insert("b", with_journeys).unwrap();
        // Events followed by their inbox sequence: 123 is the byte `{`, which layout 1 read
        // back as JSON and then refused to start.
        for n in 0..300u64 {
            let mut value = v1(&event(n));
            value.extend(v1(&n));
            tree("events").insert(format!("evt-{n}"), value).unwrap();
            let mut key = vec![crate::store::partition_of("a")];
            key.extend_from_slice(&n.to_be_bytes());
            let item = WorkItem::Event {
                contact_id: "a".into(),
                event_id: format!("evt-{n}"),
                event: Some(event(n)),
            };
            tree("inbox").insert(key, v1(&item)).unwrap();
        }
        tree("events").insert("evt-old", v1(&event(999))).unwrap();
        tree("journeys")
            .insert("broken", &b"\x93not a record"[..])
            .unwrap();
        tree("identities")
            .insert("email:a@example.com", "a")
            .unwrap();
        tree("counters")
            .insert("welcome\0x", &7i64.to_be_bytes()[..])
            .unwrap();
        tree("plugin_kv").insert("scorer\0seen", "yes").unwrap();
        tree("plugin_kv_counts")
            .insert("scorer", &1u64.to_be_bytes()[..])
            .unwrap();
        let letter = DeadLetter {
            id: String::new(),
            tree: String::new(),
            key: "00".into(),
            item: None,
            raw: Some("garbage".into()),
            size: 0,
            error: "did not decode".into(),
            set_aside_at: 3,
        };
        tree("dead_letters").insert([0u8; 9], v1(&letter)).unwrap();
        // An interrupted write set of layout 1 (no format byte): a timer it set.
        let timer = super::super::layout::timer_key(5_000, "en_1");
        let mut chunk = vec![10u8];
        chunk.extend_from_slice(&(timer.len() as u32).to_le_bytes());
        chunk.extend_from_slice(&timer);
        chunk.extend_from_slice(&1u32.to_le_bytes());
        chunk.extend_from_slice(b"a");
        let mut intent = 42u64.to_be_bytes().to_vec();
        intent.extend_from_slice(&0u32.to_be_bytes());
        intent.extend_from_slice(&1u32.to_be_bytes());
        tree("intents").insert(intent, chunk).unwrap();
        db.flush().unwrap();
    }

    #[test]
    fn a_store_an_earlier_version_wrote_is_converted_and_everything_in_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        layout_1_store(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        let recovery = store.recovery();
        assert_eq!(recovery.converted_from_layout, Some(1));
        assert_eq!(recovery.records_set_aside, 1, "{recovery:?}");

        let json = store.contact("json").unwrap().unwrap();
        assert_eq!((json.created_at, json.attributes.len()), (-1_000, 1));
        let journeys = |id: &str| -> Vec<String> {
            store
                .contact_journeys(id)
                .unwrap()
                .into_iter()
                .map(|j| j.journey_id)
                .collect()
        };
        assert_eq!(
            journeys("a"),
            ["welcome", "winback"],
            "records kept apart moved in"
        );
        assert_eq!(journeys("b"), ["welcome"]);
        for n in [0, 122, 123, 124, 299] {
            assert_eq!(store.event(&format!("evt-{n}")).unwrap(), Some(event(n)));
        }
        assert_eq!(store.event("evt-old").unwrap(), Some(event(999)));
        let partition = crate::store::partition_of("a");
        assert_eq!(store.pending_work(partition, 1_000, 0).unwrap().len(), 300);
        assert_eq!(
            store.plugin_kv_get("scorer", "seen").unwrap().as_deref(),
            Some(&b"yes"[..])
        );
        assert_eq!(
            store.plugin_kv_usage("scorer").unwrap(),
            crate::store::KvUsage { keys: 1, bytes: 7 }
        );
        assert_eq!(store.next_timer_due().unwrap(), Some(5_000));

        let letters = store.dead_letters(10).unwrap();
        let trees: Vec<&str> = letters.iter().map(|l| l.tree.as_str()).collect();
        assert_eq!(trees, ["journeys", "inbox"], "{letters:?}");
        assert!(letters[0].error.contains("not converted from layout 1"));
        assert!(store.journeys().unwrap().is_empty());
        drop(store);

        assert!(!dir.path().join("conf").exists(), "the old files are gone");
        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.recovery().converted_from_layout,
            None,
            "converted once"
        );
        assert!(reopened.contact("a").unwrap().is_some());
    }

    #[test]
    fn a_conversion_a_crash_interrupted_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        layout_1_store(dir.path());
        std::fs::create_dir_all(dir.path().join("v3.partial")).unwrap();
        std::fs::write(dir.path().join("v3.partial/conf"), "half written").unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery().converted_from_layout, Some(1));
        assert!(store.contact("b").unwrap().is_some());
    }
}
