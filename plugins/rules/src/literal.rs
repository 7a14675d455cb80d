//! Literal values written in a plugin config, and a borrowed view of the values they are
//! compared with.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use wayline_sdk::Value;

/// A value written in a config: `"web"`, `500`, `0.25`, `true` or a list of those.
///
/// Null and objects are not values: a config that writes one is refused where it stands, so
/// `validate-config` can say exactly which key is wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `true` or `false`.
    Bool(bool),
    /// A JSON number without a fraction or exponent that fits an `i64`.
    Integer(i64),
    /// Any other JSON number.
    Number(f64),
    /// A JSON string.
    Text(String),
    /// A JSON array of strings, numbers or booleans (never nested).
    List(Vec<Literal>),
}

impl Literal {
    /// The literal as a number, for integers and other numbers alike.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Literal::Integer(i) => Some(*i as f64),
            Literal::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The literal as text, if it is a string.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Literal::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The literal's items: a list's elements, or the literal itself.
    pub fn items(&self) -> &[Literal] {
        match self {
            Literal::List(items) => items,
            single => std::slice::from_ref(single),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Integer(i) => write!(f, "{i}"),
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Text(text) => f.write_str(text),
            Literal::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Written as it reads in JSON (a plain string, number, boolean or list). A prepared config is
/// not human-readable: there each literal says which kind it is, so it decodes without asking
/// the format what comes next (which postcard, the fast encoding, cannot answer).
impl Serialize for Literal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return Tagged::from(self).serialize(serializer);
        }
        match self {
            Literal::Bool(b) => serializer.serialize_bool(*b),
            Literal::Integer(i) => serializer.serialize_i64(*i),
            Literal::Number(n) => serializer.serialize_f64(*n),
            Literal::Text(text) => serializer.serialize_str(text),
            Literal::List(items) => serializer.collect_seq(items),
        }
    }
}

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return deserializer.deserialize_any(LiteralVisitor);
        }
        match TaggedOwned::deserialize(deserializer)? {
            TaggedOwned::Bool(b) => Ok(Literal::Bool(b)),
            TaggedOwned::Integer(i) => Ok(Literal::Integer(i)),
            TaggedOwned::Number(n) => Ok(Literal::Number(n)),
            TaggedOwned::Text(text) => Ok(Literal::Text(text)),
            TaggedOwned::List(items) if items.iter().any(|i| matches!(i, Literal::List(_))) => Err(
                de::Error::custom("a list may hold strings, numbers and booleans, not lists"),
            ),
            TaggedOwned::List(items) => Ok(Literal::List(items)),
        }
    }
}

/// A literal in a prepared config, borrowed for writing.
#[derive(serde::Serialize)]
enum Tagged<'a> {
    Bool(bool),
    Integer(i64),
    Number(f64),
    Text(&'a str),
    List(&'a [Literal]),
}

/// A literal in a prepared config, as read; the same cases in the same order as [`Tagged`].
#[derive(serde::Deserialize)]
enum TaggedOwned {
    Bool(bool),
    Integer(i64),
    Number(f64),
    Text(String),
    List(Vec<Literal>),
}

impl<'a> From<&'a Literal> for Tagged<'a> {
    fn from(literal: &'a Literal) -> Self {
        match literal {
            Literal::Bool(b) => Tagged::Bool(*b),
            Literal::Integer(i) => Tagged::Integer(*i),
            Literal::Number(n) => Tagged::Number(*n),
            Literal::Text(text) => Tagged::Text(text),
            Literal::List(items) => Tagged::List(items),
        }
    }
}

struct LiteralVisitor;

