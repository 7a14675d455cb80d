//! Segments and tag rules (DOMAIN.md §1): named conditions over a contact's attributes, tags,
//! scores, stage, consent and events in sliding windows. A tag rule adds its tag while its
//! condition holds and removes it when it stops (only a tag it gave, `model::Audience::ruled`;
//! deleting the rule takes those away too); a segment is the set of contacts its
//! condition holds for, and entering or leaving it is an event (`segment_entered`,
//! `segment_left`) journeys start from.
//!
//! Membership is kept incrementally, never by rescanning: the journey worker looks at a
//! contact again after each of its events, updates and journey steps
//! (`journeys::step::audiences`), and a timer per contact fires when time alone could change
//! the answer (an event leaving a window, a decaying score reaching a bound). A definition
//! that changes is looked at for everyone by a sweep (`sweeps`), a page at a time.
//!
//! This module owns the definitions and their checks; it does not run journey steps.

pub mod condition;
pub mod sweeps;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::clock::SharedClock;
use crate::store::{
    AudienceKind, AudienceRecord, AuditEntry, Store, StoreError, SweepRecord, SweepWork,
};
use condition::{Checked, Counter, Problem};

/// The events entering and leaving a segment emit (`segment`: its name).
pub const ENTERED_EVENT: &str = "segment_entered";
pub const LEFT_EVENT: &str = "segment_left";
/// Most segments, and most tag rules.
pub const MAX_DEFINITIONS: usize = 200;
/// The sweep that looks at everyone again after a definition changed.
const REFRESH_SWEEP: &str = "refresh";
/// How fast a refresh sweep queues contacts.
const REFRESH_PER_SECOND: u32 = 20_000;

/// A sweep, started at `now`, that has everyone looked at again: their segments, tags and
/// lifecycle stage (a definition or the stage rules changed). One at a time: starting it again
/// starts it over.
pub fn refresh_sweep(now: crate::model::Millis) -> SweepRecord {
    SweepRecord {
        id: REFRESH_SWEEP.into(),
        work: SweepWork::Refresh,
        segment: None,
        after: None,
        queued: 0,
        per_second: REFRESH_PER_SECOND,
        started_at: now,
        finished_at: None,
    }
}

/// A definition as an operator writes it (`PUT /v1/segments/{name}`, `PUT /v1/tag-rules/{tag}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionRequest {
    #[serde(default)]
    pub description: String,
    pub condition: serde_json::Value,
}

/// A definition in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub record: AudienceRecord,
    pub checked: Checked,
}

/// Every definition in force, read by each batch.
#[derive(Debug, Default)]
pub struct Rules {
    /// Tag rules by tag; looked at before segments, so a segment may name a rule's tag.
    pub tags: Vec<Arc<Definition>>,
    pub segments: Vec<Arc<Definition>>,
    /// The counters window clauses need, all definitions together.
    pub counters: BTreeMap<String, Counter>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.segments.is_empty()
    }

    fn of(definitions: &BTreeMap<(AudienceKind, String), Arc<Definition>>) -> Rules {
        let mut rules = Rules::default();
        for ((kind, _), definition) in definitions {
            match kind {
                AudienceKind::Tag => rules.tags.push(definition.clone()),
                AudienceKind::Segment => rules.segments.push(definition.clone()),
            }
            for (key, counter) in &definition.checked.counters {
                let kept = rules
                    .counters
                    .entry(key.clone())
                    .or_insert_with(|| counter.clone());
                kept.span = kept.span.max(counter.span);
                kept.keep = kept.keep.max(counter.keep);
            }
        }
        rules
    }
}

