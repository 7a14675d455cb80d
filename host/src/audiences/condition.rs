//! The condition language of segments and tag rules, read from JSON clause by clause (every
//! problem named by its path), and decided for one contact at one moment.
//!
//! ```json
//! {"all": [
//!   {"attribute": "region", "op": "eq", "value": "South China"},
//!   {"event": "page_viewed", "where": [{"property": "page", "op": "eq", "value": "product"}],
//!    "within": "7d", "at_least": 3},
//!   {"not": {"tag": "customer"}}
//! ]}
//! ```
//!
//! Leaves: `attribute` (with `op`, `value` and an optional `type`), `tag`, `stage` (one or a
//! list), `consent` (a channel granted), `score` (a scoring model's decayed score, with `op`
//! and `value`), `event` (how many of an event, optionally filtered by its properties, in a
//! sliding window) and `created_within`. Branches: `all`, `any`, `not`.

use std::collections::BTreeMap;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::journeys::definition::parse_duration;
use crate::model::{Attributes, ConsentState, Contact, Millis, Value, check_name};

/// Most clauses in one condition, and deepest nesting.
const MAX_CLAUSES: usize = 64;
const MAX_DEPTH: usize = 8;
/// Longest sliding window, and most events a window clause may count to.
pub const MAX_WINDOW: Millis = 365 * 86_400_000;
const MIN_WINDOW: Millis = 60_000;
pub const MAX_COUNT: u64 = 1_000;
/// Most values an `in` list holds, and most property filters on one event clause.
const MAX_VALUES: usize = 1_000;
const MAX_FILTERS: usize = 20;

/// What is wrong with a definition, by the clause it is about.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// A comparison of a value (an attribute, a property, a score) with the clause's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
    Exists,
    Missing,
}

const OPS: [(&str, Op); 11] = [
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("in", Op::In),
    ("not_in", Op::NotIn),
    ("gt", Op::Gt),
    ("gte", Op::Gte),
    ("lt", Op::Lt),
    ("lte", Op::Lte),
    ("contains", Op::Contains),
    ("exists", Op::Exists),
    ("missing", Op::Missing),
];

/// The types an attribute clause may declare: the clause's value must be one.
const TYPES: [&str; 5] = ["text", "number", "boolean", "timestamp", "list"];

/// `op` applied to an actual value (absent: the contact has no such attribute).
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub op: Op,
    /// Absent for `exists` and `missing`; a list for `in` and `not_in`.
    pub value: Option<Value>,
    pub values: Vec<Value>,
}

/// A checked condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Attribute { name: String, test: Test },
    Tag(String),
    Stage(Vec<String>),
    Consent(String),
    Score { model: String, test: Test },
    Events(Window),
    CreatedWithin(Millis),
}

/// "`event` (matching `filters`) at least / at most so many times in the last `within`".
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The counter the contact keeps for this event and filter (see [`Counter`]).
    pub counter: String,
    pub within: Millis,
    pub at_least: u64,
    pub at_most: Option<u64>,
}

/// The times of one kind of event a contact keeps, for the window clauses that count it:
/// newest `keep` within the last `span`.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub event: String,
    pub filters: Vec<(String, Test)>,
    pub span: Millis,
    pub keep: usize,
}

impl Counter {
    /// Whether `name` with `properties` is one this counter counts.
    pub fn counts(&self, name: &str, properties: &Attributes) -> bool {
        self.event == name
            && (self.filters.iter()).all(|(property, test)| test.holds(properties.get(property)))
    }
}

/// What a contact is judged on: the contact, the times its counters keep, and how each
/// scoring model decays.
pub struct Facts<'a> {
    pub contact: &'a Contact,
    pub windows: &'a BTreeMap<String, Vec<Millis>>,
    pub half_life: &'a dyn Fn(&str) -> Option<Millis>,
    pub now: Millis,
}

