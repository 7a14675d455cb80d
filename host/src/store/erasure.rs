//! Erasing a contact (the right to erasure), inside the write set of the batch that owns its
//! partition: the contact and its identities, every event of it and its list, its enrollments
//! and their timers, its score history and decay timers, work still queued for it, the API
//! enrollment requests that name it, the aliases that lead to it, suppressions of its
//! addresses and dead letters holding it. Its
//! messages stay for the channel's numbers, anonymised: no contact, address, variables or
//! provider text, and nothing more is sent. One audit entry says it happened, naming the
//! erasure by a random reference, never the contact.
//!
//! Enrollments are found by reading them all (they are keyed by a random id): an erasure costs
//! a pass over the enrollments tree, under the lock of the contact's partition.

use std::collections::BTreeSet;

use super::StoreError;
use super::codec::{contact_and_journeys, decode, encode, work_items, work_value};
use super::layout::{TreeId, identity_key, prefix, timer_key};
use super::messaging::{DeliveryStatus, DeliveryStep};
use super::records::*;
use super::sled_store::{SledStore, backend, identities_in};
use super::write_set::WriteSet;

/// The placeholder that takes an erased contact's place in the messages kept.
pub const ERASED: &str = "erased";

/// What an erasure removed, for the audit log.
#[derive(Debug, Default, serde::Serialize)]
struct Erased {
    events: usize,
    score_history_records: usize,
    enrollments: usize,
    messages_anonymised: usize,
    queued_work: usize,
    aliases: usize,
    suppressions: usize,
    dead_letters: usize,
}

/// A reference for an erasure, which the audit log names it by: random, so that nothing in
/// the log (not even a hash, which a guess of an address would match) leads to the contact.
pub fn erasure_reference() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    format!("erasure:{}", hex::encode(bytes))
}

