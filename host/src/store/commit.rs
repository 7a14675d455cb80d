//! Writing a batch of journey work: one write set for everything the batch did, under the
//! locks of every partition it touches. Contacts merged by the batch (the same person, now
//! identified) are merged here, from what the store holds at this moment and the batch's own
//! changes, so nothing written since the batch read them is lost.

use std::collections::{BTreeMap, BTreeSet};

use super::codec::{contact_and_journeys, contact_value, encode, event_value, merge_journeys};
use super::layout::{
    TreeId, contact_event_key, counter_key, identity_key, inbox_sequence, prefix, read_count,
    score_key, timer_key,
};
use super::records::*;
use super::sled_audiences::member_key;
use super::sled_store::{SledStore, backend, identities_in, kv_write, lock};
use super::write_set::WriteSet;
use super::{ActivityWrite, KvUsage, ModelScoreWrite, ScoreEntry, StoreError, merge};
use crate::model::{Audience, Contact, Effect, Event, Millis, ModelScore};

/// A contact's value as it will be written: the contact and its journeys, or `None` once it
/// is merged away (or never existed).
pub(super) type Values = BTreeMap<String, Option<(Contact, Vec<ContactJourney>)>>;

/// Load a contact's value into `values`, unless it is there already.
pub(super) fn load<'v>(
    store: &SledStore,
    values: &'v mut Values,
    contact_id: &str,
) -> Result<&'v mut Option<(Contact, Vec<ContactJourney>)>, StoreError> {
    if !values.contains_key(contact_id) {
        let value = match store.contacts.get(contact_id).map_err(backend)? {
            Some(bytes) => Some(contact_and_journeys(&bytes)?),
            None => None,
        };
        values.insert(contact_id.to_owned(), value);
    }
    Ok(values.get_mut(contact_id).expect("loaded"))
}

