//! Writes of several keys that a crash leaves whole, without sled transactions.
//!
//! sled 0.34 makes a multi-key write atomic only inside a transaction or `apply_batch`, and the
//! first of those a process runs switches on a process-wide lock: from then on every read and
//! iterator step waits while any transaction runs. Under load that left a quarter of the machine
//! idle. So a write set is first stored as one *intent* record, then applied key by key, then
//! the intent is removed. sled recovers a prefix of its log, so an intent still present after a
//! crash may have been applied in part; opening the store applies it again and removes it. Every
//! write in a set is a put or a removal of a final value, so applying it twice is applying it
//! once.
//!
//! A replay never puts back a value someone has since replaced, because nobody writes a key of
//! an unfinished set: every write in the store goes through a write set (or, for ingest, the
//! same locks), each writer holds the store's locks on what it writes (its contacts'
//! partitions, the identities, the event ids, publishing) until its intent is gone, and a set
//! that fails part-way stops all writes until the store is reopened and the set replayed.
//!
//! Inbox items are queued with [`WriteSet::queue`], which reserves the item's key in its
//! partition. A reserved key is *unsettled* until the whole set is in place, and workers take a
//! partition's items only up to its first unsettled key: nothing a worker makes durable can come
//! before the write that queued its item, and no item is taken before one queued ahead of it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::StoreError;
use super::layout::{TreeId, check_size, inbox_key};
use super::records::PARTITIONS;
use super::sled_store::{SledStore, backend};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Op {
    pub(super) tree: TreeId,
    pub(super) key: Vec<u8>,
    /// `None` removes the key.
    pub(super) value: Option<Vec<u8>>,
}

/// An intent is split into records of about this size, each well below the largest value a
/// tree may hold.
const CHUNK: usize = 48 << 10;

/// The format byte every intent record starts with: ops in the encoding of [`encode_chunks`].
const INTENT_FORMAT: u8 = 1;

/// Puts and removals to make together. Reads through it see its own writes first.
pub(super) struct WriteSet<'a> {
    store: &'a SledStore,
    ops: Vec<Op>,
    /// The last op on each key, for reads of keys this set has written.
    latest: HashMap<(TreeId, Vec<u8>), usize>,
    /// Inbox keys this set reserved, released once it is applied (or dropped unapplied).
    reserved: Vec<[u8; 9]>,
}

impl<'a> WriteSet<'a> {
    pub(super) fn new(store: &'a SledStore) -> Self {
        WriteSet {
            store,
            ops: Vec::new(),
            latest: HashMap::new(),
            reserved: Vec::new(),
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

    /// Queue an inbox item at the end of `partition`; the key it went to.
    pub(super) fn queue(&mut self, partition: u8, item: Vec<u8>) -> Result<[u8; 9], StoreError> {
        let key = self.store.unsettled.reserve(&self.store.db, partition)?;
        self.reserved.push(key);
        self.push(TreeId::Inbox, key.to_vec(), Some(item));
        Ok(key)
    }

    fn push(&mut self, tree: TreeId, key: Vec<u8>, value: Option<Vec<u8>>) {
        if tree.read_back() {
            self.latest.insert((tree, key.clone()), self.ops.len());
        }
        self.ops.push(Op { tree, key, value });
    }

    /// Make every write, or none when one is too large or the store takes no writes. A single
    /// write needs no intent; several are recorded first.
    pub(super) fn apply(mut self) -> Result<(), StoreError> {
        let store = self.store;
        store.check_writable()?;
        for op in &self.ops {
            check_size(op.tree, &op.key, op.value.as_deref().unwrap_or_default())?;
        }
        let reserved = std::mem::take(&mut self.reserved);
        // A backup's tap goes on and off only between whole sets, and holds its log across
        // this one while it is on.
        let gate = store.write_gate();
        let mut log = gate.as_ref().map(|tap| tap.hold());
        // From here a failure, or a panic, may leave the set half made: only a replay can
        // finish it, and a replay later than other writes could undo them. So the queued
        // items stay unsettled and the store takes no more writes until it is reopened.
        let part_way = PartWay(store);
        let result = match self.ops.as_slice() {
            [] => Ok(()),
            [op] => store.apply_op(op),
            ops => store.apply_recorded(ops),
        };
        std::mem::forget(part_way);
        if let (Ok(()), Some(log)) = (&result, log.as_mut()) {
            for op in &self.ops {
                log.note(op.tree, &op.key, op.value.as_deref());
            }
        }
        drop(log);
        drop(gate);
        match &result {
            Ok(()) => store.unsettled.release(&reserved),
            Err(error) => store.break_writes(error),
        }
        result
    }
}

/// Armed while a write set is being applied; dropped there only by a panic.
struct PartWay<'a>(&'a SledStore);

impl Drop for PartWay<'_> {
    fn drop(&mut self) {
        self.0.break_writes(&StoreError::Backend(
            "a write set panicked while it was being applied".into(),
        ));
    }
}

