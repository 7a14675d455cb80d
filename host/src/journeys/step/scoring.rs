//! Scoring in a batch: the models that select an event run on it before its journey steps, and
//! their changes — the contact's score per model, each change in its history, and a
//! `score_threshold_crossed` event per threshold crossed — go into the batch's one commit. A
//! model's decay timer asks again when decay would take a score across a threshold.

use std::sync::Arc;

use super::Batch;
use crate::model::{Attributes, Event, ModelScore, ScoreChange, Value};
use crate::scoring::points::{self, Crossing};
use crate::scoring::{Model, THRESHOLD_EVENT};
use crate::store::{ModelScoreWrite, ScoreEntry, StoreError};

/// Most changes one scorer call may make, and longest reason.
const MAX_CHANGES: usize = 100;
const MAX_REASON_BYTES: usize = 1_000;
/// Largest change one call may make, either way.
const MAX_DELTA: f64 = 1e9;

/// What the host accepts from a scorer: finite, bounded changes with reasons it can keep.
fn check(changes: &[ScoreChange]) -> Result<(), String> {
    if changes.len() > MAX_CHANGES {
        return Err(format!(
            "{} score changes for one event (at most {MAX_CHANGES})",
            changes.len()
        ));
    }
    for change in changes {
        if !change.delta.is_finite() || change.delta.abs() > MAX_DELTA {
            return Err(format!(
                "a score change of {} is not a number a score can move by",
                change.delta
            ));
        }
        if change.reason.len() > MAX_REASON_BYTES {
            return Err(format!(
                "a score change's reason is {} bytes (at most {MAX_REASON_BYTES})",
                change.reason.len()
            ));
        }
    }
    Ok(())
}

/// Where a score move came from: an event a model scored, or its decay timer.
enum Cause<'e> {
    Event(&'e Event),
    Timer(crate::model::Millis),
}

