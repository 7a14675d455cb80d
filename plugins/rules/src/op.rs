//! Comparison operators of filters and predicates: what each means, and which literal it takes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::literal::{Literal, Subject};

/// How a value is compared with a config literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal (a list equals a string it contains).
    Eq,
    /// Not equal; also true when the value is missing.
    Ne,
    /// Greater than a number.
    Gt,
    /// Greater than or equal to a number.
    Gte,
    /// Less than a number.
    Lt,
    /// Less than or equal to a number.
    Lte,
    /// Equal to one of a list's items.
    In,
    /// Equal to none of a list's items; also true when the value is missing.
    NotIn,
    /// Text containing a substring, or a list containing an item.
    Contains,
    /// Text starting with a prefix.
    StartsWith,
    /// The value is present.
    Exists,
    /// The value is missing.
    NotExists,
    /// A list (tags, interests) holds the item.
    Has,
    /// A list does not hold the item; also true when the value is missing.
    NotHas,
}

/// What kind of literal an operator takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// No `value` at all.
    Nothing,
    /// Any string, number or boolean, or a list of them.
    Anything,
    /// A number.
    Number,
    /// A string.
    Text,
    /// A list.
    List,
}

impl Op {
    /// The operator as written in a config.
    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Contains => "contains",
            Op::StartsWith => "starts_with",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
            Op::Has => "has",
            Op::NotHas => "not_has",
        }
    }

    /// The operator as a reader would write it, for generated explanations ("company_size ≥ 500").
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "≠",
            Op::Gt => ">",
            Op::Gte => "≥",
            Op::Lt => "<",
            Op::Lte => "≤",
            Op::In => "in",
            Op::NotIn => "not in",
            Op::Contains | Op::Has => "contains",
            Op::NotHas => "does not contain",
            Op::StartsWith => "starts with",
            Op::Exists => "is set",
            Op::NotExists => "is not set",
        }
    }

    /// The literal this operator takes.
    pub fn takes(self) -> Takes {
        match self {
            Op::Exists | Op::NotExists => Takes::Nothing,
            Op::Eq | Op::Ne => Takes::Anything,
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => Takes::Number,
            Op::Contains | Op::StartsWith | Op::Has | Op::NotHas => Takes::Text,
            Op::In | Op::NotIn => Takes::List,
        }
    }

    /// Why `literal` does not suit this operator, if it does not.
    pub fn literal_problem(self, literal: Option<&Literal>) -> Option<String> {
        let suits = match (self.takes(), literal) {
            (Takes::Nothing, None) => return None,
            (Takes::Nothing, Some(_)) => {
                return Some(format!("`{self}` takes no `value`"));
            }
            (_, None) => return Some(format!("`{self}` needs a `value`")),
            (Takes::Anything, Some(_)) => true,
            (Takes::Number, Some(l)) => l.as_f64().is_some(),
            (Takes::Text, Some(l)) => l.as_text().is_some(),
            (Takes::List, Some(l)) => matches!(l, Literal::List(_)),
        };
        let kind = match self.takes() {
            Takes::Number => "a number",
            Takes::Text => "a string",
            _ => "a list",
        };
        (!suits).then(|| format!("`{self}` takes {kind}"))
    }

    /// Apply this operator to `subject` (`None` when the attribute or property is missing).
    /// A comparison of mismatched types is false, never an error: data varies, configs do not.
    pub fn holds(self, subject: Option<Subject<'_>>, literal: Option<&Literal>) -> bool {
        let Some(subject) = subject else {
            return matches!(self, Op::NotExists | Op::Ne | Op::NotIn | Op::NotHas);
        };
        let Some(literal) = literal else {
            return self == Op::Exists;
        };
        match self {
            Op::Exists => true,
            Op::NotExists => false,
            Op::Eq => subject.equals(literal),
            Op::Ne => !subject.equals(literal),
            Op::Gt => subject.compare(literal).is_some_and(|o| o.is_gt()),
            Op::Gte => subject.compare(literal).is_some_and(|o| o.is_ge()),
            Op::Lt => subject.compare(literal).is_some_and(|o| o.is_lt()),
            Op::Lte => subject.compare(literal).is_some_and(|o| o.is_le()),
            Op::In => is_listed(subject, literal),
            Op::NotIn => !is_listed(subject, literal),
            Op::Contains => match (subject, literal.as_text()) {
                (Subject::Text(text), Some(part)) => text.contains(part),
                (list, Some(item)) => list.has(item),
                _ => false,
            },
            Op::StartsWith => match (subject, literal.as_text()) {
                (Subject::Text(text), Some(prefix)) => text.starts_with(prefix),
                _ => false,
            },
            Op::Has => literal.as_text().is_some_and(|item| subject.has(item)),
            Op::NotHas => !literal.as_text().is_some_and(|item| subject.has(item)),
        }
    }
}

