//! Comparisons of a contact's or event's typed values against literals from a plugin config.
//!
//! Config literals are JSON: numbers compare numerically with integers, numbers and timestamps
//! (milliseconds); strings with text; booleans with booleans; a string against a text list
//! means "the list contains it". A comparison of mismatched types is simply false.

use serde::Deserialize;
use serde_json::Value as Json;
use wayline_sdk::{ConfigProblem, Value};

/// How a value is compared with a config literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Contains,
    StartsWith,
    Exists,
    NotExists,
}

impl Op {
    /// Whether this operator takes a literal at all.
    pub fn needs_value(self) -> bool {
        !matches!(self, Op::Exists | Op::NotExists)
    }

    /// Check that `literal` suits this operator; `path` locates it in the config.
    pub fn check_literal(self, literal: Option<&Json>, path: &str) -> Result<(), ConfigProblem> {
        let problem = |message: &str| Err(ConfigProblem::new(path, message));
        match (self, literal) {
            (Op::Exists | Op::NotExists, _) => Ok(()),
            (_, None) => problem("this operator needs a `value`"),
            (Op::In | Op::NotIn, Some(Json::Array(_))) => Ok(()),
            (Op::In | Op::NotIn, Some(_)) => problem("`in` and `not_in` take a list"),
            (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(Json::Number(_))) => Ok(()),
            (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(_)) => {
                problem("ordering operators take a number")
            }
            (Op::StartsWith, Some(Json::String(_))) => Ok(()),
            (Op::StartsWith, Some(_)) => problem("`starts_with` takes a string"),
            (_, Some(Json::Null | Json::Object(_))) => {
                problem("a value must be a string, number, boolean or list")
            }
            _ => Ok(()),
        }
    }

    /// Apply this operator to `value` (absent when the attribute or property is missing).
    pub fn holds(self, value: Option<&Value>, literal: Option<&Json>) -> bool {
        let Some(value) = value else {
            return self == Op::NotExists || self == Op::Ne || self == Op::NotIn;
        };
        let literal = literal.unwrap_or(&Json::Null);
        match self {
            Op::Exists => true,
            Op::NotExists => false,
            Op::Eq => equals(value, literal),
            Op::Ne => !equals(value, literal),
            Op::Gt => compare(value, literal).is_some_and(|o| o.is_gt()),
            Op::Gte => compare(value, literal).is_some_and(|o| o.is_ge()),
            Op::Lt => compare(value, literal).is_some_and(|o| o.is_lt()),
            Op::Lte => compare(value, literal).is_some_and(|o| o.is_le()),
            Op::In => literal
                .as_array()
                .is_some_and(|items| items.iter().any(|item| equals(value, item))),
            Op::NotIn => !literal
                .as_array()
                .is_some_and(|items| items.iter().any(|item| equals(value, item))),
            Op::Contains => match (value, literal) {
                (Value::Text(text), Json::String(part)) => text.contains(part.as_str()),
                (Value::TextList(items), Json::String(item)) => items.iter().any(|i| i == item),
                _ => false,
            },
            Op::StartsWith => {
                matches!((value, literal), (Value::Text(text), Json::String(prefix)) if text.starts_with(prefix.as_str()))
            }
        }
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(i) | Value::Timestamp(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        _ => None,
    }
}

/// Equality across the JSON/typed boundary.
pub fn equals(value: &Value, literal: &Json) -> bool {
    match (value, literal) {
        (Value::Text(text), Json::String(s)) => text == s,
        (Value::Boolean(b), Json::Bool(l)) => b == l,
        (Value::TextList(items), Json::String(s)) => items.iter().any(|i| i == s),
        (Value::TextList(items), Json::Array(list)) => {
            items.len() == list.len() && items.iter().zip(list).all(|(i, l)| l.as_str() == Some(i))
        }
        (_, Json::Number(n)) => number(value).zip(n.as_f64()).is_some_and(|(a, b)| a == b),
        _ => false,
    }
}

fn compare(value: &Value, literal: &Json) -> Option<std::cmp::Ordering> {
    number(value)?.partial_cmp(&literal.as_f64()?)
}

/// `{"property": "source", "op": "eq", "value": "web"}`: one filter on an event property.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    pub property: String,
    pub op: Op,
    #[serde(default)]
    pub value: Option<Json>,
}

impl PropertyFilter {
    /// Does the event's property satisfy this filter?
    pub fn holds(&self, event: &wayline_sdk::Event) -> bool {
        self.op
            .holds(event.property(&self.property), self.value.as_ref())
    }

