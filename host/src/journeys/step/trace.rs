//! What a simulation sees of each node a contact passed.

use serde::Serialize;

use super::super::compiled::CompiledJourney;
use crate::model::{Contact, Event, Millis};

/// One node a contact passed: what it saw and what it did.
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

/// The trace of a batch, when one is kept.
#[derive(Default)]
pub(super) struct Trace(Option<Vec<TraceStep>>);

impl Trace {
    pub(super) fn kept(keep: bool) -> Self {
        Trace(keep.then(Vec::new))
    }

    /// Note a node; `output` is only built when the trace is kept.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn node(
        &mut self,
        at: Millis,
        journey: &CompiledJourney,
        node: &str,
        kind: &'static str,
        contact: &Contact,
        event: Option<&Event>,
        output: impl FnOnce() -> serde_json::Value,
    ) {
        if let Some(trace) = &mut self.0 {
            trace.push(TraceStep {
                at,
                journey_id: journey.journey_id.clone(),
                node: node.to_owned(),
                kind,
                input: serde_json::json!({"contact": contact, "event": event}),
                output: output(),
            });
        }
    }

    pub(super) fn into_steps(self) -> Option<Vec<TraceStep>> {
        self.0
    }
}
