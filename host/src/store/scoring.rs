//! Scoring models and each contact's score history, as stored.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::records::AuditEntry;
use crate::model::Millis;

/// A scoring model as stored: a named score, the scorer plugin pinned to a binary, its config,
/// the events it sees, its decay and thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoringModelRecord {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `name@version`.
    pub plugin: String,
    /// The binary's SHA-256 when it was pinned: another binary is refused.
    pub sha256: String,
    pub config: serde_json::Value,
    /// The event names it scores.
    pub events: Vec<String>,
    /// How long points take to halve (`30d`), as the operator wrote it; no decay when absent.
    #[serde(default)]
    pub half_life: Option<String>,
    /// Ascending: crossing one emits `score_threshold_crossed`.
    #[serde(default)]
    pub thresholds: Vec<f64>,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    #[serde(with = "crate::model::timestamp_json")]
    pub updated_at: Millis,
    pub revision: u32,
}

/// One change of a contact's score, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreEntry {
    #[serde(skip)]
    pub contact_id: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub at: Millis,
    /// The scoring model; absent for a journey action's `adjust-score`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub delta: f64,
    /// The score after this change.
    pub score: f64,
    pub reason: String,
    /// The event scored, or that the action's step ran for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// `name@version` of the scorer or action plugin.
    pub plugin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journey_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The event or journey step the change came from: the changes of one source at one
    /// moment are kept together, in the order made.
    #[serde(skip)]
    pub source: String,
}

/// One page of a contact's score history, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct ScorePage {
    pub changes: Vec<ScoreEntry>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Scoring models and score history in the store.
pub trait ScoringStore {
    /// Every scoring model, by name.
    fn scoring_models(&self) -> Result<Vec<ScoringModelRecord>, StoreError>;
    /// Create or replace a model, and record who did it.
    fn put_scoring_model(
        &self,
        record: &ScoringModelRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
    /// Remove a model (the scores it gave stay, with their history), and record it.
    fn delete_scoring_model(&self, name: &str, audit: AuditEntry) -> Result<(), StoreError>;
    /// A contact's score changes, newest first, `limit` at most, older than the cursor
    /// `before` (a page's `next`).
    fn score_history(
        &self,
        contact_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<ScorePage, StoreError>;
}

/// A scoring model's score the batch moved for a contact: at commit the stored score (as
/// decayed to the commit's time) moves by `delta`, and takes the batch's level and timer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelScoreWrite {
    pub contact_id: String,
    pub model: String,
    pub delta: f64,
    /// The model's half-life, to decay the stored points to the commit's time.
    pub half_life: Option<Millis>,
    pub level: u32,
    /// The model revision `level` counts the thresholds of.
    pub revision: u32,
    pub timer_at: Option<Millis>,
}

/// What the batch adds to a contact's activity (see `crate::lifecycle`): at commit the later
/// last interaction is kept and the counts are added, so a merge committed meanwhile loses
/// nothing; the stage timer is the batch's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActivityWrite {
    pub contact_id: String,
    pub last_at: Millis,
    pub counted: std::collections::BTreeMap<String, u64>,
    pub timer_at: Option<Millis>,
}
