//! Templates: checked when stored, rendered by the host for each message with minijinja, a
//! sandboxed engine: no loader (so no file access), every render bounded in fuel (its
//! instructions) and output. A variable printed without a fallback that the message lacks
//! fails the render with its name: a customer never gets a blank where their name goes.

use std::collections::BTreeSet;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Deserialize;

use crate::model::Attributes;
use crate::standing::Standing;
use crate::store::{OutboxMessage, TemplateVersion};

/// Largest part (subject, html, text) a template may have, as written.
pub const MAX_PART_BYTES: usize = 64 << 10;
/// Largest part a render may produce.
pub const MAX_RENDERED_BYTES: usize = 256 << 10;
/// Instructions one part's render may run (a loop over a long list runs out).
const FUEL: u64 = 200_000;

/// A template as the operator writes it (`PUT /v1/templates/{name}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDraft {
    pub channel: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub transactional: bool,
}

/// What is wrong with a template, by the part it is in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TemplateProblem {
    pub path: String,
    pub message: String,
}

/// A message's parts, rendered.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Rendered {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The variables every render has, whatever the contact: a template may print these without a
/// fallback.
const ALWAYS_THERE: [&str; 12] = [
    "contact",
    "contact.id",
    "contact.tags",
    "contact.score",
    "contact.scores",
    "contact.segments",
    "contact.lifecycle_stage",
    "contact.timezone",
    "message",
    "message.id",
    "message.channel",
    // Marketing messages only: a transactional template that prints it fails its render.
    "message.unsubscribe_url",
];

