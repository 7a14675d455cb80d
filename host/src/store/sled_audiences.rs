//! [`AudienceStore`] for the sled store. A segment's members are kept under its generation
//! (`<segment>\0<generation u64 BE><contact id>`), so a member list left by a segment deleted
//! and made again under its name, or written by a batch that ran on the old definition, is
//! never read as the new one's; such leftovers are removed when the name is put or deleted.

use std::collections::BTreeMap;

use super::StoreError;
use super::audiences::{
    AudienceKind, AudienceRecord, AudienceStore, MemberPage, SweepRecord, SweepWork,
};
use super::codec::{decode, encode, work_value};
use super::layout::{TreeId, prefix};
use super::records::{AuditEntry, WorkItem, partition_of};
use super::sled_store::{SledStore, backend, lock};
use super::write_set::WriteSet;

/// Most keys one write set removes when a member list is cleared.
const CLEAR_CHUNK: usize = 2_000;
/// Most items a sweep puts in one inbox record: a worker takes a bundle whole, so this bounds
/// how far a batch can run past its size.
const MAX_BUNDLE: usize = 256;
/// Most bytes of ids a bundle holds (its items' contact, journey and request ids), well under
/// the largest value a tree takes and the part of a record a dead letter keeps, whatever the
/// ids' lengths (up to 256 bytes each).
const MAX_BUNDLE_IDS: usize = 24 << 10;