impl Drop for WriteSet<'_> {
    /// A set dropped without being applied wrote nothing: its reserved keys are free again.
    fn drop(&mut self) {
        if !self.reserved.is_empty() {
            self.store.unsettled.release(&self.reserved);
        }
    }
}

/// What opening the store found of the write sets a crash interrupted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    /// Recorded whole and applied again.
    pub intents_replayed: usize,
    /// Recorded only in part: none of their writes had begun, so they were dropped.
    pub intents_incomplete: usize,
    /// Recorded whole but unreadable: set aside as dead letters, with the log saying so.
    pub intents_set_aside: usize,
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

    /// Record `ops` as an intent, apply them, remove the intent.
    fn apply_recorded(&self, ops: &[Op]) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(backend)?;
        let chunks = encode_chunks(ops);
        let count = chunks.len() as u32;
        for (index, chunk) in chunks.iter().enumerate() {
            self.intents
                .insert(intent_key(id, index as u32, count), chunk.as_slice())
                .map_err(backend)?;
        }
        for (n, op) in ops.iter().enumerate() {
            self.apply_op(op)?;
            if n == 0 {
                super::failpoint::reached("write_set.part_way", &self.db);
            }
        }
        (0..count).try_for_each(|index| {
            self.intents
                .remove(intent_key(id, index, count))
                .map(drop)
                .map_err(backend)
        })
    }

    /// Finish what a crash interrupted: apply every intent whose records are all present
    /// (its writes may have been made in part), drop those recorded only in part (recording
    /// had not finished, so none of their writes had begun), and set aside any that is whole
    /// but does not decode, saying so: its writes may have been made in part, and nothing here
    /// can finish them.
    pub(super) fn replay_intents(&self, now: crate::model::Millis) -> Result<Replayed, StoreError> {
        let mut replayed = Replayed::default();
        let (intents, malformed) = intents_in(&self.intents)?;
        for (key, value) in malformed {
            tracing::error!(key = %hex::encode(&key), "an intent record has a malformed key; setting it aside");
            self.keep_aside("intents", &key, &value, "malformed intent key", now)?;
            self.intents.remove(&key).map_err(backend)?;
        }
        for Intent { id, count, chunks } in intents {
            let ops = (chunks.len() == count as usize).then(|| {
                chunks
                    .iter()
                    .map(|(_, bytes)| decode_ops(bytes))
                    .collect::<Result<Vec<_>, _>>()
            });
            match ops {
                Some(Ok(ops)) => {
                    for op in ops.iter().flatten() {
                        self.apply_op(op)?;
                    }
                    replayed.intents_replayed += 1;
                }
                None => {
                    tracing::warn!(
                        intent = id,
                        recorded = chunks.len(),
                        of = count,
                        "dropping a write set whose recording a crash interrupted; none of it had been written"
                    );
                    replayed.intents_incomplete += 1;
                }
                Some(Err(error)) => {
                    tracing::error!(intent = id, %error, "a write set a crash interrupted cannot be read; setting it aside, its writes may be half made");
                    for (key, bytes) in &chunks {
                        self.keep_aside(
                            "intents",
                            key,
                            bytes,
                            &format!("write set {id} does not decode: {error}"),
                            now,
                        )?;
                    }
                    replayed.intents_set_aside += 1;
                }
            }
            for (key, _) in chunks {
                self.intents.remove(key).map_err(backend)?;
            }
        }
        Ok(replayed)
    }
}

/// One intent's records as found on disk.
pub(super) struct Intent {
    pub(super) id: u64,
    /// How many records it was written as.
    pub(super) count: u32,
    /// The records found, by key.
    pub(super) chunks: Vec<Entry>,
}

/// A key and its value, as sled holds them.
pub(super) type Entry = (sled::IVec, sled::IVec);

