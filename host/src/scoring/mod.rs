//! Lead scoring: named scores ("engagement", "fit"), each a scoring model — a scorer plugin
//! pinned to its binary, its config, the events it sees, a half-life and thresholds. The
//! journey workers run the models that select an event in the same batch (and so the same
//! commit) as the event's journey steps (`journeys::step::scoring`); this module keeps the
//! models, checks them when saved, and holds the arithmetic.
//!
//! A model is replaced whole (`PUT`): events after the switch are scored by the new version,
//! an event being scored finishes on the one it started with (it holds its `Arc`).

mod models;
pub mod points;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use thiserror::Error;

pub use models::{Model, ModelProblem, ModelRequest, THRESHOLD_EVENT, check_model_name};

use crate::clock::SharedClock;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::store::{AuditEntry, ScoringModelRecord, Store, StoreError};

#[derive(Debug, Error)]
pub enum ScoringError {
    #[error("no scoring model `{0}`")]
    NotFound(String),
    #[error("the scoring model is not valid")]
    Invalid(Vec<ModelProblem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a model did since the server started.
#[derive(Debug, Default)]
struct ModelStats {
    scored: AtomicU64,
    changes: AtomicU64,
    failed: AtomicU64,
    /// Calls failed in a row.
    failing: AtomicU64,
}

/// Calls in a row a model may fail before it is suspended: a scorer that fails every call
/// (spinning to its CPU limit, say) would otherwise cost every event it selects that much.
pub const SUSPEND_AFTER: u64 = 20;

/// A model as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    #[serde(flatten)]
    pub record: ScoringModelRecord,
    /// `ok`, or `unavailable` when its plugin is not loaded or refuses its config now.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Since the server started: events scored, changes made, calls that failed.
    pub stats: BTreeMap<&'static str, u64>,
}

/// The scoring models, runnable, and the ones that cannot run now (with why).
pub struct Scoring {
    models: RwLock<BTreeMap<String, Arc<Model>>>,
    unavailable: RwLock<BTreeMap<String, (ScoringModelRecord, String)>>,
    stats: Mutex<BTreeMap<String, Arc<ModelStats>>>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    clock: SharedClock,
    /// One change of the models at a time.
    changes: Mutex<()>,
}

impl Scoring {
    /// The stored models, made runnable; one whose plugin is missing is kept aside (and
    /// listed as unavailable) so the server still starts.
    pub fn load(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        runtime: Arc<Runtime>,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let scoring = Scoring {
            models: RwLock::default(),
            unavailable: RwLock::default(),
            stats: Mutex::default(),
            store,
            registry,
            runtime,
            clock,
            changes: Mutex::new(()),
        };
        for record in scoring.store.scoring_models()? {
            let name = record.name.clone();
            match models::rebuild(record.clone(), &scoring.registry, &scoring.runtime) {
                Ok(model) => {
                    scoring.models_mut().insert(name, Arc::new(model));
                }
                Err(problem) => {
                    tracing::error!(model = %name, %problem, "scoring model cannot run; events are not scored by it until it is fixed");
                    scoring.unavailable_mut().insert(name, (record, problem));
                }
            }
        }
        Ok(scoring)
    }

    fn models_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Model>>> {
        self.models.write().expect("scoring lock")
    }

    fn unavailable_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, (ScoringModelRecord, String)>> {
        self.unavailable.write().expect("scoring lock")
    }

    /// The models that score events named `event`.
    pub fn selecting(&self, event: &str) -> Vec<Arc<Model>> {
        let models = self.models.read().expect("scoring lock");
        if models.is_empty() {
            return Vec::new();
        }
        models
            .values()
            .filter(|m| m.selects(event))
            .cloned()
            .collect()
    }

    /// The names of every model defined, runnable or not.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = (self.models.read().expect("scoring lock").keys())
            .cloned()
            .collect();
        names.extend(
            self.unavailable
                .read()
                .expect("scoring lock")
                .keys()
                .cloned(),
        );
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The runnable model `name`.
    pub fn model(&self, name: &str) -> Option<Arc<Model>> {
        self.models.read().expect("scoring lock").get(name).cloned()
    }

    /// How the model `name` decays: `None` for a model this server does not know (deleted),
    /// `Some(None)` for one without decay. Unavailable models count: their record says.
    pub fn half_life(&self, name: &str) -> Option<Option<crate::model::Millis>> {
        if let Some(model) = self.model(name) {
            return Some(model.half_life);
        }
        let unavailable = self.unavailable.read().expect("scoring lock");
        let (record, _) = unavailable.get(name)?;
        Some(
            record
                .half_life
                .as_deref()
                .and_then(|text| crate::journeys::definition::parse_duration(text).ok()),
        )
    }

    fn stats_of(&self, name: &str) -> Arc<ModelStats> {
        (self.stats.lock().expect("stats lock"))
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Count one scoring call of `model`: the changes it made, or why it failed. A model
    /// whose calls fail [`SUSPEND_AFTER`] times in a row is suspended (unavailable, scoring
    /// nothing) until it is put again or the server restarts.
    pub fn count(&self, model: &Model, outcome: Result<usize, &str>) {
        let stats = self.stats_of(&model.record.name);
        match outcome {
            Ok(changes) => {
                stats.scored.fetch_add(1, Ordering::Relaxed);
                stats.changes.fetch_add(changes as u64, Ordering::Relaxed);
                stats.failing.store(0, Ordering::Relaxed);
            }
            Err(error) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if stats.failing.fetch_add(1, Ordering::Relaxed) + 1 == SUSPEND_AFTER {
                    self.suspend(model, error);
                }
            }
        }
    }

