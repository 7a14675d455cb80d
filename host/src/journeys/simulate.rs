//! Walk a journey with a test contact before launch (../shared/DOMAIN.md §4): scripted events
//! on a virtual clock ("registers, does not open, 25 h pass"), run by the real engine and the
//! real plugins against a store that lives in memory. Nothing real is sent or changed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::definition::Duration;
use super::{JourneyError, Journeys, TraceStep, parse, validate};
use crate::clock::{Clock, VirtualClock};
use crate::model::{Attributes, Event, Millis};
use crate::store::{
    AuditEntry, ContactUpsert, Enrollment, JourneyRecord, JourneyStatus, JourneyVersion,
    OutboxMessage, SledStore, Store, StoreError,
};

/// Most script steps one simulation runs.
const MAX_SCRIPT: usize = 1_000;
/// The longest stretch of virtual time one simulation covers.
const MAX_SPAN: Millis = 400 * 86_400_000;
/// Most nodes one simulation passes: a loop through a short wait over a long script would
/// otherwise run for a very long time.
const MAX_STEPS: usize = 10_000;
/// The longest one simulation runs, in real time.
const MAX_RUN: std::time::Duration = std::time::Duration::from_secs(5);

/// What to simulate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationRequest {
    /// A published version; the current draft (checked as if publishing) when absent.
    #[serde(default)]
    pub version: Option<u32>,
    /// The test contact.
    #[serde(default)]
    pub contact: ContactUpsert,
    /// When the simulation starts; now when absent.
    #[serde(default, with = "optional_timestamp")]
    pub start: Option<Millis>,
    pub script: Vec<ScriptStep>,
}

/// One line of the script: the contact does something, or time passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum ScriptStep {
    Event {
        event: String,
        #[serde(default)]
        properties: Attributes,
    },
    Wait {
        wait: Duration,
    },
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    pub journey_id: String,
    /// The version simulated; `null` for the draft.
    pub version: Option<u32>,
    /// Every node the contact passed, with what it saw and did, in order.
    pub steps: Vec<TraceStep>,
    /// The messages that would have been sent.
    pub messages: Vec<OutboxMessage>,
    /// The contact at the end, as it stands then.
    pub contact: crate::standing::Standing,
    pub enrollments: Vec<Enrollment>,
    #[serde(with = "crate::model::timestamp_json")]
    pub ended_at: Millis,
    /// Why the simulation stopped before the end of its script, if it did: what it shows is
    /// what happened until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

/// Why a simulation stopped early.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    /// `step_limit` or `time_limit`.
    pub code: &'static str,
    pub message: String,
}

/// What a simulation may still spend.
struct Budget {
    deadline: std::time::Instant,
}

impl Budget {
    /// Why to stop now, if the simulation has passed its bounds.
    fn exceeded(&self, steps: usize) -> Option<Stopped> {
        if steps >= MAX_STEPS {
            return Some(Stopped {
                code: "step_limit",
                message: format!(
                    "the contact passed {MAX_STEPS} nodes, the most a simulation runs: does a loop of journeys keep it going?"
                ),
            });
        }
        (std::time::Instant::now() > self.deadline).then(|| Stopped {
            code: "time_limit",
            message: format!(
                "the simulation ran for {} s, the longest it may",
                MAX_RUN.as_secs()
            ),
        })
    }
}

mod optional_timestamp {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "crate::model::timestamp_json")] i64);
        Ok(Option::<Wrapper>::deserialize(d)?.map(|w| w.0))
    }
}