#[derive(Debug, Error)]
pub enum AudienceError {
    #[error("the definition is not valid")]
    Invalid(Vec<Problem>),
    #[error("no {0} called `{1}`")]
    NotFound(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The workspace's segments and tag rules, kept in memory (every batch reads them).
pub struct Audiences {
    definitions: RwLock<BTreeMap<(AudienceKind, String), Arc<Definition>>>,
    rules: RwLock<Arc<Rules>>,
    store: Arc<dyn Store>,
    clock: SharedClock,
    changes: Mutex<()>,
}

/// The name a definition may have: it is part of URLs and event properties.
fn check_name(name: &str) -> Result<(), Problem> {
    crate::scoring::check_model_name(name).map_err(|message| Problem {
        path: "name".into(),
        message: message.replace("a model's name", "a name"),
    })
}

impl Audiences {
    pub fn load(store: Arc<dyn Store>, clock: SharedClock) -> Result<Self, StoreError> {
        let mut definitions = BTreeMap::new();
        for record in store.audiences()? {
            let checked = condition::check(&record.condition, "condition").map_err(|problems| {
                StoreError::Corrupt(format!(
                    "stored {} `{}` does not pass: {problems:?}",
                    record.kind.as_str(),
                    record.name
                ))
            })?;
            definitions.insert(
                (record.kind, record.name.clone()),
                Arc::new(Definition { record, checked }),
            );
        }
        let rules = Arc::new(Rules::of(&definitions));
        Ok(Audiences {
            definitions: RwLock::new(definitions),
            rules: RwLock::new(rules),
            store,
            clock,
            changes: Mutex::new(()),
        })
    }

    /// The definitions in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.read().expect("audiences lock").clone()
    }

    /// The generation of the definition in force under `name`, without copying it.
    pub fn generation(&self, kind: AudienceKind, name: &str) -> Option<u64> {
        let definitions = self.definitions.read().expect("audiences lock");
        (definitions.get(&(kind, name.to_owned()))).map(|d| d.record.generation)
    }

    pub fn get(&self, kind: AudienceKind, name: &str) -> Option<AudienceRecord> {
        let definitions = self.definitions.read().expect("audiences lock");
        (definitions.get(&(kind, name.to_owned()))).map(|d| d.record.clone())
    }

    pub fn list(&self, kind: AudienceKind) -> Vec<AudienceRecord> {
        let definitions = self.definitions.read().expect("audiences lock");
        (definitions.iter())
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, d)| d.record.clone())
            .collect()
    }

    /// Create or replace a definition. Everyone is looked at again (a sweep), so contacts
    /// enter and leave by the new condition without waiting for their next event.
    pub fn put(
        &self,
        kind: AudienceKind,
        name: &str,
        request: DefinitionRequest,
        actor: &str,
    ) -> Result<AudienceRecord, AudienceError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let mut problems = Vec::new();
        if let Err(problem) = check_name(name) {
            problems.push(problem);
        }
        if request.description.len() > 1_000 {
            problems.push(Problem {
                path: "description".into(),
                message: "at most 1000 bytes".into(),
            });
        }
        let checked = condition::check(&request.condition, "condition");
        let checked = match checked {
            Ok(checked) if problems.is_empty() => checked,
            Ok(_) => return Err(AudienceError::Invalid(problems)),
            Err(more) => {
                problems.extend(more);
                return Err(AudienceError::Invalid(problems));
            }
        };
        let key = (kind, name.to_owned());
        let before = self
            .definitions
            .read()
            .expect("audiences lock")
            .get(&key)
            .cloned();
        let count = self.list(kind).len();
        if before.is_none() && count >= MAX_DEFINITIONS {
            return Err(AudienceError::Invalid(vec![Problem {
                path: "name".into(),
                message: format!("at most {MAX_DEFINITIONS} of a kind; delete one first"),
            }]));
        }
        let now = self.clock.now();
        let record = AudienceRecord {
            kind,
            name: name.to_owned(),
            description: request.description,
            condition: request.condition,
            created_at: before.as_ref().map_or(now, |b| b.record.created_at),
            generation: before
                .as_ref()
                .map_or_else(new_generation, |b| b.record.generation),
            updated_at: now,
            revision: before.as_ref().map_or(1, |b| b.record.revision + 1),
        };
        let detail = serde_json::json!({
            "before": before.as_ref().map(|b| &b.record.condition),
            "after": record.condition,
        });
        let audit = AuditEntry::new(
            now,
            actor,
            &format!("{}.put", kind.as_str()),
            &format!("{}:{name}", kind.as_str()),
            detail,
        );
        self.store
            .put_audience(&record, &refresh_sweep(now), audit)?;
        self.store.flush()?;
        let definition = Arc::new(Definition {
            record: record.clone(),
            checked,
        });
        self.replace(|definitions| {
            definitions.insert(key, definition);
        });
        Ok(record)
    }

    pub fn delete(&self, kind: AudienceKind, name: &str, actor: &str) -> Result<(), AudienceError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind, name.to_owned());
        let Some(before) = self
            .definitions
            .read()
            .expect("audiences lock")
            .get(&key)
            .cloned()
        else {
            return Err(AudienceError::NotFound(kind.as_str(), name.to_owned()));
        };
        let audit = AuditEntry::new(
            self.clock.now(),
            actor,
            &format!("{}.delete", kind.as_str()),
            &format!("{}:{name}", kind.as_str()),
            serde_json::json!({"before": before.record.condition}),
        );
        // The tags a deleted rule gave go with it: everyone is looked at again.
        let sweep = (kind == AudienceKind::Tag).then(|| refresh_sweep(self.clock.now()));
        self.store
            .delete_audience(kind, name, sweep.as_ref(), audit)?;
        self.store.flush()?;
        self.replace(|definitions| {
            definitions.remove(&key);
        });
        Ok(())
    }

    fn replace(&self, change: impl FnOnce(&mut BTreeMap<(AudienceKind, String), Arc<Definition>>)) {
        let mut definitions = self.definitions.write().expect("audiences lock");
        change(&mut definitions);
        *self.rules.write().expect("audiences lock") = Arc::new(Rules::of(&definitions));
    }
}

/// Definitions in files at start-up (`serve --audiences DIR`): `DIR/tag-rules/NAME.json` and
/// `DIR/segments/NAME.json`, each the body of its `PUT`, applied when none of that name
/// exists yet. The names added, as `kind:name`.
pub fn seed(audiences: &Audiences, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut added = Vec::new();
    for (kind, sub) in [
        (AudienceKind::Tag, "tag-rules"),
        (AudienceKind::Segment, "segments"),
    ] {
        let dir = dir.join(sub);
        if !dir.is_dir() {
            continue;
        }
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        for path in files {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if audiences.get(kind, &name).is_some() {
                continue;
            }
            let bytes =
                std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let request: DefinitionRequest = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            match audiences.put(kind, &name, request, crate::auth::STARTUP_ACTOR) {
                Ok(_) => added.push(format!("{}:{name}", kind.as_str())),
                Err(AudienceError::Invalid(problems)) => anyhow::bail!(
                    "{}: {}",
                    path.display(),
                    (problems.iter())
                        .map(|p| format!("{}: {}", p.path, p.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                Err(error) => anyhow::bail!("{}: {error}", path.display()),
            }
        }
    }
    Ok(added)
}

/// A segment made anew gets a generation no segment of its name had (see
/// `model::Audience::segments`).
fn new_generation() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    // 53 bits: a JSON reader that keeps numbers as doubles (JavaScript) reads it exactly.
    u64::from_be_bytes(bytes) >> 11
}

/// The id of a contact's audience timer.
pub fn timer_id(contact_id: &str) -> String {
    format!("audience:{contact_id}")
}

/// Whether a timer id is an audience timer.
pub fn is_audience_timer(id: &str) -> bool {
    id.starts_with("audience:")
}