fn parts(template: &TemplateVersion) -> [(&'static str, Option<&str>); 3] {
    [
        ("subject", template.subject.as_deref()),
        ("html", template.html.as_deref()),
        ("text", template.text.as_deref()),
    ]
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(32);
    env.set_auto_escape_callback(|name| match name {
        "html" => AutoEscape::Html,
        _ => AutoEscape::None,
    });
    env
}

/// Check a draft: its parts compile, are not too large, and there is a body.
pub fn check(draft: &TemplateDraft) -> Result<(), Vec<TemplateProblem>> {
    let mut problems = Vec::new();
    let mut problem = |path: &str, message: String| {
        problems.push(TemplateProblem {
            path: path.to_owned(),
            message,
        })
    };
    if !crate::runtime::valid_name(&draft.channel) {
        problem(
            "channel",
            "a channel name is 1 to 64 lower-case letters, digits, `-` and `_`".into(),
        );
    }
    if draft.html.is_none() && draft.text.is_none() {
        problem(
            "text",
            "a template needs a body: `text`, `html` or both".into(),
        );
    }
    let env = environment();
    for (path, source) in [
        ("subject", &draft.subject),
        ("html", &draft.html),
        ("text", &draft.text),
    ] {
        let Some(source) = source else { continue };
        if source.len() > MAX_PART_BYTES {
            problem(
                path,
                format!("is {} bytes; the limit is {MAX_PART_BYTES}", source.len()),
            );
        } else if let Err(error) = env.template_from_named_str(path, source) {
            problem(path, describe(&error));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// What a render sees: the contact's attributes at the top level (`{{ first_name }}`), then
/// the send's own variables over them; the whole contact as `contact`, and the message as
/// `message`. (What an event carried reaches a template through the send's variables, e.g.
/// update-contact's `"variables": {"plan": "{{event.plan}}"}`.) An empty text counts as
/// missing, so a fallback applies to it.
pub fn context(standing: &Standing, message: &OutboxMessage, extra: &[(&str, String)]) -> Value {
    let contact = &standing.contact;
    let mut top = serde_json::Map::new();
    let put_all = |map: &mut serde_json::Map<String, serde_json::Value>, attrs: &Attributes| {
        for (name, value) in attrs {
            let value = serde_json::to_value(value).unwrap_or_default();
            if value.as_str() == Some("") {
                map.remove(name);
            } else {
                map.insert(name.clone(), value);
            }
        }
    };
    put_all(&mut top, &contact.attributes);
    put_all(&mut top, &message.variables);
    let mut person = serde_json::Map::new();
    put_all(&mut person, &contact.attributes);
    person.insert("id".into(), contact.id.clone().into());
    person.insert("tags".into(), contact.tags.clone().into());
    person.insert("score".into(), contact.score.into());
    let points = serde_json::to_value(standing.points()).expect("scores serialize");
    person.insert("scores".into(), points);
    person.insert("segments".into(), standing.segments.clone().into());
    person.insert(
        "lifecycle_stage".into(),
        contact.lifecycle_stage.clone().into(),
    );
    person.insert("timezone".into(), contact.timezone.clone().into());
    top.insert("contact".into(), person.into());
    let mut about = serde_json::Map::new();
    about.insert("id".into(), message.id.clone().into());
    for (name, value) in extra {
        about.insert((*name).into(), value.clone().into());
    }
    top.insert("message".into(), about.into());
    Value::from_serialize(serde_json::Value::Object(top))
}

/// Render every part of `template` in `context`.
pub fn render(template: &TemplateVersion, context: &Value) -> Result<Rendered, String> {
    let env = environment();
    let mut rendered = Rendered::default();
    for (name, source) in parts(template) {
        let Some(source) = source else { continue };
        let output = env
            .template_from_named_str(name, source)
            .and_then(|t| bounded(&t, context))
            .map_err(|error| format!("{name}: {}", describe(&error)))?;
        let slot = match name {
            "subject" => &mut rendered.subject,
            "html" => &mut rendered.html,
            _ => &mut rendered.text,
        };
        *slot = Some(output);
    }
    Ok(rendered)
}

/// The variables `template` prints without a fallback that not every contact has: each would
/// fail the render of a message that lacks it. Every contact has a score in each of `models`
/// (0 without points); a model not among them (misspelt, deleted) is named.
pub fn unguarded(template: &TemplateVersion, models: &[String]) -> Vec<String> {
    let env = environment();
    let mut found = BTreeSet::new();
    for (name, source) in parts(template) {
        let Some(source) = source else { continue };
        let Ok(compiled) = env.template_from_named_str(name, source) else {
            continue;
        };
        let used: BTreeSet<String> = compiled.undeclared_variables(true).into_iter().collect();
        for variable in &used {
            let a_model = (variable.strip_prefix("contact.scores."))
                .is_some_and(|model| models.iter().any(|m| m == model));
            if ALWAYS_THERE.contains(&variable.as_str()) || a_model {
                continue;
            }
            let others = used
                .iter()
                .filter(|v| *v != variable && !variable.starts_with(&format!("{v}.")));
            let context = placeholders(others);
            if let Err(error) = bounded(&compiled, &context)
                && error.kind() == ErrorKind::UndefinedError
            {
                found.insert(variable.clone());
            }
        }
    }
    found.into_iter().collect()
}

/// A context in which each dotted path is a text.
fn placeholders<'a>(paths: impl Iterator<Item = &'a String>) -> Value {
    let mut root = serde_json::json!({"contact": {"id": "c", "tags": [], "score": 0.0,
        "scores": {}, "segments": [], "lifecycle_stage": "lead", "timezone": "UTC"},
        "message": {"id": "m"}});
    for path in paths {
        let mut at = &mut root;
        let segments: Vec<&str> = path.split('.').collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if !at.is_object() {
                *at = serde_json::json!({});
            }
            let entry = at
                .as_object_mut()
                .expect("an object")
                .entry(segment.to_string())
                .or_insert_with(|| match last {
                    true => "x".into(),
                    false => serde_json::json!({}),
                });
            at = entry;
        }
    }
    Value::from_serialize(root)
}

/// Render, stopping as soon as the output passes [`MAX_RENDERED_BYTES`] rather than after
/// building all of it.
fn bounded(
    template: &minijinja::Template<'_, '_>,
    context: &Value,
) -> Result<String, minijinja::Error> {
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + bytes.len() > MAX_RENDERED_BYTES {
                return Err(std::io::Error::other("too large"));
            }
            self.0.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::new());
    match template.render_captured_to(context, &mut out) {
        Ok(_) => Ok(String::from_utf8(out.0).unwrap_or_default()),
        Err(error) if error.kind() == ErrorKind::WriteFailure => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("it renders to more than {MAX_RENDERED_BYTES} bytes"),
        )),
        Err(error) => Err(error),
    }
}

