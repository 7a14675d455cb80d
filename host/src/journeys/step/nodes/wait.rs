//! A wait node: hold the contact for a delay, until the next listed time of day in its time
//! zone, or until an event (with a timeout).

use super::super::super::definition::WaitSpec;
use super::super::super::windows::Window;
use super::{Failure, Flow, NodeRun};
use crate::model::Millis;

pub(super) fn run(
    wait: &WaitSpec,
    window: Option<&Window>,
    now: Millis,
    timezone: &str,
) -> NodeRun {
    let (due_at, event) = if let Some(delay) = wait.delay {
        (now.checked_add(delay.0), None)
    } else if let Some(window) = window {
        (Some(window.next_at_or_after(now, timezone)), None)
    } else {
        let timeout = wait.timeout.map_or(0, |t| t.0);
        (now.checked_add(timeout), wait.until_event.clone())
    };
    // Publishing bounds every duration, so this is only reached with a clock near the end of
    // time; the arithmetic is checked all the same.
    let Some(due_at) = due_at else {
        return NodeRun::failed(
            "wait",
            Failure::Refuse("the wait would end past the last time the clock can show".into()),
        );
    };
    if due_at <= now && event.is_none() {
        // Already inside the window (or a zero delay): no need to hold.
        return NodeRun::new("wait", Flow::Next(None), serde_json::json!({"held": false}));
    }
    let output = serde_json::json!({
        "until": crate::model::format_timestamp(due_at),
        "or_event": event,
    });
    NodeRun::new("wait", Flow::Hold { due_at, event }, output)
}
