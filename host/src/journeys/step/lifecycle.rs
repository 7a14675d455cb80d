//! An enrollment's way through a journey: entering (or not) by the journey's re-entry rule,
//! moving node by node until it waits, fails or leaves, and each change of state with the
//! counters and timers that go with it.
//!
//! ```text
//! (event) ─ trigger fails ─▶ Pending ─ asked again: yes ─▶ Running ─▶ Waiting ─▶ Running …
//!    │                          └─ no / attempts spent ─▶ Done     │  ▲
//!    └─ trigger says yes ─▶ Running ─ a plugin fails ─▶ Retrying ──┘  │
//!                              │          └─ attempts spent ─▶ Parked ┘ (retried by hand)
//!                              └─ exit / end of path / goal / archived ─▶ Done
//! ```

use std::sync::Arc;

use super::super::compiled::CompiledJourney;
use super::super::definition::{NodeKind, Reentry};
use super::Batch;
use super::nodes::{Failure, Flow};
use crate::model::{Event, Millis};
use crate::store::{
    Enrollment, MAX_ACTIVE_ENROLLMENTS, Outcome, RECENT_ENROLLMENTS, State, StoreError,
};

/// Most nodes one contact passes in one step before it is parked: only a loop without a wait
/// that holds gets near it, and publishing refuses those.
const MAX_NODES_PER_STEP: usize = 100;

/// Failed attempts at a node before the enrollment is parked.
pub const MAX_ATTEMPTS: u32 = 5;

/// Wait before attempt `n + 1` after `n` failures: 1 s, 10 s, 1 min, 10 min.
fn backoff(failures: u32) -> Millis {
    const STEPS: [Millis; 4] = [1_000, 10_000, 60_000, 600_000];
    STEPS[(failures.max(1) as usize - 1).min(STEPS.len() - 1)]
}

/// Where to start when advancing an enrollment.
pub(super) enum Start {
    /// Run the node the enrollment is at, after this many failed attempts at it.
    Again(u32),
    /// Leave the node it is waiting at, by this way out.
    Leave(Option<String>),
}

