//! A multi-way branch on a contact's score, lifecycle stage, tags, segments, attributes,
//! consent, or the properties of the event that brought the contact to this step. The first branch whose
//! predicates all hold (`when`) — or any of them holds (`any`) — wins; otherwise `default`.
//!
//! ```json
//! {"branches": [
//!    {"label": "high-potential", "when": [{"field": "scores.lead", "op": "gte", "value": 70},
//!                                         {"field": "scores.lead", "op": "lte", "value": 90}]},
//!    {"label": "watching", "when": [{"field": "scores.lead", "op": "gte", "value": 40}]}],
//!  "default": "low-intent"}
//! ```
//! Fields and the operators they take:
//! - `scores.MODEL` (a scoring model's points, decay included, 0 for a contact without any;
//!   missing for a model the host does not define) and `score` (the points journey actions
//!   gave): `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in`, `not_in` with numbers;
//! - `segment`: `has` / `not_has` with the segment's name;
//! - `stage` (lifecycle stage): `eq`, `ne`, `in`, `not_in`, `starts_with`, `contains` with strings;
//! - `tag`: `has` / `not_has` with the tag's name;
//! - `consent.CHANNEL`: `eq`, `ne`, `in`, `not_in` with `"granted"`, `"revoked"` or `"unknown"`;
//! - `attribute.NAME` and `event.NAME`: any operator of the event trigger's filters, plus
//!   `has` / `not_has` for lists. An `event.` predicate is false (or true for `ne`, `not_in`,
//!   `not_has`, `not_exists`) when no event brought the contact here.

use serde::{Deserialize, Serialize};
use wayline_rules::{Check, Literal, Op, Path, Problems, ROOT, Subject};
use wayline_sdk::condition::*;