pub(super) fn write(store: &SledStore, mut commit: Commit) -> Result<Vec<u8>, StoreError> {
    if !commit.erasures.is_empty() {
        drop_erased(&mut commit);
    }
    // The batch's own partitions (its items' and its contacts') are locked for the whole
    // write, so nobody else writes these contacts, their journey state or the counters'
    // shard of the lowest partition until the write set has been applied.
    let contacts = (commit.contact_effects.iter().map(|(id, _)| id.as_str()))
        .chain(commit.enrollments.iter().map(|e| e.contact_id.as_str()))
        .chain(
            commit
                .contact_journeys
                .iter()
                .map(|cj| cj.contact_id.as_str()),
        )
        .chain(commit.timers_set.iter().map(|(.., id)| id.as_str()))
        .chain(commit.messages.iter().map(|m| m.contact_id.as_str()))
        .chain(commit.events.iter().map(|e| e.contact_id.as_str()))
        .chain(commit.forwards.iter().map(|item| item.contact_id()))
        .chain(commit.seen.iter().map(|(id, ..)| id.as_str()))
        .chain(commit.erasures.iter().map(|e| e.contact_id.as_str()))
        .chain(commit.model_scores.iter().map(|s| s.contact_id.as_str()))
        .chain(commit.activities.iter().map(|a| a.contact_id.as_str()))
        .chain(commit.audiences.iter().map(|a| a.contact_id.as_str()))
        .chain(commit.score_history.iter().map(|s| s.contact_id.as_str()))
        .chain(
            commit
                .merges
                .iter()
                .flat_map(|(from, into)| [from.as_str(), into.as_str()]),
        );
    let mut partitions: BTreeSet<u8> = contacts.map(partition_of).collect();
    partitions.extend(commit.done.iter().filter_map(|key| key.0.first().copied()));
    if partitions.is_empty() {
        partitions.insert(0);
    }
    let partitions: Vec<u8> = partitions.into_iter().collect();
    let shard = partitions[0];
    let changes_identity = !commit.merges.is_empty()
        || !commit.erasures.is_empty()
        || commit
            .contact_effects
            .iter()
            .flat_map(|(_, effects)| effects)
            .any(|effect| match effect {
                Effect::SetAttribute { name, .. } | Effect::UnsetAttribute { name } => {
                    IDENTITY_FIELDS.contains(&name.as_str())
                }
                _ => false,
            });
    let _identities = changes_identity.then(|| lock(&store.locks.identities));
    let _kv = (!commit.kv.is_empty()).then(|| lock(&store.locks.plugin_kv));
    let _partitions = store.locks.partitions(&partitions);
    let _event_ids = store
        .locks
        .ids(commit.events.iter().map(|e| e.id.as_bytes()));

    let now = commit.now;
    let mut writes = WriteSet::new(store);
    // A contact's value holds its journeys too: each contact the batch changed is read once
    // (as it is now, API updates included), changed and written once.
    let mut values = Values::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for (contact_id, effects) in &commit.contact_effects {
        let Some((contact, _)) = load(store, &mut values, contact_id)? else {
            continue;
        };
        let before: crate::model::Attributes = IDENTITY_FIELDS
            .iter()
            .filter_map(|field| Some((field.to_string(), contact.attributes.get(*field)?.clone())))
            .collect();
        for effect in effects {
            contact.apply(effect, now);
        }
        if changes_identity {
            keep_identities_consistent(&mut writes, &before, contact)?;
        }
        changed.insert(contact_id.clone());
    }
    for write in &commit.model_scores {
        if let Some((contact, _)) = load(store, &mut values, &write.contact_id)? {
            move_model_score(&mut writes, contact, write, now);
            changed.insert(write.contact_id.clone());
        }
    }
    for write in &commit.activities {
        if let Some((contact, _)) = load(store, &mut values, &write.contact_id)? {
            add_activity(&mut writes, contact, write);
            changed.insert(write.contact_id.clone());
        }
    }
    for write in &commit.audiences {
        if let Some((contact, _)) = load(store, &mut values, &write.contact_id)? {
            set_audience(&mut writes, contact, write.audience.as_ref());
            changed.insert(write.contact_id.clone());
        }
    }
    for record in &commit.contact_journeys {
        if let Some((_, journeys)) = load(store, &mut values, &record.contact_id)? {
            merge_journeys(journeys, [record]);
            changed.insert(record.contact_id.clone());
        }
    }
    // An event seen for a contact this batch merges away is the one it merges into's (only
    // for merges done: one dropped, into an erased contact, must not list events under it).
    let mut merged_into: BTreeMap<String, String> = BTreeMap::new();
    for (from, into) in std::mem::take(&mut commit.merges) {
        if merge::merge(store, &mut writes, &mut values, &mut commit, &from, &into)? {
            merged_into.insert(from.clone(), into.clone());
            changed.extend([from, into]);
        }
    }
    for contact_id in changed {
        match &values[&contact_id] {
            Some((contact, journeys)) => writes.put(
                TreeId::Contacts,
                contact_id.as_bytes(),
                contact_value(contact, journeys),
            ),
            None => writes.remove(TreeId::Contacts, contact_id.as_bytes()),
        }
    }
    for enrollment in &commit.enrollments {
        writes.put(
            TreeId::Enrollments,
            enrollment.id.as_bytes(),
            encode(enrollment),
        );
    }
    for (due_at, enrollment_id) in &commit.timers_cleared {
        writes.remove(TreeId::Timers, timer_key(*due_at, enrollment_id));
    }
    for (due_at, enrollment_id, contact_id) in &commit.timers_set {
        writes.put(
            TreeId::Timers,
            timer_key(*due_at, enrollment_id),
            contact_id.clone().into_bytes(),
        );
    }
    for message in &commit.messages {
        add_message(store, &mut writes, message)?;
    }
    for event in &commit.events {
        record_event(&mut writes, event)?;
    }
    let mut queued = Vec::new();
    for item in &commit.forwards {
        let partition = partition_of(item.contact_id());
        writes.queue(partition, encode(item))?;
        queued.push(partition);
    }
    // Held until the write is applied: no sweep page may be saved over the moved positions.
    let _sweeps = (!commit.erasures.is_empty()).then(|| lock(&store.locks.sweeps));
    if !commit.erasures.is_empty() {
        let erased = (commit.erasures.iter())
            .map(|e| e.contact_id.as_str())
            .collect();
        super::sled_audiences::move_sweeps_off(store, &mut writes, &erased)?;
    }
    for erasure in &commit.erasures {
        super::erasure::erase(
            store,
            &mut writes,
            &mut commit.counters,
            erasure,
            &commit.done,
            now,
        )?;
    }
    for (key, delta) in commit.counters.iter().filter(|(_, delta)| **delta != 0) {
        let key = counter_key(key, shard);
        let count = writes
            .get(TreeId::Counters, &key)?
            .map_or(0, |bytes| read_count(&bytes));
        writes.put(
            TreeId::Counters,
            key,
            (count + delta).to_be_bytes().to_vec(),
        );
    }
    for write in &commit.kv {
        // The step's own view already refused writes past the quota (see `plugin_kv`).
        kv_write(
            &mut writes,
            &write.namespace,
            &write.key,
            write.value.as_deref(),
            KvUsage::UNLIMITED,
        )?;
    }
    for (contact_id, at, event_id) in &commit.seen {
        let owner = merged_into.get(contact_id).unwrap_or(contact_id);
        writes.put(
            TreeId::ContactEvents,
            contact_event_key(owner, *at, event_id),
            Vec::new(),
        );
    }
    // One record per contact and source (an event, a step): the changes it made together.
    let mut history: BTreeMap<Vec<u8>, Vec<&ScoreEntry>> = BTreeMap::new();
    for entry in &commit.score_history {
        let owner = merged_into
            .get(&entry.contact_id)
            .unwrap_or(&entry.contact_id);
        (history.entry(score_key(owner, entry.at, &entry.source)))
            .or_default()
            .push(entry);
    }
    for (key, entries) in history {
        put_history(&mut writes, key, &entries);
    }
    for WorkKey(key) in &commit.done {
        writes.remove(TreeId::Inbox, key.clone());
    }
    writes.apply()?;
    Ok(queued)
}

