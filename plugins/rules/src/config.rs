//! Parsing a plugin's JSON config and reporting what is wrong with it, located by path.

use std::fmt;

use serde::de::{Deserialize, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use wayline_sdk::ConfigProblem;

/// Where something sits in a config document (`rules[2].points`).
///
/// Built from borrowed pieces and only rendered when a problem is reported, so checking a
/// valid config on the hot path allocates nothing.
#[derive(Debug, Clone, Copy)]
pub enum Path<'p> {
    /// The document itself.
    Root,
    /// A key of an object.
    Field(&'p Path<'p>, &'p str),
    /// An item of a list.
    Index(&'p Path<'p>, usize),
}

/// The document itself, to build paths from.
pub static ROOT: Path<'static> = Path::Root;

impl<'p> Path<'p> {
    /// The key `name` under this path.
    pub fn field(&'p self, name: &'p str) -> Path<'p> {
        Path::Field(self, name)
    }

    /// The item `index` under this path.
    pub fn index(&'p self, index: usize) -> Path<'p> {
        Path::Index(self, index)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// The problems found in one config, in document order.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// Report `message` about what is at `path`.
    pub fn add(&mut self, path: &Path<'_>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(path.to_string(), message));
    }

    /// Report `problem` (if any) about what is at `path`.
    pub fn add_if(&mut self, path: &Path<'_>, problem: Option<String>) {
        if let Some(message) = problem {
            self.add(path, message);
        }
    }

    /// Report that the text at `path` is empty, if it is.
    pub fn require_text(&mut self, path: &Path<'_>, text: impl AsRef<[u8]>) {
        if text.as_ref().is_empty() {
            self.add(path, "must not be empty");
        }
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems found.
    pub fn into_vec(self) -> Vec<ConfigProblem> {
        self.0
    }
}

/// What the types of a config cannot say: empty names, literals that do not suit their
/// operator, and so on.
pub trait Check {
    /// Report every problem, located. It runs when a journey is published (`validate-config`);
    /// calls decode the prepared config without checking it again, so every plugin built on
    /// these rules must evaluate any config that decodes without panicking (a rule it cannot
    /// apply simply does not match).
    fn check(&self, problems: &mut Problems);
}

/// Parse and check a JSON config, locating every problem (for `validate-config`, through
/// [`wayline_sdk::PluginConfig::parse`]).
pub fn parse<T: DeserializeOwned + Check>(config: &str) -> Result<T, Vec<ConfigProblem>> {
    let parsed: T = parse_located(config)?;
    let mut problems = Problems::default();
    parsed.check(&mut problems);
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems.into_vec())
    }
}

/// Parse a JSON config, locating a type error at its path (`rules[2].points`). Path tracking
/// doubles the cost of parsing, so only `validate-config` pays for it.
fn parse_located<T: DeserializeOwned>(config: &str) -> Result<T, Vec<ConfigProblem>> {
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

/// A JSON object read as its entries in document order (`{"industry": "tech", ...}`), for
/// configs whose keys are the user's names and whose order should carry through.
#[derive(Debug, Clone, PartialEq)]
pub struct Entries<V>(pub Vec<(String, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<V> Entries<V> {
    /// The entries in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Report empty names and names given twice (`same` decides when two names are the same).
    pub fn check_names(
        &self,
        at: &Path<'_>,
        same: fn(&str, &str) -> bool,
        problems: &mut Problems,
    ) {
        for (i, (name, _)) in self.0.iter().enumerate() {
            if name.is_empty() {
                problems.add(at, "names must not be empty");
            } else if self.0[..i].iter().any(|(earlier, _)| same(earlier, name)) {
                problems.add(&at.field(name), "given twice");
            }
        }
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

impl<V: Serialize> Serialize for Entries<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

struct EntriesVisitor<V>(std::marker::PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
    type Value = Entries<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(entry) = map.next_entry::<String, V>()? {
            entries.push(entry);
        }
        Ok(Entries(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_the_document() {
        let rules = ROOT.field("rules");
        let rule = rules.index(2);
        assert_eq!(rule.field("points").to_string(), "rules[2].points");
        assert_eq!(
            rule.field("where").index(0).to_string(),
            "rules[2].where[0]"
        );
        assert_eq!(ROOT.to_string(), "");
    }

    #[test]
    fn entries_keep_document_order_and_locate_errors() {
        let entries: Entries<i64> = serde_json::from_str(r#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(entries.0, [("z".to_owned(), 1), ("a".to_owned(), 2)]);
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Config {
            set: Entries<i64>,
        }
        let error = parse_located::<Config>(r#"{"set": {"a": 1, "b": "x"}}"#).unwrap_err();
        assert_eq!(error[0].path, "set.b");
    }

    #[test]
    fn duplicate_and_empty_names_are_reported() {
        let entries: Entries<i64> = serde_json::from_str(r#"{"A": 1, "a": 2, "": 3}"#).unwrap();
        let mut problems = Problems::default();
        entries.check_names(
            &ROOT.field("headers"),
            str::eq_ignore_ascii_case,
            &mut problems,
        );
        let paths: Vec<String> = problems.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["headers.a", "headers"]);
    }
}
