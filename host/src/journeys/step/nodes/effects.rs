//! An action's effects: checked before anything is applied (a plugin cannot make a score NaN
//! for good, overwrite the contact's id, or send through a channel with no name), then applied
//! to the contact at once (later nodes of the step see them) and to the store at commit;
//! messages go to the outbox, emitted events (with their causal depth) to the batch, which runs
//! them before it commits.

use super::super::super::compiled::CompiledJourney;
use super::super::Batch;
use super::Failure;
use crate::model::{Attributes, Effect, Event, Value, check_name};
use crate::store::{DeliveryStatus, DeliveryStep, Enrollment, OutboxMessage, ScoreEntry};

/// How many emitted events may follow one another: an event an action emits is one deeper
/// than the event that brought the contact to the action. Past this, journeys are feeding
/// each other in a loop, and the emit is refused.
pub const MAX_EVENT_DEPTH: u32 = 10;

/// Attributes that name a contact's own fields, which effects change by their own kinds.
const RESERVED_ATTRIBUTES: [&str; 8] = [
    "id",
    "tags",
    "score",
    "lifecycle_stage",
    "consents",
    "timezone",
    "created_at",
    "updated_at",
];

/// Longest text an effect may carry in one value (a score's reason, an attribute).
const MAX_TEXT_BYTES: usize = 16 << 10;
/// Most bytes of properties an emitted event, or variables a message, may carry.
const MAX_FIELDS_BYTES: usize = 32 << 10;

/// A channel, template or stage name: 1 to 64 letters, digits, `_`, `-` or `.`.
fn check_identifier(what: &str, name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "{what} `{}` is not a name: use 1 to 64 letters, digits, `_`, `-` or `.`",
            name.escape_debug()
        ))
    }
}

fn check_value(name: &str, value: &Value) -> Result<usize, String> {
    let bytes = match value {
        Value::Number(n) if !n.is_finite() => {
            return Err(format!("`{name}` is {n}, not a number a contact can hold"));
        }
        Value::Text(text) => text.len(),
        Value::TextList(items) => items.iter().map(String::len).sum(),
        _ => 8,
    };
    if bytes > MAX_TEXT_BYTES {
        return Err(format!(
            "`{name}` holds {bytes} bytes; a value is at most {MAX_TEXT_BYTES}"
        ));
    }
    Ok(bytes)
}

fn check_fields(what: &str, fields: &Attributes) -> Result<(), String> {
    let mut total = 0;
    for (name, value) in fields {
        check_name(name)
            .map_err(|problem| format!("{what} `{}`: {problem}", name.escape_debug()))?;
        total += name.len() + check_value(name, value)?;
    }
    if total > MAX_FIELDS_BYTES {
        return Err(format!(
            "{what}s hold {total} bytes; at most {MAX_FIELDS_BYTES}"
        ));
    }
    Ok(())
}

fn check_attribute(name: &str) -> Result<(), String> {
    check_name(name)
        .map_err(|problem| format!("attribute `{}`: {problem}", name.escape_debug()))?;
    if RESERVED_ATTRIBUTES.contains(&name) {
        return Err(format!(
            "`{name}` is the contact's own field, not an attribute an action may set"
        ));
    }
    Ok(())
}

/// Refuse an effect no contact may get, naming it.
pub(super) fn check(effects: &[Effect]) -> Result<(), String> {
    for effect in effects {
        match effect {
            Effect::SetAttribute { name, value } => {
                check_attribute(name)?;
                check_value(name, value)?;
            }
            Effect::UnsetAttribute { name } => check_attribute(name)?,
            Effect::AddTag { tag } | Effect::RemoveTag { tag } => check_name(tag)
                .map_err(|problem| format!("tag `{}`: {problem}", tag.escape_debug()))?,
            Effect::AdjustScore { delta, reason } => {
                if !delta.is_finite() {
                    return Err(format!("a score change of {delta} is not a number"));
                }
                if reason.len() > MAX_TEXT_BYTES {
                    return Err("a score change's reason is too long".into());
                }
            }
            Effect::SetLifecycleStage { stage } => check_identifier("lifecycle stage", stage)?,
            Effect::EmitEvent { name, properties } => {
                check_name(name).map_err(|problem| format!("event name: {problem}"))?;
                check_fields("property", properties)?;
            }
            Effect::SendMessage {
                channel,
                template,
                variables,
            } => {
                check_identifier("channel", channel)?;
                check_identifier("template", template)?;
                check_fields("variable", variables)?;
            }
        }
    }
    Ok(())
}