impl<'de> Visitor<'de> for LiteralVisitor {
    type Value = Literal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number, boolean or list of them")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Literal, E> {
        Ok(Literal::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Literal, E> {
        Ok(Literal::Integer(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Literal, E> {
        Ok(i64::try_from(u).map_or(Literal::Number(u as f64), Literal::Integer))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Literal, E> {
        Ok(Literal::Number(n))
    }

    fn visit_str<E>(self, text: &str) -> Result<Literal, E> {
        Ok(Literal::Text(text.to_owned()))
    }

    fn visit_string<E>(self, text: String) -> Result<Literal, E> {
        Ok(Literal::Text(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Literal, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Literal>()? {
            if let Literal::List(_) = item {
                return Err(de::Error::custom(
                    "a list may hold strings, numbers and booleans, not lists",
                ));
            }
            items.push(item);
        }
        Ok(Literal::List(items))
    }
}

/// A borrowed view of a contact's or event's value (or of the score, stage, tags), so
/// comparing never copies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subject<'a> {
    /// A boolean.
    Bool(bool),
    /// An integer; timestamps are integers of milliseconds.
    Integer(i64),
    /// A floating-point number.
    Number(f64),
    /// Text.
    Text(&'a str),
    /// A list of texts, such as tags or interests.
    List(&'a [String]),
}

impl<'a> From<&'a Value> for Subject<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Boolean(b) => Subject::Bool(*b),
            Value::Integer(i) | Value::Timestamp(i) => Subject::Integer(*i),
            Value::Number(n) => Subject::Number(*n),
            Value::Text(text) => Subject::Text(text),
            Value::TextList(items) => Subject::List(items),
        }
    }
}

impl Subject<'_> {
    fn as_f64(self) -> Option<f64> {
        match self {
            Subject::Integer(i) => Some(i as f64),
            Subject::Number(n) => Some(n),
            _ => None,
        }
    }

    /// Equality across the config/data boundary: numbers numerically (integers exactly), text
    /// with text, booleans with booleans; a list "equals" a string it contains, and a list
    /// literal with the same texts in the same order.
    pub fn equals(self, literal: &Literal) -> bool {
        match (self, literal) {
            (Subject::Bool(a), Literal::Bool(b)) => a == *b,
            (Subject::Integer(a), Literal::Integer(b)) => a == *b,
            (Subject::Text(a), Literal::Text(b)) => a == b,
            (Subject::List(items), Literal::Text(b)) => items.iter().any(|item| item == b),
            (Subject::List(items), Literal::List(list)) => {
                items.len() == list.len()
                    && items
                        .iter()
                        .zip(list)
                        .all(|(item, l)| l.as_text() == Some(item))
            }
            (subject, literal) => subject
                .as_f64()
                .zip(literal.as_f64())
                .is_some_and(|(a, b)| a == b),
        }
    }

    /// Numeric ordering against a number literal; `None` when either side is not a number.
    pub fn compare(self, literal: &Literal) -> Option<std::cmp::Ordering> {
        match (self, literal) {
            (Subject::Integer(a), Literal::Integer(b)) => Some(a.cmp(b)),
            _ => self.as_f64()?.partial_cmp(&literal.as_f64()?),
        }
    }

    /// Whether this is a list holding `item`.
    pub fn has(self, item: &str) -> bool {
        matches!(self, Subject::List(items) if items.iter().any(|i| i == item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(json: &str) -> Result<Literal, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn json_maps_to_literals() {
        assert_eq!(literal("500").unwrap(), Literal::Integer(500));
        assert_eq!(literal("-3").unwrap(), Literal::Integer(-3));
        assert_eq!(literal("0.25").unwrap(), Literal::Number(0.25));
        assert_eq!(literal(r#""web""#).unwrap(), Literal::Text("web".into()));
        assert_eq!(
            literal(r#"["a", 1]"#).unwrap(),
            Literal::List(vec![Literal::Text("a".into()), Literal::Integer(1)])
        );
    }

    #[test]
    fn null_objects_and_nested_lists_are_not_literals() {
        assert!(literal("null").is_err());
        assert!(literal(r#"{"a": 1}"#).is_err());
        assert!(literal("[[1]]").is_err());
    }

    #[test]
    fn every_kind_of_literal_survives_a_prepared_config_in_the_fast_encoding() {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        struct Values {
            values: Vec<Literal>,
        }
        impl wayline_sdk::PluginConfig for Values {}
        let json = r#"{"values": [true, 500, 0.25, "web", ["a", 1]]}"#;
        let prepared = wayline_sdk::config::prepare::<Values>(json, "t@1")
            .unwrap()
            .config;
        // The header's third byte names the encoding: 2 is postcard, 1 MessagePack.
        assert_eq!(prepared[2], 2, "literals must not force the slow encoding");
        let values = wayline_sdk::config::load::<Values>(&prepared, "t@1").unwrap();
        assert_eq!(
            values.values,
            [
                Literal::Bool(true),
                Literal::Integer(500),
                Literal::Number(0.25),
                Literal::Text("web".into()),
                Literal::List(vec![Literal::Text("a".into()), Literal::Integer(1)]),
            ]
        );
    }

    #[test]
    fn integers_compare_exactly_beyond_f64_precision() {
        let big = Subject::Integer(9_007_199_254_740_993);
        assert!(!big.equals(&Literal::Integer(9_007_199_254_740_992)));
        assert!(big.equals(&Literal::Integer(9_007_199_254_740_993)));
    }
}
