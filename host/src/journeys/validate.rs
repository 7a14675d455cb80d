//! Publishing checks the whole journey, so a mistake is refused with the node it is in instead
//! of surfacing when the first contact gets there: the shapes (every node parses, durations
//! included), the graph (every node reachable, every way out handled, no loop that does not
//! hold the contact a while), every plugin (present, of the right kind, and accepting its
//! config by its own `validate-config`), and the journeys it feeds (no loop of journeys that
//! re-enroll each other through the events their actions emit).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::JourneyError;
use super::compiled::{CompiledJourney, Moves, NodePlugin, prepare_plugins};
use super::definition::{Definition, Node, NodeKind, Reentry};
use super::windows::Window;
use crate::model::Millis;
use crate::registry::Registry;
use crate::runtime::Runtime;

/// One thing wrong with a journey, and where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The node it is in; `None` for the journey as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The published version it is in, when it is about one rather than the draft.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    pub message: String,
}

impl Problem {
    pub(super) fn at(node: &str, message: impl Into<String>) -> Self {
        Problem {
            node: Some(node.to_owned()),
            version: None,
            message: message.into(),
        }
    }

    fn journey(message: impl Into<String>) -> Self {
        Problem {
            node: None,
            version: None,
            message: message.into(),
        }
    }
}

/// A definition's JSON as a [`Definition`]. What does not parse is refused naming the node it
/// is in (each node is read on its own to find it), like every other problem.
pub fn parse(value: &serde_json::Value) -> Result<Definition, JourneyError> {
    let whole = match serde_json::from_value::<Definition>(value.clone()) {
        Ok(definition) => return Ok(definition),
        Err(error) => error,
    };
    let mut problems = Vec::new();
    if let Some(nodes) = value.get("nodes").and_then(|nodes| nodes.as_array()) {
        for (n, node) in nodes.iter().enumerate() {
            if let Err(error) = serde_json::from_value::<Node>(node.clone()) {
                let id = node
                    .get("id")
                    .and_then(|id| id.as_str())
                    .map_or_else(|| format!("nodes[{n}]"), str::to_owned);
                problems.push(Problem::at(&id, error.to_string()));
            }
        }
    }
    if problems.is_empty() {
        problems.push(Problem::journey(whole.to_string()));
    }
    Err(JourneyError::Invalid(problems))
}

/// A journey fit to publish: every plugin pinned to the `name@version` and binary it resolved
/// to, each with its config prepared, and what deserves a look without stopping it.
pub struct Checked {
    pub definition: Definition,
    pub plugins: HashMap<String, NodePlugin>,
    pub warnings: Vec<Problem>,
}

/// Check `definition` of journey `id` for publishing, beside the journeys that enroll now, on
/// the plugin versions the journey was moved to (`moved`).
pub fn validate(
    id: &str,
    definition: &Definition,
    moved: &Moves,
    active: &[Arc<CompiledJourney>],
    registry: &Registry,
    runtime: &Runtime,
) -> Result<Checked, Vec<Problem>> {
    let mut problems = Vec::new();
    check_graph(definition, &mut problems);
    let mut pinned = definition.clone();
    let plugins = prepare_plugins(&mut pinned, moved, registry, runtime)
        .map_err(|refused| problems.extend(refused))
        .unwrap_or_default();
    let mut warnings = Vec::new();
    check_feedback(id, definition, active, &mut problems, &mut warnings);
    if problems.is_empty() {
        Ok(Checked {
            definition: pinned,
            plugins,
            warnings,
        })
    } else {
        Err(problems)
    }
}

/// Most nodes and edges a journey may have: far beyond any real journey, small enough that
/// checking and running one stays cheap.
const MAX_NODES: usize = 500;
const MAX_EDGES: usize = 2_000;