/// The condition's config.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    // Both are required; they default here so that a missing one is reported at its own path.
    #[serde(default)]
    branches: Vec<Branch>,
    #[serde(default)]
    default: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Branch {
    label: String,
    #[serde(default)]
    when: Option<Vec<Predicate>>,
    #[serde(default)]
    any: Option<Vec<Predicate>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Predicate {
    field: String,
    op: Op,
    #[serde(default)]
    value: Option<Literal>,
}

/// What a predicate's `field` names, resolved from its text.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field<'a> {
    Score,
    /// `scores.MODEL`, the whole text: the host shows it as an attribute of that name.
    ModelScore(&'a str),
    Stage,
    Tag,
    Segment,
    Attribute(&'a str),
    EventProperty(&'a str),
    Consent(&'a str),
}

/// Which literals a field's values can meaningfully be compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Number,
    Text,
    ConsentState,
    Anything,
}

const CONSENT_STATES: [&str; 3] = ["granted", "revoked", "unknown"];
/// The attribute the host shows a contact's segments in.
const SEGMENTS: &str = "segments";

impl<'a> Field<'a> {
    fn parse(text: &'a str) -> Option<Field<'a>> {
        Some(match text {
            "score" => Field::Score,
            "stage" => Field::Stage,
            "tag" => Field::Tag,
            "segment" => Field::Segment,
            _ => match text.split_once('.')? {
                (_, "") => return None,
                ("scores", _) => Field::ModelScore(text),
                ("attribute", name) => Field::Attribute(name),
                ("event", name) => Field::EventProperty(name),
                ("consent", channel) => Field::Consent(channel),
                _ => return None,
            },
        })
    }

    /// The operators this field takes, as written in a problem message, and its literals.
    fn rules(self) -> (&'static [Op], &'static str, Expect) {
        use Op::*;
        match self {
            Field::Score | Field::ModelScore(_) => (
                &[Eq, Ne, Gt, Gte, Lt, Lte, In, NotIn],
                "eq, ne, gt, gte, lt, lte, in or not_in",
                Expect::Number,
            ),
            Field::Stage => (
                &[Eq, Ne, In, NotIn, StartsWith, Contains],
                "eq, ne, in, not_in, starts_with or contains",
                Expect::Text,
            ),
            Field::Tag | Field::Segment => (&[Has, NotHas], "has or not_has", Expect::Text),
            Field::Consent(_) => (
                &[Eq, Ne, In, NotIn],
                "eq, ne, in or not_in",
                Expect::ConsentState,
            ),
            Field::Attribute(_) | Field::EventProperty(_) => (&[], "", Expect::Anything),
        }
    }

    /// The value this field names, borrowed from the contact or event; `None` when missing.
    fn subject<'c>(self, contact: &'c Contact, event: Option<&'c Event>) -> Option<Subject<'c>> {
        match self {
            Field::Score => Some(Subject::Number(contact.score)),
            Field::Stage => Some(Subject::Text(&contact.lifecycle_stage)),
            Field::Tag => Some(Subject::List(&contact.tags)),
            // The host shows the segments as the list attribute `segments` to a plugin that
            // names it; none is no segment.
            Field::Segment => Some(
                contact
                    .attribute(SEGMENTS)
                    .map_or(Subject::List(&[]), Subject::from),
            ),
            Field::Attribute(name) | Field::ModelScore(name) => {
                contact.attribute(name).map(Subject::from)
            }
            Field::EventProperty(name) => event?.property(name).map(Subject::from),
            Field::Consent(channel) => Some(Subject::Text(consent(contact, channel))),
        }
    }
}

fn consent<'c>(contact: &'c Contact, channel: &str) -> &'c str {
    let state = contact
        .consents
        .iter()
        .find(|c| c.channel == channel)
        .map(|c| c.state);
    match state {
        Some(ConsentState::Granted) => "granted",
        Some(ConsentState::Revoked) => "revoked",
        Some(ConsentState::Unknown) | None => "unknown",
    }
}

impl Predicate {
    fn holds(&self, contact: &Contact, event: Option<&Event>) -> bool {
        // A config that passed `check` always names a known field.
        Field::parse(&self.field).is_some_and(|field| {
            self.op
                .holds(field.subject(contact, event), self.value.as_ref())
        })
    }

    fn check(&self, at: &Path<'_>, problems: &mut Problems) {
        let Some(field) = Field::parse(&self.field) else {
            problems.add(
                &at.field("field"),
                format!(
                    "unknown field `{}`; use score, scores.MODEL, stage, tag, segment, attribute.NAME, event.NAME or consent.CHANNEL",
                    self.field
                ),
            );
            return;
        };
        let (ops, op_names, expect) = field.rules();
        if !ops.is_empty() && !ops.contains(&self.op) {
            problems.add(
                &at.field("op"),
                format!("`{}` takes {op_names}, not `{}`", self.field, self.op),
            );
            return;
        }
        let value = at.field("value");
        if let Some(problem) = self.op.literal_problem(self.value.as_ref()) {
            problems.add(&value, problem);
        } else if let Some(literal) = &self.value {
            check_literal_suits(literal, expect, &self.field, &value, problems);
        }
    }
}

fn check_literal_suits(
    literal: &Literal,
    expect: Expect,
    field: &str,
    at: &Path<'_>,
    problems: &mut Problems,
) {
    let suits = |item: &Literal| match expect {
        Expect::Number => item.as_f64().is_some(),
        Expect::Text => item.as_text().is_some(),
        Expect::ConsentState => item.as_text().is_some_and(|s| CONSENT_STATES.contains(&s)),
        Expect::Anything => true,
    };
    if !literal.items().iter().all(suits) {
        let wanted = match expect {
            Expect::Number => "is a number",
            Expect::Text => "is text",
            _ => "is \"granted\", \"revoked\" or \"unknown\"",
        };
        problems.add(at, format!("`{field}` {wanted}"));
    }
}

impl Branch {
    fn holds(&self, contact: &Contact, event: Option<&Event>) -> bool {
        match (&self.when, &self.any) {
            (Some(all), None) => all.iter().all(|p| p.holds(contact, event)),
            (None, Some(any)) => any.iter().any(|p| p.holds(contact, event)),
            // Refused by `check`.
            _ => false,
        }
    }

    fn check(&self, at: &Path<'_>, problems: &mut Problems) {
        problems.require_text(&at.field("label"), &self.label);
        let (key, predicates) = match (&self.when, &self.any) {
            (Some(when), None) => ("when", when),
            (None, Some(any)) => ("any", any),
            _ => {
                problems.add(
                    at,
                    "give exactly one of `when` (all must hold) or `any` (one must hold)",
                );
                return;
            }
        };
        let list = at.field(key);
        if predicates.is_empty() {
            problems.add(&list, "give at least one predicate");
        }
        for (i, predicate) in predicates.iter().enumerate() {
            predicate.check(&list.index(i), problems);
        }
    }
}

impl Config {
    /// The label of the branch the contact takes.
    pub fn branch(&self, contact: &Contact, event: Option<&Event>) -> &str {
        self.branches
            .iter()
            .find(|b| b.holds(contact, event))
            .map_or(self.default.as_str(), |b| b.label.as_str())
    }
}

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        let branches = ROOT.field("branches");
        if self.branches.is_empty() {
            problems.add(&branches, "give at least one branch");
        }
        for (i, branch) in self.branches.iter().enumerate() {
            let at = branches.index(i);
            branch.check(&at, problems);
            let label_taken = self.branches[..i].iter().any(|b| b.label == branch.label);
            if label_taken && !branch.label.is_empty() {
                problems.add(
                    &at.field("label"),
                    format!("label `{}` is used by an earlier branch", branch.label),
                );
            }
        }
        if self.default.is_empty() {
            problems.add(
                &ROOT.field("default"),
                "give the label taken when no branch holds",
            );
        }
    }
}

