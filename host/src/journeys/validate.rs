//! Publishing checks the whole journey, so a mistake is refused with the node it is in instead
//! of surfacing when the first contact gets there: the graph (every node reachable, every way
//! out handled, no loop without a wait) and every plugin (present, of the right kind, and
//! accepting its config by its own `validate-config`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::compiled::config_text;
use super::definition::{Definition, NodeKind};
use super::windows::Window;
use crate::registry::Registry;
use crate::runtime::{PluginKind, Runtime};

/// One thing wrong with a journey, and where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The node it is in; `None` for the journey as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub message: String,
}

impl Problem {
    fn at(node: &str, message: impl Into<String>) -> Self {
        Problem {
            node: Some(node.to_owned()),
            message: message.into(),
        }
    }

    fn journey(message: impl Into<String>) -> Self {
        Problem {
            node: None,
            message: message.into(),
        }
    }
}

/// Check `definition` for publishing. On success, returns it with every plugin pinned to the
/// `name@version` it resolved to.
pub fn validate(
    definition: &Definition,
    registry: &Registry,
    runtime: &Runtime,
) -> Result<Definition, Vec<Problem>> {
    let mut problems = Vec::new();
    check_graph(definition, &mut problems);
    let pinned = check_plugins(definition, registry, runtime, &mut problems);
    if problems.is_empty() {
        Ok(pinned)
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

/// A loop must pass a wait, or a contact would go round it forever within one step.
fn check_loops(
    definition: &Definition,
    nodes: &HashMap<&str, &NodeKind>,
    problems: &mut Vec<Problem>,
) {
    let holds = |id: &str| matches!(nodes.get(id), Some(NodeKind::Wait(_)));
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
                                "this node is on a loop without a wait: a contact would go round it forever",
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

fn check_plugins(
    definition: &Definition,
    registry: &Registry,
    runtime: &Runtime,
    problems: &mut Vec<Problem>,
) -> Definition {
    let mut pinned = definition.clone();
    for node in &mut pinned.nodes {
        let (plugin, config, kind) = match &mut node.kind {
            NodeKind::Entry {
                plugin: Some(plugin),
                config,
            } => (
                plugin,
                config.clone().unwrap_or(serde_json::Value::Null),
                PluginKind::Trigger,
            ),
            NodeKind::Condition { plugin, config } => {
                (plugin, config.clone(), PluginKind::Condition)
            }
            NodeKind::Action { plugin, config } => (plugin, config.clone(), PluginKind::Action),
            _ => continue,
        };
        let Some(loaded) = registry.resolve(plugin) else {
            problems.push(Problem::at(
                &node.id,
                format!("plugin `{plugin}` is not loaded"),
            ));
            continue;
        };
        if loaded.kind != kind {
            problems.push(Problem::at(
                &node.id,
                format!(
                    "plugin `{}` is a {} plugin; this node needs a {} plugin",
                    loaded.id(),
                    loaded.kind.as_str(),
                    kind.as_str()
                ),
            ));
            continue;
        }
        *plugin = loaded.id().to_owned();
        match runtime
            .validate_config(&loaded, &config_text(&config))
            .result
        {
            Ok(Ok(_prepared)) => {}
            Ok(Err(refused)) => {
                for problem in refused {
                    problems.push(Problem::at(
                        &node.id,
                        format!("plugin `{}` refused its config: {problem}", loaded.id()),
                    ));
                }
            }
            Err(error) => problems.push(Problem::at(
                &node.id,
                format!(
                    "plugin `{}` failed checking its config: {error}",
                    loaded.id()
                ),
            )),
        }
    }
    pinned
}
