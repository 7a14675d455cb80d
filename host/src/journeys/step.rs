//! Running journey work: a batch of inbox items for contacts of one partition becomes one
//! [`Commit`]. Plugins are called while the batch is built; nothing is written until the whole
//! batch commits, so a crash at any moment leaves the items in the inbox to run again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::Journeys;
use super::compiled::CompiledJourney;
use super::definition::{NodeKind, Reentry};
use crate::model::{Contact, Effect, Event, Millis};
use crate::plugin_kv::StepKv;
use crate::runtime::Runtime;
use crate::store::{
    Commit, ContactJourney, Enrollment, EnrollmentState, OutboxMessage, Passed, RECENT_ENROLLMENTS,
    StoreError, Waiting, WorkItem, WorkKey,
};

/// Most nodes one contact passes in one step before it is parked: only a loop without a wait
/// gets near it, and publishing refuses those.
const MAX_NODES_PER_STEP: usize = 100;
/// Failed attempts at a node before the enrollment is parked.
pub const MAX_ATTEMPTS: u32 = 5;

/// Wait before attempt `n + 1` after `n` failures: 1 s, 10 s, 1 min, 10 min.
fn backoff(failures: u32) -> Millis {
    const STEPS: [Millis; 4] = [1_000, 10_000, 60_000, 600_000];
    STEPS[(failures.max(1) as usize - 1).min(STEPS.len() - 1)]
}

/// What a simulation sees of one node a contact passed.
#[derive(Debug, Clone, Serialize)]
pub struct TraceStep {
    #[serde(with = "crate::model::timestamp_json")]
    pub at: Millis,
    pub journey_id: String,
    pub node: String,
    pub kind: &'static str,
    /// What the node saw: the contact as it was, and the event that brought it here.
    pub input: serde_json::Value,
    /// What it did: the branch taken, the effects, how long it holds the contact, the error.
    pub output: serde_json::Value,
}

/// How a node let the contact go.
enum Flow {
    /// On to the edge with this label (or the unlabelled one).
    Next(Option<String>),
    /// Held until the timer or the event.
    Hold(Waiting),
    /// Out of the journey, in this state, for this reason, counted under this metric.
    Exit(EnrollmentState, &'static str, &'static str),
}

/// Where to start when advancing an enrollment.
enum Start {
    /// Run the node the enrollment is at.
    Run,
    /// Leave the node it is waiting at, by this way out.
    Leave(Option<String>),
}