impl Facts<'_> {
    fn score(&self, model: &str) -> f64 {
        (self.contact.scores.get(model)).map_or(0.0, |score| {
            crate::scoring::points::value(score, self.now, (self.half_life)(model))
        })
    }

    /// The counter's times still inside the last `within`, oldest first.
    fn in_window(&self, window: &Window) -> &[Millis] {
        let times = self
            .windows
            .get(&window.counter)
            .map_or(&[][..], Vec::as_slice);
        let from = times.partition_point(|t| *t <= self.now - window.within);
        &times[from..]
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(n) => Some(*n as f64),
        Value::Number(n) => Some(*n),
        Value::Timestamp(ms) => Some(*ms as f64),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl Test {
    /// Whether `actual` passes.
    pub fn holds(&self, actual: Option<&Value>) -> bool {
        let wanted = self.value.as_ref();
        match (self.op, actual) {
            (Op::Exists, found) => found.is_some(),
            (Op::Missing, found) => found.is_none(),
            (Op::Ne, None) | (Op::NotIn, None) => true,
            (_, None) => false,
            (Op::Eq, Some(v)) => wanted.is_some_and(|w| same(v, w)),
            (Op::Ne, Some(v)) => wanted.is_none_or(|w| !same(v, w)),
            (Op::In, Some(v)) => self.values.iter().any(|w| same(v, w)),
            (Op::NotIn, Some(v)) => !self.values.iter().any(|w| same(v, w)),
            (Op::Contains, Some(Value::Text(text))) => {
                matches!(wanted, Some(Value::Text(w)) if text.contains(w.as_str()))
            }
            (Op::Contains, Some(Value::TextList(list))) => {
                matches!(wanted, Some(Value::Text(w)) if list.contains(w))
            }
            (Op::Contains, Some(_)) => false,
            (op, Some(v)) => match (number(v), wanted.and_then(number)) {
                (Some(x), Some(y)) => match op {
                    Op::Gt => x > y,
                    Op::Gte => x >= y,
                    Op::Lt => x < y,
                    Op::Lte => x <= y,
                    _ => false,
                },
                _ => false,
            },
        }
    }

    /// The number a score is compared with.
    fn bound(&self) -> Option<f64> {
        self.value.as_ref().and_then(number)
    }
}

impl Condition {
    /// Whether the condition holds for the contact now.
    pub fn holds(&self, facts: &Facts<'_>) -> bool {
        match self {
            Condition::All(all) => all.iter().all(|c| c.holds(facts)),
            Condition::Any(any) => any.iter().any(|c| c.holds(facts)),
            Condition::Not(inner) => !inner.holds(facts),
            Condition::Attribute { name, test } => test.holds(facts.contact.attributes.get(name)),
            Condition::Tag(tag) => facts.contact.tags.contains(tag),
            Condition::Stage(stages) => stages.contains(&facts.contact.lifecycle_stage),
            Condition::Consent(channel) => {
                facts.contact.consents.get(channel) == Some(&ConsentState::Granted)
            }
            Condition::Score { model, test } => {
                test.holds(Some(&Value::Number(facts.score(model))))
            }
            Condition::Events(window) => {
                let count = facts.in_window(window).len() as u64;
                count >= window.at_least && window.at_most.is_none_or(|most| count <= most)
            }
            Condition::CreatedWithin(within) => facts.now - facts.contact.created_at < *within,
        }
    }

    /// The next moment after `now` time alone could change whether a clause holds: an event
    /// leaving a window, a decaying score reaching a clause's bound, a contact growing older
    /// than `created_within`. Events and updates change the rest, and are looked at anyway.
    pub fn next_change(&self, facts: &Facts<'_>) -> Option<Millis> {
        let now = facts.now;
        match self {
            Condition::All(all) | Condition::Any(all) => {
                all.iter().filter_map(|c| c.next_change(facts)).min()
            }
            Condition::Not(inner) => inner.next_change(facts),
            Condition::Events(window) => {
                (facts.in_window(window).first()).map(|oldest| oldest + window.within)
            }
            Condition::Score { model, test } => {
                let bound = test.bound()?;
                let value = facts.score(model);
                crate::scoring::points::reaches(value, bound, now, (facts.half_life)(model))
            }
            Condition::CreatedWithin(within) => {
                Some(facts.contact.created_at + within).filter(|at| *at > now)
            }
            Condition::Attribute { .. }
            | Condition::Tag(_)
            | Condition::Stage(_)
            | Condition::Consent(_) => None,
        }
    }

    /// Every window clause, to know which counters to keep.
    fn windows<'c>(&'c self, out: &mut Vec<&'c Window>) {
        match self {
            Condition::All(all) | Condition::Any(all) => {
                all.iter().for_each(|c| c.windows(out));
            }
            Condition::Not(inner) => inner.windows(out),
            Condition::Events(window) => out.push(window),
            _ => {}
        }
    }

    /// The scoring models the condition reads.
    pub fn models(&self) -> Vec<&str> {
        match self {
            Condition::All(all) | Condition::Any(all) => {
                all.iter().flat_map(Condition::models).collect()
            }
            Condition::Not(inner) => inner.models(),
            Condition::Score { model, .. } => vec![model.as_str()],
            _ => Vec::new(),
        }
    }
}