    /// Problems with this filter, located under `path`.
    pub fn check(&self, path: &str) -> Option<ConfigProblem> {
        if self.property.is_empty() {
            return Some(ConfigProblem::new(
                format!("{path}.property"),
                "must not be empty",
            ));
        }
        self.op
            .check_literal(self.value.as_ref(), &format!("{path}.value"))
            .err()
    }
}

/// Parse a JSON config, locating a type error at its path (`rules[2].points`).
pub fn parse<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, Vec<ConfigProblem>> {
    let mut deserializer = serde_json::Deserializer::from_str(config);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![ConfigProblem::new(
            path,
            format!("invalid config: {}", error.inner()),
        )]
    })
}

/// Parse a config on the hot path: a config was validated at publish time, so skip the path
/// tracking (it doubles the cost) and only say what went wrong if it somehow did.
pub fn parse_fast<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|error| format!("invalid config: {error}"))
}

/// A plugin's config document: parsed with located errors when a journey is published, and
/// quickly on the hot path, where it was already validated.
pub trait PluginConfig: serde::de::DeserializeOwned {
    /// What serde cannot see: empty names, literals that do not suit their operator, and so on.
    fn problems(&self) -> Vec<ConfigProblem>;

    /// Parse and check, locating every problem (for `validate-config`).
    fn parse(config: &str) -> Result<Self, Vec<ConfigProblem>> {
        let parsed: Self = parse(config)?;
        let problems = parsed.problems();
        if problems.is_empty() {
            Ok(parsed)
        } else {
            Err(problems)
        }
    }

    /// Parse on the hot path; a config that is somehow bad still gets a clear error.
    fn load(config: &str) -> Result<Self, String> {
        let parsed: Self = parse_fast(config)?;
        let problems = parsed.problems();
        if problems.is_empty() {
            Ok(parsed)
        } else {
            Err(describe_problems(&problems))
        }
    }
}

/// Join problems into one line, for a call that got a config it should have refused.
pub fn describe_problems(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| {
            if p.path.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.path, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_across_integer_float_and_timestamp() {
        assert!(Op::Gte.holds(Some(&Value::Integer(600)), Some(&json!(500))));
        assert!(!Op::Gte.holds(Some(&Value::Integer(499)), Some(&json!(500))));
        assert!(Op::Lt.holds(Some(&Value::Number(39.5)), Some(&json!(40))));
        assert!(Op::Eq.holds(Some(&Value::Number(80.0)), Some(&json!(80))));
        assert!(Op::Gt.holds(Some(&Value::Timestamp(2_000)), Some(&json!(1_000))));
    }

    #[test]
    fn text_lists_and_membership() {
        let interests = Value::TextList(vec!["crm".into(), "ai".into()]);
        assert!(Op::Contains.holds(Some(&interests), Some(&json!("ai"))));
        assert!(Op::Eq.holds(Some(&interests), Some(&json!("crm"))));
        assert!(Op::In.holds(
            Some(&Value::Text("tech".into())),
            Some(&json!(["finance", "tech"]))
        ));
        assert!(Op::NotIn.holds(
            Some(&Value::Text("retail".into())),
            Some(&json!(["finance", "tech"]))
        ));
        assert!(Op::StartsWith.holds(
            Some(&Value::Text("South China".into())),
            Some(&json!("South"))
        ));
    }

    #[test]
    fn missing_values_only_satisfy_negative_operators() {
        for op in [Op::NotExists, Op::Ne, Op::NotIn] {
            assert!(op.holds(None, Some(&json!(["x"]))), "{op:?}");
        }
        for op in [Op::Exists, Op::Eq, Op::Gt, Op::In, Op::Contains] {
            assert!(!op.holds(None, Some(&json!("x"))), "{op:?}");
        }
    }

    #[test]
    fn mismatched_types_are_false_not_errors() {
        assert!(!Op::Eq.holds(Some(&Value::Text("5".into())), Some(&json!(5))));
        assert!(!Op::Gt.holds(Some(&Value::Text("z".into())), Some(&json!(1))));
    }

    #[test]
    fn literals_are_checked_against_their_operator() {
        assert!(Op::In.check_literal(Some(&json!("x")), "p").is_err());
        assert!(Op::Gte.check_literal(Some(&json!("ten")), "p").is_err());
        assert!(Op::Eq.check_literal(None, "p").is_err());
        assert!(Op::Exists.check_literal(None, "p").is_ok());
        assert!(Op::Eq.check_literal(Some(&json!(null)), "p").is_err());
    }
}