/// The intents in `tree` (in either layout: the keys are the same), and any record whose key
/// is not an intent's.
pub(super) fn intents_in(tree: &sled::Tree) -> Result<(Vec<Intent>, Vec<Entry>), StoreError> {
    let (mut intents, mut malformed): (Vec<Intent>, Vec<_>) = (Vec::new(), Vec::new());
    for entry in tree.iter() {
        let (key, value) = entry.map_err(backend)?;
        let Some((id, _, count)) = parse_intent_key(&key) else {
            malformed.push((key, value));
            continue;
        };
        match intents.last_mut() {
            Some(last) if last.id == id => last.chunks.push((key, value)),
            _ => intents.push(Intent {
                id,
                count,
                chunks: vec![(key, value)],
            }),
        }
    }
    Ok((intents, malformed))
}

/// Inbox keys reserved by writes that are not complete yet, by partition.
pub(super) struct Unsettled {
    held: AtomicUsize,
    partitions: Vec<Mutex<BTreeSet<[u8; 9]>>>,
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
    /// A new key at the end of `partition`, held until released. The sequence is drawn while
    /// the partition's set is locked, so a later reservation always gets a later key.
    pub(super) fn reserve(&self, db: &sled::Db, partition: u8) -> Result<[u8; 9], StoreError> {
        let mut held = self.partition(partition);
        let key = inbox_key(partition, db.generate_id().map_err(backend)?);
        held.insert(key);
        self.held.fetch_add(1, Ordering::SeqCst);
        Ok(key)
    }