/// A condition read from JSON, with the counters its window clauses need (by key).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub condition: Condition,
    pub counters: BTreeMap<String, Counter>,
}

/// Read `json` (at `path`) as a condition; every problem is named by its path.
pub fn check(json: &Json, path: &str) -> Result<Checked, Vec<Problem>> {
    let mut reader = Reader {
        problems: Vec::new(),
        clauses: 0,
        counters: BTreeMap::new(),
    };
    let condition = reader.clause(json, path, 0);
    match condition {
        Some(condition) if reader.problems.is_empty() => {
            let mut windows = Vec::new();
            condition.windows(&mut windows);
            for window in windows {
                let counter = reader.counters.get_mut(&window.counter).expect("read");
                counter.span = counter.span.max(window.within);
                let needed = window.at_most.map_or(window.at_least, |most| most + 1);
                counter.keep = counter.keep.max(needed as usize);
            }
            Ok(Checked {
                condition,
                counters: reader.counters,
            })
        }
        _ => Err(reader.problems),
    }
}

struct Reader {
    problems: Vec<Problem>,
    clauses: usize,
    counters: BTreeMap<String, Counter>,
}

/// The keys each kind of clause may have.
const LEAVES: [(&str, &[&str]); 7] = [
    ("attribute", &["attribute", "op", "value", "type"]),
    ("tag", &["tag"]),
    ("stage", &["stage"]),
    ("consent", &["consent"]),
    ("score", &["score", "op", "value"]),
    (
        "event",
        &["event", "where", "within", "at_least", "at_most"],
    ),
    ("created_within", &["created_within"]),
];

