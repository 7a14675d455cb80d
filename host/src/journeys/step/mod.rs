//! Running journey work: a batch of inbox items for contacts of the worker's partitions becomes
//! one [`Commit`](crate::store::Commit). Plugins are called while the batch is built; nothing is
//! written until the whole batch commits, so a crash at any moment leaves the items in the inbox
//! to run again.
//!
//! - this module: the batch, and what each kind of inbox item starts;
//! - `lifecycle`: an enrollment's way through a journey, state by state;
//! - `nodes`: what each kind of node does;
//! - `reads`, `commit`: what the batch read and what it will write;
//! - `trace`: what a simulation sees.

mod audiences;
mod commit;
mod lifecycle;
mod nodes;
mod reads;
mod scoring;
mod stages;
mod trace;

use std::borrow::Cow;
use std::sync::Arc;

pub use lifecycle::MAX_ATTEMPTS;
pub use nodes::split_path;
pub use trace::TraceStep;

use super::Journeys;
use crate::model::{Contact, Event, Millis, PreparedConfig};
use crate::plugin_kv::StepKv;
use crate::runtime::Runtime;
use crate::standing::Standing;
use crate::store::{Commit, Erasure, State, StoreError, WorkItem, WorkKey};
use commit::Changes;
use lifecycle::Start;
use reads::Reads;
use trace::Trace;

/// One batch of work being built.
pub(super) struct Batch<'a> {
    journeys: &'a Journeys,
    runtime: Runtime,
    kv: Arc<StepKv>,
    now: Millis,
    reads: Reads<'a>,
    changes: Changes,
    trace: Trace,
    /// Contacts to look at again for segments and tags once the steps are done, with how
    /// deep in a chain of emitted events the work that touched them came.
    touched: std::collections::BTreeMap<String, u32>,
    /// Contacts' window times with the batch's events added, until they are looked at.
    noted: std::collections::HashMap<String, crate::model::Audience>,
}

impl<'a> Batch<'a> {
    pub(super) fn new(journeys: &'a Journeys, trace: bool) -> Self {
        let kv = Arc::new(StepKv::new(journeys.store.clone()));
        let now = journeys.clock.now();
        Batch {
            runtime: journeys
                .runtime
                .with_env(journeys.clock.clone(), kv.clone()),
            journeys,
            kv,
            now,
            reads: Reads::new(journeys.store.as_ref()),
            changes: Changes::new(now),
            trace: Trace::kept(trace),
            touched: Default::default(),
            noted: Default::default(),
        }
    }

