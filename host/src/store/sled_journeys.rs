//! The journeys' state in sled: definitions, the inbox, timers, enrollments, the outbox and
//! counters, and the write set that commits a batch of journey work.

use std::collections::BTreeMap;

use super::codec::{contact_and_journeys, decode, encode, work_items, work_value};
use super::layout::{
    TreeId, pair_key, parse_counter_key, prefix, read_count, timer_due, version_key,
};
use super::records::*;
use super::sled_store::{SledStore, backend, check_record, lock, read};
use super::write_set::WriteSet;
use super::{JourneyStore, StoreError};
use crate::model::{Contact, Millis};

impl JourneyStore for SledStore {
    fn journey(&self, id: &str) -> Result<Option<JourneyRecord>, StoreError> {
        read(&self.journeys, id)
    }

    fn journeys(&self) -> Result<Vec<JourneyRecord>, StoreError> {
        let mut journeys = Vec::new();
        for entry in self.journeys.iter() {
            let (key, bytes) = entry.map_err(backend)?;
            match decode(&bytes) {
                Ok(journey) => journeys.push(journey),
                // One unreadable journey must not stop the others (nor the server's start).
                Err(error) => {
                    tracing::error!(journey = %String::from_utf8_lossy(&key), %error, "a journey record cannot be read; set aside as a dead letter");
                    let _publish = lock(&self.locks.publish);
                    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
                    self.move_aside(TreeId::Journeys, &key, &bytes, &error.to_string(), now)?;
                }
            }
        }
        Ok(journeys)
    }