    /// Take `model` out of scoring, unless it was replaced meanwhile.
    fn suspend(&self, model: &Model, error: &str) {
        let name = &model.record.name;
        let mut models = self.models_mut();
        let current = models.get(name);
        if current.is_none_or(|m| m.record.revision != model.record.revision) {
            return;
        }
        let problem = format!(
            "suspended after {SUSPEND_AFTER} failed calls in a row (the last: {error}); put the model again to resume"
        );
        tracing::error!(model = %name, plugin = %model.plugin.id(), %problem, "scoring model suspended");
        // Listed as unavailable before it leaves the runnable: never missing from `names`.
        self.unavailable_mut()
            .insert(name.clone(), (model.record.clone(), problem));
        models.remove(name);
    }

    fn view(&self, record: ScoringModelRecord, problem: Option<String>) -> ModelView {
        let stats = self.stats_of(&record.name);
        ModelView {
            record,
            status: if problem.is_some() {
                "unavailable"
            } else {
                "ok"
            },
            problem,
            stats: BTreeMap::from([
                ("events_scored", stats.scored.load(Ordering::Relaxed)),
                ("changes", stats.changes.load(Ordering::Relaxed)),
                ("failed_calls", stats.failed.load(Ordering::Relaxed)),
            ]),
        }
    }

    /// Every model, by name.
    pub fn list(&self) -> Vec<ModelView> {
        let mut all: BTreeMap<String, ModelView> = BTreeMap::new();
        for model in self.models.read().expect("scoring lock").values() {
            let view = self.view(model.record.clone(), None);
            all.insert(model.record.name.clone(), view);
        }
        for (name, (record, problem)) in self.unavailable.read().expect("scoring lock").iter() {
            all.insert(
                name.clone(),
                self.view(record.clone(), Some(problem.clone())),
            );
        }
        all.into_values().collect()
    }

    pub fn get(&self, name: &str) -> Result<ModelView, ScoringError> {
        self.list()
            .into_iter()
            .find(|m| m.record.name == name)
            .ok_or_else(|| ScoringError::NotFound(name.to_owned()))
    }

    /// Create or replace the model `name`; whether it is new. Events scored after this use
    /// it; the audit log keeps what it was before.
    pub fn put(
        &self,
        name: &str,
        request: ModelRequest,
        actor: &str,
    ) -> Result<(ModelView, bool), ScoringError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        // The plugin it pins cannot be deleted until the model is stored.
        let _pins = self.registry.pinning();
        let previous = self
            .store
            .scoring_models()?
            .into_iter()
            .find(|m| m.name == name);
        let now = self.clock.now();
        let model = models::check(
            name,
            request,
            previous.as_ref(),
            &self.registry,
            &self.runtime,
            now,
        )
        .map_err(ScoringError::Invalid)?;
        let action = if previous.is_some() {
            "scoring_model.update"
        } else {
            "scoring_model.create"
        };
        let detail = serde_json::json!({"before": previous, "after": model.record});
        let audit = AuditEntry::new(now, actor, action, name, detail);
        self.store.put_scoring_model(&model.record, audit)?;
        self.store.flush()?;
        let record = model.record.clone();
        self.stats_of(name).failing.store(0, Ordering::Relaxed);
        // Runnable before it leaves the unavailable: never missing from `names`.
        self.models_mut().insert(name.to_owned(), Arc::new(model));
        self.unavailable_mut().remove(name);
        Ok((self.view(record, None), previous.is_none()))
    }

    /// Remove the model `name`. The scores it gave stay on the contacts, with their history.
    pub fn delete(&self, name: &str, actor: &str) -> Result<(), ScoringError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self
            .store
            .scoring_models()?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ScoringError::NotFound(name.to_owned()))?;
        let now = self.clock.now();
        let detail = serde_json::json!({"before": previous});
        let audit = AuditEntry::new(now, actor, "scoring_model.delete", name, detail);
        self.store.delete_scoring_model(name, audit)?;
        self.store.flush()?;
        self.models_mut().remove(name);
        self.unavailable_mut().remove(name);
        Ok(())
    }
}

/// The id of a contact's decay timer for a model, in the timers tree beside enrollments'.
pub fn timer_id(model: &str, contact_id: &str) -> String {
    format!("score:{model}:{contact_id}")
}

/// The model a timer id is the decay timer of, if it is one.
pub fn timer_model(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("score:")?;
    rest.split_once(':').map(|(model, _)| model)
}

/// Models in files at start-up (`serve --scoring DIR`): each `NAME.json` is the body of
/// `PUT /v1/scoring/models/NAME`, applied when no model of that name exists yet.
pub fn seed(scoring: &Scoring, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    let mut added = Vec::new();
    for path in files {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if scoring.get(&name).is_ok() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let request: ModelRequest = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match scoring.put(&name, request, crate::auth::STARTUP_ACTOR) {
            Ok(_) => added.push(name),
            Err(ScoringError::Invalid(problems)) => anyhow::bail!(
                "{}: {}",
                path.display(),
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Err(error) => anyhow::bail!("{}: {error}", path.display()),
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_ids_name_their_model_whatever_the_contact_id() {
        let id = timer_id("engagement", "weird:id:with:colons");
        assert_eq!(timer_model(&id), Some("engagement"));
        assert_eq!(timer_model("en_0123abcd"), None);
    }
}