    /// `contact` as the plugin of `config` sees it: with its standing (each model's points as
    /// of now, its segments) when the config reads it (see [`crate::standing::read_by`]).
    fn seen_by<'c>(&self, contact: &'c Contact, config: &PreparedConfig) -> Cow<'c, Contact> {
        if !crate::standing::read_by(config) {
            return Cow::Borrowed(contact);
        }
        let (scoring, audiences) = (&self.journeys.scoring, &self.journeys.audiences);
        let standing = Standing::of(contact.clone(), self.now, scoring, audiences);
        Cow::Owned(standing.for_plugin(scoring))
    }

    /// Work on one inbox item; it is consumed when the batch commits.
    pub(super) fn handle(&mut self, key: &WorkKey, item: &WorkItem) -> Result<(), StoreError> {
        self.changes.done(key);
        // Work for a contact merged into another goes on as that one's, in its partition (a
        // merge done already is not done again).
        if self.reads.contact(item.contact_id())?.is_none()
            && !matches!(item, WorkItem::Merge { .. })
            && let Some(into) = self.journeys.store.alias(item.contact_id())?
        {
            self.changes.forward(item.for_contact(&into));
            return Ok(());
        }
        match item {
            WorkItem::Event {
                event: Some(event), ..
            } => self.touch(item.contact_id(), event.depth),
            WorkItem::Erase { .. } | WorkItem::Merge { .. } => {}
            _ => self.touch(item.contact_id(), 0),
        }
        match item {
            WorkItem::Event {
                contact_id,
                event_id,
                event,
            } => {
                if let Some(event) = event {
                    self.reads.remember(Arc::new(event.clone()));
                }
                self.on_event(contact_id, event_id)?
            }
            WorkItem::Enroll {
                contact_id,
                journey_id,
                request_id,
            } => self.on_enroll(contact_id, journey_id, request_id)?,
            WorkItem::Wake {
                contact_id,
                enrollment_id,
                due_at,
            } => match crate::scoring::timer_model(enrollment_id) {
                Some(model) => self.on_score_timer(contact_id, model, *due_at)?,
                None if crate::lifecycle::is_stage_timer(enrollment_id) => {
                    self.on_stage_timer(contact_id, *due_at)?
                }
                None if crate::audiences::is_audience_timer(enrollment_id) => {
                    self.on_audience_timer(contact_id)
                }
                None => self.on_wake(enrollment_id, *due_at)?,
            },
            WorkItem::Retry { enrollment_id, .. } => self.on_retry(enrollment_id)?,
            // Segments and tags are looked at with the batch's other contacts (`touch` above).
            WorkItem::Refresh { contact_id } => self.restage(contact_id)?,
            WorkItem::Erase {
                contact_id,
                actor,
                reference,
                requested_at,
            } => self.changes.erase(Erasure {
                contact_id: contact_id.clone(),
                actor: actor.clone(),
                reference: reference.clone(),
                requested_at: *requested_at,
            }),
            // Merged at commit, after the batch's other work for the contact.
            WorkItem::Merge { contact_id, into } => {
                if contact_id != into && self.reads.contact(contact_id)?.is_some() {
                    self.changes.merge(contact_id, into);
                }
            }
        }
        Ok(())
    }

    /// Everything the batch did, ready to write, once the contacts it touched have been
    /// looked at again for their segments and tags.
    ///
    /// Events the batch's work emitted (a segment entered, a threshold crossed, a stage
    /// moved, an action's event) run here, in the same commit, rather than through the inbox:
    /// each is recorded and listed like an ingested one, and what it starts is written with
    /// the work that caused it.
    pub(super) fn into_commit(mut self) -> Result<(Commit, Option<Vec<TraceStep>>), StoreError> {
        self.settle_audiences()?;
        loop {
            let emitted = self.changes.take_emitted();
            if emitted.is_empty() {
                break;
            }
            for event in emitted {
                self.on_emitted(event)?;
            }
            self.settle_audiences()?;
        }
        let (enrollments, journeys) = self.reads.into_changed();
        let commit = self
            .changes
            .into_commit(enrollments, journeys, self.kv.take());
        Ok((commit, self.trace.into_steps()))
    }

    /// An event arrived: goals and waits of the journeys the contact is in look at it first
    /// (so an event that enrolls a contact does not also end the wait it just began), then the
    /// triggers of the journeys that enroll.
    fn on_event(&mut self, contact_id: &str, event_id: &str) -> Result<(), StoreError> {
        let (Some(event), Some(_)) = (self.reads.event(event_id)?, self.reads.contact(contact_id)?)
        else {
            return Ok(());
        };
        self.changes.saw(contact_id, &event);
        self.note_event(contact_id, &event)?;
        self.score(contact_id, &event)?;
        self.track_stage(contact_id, &event)?;
        let active: Vec<String> = self
            .reads
            .journeys_of(contact_id)?
            .values()
            .flat_map(|record| record.active.clone())
            .collect();
        for enrollment_id in active {
            let Some(mut enrollment) = self.reads.enrollment(&enrollment_id)? else {
                continue;
            };
            let Some(journey) = self.runnable(&mut enrollment)? else {
                continue;
            };
            let entered = !matches!(enrollment.state, State::Pending { .. });
            if entered
                && journey
                    .definition
                    .goals
                    .iter()
                    .any(|g| g.event == event.name)
            {
                self.convert(&journey, enrollment, &event.name)?;
                continue;
            }
            let awaited = matches!(&enrollment.state,
                State::Waiting { event: Some(name), .. } if *name == event.name);
            if awaited {
                enrollment.event_id = Some(event.id.clone());
                self.advance(&journey, enrollment, Start::Leave(Some("event".into())))?;
            }
        }
        for journey in self.journeys.catalog.active() {
            self.offer(&journey, contact_id, &event)?;
        }
        Ok(())
    }

    /// An event the batch emitted, run as if it had come through the inbox next. One the
    /// store holds already (a step run again) has run before.
    fn on_emitted(&mut self, event: Event) -> Result<(), StoreError> {
        if self.reads.event(&event.id)?.is_some() {
            return Ok(());
        }
        self.changes.record(event.clone());
        let (contact_id, event_id) = (event.contact_id.clone(), event.id.clone());
        self.touch(&contact_id, event.depth);
        self.reads.remember(Arc::new(event));
        self.on_event(&contact_id, &event_id)
    }

    /// Enroll the contact now (API call, or a backfill), at the journey's first entry node. A
    /// backfill enrolls only who is still in its segment when their turn comes.
    fn on_enroll(
        &mut self,
        contact_id: &str,
        journey_id: &str,
        request_id: &str,
    ) -> Result<(), StoreError> {
        let Some(journey) = self.journeys.catalog.active_journey(journey_id) else {
            tracing::info!(
                journey = journey_id,
                contact = contact_id,
                "enrollment request for a journey that is not active; skipped"
            );
            return Ok(());
        };
        let Some(contact) = self.reads.contact(contact_id)? else {
            return Ok(());
        };
        if let Some(backfill) = &journey.definition.backfill
            && request_id.starts_with("backfill:")
            && !(contact.audience.as_ref())
                .is_some_and(|a| a.segments.contains_key(&backfill.segment))
        {
            return Ok(());
        }
        let Some(entry) = journey.definition.entries().next().map(|n| n.id.clone()) else {
            return Ok(());
        };
        self.enroll(&journey, &entry, contact_id, None)
    }

    /// An enrollment's timer fired: its wait ends, its retry is due, or its trigger is asked
    /// again. A timer the enrollment has moved past (the awaited event came first) is stale.
    fn on_wake(&mut self, enrollment_id: &str, due_at: Millis) -> Result<(), StoreError> {
        let Some(mut enrollment) = self.reads.enrollment(enrollment_id)? else {
            return Ok(());
        };
        if enrollment.state.due_at() != Some(due_at) {
            return Ok(());
        }
        let Some(journey) = self.runnable(&mut enrollment)? else {
            return Ok(());
        };
        match &enrollment.state {
            State::Waiting { event, .. } => {
                let label = event.as_ref().map(|_| "timeout".to_owned());
                self.advance(&journey, enrollment, Start::Leave(label))
            }
            State::Retrying { attempts, .. } => {
                let attempts = *attempts;
                self.advance(&journey, enrollment, Start::Again(attempts))
            }
            State::Pending { .. } => self.ask_trigger_again(&journey, enrollment),
            State::Running | State::Parked { .. } | State::Done { .. } => Ok(()),
        }
    }

    /// Run a parked enrollment's node again (an operator fixed what made it fail).
    fn on_retry(&mut self, enrollment_id: &str) -> Result<(), StoreError> {
        let Some(mut enrollment) = self.reads.enrollment(enrollment_id)? else {
            return Ok(());
        };
        if !matches!(enrollment.state, State::Parked { .. }) {
            return Ok(());
        }
        let Some(journey) = self.runnable(&mut enrollment)? else {
            return Ok(());
        };
        self.advance(&journey, enrollment, Start::Again(0))
    }
}