/// Leave out of the commit everything it would write for a contact it erases: the erasure
/// replaces the batch's other work for them.
fn drop_erased(commit: &mut Commit) {
    let erased: BTreeSet<String> = commit
        .erasures
        .iter()
        .map(|e| e.contact_id.clone())
        .collect();
    let kept = |id: &String| !erased.contains(id);
    commit.contact_effects.retain(|(id, _)| kept(id));
    commit.enrollments.retain(|e| kept(&e.contact_id));
    commit.contact_journeys.retain(|cj| kept(&cj.contact_id));
    commit.timers_set.retain(|(.., id)| kept(id));
    commit.messages.retain(|m| kept(&m.contact_id));
    commit.events.retain(|e| kept(&e.contact_id));
    commit.seen.retain(|(id, ..)| kept(id));
    commit.model_scores.retain(|s| kept(&s.contact_id));
    commit.activities.retain(|a| kept(&a.contact_id));
    commit.audiences.retain(|a| kept(&a.contact_id));
    commit.score_history.retain(|s| kept(&s.contact_id));
    commit
        .merges
        .retain(|(from, into)| kept(from) && kept(into));
    commit
        .forwards
        .retain(|item| kept(&item.contact_id().to_owned()));
}

/// Give the contact the audience state the batch left it in, and bring its segments' member
/// lists and its audience timer in line.
fn set_audience(writes: &mut WriteSet<'_>, contact: &mut Contact, written: Option<&Audience>) {
    let before = contact.audience.take().unwrap_or_default();
    let none = Audience::default();
    let audience = written.unwrap_or(&none);
    for (segment, generation) in &before.segments {
        if audience.segments.get(segment) != Some(generation) {
            writes.remove(
                TreeId::SegmentMembers,
                member_key(segment, *generation, &contact.id),
            );
        }
    }
    for (segment, generation) in &audience.segments {
        if before.segments.get(segment) != Some(generation) {
            writes.put(
                TreeId::SegmentMembers,
                member_key(segment, *generation, &contact.id),
                Vec::new(),
            );
        }
    }
    if before.timer_at != audience.timer_at {
        let timer = crate::audiences::timer_id(&contact.id);
        if let Some(old) = before.timer_at {
            writes.remove(TreeId::Timers, timer_key(old, &timer));
        }
        if let Some(new) = audience.timer_at {
            writes.put(
                TreeId::Timers,
                timer_key(new, &timer),
                contact.id.clone().into_bytes(),
            );
        }
    }
    contact.audience = written.cloned();
}

