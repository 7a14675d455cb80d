//! Lifecycle stages by rules (DOMAIN.md §1): an ordered list of stages, each with the one
//! condition that puts a contact in it — no interaction for a while (`inactive_for`), a count
//! of an event (`count`: purchases), a recent sign-up (`registered_within`), a `condition` on
//! the contact (a score, an attribute, a tag), or, last, everyone else (`otherwise`). After
//! each event from outside, when a contact's stage timer fires, when the contact is updated
//! (with rules that read it) and, for everyone, when the rules change, the first rule that
//! holds gives the stage; a change is an event, `lifecycle_stage_changed` (`from`, `to`,
//! `cause`), so journeys start from it (the recall journey from `dormant`).
//!
//! Rules manage the stages they name (and `new`, every contact's first): a contact a journey
//! put in another stage (`mql`) is left there. Time-based rules need no scan: each contact has
//! one timer, at the next moment a rule could start or stop holding for it (`journeys::step::
//! stages` sets it).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::clock::SharedClock;
use crate::journeys::definition::parse_duration;
use crate::model::{Millis, check_name};
use crate::store::{AuditEntry, Store, StoreError};

/// The event a stage change emits.
pub const STAGE_EVENT: &str = "lifecycle_stage_changed";
/// Most rules.
const MAX_RULES: usize = 20;

/// The rules as an operator writes them (`PUT /v1/lifecycle`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesRequest {
    pub stages: Vec<StageRule>,
    /// A funnel (lead → MQL → SQL → customer, listed furthest first): a contact moves only to
    /// a stage listed before its own, never back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRule {
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<CountRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_within: Option<String>,
    /// A condition in the language of segments (`crate::audiences::condition`): a score, an
    /// attribute, a tag, consent. Not event windows: `count` counts events here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
    /// The last rule may hold always: where everyone no other rule places goes (a dormant
    /// contact who comes back without buying, say).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub otherwise: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRule {
    pub event: String,
    pub at_least: u64,
}

/// A rule's condition, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    InactiveFor(Millis),
    Count { event: String, at_least: u64 },
    RegisteredWithin(Millis),
    Matches(Box<crate::audiences::condition::Condition>),
    Otherwise,
}

/// The rules, checked and ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub request: RulesRequest,
    pub stages: Vec<(String, Condition)>,
    /// The stages the rules manage: theirs and `new`.
    pub managed: BTreeSet<String>,
    /// The events the `count` rules count.
    pub counted: BTreeSet<String>,
}