    pub(super) fn release(&self, keys: &[[u8; 9]]) {
        for key in keys {
            if self.partition(key[0]).remove(key) {
                self.held.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Whether a worker may take this item now: only while no key at or before it is held.
    pub(super) fn settled(&self, key: &[u8]) -> bool {
        if self.held.load(Ordering::SeqCst) == 0 {
            return true;
        }
        let Some(&partition) = key.first() else {
            return true;
        };
        self.partition(partition)
            .first()
            .is_none_or(|first| key < first.as_slice())
    }

    fn partition(&self, partition: u8) -> std::sync::MutexGuard<'_, BTreeSet<[u8; 9]>> {
        self.partitions[partition as usize % self.partitions.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(super) fn intent_key(id: u64, index: u32, count: u32) -> [u8; 16] {
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

/// [`INTENT_FORMAT`], then each op: tree code (u8), key length (u32 LE), key, value length
/// (u32 LE, `u32::MAX` for a removal), value.
pub(super) fn encode_chunks(ops: &[Op]) -> Vec<Vec<u8>> {
    let mut chunks = vec![vec![INTENT_FORMAT]];
    for op in ops {
        let chunk = chunks.last_mut().expect("one chunk at least");
        let size = 9 + op.key.len() + op.value.as_ref().map_or(0, Vec::len);
        if chunk.len() > 1 && chunk.len() + size > CHUNK {
            let mut next = Vec::with_capacity((size + 1).min(CHUNK));
            next.push(INTENT_FORMAT);
            chunks.push(next);
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

/// The ops of one intent record, or why it does not read.
pub(super) fn decode_ops(bytes: &[u8]) -> Result<Vec<Op>, String> {
    match bytes.split_first() {
        Some((&INTENT_FORMAT, ops)) => decode_op_list(ops, TreeId::from_code)
            .map(|ops| {
                ops.into_iter()
                    .map(|(tree, key, value)| Op { tree, key, value })
                    .collect()
            })
            .ok_or_else(|| "its ops are truncated or name an unknown tree".to_owned()),
        Some((other, _)) => Err(format!(
            "intent format {other} is not one this version reads"
        )),
        None => Err("an empty intent record".into()),
    }
}

/// A tree, a key, and the value to put there (`None`: remove the key).
pub(super) type RawOp<T> = (T, Vec<u8>, Option<Vec<u8>>);

/// Ops in the encoding of [`encode_chunks`] (without the format byte), with tree codes read by
/// `tree`; `None` if truncated or naming a tree `tree` does not know.
pub(super) fn decode_op_list<T>(
    mut bytes: &[u8],
    tree: impl Fn(u8) -> Option<T>,
) -> Option<Vec<RawOp<T>>> {
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
        let tree = tree(take(&mut bytes, 1)?[0])?;
        let key_len = length(&mut bytes)? as usize;
        let key = take(&mut bytes, key_len)?.to_vec();
        let value = match length(&mut bytes)? {
            u32::MAX => None,
            n => Some(take(&mut bytes, n as usize)?.to_vec()),
        };
        ops.push((tree, key, value));
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
        assert_eq!(
            store.recovery().replayed.intents_replayed,
            1,
            "the replay is counted"
        );
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
        assert_eq!(store.recovery().replayed.intents_incomplete, 1);
    }

    #[test]
    fn a_write_set_recorded_whole_that_does_not_decode_is_set_aside_and_reported_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ops = [
            op(TreeId::Journeys, "j", Some("new record")),
            op(TreeId::JourneyVersions, "j-v1", Some("version")),
        ];
        {
            let store = SledStore::open(dir.path()).unwrap();
            let mut chunks = encode_chunks(&ops);
            // Damaged: its last op names a tree that does not exist.
            let last = chunks[0].len() - ("version".len() + 4 + "j-v1".len() + 4 + 1);
            chunks[0][last] = 200;
            store
                .intents
                .insert(intent_key(9, 0, 1), chunks[0].as_slice())
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery().replayed.intents_set_aside, 1);
        assert!(store.intents.is_empty());
        let letters = store.dead_letters(10).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].tree, "intents");
        assert!(
            letters[0].error.contains("write set 9 does not decode"),
            "{letters:?}"
        );
        assert!(
            store.requeue_dead_letter(&letters[0].id, audit()).is_err(),
            "a write set is kept for inspection, not put back"
        );
        store.delete_dead_letter(&letters[0].id, audit()).unwrap();
        assert!(store.dead_letters(10).unwrap().is_empty());
        assert_eq!(
            store
                .audit(&super::super::AuditQuery {
                    limit: 10,
                    ..Default::default()
                })
                .unwrap()
                .audit[0]
                .action,
            "test.delete"
        );
    }

    fn audit() -> crate::store::AuditEntry {
        crate::store::AuditEntry::new(5, "test", "test.delete", "x", serde_json::Value::Null)
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
        assert_eq!(store.recovery().events_recorded, 1);
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
        assert_eq!(store.recovery().duplicates_dropped, 1);
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
            reopened
                .plugin_kv_set("p", "k", b"v", crate::store::KvUsage::UNLIMITED)
                .unwrap(),
            "reopened, it writes again"
        );
    }

    #[test]
    fn workers_take_a_partitions_items_in_order_and_never_past_one_whose_write_is_not_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let wake = |id: &str| crate::store::WorkItem::Wake {
            contact_id: "a".into(),
            enrollment_id: id.into(),
            due_at: 1,
        };
        let partition = crate::store::partition_of("a");
        store.enqueue(&wake("first")).unwrap();
        // A write reserved its place next, and has not written it yet ...
        let mut pending = WriteSet::new(&store);
        pending
            .queue(partition, crate::store::codec::encode(&wake("second")))
            .unwrap();
        // ... when a later one, for the same contact, is complete.
        store.enqueue(&wake("third")).unwrap();
        let ids = |items: Vec<(crate::store::WorkKey, crate::store::WorkItem)>| -> Vec<String> {
            items
                .into_iter()
                .map(|(_, item)| match item {
                    crate::store::WorkItem::Wake { enrollment_id, .. } => enrollment_id,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(
            ids(store.pending_work(partition, 10, 0).unwrap()),
            ["first"]
        );
        pending.apply().unwrap();
        assert_eq!(
            ids(store.pending_work(partition, 10, 0).unwrap()),
            ["first", "second", "third"]
        );
        // A set dropped without being applied gives its place up.
        let mut abandoned = WriteSet::new(&store);
        abandoned
            .queue(partition, crate::store::codec::encode(&wake("never")))
            .unwrap();
        drop(abandoned);
        store.enqueue(&wake("fourth")).unwrap();
        assert_eq!(store.pending_work(partition, 10, 0).unwrap().len(), 4);
    }

    #[test]
    fn a_value_too_large_for_any_tree_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut writes = WriteSet::new(&store);
        writes.put(TreeId::Journeys, "small", b"fits".to_vec());
        writes.put(
            TreeId::Journeys,
            "big",
            vec![0; super::super::layout::MAX_STORED_BYTES + 1],
        );
        let error = writes.apply().unwrap_err();
        assert_eq!(error.code(), "too_large");
        assert!(store.journeys.is_empty());
        assert!(
            store.check_writable().is_ok(),
            "a refused write breaks nothing"
        );
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
        assert!(chunks.iter().all(|c| c[0] == INTENT_FORMAT));
        let decoded: Vec<Op> = chunks.iter().flat_map(|c| decode_ops(c).unwrap()).collect();
        assert_eq!(decoded, ops);
        assert!(decode_ops(&chunks[0][..chunks[0].len() - 1]).is_err());
        let mut other_format = chunks[0].clone();
        other_format[0] = 7;
        assert!(
            decode_ops(&other_format)
                .unwrap_err()
                .contains("intent format 7")
        );
    }
}