/// Queue the removal of everything of `erasure.contact_id` into `writes`. The caller holds the
/// contact's partition lock and the identities lock.
pub(super) fn erase(
    store: &SledStore,
    writes: &mut WriteSet<'_>,
    counters: &mut std::collections::BTreeMap<CounterKey, i64>,
    erasure: &Erasure,
    done: &[WorkKey],
    now: crate::model::Millis,
) -> Result<(), StoreError> {
    let id = erasure.contact_id.as_str();
    let mut erased = Erased::default();
    let mut addresses = BTreeSet::new();
    if let Some(bytes) = store.contacts.get(id).map_err(backend)? {
        let (contact, _) = contact_and_journeys(&bytes)?;
        let (email, phone) = identities_in(&contact.attributes).unwrap_or_default();
        for (field, value) in [("email", email), ("phone", phone)] {
            if let Some(value) = value {
                writes.remove(TreeId::Identities, identity_key(field, &value));
                addresses.insert(value);
            }
        }
        for field in ["email", "phone"] {
            if let Some(crate::model::Value::Text(raw)) = contact.attributes.get(field) {
                addresses.insert(raw.clone());
            }
        }
        for (model, score) in &contact.scores {
            if let Some(at) = score.timer_at {
                let timer = crate::scoring::timer_id(model, id);
                writes.remove(TreeId::Timers, timer_key(at, &timer));
            }
        }
        if let Some(at) = contact.activity.as_ref().and_then(|a| a.timer_at) {
            writes.remove(
                TreeId::Timers,
                timer_key(at, &crate::lifecycle::timer_id(id)),
            );
        }
        if let Some(audience) = &contact.audience {
            for (segment, generation) in &audience.segments {
                writes.remove(
                    TreeId::SegmentMembers,
                    super::sled_audiences::member_key(segment, *generation, id),
                );
            }
            if let Some(at) = audience.timer_at {
                writes.remove(
                    TreeId::Timers,
                    timer_key(at, &crate::audiences::timer_id(id)),
                );
            }
        }
        writes.remove(TreeId::Contacts, id.as_bytes());
        writes.put(TreeId::Erased, store.erased_key(id), Vec::new());
    }

    let own = prefix(id);
    for entry in store.contact_events.scan_prefix(&own) {
        let (key, _) = entry.map_err(backend)?;
        if let Some(event_id) = key.get(own.len() + 8..) {
            writes.remove(TreeId::Events, event_id.to_vec());
        }
        writes.remove(TreeId::ContactEvents, key.to_vec());
        erased.events += 1;
    }

    for key in store.score_history.scan_prefix(&own).keys() {
        writes.remove(TreeId::ScoreHistory, key.map_err(backend)?.to_vec());
        erased.score_history_records += 1;
    }

    for entry in store.enrollments.iter() {
        let (key, value) = entry.map_err(backend)?;
        let Ok(enrollment) = decode::<Enrollment>(&value) else {
            continue;
        };
        if enrollment.contact_id != id {
            continue;
        }
        if let Some(due_at) = enrollment.state.due_at() {
            writes.remove(TreeId::Timers, timer_key(due_at, &enrollment.id));
        }
        // One still in the journey leaves it: its node's numbers say so.
        let mut count = |metric: &str, delta: i64| {
            let key = CounterKey {
                journey_id: enrollment.journey_id.clone(),
                version: enrollment.version,
                node: enrollment.node.clone(),
                metric: metric.to_owned(),
            };
            *counters.entry(key).or_default() += delta;
        };
        match enrollment.state {
            State::Waiting { .. } => {
                count("waiting", -1);
                count("exited", 1);
            }
            State::Running | State::Retrying { .. } | State::Parked { .. } => count("exited", 1),
            State::Pending { .. } | State::Done { .. } => {}
        }
        writes.remove(TreeId::Enrollments, key.to_vec());
        erased.enrollments += 1;
    }

    // Work still queued for it (in its partition) would bring parts of it back.
    let partition = partition_of(id);
    for entry in store.inbox.scan_prefix([partition]) {
        let (key, value) = entry.map_err(backend)?;
        // This batch's own items (the erasure among them) are consumed with it.
        if done.iter().any(|WorkKey(k)| k[..] == key[..]) {
            continue;
        }
        let Ok(items) = work_items(&value) else {
            continue;
        };
        let (theirs, others): (Vec<_>, Vec<_>) =
            items.into_iter().partition(|item| item.contact_id() == id);
        if theirs.is_empty() {
            continue;
        }
        for item in &theirs {
            if let WorkItem::Event { event_id, .. } = item {
                writes.remove(TreeId::Events, event_id.as_bytes());
            }
        }
        erased.queued_work += theirs.len();
        // A sweep's bundle keeps the other contacts' work, in its place.
        match others.is_empty() {
            true => writes.remove(TreeId::Inbox, key.to_vec()),
            false => writes.put(TreeId::Inbox, key.to_vec(), work_value(&others)),
        }
    }

    for entry in store.outbox.scan_prefix(&own) {
        let (key, value) = entry.map_err(backend)?;
        let message: OutboxMessage = decode(&value)?;
        writes.remove(TreeId::Outbox, key.to_vec());
        writes.remove(TreeId::MessageIds, message.id.as_bytes());
        if let Some(due_at) = message.due_at {
            writes.remove(TreeId::Deliveries, timer_key(due_at, &message.id));
        }
        let mut kept = prefix(ERASED);
        kept.extend_from_slice(&key[own.len()..]);
        writes.put(TreeId::Outbox, kept, encode(&anonymised(message, now)));
        erased.messages_anonymised += 1;
    }

    for entry in store.aliases.iter() {
        let (key, value) = entry.map_err(backend)?;
        if value.as_ref() == id.as_bytes() || key.as_ref() == id.as_bytes() {
            writes.remove(TreeId::Aliases, key.to_vec());
            erased.aliases += 1;
        }
    }
    for entry in store.enroll_requests.iter() {
        let (key, value) = entry.map_err(backend)?;
        if value.as_ref() == id.as_bytes() {
            writes.remove(TreeId::EnrollRequests, key.to_vec());
        }
    }
    for entry in store.suppressions.iter() {
        let (key, _) = entry.map_err(backend)?;
        let address = key.splitn(2, |b| *b == 0).nth(1).unwrap_or_default();
        if addresses.iter().any(|a| a.as_bytes() == address) {
            writes.remove(TreeId::Suppressions, key.to_vec());
            erased.suppressions += 1;
        }
    }
    let needles: Vec<&[u8]> = std::iter::once(id.as_bytes())
        .chain(addresses.iter().map(|a| a.as_bytes()))
        .collect();
    for entry in store.dead_letters.iter() {
        let (key, value) = entry.map_err(backend)?;
        if needles.iter().any(|n| contains(&value, n)) {
            writes.remove(TreeId::DeadLetters, key.to_vec());
            erased.dead_letters += 1;
        }
    }

    let detail = serde_json::to_value(&erased).expect("counts serialize");
    let audit = AuditEntry::new(
        erasure.requested_at,
        &erasure.actor,
        "contact.erase",
        &erasure.reference,
        detail,
    );
    store.audit_write(writes, audit)
}

/// A message as kept after its contact is erased: what it was and how it went, nothing about
/// whom; one not sent yet never will be.
fn anonymised(message: OutboxMessage, now: crate::model::Millis) -> OutboxMessage {
    let unsent = !matches!(
        message.status,
        DeliveryStatus::Sent
            | DeliveryStatus::Delivered
            | DeliveryStatus::Bounced
            | DeliveryStatus::Failed
            | DeliveryStatus::Suppressed
    );
    let mut history: Vec<_> = message
        .history
        .into_iter()
        .map(|mut step| {
            step.detail.clear();
            step
        })
        .collect();
    let status = if unsent {
        history.push(DeliveryStep {
            at: now,
            status: DeliveryStatus::Suppressed,
            detail: "its contact was erased".into(),
        });
        DeliveryStatus::Suppressed
    } else {
        message.status
    };
    OutboxMessage {
        contact_id: ERASED.into(),
        variables: Default::default(),
        enrollment_id: String::new(),
        recipient: None,
        provider_id: None,
        due_at: None,
        status,
        history,
        ..message
    }
}

impl SledStore {
    pub(super) fn holding(&self, needle: &[u8]) -> Result<Vec<&'static str>, StoreError> {
        let mut found = Vec::new();
        for tree in TreeId::ALL {
            for entry in self.tree(tree).iter() {
                let (key, value) = entry.map_err(backend)?;
                if contains(&key, needle) || contains(&value, needle) {
                    found.push(tree.name());
                    break;
                }
            }
        }
        Ok(found)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
