//! The plugins this host has loaded, addressed as `name@version` and known by their binary's
//! sha256.
//!
//! The host gives a plugin its identity when it installs it: the name it is installed under
//! (the file's name here; the upload's with the admin API) must be the name the plugin gives
//! itself, and a `name@version` installed once keeps its binary: another binary under the same
//! `name@version` is refused, never swapped in. A plugin's key-value space is its installed
//! name's.
//!
//! Plugins come from a directory at start-up and from uploads through the admin API
//! (`crate::uploads`), which add to this registry while the server runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::runtime::{LoadError, Plugin, PluginKind, PluginSettings, Runtime, WitVersion};

/// A summary of one loaded plugin, as the API and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginSummary {
    pub id: String,
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    /// The version of the plugin contract it implements (`0.1.0`, `0.2.0`).
    pub contract: WitVersion,
    pub description: String,
    pub sha256: String,
    pub size: usize,
    pub outbound_hosts: Vec<String>,
    /// What its calls did since the server started.
    pub calls: crate::runtime::CallStatsView,
}

impl From<&Plugin> for PluginSummary {
    fn from(plugin: &Plugin) -> Self {
        PluginSummary {
            id: plugin.id().to_owned(),
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            kind: plugin.kind,
            contract: plugin.wit_version,
            description: plugin.info.description.clone(),
            sha256: plugin.sha256.clone(),
            size: plugin.size,
            outbound_hosts: plugin.info.outbound_hosts.clone(),
            calls: plugin.stats.view(),
        }
    }
}

/// Why a plugin did not install.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("loading {path}: {source}")]
    Load { path: String, source: LoadError },
    /// Installed under one name, the plugin calls itself by another.
    #[error(
        "{path} holds plugin `{declared}`; install it under its own name (`{declared}.wasm` or `{declared}@VERSION.wasm`)"
    )]
    NameMismatch { path: String, declared: String },
    /// A different binary under a `name@version` installed already.
    #[error(
        "plugin `{id}` is installed already as another binary (sha256 {installed}); a version, once installed, keeps its binary: give this one another version"
    )]
    VersionConflict { id: String, installed: String },
}

impl RegistryError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::Io { .. } => "plugin_unreadable",
            RegistryError::Load { source, .. } => source.code(),
            RegistryError::NameMismatch { .. } => "plugin_name_mismatch",
            RegistryError::VersionConflict { .. } => "plugin_version_conflict",
        }
    }
}

/// Loaded plugins by id.
#[derive(Default)]
pub struct Registry {
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// See [`Registry::pinning`].
    pins: std::sync::Mutex<()>,
}

impl Registry {
    /// Held from resolving a plugin version to storing a record that pins it (publishing or
    /// changing a journey, binding a channel), and by deleting an uploaded version from its
    /// check that nothing pins it to its removal: so no record can pin a version as it goes.
    pub fn pinning(&self) -> std::sync::MutexGuard<'_, ()> {
        self.pins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Load every `*.wasm` file in `dir` with default settings.
    pub fn load_dir(
        &self,
        runtime: &Runtime,
        dir: &Path,
    ) -> Result<Vec<PluginSummary>, RegistryError> {
        let io = |source| RegistryError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        paths.sort();
        let mut loaded = Vec::new();
        for path in paths {
            let display = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io {
                path: display.clone(),
                source,
            })?;
            let plugin = runtime
                .load(&bytes, &PluginSettings::default())
                .map_err(|source| RegistryError::Load {
                    path: display.clone(),
                    source,
                })?;
            // The file's name is the name the operator installs it under.
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if stem != plugin.info.name && stem != plugin.id() {
                return Err(RegistryError::NameMismatch {
                    path: display,
                    declared: plugin.info.name.clone(),
                });
            }
            loaded.push(self.insert(plugin)?);
        }
        Ok(loaded)
    }

    /// Install a loaded plugin. The same binary again changes nothing; another binary under a
    /// `name@version` installed already is refused.
    pub fn insert(&self, plugin: Plugin) -> Result<PluginSummary, RegistryError> {
        let mut plugins = self.plugins.write().expect("registry lock");
        if let Some(installed) = plugins.get(plugin.id()) {
            if installed.sha256 == plugin.sha256 {
                return Ok(PluginSummary::from(installed.as_ref()));
            }
            return Err(RegistryError::VersionConflict {
                id: plugin.id().to_owned(),
                installed: installed.sha256.clone(),
            });
        }
        let summary = PluginSummary::from(&plugin);
        plugins.insert(summary.id.clone(), Arc::new(plugin));
        Ok(summary)
    }

    /// Take `name@version` out: it is resolved no more, while calls already holding it finish.
    pub fn remove(&self, id: &str) -> Option<Arc<Plugin>> {
        self.plugins.write().expect("registry lock").remove(id)
    }

    /// Put back a plugin [`Registry::remove`] took out.
    pub fn restore(&self, plugin: Arc<Plugin>) {
        let id = plugin.id().to_owned();
        self.plugins
            .write()
            .expect("registry lock")
            .insert(id, plugin);
    }

    /// The plugin with this `name@version`.
    pub fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().expect("registry lock").get(id).cloned()
    }

    /// `name@version` exactly, or the newest loaded version of `name`.
    pub fn resolve(&self, name_or_id: &str) -> Option<Arc<Plugin>> {
        if name_or_id.contains('@') {
            return self.get(name_or_id);
        }
        let plugins = self.plugins.read().expect("registry lock");
        plugins
            .values()
            .filter(|p| p.info.name == name_or_id)
            .max_by(|a, b| version_order(&a.info.version).cmp(&version_order(&b.info.version)))
            .cloned()
    }

    /// Every loaded plugin, sorted by id.
    pub fn list(&self) -> Vec<PluginSummary> {
        self.plugins
            .read()
            .expect("registry lock")
            .values()
            .map(|p| PluginSummary::from(p.as_ref()))
            .collect()
    }
}

/// Compare versions number by number ("0.10.0" is newer than "0.9.2"); non-numbers sort first.
fn version_order(version: &str) -> Vec<u64> {
    version
        .split(['.', '-', '+'])
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}
