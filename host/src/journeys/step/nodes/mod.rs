//! What each kind of node does when an enrollment reaches it: one module per kind. A node
//! returns how the enrollment goes on ([`Flow`]) or why it cannot ([`Failure`]), and what it saw
//! and did for a simulation's trace.

mod action;
mod condition;
mod effects;
mod split;
mod wait;

use std::sync::Arc;

pub use effects::MAX_EVENT_DEPTH;
pub use split::split_path;

use super::super::compiled::CompiledJourney;
use super::super::definition::NodeKind;
use super::Batch;
use crate::model::Millis;
use crate::store::{Enrollment, Outcome, StoreError};

/// How a node lets the contact go.
pub(super) enum Flow {
    /// On to the edge with this label (or the unlabelled one).
    Next(Option<String>),
    /// Held until the time, or until the event.
    Hold {
        due_at: Millis,
        event: Option<String>,
    },
    /// Out of the journey, this way, for this reason.
    Exit(Outcome, &'static str),
}

/// Why a node could not let the contact go.
pub(super) enum Failure {
    /// A plugin failed: trying again later may work.
    Retry(String),
    /// Running it again would fail the same way (a plugin broke the contract, a bound was
    /// reached): the enrollment is parked at once.
    Refuse(String),
}

/// What running a node came to.
pub(super) struct NodeRun {
    pub kind: &'static str,
    pub flow: Result<Flow, Failure>,
    /// What it did, for a simulation's trace.
    pub output: serde_json::Value,
}

impl NodeRun {
    fn new(kind: &'static str, flow: Flow, output: serde_json::Value) -> Self {
        NodeRun {
            kind,
            flow: Ok(flow),
            output,
        }
    }

    fn failed(kind: &'static str, failure: Failure) -> Self {
        let error = match &failure {
            Failure::Retry(error) | Failure::Refuse(error) => error.clone(),
        };
        NodeRun {
            kind,
            flow: Err(failure),
            output: serde_json::json!({ "error": error }),
        }
    }
}

impl Batch<'_> {
    /// Run the node the enrollment is at.
    pub(super) fn run_node(
        &mut self,
        journey: &Arc<CompiledJourney>,
        enrollment: &mut Enrollment,
    ) -> Result<Result<Flow, Failure>, StoreError> {
        let Some(node) = journey.definition.node(&enrollment.node) else {
            let error = format!("node `{}` is not in the journey", enrollment.node);
            return Ok(Err(Failure::Refuse(error)));
        };
        let Some(contact) = self.reads.contact(&enrollment.contact_id)? else {
            return Ok(Err(Failure::Refuse("the contact no longer exists".into())));
        };
        let event = match &enrollment.event_id {
            Some(id) => self.reads.event(id)?,
            None => None,
        };
        let plugin = journey.plugins.get(&node.id);
        let run = match (&node.kind, plugin) {
            // A contact is at an entry node only on the way in: it passes.
            (NodeKind::Entry { .. }, _) => {
                NodeRun::new("entry", Flow::Next(None), serde_json::json!({}))
            }
            (NodeKind::Condition { .. }, Some(condition)) => {
                let seen = self.seen_by(&contact, &condition.config);
                condition::run(&self.runtime, condition, &seen, event.as_deref())
            }
            (NodeKind::Action { .. }, Some(action)) => {
                let seen = self.seen_by(&contact, &action.config);
                let outcome = action::run(&self.runtime, action, &seen, event.as_deref());
                match outcome {
                    Ok(effects) => {
                        let output = serde_json::json!({ "effects": effects });
                        match self.apply_effects(journey, enrollment, event.as_deref(), effects) {
                            Ok(()) => NodeRun::new("action", Flow::Next(None), output),
                            Err(failure) => NodeRun::failed("action", failure),
                        }
                    }
                    Err(failure) => NodeRun::failed("action", failure),
                }
            }
            (NodeKind::Condition { .. } | NodeKind::Action { .. }, None) => NodeRun::failed(
                "plugin",
                Failure::Refuse(format!("node `{}` has no plugin", node.id)),
            ),
            (NodeKind::Wait(wait), _) => wait::run(
                wait,
                journey.windows.get(&node.id),
                self.now,
                &contact.timezone,
            ),
            (NodeKind::Split { paths }, _) => {
                let label = split_path(&journey.journey_id, &node.id, &contact.id, paths);
                let output = serde_json::json!({ "path": label });
                NodeRun::new("split", Flow::Next(Some(label)), output)
            }
            (NodeKind::Exit, _) => NodeRun::new(
                "exit",
                Flow::Exit(Outcome::Completed, "exit node"),
                serde_json::json!({}),
            ),
        };
        let NodeRun { kind, flow, output } = run;
        self.trace.node(
            self.now,
            journey,
            &node.id,
            kind,
            &contact,
            event.as_deref(),
            || output,
        );
        Ok(flow)
    }
}
