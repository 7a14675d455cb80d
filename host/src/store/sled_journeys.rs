//! The journeys' state in sled: definitions, the inbox, timers, enrollments, the outbox and
//! counters, and the one transaction that commits a batch of journey work.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::records::*;
use super::sled_store::{
    SledStore, backend, decode, encode, identities_in, identity_key, inbox_key, kv_write, read,
};
use super::{JourneyStore, StoreError};
use crate::model::{Contact, Millis};

/// Timers sort by due time: flip the sign bit so negative times order before positive ones.
fn timer_key(due_at: Millis, enrollment_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + enrollment_id.len());
    key.extend_from_slice(&((due_at as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(enrollment_id.as_bytes());
    key
}

fn timer_due(key: &[u8]) -> Millis {
    let mut due = [0u8; 8];
    due.copy_from_slice(&key[..8]);
    (u64::from_be_bytes(due) ^ (1 << 63)) as Millis
}

fn pair_key(a: &str, b: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + 1 + b.len());
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    key
}

fn prefix(a: &str) -> Vec<u8> {
    let mut key = a.as_bytes().to_vec();
    key.push(0);
    key
}

fn version_key(journey_id: &str, version: u32) -> Vec<u8> {
    let mut key = prefix(journey_id);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn counter_key(key: &CounterKey) -> Vec<u8> {
    let mut bytes = version_key(&key.journey_id, key.version);
    bytes.extend_from_slice(key.node.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.metric.as_bytes());
    bytes
}

fn parse_counter_key(journey_id: &str, bytes: &[u8]) -> Option<CounterKey> {
    let rest = bytes.get(journey_id.len() + 1..)?;
    let version = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let (node, metric) = std::str::from_utf8(&rest[4..]).ok()?.split_once('\0')?;
    Some(CounterKey {
        journey_id: journey_id.to_owned(),
        version,
        node: node.to_owned(),
        metric: metric.to_owned(),
    })
}

fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

fn flatten(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => backend(error),
    }
}

impl JourneyStore for SledStore {
    fn journey(&self, id: &str) -> Result<Option<JourneyRecord>, StoreError> {
        read(&self.journeys, id)
    }

    fn journeys(&self) -> Result<Vec<JourneyRecord>, StoreError> {
        self.journeys
            .iter()
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn put_journey(&self, record: &JourneyRecord) -> Result<(), StoreError> {
        self.journeys
            .insert(record.id.as_bytes(), encode(record))
            .map(drop)
            .map_err(backend)
    }

    fn publish_journey(
        &self,
        record: &JourneyRecord,
        version: &JourneyVersion,
    ) -> Result<(), StoreError> {
        let (record_bytes, version_bytes) = (encode(record), encode(version));
        let key = version_key(&version.journey_id, version.version);
        (&self.journeys, &self.journey_versions)
            .transaction(|(journeys, versions)| {
                if versions.get(&key)?.is_some() {
                    return Err(abort(StoreError::Invalid(format!(
                        "version {} of journey `{}` exists already",
                        version.version, version.journey_id
                    ))));
                }
                versions.insert(key.as_slice(), version_bytes.as_slice())?;
                journeys.insert(record.id.as_bytes(), record_bytes.as_slice())?;
                Ok(())
            })
            .map_err(flatten)
    }

    fn journey_version(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Option<JourneyVersion>, StoreError> {
        read(&self.journey_versions, version_key(id, version))
    }

    fn enqueue(&self, item: &WorkItem) -> Result<(), StoreError> {
        let sequence = self.db.generate_id().map_err(backend)?;
        let key = inbox_key(partition_of(item.contact_id()), sequence);
        self.inbox
            .insert(&key[..], encode(item))
            .map(drop)
            .map_err(backend)
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
        let sequence = self.db.generate_id().map_err(backend)?;
        let key = inbox_key(partition_of(contact_id), sequence);
        let (request_key, work) = (pair_key(journey_id, request_id), encode(item));
        (&self.enroll_requests, &self.inbox)
            .transaction(|(requests, inbox)| {
                if requests.get(&request_key)?.is_some() {
                    return Ok(false);
                }
                requests.insert(request_key.as_slice(), contact_id.as_bytes())?;
                inbox.insert(&key[..], work.as_slice())?;
                Ok(true)
            })
            .map_err(flatten)
    }

    fn pending_work(
        &self,
        partition: u8,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<(WorkKey, WorkItem)>, StoreError> {
        let mut items = Vec::new();
        for entry in self.inbox.scan_prefix([partition]).take(limit) {
            let (key, value) = entry.map_err(backend)?;
            let key = WorkKey(key.to_vec());
            match decode(&value) {
                Ok(item) => items.push((key, item)),
                Err(error) => {
                    tracing::error!(%error, key = %hex::encode(&key.0), "an inbox item does not decode; setting it aside");
                    self.set_aside(&key, &error.to_string(), now)?;
                }
            }
        }
        Ok(items)
    }

    fn set_aside(&self, key: &WorkKey, error: &str, now: Millis) -> Result<(), StoreError> {
        (&self.inbox, &self.dead_letters)
            .transaction(|(inbox, dead_letters)| {
                let Some(bytes) = inbox.remove(key.0.as_slice())? else {
                    return Ok(());
                };
                let item: Option<WorkItem> = decode(&bytes).ok();
                let letter = DeadLetter {
                    key: hex::encode(&key.0),
                    raw: item
                        .is_none()
                        .then(|| String::from_utf8_lossy(&bytes).into_owned()),
                    item,
                    error: error.to_owned(),
                    set_aside_at: now,
                };
                dead_letters.insert(key.0.as_slice(), encode(&letter))?;
                Ok(())
            })
            .map_err(flatten)
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead_letters
            .iter()
            .take(limit)
            .map(|entry| decode(&entry.map_err(backend)?.1))
            .collect()
    }

    fn has_pending_work(&self) -> Result<bool, StoreError> {
        Ok(!self.inbox.is_empty())
    }

    fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<Vec<u8>, StoreError> {
        let mut due = Vec::new();
        for entry in self.timers.iter().take(limit) {
            let (key, contact_id) = entry.map_err(backend)?;
            let due_at = timer_due(&key);
            if due_at > now {
                break;
            }
            let contact_id = String::from_utf8_lossy(&contact_id).into_owned();
            let enrollment_id = String::from_utf8_lossy(&key[8..]).into_owned();
            let sequence = self.db.generate_id().map_err(backend)?;
            let partition = partition_of(&contact_id);
            let work = encode(&WorkItem::Wake {
                contact_id,
                enrollment_id,
                due_at,
            });
            due.push((key, inbox_key(partition, sequence), work, partition));
        }
        if due.is_empty() {
            return Ok(Vec::new());
        }
        (&self.timers, &self.inbox)
            .transaction(|(timers, inbox)| {
                for (timer, key, work, _) in &due {
                    // A step may have cleared the timer since the scan; then it is not due.
                    if timers.remove(timer)?.is_some() {
                        inbox.insert(&key[..], work.as_slice())?;
                    }
                }
                Ok(())
            })
            .map_err(flatten)?;
        Ok(due.into_iter().map(|(.., partition)| partition).collect())
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

    fn contact_journey(
        &self,
        contact_id: &str,
        journey_id: &str,
    ) -> Result<Option<ContactJourney>, StoreError> {
        read(&self.contact_journeys, pair_key(contact_id, journey_id))
    }

    fn contact_journeys(&self, contact_id: &str) -> Result<Vec<ContactJourney>, StoreError> {
        self.contact_journeys
            .scan_prefix(prefix(contact_id))
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn messages(&self, contact_id: &str) -> Result<Vec<OutboxMessage>, StoreError> {
        self.outbox
            .scan_prefix(prefix(contact_id))
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn counters(&self, journey_id: &str) -> Result<Vec<(CounterKey, i64)>, StoreError> {
        self.counters
            .scan_prefix(prefix(journey_id))
            .map(|entry| {
                let (key, value) = entry.map_err(backend)?;
                let key = parse_counter_key(journey_id, &key)
                    .ok_or_else(|| StoreError::Backend("corrupt counter key".into()))?;
                let count = i64::from_be_bytes(value.as_ref().try_into().unwrap_or_default());
                Ok((key, count))
            })
            .collect()
    }

    fn commit(&self, commit: Commit) -> Result<Vec<u8>, StoreError> {
        // Encode and number everything before the transaction: its closure may run again.
        let enrollments: Vec<_> = commit
            .enrollments
            .iter()
            .map(|e| (e.id.as_bytes(), encode(e)))
            .collect();
        let contact_journeys: Vec<_> = commit
            .contact_journeys
            .iter()
            .map(|cj| (pair_key(&cj.contact_id, &cj.journey_id), encode(cj)))
            .collect();
        let mut messages = Vec::with_capacity(commit.messages.len());
        for message in &commit.messages {
            let mut key = prefix(&message.contact_id);
            key.extend_from_slice(&self.db.generate_id().map_err(backend)?.to_be_bytes());
            messages.push((key, encode(message)));
        }
        let mut events = Vec::with_capacity(commit.events.len());
        for event in &commit.events {
            let partition = partition_of(&event.contact_id);
            let key = inbox_key(partition, self.db.generate_id().map_err(backend)?);
            let work = encode(&WorkItem::Event {
                contact_id: event.contact_id.clone(),
                event_id: event.id.clone(),
                event: Some(event.clone()),
            });
            events.push((event.id.as_bytes(), encode(event), key, work, partition));
        }
        let counters: Vec<_> = commit
            .counters
            .iter()
            .filter(|(_, delta)| **delta != 0)
            .map(|(key, delta)| (counter_key(key), *delta))
            .collect();
        let now = commit.now;
        let new_work = std::sync::Mutex::new(Vec::new());

        (
            &self.contacts,
            &self.identities,
            &self.events,
            &self.inbox,
            &self.timers,
            &self.enrollments,
            &self.contact_journeys,
            &self.outbox,
            &self.counters,
            &self.plugin_kv,
            &self.plugin_kv_counts,
        )
            .transaction(
                |(
                    contacts,
                    identities,
                    events_tree,
                    inbox,
                    timers,
                    enrollments_tree,
                    contact_journeys_tree,
                    outbox,
                    counters_tree,
                    plugin_kv,
                    plugin_kv_counts,
                )| {
                    for (contact_id, effects) in &commit.contact_effects {
                        let Some(bytes) = contacts.get(contact_id.as_bytes())? else {
                            continue;
                        };
                        let mut contact: Contact = decode(&bytes).map_err(abort)?;
                        let before = contact.clone();
                        for effect in effects {
                            contact.apply(effect, now);
                        }
                        keep_identities_consistent(identities, &before, &mut contact)?;
                        contacts.insert(contact_id.as_bytes(), encode(&contact))?;
                    }
                    for (id, bytes) in &enrollments {
                        enrollments_tree.insert(*id, bytes.as_slice())?;
                    }
                    for (key, bytes) in &contact_journeys {
                        contact_journeys_tree.insert(key.as_slice(), bytes.as_slice())?;
                    }
                    for (due_at, enrollment_id) in &commit.timers_cleared {
                        timers.remove(timer_key(*due_at, enrollment_id))?;
                    }
                    for (due_at, enrollment_id, contact_id) in &commit.timers_set {
                        timers.insert(timer_key(*due_at, enrollment_id), contact_id.as_bytes())?;
                    }
                    for (key, bytes) in &messages {
                        outbox.insert(key.as_slice(), bytes.as_slice())?;
                    }
                    let mut queued = Vec::new();
                    for (id, bytes, key, work, partition) in &events {
                        if events_tree.get(*id)?.is_none() {
                            events_tree.insert(*id, bytes.as_slice())?;
                            inbox.insert(&key[..], work.as_slice())?;
                            queued.push(*partition);
                        }
                    }
                    for (key, delta) in &counters {
                        let count = counters_tree.get(key)?.map_or(0, |v| {
                            i64::from_be_bytes(v.as_ref().try_into().unwrap_or_default())
                        });
                        counters_tree.insert(key.as_slice(), &(count + delta).to_be_bytes())?;
                    }
                    for write in &commit.kv {
                        kv_write(
                            plugin_kv,
                            plugin_kv_counts,
                            &write.namespace,
                            &write.key,
                            write.value.as_deref(),
                            write.max_keys,
                        )?;
                    }
                    for WorkKey(key) in &commit.done {
                        inbox.remove(key.as_slice())?;
                    }
                    *new_work.lock().expect("commit lock") = queued;
                    Ok(())
                },
            )
            .map_err(flatten)?;
        Ok(new_work.into_inner().expect("commit lock"))
    }
}

/// An action may set `email` or `phone`. The identity index follows when the new value is free;
/// a malformed value or one that belongs to another contact is not applied (the old one stays),
/// so two contacts never share an identity.
fn keep_identities_consistent(
    identities: &sled::transaction::TransactionalTree,
    before: &Contact,
    contact: &mut Contact,
) -> sled::transaction::ConflictableTransactionResult<(), StoreError> {
    let (old_email, old_phone) = identities_in(&before.attributes).unwrap_or_default();
    for (field, old) in [("email", old_email), ("phone", old_phone)] {
        let changed = contact.attributes.get(field) != before.attributes.get(field);
        if !changed {
            continue;
        }
        let mut single = crate::model::Attributes::new();
        if let Some(value) = contact.attributes.get(field) {
            single.insert(field.to_owned(), value.clone());
        }
        let new = match identities_in(&single) {
            Ok((email, phone)) => {
                if field == "email" {
                    email
                } else {
                    phone
                }
            }
            Err(_) => {
                tracing::warn!(contact = %contact.id, field, "a step set a malformed identity; kept the old value");
                restore(contact, before, field);
                continue;
            }
        };
        if let Some(new) = &new {
            let owner = identities.get(identity_key(field, new))?;
            if owner.is_some_and(|owner| owner.as_ref() != contact.id.as_bytes()) {
                tracing::warn!(contact = %contact.id, field, "a step set an identity another contact owns; kept the old value");
                restore(contact, before, field);
                continue;
            }
            identities.insert(identity_key(field, new), contact.id.as_bytes())?;
        }
        if let Some(old) = old
            && new.as_ref() != Some(&old)
        {
            identities.remove(identity_key(field, &old))?;
        }
    }
    Ok(())
}

fn restore(contact: &mut Contact, before: &Contact, field: &str) {
    match before.attributes.get(field) {
        Some(value) => contact.attributes.insert(field.to_owned(), value.clone()),
        None => contact.attributes.remove(field),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_order_by_due_time_including_before_1970() {
        let mut keys = [
            timer_key(5, "a"),
            timer_key(-5, "b"),
            timer_key(1_800_000_000_000, "c"),
            timer_key(0, "d"),
        ];
        keys.sort();
        let dues: Vec<_> = keys.iter().map(|k| timer_due(k)).collect();
        assert_eq!(dues, [-5, 0, 5, 1_800_000_000_000]);
    }

    #[test]
    fn counter_keys_round_trip() {
        let key = CounterKey {
            journey_id: "welcome".into(),
            version: 3,
            node: "opened?".into(),
            metric: "passed:event".into(),
        };
        assert_eq!(parse_counter_key("welcome", &counter_key(&key)), Some(key));
    }
}