/// What is wrong with the rules, by the field it is about.
#[derive(Debug, Clone, Serialize)]
pub struct RuleProblem {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Error)]
pub enum LifecycleError {
    #[error("the lifecycle rules are not valid")]
    Invalid(Vec<RuleProblem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn duration(text: &str, path: String, problems: &mut Vec<RuleProblem>) -> Option<Millis> {
    match parse_duration(text) {
        Ok(ms) if (60_000..=3_650 * 86_400_000).contains(&ms) => Some(ms),
        Ok(_) => {
            problems.push(RuleProblem {
                path,
                message: "must be between 1m and 3650d".into(),
            });
            None
        }
        Err(message) => {
            problems.push(RuleProblem { path, message });
            None
        }
    }
}

impl Rules {
    /// Check `request` rule by rule; every problem is named by its path.
    pub fn check(request: RulesRequest) -> Result<Rules, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut stages = Vec::new();
        if request.stages.len() > MAX_RULES {
            problems.push(RuleProblem {
                path: "stages".into(),
                message: format!("at most {MAX_RULES} rules"),
            });
        }
        let mut seen = BTreeSet::new();
        for (n, rule) in request.stages.iter().enumerate() {
            let at = |field: &str| format!("stages.{n}.{field}");
            if let Err(message) = crate::scoring::check_model_name(&rule.stage) {
                let message = message.replace("a model's name", "a stage");
                problems.push(RuleProblem {
                    path: at("stage"),
                    message,
                });
            } else if !seen.insert(rule.stage.clone()) {
                problems.push(RuleProblem {
                    path: at("stage"),
                    message: format!("stage `{}` has a rule already", rule.stage),
                });
            }
            let given = [
                rule.inactive_for.is_some(),
                rule.count.is_some(),
                rule.registered_within.is_some(),
                rule.condition.is_some(),
                rule.otherwise,
            ];
            if given.iter().filter(|g| **g).count() != 1 {
                problems.push(RuleProblem {
                    path: format!("stages.{n}"),
                    message: "give exactly one of `inactive_for`, `count`, `registered_within`, `condition` and `otherwise`"
                        .into(),
                });
                continue;
            }
            let condition = if rule.otherwise {
                if n + 1 != request.stages.len() {
                    problems.push(RuleProblem {
                        path: at("otherwise"),
                        message:
                            "only the last rule may hold otherwise: it hides the rules after it"
                                .into(),
                    });
                }
                Some(Condition::Otherwise)
            } else if let Some(text) = &rule.inactive_for {
                duration(text, at("inactive_for"), &mut problems).map(Condition::InactiveFor)
            } else if let Some(text) = &rule.registered_within {
                duration(text, at("registered_within"), &mut problems)
                    .map(Condition::RegisteredWithin)
            } else if let Some(json) = &rule.condition {
                match crate::audiences::condition::check(json, &at("condition")) {
                    Ok(checked) if checked.counters.is_empty() => {
                        Some(Condition::Matches(Box::new(checked.condition)))
                    }
                    Ok(_) => {
                        problems.push(RuleProblem {
                            path: at("condition"),
                            message: "event windows are for segments; count events with `count`"
                                .into(),
                        });
                        None
                    }
                    Err(found) => {
                        problems.extend(found.into_iter().map(|p| RuleProblem {
                            path: p.path,
                            message: p.message,
                        }));
                        None
                    }
                }
            } else {
                let count = rule.count.as_ref().expect("one is given");
                let mut fine = true;
                if let Err(message) = check_name(&count.event) {
                    problems.push(RuleProblem {
                        path: at("count.event"),
                        message,
                    });
                    fine = false;
                }
                if count.at_least == 0 {
                    problems.push(RuleProblem {
                        path: at("count.at_least"),
                        message:
                            "must be at least 1 (a rule that always holds hides the ones after it)"
                                .into(),
                    });
                    fine = false;
                }
                fine.then(|| Condition::Count {
                    event: count.event.clone(),
                    at_least: count.at_least,
                })
            };
            if let Some(condition) = condition {
                stages.push((rule.stage.clone(), condition));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut managed: BTreeSet<String> = stages.iter().map(|(s, _)| s.clone()).collect();
        managed.insert("new".into());
        let counted = (stages.iter())
            .filter_map(|(_, c)| match c {
                Condition::Count { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect();
        Ok(Rules {
            request,
            stages,
            managed,
            counted,
        })
    }
}

/// The workspace's rules, kept in memory (every event reads them).
pub struct Lifecycle {
    rules: RwLock<Option<Arc<Rules>>>,
    store: Arc<dyn Store>,
    clock: SharedClock,
    changes: Mutex<()>,
}

impl Lifecycle {
    pub fn load(store: Arc<dyn Store>, clock: SharedClock) -> Result<Self, StoreError> {
        let rules = match store.lifecycle_rules()? {
            None => None,
            Some(json) => {
                let request: RulesRequest = serde_json::from_value(json).map_err(|e| {
                    StoreError::Corrupt(format!("stored lifecycle rules do not read: {e}"))
                })?;
                let rules = Rules::check(request).map_err(|problems| {
                    StoreError::Corrupt(format!("stored lifecycle rules do not pass: {problems:?}"))
                })?;
                (!rules.stages.is_empty()).then(|| Arc::new(rules))
            }
        };
        Ok(Lifecycle {
            rules: RwLock::new(rules),
            store,
            clock,
            changes: Mutex::new(()),
        })
    }

    /// The rules in force, if any.
    pub fn rules(&self) -> Option<Arc<Rules>> {
        self.rules.read().expect("lifecycle lock").clone()
    }

    /// Whether no rules were ever set (not even turned off).
    pub fn never_set(&self) -> Result<bool, StoreError> {
        Ok(self.store.lifecycle_rules()?.is_none())
    }

    /// The rules as set (`{"stages": []}` when none).
    pub fn request(&self) -> RulesRequest {
        self.rules().map(|r| r.request.clone()).unwrap_or_default()
    }

    /// Replace the rules (`{"stages": []}` turns them off). Everyone is looked at again by the
    /// new rules (a sweep, as for a segment's definition), so a contact who never sent an event
    /// gets a stage and a stage timer too.
    pub fn put(&self, request: RulesRequest, actor: &str) -> Result<RulesRequest, LifecycleError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let rules = Rules::check(request).map_err(LifecycleError::Invalid)?;
        let before = self.request();
        let now = self.clock.now();
        let detail = serde_json::json!({"before": before, "after": rules.request});
        let audit = AuditEntry::new(now, actor, "lifecycle.update", "lifecycle", detail);
        let json = serde_json::to_value(&rules.request).expect("rules serialize");
        let sweep = (!rules.stages.is_empty()).then(|| crate::audiences::refresh_sweep(now));
        self.store
            .put_lifecycle_rules(&json, sweep.as_ref(), audit)?;
        self.store.flush()?;
        let request = rules.request.clone();
        *self.rules.write().expect("lifecycle lock") =
            (!rules.stages.is_empty()).then(|| Arc::new(rules));
        Ok(request)
    }
}

/// The rules in `file` (the body of `PUT /v1/lifecycle`), set at start-up.
pub fn seed(lifecycle: &Lifecycle, file: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let request: RulesRequest =
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    match lifecycle.put(request, crate::auth::STARTUP_ACTOR) {
        Ok(_) => Ok(()),
        Err(LifecycleError::Invalid(problems)) => anyhow::bail!(
            "{}: {}",
            file.display(),
            (problems.iter())
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Err(error) => anyhow::bail!("{}: {error}", file.display()),
    }
}

/// The id of a contact's stage timer.
pub fn timer_id(contact_id: &str) -> String {
    format!("stage:{contact_id}")
}

/// Whether a timer id is a stage timer.
pub fn is_stage_timer(id: &str) -> bool {
    id.starts_with("stage:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> RulesRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn each_rule_is_checked_and_named_by_its_path() {
        let problems = Rules::check(request(serde_json::json!({"stages": [
            {"stage": "dormant", "inactive_for": "soon"},
            {"stage": "stable", "count": {"event": "purchased", "at_least": 0}},
            {"stage": "Growth!", "count": {"event": "purchased", "at_least": 1}},
            {"stage": "new", "registered_within": "30d", "inactive_for": "90d"},
            {"stage": "dormant", "inactive_for": "1d"},
            {"stage": "active", "otherwise": true},
            {"stage": "last", "inactive_for": "1d"}
        ]})))
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "stages.0.inactive_for",
                "stages.1.count.at_least",
                "stages.2.stage",
                "stages.3",
                "stages.4.stage",
                "stages.5.otherwise"
            ]
        );
        let rules = Rules::check(request(serde_json::json!({"stages": [
            {"stage": "dormant", "inactive_for": "90d"},
            {"stage": "stable", "count": {"event": "purchased", "at_least": 3}}
        ]})))
        .unwrap();
        assert!(rules.managed.contains("new") && rules.managed.contains("stable"));
        assert_eq!(rules.counted.iter().collect::<Vec<_>>(), ["purchased"]);
    }
}