fn check_graph(definition: &Definition, problems: &mut Vec<Problem>) {
    if definition.nodes.len() > MAX_NODES || definition.edges.len() > MAX_EDGES {
        problems.push(Problem::journey(format!(
            "a journey has at most {MAX_NODES} nodes and {MAX_EDGES} edges"
        )));
        return;
    }
    if definition.name.trim().is_empty() {
        problems.push(Problem::journey("give the journey a `name`"));
    }
    for goal in &definition.goals {
        if goal.event.trim().is_empty() {
            problems.push(Problem::journey("a goal names the event that converts"));
        }
    }
    let mut nodes = HashMap::new();
    for node in &definition.nodes {
        if node.id.trim().is_empty() || node.id.len() > 128 {
            problems.push(Problem::journey(
                "every node needs an `id` of 1 to 128 characters",
            ));
        } else if nodes.insert(node.id.as_str(), &node.kind).is_some() {
            problems.push(Problem::at(&node.id, "two nodes have this id"));
        }
    }
    if definition.entries().next().is_none() {
        problems.push(Problem::journey(
            "a journey needs at least one `entry` node, where contacts come in",
        ));
    }
    let mut out: BTreeMap<&str, Vec<Option<&str>>> = BTreeMap::new();
    for edge in &definition.edges {
        for end in [&edge.from, &edge.to] {
            if !nodes.contains_key(end.as_str()) {
                problems.push(Problem::journey(format!(
                    "an edge names node `{end}`, which does not exist"
                )));
            }
        }
        if let Some(NodeKind::Entry { .. }) = nodes.get(edge.to.as_str()) {
            problems.push(Problem::at(
                &edge.to,
                "an entry node cannot be the target of an edge",
            ));
        }
        out.entry(edge.from.as_str())
            .or_default()
            .push(edge.label.as_deref());
    }
    for node in &definition.nodes {
        let labels = out.get(node.id.as_str()).cloned().unwrap_or_default();
        check_ways_out(&node.id, &node.kind, &labels, problems);
    }
    check_reachable(definition, problems);
    check_loops(definition, &nodes, problems);
}

/// Each kind of node has its own ways out; every one it can take must lead somewhere.
fn check_ways_out(id: &str, kind: &NodeKind, labels: &[Option<&str>], problems: &mut Vec<Problem>) {
    let defaults = labels.iter().filter(|l| l.is_none()).count();
    if defaults > 1 {
        problems.push(Problem::at(
            id,
            "more than one edge without a label leaves this node",
        ));
    }
    let mut seen = BTreeSet::new();
    for label in labels.iter().flatten() {
        if !seen.insert(*label) {
            problems.push(Problem::at(
                id,
                format!("two edges leave with label `{label}`"),
            ));
        }
    }
    let has_default = defaults > 0;
    let labelled: Vec<&str> = labels.iter().flatten().copied().collect();
    let only_default = |what: &str, problems: &mut Vec<Problem>| {
        if !labelled.is_empty() {
            problems.push(Problem::at(
                id,
                format!("{what} has one way out: give its edge no label"),
            ));
        }
    };
    match kind {
        NodeKind::Entry { .. } => {
            only_default("an entry node", problems);
            if !has_default {
                problems.push(Problem::at(
                    id,
                    "an entry node needs an edge to the first step",
                ));
            }
        }
        NodeKind::Action { .. } => only_default("an action node", problems),
        NodeKind::Exit => {
            if !labels.is_empty() {
                problems.push(Problem::at(
                    id,
                    "an exit node has no way out: remove its edges",
                ));
            }
        }
        NodeKind::Condition { config, .. } => {
            if !has_default {
                let named = branch_labels(config);
                if named.is_empty() {
                    problems.push(Problem::at(
                        id,
                        "a condition needs an edge without a label for branches that have no edge of their own",
                    ));
                }
                for label in named {
                    if !labelled.contains(&label.as_str()) {
                        problems.push(Problem::at(
                            id,
                            format!(
                                "branch `{label}` has no edge, and there is no edge without a label"
                            ),
                        ));
                    }
                }
            }
        }
        NodeKind::Split { paths } => {
            if paths.is_empty() {
                problems.push(Problem::at(id, "a split needs `paths`"));
            }
            let total: f64 = paths.iter().map(|p| p.percent).sum();
            if paths.iter().any(|p| !(0.0..=100.0).contains(&p.percent)) {
                problems.push(Problem::at(
                    id,
                    "each path's `percent` is between 0 and 100",
                ));
            } else if !paths.is_empty() && (total - 100.0).abs() > 1e-6 {
                problems.push(Problem::at(
                    id,
                    format!("the paths' percents add up to {total}, not 100"),
                ));
            }
            let mut names = BTreeSet::new();
            for path in paths {
                if !names.insert(path.label.as_str()) {
                    problems.push(Problem::at(
                        id,
                        format!("two paths are labelled `{}`", path.label),
                    ));
                }
                if !has_default && !labelled.contains(&path.label.as_str()) {
                    problems.push(Problem::at(
                        id,
                        format!("path `{}` has no edge", path.label),
                    ));
                }
            }
            for label in &labelled {
                if !names.contains(label) {
                    problems.push(Problem::at(
                        id,
                        format!("an edge is labelled `{label}`, which is not one of the paths"),
                    ));
                }
            }
        }
        NodeKind::Wait(wait) => {
            let kinds = [
                wait.delay.is_some(),
                wait.until.is_some(),
                wait.until_event.is_some(),
            ]
            .iter()
            .filter(|set| **set)
            .count();
            if kinds != 1 {
                problems.push(Problem::at(
                    id,
                    "a wait has exactly one of `delay`, `until` or `until_event`",
                ));
            }
            if let Some(window) = &wait.until
                && let Err(message) = Window::parse(window)
            {
                problems.push(Problem::at(id, message));
            }
            if wait.delay.is_some_and(|d| d.0 < 0) {
                problems.push(Problem::at(id, "a delay cannot be negative"));
            }
            match (&wait.until_event, &wait.timeout) {
                (Some(event), Some(timeout)) => {
                    if event.trim().is_empty() {
                        problems.push(Problem::at(id, "`until_event` names an event"));
                    }
                    if timeout.0 <= 0 {
                        problems.push(Problem::at(id, "`timeout` must be longer than zero"));
                    }
                    for way in ["event", "timeout"] {
                        if !has_default && !labelled.contains(&way) {
                            problems.push(Problem::at(id, format!("a wait for an event needs an edge labelled `{way}` (or one without a label)")));
                        }
                    }
                    for label in &labelled {
                        if !["event", "timeout"].contains(label) {
                            problems.push(Problem::at(id, format!("a wait for an event leaves by `event` or `timeout`, not `{label}`")));
                        }
                    }
                }
                (Some(_), None) => problems.push(Problem::at(
                    id,
                    "a wait for an event needs a `timeout` (\"at most 3 days\")",
                )),
                (None, Some(_)) => {
                    problems.push(Problem::at(id, "`timeout` only goes with `until_event`"))
                }
                (None, None) => only_default("a timed wait", problems),
            }
        }
    }
}