impl Batch<'_> {
    /// The journey version an active enrollment runs on; `None` (and the enrollment ended or
    /// parked, saying why) when the journey was archived or the version cannot run.
    pub(super) fn runnable(
        &mut self,
        enrollment: &mut Enrollment,
    ) -> Result<Option<Arc<CompiledJourney>>, StoreError> {
        if !enrollment.state.is_active() {
            return Ok(None);
        }
        let catalog = &self.journeys.catalog;
        let version = catalog.version(&enrollment.journey_id, enrollment.version);
        if catalog.is_archived(&enrollment.journey_id) {
            let mut ended = enrollment.clone();
            if let Ok(journey) = &version {
                self.leave_wait(journey, &mut ended);
            }
            self.done(
                version.as_ref().ok().map(Arc::as_ref),
                &mut ended,
                Outcome::Exited,
                "journey archived",
            );
            self.reads.save(ended)?;
            return Ok(None);
        }
        match version {
            Ok(journey) => Ok(Some(journey)),
            Err(error) => {
                // Say so on the enrollment rather than drop the work: once the plugin it needs
                // is loaded again, the enrollment can be looked at and moved on.
                tracing::error!(journey = %enrollment.journey_id, version = enrollment.version, %error, "journey version cannot run; enrollment parked");
                let mut parked = enrollment.clone();
                parked.state = State::Parked {
                    attempts: 0,
                    error: format!("the journey version cannot run: {error}"),
                };
                parked.updated_at = self.now;
                self.reads.save(parked)?;
                Ok(None)
            }
        }
    }

    /// Whether the journey's re-entry rule lets the contact in now. A pending enrollment (its
    /// trigger not yet answered) counts as being in the journey, not as having entered it.
    fn may_enter(
        &mut self,
        journey: &CompiledJourney,
        contact_id: &str,
    ) -> Result<bool, StoreError> {
        let now = self.now;
        let Some(record) = self.reads.journeys_of(contact_id)?.get(&journey.journey_id) else {
            return Ok(true);
        };
        Ok(match journey.definition.reentry {
            Reentry::Once => record.entries == 0 && record.active.is_empty(),
            Reentry::After(cooldown) => {
                record.active.is_empty()
                    && (record.entries == 0
                        || now.saturating_sub(record.last_entered_at) >= cooldown)
            }
            Reentry::Concurrent => record.active.len() < MAX_ACTIVE_ENROLLMENTS,
        })
    }

    /// Offer an event to a journey's triggers: the first entry whose trigger matches enrolls
    /// the contact; one whose trigger fails enrolls it pending the trigger's answer.
    pub(super) fn offer(
        &mut self,
        journey: &Arc<CompiledJourney>,
        contact_id: &str,
        event: &Arc<Event>,
    ) -> Result<(), StoreError> {
        // No need to ask the trigger about a contact the journey would not let in.
        if !self.may_enter(journey, contact_id)? {
            return Ok(());
        }
        for entry in journey.definition.entries() {
            let Some(trigger) = journey.plugins.get(&entry.id) else {
                continue;
            };
            let Some(contact) = self.reads.contact(contact_id)? else {
                return Ok(());
            };
            let seen = self.seen_by(&contact, &trigger.config);
            let report = (self.runtime).matches(&trigger.plugin, &trigger.config, event, &seen);
            self.trace.node(
                self.now,
                journey,
                &entry.id,
                "entry",
                &contact,
                Some(event),
                || match &report.result {
                    Ok(matched) => serde_json::json!({"matched": matched}),
                    Err(error) => serde_json::json!({"error": error.to_string()}),
                },
            );
            match report.result {
                Ok(true) => return self.enroll(journey, &entry.id, contact_id, Some(event)),
                Ok(false) => {}
                Err(error) => {
                    let error = format!("trigger plugin `{}`: {error}", trigger.plugin.id());
                    return self.enroll_pending(journey, &entry.id, contact_id, event, error);
                }
            }
        }
        Ok(())
    }

    /// A new enrollment at `entry`, in the contact's journey record as active and recent.
    fn new_enrollment(
        &mut self,
        journey: &CompiledJourney,
        entry: &str,
        contact_id: &str,
        event: Option<&Arc<Event>>,
        state: State,
    ) -> Result<Enrollment, StoreError> {
        let id = new_enrollment_id();
        let record = self.reads.journey_record(contact_id, &journey.journey_id)?;
        record.active.push(id.clone());
        record.recent.push(id.clone());
        if record.recent.len() > RECENT_ENROLLMENTS {
            record.recent.remove(0);
        }
        if let Some(event) = event {
            self.reads.remember(event.clone());
        }
        Ok(Enrollment {
            id,
            contact_id: contact_id.to_owned(),
            journey_id: journey.journey_id.clone(),
            version: journey.version,
            node: entry.to_owned(),
            state,
            entered_at: self.now,
            updated_at: self.now,
            event_id: event.map(|e| e.id.clone()),
            history: Vec::new(),
            history_dropped: 0,
        })
    }

    /// Count the enrollment as an entry: for re-entry and in the entry node's counter.
    fn entered(
        &mut self,
        journey: &CompiledJourney,
        enrollment: &Enrollment,
    ) -> Result<(), StoreError> {
        let record = self
            .reads
            .journey_record(&enrollment.contact_id, &journey.journey_id)?;
        record.entries += 1;
        record.last_entered_at = self.now;
        self.changes.count(journey, &enrollment.node, "entered", 1);
        Ok(())
    }

    /// Enroll the contact at `entry` now, if the re-entry rule lets it in.
    pub(super) fn enroll(
        &mut self,
        journey: &Arc<CompiledJourney>,
        entry: &str,
        contact_id: &str,
        event: Option<&Arc<Event>>,
    ) -> Result<(), StoreError> {
        if !self.may_enter(journey, contact_id)? {
            return Ok(());
        }
        let enrollment = self.new_enrollment(journey, entry, contact_id, event, State::Running)?;
        self.entered(journey, &enrollment)?;
        self.advance(journey, enrollment, Start::Leave(None))
    }

    /// The trigger failed on this event: hold a place until it answers.
    fn enroll_pending(
        &mut self,
        journey: &Arc<CompiledJourney>,
        entry: &str,
        contact_id: &str,
        event: &Arc<Event>,
        error: String,
    ) -> Result<(), StoreError> {
        let mut enrollment =
            self.new_enrollment(journey, entry, contact_id, Some(event), State::Running)?;
        self.pending(journey, &mut enrollment, 1, error);
        self.reads.save(enrollment)
    }

    /// Ask the trigger of a pending enrollment again about its event.
    pub(super) fn ask_trigger_again(
        &mut self,
        journey: &Arc<CompiledJourney>,
        mut enrollment: Enrollment,
    ) -> Result<(), StoreError> {
        let State::Pending { attempts, .. } = enrollment.state else {
            return Ok(());
        };
        let event = match &enrollment.event_id {
            Some(id) => self.reads.event(id)?,
            None => None,
        };
        let (Some(trigger), Some(event), Some(contact)) = (
            journey.plugins.get(&enrollment.node),
            event,
            self.reads.contact(&enrollment.contact_id)?,
        ) else {
            self.done(
                Some(journey),
                &mut enrollment,
                Outcome::Exited,
                "the trigger's event or contact is gone",
            );
            return self.reads.save(enrollment);
        };
        let seen = self.seen_by(&contact, &trigger.config);
        let report = (self.runtime).matches(&trigger.plugin, &trigger.config, &event, &seen);
        match report.result {
            Ok(true) => {
                enrollment.state = State::Running;
                self.entered(journey, &enrollment)?;
                self.advance(journey, enrollment, Start::Leave(None))
            }
            Ok(false) => {
                self.done(
                    Some(journey),
                    &mut enrollment,
                    Outcome::Exited,
                    "trigger did not match",
                );
                self.reads.save(enrollment)
            }
            Err(error) => {
                let error = format!("trigger plugin `{}`: {error}", trigger.plugin.id());
                if attempts + 1 >= MAX_ATTEMPTS {
                    // Whether the event enrolls the contact stays unknown: it does not, and a
                    // later event may.
                    self.changes.count(journey, &enrollment.node, "failed", 1);
                    let reason = format!("the trigger failed {MAX_ATTEMPTS} times: {error}");
                    self.done(Some(journey), &mut enrollment, Outcome::Exited, &reason);
                } else {
                    self.pending(journey, &mut enrollment, attempts + 1, error);
                }
                self.reads.save(enrollment)
            }
        }
    }

    fn pending(
        &mut self,
        journey: &CompiledJourney,
        enrollment: &mut Enrollment,
        attempts: u32,
        error: String,
    ) {
        let due_at = self.now.saturating_add(backoff(attempts));
        tracing::warn!(enrollment = %enrollment.id, journey = %journey.journey_id, attempt = attempts, %error, "trigger failed; will ask again");
        self.changes.count(journey, &enrollment.node, "retried", 1);
        self.changes.set_timer(due_at, enrollment);
        enrollment.state = State::Pending {
            due_at,
            attempts,
            error,
        };
        enrollment.updated_at = self.now;
    }

    /// A goal event: the enrollment ends as a conversion, wherever it is.
    pub(super) fn convert(
        &mut self,
        journey: &CompiledJourney,
        mut enrollment: Enrollment,
        goal: &str,
    ) -> Result<(), StoreError> {
        self.leave_wait(journey, &mut enrollment);
        self.done(
            Some(journey),
            &mut enrollment,
            Outcome::Converted,
            &format!("goal: {goal}"),
        );
        self.reads.save(enrollment)
    }

    /// Move an enrollment through nodes until it waits, leaves, or fails.
    pub(super) fn advance(
        &mut self,
        journey: &Arc<CompiledJourney>,
        mut enrollment: Enrollment,
        start: Start,
    ) -> Result<(), StoreError> {
        let mut start = Some(start);
        let mut attempts = 0;
        for _ in 0..MAX_NODES_PER_STEP {
            let flow = match start.take() {
                Some(Start::Leave(label)) => {
                    self.leave_wait(journey, &mut enrollment);
                    Ok(Flow::Next(label))
                }
                Some(Start::Again(failed)) => {
                    attempts = failed;
                    enrollment.state = State::Running;
                    self.run_node(journey, &mut enrollment)?
                }
                None => {
                    attempts = 0;
                    self.run_node(journey, &mut enrollment)?
                }
            };
            let node = enrollment.node.clone();
            match flow {
                Err(Failure::Retry(error)) => {
                    self.fail(journey, &mut enrollment, attempts + 1, error);
                    break;
                }
                Err(Failure::Refuse(error)) => {
                    self.park(journey, &mut enrollment, attempts, error);
                    break;
                }
                Ok(Flow::Hold { due_at, event }) => {
                    self.changes.set_timer(due_at, &enrollment);
                    self.changes.count(journey, &node, "waiting", 1);
                    enrollment.state = State::Waiting { due_at, event };
                    enrollment.updated_at = self.now;
                    break;
                }
                Ok(Flow::Exit(outcome, reason)) => {
                    self.pass(journey, &mut enrollment, None);
                    self.done(Some(journey), &mut enrollment, outcome, reason);
                    break;
                }
                Ok(Flow::Next(label)) => {
                    self.pass(journey, &mut enrollment, label.clone());
                    match journey.definition.next(&node, label.as_deref()) {
                        Some(next) => {
                            enrollment.node = next.to_owned();
                            self.changes.count(journey, next, "entered", 1);
                        }
                        None if label.is_some()
                            && !matches!(
                                journey.definition.node(&node).map(|n| &n.kind),
                                Some(NodeKind::Wait(_))
                            ) =>
                        {
                            let error = format!(
                                "the node returned branch `{}`, which has no edge and there is no edge without a label",
                                label.unwrap_or_default()
                            );
                            self.park(journey, &mut enrollment, 0, error);
                            break;
                        }
                        None => {
                            self.done(
                                Some(journey),
                                &mut enrollment,
                                Outcome::Completed,
                                "end of journey",
                            );
                            break;
                        }
                    }
                }
            }
        }
        if enrollment.state == State::Running {
            let error = format!("passed {MAX_NODES_PER_STEP} nodes in one step without a wait");
            self.park(journey, &mut enrollment, 0, error);
        }
        self.reads.save(enrollment)
    }

    /// Record that the enrollment passed its node by `label`.
    fn pass(
        &mut self,
        journey: &CompiledJourney,
        enrollment: &mut Enrollment,
        label: Option<String>,
    ) {
        let metric = match &label {
            Some(label) => format!("passed:{label}"),
            None => "passed".to_owned(),
        };
        self.changes.count(journey, &enrollment.node, &metric, 1);
        enrollment.passed(label, self.now);
    }

    /// Leave the wait the enrollment is in, if any: its timer goes, its gauge drops.
    pub(super) fn leave_wait(&mut self, journey: &CompiledJourney, enrollment: &mut Enrollment) {
        if let Some(due_at) = enrollment.state.due_at() {
            self.changes.clear_timer(due_at, &enrollment.id);
            if matches!(enrollment.state, State::Waiting { .. }) {
                self.changes.count(journey, &enrollment.node, "waiting", -1);
            }
        }
        enrollment.state = State::Running;
    }

    /// Out of the journey, counted at its node (under the outcome's metric) when it had
    /// entered (a pending enrollment had not) and its journey version is known.
    fn done(
        &mut self,
        journey: Option<&CompiledJourney>,
        enrollment: &mut Enrollment,
        outcome: Outcome,
        reason: &str,
    ) {
        let entered = !matches!(enrollment.state, State::Pending { .. });
        if let Some(journey) = journey.filter(|_| entered) {
            let metric = match outcome {
                Outcome::Completed => "completed",
                Outcome::Converted => "converted",
                Outcome::Exited => "exited",
            };
            self.changes.count(journey, &enrollment.node, metric, 1);
        }
        enrollment.state = State::Done {
            outcome,
            reason: reason.to_owned(),
        };
        enrollment.updated_at = self.now;
    }

    /// The node failed for the `attempts`th time: try again later, or park once the attempts
    /// are spent.
    fn fail(
        &mut self,
        journey: &CompiledJourney,
        enrollment: &mut Enrollment,
        attempts: u32,
        error: String,
    ) {
        if attempts >= MAX_ATTEMPTS {
            self.park(journey, enrollment, attempts, error);
            return;
        }
        let due_at = self.now.saturating_add(backoff(attempts));
        tracing::warn!(enrollment = %enrollment.id, node = %enrollment.node, attempt = attempts, %error, "step failed; will retry");
        self.changes.count(journey, &enrollment.node, "retried", 1);
        self.changes.set_timer(due_at, enrollment);
        enrollment.state = State::Retrying {
            due_at,
            attempts,
            error,
        };
        enrollment.updated_at = self.now;
    }

    /// Hold the enrollment at its node with the error, until someone looks.
    fn park(
        &mut self,
        journey: &CompiledJourney,
        enrollment: &mut Enrollment,
        attempts: u32,
        error: String,
    ) {
        tracing::error!(enrollment = %enrollment.id, node = %enrollment.node, %error, "enrollment parked");
        self.changes.count(journey, &enrollment.node, "failed", 1);
        enrollment.state = State::Parked { attempts, error };
        enrollment.updated_at = self.now;
    }
}

/// Ids that sort by creation: a backfill of a large segment appends its enrollments at the end
/// of the tree instead of into random pages (see [`crate::ids`]).
fn new_enrollment_id() -> String {
    crate::ids::time_ordered("en_")
}