/// Add the batch's activity to the contact's as it is now, and move its stage timer.
fn add_activity(writes: &mut WriteSet<'_>, contact: &mut Contact, write: &ActivityWrite) {
    let timer = crate::lifecycle::timer_id(&contact.id);
    let activity = contact
        .activity
        .get_or_insert_with(|| crate::model::Activity {
            last_at: write.last_at,
            ..Default::default()
        });
    activity.last_at = activity.last_at.max(write.last_at);
    for (event, count) in &write.counted {
        *activity.counts.entry(event.clone()).or_default() += count;
    }
    if activity.timer_at != write.timer_at {
        if let Some(old) = activity.timer_at {
            writes.remove(TreeId::Timers, timer_key(old, &timer));
        }
        if let Some(new) = write.timer_at {
            writes.put(
                TreeId::Timers,
                timer_key(new, &timer),
                contact.id.clone().into_bytes(),
            );
        }
        activity.timer_at = write.timer_at;
    }
}

/// Most bytes of score changes one history record holds: a source with more (many models,
/// long reasons) takes several records, `\0`, part number after its key, so no record nears
/// the store's limit and the batch never fails on what scorers said.
const HISTORY_RECORD_BYTES: usize = 32 << 10;

fn put_history(writes: &mut WriteSet<'_>, key: Vec<u8>, entries: &[&ScoreEntry]) {
    let mut parts: Vec<Vec<&ScoreEntry>> = vec![Vec::new()];
    let mut bytes = 0;
    for entry in entries {
        // Generous: field names and numbers besides the texts.
        let size = 256
            + entry.reason.len()
            + entry.event_id.as_ref().map_or(0, String::len)
            + entry.event.as_ref().map_or(0, String::len)
            + entry.plugin.len();
        let last = parts.last_mut().expect("one part at least");
        if !last.is_empty() && bytes + size > HISTORY_RECORD_BYTES {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        parts.last_mut().expect("one part at least").push(entry);
    }
    for (n, part) in parts.iter().enumerate() {
        let mut key = key.clone();
        if n > 0 {
            key.push(0);
            key.extend_from_slice(&(n as u32).to_be_bytes());
        }
        writes.put(TreeId::ScoreHistory, key, encode(part));
    }
}

/// Move a contact's score in one model as the batch did: its points decayed to `now` plus the
/// batch's delta (so points a merge added since the batch read the contact are kept), with the
/// batch's level and decay timer, the old timer replaced.
fn move_model_score(
    writes: &mut WriteSet<'_>,
    contact: &mut Contact,
    write: &ModelScoreWrite,
    now: Millis,
) {
    let timer = crate::scoring::timer_id(&write.model, &contact.id);
    let score = contact
        .scores
        .entry(write.model.clone())
        .or_insert(ModelScore {
            at: now,
            ..ModelScore::default()
        });
    if let Some(old) = score.timer_at
        && Some(old) != write.timer_at
    {
        writes.remove(TreeId::Timers, timer_key(old, &timer));
    }
    if let Some(new) = write.timer_at
        && score.timer_at != Some(new)
    {
        writes.put(
            TreeId::Timers,
            timer_key(new, &timer),
            contact.id.clone().into_bytes(),
        );
    }
    *score = ModelScore {
        points: crate::scoring::points::value(score, now, write.half_life) + write.delta,
        at: now,
        level: write.level,
        revision: write.revision,
        timer_at: write.timer_at,
    };
}

pub(super) const IDENTITY_FIELDS: [&str; 2] = ["email", "phone"];

/// An action may set `email` or `phone`. The identity index follows when the new value is free;
/// a malformed value or one that belongs to another contact is not applied (the old one stays),
/// so two contacts never share an identity. `before` holds the identity attributes as they
/// were; the caller holds the `identities` lock.
fn keep_identities_consistent(
    writes: &mut WriteSet<'_>,
    before: &crate::model::Attributes,
    contact: &mut Contact,
) -> Result<(), StoreError> {
    let (old_email, old_phone) = identities_in(before).unwrap_or_default();
    for (field, old) in [("email", old_email), ("phone", old_phone)] {
        let changed = contact.attributes.get(field) != before.get(field);
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
            let owner = writes.get(TreeId::Identities, &identity_key(field, new))?;
            if owner.is_some_and(|owner| owner.as_ref() != contact.id.as_bytes()) {
                tracing::warn!(contact = %contact.id, field, "a step set an identity another contact owns; kept the old value");
                restore(contact, before, field);
                continue;
            }
            writes.put(
                TreeId::Identities,
                identity_key(field, new),
                contact.id.clone().into_bytes(),
            );
        }
        if let Some(old) = old
            && new.as_ref() != Some(&old)
        {
            writes.remove(TreeId::Identities, identity_key(field, &old));
        }
    }
    Ok(())
}

