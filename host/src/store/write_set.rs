//! Writes of several keys that a crash leaves whole, without sled transactions.
//!
//! sled 0.34 makes a multi-key write atomic only inside a transaction or `apply_batch`, and the
//! first of those a process runs switches on a process-wide lock: from then on every read and
//! iterator step waits while any transaction runs. Under load that left a quarter of the machine
//! idle. So a write set is first stored as one *intent* record, then applied key by key, then
//! the intent is removed. sled recovers a prefix of its log, so an intent still present after a
//! crash may have been applied in part; opening the store applies it again and removes it. Every
//! write in a set is a put or a removal of a final value, so applying it twice is applying it
//! once; callers hold the store's locks so that nobody else writes the same keys before the
//! intent is gone, and a replay never puts back a value someone has since replaced.
//!
//! An inbox item that a write set (or ingest) puts is *unsettled* until the whole set is in
//! place: workers leave it alone until then, so nothing a worker makes durable can come before
//! the write that queued its item.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::StoreError;
use super::records::PARTITIONS;
use super::sled_store::{SledStore, backend};

/// The trees a write set may touch, by a code fixed on disk (intents store it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(super) enum TreeId {
    Contacts = 0,
    Identities = 1,
    Events = 2,
    PluginKv = 3,
    PluginKvCounts = 4,
    Journeys = 5,
    JourneyVersions = 6,
    Inbox = 7,
    DeadLetters = 8,
    EnrollRequests = 9,
    Timers = 10,
    Enrollments = 11,
    /// Written by earlier versions only; kept so their interrupted writes replay.
    ContactJourneys = 12,
    Outbox = 13,
    Counters = 14,
}

impl TreeId {
    const ALL: [TreeId; 15] = [
        TreeId::Contacts,
        TreeId::Identities,
        TreeId::Events,
        TreeId::PluginKv,
        TreeId::PluginKvCounts,
        TreeId::Journeys,
        TreeId::JourneyVersions,
        TreeId::Inbox,
        TreeId::DeadLetters,
        TreeId::EnrollRequests,
        TreeId::Timers,
        TreeId::Enrollments,
        TreeId::ContactJourneys,
        TreeId::Outbox,
        TreeId::Counters,
    ];

    fn from_code(code: u8) -> Option<TreeId> {
        TreeId::ALL.get(code as usize).copied()
    }

