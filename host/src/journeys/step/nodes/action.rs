//! An action node: its plugin returns effects, which the host checks and then applies with the
//! step (see `effects`).

use super::super::super::compiled::NodePlugin;
use super::Failure;
use super::effects;
use crate::model::{Contact, Effect, Event};
use crate::runtime::Runtime;

/// The action's effects, checked: a plugin error may pass on a retry, an effect the host
/// refuses will not.
pub(super) fn run(
    runtime: &Runtime,
    action: &NodePlugin,
    contact: &Contact,
    event: Option<&Event>,
) -> Result<Vec<Effect>, Failure> {
    let id = action.plugin.id();
    let effects = runtime
        .run_action(&action.plugin, &action.config, contact, event)
        .result
        .map_err(|error| Failure::Retry(format!("action plugin `{id}`: {error}")))?;
    effects::check(&effects).map_err(|problem| {
        Failure::Refuse(format!(
            "action plugin `{id}` asked for an effect the host refuses: {problem}"
        ))
    })?;
    Ok(effects)
}