impl PluginConfig for Config {
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        wayline_rules::parse(json)
    }

    /// The `attribute.NAME` and `scores.MODEL` fields of every branch's predicates, and
    /// `segments` for a `segment` field: the host shows a contact's standing to a plugin as
    /// attributes of those names.
    fn attributes(&self) -> Option<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        let predicates = self.branches.iter().flat_map(|branch| {
            let when = branch.when.iter().flatten();
            when.chain(branch.any.iter().flatten())
        });
        for predicate in predicates {
            let name = match Field::parse(&predicate.field) {
                Some(Field::Attribute(name) | Field::ModelScore(name)) => name,
                Some(Field::Segment) => SEGMENTS,
                _ => continue,
            };
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        Some(names)
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct AttributeCondition;

impl Condition for AttributeCondition {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Branches on score, lifecycle stage, tags, attributes, consent or event properties",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info
    }

    fn evaluate(config: Config, contact: Contact, event: Option<Event>) -> Result<String, String> {
        Ok(config.branch(&contact, event.as_ref()).to_owned())
    }
}

export!(AttributeCondition);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "attribute-condition config",
  "type": "object",
  "required": ["branches", "default"],
  "properties": {
    "branches": {
      "type": "array",
      "minItems": 1,
      "description": "Tried in order; the first whose predicates hold gives the label",
      "items": {
        "type": "object",
        "required": ["label"],
        "properties": {
          "label": {"type": "string", "minLength": 1},
          "when": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/predicate"}, "description": "All must hold"},
          "any": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/predicate"}, "description": "One must hold"}
        },
        "oneOf": [{"required": ["when"]}, {"required": ["any"]}],
        "additionalProperties": false
      }
    },
    "default": {"type": "string", "minLength": 1, "description": "The label when no branch holds"}
  },
  "additionalProperties": false,
  "$defs": {
    "literal": {"type": ["string", "number", "boolean"]},
    "predicate": {
      "type": "object",
      "required": ["field", "op"],
      "properties": {
        "field": {"type": "string", "pattern": "^(score|stage|tag|(attribute|event|consent)\\..+)$"},
        "op": {"enum": ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "starts_with", "has", "not_has", "exists", "not_exists"]},
        "value": {"anyOf": [{"$ref": "#/$defs/literal"}, {"type": "array", "items": {"$ref": "#/$defs/literal"}}]}
      },
      "additionalProperties": false
    }
  }
}"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(score: f64, attributes: Vec<Attribute>, tags: &[&str]) -> Contact {
        Contact {
            id: "c1".into(),
            attributes,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            score,
            lifecycle_stage: "growth".into(),
            consents: vec![
                ChannelConsent {
                    channel: "email".into(),
                    state: ConsentState::Granted,
                },
                ChannelConsent {
                    channel: "sms".into(),
                    state: ConsentState::Revoked,
                },
            ],
            timezone: "Asia/Shanghai".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    fn lead(score: f64) -> Contact {
        contact(score, vec![], &[])
    }

    fn text(name: &str, value: &str) -> Attribute {
        Attribute::new(name, Value::Text(value.into()))
    }

    fn paths(config: &str) -> Vec<String> {
        Config::parse(config)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    const NURTURE_TIERS: &str = r#"{"branches": [
        {"label": "high-potential", "when": [{"field": "score", "op": "gte", "value": 70}, {"field": "score", "op": "lte", "value": 90}]},
        {"label": "watching", "when": [{"field": "score", "op": "gte", "value": 40}, {"field": "score", "op": "lt", "value": 70}]}],
        "default": "low-intent"}"#;

    #[test]
    fn leads_split_into_the_three_nurture_tiers() {
        let config = Config::parse(NURTURE_TIERS).unwrap();
        let tier = |score| config.branch(&lead(score), None).to_owned();
        assert_eq!(tier(85.0), "high-potential");
        assert_eq!(tier(70.0), "high-potential");
        assert_eq!(tier(90.0), "high-potential");
        assert_eq!(tier(69.5), "watching");
        assert_eq!(tier(40.0), "watching");
        assert_eq!(tier(12.0), "low-intent");
        assert_eq!(tier(95.0), "low-intent");
    }

    #[test]
    fn a_models_score_and_segments_are_read_as_the_host_shows_them() {
        let config = Config::parse(
            r#"{"branches": [
                {"label": "hot", "when": [{"field": "scores.lead", "op": "gte", "value": 70},
                                          {"field": "segment", "op": "not_has", "value": "customers"}]},
                {"label": "regular", "when": [{"field": "segment", "op": "has", "value": "product-page-regulars"}]}],
                "default": "cold"}"#,
        )
        .unwrap();
        assert_eq!(
            config.attributes(),
            Some(vec!["scores.lead".to_owned(), "segments".to_owned()])
        );
        let standing = |points: Option<f64>, segments: &[&str]| {
            let mut attributes = vec![Attribute::new(
                "segments",
                Value::TextList(segments.iter().map(|s| s.to_string()).collect()),
            )];
            attributes.extend(points.map(|p| Attribute::new("scores.lead", Value::Number(p))));
            // The legacy `score` (journey actions' points) is not the model's.
            contact(99.0, attributes, &[])
        };
        assert_eq!(config.branch(&standing(Some(75.0), &[]), None), "hot");
        assert_eq!(
            config.branch(&standing(Some(75.0), &["customers"]), None),
            "cold"
        );
        let regular = standing(Some(10.0), &["product-page-regulars"]);
        assert_eq!(config.branch(&regular, None), "regular");
        // A model the host does not define is missing: no comparison holds.
        assert_eq!(config.branch(&standing(None, &[]), None), "cold");
        // A host that shows no segments: in none.
        assert_eq!(config.branch(&contact(0.0, vec![], &[]), None), "cold");
        assert_eq!(
            paths(
                r#"{"branches": [{"label": "x", "when": [{"field": "segment", "op": "gte", "value": 1}]}], "default": "y"}"#
            ),
            ["branches[0].when[0].op"]
        );
    }

    #[test]
    fn the_config_reads_only_the_attributes_its_predicates_name() {
        let config = Config::parse(
            r#"{"branches": [
                {"label": "a", "when": [{"field": "attribute.region", "op": "eq", "value": "South China"},
                                        {"field": "score", "op": "gte", "value": 50}]},
                {"label": "b", "any": [{"field": "attribute.industry", "op": "eq", "value": "tech"},
                                       {"field": "attribute.region", "op": "eq", "value": "North"},
                                       {"field": "event.page", "op": "eq", "value": "pricing"}]}],
                "default": "other"}"#,
        )
        .unwrap();
        assert_eq!(
            config.attributes(),
            Some(vec!["region".to_owned(), "industry".to_owned()])
        );
    }

    #[test]
    fn south_china_tech_companies_take_their_own_branch() {
        let config = Config::parse(
            r#"{"branches": [{"label": "south-china-tech", "when": [
                {"field": "attribute.region", "op": "eq", "value": "South China"},
                {"field": "attribute.industry", "op": "eq", "value": "tech"}]}],
                "default": "other"}"#,
        )
        .unwrap();
        let company = |region, industry| {
            contact(
                0.0,
                vec![text("region", region), text("industry", industry)],
                &[],
            )
        };
        assert_eq!(
            config.branch(&company("South China", "tech"), None),
            "south-china-tech"
        );
        assert_eq!(
            config.branch(&company("South China", "retail"), None),
            "other"
        );
        assert_eq!(config.branch(&lead(0.0), None), "other");
    }

    #[test]
    fn tags_consent_stage_and_the_triggering_event() {
        let config = Config::parse(
            r#"{"branches": [
            {"label": "engaged", "any": [{"field": "tag", "op": "has", "value": "high-intent"},
                                          {"field": "event.link", "op": "eq", "value": "pricing"}]},
            {"label": "textable", "when": [{"field": "consent.sms", "op": "eq", "value": "granted"}]},
            {"label": "emailable-growth", "when": [{"field": "consent.email", "op": "eq", "value": "granted"},
                                                    {"field": "stage", "op": "in", "value": ["new", "growth"]}]}],
            "default": "other"}"#,
        )
        .unwrap();
        assert_eq!(
            config.branch(&contact(0.0, vec![], &["high-intent"]), None),
            "engaged"
        );
        let click = Event {
            id: "e".into(),
            contact_id: "c1".into(),
            name: "email_clicked".into(),
            properties: vec![text("link", "pricing")],
            timestamp: 0,
        };
        assert_eq!(config.branch(&lead(0.0), Some(&click)), "engaged");
        assert_eq!(config.branch(&lead(0.0), None), "emailable-growth");
        let mut dormant = lead(0.0);
        dormant.lifecycle_stage = "dormant".into();
        assert_eq!(config.branch(&dormant, None), "other");
    }

    #[test]
    fn a_channel_without_a_consent_record_is_unknown() {
        let config = Config::parse(
            r#"{"branches": [{"label": "ask", "when": [{"field": "consent.wecom", "op": "eq", "value": "unknown"}]}], "default": "skip"}"#,
        )
        .unwrap();
        assert_eq!(config.branch(&lead(0.0), None), "ask");
    }

    #[test]
    fn bad_configs_name_each_problem() {
        assert_eq!(
            paths(
                r#"{"branches": [
                {"label": "a", "when": [{"field": "scroe", "op": "gte", "value": 1}]},
                {"label": "a", "when": [{"field": "tag", "op": "eq", "value": "x"}]},
                {"label": "b"},
                {"label": "c", "any": []},
                {"label": "", "when": [{"field": "score", "op": "gte", "value": "high"}]},
                {"label": "d", "when": [{"field": "consent.email", "op": "eq", "value": "yes"}]},
                {"label": "e", "when": [{"field": "attribute.size", "op": "in", "value": 5}]},
                {"label": "f", "when": [{"field": "attribute.", "op": "exists"}]}],
                "default": ""}"#
            ),
            [
                "branches[0].when[0].field",
                "branches[1].when[0].op",
                "branches[1].label",
                "branches[2]",
                "branches[3].any",
                "branches[4].label",
                "branches[4].when[0].value",
                "branches[5].when[0].value",
                "branches[6].when[0].value",
                "branches[7].when[0].field",
                "default"
            ]
        );
        assert_eq!(paths(r#"{"branches": []}"#), ["branches", "default"]);
        assert_eq!(paths(r#"{"branches": [], "default": "x"}"#), ["branches"]);
    }

    #[test]
    fn problem_messages_say_what_to_write() {
        let problems = Config::parse(
            r#"{"branches": [{"label": "a", "when": [{"field": "tag", "op": "eq", "value": "x"}]}], "default": "b"}"#,
        )
        .unwrap_err();
        assert_eq!(problems[0].message, "`tag` takes has or not_has, not `eq`");
    }

    #[test]
    fn a_config_survives_being_prepared() {
        use wayline_sdk::config::{load, prepare};
        let prepared = prepare::<Config>(NURTURE_TIERS, "attribute-condition@0.1.0").unwrap();
        let config = load::<Config>(&prepared.config, "attribute-condition@0.1.0").unwrap();
        let parsed = Config::parse(NURTURE_TIERS).unwrap();
        assert_eq!(format!("{config:?}"), format!("{parsed:?}"));
    }

    #[test]
    fn a_condition_without_branches_is_refused() {
        let problems = Config::parse(r#"{"branches": [], "default": "x"}"#).unwrap_err();
        assert_eq!(problems[0].path, "branches");
    }

    #[test]
    fn the_schema_is_a_json_object() {
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert!(schema.is_object());
    }
}