/// One batch of work being built.
pub(super) struct Batch<'a> {
    journeys: &'a Journeys,
    runtime: Runtime,
    kv: Arc<StepKv>,
    now: Millis,
    contacts: HashMap<String, Option<Arc<Contact>>>,
    effects: HashMap<String, Vec<Effect>>,
    contact_journeys: HashMap<String, HashMap<String, ContactJourney>>,
    changed_contact_journeys: BTreeSet<(String, String)>,
    enrollments: HashMap<String, Enrollment>,
    changed_enrollments: BTreeSet<String>,
    events: HashMap<String, Option<Arc<Event>>>,
    commit: Commit,
    pub(super) trace: Option<Vec<TraceStep>>,
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
            contacts: HashMap::new(),
            effects: HashMap::new(),
            contact_journeys: HashMap::new(),
            changed_contact_journeys: BTreeSet::new(),
            enrollments: HashMap::new(),
            changed_enrollments: BTreeSet::new(),
            events: HashMap::new(),
            commit: Commit {
                now,
                ..Commit::default()
            },
            trace: trace.then(Vec::new),
        }
    }

    /// Work on one inbox item; it is consumed when the batch commits.
    pub(super) fn handle(&mut self, key: &WorkKey, item: &WorkItem) -> Result<(), StoreError> {
        match item {
            WorkItem::Event {
                contact_id,
                event_id,
                event,
            } => {
                if let Some(event) = event {
                    self.events
                        .insert(event_id.clone(), Some(Arc::new(event.clone())));
                }
                self.on_event(contact_id, event_id)?
            }
            WorkItem::Enroll {
                contact_id,
                journey_id,
                ..
            } => self.on_enroll(contact_id, journey_id)?,
            WorkItem::Wake {
                enrollment_id,
                due_at,
                ..
            } => self.on_wake(enrollment_id, *due_at)?,
            WorkItem::Retry { enrollment_id, .. } => self.on_retry(enrollment_id)?,
        }
        self.commit.done.push(key.clone());
        Ok(())
    }

    /// Everything the batch did, ready to write.
    pub(super) fn into_commit(mut self) -> (Commit, Option<Vec<TraceStep>>) {
        self.commit.contact_effects = self.effects.into_iter().collect();
        self.commit.enrollments = self
            .changed_enrollments
            .iter()
            .filter_map(|id| self.enrollments.remove(id))
            .collect();
        self.commit.contact_journeys = self
            .changed_contact_journeys
            .iter()
            .filter_map(|(contact, journey)| {
                self.contact_journeys
                    .get_mut(contact)
                    .and_then(|all| all.remove(journey))
            })
            .collect();
        self.commit.kv = self.kv.take();
        (self.commit, self.trace)
    }

    fn contact(&mut self, id: &str) -> Result<Option<Arc<Contact>>, StoreError> {
        if !self.contacts.contains_key(id) {
            self.load_contact(id)?;
        }
        Ok(self.contacts[id].clone())
    }

    /// Read a contact and its journeys, which the store keeps together. Whichever of the two
    /// the batch already holds is kept: the batch may have changed it.
    fn load_contact(&mut self, id: &str) -> Result<(), StoreError> {
        let (contact, journeys) = match self.journeys.store.contact_with_journeys(id)? {
            Some((contact, journeys)) => (Some(Arc::new(contact)), journeys),
            None => (None, Vec::new()),
        };
        self.contacts.entry(id.to_owned()).or_insert(contact);
        self.contact_journeys
            .entry(id.to_owned())
            .or_insert_with(|| {
                journeys
                    .into_iter()
                    .map(|record| (record.journey_id.clone(), record))
                    .collect()
            });
        Ok(())
    }

    fn event(&mut self, id: &str) -> Result<Option<Arc<Event>>, StoreError> {
        if !self.events.contains_key(id) {
            let found = self.journeys.store.event(id)?.map(Arc::new);
            self.events.insert(id.to_owned(), found);
        }
        Ok(self.events[id].clone())
    }

    fn journeys_of(
        &mut self,
        contact_id: &str,
    ) -> Result<&mut HashMap<String, ContactJourney>, StoreError> {
        if !self.contact_journeys.contains_key(contact_id) {
            self.load_contact(contact_id)?;
        }
        Ok(self.contact_journeys.get_mut(contact_id).expect("loaded"))
    }

    fn enrollment(&mut self, id: &str) -> Result<Option<Enrollment>, StoreError> {
        if let Some(found) = self.enrollments.get(id) {
            return Ok(Some(found.clone()));
        }
        let found = self.journeys.store.enrollment(id)?;
        if let Some(found) = &found {
            self.enrollments.insert(id.to_owned(), found.clone());
        }
        Ok(found)
    }

    /// Keep the enrollment's new state for the commit; one that left the journey no longer
    /// counts as active for its contact (re-entry rules read that list).
    fn save(&mut self, enrollment: Enrollment) -> Result<(), StoreError> {
        if !enrollment.state.is_active() {
            let (contact, journey) = (enrollment.contact_id.clone(), enrollment.journey_id.clone());
            if let Some(cj) = self.journeys_of(&contact)?.get_mut(&journey)
                && cj.active.contains(&enrollment.id)
            {
                cj.active.retain(|id| *id != enrollment.id);
                self.changed_contact_journeys.insert((contact, journey));
            }
        }
        self.changed_enrollments.insert(enrollment.id.clone());
        self.enrollments.insert(enrollment.id.clone(), enrollment);
        Ok(())
    }

    fn on_event(&mut self, contact_id: &str, event_id: &str) -> Result<(), StoreError> {
        let (Some(event), Some(_)) = (self.event(event_id)?, self.contact(contact_id)?) else {
            return Ok(());
        };
        // Goals and waits first, so an event that enrolls a contact does not also end the
        // wait it just began.
        let active: Vec<String> = self
            .journeys_of(contact_id)?
            .values()
            .flat_map(|cj| cj.active.clone())
            .collect();
        for enrollment_id in active {
            let Some(mut enrollment) = self.enrollment(&enrollment_id)? else {
                continue;
            };
            let Some(journey) = self.runnable(&mut enrollment)? else {
                continue;
            };
            if journey
                .definition
                .goals
                .iter()
                .any(|g| g.event == event.name)
            {
                self.clear_wait(&journey, &mut enrollment);
                self.finish(
                    &mut enrollment,
                    EnrollmentState::Converted,
                    &format!("goal: {}", event.name),
                    "converted",
                );
                self.save(enrollment)?;
                continue;
            }
            let waits_for_this = enrollment.state == EnrollmentState::Waiting
                && enrollment.waiting.as_ref().and_then(|w| w.event.as_deref())
                    == Some(event.name.as_str());
            if waits_for_this {
                enrollment.event_id = Some(event.id.clone());
                self.events.insert(event.id.clone(), Some(event.clone()));
                self.advance(&journey, enrollment, Start::Leave(Some("event".into())))?;
            }
        }
        for journey in self.journeys.catalog.active() {
            // No need to ask the trigger about a contact the journey would not let in.
            if !self.may_enter(&journey, contact_id)? {
                continue;
            }
            for entry in journey.definition.entries() {
                let Some(trigger) = journey.plugins.get(&entry.id) else {
                    continue;
                };
                let Some(contact) = self.contact(contact_id)? else {
                    return Ok(());
                };
                let report =
                    self.runtime
                        .matches(&trigger.plugin, &trigger.config, &event, &contact);
                self.trace_node(&journey, &entry.id, "entry", &contact, Some(&event), || {
                    match &report.result {
                        Ok(matched) => serde_json::json!({"matched": matched}),
                        Err(error) => serde_json::json!({"error": error.to_string()}),
                    }
                });
                match report.result {
                    Ok(true) => {
                        self.enroll(&journey, &entry.id, contact_id, Some(&event), None)?;
                        break;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        // Whether the event matches is unknown: enroll tentatively, and let
                        // the retries ask the trigger again.
                        let message = format!("trigger plugin `{}`: {error}", trigger.plugin.id());
                        self.enroll(&journey, &entry.id, contact_id, Some(&event), Some(message))?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_enroll(&mut self, contact_id: &str, journey_id: &str) -> Result<(), StoreError> {
        let Some(journey) = self
            .journeys
            .catalog
            .active()
            .into_iter()
            .find(|j| j.journey_id == journey_id)
        else {
            tracing::info!(
                journey = journey_id,
                contact = contact_id,
                "enrollment request for a journey that is not active; skipped"
            );
            return Ok(());
        };
        if self.contact(contact_id)?.is_none() {
            return Ok(());
        }
        let Some(entry) = journey.definition.entries().next().map(|n| n.id.clone()) else {
            return Ok(());
        };
        self.enroll(&journey, &entry, contact_id, None, None)
    }

    fn on_wake(&mut self, enrollment_id: &str, due_at: Millis) -> Result<(), StoreError> {
        let Some(mut enrollment) = self.enrollment(enrollment_id)? else {
            return Ok(());
        };
        // A timer the enrollment has moved past (the awaited event came first) is stale.
        if enrollment.waiting.as_ref().map(|w| w.due_at) != Some(due_at) {
            return Ok(());
        }
        let Some(journey) = self.runnable(&mut enrollment)? else {
            return Ok(());
        };
        match enrollment.state {
            EnrollmentState::Waiting => {
                let label = enrollment
                    .waiting
                    .as_ref()
                    .and_then(|w| w.event.as_ref())
                    .map(|_| "timeout".to_owned());
                self.advance(&journey, enrollment, Start::Leave(label))
            }
            EnrollmentState::Retrying => {
                enrollment.waiting = None;
                self.advance(&journey, enrollment, Start::Run)
            }
            _ => Ok(()),
        }
    }

    fn on_retry(&mut self, enrollment_id: &str) -> Result<(), StoreError> {
        let Some(mut enrollment) = self.enrollment(enrollment_id)? else {
            return Ok(());
        };
        if enrollment.state != EnrollmentState::Parked {
            return Ok(());
        }
        let Some(journey) = self.runnable(&mut enrollment)? else {
            return Ok(());
        };
        enrollment.attempts = 0;
        enrollment.error = None;
        self.advance(&journey, enrollment, Start::Run)
    }

    /// The journey version an active enrollment runs on; `None` (and the enrollment ended)
    /// when the journey was archived or the version cannot run.
    fn runnable(
        &mut self,
        enrollment: &mut Enrollment,
    ) -> Result<Option<Arc<CompiledJourney>>, StoreError> {
        if !enrollment.state.is_active() {
            return Ok(None);
        }
        if self.journeys.catalog.is_archived(&enrollment.journey_id) {
            let mut ended = enrollment.clone();
            if let Ok(journey) = self
                .journeys
                .catalog
                .version(&enrollment.journey_id, enrollment.version)
            {
                self.clear_wait(&journey, &mut ended);
            }
            self.finish(
                &mut ended,
                EnrollmentState::Exited,
                "journey archived",
                "exited",
            );
            self.save(ended)?;
            return Ok(None);
        }
        match self
            .journeys
            .catalog
            .version(&enrollment.journey_id, enrollment.version)
        {
            Ok(journey) => Ok(Some(journey)),
            Err(error) => {
                // Say so on the enrollment rather than drop the work: once the plugin it needs
                // is loaded again, the enrollment can be looked at and moved on.
                tracing::error!(journey = %enrollment.journey_id, version = enrollment.version, %error, "journey version cannot run; enrollment parked");
                let mut parked = enrollment.clone();
                parked.state = EnrollmentState::Parked;
                parked.waiting = None;
                parked.error = Some(format!("the journey version cannot run: {error}"));
                parked.updated_at = self.now;
                self.save(parked)?;
                Ok(None)
            }
        }
    }

    /// Whether the journey's re-entry rule lets the contact in now.
    fn may_enter(
        &mut self,
        journey: &CompiledJourney,
        contact_id: &str,
    ) -> Result<bool, StoreError> {
        let now = self.now;
        let Some(record) = self.journeys_of(contact_id)?.get(&journey.journey_id) else {
            return Ok(true);
        };
        Ok(match journey.definition.reentry {
            Reentry::Once => record.entries == 0,
            Reentry::After(cooldown) => {
                record.active.is_empty()
                    && (record.entries == 0 || now - record.last_entered_at >= cooldown)
            }
            Reentry::Concurrent => true,
        })
    }

    fn enroll(
        &mut self,
        journey: &Arc<CompiledJourney>,
        entry: &str,
        contact_id: &str,
        event: Option<&Arc<Event>>,
        trigger_failed: Option<String>,
    ) -> Result<(), StoreError> {
        let now = self.now;
        if !self.may_enter(journey, contact_id)? {
            return Ok(());
        }
        let journey_id = journey.journey_id.clone();
        let record = self
            .journeys_of(contact_id)?
            .entry(journey_id.clone())
            .or_insert_with(|| ContactJourney {
                contact_id: contact_id.to_owned(),
                journey_id: journey_id.clone(),
                ..ContactJourney::default()
            });
        let id = new_enrollment_id();
        record.entries += 1;
        record.last_entered_at = now;
        record.active.push(id.clone());
        record.recent.push(id.clone());
        if record.recent.len() > RECENT_ENROLLMENTS {
            record.recent.remove(0);
        }
        self.changed_contact_journeys
            .insert((contact_id.to_owned(), journey_id.clone()));
        if let Some(event) = event {
            self.events.insert(event.id.clone(), Some(event.clone()));
        }
        let enrollment = Enrollment {
            id,
            contact_id: contact_id.to_owned(),
            journey_id,
            version: journey.version,
            state: EnrollmentState::Waiting,
            node: entry.to_owned(),
            entered_at: now,
            updated_at: now,
            event_id: event.map(|e| e.id.clone()),
            waiting: None,
            attempts: 0,
            error: None,
            exit_reason: None,
            history: Vec::new(),
        };
        self.commit
            .count(&journey.journey_id, journey.version, entry, "entered", 1);
        match trigger_failed {
            None => self.advance(journey, enrollment, Start::Leave(None)),
            Some(error) => {
                let mut enrollment = enrollment;
                self.fail(journey, &mut enrollment, error);
                self.save(enrollment)
            }
        }
    }

    /// Move an enrollment through nodes until it waits, leaves, or fails.
    fn advance(
        &mut self,
        journey: &Arc<CompiledJourney>,
        mut enrollment: Enrollment,
        mut start: Start,
    ) -> Result<(), StoreError> {
        for _ in 0..MAX_NODES_PER_STEP {
            let flow = match std::mem::replace(&mut start, Start::Run) {
                Start::Leave(label) => {
                    self.clear_wait(journey, &mut enrollment);
                    Ok(Flow::Next(label))
                }
                Start::Run => self.run_node(journey, &mut enrollment)?,
            };
            let node = enrollment.node.clone();
            match flow {
                Err(error) => {
                    self.fail(journey, &mut enrollment, error);
                    break;
                }
                Ok(Flow::Hold(waiting)) => {
                    self.commit.timers_set.push((
                        waiting.due_at,
                        enrollment.id.clone(),
                        enrollment.contact_id.clone(),
                    ));
                    self.commit
                        .count(&journey.journey_id, journey.version, &node, "waiting", 1);
                    enrollment.state = EnrollmentState::Waiting;
                    enrollment.waiting = Some(waiting);
                    enrollment.attempts = 0;
                    enrollment.error = None;
                    enrollment.updated_at = self.now;
                    break;
                }
                Ok(Flow::Exit(state, reason, metric)) => {
                    self.pass(journey, &mut enrollment, None);
                    self.finish(&mut enrollment, state, reason, metric);
                    break;
                }
                Ok(Flow::Next(label)) => {
                    self.pass(journey, &mut enrollment, label.clone());
                    match journey.definition.next(&node, label.as_deref()) {
                        Some(next) => {
                            enrollment.node = next.to_owned();
                            enrollment.attempts = 0;
                            enrollment.error = None;
                            self.commit.count(
                                &journey.journey_id,
                                journey.version,
                                next,
                                "entered",
                                1,
                            );
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
                            self.park(journey, &mut enrollment, error);
                            break;
                        }
                        None => {
                            self.finish(
                                &mut enrollment,
                                EnrollmentState::Completed,
                                "end of journey",
                                "completed",
                            );
                            break;
                        }
                    }
                }
            }
        }
        if enrollment.state == EnrollmentState::Waiting && enrollment.waiting.is_none() {
            let error = format!("passed {MAX_NODES_PER_STEP} nodes in one step without a wait");
            self.park(journey, &mut enrollment, error);
        }
        self.save(enrollment)
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
        self.commit.count(
            &journey.journey_id,
            journey.version,
            &enrollment.node,
            &metric,
            1,
        );
        enrollment.history.push(Passed {
            node: enrollment.node.clone(),
            at: self.now,
            label,
        });
        enrollment.updated_at = self.now;
    }

    /// Leave the wait the enrollment is in, if any: its timer goes, its gauge drops.
    fn clear_wait(&mut self, journey: &CompiledJourney, enrollment: &mut Enrollment) {
        if let Some(waiting) = enrollment.waiting.take() {
            self.commit
                .timers_cleared
                .push((waiting.due_at, enrollment.id.clone()));
            if enrollment.state == EnrollmentState::Waiting {
                self.commit.count(
                    &journey.journey_id,
                    journey.version,
                    &enrollment.node,
                    "waiting",
                    -1,
                );
            }
        }
    }

    fn finish(
        &mut self,
        enrollment: &mut Enrollment,
        state: EnrollmentState,
        reason: &str,
        metric: &str,
    ) {
        self.commit.count(
            &enrollment.journey_id,
            enrollment.version,
            &enrollment.node,
            metric,
            1,
        );
        enrollment.state = state;
        enrollment.exit_reason = Some(reason.to_owned());
        enrollment.updated_at = self.now;
    }

    /// A plugin failed: try again later, or park once the attempts are spent.
    fn fail(&mut self, journey: &CompiledJourney, enrollment: &mut Enrollment, error: String) {
        enrollment.attempts += 1;
        if enrollment.attempts >= MAX_ATTEMPTS {
            self.park(journey, enrollment, error);
            return;
        }
        let due_at = self.now + backoff(enrollment.attempts);
        tracing::warn!(enrollment = %enrollment.id, node = %enrollment.node, attempt = enrollment.attempts, %error, "step failed; will retry");
        self.commit
            .timers_set
            .push((due_at, enrollment.id.clone(), enrollment.contact_id.clone()));
        enrollment.state = EnrollmentState::Retrying;
        enrollment.waiting = Some(Waiting {
            due_at,
            event: None,
        });
        enrollment.error = Some(error);
        enrollment.updated_at = self.now;
    }

    fn park(&mut self, journey: &CompiledJourney, enrollment: &mut Enrollment, error: String) {
        tracing::error!(enrollment = %enrollment.id, node = %enrollment.node, %error, "enrollment parked");
        self.commit.count(
            &journey.journey_id,
            journey.version,
            &enrollment.node,
            "failed",
            1,
        );
        enrollment.state = EnrollmentState::Parked;
        enrollment.waiting = None;
        enrollment.error = Some(error);
        enrollment.updated_at = self.now;
    }

    /// Run the node the enrollment is at. `Err` is a failure of the node's plugin.
    fn run_node(
        &mut self,
        journey: &Arc<CompiledJourney>,
        enrollment: &mut Enrollment,
    ) -> Result<Result<Flow, String>, StoreError> {
        let Some(node) = journey.definition.node(&enrollment.node).cloned() else {
            return Ok(Err(format!(
                "node `{}` is not in the journey",
                enrollment.node
            )));
        };
        let Some(contact) = self.contact(&enrollment.contact_id)? else {
            return Ok(Err("the contact no longer exists".into()));
        };
        let event = match &enrollment.event_id {
            Some(id) => self.event(id)?,
            None => None,
        };
        let plugin = journey.plugins.get(&node.id);
        let (kind, flow, output) = match &node.kind {
            NodeKind::Entry { .. } => match (plugin, &event, enrollment.attempts) {
                // A tentative enrollment whose trigger failed: ask the trigger again.
                (Some(trigger), Some(event), attempts) if attempts > 0 => {
                    let report =
                        self.runtime
                            .matches(&trigger.plugin, &trigger.config, event, &contact);
                    match report.result {
                        Ok(true) => (
                            "entry",
                            Ok(Flow::Next(None)),
                            serde_json::json!({"matched": true}),
                        ),
                        Ok(false) => (
                            "entry",
                            Ok(Flow::Exit(
                                EnrollmentState::Exited,
                                "trigger did not match",
                                "exited",
                            )),
                            serde_json::json!({"matched": false}),
                        ),
                        Err(error) => {
                            let error =
                                format!("trigger plugin `{}`: {error}", trigger.plugin.id());
                            (
                                "entry",
                                Err(error.clone()),
                                serde_json::json!({"error": error}),
                            )
                        }
                    }
                }
                _ => ("entry", Ok(Flow::Next(None)), serde_json::json!({})),
            },
            NodeKind::Action { .. } => {
                let Some(action) = plugin else {
                    return Ok(Err(format!("node `{}` has no plugin", node.id)));
                };
                let report = self.runtime.run_action(
                    &action.plugin,
                    &action.config,
                    &contact,
                    event.as_deref(),
                );
                match report.result {
                    Ok(effects) => {
                        let output = serde_json::json!({"effects": effects});
                        self.apply_effects(journey, enrollment, effects);
                        ("action", Ok(Flow::Next(None)), output)
                    }
                    Err(error) => {
                        let error = format!("action plugin `{}`: {error}", action.plugin.id());
                        (
                            "action",
                            Err(error.clone()),
                            serde_json::json!({"error": error}),
                        )
                    }
                }
            }
            NodeKind::Condition { .. } => {
                let Some(condition) = plugin else {
                    return Ok(Err(format!("node `{}` has no plugin", node.id)));
                };
                let report = self.runtime.evaluate(
                    &condition.plugin,
                    &condition.config,
                    &contact,
                    event.as_deref(),
                );
                match report.result {
                    Ok(label) => (
                        "condition",
                        Ok(Flow::Next(Some(label.clone()))),
                        serde_json::json!({"branch": label}),
                    ),
                    Err(error) => {
                        let error =
                            format!("condition plugin `{}`: {error}", condition.plugin.id());
                        (
                            "condition",
                            Err(error.clone()),
                            serde_json::json!({"error": error}),
                        )
                    }
                }
            }
            NodeKind::Split { paths } => {
                let label = split_path(&journey.journey_id, &node.id, &contact.id, paths);
                (
                    "split",
                    Ok(Flow::Next(Some(label.clone()))),
                    serde_json::json!({"path": label}),
                )
            }
            NodeKind::Wait(wait) => {
                let (due_at, event_name) = if let Some(delay) = wait.delay {
                    (self.now + delay.0, None)
                } else if let Some(window) = journey.windows.get(&node.id) {
                    (window.next_at_or_after(self.now, &contact.timezone), None)
                } else {
                    let timeout = wait.timeout.map_or(0, |t| t.0);
                    (self.now + timeout, wait.until_event.clone())
                };
                if due_at <= self.now && event_name.is_none() {
                    // Already inside the window (or a zero delay): no need to hold.
                    (
                        "wait",
                        Ok(Flow::Next(None)),
                        serde_json::json!({"held": false}),
                    )
                } else {
                    let output = serde_json::json!({
                        "until": crate::model::format_timestamp(due_at),
                        "or_event": event_name,
                    });
                    (
                        "wait",
                        Ok(Flow::Hold(Waiting {
                            due_at,
                            event: event_name,
                        })),
                        output,
                    )
                }
            }
            NodeKind::Exit => (
                "exit",
                Ok(Flow::Exit(
                    EnrollmentState::Completed,
                    "exit node",
                    "completed",
                )),
                serde_json::json!({}),
            ),
        };
        self.trace_node(journey, &node.id, kind, &contact, event.as_deref(), || {
            output
        });
        Ok(flow)
    }

    /// Apply an action's effects: to the contact at once (later nodes see them), to the store
    /// at commit; messages to the outbox, emitted events to the inbox.
    fn apply_effects(
        &mut self,
        journey: &CompiledJourney,
        enrollment: &Enrollment,
        effects: Vec<Effect>,
    ) {
        let step = format!("{}:{}", enrollment.id, enrollment.history.len());
        let mut contact_effects = Vec::new();
        for (n, effect) in effects.into_iter().enumerate() {
            match effect {
                Effect::SendMessage {
                    channel,
                    template,
                    variables,
                } => self.commit.messages.push(OutboxMessage {
                    id: format!("{step}:{n}"),
                    contact_id: enrollment.contact_id.clone(),
                    channel,
                    template,
                    variables,
                    journey_id: journey.journey_id.clone(),
                    version: journey.version,
                    node: enrollment.node.clone(),
                    enrollment_id: enrollment.id.clone(),
                    created_at: self.now,
                    status: "pending".into(),
                }),
                Effect::EmitEvent { name, properties } => self.commit.events.push(Event {
                    id: format!("{step}:{n}"),
                    contact_id: enrollment.contact_id.clone(),
                    name,
                    properties,
                    timestamp: self.now,
                }),
                other => contact_effects.push(other),
            }
        }
        if contact_effects.is_empty() {
            return;
        }
        if let Some(Some(contact)) = self.contacts.get_mut(&enrollment.contact_id) {
            let contact = Arc::make_mut(contact);
            for effect in &contact_effects {
                contact.apply(effect, self.now);
            }
        }
        self.effects
            .entry(enrollment.contact_id.clone())
            .or_default()
            .extend(contact_effects);
    }

    fn trace_node(
        &mut self,
        journey: &CompiledJourney,
        node: &str,
        kind: &'static str,
        contact: &Contact,
        event: Option<&Event>,
        output: impl FnOnce() -> serde_json::Value,
    ) {
        if let Some(trace) = &mut self.trace {
            trace.push(TraceStep {
                at: self.now,
                journey_id: journey.journey_id.clone(),
                node: node.to_owned(),
                kind,
                input: serde_json::json!({"contact": contact, "event": event}),
                output: output(),
            });
        }
    }
}

/// The split path of a contact: a stable hash of journey, node and contact picks a point in
/// 0–100, and the paths take consecutive shares of it. The same contact always lands on the
/// same path, on replay and on every host.
pub fn split_path(
    journey_id: &str,
    node_id: &str,
    contact_id: &str,
    paths: &[super::definition::SplitPath],
) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(journey_id)
        .chain_update([0])
        .chain_update(node_id)
        .chain_update([0])
        .chain_update(contact_id)
        .finalize();
    let point = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) as f64
        / u64::MAX as f64
        * 100.0;
    let mut upper = 0.0;
    for path in paths {
        upper += path.percent;
        if point < upper {
            return path.label.clone();
        }
    }
    paths.last().map(|p| p.label.clone()).unwrap_or_default()
}

fn new_enrollment_id() -> String {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    format!("en_{}", hex::encode(bytes))
}