fn is_listed(subject: Subject<'_>, list: &Literal) -> bool {
    match list {
        Literal::List(items) => items.iter().any(|item| subject.equals(item)),
        _ => false,
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(json: &str) -> Literal {
        serde_json::from_str(json).unwrap()
    }

    fn holds(op: Op, subject: Subject<'_>, literal: &str) -> bool {
        op.holds(Some(subject), Some(&lit(literal)))
    }

    #[test]
    fn numbers_compare_across_integer_float_and_timestamp() {
        assert!(holds(Op::Gte, Subject::Integer(600), "500"));
        assert!(!holds(Op::Gte, Subject::Integer(499), "500"));
        assert!(holds(Op::Lt, Subject::Number(39.5), "40"));
        assert!(holds(Op::Eq, Subject::Number(80.0), "80"));
        assert!(holds(Op::Lte, Subject::Integer(90), "90.0"));
        let timestamp = Subject::from(&wayline_sdk::Value::Timestamp(2_000));
        assert!(holds(Op::Gt, timestamp, "1000"));
    }

    #[test]
    fn text_and_lists() {
        let interests = ["crm".to_owned(), "ai".to_owned()];
        let interests = Subject::List(&interests);
        assert!(holds(Op::Contains, interests, r#""ai""#));
        assert!(holds(Op::Has, interests, r#""ai""#));
        assert!(holds(Op::NotHas, interests, r#""erp""#));
        assert!(holds(Op::Eq, interests, r#""crm""#));
        assert!(holds(Op::In, interests, r#"["erp", "crm"]"#));
        assert!(holds(
            Op::In,
            Subject::Text("tech"),
            r#"["finance", "tech"]"#
        ));
        assert!(holds(
            Op::NotIn,
            Subject::Text("retail"),
            r#"["finance", "tech"]"#
        ));
        assert!(holds(
            Op::Contains,
            Subject::Text("South China"),
            r#""China""#
        ));
        assert!(holds(
            Op::StartsWith,
            Subject::Text("South China"),
            r#""South""#
        ));
        assert!(holds(Op::Eq, Subject::Bool(true), "true"));
    }

    #[test]
    fn a_missing_value_satisfies_only_the_negative_operators() {
        for op in [Op::NotExists, Op::Ne, Op::NotIn, Op::NotHas] {
            assert!(op.holds(None, Some(&lit(r#"["x"]"#))), "{op}");
        }
        for op in [Op::Exists, Op::Eq, Op::Gt, Op::In, Op::Contains, Op::Has] {
            assert!(!op.holds(None, Some(&lit(r#""x""#))), "{op}");
        }
        assert!(Op::Exists.holds(Some(Subject::Text("")), None));
    }

    #[test]
    fn mismatched_types_are_false_not_errors() {
        assert!(!holds(Op::Eq, Subject::Text("5"), "5"));
        assert!(!holds(Op::Gt, Subject::Text("z"), "1"));
        assert!(!holds(Op::StartsWith, Subject::Integer(5), r#""5""#));
    }

    #[test]
    fn each_operator_says_which_literal_it_takes() {
        assert_eq!(
            Op::In.literal_problem(Some(&lit(r#""x""#))).unwrap(),
            "`in` takes a list"
        );
        assert_eq!(
            Op::Gte.literal_problem(Some(&lit(r#""ten""#))).unwrap(),
            "`gte` takes a number"
        );
        assert_eq!(
            Op::StartsWith.literal_problem(Some(&lit("1"))).unwrap(),
            "`starts_with` takes a string"
        );
        assert_eq!(
            Op::Eq.literal_problem(None).unwrap(),
            "`eq` needs a `value`"
        );
        assert_eq!(
            Op::Exists.literal_problem(Some(&lit("1"))).unwrap(),
            "`exists` takes no `value`"
        );
        assert!(Op::Exists.literal_problem(None).is_none());
        assert!(Op::Eq.literal_problem(Some(&lit("[1, 2]"))).is_none());
    }
}