/// `items` cut into bundles of at most [`MAX_BUNDLE`] items and [`MAX_BUNDLE_IDS`] bytes of ids.
fn bundles(items: &[WorkItem]) -> Vec<&[WorkItem]> {
    let ids = |item: &WorkItem| match item {
        WorkItem::Enroll {
            contact_id,
            journey_id,
            request_id,
        } => contact_id.len() + journey_id.len() + request_id.len(),
        other => other.contact_id().len(),
    };
    let mut bundles = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, item) in items.iter().enumerate() {
        let size = ids(item);
        if index > start && (index - start == MAX_BUNDLE || bytes + size > MAX_BUNDLE_IDS) {
            bundles.push(&items[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < items.len() {
        bundles.push(&items[start..]);
    }
    bundles
}

fn definition_key(kind: AudienceKind, name: &str) -> Vec<u8> {
    format!("{}:{name}", kind.as_str()).into_bytes()
}

/// Where a generation's members begin.
fn generation_prefix(segment: &str, generation: u64) -> Vec<u8> {
    let mut key = prefix(segment);
    key.extend_from_slice(&generation.to_be_bytes());
    key
}

/// A member's key.
pub(super) fn member_key(segment: &str, generation: u64, contact_id: &str) -> Vec<u8> {
    let mut key = generation_prefix(segment, generation);
    key.extend_from_slice(contact_id.as_bytes());
    key
}

impl SledStore {
    /// The generation of the segment called `name` now, if there is one.
    fn generation(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let key = definition_key(AudienceKind::Segment, name);
        match self.audiences.get(key).map_err(backend)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(decode::<AudienceRecord>(&bytes)?.generation)),
        }
    }

    /// Remove every member key of `segment` but those of generation `keep`, a chunk per write.
    fn clear_members(&self, segment: &str, keep: Option<u64>) -> Result<(), StoreError> {
        let kept = keep.map(|generation| generation_prefix(segment, generation));
        loop {
            let keys: Vec<sled::IVec> = (self.segment_members.scan_prefix(prefix(segment)).keys())
                .filter(|key| {
                    key.as_ref().map_or(true, |key| {
                        kept.as_ref().is_none_or(|k| !key.starts_with(k))
                    })
                })
                .take(CLEAR_CHUNK)
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            if keys.is_empty() {
                return Ok(());
            }
            let mut writes = WriteSet::new(self);
            for key in keys {
                writes.remove(TreeId::SegmentMembers, key.to_vec());
            }
            writes.apply()?;
        }
    }
}

impl AudienceStore for SledStore {
    fn audiences(&self) -> Result<Vec<AudienceRecord>, StoreError> {
        (self.audiences.iter().values())
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn put_audience(
        &self,
        record: &AudienceRecord,
        sweep: &SweepRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let _sweeps = lock(&self.locks.sweeps);
        let mut writes = WriteSet::new(self);
        writes.put(
            TreeId::Audiences,
            definition_key(record.kind, &record.name),
            encode(record),
        );
        writes.put(TreeId::Sweeps, sweep.id.as_bytes().to_vec(), encode(sweep));
        self.audit_write(&mut writes, audit)?;
        writes.apply()?;
        if record.kind == AudienceKind::Segment {
            self.clear_members(&record.name, Some(record.generation))?;
        }
        Ok(())
    }

    fn delete_audience(
        &self,
        kind: AudienceKind,
        name: &str,
        sweep: Option<&SweepRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let _sweeps = lock(&self.locks.sweeps);
        let mut writes = WriteSet::new(self);
        writes.remove(TreeId::Audiences, definition_key(kind, name));
        if let Some(sweep) = sweep {
            writes.put(TreeId::Sweeps, sweep.id.as_bytes().to_vec(), encode(sweep));
        }
        self.audit_write(&mut writes, audit)?;
        writes.apply()?;
        if kind == AudienceKind::Segment {
            self.clear_members(name, None)?;
        }
        Ok(())
    }

    fn segment_members(
        &self,
        segment: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        let Some(generation) = self.generation(segment)? else {
            return Ok(MemberPage {
                members: Vec::new(),
                next: None,
            });
        };
        let own = generation_prefix(segment, generation);
        let start = match after {
            // Just past `after`: its key with a zero byte added.
            Some(after) => {
                let mut key = member_key(segment, generation, after);
                key.push(0);
                key
            }
            None => own.clone(),
        };
        let mut members = Vec::new();
        let mut more = false;
        for key in self.segment_members.range(start..).keys() {
            let key = key.map_err(backend)?;
            if !key.starts_with(&own) {
                break;
            }
            if members.len() == limit {
                more = true;
                break;
            }
            members.push(String::from_utf8_lossy(&key[own.len()..]).into_owned());
        }
        let next = more.then(|| members.last().cloned()).flatten();
        Ok(MemberPage { members, next })
    }

    fn segment_size(&self, segment: &str) -> Result<u64, StoreError> {
        let Some(generation) = self.generation(segment)? else {
            return Ok(0);
        };
        let own = generation_prefix(segment, generation);
        let mut size = 0;
        for key in self.segment_members.scan_prefix(own).keys() {
            key.map_err(backend)?;
            size += 1;
        }
        Ok(size)
    }

    fn sweeps(&self) -> Result<Vec<SweepRecord>, StoreError> {
        (self.sweeps.iter().values())
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn start_sweep(&self, sweep: &SweepRecord) -> Result<(), StoreError> {
        let _sweeps = lock(&self.locks.sweeps);
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Sweeps, sweep.id.as_bytes().to_vec(), encode(sweep));
        writes.apply()
    }

    fn sweep_page(&self, sweep: &SweepRecord, limit: usize) -> Result<Vec<String>, StoreError> {
        let after = |mut key: Vec<u8>| {
            key.push(0);
            key
        };
        match &sweep.segment {
            None => {
                let start = sweep
                    .after
                    .as_ref()
                    .map_or_else(Vec::new, |id| after(id.as_bytes().to_vec()));
                (self.contacts.range(start..).keys().take(limit))
                    .map(|key| Ok(String::from_utf8_lossy(&key.map_err(backend)?).into_owned()))
                    .collect()
            }
            Some(segment) => {
                let page = self.segment_members(segment, sweep.after.as_deref(), limit)?;
                Ok(page.members)
            }
        }
    }

    fn sweep_step(
        &self,
        sweep: &SweepRecord,
        items: &[WorkItem],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut partitions: Vec<u8> = (items.iter())
            .map(|item| partition_of(item.contact_id()))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        let _partitions = self.locks.partitions(&partitions);
        // After the partitions, as an erasure (which moves a sweep off the contact it erases)
        // takes it.
        let _sweeps = lock(&self.locks.sweeps);
        let current: Option<SweepRecord> = match self.sweeps.get(&sweep.id).map_err(backend)? {
            Some(bytes) => Some(decode(&bytes)?),
            None => None,
        };
        // Only the page that follows the sweep as stored: one a restarted sweep replaced, or
        // one another caller queued first, is dropped.
        let follows = current.is_some_and(|c| {
            c.started_at == sweep.started_at
                && c.finished_at.is_none()
                && c.queued + items.len() as u64 == sweep.queued
        });
        if !follows {
            return Ok(None);
        }
        // A partition's share of the page is one record (a bundle), or a few for a large page.
        let mut shares: BTreeMap<u8, Vec<WorkItem>> = BTreeMap::new();
        for item in items {
            (shares.entry(partition_of(item.contact_id())).or_default()).push(item.clone());
        }
        let mut writes = WriteSet::new(self);
        for (partition, share) in shares {
            for bundle in bundles(&share) {
                writes.queue(partition, work_value(bundle))?;
            }
        }
        writes.put(TreeId::Sweeps, sweep.id.as_bytes().to_vec(), encode(sweep));
        writes.apply()?;
        Ok(Some(partitions))
    }
}

/// The work a sweep queues for one contact.
pub fn sweep_item(work: &SweepWork, contact_id: &str) -> WorkItem {
    match work {
        SweepWork::Refresh => WorkItem::Refresh {
            contact_id: contact_id.to_owned(),
        },
        SweepWork::Enroll {
            journey_id,
            version,
        } => WorkItem::Enroll {
            contact_id: contact_id.to_owned(),
            journey_id: journey_id.clone(),
            request_id: format!("backfill:v{version}"),
        },
    }
}

/// Move every sweep whose position is a contact being erased back to the nearest contact before
/// it that stays (or the start), so no sweep record names an erased contact; a finished sweep
/// forgets its position. The caller holds the erased contacts' partitions and the sweeps lock.
pub(super) fn move_sweeps_off(
    store: &SledStore,
    writes: &mut WriteSet<'_>,
    erased: &std::collections::BTreeSet<&str>,
) -> Result<(), StoreError> {
    for bytes in store.sweeps.iter().values() {
        let mut sweep: SweepRecord = decode(&bytes.map_err(backend)?)?;
        let Some(after) = sweep.after.clone().filter(|a| erased.contains(a.as_str())) else {
            continue;
        };
        sweep.after = match (&sweep.finished_at, &sweep.segment) {
            (Some(_), _) => None,
            (None, segment) => {
                let (tree, own) = match segment {
                    None => (&store.contacts, Vec::new()),
                    Some(segment) => match store.generation(segment)? {
                        Some(generation) => (
                            &store.segment_members,
                            generation_prefix(segment, generation),
                        ),
                        None => (&store.segment_members, prefix(segment)),
                    },
                };
                let mut before = None;
                let mut end = [own.as_slice(), after.as_bytes()].concat();
                while let Some(key) = tree.range(own.clone()..end.clone()).next_back() {
                    let key = key.map_err(backend)?.0;
                    let id = String::from_utf8_lossy(&key[own.len()..]).into_owned();
                    if !erased.contains(id.as_str()) {
                        before = Some(id);
                        break;
                    }
                    end = key.to_vec();
                }
                before
            }
        };
        writes.put(TreeId::Sweeps, sweep.id.as_bytes().to_vec(), encode(&sweep));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Millis;
    use crate::store::layout::MAX_RECORD_BYTES;
    use crate::store::records::WorkItem;
    use crate::store::{Commit, Erasure, JourneyStore, Store, SweepWork};

    #[test]
    fn a_sweep_queues_a_record_per_partition_and_an_erasure_takes_out_only_its_contact() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let ids = |wanted: &dyn Fn(u8) -> bool, n: usize| -> Vec<String> {
            (0..)
                .map(|n| format!("contact-{n}"))
                .filter(|id| wanted(partition_of(id)))
                .take(n)
                .collect()
        };
        let partition = partition_of("contact-0");
        let same = ids(&|p| p == partition, 4);
        let other = ids(&|p| p != partition, 1);
        let page: Vec<String> = same.iter().chain(&other).cloned().collect();
        for id in &page {
            let upsert = serde_json::from_value(serde_json::json!({ "id": id })).unwrap();
            store.upsert_contact(upsert, 1).unwrap();
        }
        let work = SweepWork::Enroll {
            journey_id: "welcome".into(),
            version: 1,
        };
        let started = SweepRecord {
            id: "backfill:welcome:v1".into(),
            work: work.clone(),
            segment: None,
            after: None,
            queued: 0,
            per_second: 10,
            started_at: 1,
            finished_at: None,
        };
        store.start_sweep(&started).unwrap();
        let items: Vec<WorkItem> = page.iter().map(|id| sweep_item(&work, id)).collect();
        let moved = SweepRecord {
            queued: page.len() as u64,
            after: page.last().cloned(),
            ..started
        };
        store.sweep_step(&moved, &items).unwrap().unwrap();
        assert_eq!(store.inbox.len(), 2, "one record for each partition");
        let queued = |now| -> Vec<String> {
            let pending = store.pending_work(partition, 1, now).unwrap();
            assert!(
                pending.iter().all(|(key, _)| *key == pending[0].0),
                "one record"
            );
            (pending.iter())
                .map(|(_, item)| item.contact_id().to_owned())
                .collect()
        };
        assert_eq!(queued(2), same, "a bundle comes whole, past the limit");

        let erasure = Erasure {
            contact_id: same[1].clone(),
            actor: "test".into(),
            reference: "erasure:test".into(),
            requested_at: 2,
        };
        store
            .commit(Commit {
                erasures: vec![erasure],
                now: 3,
                ..Commit::default()
            })
            .unwrap();
        let kept: Vec<String> = [&same[0], &same[2], &same[3]].map(String::clone).into();
        assert_eq!(queued(4), kept, "the others' work stays, in order");
        let mut written = vec![0xa0 | same[1].len() as u8];
        written.extend_from_slice(same[1].as_bytes());
        let holding = store.trees_holding(&written).unwrap();
        assert!(holding.is_empty(), "{holding:?}");

        // Split, the bundle's items keep its place: after what came before, ahead of work
        // queued since, each a record of its own.
        let later = WorkItem::Refresh {
            contact_id: same[0].clone(),
        };
        store.enqueue(&later).unwrap();
        let bundle = store.pending_work(partition, 1, 5).unwrap()[0].0.clone();
        assert!(store.split_bundle(&bundle).unwrap());
        let pending = store.pending_work(partition, 100, 5).unwrap();
        let items: Vec<WorkItem> = pending.iter().map(|(_, item)| item.clone()).collect();
        let mut expected: Vec<WorkItem> = kept.iter().map(|id| sweep_item(&work, id)).collect();
        expected.push(later);
        assert_eq!(items, expected);
        let keys: std::collections::BTreeSet<_> = pending.iter().map(|(key, _)| key).collect();
        assert_eq!(keys.len(), 4, "a record each");
        assert!(
            !store.split_bundle(&pending[0].0).unwrap(),
            "one item is no bundle"
        );
    }

    #[test]
    fn a_bundle_stays_within_a_record_whatever_its_ids_length() {
        let long = |n: usize| WorkItem::Enroll {
            contact_id: format!("{n:0>256}"),
            journey_id: "j".repeat(128),
            request_id: "backfill:v1".into(),
        };
        let items: Vec<WorkItem> = (0..1_000).map(long).collect();
        let cut = bundles(&items);
        assert_eq!(cut.iter().map(|b| b.len()).sum::<usize>(), 1_000);
        for bundle in &cut {
            let size = work_value(bundle).len();
            assert!(
                size <= MAX_RECORD_BYTES,
                "{} items: {size} bytes",
                bundle.len()
            );
        }
        let short: Vec<WorkItem> = (0..1_000)
            .map(|n| WorkItem::Refresh {
                contact_id: format!("c{n}"),
            })
            .collect();
        let sizes: Vec<usize> = bundles(&short).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [256, 256, 256, 232]);
    }

    #[test]
    fn an_erasure_moves_a_sweep_off_the_contact_it_erases() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for id in ["ana", "bo", "cy", "dee"] {
            let upsert = serde_json::from_value(serde_json::json!({ "id": id })).unwrap();
            store.upsert_contact(upsert, 1).unwrap();
        }
        let sweep = |id: &str, after: &str, finished: Option<Millis>| SweepRecord {
            id: id.into(),
            work: SweepWork::Refresh,
            segment: None,
            after: Some(after.into()),
            queued: 3,
            per_second: 10,
            started_at: 1,
            finished_at: finished,
        };
        store.start_sweep(&sweep("running", "cy", None)).unwrap();
        store.start_sweep(&sweep("done", "cy", Some(2))).unwrap();
        let erasure = |id: &str| Erasure {
            contact_id: id.into(),
            actor: "test".into(),
            reference: "erasure:test".into(),
            requested_at: 2,
        };
        // Cy and Bo erased together: the sweep goes back past both, to Ana.
        store
            .commit(Commit {
                erasures: vec![erasure("cy"), erasure("bo")],
                now: 3,
                ..Commit::default()
            })
            .unwrap();
        let after: Vec<(String, Option<String>)> = (store.sweeps().unwrap().into_iter())
            .map(|s| (s.id, s.after))
            .collect();
        assert_eq!(
            after,
            [
                ("done".into(), None),
                ("running".into(), Some("ana".into()))
            ]
        );
        // As MessagePack writes the id in a record: its length, then its bytes.
        let holding = store.trees_holding(b"\xa2cy").unwrap();
        assert!(holding.is_empty(), "{holding:?}");
    }
}