impl Reader {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn clause(&mut self, json: &Json, path: &str, depth: usize) -> Option<Condition> {
        self.clauses += 1;
        if self.clauses == MAX_CLAUSES + 1 {
            self.problem(path, format!("at most {MAX_CLAUSES} clauses"));
        }
        if depth > MAX_DEPTH {
            self.problem(path, format!("nested deeper than {MAX_DEPTH}"));
            return None;
        }
        let Some(object) = json.as_object() else {
            self.problem(path, "a clause is an object");
            return None;
        };
        for branch in ["all", "any"] {
            if let Some(list) = object.get(branch) {
                if object.len() != 1 {
                    self.problem(path, format!("`{branch}` stands alone in its clause"));
                    return None;
                }
                let at = format!("{path}.{branch}");
                let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
                    self.problem(at, "a non-empty list of clauses");
                    return None;
                };
                let inner: Vec<Option<Condition>> = (list.iter().enumerate())
                    .map(|(n, c)| self.clause(c, &format!("{at}.{n}"), depth + 1))
                    .collect();
                let inner: Option<Vec<Condition>> = inner.into_iter().collect();
                return inner.map(|inner| match branch {
                    "all" => Condition::All(inner),
                    _ => Condition::Any(inner),
                });
            }
        }
        if let Some(inner) = object.get("not") {
            if object.len() != 1 {
                self.problem(path, "`not` stands alone in its clause");
                return None;
            }
            return (self.clause(inner, &format!("{path}.not"), depth + 1))
                .map(|c| Condition::Not(Box::new(c)));
        }
        let Some((kind, keys)) = LEAVES.iter().find(|(kind, _)| object.contains_key(*kind)) else {
            self.problem(
                path,
                "a clause is one of `all`, `any`, `not`, `attribute`, `tag`, `stage`, `consent`, `score`, `event` and `created_within`",
            );
            return None;
        };
        for key in object.keys() {
            if !keys.contains(&key.as_str()) {
                self.problem(
                    format!("{path}.{key}"),
                    format!("a `{kind}` clause has no `{key}`"),
                );
            }
        }
        let at = |key: &str| format!("{path}.{key}");
        match *kind {
            "attribute" => {
                let name = self.name(&object["attribute"], &at("attribute"))?;
                let test = self.test(object, path, object.get("type"))?;
                Some(Condition::Attribute { name, test })
            }
            "tag" => self.name(&object["tag"], &at("tag")).map(Condition::Tag),
            "consent" => self
                .name(&object["consent"], &at("consent"))
                .map(Condition::Consent),
            "stage" => {
                let stages = match &object["stage"] {
                    Json::Array(list) if !list.is_empty() => (list.iter().enumerate())
                        .map(|(n, s)| self.name(s, &format!("{path}.stage.{n}")))
                        .collect::<Option<Vec<_>>>()?,
                    Json::Array(_) => {
                        self.problem(at("stage"), "a stage or a non-empty list of stages");
                        return None;
                    }
                    single => vec![self.name(single, &at("stage"))?],
                };
                Some(Condition::Stage(stages))
            }
            "score" => {
                let model = self.name(&object["score"], &at("score"))?;
                let test = self.test(object, path, Some(&Json::from("number")))?;
                if test.bound().is_none() {
                    self.problem(at("op"), "a score is compared with a number");
                    return None;
                }
                Some(Condition::Score { model, test })
            }
            "created_within" => self
                .window_length(&object["created_within"], &at("created_within"))
                .map(Condition::CreatedWithin),
            _ => self.events(object, path),
        }
    }

    fn name(&mut self, json: &Json, path: &str) -> Option<String> {
        let Some(text) = json.as_str() else {
            self.problem(path, "a name (text)");
            return None;
        };
        match check_name(text) {
            Ok(()) => Some(text.to_owned()),
            Err(message) => {
                self.problem(path, message);
                None
            }
        }
    }

    fn window_length(&mut self, json: &Json, path: &str) -> Option<Millis> {
        let Some(text) = json.as_str() else {
            self.problem(path, "a duration such as \"7d\"");
            return None;
        };
        match parse_duration(text) {
            Ok(ms) if (MIN_WINDOW..=MAX_WINDOW).contains(&ms) => Some(ms),
            Ok(_) => {
                self.problem(path, "a window is between 1m and 365d");
                None
            }
            Err(message) => {
                self.problem(path, message);
                None
            }
        }
    }

    /// `op` and `value` of a clause, checked against each other and the declared `type`.
    fn test(
        &mut self,
        object: &serde_json::Map<String, Json>,
        path: &str,
        kind: Option<&Json>,
    ) -> Option<Test> {
        let at = |key: &str| format!("{path}.{key}");
        let op = match object.get("op").and_then(Json::as_str) {
            Some(name) => match OPS.iter().find(|(n, _)| *n == name) {
                Some((_, op)) => *op,
                None => {
                    let known: Vec<&str> = OPS.iter().map(|(n, _)| *n).collect();
                    self.problem(
                        at("op"),
                        format!("unknown op `{name}`; one of {}", known.join(", ")),
                    );
                    return None;
                }
            },
            None => {
                self.problem(at("op"), "an op is required (eq, gte, in, …)");
                return None;
            }
        };
        let kind = match kind {
            None => None,
            Some(Json::String(kind)) if TYPES.contains(&kind.as_str()) => Some(kind.as_str()),
            Some(other) => {
                self.problem(
                    at("type"),
                    format!(
                        "unknown attribute type {other}; one of {}",
                        TYPES.join(", ")
                    ),
                );
                return None;
            }
        };
        let value = object.get("value");
        let read = |json: &Json| serde_json::from_value::<Value>(json.clone()).ok();
        let fits = |value: &Value| match (kind, value) {
            (None, _) => true,
            (Some("text"), Value::Text(_)) => true,
            (Some("number"), Value::Integer(_) | Value::Number(_)) => true,
            (Some("boolean"), Value::Boolean(_)) => true,
            (Some("timestamp"), Value::Timestamp(_)) => true,
            (Some("list"), Value::Text(_)) => op == Op::Contains,
            _ => false,
        };
        let mut test = Test {
            op,
            value: None,
            values: Vec::new(),
        };
        match (op, value) {
            (Op::Exists | Op::Missing, None) => {}
            (Op::Exists | Op::Missing, Some(_)) => {
                self.problem(at("value"), format!("`{}` takes no value", op_name(op)));
                return None;
            }
            (Op::In | Op::NotIn, Some(Json::Array(list))) if list.len() > MAX_VALUES => {
                self.problem(at("value"), format!("at most {MAX_VALUES} values"));
                return None;
            }
            (Op::In | Op::NotIn, Some(Json::Array(list))) if !list.is_empty() => {
                for (n, item) in list.iter().enumerate() {
                    match read(item).filter(|v| fits(v)) {
                        Some(v) => test.values.push(v),
                        None => self.problem(format!("{path}.value.{n}"), type_message(kind, item)),
                    }
                }
            }
            (Op::In | Op::NotIn, _) => {
                self.problem(at("value"), "a non-empty list of values");
                return None;
            }
            (_, None) => {
                self.problem(at("value"), format!("`{}` needs a value", op_name(op)));
                return None;
            }
            (_, Some(json)) => {
                let Some(v) = read(json).filter(|v| fits(v)) else {
                    self.problem(at("value"), type_message(kind, json));
                    return None;
                };
                let ordered = matches!(op, Op::Gt | Op::Gte | Op::Lt | Op::Lte);
                if ordered && number(&v).is_none() {
                    self.problem(
                        at("value"),
                        format!(
                            "`{}` compares numbers or timestamps, not {json}",
                            op_name(op)
                        ),
                    );
                    return None;
                }
                if op == Op::Contains && !matches!(v, Value::Text(_)) {
                    self.problem(at("value"), "`contains` looks for a text");
                    return None;
                }
                test.value = Some(v);
            }
        }
        Some(test)
    }

    fn events(&mut self, object: &serde_json::Map<String, Json>, path: &str) -> Option<Condition> {
        let at = |key: &str| format!("{path}.{key}");
        let event = self.name(&object["event"], &at("event"))?;
        let mut filters = Vec::new();
        match object.get("where") {
            None => {}
            Some(Json::Array(list)) if list.len() > MAX_FILTERS => {
                self.problem(at("where"), format!("at most {MAX_FILTERS} filters"));
            }
            Some(Json::Array(list)) => {
                for (n, filter) in list.iter().enumerate() {
                    let here = format!("{path}.where.{n}");
                    let Some(filter) = filter.as_object() else {
                        self.problem(here, "a filter is an object");
                        continue;
                    };
                    for key in filter.keys() {
                        if !["property", "op", "value", "type"].contains(&key.as_str()) {
                            self.problem(
                                format!("{here}.{key}"),
                                format!("a filter has no `{key}`"),
                            );
                        }
                    }
                    let Some(property) = self.name(
                        filter.get("property").unwrap_or(&Json::Null),
                        &format!("{here}.property"),
                    ) else {
                        continue;
                    };
                    if let Some(test) = self.test(filter, &here, filter.get("type")) {
                        filters.push((property, test));
                    }
                }
            }
            Some(_) => self.problem(at("where"), "a list of property filters"),
        }
        let within = match object.get("within") {
            Some(json) => self.window_length(json, &at("within"))?,
            None => {
                self.problem(
                    at("within"),
                    "a window is required (\"7d\"): counts slide with time",
                );
                return None;
            }
        };
        let count = |reader: &mut Reader, key: &str| -> Option<Option<u64>> {
            match object.get(key) {
                None => Some(None),
                Some(json) => match json.as_u64().filter(|n| *n <= MAX_COUNT) {
                    Some(n) => Some(Some(n)),
                    None => {
                        reader.problem(
                            format!("{path}.{key}"),
                            format!("a whole number from 0 to {MAX_COUNT}"),
                        );
                        None
                    }
                },
            }
        };
        let at_least = count(self, "at_least")?;
        let at_most = count(self, "at_most")?;
        let at_least = match (at_least, at_most) {
            (None, None) => 1,
            (Some(least), Some(most)) if least > most => {
                self.problem(
                    at("at_most"),
                    format!("at_most {most} is below at_least {least}: the clause never holds"),
                );
                return None;
            }
            (least, _) => least.unwrap_or(0),
        };
        if at_least == 0 && at_most.is_none() {
            self.problem(at("at_least"), "at_least 0 with no at_most always holds");
            return None;
        }
        let key = counter_key(&event, object.get("where"));
        let counter = self.counters.entry(key.clone()).or_insert(Counter {
            event,
            filters,
            span: 0,
            keep: 0,
        });
        counter.span = counter.span.max(within);
        Some(Condition::Events(Window {
            counter: key,
            within,
            at_least,
            at_most,
        }))
    }
}