fn restore(contact: &mut Contact, before: &crate::model::Attributes, field: &str) {
    match before.get(field) {
        Some(value) => contact.attributes.insert(field.to_owned(), value.clone()),
        None => contact.attributes.remove(field),
    };
}

/// Add a message to the outbox, findable by its id and queued for delivery when it is due.
pub(super) fn add_message(
    store: &SledStore,
    writes: &mut WriteSet<'_>,
    message: &OutboxMessage,
) -> Result<(), StoreError> {
    let mut key = prefix(&message.contact_id);
    key.extend_from_slice(&store.db.generate_id().map_err(backend)?.to_be_bytes());
    // In this order, so that a reader between two of these writes (the delivery scan takes no
    // lock) never finds an id or a queue entry that leads nowhere.
    writes.put(TreeId::Outbox, key.clone(), encode(message));
    writes.put(TreeId::MessageIds, message.id.as_bytes(), key);
    if let Some(due_at) = message.due_at {
        writes.put(
            TreeId::Deliveries,
            timer_key(due_at, &message.id),
            Vec::new(),
        );
    }
    Ok(())
}

/// Record an event and queue it for its contact's journeys, unless its id is recorded
/// already; the partition that got work, if one did.
pub(super) fn queue_event(
    writes: &mut WriteSet<'_>,
    event: &Event,
) -> Result<Option<u8>, StoreError> {
    if writes.get(TreeId::Events, event.id.as_bytes())?.is_some() {
        return Ok(None);
    }
    let partition = partition_of(&event.contact_id);
    let key = writes.queue(
        partition,
        encode(&WorkItem::Event {
            contact_id: event.contact_id.clone(),
            event_id: event.id.clone(),
            event: Some(event.clone()),
        }),
    )?;
    writes.put(
        TreeId::Events,
        event.id.as_bytes(),
        event_value(event, Some(inbox_sequence(&key))),
    );
    Ok(Some(partition))
}

/// Record an event a batch emitted and ran already, unless its id is recorded already. It
/// names no inbox item: it never waited in one.
fn record_event(writes: &mut WriteSet<'_>, event: &Event) -> Result<(), StoreError> {
    if writes.get(TreeId::Events, event.id.as_bytes())?.is_none() {
        writes.put(
            TreeId::Events,
            event.id.as_bytes(),
            event_value(event, None),
        );
    }
    Ok(())
}
