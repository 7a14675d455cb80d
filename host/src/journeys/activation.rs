//! Moving a journey to another version of one of its plugins — to activate a new version or
//! roll back to an old one — while it runs.
//!
//! A move is recorded on the journey ([`JourneyRecord::plugin_versions`]): every version of the
//! journey, published before or after, runs the plugin at the version moved to, so contacts
//! already in the journey take their next step on it. Before anything is written, every
//! published version that runs the plugin is built again on the new version, which checks each
//! node's config with it; one refusal refuses the move. The built versions then replace the old
//! ones in the catalog, so the next step runs the new version, while a step already running
//! holds the version it started with and finishes on it.

use std::sync::Arc;

use serde::Serialize;

use super::compiled::{CompiledJourney, Moves};
use super::definition::Definition;
use super::{JourneyError, Journeys, Problem};
use crate::store::{AuditEntry, JourneyStatus, PluginPin};

/// What a move did.
#[derive(Debug, Serialize)]
pub struct Moved {
    pub journey_id: String,
    pub plugin: String,
    /// The version the journey ran before, when it was moved before or every version pinned
    /// the same one.
    pub from: Option<String>,
    pub to: String,
    /// The published versions that run the plugin, all now on `to`.
    pub versions: Vec<u32>,
    /// False when the journey ran `to` already: nothing was written.
    pub changed: bool,
}

impl Journeys {
    /// Move journey `id` onto plugin version `to` (`name@version`), recorded as done by `actor`.
    pub fn move_plugin(&self, id: &str, to: &str, actor: &str) -> Result<Moved, JourneyError> {
        let _changing = self.changing();
        let mut record = self.get(id)?;
        if record.status == JourneyStatus::Archived {
            return Err(JourneyError::Archived(id.to_owned()));
        }
        let target = match to.split_once('@') {
            Some((name, version)) if !name.is_empty() && !version.is_empty() => {
                self.registry.get(to)
            }
            _ => {
                return Err(JourneyError::Malformed(format!(
                    "move to `name@version`, not `{to}`: a move names the exact version"
                )));
            }
        }
        .ok_or_else(|| JourneyError::PluginNotLoaded(to.to_owned()))?;
        let name = target.info.name.clone();

        // The published versions that run the plugin, and what they run it at now.
        let mut running = Vec::new();
        let mut pins = std::collections::BTreeSet::new();
        for number in 1..=record.published_version {
            let stored = self.version(id, number)?;
            let definition: Definition = serde_json::from_value(stored.definition)
                .map_err(|e| JourneyError::Malformed(format!("version {number}: {e}")))?;
            let mut uses = false;
            for node in &definition.nodes {
                if let Some(used) = node.plugin_name()
                    && used.split('@').next() == Some(name.as_str())
                {
                    uses = true;
                    pins.insert(used.to_owned());
                }
            }
            if uses {
                running.push(number);
            }
        }
        if running.is_empty() {
            return Err(JourneyError::PluginNotUsed(id.to_owned(), name));
        }
        let from = match record.plugin_versions.get(&name) {
            Some(pin) => Some(pin.id.clone()),
            None if pins.len() == 1 => pins.into_iter().next(),
            None => None,
        };
        if record
            .plugin_versions
            .get(&name)
            .is_some_and(|pin| pin.id == target.id() && pin.sha256 == target.sha256)
        {
            return Ok(Moved {
                journey_id: id.to_owned(),
                plugin: name,
                from,
                to: to.to_owned(),
                versions: running,
                changed: false,
            });
        }

        let now = self.clock.now();
        let mut moved: Moves = record.plugin_versions.clone();
        moved.insert(
            name.clone(),
            PluginPin {
                id: target.id().to_owned(),
                sha256: target.sha256.clone(),
                moved_at: now,
                moved_by: actor.to_owned(),
            },
        );
        let built = self.build_on(id, &running, &moved, target.id())?;

        let before = record.plugin_versions.get(&name).cloned();
        record.plugin_versions = moved;
        record.updated_at = now;
        let detail = serde_json::json!({
            "plugin": name,
            "before": {"plugin": from, "sha256": before.map(|pin| pin.sha256)},
            "after": {"plugin": target.id(), "sha256": target.sha256},
            "versions": running,
        });
        let audit = AuditEntry::new(now, actor, "journey.plugin_move", id, detail);
        self.store.put_journey(&record, audit)?;
        for version in built {
            self.catalog.install(version);
        }
        self.catalog
            .refresh(&record)
            .map_err(JourneyError::Malformed)?;
        Ok(Moved {
            journey_id: id.to_owned(),
            plugin: name,
            from,
            to: target.id().to_owned(),
            versions: running,
            changed: true,
        })
    }

    /// Build each of `versions` on the plugin versions `moved`, every refusal named by version
    /// and node. A version that does not build on the versions it runs now either (a plugin of
    /// it was removed) runs nothing today and is left as it is.
    fn build_on(
        &self,
        id: &str,
        versions: &[u32],
        moved: &Moves,
        to: &str,
    ) -> Result<Vec<Arc<CompiledJourney>>, JourneyError> {
        let mut built = Vec::new();
        let mut problems = Vec::new();
        for &number in versions {
            let stored = self.version(id, number)?;
            match CompiledJourney::build(&stored, moved, &self.registry, &self.runtime) {
                Ok(version) => built.push(Arc::new(version)),
                Err(_) if self.catalog.version(id, number).is_err() => {
                    tracing::warn!(journey = %id, version = number, "a version that does not run today is not moved");
                }
                Err(refused) => problems.push(Problem {
                    node: None,
                    version: Some(number),
                    message: refused,
                }),
            }
        }
        if problems.is_empty() {
            Ok(built)
        } else {
            Err(JourneyError::MoveRefused(to.to_owned(), problems))
        }
    }
}
