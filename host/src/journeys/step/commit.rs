//! What a batch changes, collected while its steps run and written as one [`Commit`]: effects
//! on contacts, timers, messages, emitted events, per-node counters and the inbox items done.

use std::collections::HashMap;

use super::super::compiled::CompiledJourney;
use crate::model::{Effect, Event, Millis};
use crate::store::{
    ActivityWrite, Commit, ContactJourney, Enrollment, Erasure, KvWrite, ModelScoreWrite,
    OutboxMessage, ScoreEntry, WorkKey,
};

/// The batch's changes other than the records it read (those are in `Reads`).
pub(in crate::journeys) struct Changes {
    commit: Commit,
    effects: HashMap<String, Vec<Effect>>,
    emitted: Vec<Event>,
}

impl Changes {
    pub(super) fn new(now: Millis) -> Self {
        Changes {
            commit: Commit {
                now,
                ..Commit::default()
            },
            effects: HashMap::new(),
            emitted: Vec::new(),
        }
    }

    /// Add `delta` to a node's counter.
    pub(super) fn count(
        &mut self,
        journey: &CompiledJourney,
        node: &str,
        metric: &str,
        delta: i64,
    ) {
        self.commit
            .count(&journey.journey_id, journey.version, node, metric, delta);
    }

    /// Wake the enrollment at `due_at`.
    pub(super) fn set_timer(&mut self, due_at: Millis, enrollment: &Enrollment) {
        self.commit
            .timers_set
            .push((due_at, enrollment.id.clone(), enrollment.contact_id.clone()));
    }

    pub(super) fn clear_timer(&mut self, due_at: Millis, enrollment_id: &str) {
        self.commit
            .timers_cleared
            .push((due_at, enrollment_id.to_owned()));
    }

    pub(super) fn send(&mut self, message: OutboxMessage) {
        self.commit.messages.push(message);
    }

    /// Emit an event; it runs before the batch commits (see [`Batch::into_commit`]).
    ///
    /// [`Batch::into_commit`]: super::Batch::into_commit
    pub(super) fn emit(&mut self, event: Event) {
        self.emitted.push(event);
    }

    /// The events emitted and not run yet.
    pub(super) fn take_emitted(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.emitted)
    }

    /// Record an emitted event that ran, with the batch.
    pub(super) fn record(&mut self, event: Event) {
        self.commit.events.push(event);
    }

    /// Effects to apply to the stored contact, in order, at commit.
    pub(super) fn change_contact(&mut self, contact_id: &str, effects: Vec<Effect>) {
        self.effects
            .entry(contact_id.to_owned())
            .or_default()
            .extend(effects);
    }

    /// Move a contact's score in a model, and keep the changes that moved it.
    pub(super) fn move_model_score(&mut self, write: ModelScoreWrite, entries: Vec<ScoreEntry>) {
        self.commit.model_scores.push(write);
        self.commit.score_history.extend(entries);
    }

    /// Add to what the lifecycle rules track of the contact: its latest interaction, one
    /// more of a counted event, and its stage timer.
    pub(super) fn add_activity(
        &mut self,
        contact_id: &str,
        activity: &crate::model::Activity,
        counted: Option<&str>,
    ) {
        let index = match (self.commit.activities.iter()).position(|a| a.contact_id == contact_id) {
            Some(index) => index,
            None => {
                self.commit.activities.push(ActivityWrite {
                    contact_id: contact_id.to_owned(),
                    ..ActivityWrite::default()
                });
                self.commit.activities.len() - 1
            }
        };
        let write = &mut self.commit.activities[index];
        write.last_at = write.last_at.max(activity.last_at);
        write.timer_at = activity.timer_at;
        if let Some(event) = counted {
            *write.counted.entry(event.to_owned()).or_default() += 1;
        }
    }

    /// Write the contact's audience state as the batch left it.
    pub(super) fn set_audience(&mut self, write: crate::store::AudienceWrite) {
        self.commit.audiences.push(write);
    }

    /// Keep a score change (an action's) in the contact's history.
    pub(super) fn score_changed(&mut self, entry: ScoreEntry) {
        self.commit.score_history.push(entry);
    }

    /// Merge `from` into `into` at commit.
    pub(super) fn merge(&mut self, from: &str, into: &str) {
        self.commit.merges.push((from.to_owned(), into.to_owned()));
    }

    /// Queue `item` again, for the contact it names.
    pub(super) fn forward(&mut self, item: crate::store::WorkItem) {
        self.commit.forwards.push(item);
    }

    /// The inbox item is consumed when the batch commits.
    /// List `event` among the contact's events.
    pub(super) fn saw(&mut self, contact_id: &str, event: &Event) {
        self.commit
            .seen
            .push((contact_id.to_owned(), event.timestamp, event.id.clone()));
    }

    /// Erase the contact when the batch commits, whatever else the batch did for it.
    pub(super) fn erase(&mut self, erasure: Erasure) {
        self.commit.erasures.push(erasure);
    }

    /// The inbox record `key` is consumed with the batch. A bundle's items share their key
    /// and come one after another: it is noted once.
    pub(super) fn done(&mut self, key: &WorkKey) {
        if self.commit.done.last() != Some(key) {
            self.commit.done.push(key.clone());
        }
    }

    /// Everything, ready to write.
    pub(super) fn into_commit(
        mut self,
        enrollments: Vec<Enrollment>,
        contact_journeys: Vec<ContactJourney>,
        kv: Vec<KvWrite>,
    ) -> Commit {
        self.commit.contact_effects = self.effects.into_iter().collect();
        self.commit.enrollments = enrollments;
        self.commit.contact_journeys = contact_journeys;
        self.commit.kv = kv;
        self.commit
    }
}