impl Batch<'_> {
    /// Run every model that selects `event` on it, for the contact as the batch has it.
    pub(super) fn score(&mut self, contact_id: &str, event: &Event) -> Result<(), StoreError> {
        for model in self.journeys.scoring.selecting(&event.name) {
            let Some(contact) = self.reads.contact(contact_id)? else {
                return Ok(());
            };
            let name = &model.record.name;
            let report = self
                .runtime
                .score(&model.plugin, &model.config, &contact, event);
            let changes = report
                .result
                .map_err(|e| e.to_string())
                .and_then(|changes| {
                    check(&changes)?;
                    Ok(changes)
                });
            match changes {
                Ok(changes) => {
                    self.journeys.scoring.count(&model, Ok(changes.len()));
                    self.move_score(contact_id, &model, &changes, Cause::Event(event))?;
                }
                // The model's own failure: the event's journeys go on, the score stays.
                Err(error) => {
                    self.journeys.scoring.count(&model, Err(&error));
                    tracing::warn!(model = %name, plugin = %model.plugin.id(), contact = contact_id, event = %event.id, %error, "scorer failed; the event is not scored by this model");
                }
            }
        }
        Ok(())
    }

    /// A model's decay timer for the contact fired: announce the crossings decay made and set
    /// the next timer. A timer the score has moved past (set again since) is stale.
    pub(super) fn on_score_timer(
        &mut self,
        contact_id: &str,
        model: &str,
        due_at: crate::model::Millis,
    ) -> Result<(), StoreError> {
        let Some(model) = self.journeys.scoring.model(model) else {
            return Ok(());
        };
        let Some(contact) = self.reads.contact(contact_id)? else {
            return Ok(());
        };
        let current = contact.scores.get(&model.record.name).map(|s| s.timer_at);
        if current != Some(Some(due_at)) {
            return Ok(());
        }
        self.move_score(contact_id, &model, &[], Cause::Timer(due_at))
    }

    /// Move the contact's score in `model` by `changes` now, after the decay since its last
    /// move; keep each change in the history and announce each threshold crossed.
    fn move_score(
        &mut self,
        contact_id: &str,
        model: &Arc<Model>,
        changes: &[ScoreChange],
        cause: Cause<'_>,
    ) -> Result<(), StoreError> {
        let now = self.now;
        let name = &model.record.name;
        let thresholds = &model.record.thresholds;
        let Some(contact) = self.reads.contact_mut(contact_id) else {
            return Ok(());
        };
        let mut held = contact.scores.get(name).copied().unwrap_or(ModelScore {
            at: now,
            ..ModelScore::default()
        });
        let before = points::value(&held, now, model.half_life);
        let decayed_level = points::level(thresholds, before);
        // Levels count a revision's thresholds: against new ones, the score starts where it
        // stands, with nothing announced that it did not cross.
        if held.revision != model.record.revision {
            held.level = decayed_level;
        }
        let mut crossings = points::crossings(thresholds, held.level, decayed_level);
        let mut value = before;
        let (source, depth) = match cause {
            Cause::Event(event) => (event.id.clone(), event.depth + 1),
            // The timer's own id names the model and the contact: ids of what it emits are
            // the contact's alone, though many contacts' timers fall due at once.
            Cause::Timer(due_at) => (
                format!("{}@{due_at}", crate::scoring::timer_id(name, contact_id)),
                1,
            ),
        };
        let mut entries = Vec::new();
        for change in changes {
            value += change.delta;
            let event = match cause {
                Cause::Event(event) => Some(event),
                Cause::Timer(_) => None,
            };
            entries.push(ScoreEntry {
                contact_id: contact_id.to_owned(),
                at: now,
                model: Some(name.clone()),
                delta: change.delta,
                // To the hundredth, as a person reads it (decay leaves long fractions).
                score: (value * 100.0).round() / 100.0,
                reason: change.reason.clone(),
                event_id: event.map(|e| e.id.clone()),
                event: event.map(|e| e.name.clone()),
                plugin: model.plugin.id().to_owned(),
                journey_id: None,
                node: None,
                source: source.clone(),
            });
        }
        let level = points::level(thresholds, value);
        crossings.extend(points::crossings(thresholds, decayed_level, level));
        let due = points::next_crossing(thresholds, value, level, now, model.half_life);
        // A timer set already and due no later than needed stays: early, it only looks and
        // sets the next, and not moving it saves two writes on most events (a score that
        // grows puts its crossing later).
        let timer_at = match held.timer_at {
            Some(set) if set > now && due.is_none_or(|due| set <= due) => Some(set),
            _ => due,
        };
        let rebased = held.revision != model.record.revision;
        if changes.is_empty() && crossings.is_empty() && held.timer_at == timer_at && !rebased {
            return Ok(());
        }
        contact.scores.insert(
            name.clone(),
            ModelScore {
                points: value,
                at: now,
                level,
                revision: model.record.revision,
                timer_at,
            },
        );
        self.changes.move_model_score(
            ModelScoreWrite {
                contact_id: contact_id.to_owned(),
                model: name.clone(),
                delta: value - before,
                half_life: model.half_life,
                level,
                revision: model.record.revision,
                timer_at,
            },
            entries,
        );
        for (n, crossing) in crossings.into_iter().enumerate() {
            self.changes.emit(crossed(
                format!("{source}:{name}:crossed:{n}"),
                contact_id,
                name,
                crossing,
                value,
                now,
                depth,
            ));
        }
        Ok(())
    }
}

/// The event a crossing emits: journeys start from it ("score ≥ 80 → MQL").
fn crossed(
    id: String,
    contact_id: &str,
    model: &str,
    crossing: Crossing,
    score: f64,
    now: crate::model::Millis,
    depth: u32,
) -> Event {
    let direction = if crossing.up { "up" } else { "down" };
    let properties: Attributes = [
        ("model".to_owned(), Value::Text(model.to_owned())),
        ("threshold".to_owned(), Value::Number(crossing.threshold)),
        ("direction".to_owned(), Value::Text(direction.to_owned())),
        // To the hundredth: what a person reads in an alert.
        (
            "score".to_owned(),
            Value::Number((score * 100.0).round() / 100.0),
        ),
    ]
    .into();
    Event {
        id,
        contact_id: contact_id.to_owned(),
        name: THRESHOLD_EVENT.to_owned(),
        properties,
        timestamp: now,
        depth,
    }
}
