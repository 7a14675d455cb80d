//! A published journey version made ready to run: plugins looked up, configs serialized, time
//! windows parsed. Built once per version and shared by every step that runs it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::definition::{Definition, NodeKind, PluginRef, WaitSpec};
use super::validate::Problem;
use super::windows::Window;
use crate::model::PreparedConfig;
use crate::registry::Registry;
use crate::runtime::{Plugin, Runtime};
use crate::store::{JourneyVersion, PluginPin};

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
    /// The template versions pinned at publish, by template name.
    pub templates: BTreeMap<String, u32>,
}

impl CompiledJourney {
    /// Make a published version runnable: each node's plugin looked up and its config
    /// prepared by the plugin's own `validate-config` (prepared bytes belong to the plugin
    /// binary that made them, so they are made again in every process). Fails when a pinned
    /// plugin is not loaded, is another binary than the one pinned, or now refuses its config.
    /// `moved` are the plugin versions the journey was moved to, which replace its pins.
    pub fn build(
        version: &JourneyVersion,
        moved: &Moves,
        registry: &Registry,
        runtime: &Runtime,
    ) -> Result<Self, String> {
        let mut definition: Definition = serde_json::from_value(version.definition.clone())
            .map_err(|e| format!("stored definition does not parse: {e}"))?;
        let plugins =
            prepare_plugins(&mut definition, moved, registry, runtime).map_err(|problems| {
                problems
                    .iter()
                    .map(|p| format!("node `{}`: {}", p.node.as_deref().unwrap_or("?"), p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
        Self::new(
            &version.journey_id,
            version.version,
            definition,
            plugins,
            version.templates.clone(),
        )
    }

    /// A version from its definition and the plugins prepared for it.
    pub fn new(
        journey_id: &str,
        version: u32,
        definition: Definition,
        plugins: HashMap<String, NodePlugin>,
        templates: BTreeMap<String, u32>,
    ) -> Result<Self, String> {
        let mut windows = HashMap::new();
        for node in &definition.nodes {
            if let NodeKind::Wait(WaitSpec {
                until: Some(window),
                ..
            }) = &node.kind
            {
                windows.insert(node.id.clone(), Window::parse(window)?);
            }
        }
        Ok(CompiledJourney {
            journey_id: journey_id.to_owned(),
            version,
            definition,
            plugins,
            windows,
            templates,
        })
    }
}

/// The plugin versions a journey was moved to, by plugin name.
pub type Moves = BTreeMap<String, PluginPin>;

/// Resolve each node's plugin and have it prepare its config. A name without a version
/// resolves to the newest loaded; names are then pinned to `name@version` and the binary's
/// sha256, and a pinned node accepts only that very binary. A plugin the journey was moved to
/// (`moved`, by name) replaces the node's own pin. Every problem is named by its node.
pub fn prepare_plugins(
    definition: &mut Definition,
    moved: &Moves,
    registry: &Registry,
    runtime: &Runtime,
) -> Result<HashMap<String, NodePlugin>, Vec<Problem>> {
    let mut prepared = HashMap::new();
    let mut problems = Vec::new();
    for node in &mut definition.nodes {
        let id = node.id.clone();
        let Some(PluginRef {
            plugin,
            sha256,
            config,
            kind,
        }) = node.plugin_mut()
        else {
            continue;
        };
        let name = plugin.split('@').next().unwrap_or_default();
        if let Some(pin) = moved.get(name) {
            // The journey runs the version it was moved to, whatever this version pinned.
            *plugin = pin.id.clone();
            *sha256 = Some(pin.sha256.clone());
        }
        let Some(loaded) = registry.resolve(plugin) else {
            problems.push(Problem::at(&id, format!("plugin `{plugin}` is not loaded")));
            continue;
        };
        if loaded.kind != kind {
            problems.push(Problem::at(
                &id,
                format!(
                    "plugin `{}` is a {} plugin; this node needs a {} plugin",
                    loaded.id(),
                    loaded.kind.as_str(),
                    kind.as_str()
                ),
            ));
            continue;
        }
        if let Some(pinned) = sha256.as_deref()
            && pinned != loaded.sha256
        {
            problems.push(Problem::at(
                &id,
                format!(
                    "plugin `{}` is now another binary (sha256 {}) than the one this version was published with ({pinned})",
                    loaded.id(),
                    loaded.sha256
                ),
            ));
            continue;
        }
        *plugin = loaded.id().to_owned();
        *sha256 = Some(loaded.sha256.clone());
        match runtime
            .validate_config(&loaded, &config_text(&config))
            .result
        {
            Ok(Ok(config)) => {
                prepared.insert(
                    id,
                    NodePlugin {
                        plugin: loaded,
                        config,
                    },
                );
            }
            Ok(Err(refused)) => problems.extend(refused.into_iter().map(|problem| {
                Problem::at(
                    &id,
                    format!("plugin `{}` refused its config: {problem}", loaded.id()),
                )
            })),
            Err(error) => problems.push(Problem::at(
                &id,
                format!(
                    "plugin `{}` failed checking its config: {error}",
                    loaded.id()
                ),
            )),
        }
    }
    if problems.is_empty() {
        Ok(prepared)
    } else {
        Err(problems)
    }
}

/// The config document as the plugin receives it: JSON text, `{}` when the node gives none.
pub fn config_text(config: &serde_json::Value) -> String {
    match config {
        serde_json::Value::Null => "{}".into(),
        other => other.to_string(),
    }
}
