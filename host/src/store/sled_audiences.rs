//! [`AudienceStore`] for the sled store. A segment's members are kept under its generation
//! (`<segment>\0<generation u64 BE><contact id>`), so a member list left by a segment deleted
//! and made again under its name, or written by a batch that ran on the old definition, is
//! never read as the new one's; such leftovers are removed when the name is put or deleted.

use super::StoreError;
use super::audiences::{
    AudienceKind, AudienceRecord, AudienceStore, MemberPage, SweepRecord, SweepWork,
};
use super::codec::{decode, encode};
use super::layout::{TreeId, prefix};
use super::records::{AuditEntry, WorkItem, partition_of};
use super::sled_store::{SledStore, backend, lock};
use super::write_set::WriteSet;

/// Most keys one write set removes when a member list is cleared.
const CLEAR_CHUNK: usize = 2_000;

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
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.remove(TreeId::Audiences, definition_key(kind, name));
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

    fn sweep_step(&self, sweep: &SweepRecord, items: &[WorkItem]) -> Result<Vec<u8>, StoreError> {
        // Holds `operations`, as a definition's put does, so a put's new sweep is not
        // overwritten by a page of the old.
        let _operations = lock(&self.locks.operations);
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
            return Ok(Vec::new());
        }
        let mut partitions: Vec<u8> = (items.iter())
            .map(|item| partition_of(item.contact_id()))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        let _partitions = self.locks.partitions(&partitions);
        let mut writes = WriteSet::new(self);
        for item in items {
            writes.queue(partition_of(item.contact_id()), encode(item))?;
        }
        writes.put(TreeId::Sweeps, sweep.id.as_bytes().to_vec(), encode(sweep));
        writes.apply()?;
        Ok(partitions)
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