/// The labels a condition's config names, by the convention of condition plugins:
/// `branches[].label` and `default`.
fn branch_labels(config: &serde_json::Value) -> Vec<String> {
    let mut labels: Vec<String> = config["branches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["label"].as_str().map(str::to_owned))
        .collect();
    if let Some(default) = config["default"].as_str() {
        labels.push(default.to_owned());
    }
    labels
}

fn check_reachable(definition: &Definition, problems: &mut Vec<Problem>) {
    let mut reached: BTreeSet<&str> = definition.entries().map(|n| n.id.as_str()).collect();
    let mut frontier: Vec<&str> = reached.iter().copied().collect();
    while let Some(from) = frontier.pop() {
        for edge in definition.edges.iter().filter(|e| e.from == from) {
            if reached.insert(&edge.to) {
                frontier.push(&edge.to);
            }
        }
    }
    for node in &definition.nodes {
        if !reached.contains(node.id.as_str()) {
            problems.push(Problem::at(&node.id, "no entry node leads here"));
        }
    }
}

/// The least a loop must hold a contact per round: without it a contact goes round within one
/// step (a `0s` delay, a time window it is already in) or many times a second.
pub const MIN_LOOP_HOLD: Millis = 60_000;

/// Whether a node always holds a contact at least [`MIN_LOOP_HOLD`]: a delay that long, or a
/// wait for an event with a timeout that long (the event itself arrives as work of its own).
fn holds(kind: Option<&&NodeKind>) -> bool {
    match kind {
        Some(NodeKind::Wait(wait)) => {
            wait.delay.is_some_and(|d| d.0 >= MIN_LOOP_HOLD)
                || (wait.until_event.is_some()
                    && wait.timeout.is_some_and(|t| t.0 >= MIN_LOOP_HOLD))
        }
        _ => false,
    }
}

/// A loop must pass a wait that holds the contact a while, or a contact would go round it
/// forever within one step.
fn check_loops(
    definition: &Definition,
    nodes: &HashMap<&str, &NodeKind>,
    problems: &mut Vec<Problem>,
) {
    let holds = |id: &str| holds(nodes.get(id));
    // Depth-first search over edges that do not start at a wait; a back edge is a loop.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = nodes.keys().map(|id| (*id, Mark::New)).collect();
    for start in nodes.keys() {
        if marks[start] != Mark::New {
            continue;
        }
        let mut stack = vec![(*start, 0usize)];
        marks.insert(start, Mark::Open);
        while let Some((id, index)) = stack.pop() {
            let next = if holds(id) {
                None
            } else {
                definition
                    .edges
                    .iter()
                    .filter(|e| e.from == id)
                    .nth(index)
                    .map(|e| e.to.as_str())
            };
            match next {
                None => {
                    marks.insert(id, Mark::Done);
                }
                Some(to) => {
                    stack.push((id, index + 1));
                    match marks.get(to).copied() {
                        Some(Mark::New) => {
                            marks.insert(to, Mark::Open);
                            stack.push((to, 0));
                        }
                        Some(Mark::Open) => {
                            problems.push(Problem::at(
                                to,
                                format!("this node is on a loop that does not hold a contact for {} each time round (a wait with a `delay`, or an `until_event` `timeout`, of at least that): a contact would go round it without end", super::definition::format_duration(MIN_LOOP_HOLD)),
                            ));
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The event names a journey's entries enroll on and its actions emit, as far as their configs
/// show them: the conventions of the first-party `event-trigger` (`event`, `events`) and
/// `update-contact` (`emit.name`), which other plugins may follow.
fn events_of(definition: &Definition) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut enrolls, mut emits) = (BTreeSet::new(), BTreeSet::new());
    for node in &definition.nodes {
        match &node.kind {
            NodeKind::Entry {
                config: Some(config),
                ..
            } => {
                enrolls.extend(config["event"].as_str().map(str::to_owned));
                for name in config["events"].as_array().into_iter().flatten() {
                    enrolls.extend(name.as_str().map(str::to_owned));
                }
            }
            NodeKind::Action { config, .. } => {
                emits.extend(config["emit"]["name"].as_str().map(str::to_owned));
            }
            _ => {}
        }
    }
    (enrolls, emits)
}

/// The sends of a journey's actions as far as their configs show them, `(node, channel,
/// template)`: the convention of the first-party `update-contact` (`send`, one or a list),
/// which other plugins may follow.
pub fn sends_of(definition: &Definition) -> Vec<(String, String, String)> {
    let mut sends = Vec::new();
    for node in &definition.nodes {
        let NodeKind::Action { config, .. } = &node.kind else {
            continue;
        };
        let listed = match &config["send"] {
            serde_json::Value::Array(list) => list.iter().collect(),
            one => vec![one],
        };
        for send in listed {
            if let (Some(channel), Some(template)) =
                (send["channel"].as_str(), send["template"].as_str())
            {
                sends.push((node.id.clone(), channel.to_owned(), template.to_owned()));
            }
        }
    }
    sends
}

/// Whether a journey lets a contact in again soon after it left, or while it is in it.
fn reenters_soon(reentry: &Reentry) -> bool {
    match reentry {
        Reentry::Once => false,
        Reentry::After(cooldown) => *cooldown < MIN_LOOP_HOLD,
        Reentry::Concurrent => true,
    }
}

/// Journeys that feed each other: this one emits an event that (through others, perhaps)
/// enrolls contacts in it again. When every journey on the loop lets contacts in again at once,
/// each contact would go round it until the chain of emitted events is cut (see
/// `MAX_EVENT_DEPTH`): refused. Otherwise re-entry rules stop it: a warning.
fn check_feedback(
    id: &str,
    definition: &Definition,
    active: &[Arc<CompiledJourney>],
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    // Every journey by id, this one as it would be published.
    let mut journeys: BTreeMap<&str, (&Definition, BTreeSet<String>, BTreeSet<String>)> =
        BTreeMap::new();
    for journey in active.iter().filter(|j| j.journey_id != id) {
        let (enrolls, emits) = events_of(&journey.definition);
        journeys.insert(&journey.journey_id, (&journey.definition, enrolls, emits));
    }
    let (enrolls, emits) = events_of(definition);
    journeys.insert(id, (definition, enrolls, emits));
    // Breadth-first from this journey over "emits an event that enrolls in"; the path back.
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut frontier = vec![id];
    while let Some(from) = frontier.pop() {
        let emitted = &journeys[from].2;
        for (to, (_, enrolls, _)) in &journeys {
            if enrolls.is_disjoint(emitted) {
                continue;
            }
            if *to == id {
                let mut cycle = vec![from];
                while let Some(previous) = came_from.get(cycle.last().expect("not empty")) {
                    cycle.push(previous);
                }
                cycle.reverse();
                let runaway = cycle.iter().all(|j| reenters_soon(&journeys[j].0.reentry));
                let path = cycle
                    .iter()
                    .chain(std::iter::once(&id))
                    .map(|j| format!("`{j}`"))
                    .collect::<Vec<_>>()
                    .join(" → ");
                if runaway {
                    problems.push(Problem::journey(format!(
                        "journeys feed each other in a loop ({path}): the events their actions emit enroll contacts again at once, so each contact would go round without end; make one of them enroll a contact once, or after a cooldown"
                    )));
                } else {
                    warnings.push(Problem::journey(format!(
                        "journeys feed each other in a loop ({path}); their re-entry rules stop contacts going round it, but check it is meant"
                    )));
                }
                return;
            }
            if !came_from.contains_key(to) && *to != id {
                came_from.insert(to, from);
                frontier.push(to);
            }
        }
    }
}