impl Journeys {
    /// Run `request` against journey `id` on a virtual clock and an in-memory store.
    pub fn simulate(
        &self,
        id: &str,
        request: SimulationRequest,
    ) -> Result<Simulation, JourneyError> {
        if request.script.len() > MAX_SCRIPT {
            return Err(JourneyError::BadSimulation(format!(
                "a script has at most {MAX_SCRIPT} steps"
            )));
        }
        let span: Millis = request
            .script
            .iter()
            .map(|step| match step {
                ScriptStep::Wait { wait } => wait.0.max(0),
                ScriptStep::Event { .. } => 0,
            })
            .fold(0, Millis::saturating_add);
        if span > MAX_SPAN {
            return Err(JourneyError::BadSimulation(
                "a simulation covers at most 400 days".into(),
            ));
        }
        let record = self.get(id)?;
        let (version_number, definition) = match request.version {
            Some(number) => (number, self.version(id, number)?.definition),
            None => {
                let draft = parse(&record.draft)?;
                let checked = validate::validate(
                    id,
                    &draft,
                    &record.plugin_versions,
                    &[],
                    &self.registry,
                    &self.runtime,
                )
                .map_err(JourneyError::Invalid)?;
                (
                    1,
                    serde_json::to_value(checked.definition).expect("definitions serialize"),
                )
            }
        };
        let start = request.start.unwrap_or_else(|| self.clock.now());
        let clock = VirtualClock::at(start);
        let store: Arc<dyn Store> = Arc::new(SledStore::temporary()?);
        let journey = JourneyRecord {
            status: JourneyStatus::Active,
            published_version: version_number,
            ..record
        };
        store.publish_journey(
            &journey,
            &JourneyVersion {
                journey_id: id.to_owned(),
                version: version_number,
                definition,
                published_at: start,
                templates: Default::default(),
            },
            AuditEntry::new(
                start,
                "simulation",
                "journey.publish",
                id,
                serde_json::Value::Null,
            ),
        )?;
        let sandbox = Journeys::new(
            store.clone(),
            self.runtime.clone(),
            self.registry.clone(),
            Arc::new(clock.clone()),
        )?;
        let mut contact = request.contact;
        let contact_id = contact
            .id
            .get_or_insert_with(|| "simulated-contact".into())
            .clone();
        store.upsert_contact(contact, start)?;

        let budget = Budget {
            deadline: std::time::Instant::now() + MAX_RUN,
        };
        let mut steps = Vec::new();
        let mut stopped = None;
        for (n, step) in request.script.into_iter().enumerate() {
            match step {
                ScriptStep::Event { event, properties } => {
                    store.record_events(&[Event {
                        id: format!("simulated-{n}"),
                        contact_id: contact_id.clone(),
                        name: event,
                        properties,
                        timestamp: clock.now(),
                        depth: 0,
                    }])?;
                    stopped = sandbox.drain(&mut steps, &budget)?;
                }
                ScriptStep::Wait { wait } => {
                    let until = clock.now().saturating_add(wait.0.max(0));
                    // Stop at every timer on the way, so each fires at its own time.
                    while stopped.is_none()
                        && let Some(due) = store.next_timer_due()?.filter(|due| *due <= until)
                    {
                        clock.set(due.max(clock.now()));
                        stopped = sandbox.drain(&mut steps, &budget)?;
                    }
                    if stopped.is_none() {
                        clock.set(until);
                        stopped = sandbox.drain(&mut steps, &budget)?;
                    }
                }
            }
            if stopped.is_some() {
                break;
            }
        }
        let enrollments = store
            .contact_journeys(&contact_id)?
            .into_iter()
            .flat_map(|cj| cj.recent)
            .filter_map(|id| store.enrollment(&id).ok().flatten())
            .collect();
        Ok(Simulation {
            journey_id: id.to_owned(),
            version: request.version,
            steps,
            messages: store.messages(&contact_id)?,
            contact: crate::standing::Standing::of(
                (store.contact(&contact_id)?).expect("the simulated contact was stored"),
                clock.now(),
                &sandbox.scoring,
                &sandbox.audiences,
            ),
            enrollments,
            ended_at: clock.now(),
            stopped,
        })
    }

    /// Run every queued item and every timer due by the clock's now, on this thread, until
    /// nothing is left or the budget is spent (then why).
    fn drain(
        &self,
        steps: &mut Vec<TraceStep>,
        budget: &Budget,
    ) -> Result<Option<Stopped>, StoreError> {
        loop {
            if let Some(stopped) = budget.exceeded(steps.len()) {
                return Ok(Some(stopped));
            }
            self.store.fire_due_timers(self.clock.now(), usize::MAX)?;
            if !self.store.has_pending_work()? {
                return Ok(None);
            }
            for partition in 0..crate::store::PARTITIONS {
                let items = self.store.pending_work(partition, 256, self.clock.now())?;
                if !items.is_empty() {
                    steps.extend(self.process_traced(&items)?);
                }
            }
        }
    }
}