    /// Whether writers read keys of this tree back through a write set before applying it.
    /// The others (a contact, an enrollment, an inbox item) are written once per set, so their
    /// keys need not be remembered.
    fn read_back(self) -> bool {
        matches!(
            self,
            TreeId::Identities
                | TreeId::Events
                | TreeId::PluginKv
                | TreeId::PluginKvCounts
                | TreeId::Counters
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Op {
    tree: TreeId,
    key: Vec<u8>,
    /// `None` removes the key.
    value: Option<Vec<u8>>,
}

/// An intent is split into records of about this size: sled keeps a value much larger than a
/// quarter of a segment (128 KiB) in a file of its own.
const CHUNK: usize = 48 << 10;

/// Puts and removals to make together. Reads through it see its own writes first.
pub(super) struct WriteSet<'a> {
    store: &'a SledStore,
    ops: Vec<Op>,
    /// The last op on each key, for reads of keys this set has written.
    latest: HashMap<(TreeId, Vec<u8>), usize>,
}

impl<'a> WriteSet<'a> {
    pub(super) fn new(store: &'a SledStore) -> Self {
        WriteSet {
            store,
            ops: Vec::new(),
            latest: HashMap::new(),
        }
    }

    /// The value at `key` once this set is applied.
    pub(super) fn get(&self, tree: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        debug_assert!(tree.read_back(), "{tree:?} keys are not remembered");
        if let Some(&index) = self.latest.get(&(tree, key.to_vec())) {
            return Ok(self.ops[index].value.as_deref().map(sled::IVec::from));
        }
        self.store.tree(tree).get(key).map_err(backend)
    }

    pub(super) fn put(&mut self, tree: TreeId, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.push(tree, key.into(), Some(value));
    }

    pub(super) fn remove(&mut self, tree: TreeId, key: impl Into<Vec<u8>>) {
        self.push(tree, key.into(), None);
    }

    fn push(&mut self, tree: TreeId, key: Vec<u8>, value: Option<Vec<u8>>) {
        if tree.read_back() {
            self.latest.insert((tree, key.clone()), self.ops.len());
        }
        self.ops.push(Op { tree, key, value });
    }

    /// Make every write. A single one needs no intent; several are recorded first.
    pub(super) fn apply(self) -> Result<(), StoreError> {
        let store = self.store;
        store.check_writable()?;
        match self.ops.as_slice() {
            [] => Ok(()),
            [op] => store.apply_op(op),
            ops => {
                let queued: Vec<[u8; 9]> = ops
                    .iter()
                    .filter(|op| op.tree == TreeId::Inbox && op.value.is_some())
                    .filter_map(|op| op.key.as_slice().try_into().ok())
                    .collect();
                store.unsettled.hold(&queued);
                let id = store.db.generate_id().map_err(backend)?;
                let chunks = encode_chunks(ops);
                let count = chunks.len() as u32;
                for (index, chunk) in chunks.iter().enumerate() {
                    store
                        .intents
                        .insert(intent_key(id, index as u32, count), chunk.as_slice())
                        .map_err(backend)?;
                }
                let finished = ops
                    .iter()
                    .try_for_each(|op| store.apply_op(op))
                    .and_then(|()| {
                        (0..count).try_for_each(|index| {
                            store
                                .intents
                                .remove(intent_key(id, index, count))
                                .map(drop)
                                .map_err(backend)
                        })
                    });
                if let Err(error) = finished {
                    // Half done: only a replay can finish it, and a replay later than other
                    // writes could undo them. The queued items stay unsettled, and the store
                    // takes no more writes until it is reopened.
                    store.break_writes(&error);
                    return Err(error);
                }
                store.unsettled.release(&queued);
                Ok(())
            }
        }
    }
}

impl SledStore {
    fn apply_op(&self, op: &Op) -> Result<(), StoreError> {
        let tree = self.tree(op.tree);
        match &op.value {
            Some(value) => tree.insert(op.key.as_slice(), value.as_slice()),
            None => tree.remove(op.key.as_slice()),
        }
        .map(drop)
        .map_err(backend)
    }

    /// Finish what a crash interrupted: apply every intent whose records are all present
    /// (its writes may have been made in part) and drop the rest (recording them had not
    /// finished, so none of their writes had begun). Returns how many were applied.
    pub(super) fn replay_intents(&self) -> Result<usize, StoreError> {
        /// An intent's id, how many records it has, and those found.
        type Found = (u64, u32, Vec<(Vec<u8>, sled::IVec)>);
        let mut intents: Vec<Found> = Vec::new();
        for entry in self.intents.iter() {
            let (key, value) = entry.map_err(backend)?;
            let Some((id, _, count)) = parse_intent_key(&key) else {
                self.intents.remove(&key).map_err(backend)?;
                continue;
            };
            match intents.last_mut() {
                Some((last, _, chunks)) if *last == id => chunks.push((key.to_vec(), value)),
                _ => intents.push((id, count, vec![(key.to_vec(), value)])),
            }
        }
        let mut applied = 0;
        for (id, count, chunks) in intents {
            let ops = (chunks.len() == count as usize)
                .then(|| {
                    chunks
                        .iter()
                        .map(|(_, bytes)| decode_ops(bytes))
                        .collect::<Option<Vec<_>>>()
                })
                .flatten();
            match ops {
                Some(ops) => {
                    for op in ops.iter().flatten() {
                        self.apply_op(op)?;
                    }
                    applied += 1;
                }
                None => tracing::warn!(id, "dropping an intent that was not recorded whole"),
            }
            for (key, _) in chunks {
                self.intents.remove(key).map_err(backend)?;
            }
        }
        Ok(applied)
    }
}

/// Inbox items whose write is not complete yet, by partition.
pub(super) struct Unsettled {
    held: AtomicUsize,
    partitions: Vec<Mutex<HashSet<[u8; 9]>>>,
}

impl Default for Unsettled {
    fn default() -> Self {
        Unsettled {
            held: AtomicUsize::new(0),
            partitions: (0..PARTITIONS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Unsettled {
    pub(super) fn hold(&self, keys: &[[u8; 9]]) {
        for key in keys {
            self.partition(key).insert(*key);
        }
        self.held.fetch_add(keys.len(), Ordering::SeqCst);
    }

    pub(super) fn release(&self, keys: &[[u8; 9]]) {
        for key in keys {
            self.partition(key).remove(key);
        }
        self.held.fetch_sub(keys.len(), Ordering::SeqCst);
    }

    /// Whether a worker must leave this item for now.
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        if self.held.load(Ordering::SeqCst) == 0 {
            return false;
        }
        match <[u8; 9]>::try_from(key) {
            Ok(key) => self.partition(&key).contains(&key),
            Err(_) => false,
        }
    }

    fn partition(&self, key: &[u8; 9]) -> std::sync::MutexGuard<'_, HashSet<[u8; 9]>> {
        self.partitions[key[0] as usize % self.partitions.len()]
            .lock()
            .expect("unsettled lock")
    }
}

fn intent_key(id: u64, index: u32, count: u32) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..12].copy_from_slice(&index.to_be_bytes());
    key[12..].copy_from_slice(&count.to_be_bytes());
    key
}

fn parse_intent_key(key: &[u8]) -> Option<(u64, u32, u32)> {
    let key: &[u8; 16] = key.try_into().ok()?;
    Some((
        u64::from_be_bytes(key[..8].try_into().ok()?),
        u32::from_be_bytes(key[8..12].try_into().ok()?),
        u32::from_be_bytes(key[12..].try_into().ok()?),
    ))
}

/// Each op: tree code (u8), key length (u32 LE), key, value length (u32 LE, `u32::MAX` for a
/// removal), value.
fn encode_chunks(ops: &[Op]) -> Vec<Vec<u8>> {
    let mut chunks = vec![Vec::new()];
    for op in ops {
        let chunk = chunks.last_mut().expect("one chunk at least");
        let size = 9 + op.key.len() + op.value.as_ref().map_or(0, Vec::len);
        if !chunk.is_empty() && chunk.len() + size > CHUNK {
            chunks.push(Vec::with_capacity(size.min(CHUNK)));
        }
        let chunk = chunks.last_mut().expect("one chunk at least");
        chunk.push(op.tree as u8);
        chunk.extend_from_slice(&(op.key.len() as u32).to_le_bytes());
        chunk.extend_from_slice(&op.key);
        match &op.value {
            Some(value) => {
                chunk.extend_from_slice(&(value.len() as u32).to_le_bytes());
                chunk.extend_from_slice(value);
            }
            None => chunk.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
    chunks
}

fn decode_ops(mut bytes: &[u8]) -> Option<Vec<Op>> {
    fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    fn length(bytes: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?))
    }
    let mut ops = Vec::new();
    while !bytes.is_empty() {
        let tree = TreeId::from_code(take(&mut bytes, 1)?[0])?;
        let key_len = length(&mut bytes)? as usize;
        let key = take(&mut bytes, key_len)?.to_vec();
        let value = match length(&mut bytes)? {
            u32::MAX => None,
            n => Some(take(&mut bytes, n as usize)?.to_vec()),
        };
        ops.push(Op { tree, key, value });
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JourneyStore, Store};

    fn op(tree: TreeId, key: &str, value: Option<&str>) -> Op {
        Op {
            tree,
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    /// Leave an intent as a crash would: recorded (in full or in part), its writes made up to
    /// `applied`.
    fn crash_during(store: &SledStore, ops: &[Op], records: usize, applied: usize) {
        let chunks: Vec<Vec<u8>> = ops
            .iter()
            .map(|op| encode_chunks(std::slice::from_ref(op)).remove(0))
            .collect();
        for (index, chunk) in chunks.iter().enumerate().take(records) {
            let key = intent_key(77, index as u32, chunks.len() as u32);
            store.intents.insert(key, chunk.as_slice()).unwrap();
        }
        for op in &ops[..applied] {
            store.apply_op(op).unwrap();
        }
        store.flush().unwrap();
    }

    #[test]
    fn a_write_set_interrupted_after_it_was_recorded_is_finished_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let ops = [
            op(TreeId::Journeys, "j", Some("new record")),
            op(TreeId::JourneyVersions, "j-v1", Some("version")),
            op(TreeId::Timers, "t", None),
        ];
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.timers.insert("t", "old").unwrap();
            crash_during(&store, &ops, 3, 1);
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.journeys.get("j").unwrap().unwrap(), b"new record");
        assert_eq!(
            store.journey_versions.get("j-v1").unwrap().unwrap(),
            b"version"
        );
        assert_eq!(store.timers.get("t").unwrap(), None);
        assert!(store.intents.is_empty());
    }

    #[test]
    fn a_write_set_not_recorded_whole_is_dropped_and_nothing_of_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let ops = [
            op(TreeId::Journeys, "j", Some("new record")),
            op(TreeId::JourneyVersions, "j-v1", Some("version")),
        ];
        {
            let store = SledStore::open(dir.path()).unwrap();
            crash_during(&store, &ops, 1, 0);
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.journeys.get("j").unwrap(), None);
        assert!(store.intents.is_empty());
    }

    #[test]
    fn an_event_queued_but_not_recorded_before_a_crash_is_recorded_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let event: crate::model::Event = serde_json::from_value(serde_json::json!({"id": "evt-1", "contact_id": "a", "name": "registered", "timestamp": 5})).unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            // Ingest queues an event, then records it; the crash came between the two.
            store
                .enqueue(&crate::store::WorkItem::Event {
                    contact_id: "a".into(),
                    event_id: "evt-1".into(),
                    event: Some(event.clone()),
                })
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.event("evt-1").unwrap(), Some(event.clone()));
        assert_eq!(
            store.record_events(&[event]).unwrap(),
            [crate::store::Recorded::Duplicate],
            "the client's retry is not queued a second time"
        );
    }

    #[test]
    fn an_item_a_duplicate_queued_before_a_crash_is_dropped_and_the_original_stays() {
        let dir = tempfile::tempdir().unwrap();
        let event: crate::model::Event = serde_json::from_value(serde_json::json!({"id": "evt-1", "contact_id": "a", "name": "registered", "timestamp": 5})).unwrap();
        let item = crate::store::WorkItem::Event {
            contact_id: "a".into(),
            event_id: "evt-1".into(),
            event: Some(event.clone()),
        };
        let original;
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.record_events(std::slice::from_ref(&event)).unwrap();
            original = store.inbox.first().unwrap().unwrap().0;
            // A retry of the same event queued its item; the crash came before it found the
            // id taken and took the item back.
            store.enqueue(&item).unwrap();
            assert_eq!(store.inbox.len(), 2);
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let left: Vec<_> = store.inbox.iter().keys().map(Result::unwrap).collect();
        assert_eq!(left, [original], "the event runs once");
        assert_eq!(store.event("evt-1").unwrap(), Some(event));
    }

    #[test]
    fn after_a_write_failed_part_way_the_store_refuses_writes_instead_of_building_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.break_writes(&StoreError::Backend("disk full".into()));
        let upsert: crate::store::ContactUpsert = serde_json::from_value(
            serde_json::json!({"id": "a", "attributes": {"email": "a@example.com"}}),
        )
        .unwrap();
        let event: crate::model::Event = serde_json::from_value(serde_json::json!({"id": "evt-1", "contact_id": "a", "name": "registered", "timestamp": 5})).unwrap();
        let refused = store.upsert_contact(upsert, 1).unwrap_err();
        assert!(refused.to_string().contains("restart"), "{refused}");
        assert_eq!(refused.code(), "storage_error");
        assert!(store.record_events(&[event]).is_err());
        assert_eq!(store.contact("a").unwrap(), None);
        assert_eq!(store.event("evt-1").unwrap(), None);
        drop(store);
        let reopened = SledStore::open(dir.path()).unwrap();
        assert!(
            reopened.plugin_kv_set("p", "k", b"v", 10).unwrap(),
            "reopened, it writes again"
        );
    }

    #[test]
    fn workers_leave_an_inbox_item_alone_until_the_write_that_queued_it_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let item = crate::store::WorkItem::Wake {
            contact_id: "a".into(),
            enrollment_id: "e".into(),
            due_at: 1,
        };
        store.enqueue(&item).unwrap();
        let partition = crate::store::partition_of("a");
        let (key, _) = store.pending_work(partition, 10, 0).unwrap().remove(0);
        let key: [u8; 9] = key.0.as_slice().try_into().unwrap();
        store.unsettled.hold(&[key]);
        assert!(store.pending_work(partition, 10, 0).unwrap().is_empty());
        store.unsettled.release(&[key]);
        assert_eq!(store.pending_work(partition, 10, 0).unwrap().len(), 1);
    }

    #[test]
    fn ops_round_trip_through_chunks_that_stay_small() {
        let ops: Vec<Op> = (0..200)
            .map(|i| Op {
                tree: TreeId::ALL[i % TreeId::ALL.len()],
                key: format!("key-{i}").into_bytes(),
                value: (i % 3 != 0).then(|| vec![i as u8; 1_000]),
            })
            .collect();
        let chunks = encode_chunks(&ops);
        assert!(chunks.len() > 1 && chunks.iter().all(|c| c.len() <= CHUNK));
        let decoded: Vec<Op> = chunks.iter().flat_map(|c| decode_ops(c).unwrap()).collect();
        assert_eq!(decoded, ops);
        assert_eq!(decode_ops(&chunks[0][..chunks[0].len() - 1]), None);
    }
}