impl Batch<'_> {
    /// Apply checked effects for `enrollment`, which `event` (if any) brought to its node.
    pub(super) fn apply_effects(
        &mut self,
        journey: &CompiledJourney,
        enrollment: &Enrollment,
        event: Option<&Event>,
        effects: Vec<Effect>,
    ) -> Result<(), Failure> {
        let depth = event.map_or(0, |e| e.depth) + 1;
        let emits = effects
            .iter()
            .any(|effect| matches!(effect, Effect::EmitEvent { .. }));
        if emits && depth > MAX_EVENT_DEPTH {
            self.changes
                .count(journey, &enrollment.node, "emit_refused", 1);
            return Err(Failure::Refuse(format!(
                "the event this action emits would come {depth} events deep in a chain of events that actions emitted (at most {MAX_EVENT_DEPTH}): journeys are feeding each other in a loop"
            )));
        }
        // Stable for the step, so a step run again after a crash makes the same ids.
        let step = format!(
            "{}:{}",
            enrollment.id,
            enrollment.history.len() + enrollment.history_dropped as usize
        );
        let mut contact_effects = Vec::new();
        for (n, effect) in effects.into_iter().enumerate() {
            match effect {
                Effect::SendMessage {
                    channel,
                    template,
                    variables,
                } => self.changes.send(OutboxMessage {
                    id: format!("{step}:{n}"),
                    contact_id: enrollment.contact_id.clone(),
                    channel,
                    variables,
                    journey_id: journey.journey_id.clone(),
                    version: journey.version,
                    node: enrollment.node.clone(),
                    enrollment_id: enrollment.id.clone(),
                    created_at: self.now,
                    status: DeliveryStatus::Queued,
                    template_version: journey.templates.get(&template).copied(),
                    template,
                    attempts: 0,
                    due_at: Some(self.now),
                    recipient: None,
                    provider_id: None,
                    history: vec![DeliveryStep {
                        at: self.now,
                        status: DeliveryStatus::Queued,
                        detail: String::new(),
                    }],
                    test: false,
                }),
                Effect::EmitEvent { name, properties } => self.changes.emit(Event {
                    id: format!("{step}:{n}"),
                    contact_id: enrollment.contact_id.clone(),
                    name,
                    properties,
                    timestamp: self.now,
                    depth,
                }),
                other => contact_effects.push(other),
            }
        }
        if contact_effects.is_empty() {
            return Ok(());
        }
        let plugin = (journey.plugins.get(&enrollment.node)).map(|p| p.plugin.id().to_owned());
        let mut kept = Vec::new();
        if let Some(contact) = self.reads.contact_mut(&enrollment.contact_id) {
            for effect in &contact_effects {
                contact.apply(effect, self.now);
                // Why the score moved, for the contact's score history.
                if let Effect::AdjustScore { delta, reason } = effect {
                    kept.push(ScoreEntry {
                        contact_id: enrollment.contact_id.clone(),
                        at: self.now,
                        model: None,
                        delta: *delta,
                        score: contact.score,
                        reason: reason.clone(),
                        event_id: event.map(|e| e.id.clone()),
                        event: event.map(|e| e.name.clone()),
                        plugin: plugin.clone().unwrap_or_default(),
                        journey_id: Some(journey.journey_id.clone()),
                        node: Some(enrollment.node.clone()),
                        source: step.clone(),
                    });
                }
            }
        }
        for entry in kept {
            self.changes.score_changed(entry);
        }
        self.changes
            .change_contact(&enrollment.contact_id, contact_effects);
        Ok(())
    }
}
