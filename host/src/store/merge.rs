//! Merging one contact into another: the same person, known first by an anonymous id (a
//! visitor filling a form) and now identified (logged in). Done as part of a journey commit,
//! under the locks of both contacts' partitions and of the identities, from what the store
//! holds now and the batch's own changes. Merging a contact that is gone already changes
//! nothing, so a merge is done once however often it is asked for.
//!
//! The identified contact's values win; the anonymous one's fill the gaps: attributes it lacks
//! (its email and phone too, which then belong to it), tags, consents; scores add up. The
//! anonymous contact's journeys and enrollments become the identified one's, timers and
//! messages included, and its id becomes an alias: later work and reads for it find the
//! identified contact. Its events stay recorded as they were sent.

use super::StoreError;
use super::codec::{decode, encode};
use super::commit::{Values, load};
use super::layout::{TreeId, identity_key, prefix, timer_key};
use super::records::{Commit, ContactJourney, Enrollment, OutboxMessage, RECENT_ENROLLMENTS};
use super::sled_store::{SledStore, backend, identities_in};
use super::write_set::WriteSet;
use crate::model::{ConsentState, Contact};

/// Merge `from` into `into`; whether it did (and so changed both contacts' values).
pub(super) fn merge(
    store: &SledStore,
    writes: &mut WriteSet<'_>,
    values: &mut Values,
    commit: &mut Commit,
    from: &str,
    into: &str,
) -> Result<bool, StoreError> {
    let now = commit.now;
    // A merge into (or from) a contact erased since it was queued: nothing of that contact
    // may come back, not even its id as an alias, so the merge is dropped and the other
    // contact stays as it is. (A contact made again under an erased id is no longer erased.)
    if load(store, values, into)?.is_none() && store.was_erased(into)?
        || load(store, values, from)?.is_none() && store.was_erased(from)?
    {
        tracing::warn!(
            "a merge into an erased contact was dropped; the contact merged from stays as it was"
        );
        return Ok(false);
    }
    writes.put(TreeId::Aliases, from.as_bytes(), into.as_bytes().to_vec());
    let Some((gone, gone_journeys)) = load(store, values, from)?.take() else {
        return Ok(false);
    };
    let (mut kept, mut journeys) = match load(store, values, into)?.take() {
        Some(value) => value,
        None => {
            let mut fresh = Contact::new(into.to_owned(), gone.created_at);
            fresh.timezone = gone.timezone.clone();
            (fresh, Vec::new())
        }
    };

    // Identities: the anonymous contact's email or phone goes with it if the identified one
    // has none; otherwise it is released.
    let (gone_email, gone_phone) = identities_in(&gone.attributes).unwrap_or_default();
    for (field, value) in [("email", gone_email), ("phone", gone_phone)] {
        let Some(value) = value else { continue };
        if kept.attributes.contains_key(field) {
            writes.remove(TreeId::Identities, identity_key(field, &value));
        } else {
            writes.put(
                TreeId::Identities,
                identity_key(field, &value),
                into.as_bytes().to_vec(),
            );
        }
    }
    for (name, value) in gone.attributes {
        kept.attributes.entry(name).or_insert(value);
    }
    // Its events are the identified contact's now.
    let gone_prefix = prefix(from);
    for entry in store.contact_events.scan_prefix(&gone_prefix) {
        let (key, _) = entry.map_err(backend)?;
        let mut moved = prefix(into);
        moved.extend_from_slice(&key[gone_prefix.len()..]);
        writes.put(TreeId::ContactEvents, moved, Vec::new());
        writes.remove(TreeId::ContactEvents, key.to_vec());
    }
    for tag in gone.tags {
        if !kept.tags.contains(&tag) {
            kept.tags.push(tag);
        }
    }
    for (channel, state) in gone.consents {
        let entry = kept.consents.entry(channel).or_insert(state);
        if *entry == ConsentState::Unknown {
            *entry = state;
        }
    }
    kept.score += gone.score;
    super::merge_scores::merge_scores(
        store,
        writes,
        &mut kept.scores,
        gone.scores,
        from,
        into,
        now,
    )?;
    super::merge_scores::merge_activity(writes, &mut kept.activity, gone.activity, from, into, now);
    super::merge_scores::merge_audience(writes, &mut kept.audience, gone.audience, from, into, now);
    for entry in store.score_history.scan_prefix(&gone_prefix) {
        let (key, value) = entry.map_err(backend)?;
        let mut moved = prefix(into);
        moved.extend_from_slice(&key[gone_prefix.len()..]);
        writes.put(TreeId::ScoreHistory, moved, value.to_vec());
        writes.remove(TreeId::ScoreHistory, key.to_vec());
    }
    if kept.timezone == "UTC" {
        kept.timezone = gone.timezone;
    }
    kept.created_at = kept.created_at.min(gone.created_at);
    kept.updated_at = now;
    kept.anonymous = kept.anonymous && gone.anonymous;

    // Journeys, and the enrollments, timers and messages that go with them.
    let mut enrollment_ids = Vec::new();
    for mut record in gone_journeys {
        enrollment_ids.extend(record.recent.iter().chain(&record.active).cloned());
        record.contact_id = into.to_owned();
        match journeys
            .iter_mut()
            .find(|j| j.journey_id == record.journey_id)
        {
            Some(held) => combine(held, record),
            None => journeys.push(record),
        }
    }
    enrollment_ids.sort();
    enrollment_ids.dedup();
    for id in enrollment_ids {
        if let Some(pending) = commit.enrollments.iter_mut().find(|e| e.id == id) {
            pending.contact_id = into.to_owned();
            continue;
        }
        let Some(bytes) = store.enrollments.get(&id).map_err(backend)? else {
            continue;
        };
        let mut enrollment: Enrollment = decode(&bytes)?;
        enrollment.contact_id = into.to_owned();
        if let Some(due_at) = enrollment.state.due_at() {
            writes.put(
                TreeId::Timers,
                timer_key(due_at, &id),
                into.as_bytes().to_vec(),
            );
        }
        writes.put(TreeId::Enrollments, id.as_bytes(), encode(&enrollment));
    }
    for (_, _, contact_id) in &mut commit.timers_set {
        if contact_id == from {
            *contact_id = into.to_owned();
        }
    }
    for message in &mut commit.messages {
        if message.contact_id == from {
            message.contact_id = into.to_owned();
        }
    }
    for event in &mut commit.events {
        if event.contact_id == from {
            event.contact_id = into.to_owned();
        }
    }
    for entry in store.outbox.scan_prefix(prefix(from)) {
        let (key, bytes) = entry.map_err(backend)?;
        let mut message: OutboxMessage = decode(&bytes)?;
        message.contact_id = into.to_owned();
        let mut moved = prefix(into);
        moved.extend_from_slice(&key[from.len() + 1..]);
        // The moved record first, then its id, then the old record gone: a reader between
        // any two of these finds the message (see `commit::add_message`).
        writes.put(TreeId::Outbox, moved.clone(), encode(&message));
        writes.put(TreeId::MessageIds, message.id.as_bytes(), moved);
        writes.remove(TreeId::Outbox, key.to_vec());
    }
    values.insert(into.to_owned(), Some((kept, journeys)));
    Ok(true)
}

/// One person's two records of the same journey as one.
fn combine(held: &mut ContactJourney, other: ContactJourney) {
    held.entries += other.entries;
    held.last_entered_at = held.last_entered_at.max(other.last_entered_at);
    held.active.extend(other.active);
    let mut recent = other.recent;
    recent.append(&mut held.recent);
    let skip = recent.len().saturating_sub(RECENT_ENROLLMENTS);
    held.recent = recent.split_off(skip);
}