fn op_name(op: Op) -> &'static str {
    OPS.iter().find(|(_, o)| *o == op).map_or("?", |(n, _)| n)
}

fn type_message(kind: Option<&str>, json: &Json) -> String {
    match kind {
        Some(kind) => format!("{json} is not a {kind}"),
        None => format!("{json} is not a value an attribute holds"),
    }
}

/// The counter of an event with a filter: the event's name, and a digest of the filter when
/// there is one (two clauses with the same filter share a counter).
fn counter_key(event: &str, filters: Option<&Json>) -> String {
    match filters {
        Some(Json::Array(list)) if !list.is_empty() => {
            let digest = Sha256::digest(Json::Array(list.clone()).to_string());
            format!("{event}#{}", &hex::encode(digest)[..16])
        }
        _ => event.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: Millis = 86_400_000;

    fn paths(json: Json) -> Vec<String> {
        check(&json, "condition")
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn every_problem_is_named_by_its_clause() {
        assert_eq!(
            paths(json!({"all": [
                {"attribute": "size", "op": "gte", "value": "big"},
                {"attribute": "region", "op": "eq", "value": 3, "type": "text"},
                {"attribute": "region", "op": "eq", "value": "x", "type": "colour"},
                {"event": "page_viewed", "within": "0d", "at_least": 3},
                {"event": "page_viewed", "within": "7d", "at_least": 5, "at_most": 2},
                {"event": "page_viewed", "at_least": 1},
                {"tag": "vip", "colour": "red"},
                {"not": {"any": []}},
                {"weather": "fine"},
                {"attribute": "plan", "op": "in", "value": vec![json!("x"); MAX_VALUES + 1]}
            ]})),
            [
                "condition.all.0.value",
                "condition.all.1.value",
                "condition.all.2.type",
                "condition.all.3.within",
                "condition.all.4.at_most",
                "condition.all.5.within",
                "condition.all.6.colour",
                "condition.all.7.not.any",
                "condition.all.8",
                "condition.all.9.value"
            ]
        );
    }

    #[test]
    fn a_window_counts_only_what_is_still_inside_it() {
        let checked = check(
            &json!({"event": "page_viewed", "where": [{"property": "page", "op": "eq", "value": "product"}], "within": "7d", "at_least": 3}),
            "c",
        )
        .unwrap();
        let (key, counter) = checked.counters.iter().next().unwrap();
        assert_eq!((counter.span, counter.keep), (7 * DAY, 3));
        let contact = Contact::new("c".into(), 0);
        let windows = BTreeMap::from([(key.clone(), vec![DAY, 2 * DAY, 3 * DAY])]);
        let half_life = |_: &str| None;
        let facts = |now| Facts {
            contact: &contact,
            windows: &windows,
            half_life: &half_life,
            now,
        };
        assert!(checked.condition.holds(&facts(4 * DAY)));
        assert_eq!(
            checked.condition.next_change(&facts(4 * DAY)),
            Some(8 * DAY)
        );
        assert!(!checked.condition.holds(&facts(8 * DAY)));
        assert!(checked.condition.holds(&facts(8 * DAY - 1)));
    }

    #[test]
    fn a_decaying_score_is_looked_at_again_when_it_reaches_the_bound() {
        let checked = check(&json!({"score": "lead", "op": "gte", "value": 80}), "c").unwrap();
        let mut contact = Contact::new("c".into(), 0);
        contact.scores.insert(
            "lead".into(),
            crate::model::ModelScore {
                points: 160.0,
                at: 0,
                level: 0,
                revision: 0,
                timer_at: None,
            },
        );
        let windows = BTreeMap::new();
        let half_life = |_: &str| Some(30 * DAY);
        let facts = |now| Facts {
            contact: &contact,
            windows: &windows,
            half_life: &half_life,
            now,
        };
        let due = checked.condition.next_change(&facts(0)).unwrap();
        assert!(checked.condition.holds(&facts(due - 2)));
        assert!(!checked.condition.holds(&facts(due)));
    }
}
