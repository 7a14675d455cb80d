//! A scoring model as the operator sends it (`PUT /v1/scoring/models/{name}`), checked field by
//! field, and made runnable: its scorer plugin resolved and pinned, its config prepared by the
//! plugin's own `validate-config`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::journeys::definition::parse_duration;
use crate::model::{Millis, PreparedConfig};
use crate::registry::Registry;
use crate::runtime::{Plugin, PluginKind, Runtime};
use crate::store::ScoringModelRecord;

/// The event a threshold crossing emits.
pub const THRESHOLD_EVENT: &str = "score_threshold_crossed";
/// Most events one model selects, and most thresholds it has.
const MAX_EVENTS: usize = 100;
const MAX_THRESHOLDS: usize = 20;
/// Shortest and longest half-life.
const MIN_HALF_LIFE: Millis = 3_600_000;
const MAX_HALF_LIFE: Millis = 10 * 365 * 86_400_000;

/// A model as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRequest {
    #[serde(default)]
    pub description: String,
    /// `name@version`, or a name for its newest loaded version (pinned here).
    pub plugin: String,
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// The event names it scores.
    pub events: Vec<String>,
    /// How long points take to halve (`30d`); they keep when absent.
    #[serde(default)]
    pub half_life: Option<String>,
    /// Scores whose crossing emits `score_threshold_crossed`, e.g. `[80, 90]`.
    #[serde(default)]
    pub thresholds: Vec<f64>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// What is wrong with a model, by the field it is about.
#[derive(Debug, Clone, Serialize)]
pub struct ModelProblem {
    pub path: String,
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ModelProblem {
    ModelProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// A model ready to score: its record, plugin and prepared config.
pub struct Model {
    pub record: ScoringModelRecord,
    pub plugin: Arc<Plugin>,
    pub config: PreparedConfig,
    pub half_life: Option<Millis>,
}

impl Model {
    /// Does this model score events named `name`?
    pub fn selects(&self, name: &str) -> bool {
        self.record.events.iter().any(|e| e == name)
    }
}

/// Whether `name` may name a model: 1 to 64 of `a-z 0-9 _ -`, so it reads well in a URL, a
/// timer id and an event property.
pub fn check_model_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if fine {
        Ok(())
    } else {
        Err("a model's name is 1 to 64 of a-z, 0-9, `_` and `-`".into())
    }
}

/// Check `request` and make the record it asks for (`previous` is the model it replaces).
pub fn check(
    name: &str,
    request: ModelRequest,
    previous: Option<&ScoringModelRecord>,
    registry: &Registry,
    runtime: &Runtime,
    now: Millis,
) -> Result<Model, Vec<ModelProblem>> {
    let mut problems = Vec::new();
    if let Err(error) = check_model_name(name) {
        problems.push(problem("name", error));
    }
    if request.description.len() > 1_000 {
        problems.push(problem("description", "is at most 1,000 bytes"));
    }
    if request.events.is_empty() {
        problems.push(problem(
            "events",
            "name at least one event this model scores",
        ));
    }
    if request.events.len() > MAX_EVENTS {
        problems.push(problem("events", format!("at most {MAX_EVENTS} events")));
    }
    for (n, event) in request.events.iter().enumerate() {
        if let Err(error) = crate::model::check_name(event) {
            problems.push(problem(format!("events.{n}"), error));
        } else if event == THRESHOLD_EVENT {
            problems.push(problem(
                format!("events.{n}"),
                format!(
                    "a model cannot score `{THRESHOLD_EVENT}`: its own crossings would feed it"
                ),
            ));
        }
    }
    let half_life = match &request.half_life {
        None => None,
        Some(text) => match parse_duration(text) {
            Ok(ms) if (MIN_HALF_LIFE..=MAX_HALF_LIFE).contains(&ms) => Some(ms),
            Ok(_) => {
                problems.push(problem("half_life", "must be between 1h and 3650d"));
                None
            }
            Err(error) => {
                problems.push(problem("half_life", error));
                None
            }
        },
    };
    if request.thresholds.len() > MAX_THRESHOLDS {
        problems.push(problem(
            "thresholds",
            format!("at most {MAX_THRESHOLDS} thresholds"),
        ));
    }
    for (n, threshold) in request.thresholds.iter().enumerate() {
        if !threshold.is_finite() {
            problems.push(problem(
                format!("thresholds.{n}"),
                "must be a finite number",
            ));
        } else if n > 0 && *threshold <= request.thresholds[n - 1] {
            problems.push(problem(
                format!("thresholds.{n}"),
                "thresholds go in ascending order, each once",
            ));
        }
    }
    let plugin = match registry.resolve(&request.plugin) {
        None => {
            problems.push(problem(
                "plugin",
                format!("plugin `{}` is not loaded", request.plugin),
            ));
            None
        }
        Some(plugin) if plugin.kind != PluginKind::Scorer => {
            problems.push(problem(
                "plugin",
                format!(
                    "`{}` is a {} plugin; a scoring model runs a scorer plugin",
                    plugin.id(),
                    plugin.kind.as_str()
                ),
            ));
            None
        }
        Some(plugin) => Some(plugin),
    };
    let config = plugin
        .as_ref()
        .and_then(|plugin| prepare(runtime, plugin, &request.config, &mut problems));
    let (Some(plugin), Some(config)) = (plugin, config) else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let record = ScoringModelRecord {
        name: name.to_owned(),
        description: request.description,
        plugin: plugin.id().to_owned(),
        sha256: plugin.sha256.clone(),
        config: request.config,
        events: request.events,
        half_life: request.half_life,
        thresholds: request.thresholds,
        created_at: previous.map_or(now, |p| p.created_at),
        updated_at: now,
        revision: previous.map_or(1, |p| p.revision + 1),
    };
    Ok(Model {
        record,
        plugin,
        config,
        half_life,
    })
}

/// The plugin's prepared config, or its problems (under `config.`) added to `problems`.
fn prepare(
    runtime: &Runtime,
    plugin: &Plugin,
    config: &serde_json::Value,
    problems: &mut Vec<ModelProblem>,
) -> Option<PreparedConfig> {
    match runtime.validate_config(plugin, &config.to_string()).result {
        Ok(Ok(prepared)) => Some(prepared),
        Ok(Err(refused)) => {
            problems.extend(refused.into_iter().map(|p| {
                problem(
                    format!("config.{}", p.path).trim_end_matches('.'),
                    p.message,
                )
            }));
            None
        }
        Err(error) => {
            problems.push(problem(
                "config",
                format!("the plugin failed to check it: {error}"),
            ));
            None
        }
    }
}

/// A stored model made runnable again at start-up: its pinned binary must be loaded, and
/// must still accept its config.
pub fn rebuild(
    record: ScoringModelRecord,
    registry: &Registry,
    runtime: &Runtime,
) -> Result<Model, String> {
    let plugin = registry
        .get(&record.plugin)
        .filter(|p| p.sha256 == record.sha256)
        .ok_or_else(|| {
            format!(
                "plugin `{}` (sha256 {}) is not loaded",
                record.plugin, record.sha256
            )
        })?;
    let mut problems = Vec::new();
    let config = prepare(runtime, &plugin, &record.config, &mut problems).ok_or_else(|| {
        (problems.iter())
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let half_life = match &record.half_life {
        Some(text) => Some(parse_duration(text)?),
        None => None,
    };
    Ok(Model {
        record,
        plugin,
        config,
        half_life,
    })
}