    fn put_journey(&self, record: &JourneyRecord, audit: AuditEntry) -> Result<(), StoreError> {
        let value = encode(record);
        check_record(|| format!("journey `{}`", record.id), &value)?;
        let _publish = lock(&self.locks.publish);
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Journeys, record.id.as_bytes(), value);
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn publish_journey(
        &self,
        record: &JourneyRecord,
        version: &JourneyVersion,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let key = version_key(&version.journey_id, version.version);
        let _publish = lock(&self.locks.publish);
        if self.journey_versions.contains_key(&key).map_err(backend)? {
            return Err(StoreError::Invalid(format!(
                "version {} of journey `{}` exists already",
                version.version, version.journey_id
            )));
        }
        let (version_value, record_value) = (encode(version), encode(record));
        check_record(
            || {
                format!(
                    "version {} of journey `{}`",
                    version.version, version.journey_id
                )
            },
            &version_value,
        )?;
        check_record(|| format!("journey `{}`", record.id), &record_value)?;
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::JourneyVersions, key, version_value);
        writes.put(TreeId::Journeys, record.id.as_bytes(), record_value);
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn journey_version(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Option<JourneyVersion>, StoreError> {
        read(&self.journey_versions, version_key(id, version))
    }

    fn enqueue(&self, item: &WorkItem) -> Result<(), StoreError> {
        let partition = partition_of(item.contact_id());
        let _partition = self.locks.partition(partition);
        let mut writes = WriteSet::new(self);
        writes.queue(partition, encode(item))?;
        writes.apply()
    }

    fn enqueue_enrollment(&self, item: &WorkItem) -> Result<bool, StoreError> {
        let WorkItem::Enroll {
            contact_id,
            journey_id,
            request_id,
        } = item
        else {
            return Err(StoreError::Invalid("not an enrollment request".into()));
        };
        let request_key = pair_key(journey_id, request_id);
        let _request = self.locks.id(&request_key);
        if self
            .enroll_requests
            .contains_key(&request_key)
            .map_err(backend)?
        {
            return Ok(false);
        }
        let partition = partition_of(contact_id);
        let _partition = self.locks.partition(partition);
        let mut writes = WriteSet::new(self);
        writes.put(
            TreeId::EnrollRequests,
            request_key,
            contact_id.clone().into_bytes(),
        );
        writes.queue(partition, encode(item))?;
        writes.apply()?;
        Ok(true)
    }

    fn pending_work(
        &self,
        partition: u8,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<(WorkKey, WorkItem)>, StoreError> {
        let mut items = Vec::new();
        for entry in self.inbox.scan_prefix([partition]) {
            if items.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(backend)?;
            // In queue order, and never past an item whose write is not complete: a later one
            // must not run before it.
            if !self.unsettled.settled(&key) {
                break;
            }
            let key = WorkKey(key.to_vec());
            match work_items(&value) {
                // A bundle's items share its key: the record is consumed with the last of them.
                Ok(bundle) => items.extend(bundle.into_iter().map(|item| (key.clone(), item))),
                Err(error) => {
                    tracing::error!(%error, key = %hex::encode(&key.0), "an inbox item does not decode; setting it aside");
                    self.set_aside(&key, &error.to_string(), now)?;
                }
            }
        }
        Ok(items)
    }

    fn set_aside(&self, key: &WorkKey, error: &str, now: Millis) -> Result<(), StoreError> {
        let _partition = key.0.first().map(|p| self.locks.partition(*p));
        let Some(bytes) = self.inbox.get(&key.0).map_err(backend)? else {
            return Ok(());
        };
        self.move_aside(TreeId::Inbox, &key.0, &bytes, error, now)
    }

    fn split_bundle(&self, key: &WorkKey) -> Result<bool, StoreError> {
        let _partition = key.0.first().map(|p| self.locks.partition(*p));
        let Some(bytes) = self.inbox.get(&key.0).map_err(backend)? else {
            return Ok(false);
        };
        let items = work_items(&bytes)?;
        if items.len() < 2 {
            return Ok(false);
        }
        let mut writes = WriteSet::new(self);
        writes.remove(TreeId::Inbox, key.0.clone());
        for (index, item) in (0u32..).zip(&items) {
            let at = [key.0.as_slice(), &index.to_be_bytes()].concat();
            writes.put(TreeId::Inbox, at, work_value(std::slice::from_ref(item)));
        }
        writes.apply()?;
        Ok(true)
    }

    fn has_pending_work(&self) -> Result<bool, StoreError> {
        Ok(!self.inbox.is_empty())
    }

    fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<Vec<u8>, StoreError> {
        // Due timers by partition, then each partition's in one write set under its lock: the
        // wake-ups queued and the timers taken together.
        let mut due: BTreeMap<u8, Vec<(sled::IVec, String)>> = BTreeMap::new();
        for entry in self.timers.iter().take(limit) {
            let (timer, contact_id) = entry.map_err(backend)?;
            if timer.len() < 8 {
                tracing::error!(key = %hex::encode(&timer), "a timer has a malformed key; setting it aside");
                self.move_aside(
                    TreeId::Timers,
                    &timer,
                    &contact_id,
                    "malformed timer key",
                    now,
                )?;
                continue;
            }
            if timer_due(&timer) > now {
                break;
            }
            let contact_id = String::from_utf8_lossy(&contact_id).into_owned();
            due.entry(partition_of(&contact_id))
                .or_default()
                .push((timer, contact_id));
        }
        let mut partitions = Vec::new();
        for (partition, timers) in due {
            let _partition = self.locks.partition(partition);
            let mut writes = WriteSet::new(self);
            for (timer, contact_id) in timers {
                // A step may have cleared the timer since the scan: then it is not due.
                if !self.timers.contains_key(&timer).map_err(backend)? {
                    continue;
                }
                let work = encode(&WorkItem::Wake {
                    contact_id,
                    enrollment_id: String::from_utf8_lossy(&timer[8..]).into_owned(),
                    due_at: timer_due(&timer),
                });
                writes.queue(partition, work)?;
                writes.remove(TreeId::Timers, timer.to_vec());
                partitions.push(partition);
            }
            writes.apply()?;
        }
        Ok(partitions)
    }

    fn next_timer_due(&self) -> Result<Option<Millis>, StoreError> {
        Ok(self
            .timers
            .first()
            .map_err(backend)?
            .map(|(key, _)| timer_due(&key)))
    }

    fn pending_timers(&self) -> Result<usize, StoreError> {
        Ok(self.timers.len())
    }

    fn enrollment(&self, id: &str) -> Result<Option<Enrollment>, StoreError> {
        read(&self.enrollments, id)
    }

    fn contact_journeys(&self, contact_id: &str) -> Result<Vec<ContactJourney>, StoreError> {
        Ok(self
            .contact_with_journeys(contact_id)?
            .map(|(_, journeys)| journeys)
            .unwrap_or_default())
    }

    fn contact_with_journeys(
        &self,
        contact_id: &str,
    ) -> Result<Option<(Contact, Vec<ContactJourney>)>, StoreError> {
        self.contacts
            .get(contact_id)
            .map_err(backend)?
            .map(|bytes| contact_and_journeys(&bytes))
            .transpose()
    }

    fn messages(&self, contact_id: &str) -> Result<Vec<OutboxMessage>, StoreError> {
        self.outbox
            .scan_prefix(prefix(contact_id))
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn counters(&self, journey_id: &str) -> Result<Vec<(CounterKey, i64)>, StoreError> {
        let mut totals = std::collections::BTreeMap::new();
        for entry in self.counters.scan_prefix(prefix(journey_id)) {
            let (key, value) = entry.map_err(backend)?;
            let key = parse_counter_key(journey_id, &key)
                .ok_or_else(|| StoreError::Backend("corrupt counter key".into()))?;
            *totals.entry(key).or_insert(0) += read_count(&value);
        }
        Ok(totals.into_iter().collect())
    }

    fn commit(&self, commit: Commit) -> Result<Vec<u8>, StoreError> {
        super::commit::write(self, commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_api_updates_of_the_same_contact_at_once_lose_nothing() {
        use crate::store::{ContactUpsert, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let upsert = |n: usize| ContactUpsert {
            id: Some("a".into()),
            attributes: [(format!("field_{n}"), crate::model::Value::Number(n as f64))].into(),
            ..ContactUpsert::default()
        };
        store.upsert_contact(upsert(0), 1).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..1_000 {
                    let commit = Commit {
                        contact_effects: vec![(
                            "a".into(),
                            vec![crate::model::Effect::AdjustScore {
                                delta: 1.0,
                                reason: "step".into(),
                            }],
                        )],
                        ..Commit::default()
                    };
                    store.commit(commit).unwrap();
                }
            });
            scope.spawn(|| {
                for n in 1..=1_000 {
                    store.upsert_contact(upsert(n), 2).unwrap();
                }
            });
        });
        let contact = store.contact("a").unwrap().unwrap();
        assert_eq!(contact.score, 1_000.0, "every step's score change is kept");
        assert_eq!(
            contact.attributes.len(),
            1_001,
            "every API update's attribute is kept"
        );
    }
}
