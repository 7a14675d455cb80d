//! A condition node: its plugin names the branch the contact takes.

use super::super::super::compiled::NodePlugin;
use super::{Failure, Flow, NodeRun};
use crate::model::{Contact, Event};
use crate::runtime::Runtime;

pub(super) fn run(
    runtime: &Runtime,
    condition: &NodePlugin,
    contact: &Contact,
    event: Option<&Event>,
) -> NodeRun {
    let report = runtime.evaluate(&condition.plugin, &condition.config, contact, event);
    match report.result {
        Ok(label) => {
            let output = serde_json::json!({ "branch": label });
            NodeRun::new("condition", Flow::Next(Some(label)), output)
        }
        Err(error) => NodeRun::failed(
            "condition",
            Failure::Retry(format!(
                "condition plugin `{}`: {error}",
                condition.plugin.id()
            )),
        ),
    }
}
