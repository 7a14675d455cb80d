//! `{"property": "source", "op": "eq", "value": "web"}`: one filter on an event's property.

use serde::{Deserialize, Serialize};
use wayline_sdk::Event;

use crate::config::{Path, Problems};
use crate::literal::{Literal, Subject};
use crate::op::Op;
use crate::text::Text;

/// One filter on an event property, as written under `where` in a trigger or a scoring rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyFilter {
    /// The event property compared.
    pub property: Text,
    /// How it is compared.
    pub op: Op,
    /// What it is compared with (absent for `exists` / `not_exists`).
    #[serde(default)]
    pub value: Option<Literal>,
}

impl PropertyFilter {
    /// Does the event's property satisfy this filter?
    pub fn holds(&self, event: &Event) -> bool {
        let subject = event
            .properties
            .iter()
            .find(|p| self.property.is(&p.name))
            .map(|p| Subject::from(&p.value));
        self.op.holds(subject, self.value.as_ref())
    }

    /// Report what is wrong with this filter, located under `at`.
    pub fn check(&self, at: &Path<'_>, problems: &mut Problems) {
        problems.require_text(&at.field("property"), &self.property);
        problems.add_if(
            &at.field("value"),
            self.op.literal_problem(self.value.as_ref()),
        );
    }
}

/// Check every filter of a `where` list located at `at`.
pub fn check_filters(filters: &[PropertyFilter], at: &Path<'_>, problems: &mut Problems) {
    for (i, filter) in filters.iter().enumerate() {
        filter.check(&at.index(i), problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ROOT;
    use wayline_sdk::{Attribute, Value};

    fn event(properties: Vec<Attribute>) -> Event {
        Event {
            id: "e1".into(),
            contact_id: "c1".into(),
            name: "registered".into(),
            properties,
            timestamp: 0,
        }
    }

    fn filter(json: &str) -> PropertyFilter {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_filter_reads_the_named_property() {
        let web = filter(r#"{"property": "source", "op": "eq", "value": "web"}"#);
        let from = |source: &str| event(vec![Attribute::new("source", Value::Text(source.into()))]);
        assert!(web.holds(&from("web")));
        assert!(!web.holds(&from("crm")));
        assert!(!web.holds(&event(vec![])));
    }

    #[test]
    fn problems_are_located_in_the_filter() {
        let filters = [
            filter(r#"{"property": "", "op": "exists"}"#),
            filter(r#"{"property": "n", "op": "gte", "value": "x"}"#),
        ];
        let mut problems = Problems::default();
        check_filters(&filters, &ROOT.field("where"), &mut problems);
        let paths: Vec<String> = problems.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["where[0].property", "where[1].value"]);
    }
}
