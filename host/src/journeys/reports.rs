//! What a journey's counters say: per node for one version (`stats`), and in total for its
//! listing; and what changed between two of its versions.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{JourneyError, Journeys, definition, diff, parse};
use crate::store::JourneyRecord;

/// A journey's counts over all its versions, as its listing shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JourneyTotals {
    /// Contacts who entered it.
    pub enrolled: i64,
    /// Contacts at one of its waits now.
    pub waiting: i64,
    pub converted: i64,
    pub completed: i64,
    pub exited: i64,
    /// Steps that failed (retried or parked).
    pub failed: i64,
}

/// Per-node counts of one version.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    pub node: String,
    pub counts: BTreeMap<String, i64>,
}

impl Journeys {
    /// Per-node counts of a version (the latest when `None`).
    pub fn stats(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<(u32, Vec<NodeStats>), JourneyError> {
        let record = self.get(id)?;
        let version = version.unwrap_or(record.published_version);
        let mut nodes: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        if version > 0 {
            let published = self.version(id, version)?;
            let definition = parse(&published.definition)?;
            for node in &definition.nodes {
                nodes.entry(node.id.clone()).or_default();
            }
        }
        for (key, count) in self.store.counters(id)? {
            if key.version == version {
                nodes.entry(key.node).or_default().insert(key.metric, count);
            }
        }
        Ok((
            version,
            nodes
                .into_iter()
                .map(|(node, counts)| NodeStats { node, counts })
                .collect(),
        ))
    }

    /// What changed from version `from` to version `to`.
    pub fn diff(&self, id: &str, from: u32, to: u32) -> Result<serde_json::Value, JourneyError> {
        Ok(diff::diff(&self.version(id, from)?, &self.version(id, to)?))
    }

    /// `record`'s counts over all its versions.
    pub fn totals(&self, record: &JourneyRecord) -> Result<JourneyTotals, JourneyError> {
        let mut entries = std::collections::BTreeSet::new();
        for version in 1..=record.published_version {
            let Some(published) = self.store.journey_version(&record.id, version)? else {
                continue;
            };
            for node in parse(&published.definition)?.nodes {
                if matches!(node.kind, definition::NodeKind::Entry { .. }) {
                    entries.insert((version, node.id));
                }
            }
        }
        let mut totals = JourneyTotals::default();
        for (key, count) in self.store.counters(&record.id)? {
            match key.metric.as_str() {
                "entered" if entries.contains(&(key.version, key.node.clone())) => {
                    totals.enrolled += count
                }
                "waiting" => totals.waiting += count,
                "converted" => totals.converted += count,
                "completed" => totals.completed += count,
                "exited" => totals.exited += count,
                "failed" => totals.failed += count,
                _ => {}
            }
        }
        Ok(totals)
    }
}
