//! A contact as people, exports and templates see it at a moment: each model's score decayed
//! to that moment, the segments it is in, and the tags rules gave it. The bookkeeping that
//! keeps segments up to date (window times, generations, the audience timer) stays in the
//! store; the score's and the lifecycle's own timers are shown (when decay takes a lead under
//! a threshold, when its stage is next looked at).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audiences::Audiences;
use crate::model::{Contact, Millis, ModelScore, PreparedConfig, Value};
use crate::scoring::Scoring;
use crate::store::AudienceKind;

/// A contact at a moment (see the module).
#[derive(Debug, Clone, Serialize)]
pub struct Standing {
    /// The stored contact, its `scores` decayed to the moment and without its `audience`.
    #[serde(flatten)]
    pub contact: Contact,
    /// The segments it is in.
    pub segments: Vec<String>,
    /// Of its tags, those a tag rule gave it (and takes away again when it stops holding).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule_tags: Vec<String>,
}

impl Standing {
    /// `contact` as it stands at `now`. A deleted model's points stay as they were last moved;
    /// a membership of a segment since deleted, or made anew, is not one.
    pub fn of(mut contact: Contact, now: Millis, scoring: &Scoring, audiences: &Audiences) -> Self {
        for (model, score) in contact.scores.iter_mut() {
            if let Some(half_life) = scoring.half_life(model) {
                let points = crate::scoring::points::value(score, now, half_life);
                // To the hundredth, as a person reads it (decay leaves long fractions).
                score.points = (points * 100.0).round() / 100.0;
                score.at = now;
            }
        }
        let audience = contact.audience.take().unwrap_or_default();
        let segments = (audience.segments.iter())
            .filter(|(name, generation)| {
                audiences.generation(AudienceKind::Segment, name) == Some(**generation)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let rule_tags = (audience.ruled.iter().flatten())
            .filter(|tag| contact.tags.contains(tag))
            .cloned()
            .collect();
        Standing {
            contact,
            segments,
            rule_tags,
        }
    }

    /// As [`Standing::of`], with every model defined now present (0 points where the contact
    /// has none): templates and plugins can count on a defined model being there.
    pub fn complete(
        contact: Contact,
        now: Millis,
        scoring: &Scoring,
        audiences: &Audiences,
    ) -> Self {
        let mut standing = Standing::of(contact, now, scoring, audiences);
        for model in scoring.names() {
            (standing.contact.scores.entry(model)).or_insert(ModelScore {
                at: now,
                ..Default::default()
            });
        }
        standing
    }

    /// The contact as a plugin that reads its standing sees it (see [`read_by`]): the
    /// attributes `scores.<model>` (the points of each model `scoring` defines, 0 where the
    /// contact has none) and `segments` (a text list). Stored attributes of such names are not
    /// shown, nor the points of a model since deleted: what a plugin reads under these names is
    /// always the host's.
    pub fn for_plugin(self, scoring: &Scoring) -> Contact {
        let mut contact = self.contact;
        (contact.attributes).retain(|name, _| name != SEGMENTS && !name.starts_with(SCORES));
        for model in scoring.names() {
            let points = contact.scores.get(&model).map_or(0.0, |score| score.points);
            (contact.attributes).insert(format!("{SCORES}{model}"), Value::Number(points));
        }
        (contact.attributes).insert(SEGMENTS.to_owned(), Value::TextList(self.segments));
        contact
    }

    /// Each model's points, by model: what a template prints as `contact.scores.<model>`.
    pub fn points(&self) -> BTreeMap<String, f64> {
        (self.contact.scores.iter())
            .map(|(model, score)| (model.clone(), score.points))
            .collect()
    }
}

/// How a plugin's config names a model's points among the attributes it reads: `scores.lead`.
pub const SCORES: &str = "scores.";
/// How a plugin's config names the segments a contact is in among the attributes it reads.
pub const SEGMENTS: &str = "segments";

/// Whether a plugin whose config reads `config.attributes` reads a contact's standing: it
/// names `segments` or a `scores.<model>`. One that reads every attribute does not; asking by
/// name keeps the cost of working out decay and segments to the calls that use them.
pub fn read_by(config: &PreparedConfig) -> bool {
    (config.attributes.iter().flatten()).any(|name| name == SEGMENTS || name.starts_with(SCORES))
}
