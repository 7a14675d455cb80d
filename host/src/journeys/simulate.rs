//! Walk a journey with a test contact before launch (../shared/DOMAIN.md §4): scripted events
//! on a virtual clock ("registers, does not open, 25 h pass"), run by the real engine and the
//! real plugins against a store that lives in memory. Nothing real is sent or changed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::definition::Duration;
use super::{JourneyError, Journeys, TraceStep, parse, validate};
use crate::clock::{Clock, VirtualClock};
use crate::model::{Attributes, Contact, Event, Millis};
use crate::store::{
    ContactUpsert, Enrollment, JourneyRecord, JourneyStatus, JourneyVersion, OutboxMessage,
    SledStore, Store,
};

/// Most script steps one simulation runs.
const MAX_SCRIPT: usize = 1_000;
/// The longest stretch of virtual time one simulation covers.
const MAX_SPAN: Millis = 400 * 86_400_000;
/// Most nodes one simulation passes: a loop through a short wait over a long script would
/// otherwise run for a very long time.
const MAX_STEPS: usize = 10_000;

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
    /// The contact at the end.
    pub contact: Contact,
    pub enrollments: Vec<Enrollment>,
    #[serde(with = "crate::model::timestamp_json")]
    pub ended_at: Millis,
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
                let pinned = validate::validate(&draft, &self.registry, &self.runtime)
                    .map_err(JourneyError::Invalid)?;
                (
                    1,
                    serde_json::to_value(pinned).expect("definitions serialize"),
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
            },
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

        let mut steps = Vec::new();
        for (n, step) in request.script.into_iter().enumerate() {
            match step {
                ScriptStep::Event { event, properties } => {
                    store.record_events(&[Event {
                        id: format!("simulated-{n}"),
                        contact_id: contact_id.clone(),
                        name: event,
                        properties,
                        timestamp: clock.now(),
                    }])?;
                    steps.extend(sandbox.drain()?);
                }
                ScriptStep::Wait { wait } => {
                    let until = clock.now() + wait.0.max(0);
                    // Stop at every timer on the way, so each fires at its own time.
                    while let Some(due) = store.next_timer_due()?.filter(|due| *due <= until) {
                        clock.set(due.max(clock.now()));
                        steps.extend(sandbox.drain()?);
                        if steps.len() > MAX_STEPS {
                            return Err(JourneyError::BadSimulation(format!(
                                "the simulation passed more than {MAX_STEPS} nodes; shorten the script"
                            )));
                        }
                    }
                    clock.set(until);
                    steps.extend(sandbox.drain()?);
                }
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
            contact: store
                .contact(&contact_id)?
                .expect("the simulated contact was stored"),
            enrollments,
            ended_at: clock.now(),
        })
    }
}