/// An engine error as one line, with where it is.
fn describe(error: &minijinja::Error) -> String {
    let what = match error.kind() {
        ErrorKind::UndefinedError => {
            "a variable it prints is missing for this message; give it a fallback, e.g. {{ first_name | default(\"there\") }}".to_owned()
        }
        ErrorKind::OutOfFuel => "it runs too long (a loop over too much?)".to_owned(),
        _ => error
            .detail()
            .map_or_else(|| error.kind().to_string(), str::to_owned),
    };
    match error.line() {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Contact;

    fn standing(contact: &Contact) -> Standing {
        Standing {
            contact: contact.clone(),
            segments: Vec::new(),
            rule_tags: Vec::new(),
        }
    }

    fn template(text: &str) -> TemplateVersion {
        TemplateVersion {
            name: "welcome".into(),
            version: 1,
            channel: "email".into(),
            subject: Some("Hi {{ first_name | default(\"there\") }}".into()),
            html: None,
            text: Some(text.into()),
            transactional: false,
            created_at: 0,
            created_by: None,
            approved_by: None,
            approved_at: None,
        }
    }

    fn message(variables: Attributes) -> OutboxMessage {
        OutboxMessage {
            id: "m1".into(),
            contact_id: "c1".into(),
            channel: "email".into(),
            template: "welcome".into(),
            variables,
            journey_id: "j".into(),
            version: 1,
            node: "n".into(),
            enrollment_id: "e".into(),
            created_at: 0,
            status: crate::store::DeliveryStatus::Queued,
            template_version: None,
            attempts: 0,
            due_at: None,
            recipient: None,
            provider_id: None,
            history: Vec::new(),
            test: false,
        }
    }

    #[test]
    fn fallbacks_fill_what_a_contact_lacks_and_a_missing_variable_fails_by_name() {
        let mut contact = Contact::new("c1".into(), 0);
        let t = template("Welcome, {{ name }}! Your plan: {{ plan | default(\"free\") }}");
        let ctx = context(&standing(&contact), &message(Attributes::new()), &[]);
        let error = render(&t, &ctx).unwrap_err();
        assert!(error.starts_with("text: "), "{error}");
        assert!(error.contains("missing"), "{error}");
        contact
            .attributes
            .insert("name".into(), crate::model::Value::Text("Li".into()));
        let ctx = context(&standing(&contact), &message(Attributes::new()), &[]);
        let rendered = render(&t, &ctx).unwrap();
        assert_eq!(
            rendered.text.as_deref(),
            Some("Welcome, Li! Your plan: free")
        );
        assert_eq!(rendered.subject.as_deref(), Some("Hi there"));
        assert_eq!(unguarded(&t, &[]), vec!["name".to_owned()]);
    }

    #[test]
    fn an_empty_text_counts_as_missing_and_variables_override_attributes() {
        let mut contact = Contact::new("c1".into(), 0);
        contact.attributes.insert(
            "first_name".into(),
            crate::model::Value::Text(String::new()),
        );
        let t = template("{{ first_name | default(\"customer\") }} / {{ contact.id }}");
        let ctx = context(&standing(&contact), &message(Attributes::new()), &[]);
        assert_eq!(render(&t, &ctx).unwrap().text.unwrap(), "customer / c1");
        let mut variables = Attributes::new();
        variables.insert("first_name".into(), crate::model::Value::Text("Wei".into()));
        let ctx = context(&standing(&contact), &message(variables), &[]);
        assert_eq!(render(&t, &ctx).unwrap().text.unwrap(), "Wei / c1");
        assert!(unguarded(&t, &[]).is_empty());
    }

    #[test]
    fn html_is_escaped_and_runaway_templates_stop() {
        let mut contact = Contact::new("c1".into(), 0);
        contact
            .attributes
            .insert("name".into(), crate::model::Value::Text("<script>".into()));
        let mut t = template(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        );
        t.html = Some("<p>{{ name }}</p>".into());
        let ctx = context(&standing(&contact), &message(Attributes::new()), &[]);
        let error = render(&t, &ctx).unwrap_err();
        assert!(error.contains("too long"), "{error}");
        t.text = None;
        assert_eq!(
            render(&t, &ctx).unwrap().html.unwrap(),
            "<p>&lt;script&gt;</p>"
        );
    }
}
