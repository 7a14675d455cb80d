//! A published journey version made ready to run: plugins looked up, configs serialized, time
//! windows parsed. Built once per version and shared by every step that runs it.

use std::collections::HashMap;
use std::sync::Arc;

use super::definition::{Definition, NodeKind};
use super::windows::Window;
use crate::model::PreparedConfig;
use crate::registry::Registry;
use crate::runtime::{Plugin, Runtime};
use crate::store::JourneyVersion;

/// A plugin and the config a node gives it, as the plugin prepared it in `validate-config`.
pub struct NodePlugin {
    pub plugin: Arc<Plugin>,
    pub config: PreparedConfig,
}

/// One journey version, ready to run.
pub struct CompiledJourney {
    pub journey_id: String,
    pub version: u32,
    pub definition: Definition,
    /// By node id: the plugin of each entry, condition and action node.
    pub plugins: HashMap<String, NodePlugin>,
    /// By node id: the window of each `until` wait.
    pub windows: HashMap<String, Window>,
}

impl CompiledJourney {
    /// Make a published version runnable: each node's plugin looked up and its config
    /// prepared by the plugin's own `validate-config` (prepared bytes belong to the plugin
    /// binary that made them, so they are made again in every process). Fails when a pinned
    /// plugin is not loaded or now refuses its config.
    pub fn build(
        version: &JourneyVersion,
        registry: &Registry,
        runtime: &Runtime,
    ) -> Result<Self, String> {
        let definition: Definition = serde_json::from_value(version.definition.clone())
            .map_err(|e| format!("stored definition does not parse: {e}"))?;
        let mut plugins = HashMap::new();
        let mut windows = HashMap::new();
        for node in &definition.nodes {
            let (plugin, config) = match &node.kind {
                NodeKind::Entry {
                    plugin: Some(plugin),
                    config,
                } => (plugin, config.clone().unwrap_or(serde_json::Value::Null)),
                NodeKind::Condition { plugin, config } | NodeKind::Action { plugin, config } => {
                    (plugin, config.clone())
                }
                NodeKind::Wait(wait) => {
                    if let Some(window) = &wait.until {
                        windows.insert(node.id.clone(), Window::parse(window)?);
                    }
                    continue;
                }
                _ => continue,
            };
            let loaded = registry
                .get(plugin)
                .ok_or_else(|| format!("plugin `{plugin}` of node `{}` is not loaded", node.id))?;
            let prepared = match runtime
                .validate_config(&loaded, &config_text(&config))
                .result
            {
                Ok(Ok(prepared)) => prepared,
                Ok(Err(problems)) => {
                    let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    return Err(format!(
                        "plugin `{plugin}` of node `{}` refuses its config: {}",
                        node.id,
                        problems.join("; ")
                    ));
                }
                Err(error) => {
                    return Err(format!(
                        "plugin `{plugin}` of node `{}` failed preparing its config: {error}",
                        node.id
                    ));
                }
            };
            plugins.insert(
                node.id.clone(),
                NodePlugin {
                    plugin: loaded,
                    config: prepared,
                },
            );
        }
        Ok(CompiledJourney {
            journey_id: version.journey_id.clone(),
            version: version.version,
            definition,
            plugins,
            windows,
        })
    }
}

/// The config document as the plugin receives it: JSON text, `{}` when the node gives none.
pub fn config_text(config: &serde_json::Value) -> String {
    match config {
        serde_json::Value::Null => "{}".into(),
        other => other.to_string(),
    }
}
