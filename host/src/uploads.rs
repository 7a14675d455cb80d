//! Plugins an admin uploads into a running server. An upload is checked by loading it (its
//! world and exports, its size, a `describe` bounded by its limits), must be installed under
//! the name the plugin gives itself, and keeps its binary: another binary under a
//! `name@version` is refused. A good one is stored with who uploaded it and when, then
//! installed in the registry, with no restart; a refused one leaves nothing stored. At
//! start-up every stored upload is installed again.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::auth::Principal;
use crate::model::Millis;
use crate::registry::{PluginSummary, Registry, RegistryError};
use crate::runtime::{Limits, LoadError, PluginSettings, Runtime, sha256_hex};
use crate::store::{AuditEntry, JourneyStatus, PluginUpload, Store, StoreError};

/// The highest limits an upload may ask for; the defaults are far below.
const CEILING: Limits = Limits {
    cpu_ms: 10_000,
    memory_bytes: crate::runtime::MAX_MEMORY_BYTES,
    table_elements: 1_000_000,
    instances: 64,
    tables: 64,
    memories: 16,
    output_bytes: 16 << 20,
    wall_ms: 60_000,
    log_lines: 10_000,
    log_bytes: 1 << 20,
    kv_write_bytes: 16 << 20,
};

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// It did not load, or its `name@version` holds another binary already.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "the plugin calls itself `{declared}`; upload it as `{declared}` (a plugin is installed only under its own name)"
    )]
    NameMismatch { given: String, declared: String },
    #[error("no uploaded plugin `{0}`")]
    NotFound(String),
    #[error("`{0}` was installed from the plugin directory, not uploaded; remove its file there")]
    NotUploaded(String),
    #[error("`{id}` is in use by {}; move or archive those first", uses.join(", "))]
    InUse { id: String, uses: Vec<String> },
    #[error("limit `{field}`: {message}")]
    Limits {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UploadError {
    pub fn code(&self) -> &'static str {
        match self {
            UploadError::Registry(error) => error.code(),
            UploadError::NameMismatch { .. } => "plugin_name_mismatch",
            UploadError::Limits { .. } => "plugin_limits_invalid",
            UploadError::NotFound(_) => "plugin_not_found",
            UploadError::NotUploaded(_) => "plugin_not_uploaded",
            UploadError::InUse { .. } => "plugin_in_use",
            UploadError::Store(error) => error.code(),
        }
    }
}

/// What an upload did.
pub struct Installed {
    pub plugin: PluginSummary,
    /// Its record; `None` for a plugin installed from the plugin directory, uploaded again
    /// with the same bytes.
    pub upload: Option<PluginUpload>,
    /// Whether this upload installed it (not the same bytes again).
    pub created: bool,
}

/// Uploaded plugins: checked, stored, installed.
pub struct Uploads {
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    /// One upload at a time between the conflict check and the registry, so two uploads of one
    /// `name@version` cannot both be stored.
    changes: Mutex<()>,
}

impl Uploads {
    pub fn new(runtime: Arc<Runtime>, registry: Arc<Registry>, store: Arc<dyn Store>) -> Self {
        Uploads {
            runtime,
            registry,
            store,
            changes: Mutex::new(()),
        }
    }

    /// Install every stored upload again. One that no longer installs (its binary damaged, or
    /// its `name@version` taken by the plugin directory with other bytes) is left stored and
    /// logged as an error, and the rest carry on. What installed.
    pub fn restore(&self) -> Result<Vec<PluginSummary>, StoreError> {
        let mut installed = Vec::new();
        for upload in self.store.plugin_uploads()? {
            if upload.deleted_at.is_some() {
                continue;
            }
            match self.reinstall(&upload) {
                Ok(summary) => installed.push(summary),
                Err(error) => {
                    tracing::error!(plugin = %upload.id, %error, "an uploaded plugin did not install at start-up");
                }
            }
        }
        Ok(installed)
    }

    fn reinstall(&self, upload: &PluginUpload) -> Result<PluginSummary, String> {
        let binary = self
            .store
            .plugin_binary(&upload.id)
            .map_err(|e| e.to_string())?
            .ok_or("its binary is not in the store")?;
        if sha256_hex(&binary) != upload.sha256 {
            return Err(format!(
                "its stored binary does not have the sha256 it was uploaded with ({})",
                upload.sha256
            ));
        }
        let plugin = self
            .runtime
            .load(&binary, &settings(upload.limits))
            .map_err(|e| e.to_string())?;
        if plugin.id() != upload.id {
            return Err(format!("the stored binary is `{}`", plugin.id()));
        }
        self.registry.insert(plugin).map_err(|e| e.to_string())
    }

    /// Check, store and install `binary` as the plugin `name`, uploaded by `by`.
    pub fn install(
        &self,
        name: &str,
        binary: &[u8],
        limits: Limits,
        by: &Principal,
        now: Millis,
    ) -> Result<Installed, UploadError> {
        check_limits(&limits)?;
        let load = |source: LoadError| RegistryError::Load {
            path: format!("the upload of `{}`", name.escape_debug()),
            source,
        };
        let plugin = self.runtime.load(binary, &settings(limits)).map_err(load)?;
        if plugin.info.name != name {
            return Err(UploadError::NameMismatch {
                given: name.to_owned(),
                declared: plugin.info.name.clone(),
            });
        }
        let id = plugin.id().to_owned();
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let stored = self.store.plugin_upload(&id)?;
        let installed = self.registry.get(&id).map(|p| p.sha256.clone());
        // A deleted version keeps its sha256: only its own bytes may come back.
        let known = installed.or_else(|| stored.as_ref().map(|u| u.sha256.clone()));
        if let Some(sha256) = &known
            && *sha256 != plugin.sha256
        {
            return Err(RegistryError::VersionConflict {
                id,
                installed: sha256.clone(),
            }
            .into());
        }
        let deleted = stored.as_ref().is_some_and(|u| u.deleted_at.is_some());
        if known.is_some() && !deleted {
            let summary = self.registry.insert(plugin)?;
            return Ok(Installed {
                plugin: summary,
                upload: stored,
                created: false,
            });
        }
        let upload = PluginUpload {
            id: id.clone(),
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
            kind: plugin.kind.as_str().to_owned(),
            sha256: plugin.sha256.clone(),
            size: binary.len(),
            limits: plugin.limits,
            uploaded_by: by.actor().to_owned(),
            uploaded_at: now,
            deleted_at: None,
        };
        let detail = json!({
            "kind": upload.kind,
            "sha256": upload.sha256,
            "size": upload.size,
            "limits": upload.limits,
        });
        let audit = AuditEntry::new(now, by.actor(), "plugin.upload", &id, detail);
        self.store.put_plugin_upload(&upload, binary, audit)?;
        self.store.flush()?;
        let summary = self.registry.insert(plugin)?;
        Ok(Installed {
            plugin: summary,
            upload: Some(upload),
            created: true,
        })
    }

    /// Remove the uploaded version `id`, unless a journey that is not archived (any of its
    /// published versions, where contacts may still be) or a channel binding uses it: those
    /// are named in the error. An unused version is taken out of the registry, so nothing new
    /// can be published on it, and its uses are checked again: one that appeared meanwhile
    /// puts it back. The registry's pinning lock is held throughout, so no publish or channel
    /// binding can pin it in between.
    pub fn delete(
        &self,
        id: &str,
        by: &Principal,
        now: Millis,
    ) -> Result<PluginUpload, UploadError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        // No journey or channel can pin it between the check below and its removal.
        let _pins = self.registry.pinning();
        let upload = self
            .store
            .plugin_upload(id)?
            .filter(|u| u.deleted_at.is_none());
        let Some(upload) = upload else {
            return Err(match self.registry.get(id) {
                Some(_) => UploadError::NotUploaded(id.to_owned()),
                None => UploadError::NotFound(id.to_owned()),
            });
        };
        let in_use = |uses: Vec<String>| UploadError::InUse {
            id: id.to_owned(),
            uses,
        };
        let uses = self.uses(id)?;
        if !uses.is_empty() {
            return Err(in_use(uses));
        }
        let removed = self.registry.remove(id);
        let uses = match self.uses(id) {
            Ok(uses) => uses,
            Err(error) => {
                self.put_back(removed);
                return Err(error.into());
            }
        };
        if !uses.is_empty() {
            self.put_back(removed);
            return Err(in_use(uses));
        }
        let detail = json!({"before": {"sha256": upload.sha256, "kind": upload.kind, "uploaded_by": upload.uploaded_by}});
        let audit = AuditEntry::new(now, by.actor(), "plugin.delete", id, detail);
        let tombstone = PluginUpload {
            deleted_at: Some(now),
            ..upload.clone()
        };
        if let Err(error) = self
            .store
            .delete_plugin_upload(&tombstone, audit)
            .and_then(|()| self.store.flush())
        {
            self.put_back(removed);
            return Err(error.into());
        }
        Ok(tombstone)
    }

    fn put_back(&self, removed: Option<Arc<crate::runtime::Plugin>>) {
        if let Some(plugin) = removed {
            self.registry.restore(plugin);
        }
    }

    /// What uses the plugin `id`: `journey <id> v<N>`, `channel <name>` and
    /// `scoring model <name>`. A journey moved to
    /// another version of the plugin runs that one, whatever its versions pin.
    fn uses(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let name = id.split('@').next().unwrap_or_default();
        let mut uses = Vec::new();
        for journey in self.store.journeys()? {
            if journey.status == JourneyStatus::Archived {
                continue;
            }
            let runs = |pinned: &str| match journey.plugin_versions.get(name) {
                Some(moved) => moved.id == id && pinned.split('@').next() == Some(name),
                None => pinned == id,
            };
            for version in 1..=journey.published_version {
                let Some(published) = self.store.journey_version(&journey.id, version)? else {
                    continue;
                };
                let pinned = published.definition["nodes"]
                    .as_array()
                    .is_some_and(|nodes| {
                        nodes.iter().any(|n| n["plugin"].as_str().is_some_and(runs))
                    });
                if pinned {
                    uses.push(format!("journey {} v{version}", journey.id));
                }
            }
        }
        for channel in self.store.channels()? {
            if channel.plugin == id {
                uses.push(format!("channel {}", channel.name));
            }
        }
        for model in self.store.scoring_models()? {
            if model.plugin == id {
                uses.push(format!("scoring model {}", model.name));
            }
        }
        Ok(uses)
    }

    /// Every uploaded plugin version's record.
    pub fn list(&self) -> Result<Vec<PluginUpload>, StoreError> {
        self.store.plugin_uploads()
    }
}

fn settings(limits: Limits) -> PluginSettings {
    PluginSettings {
        limits,
        ..PluginSettings::default()
    }
}

/// Refuse limits of zero, which would fail every call, and limits above [`CEILING`].
fn check_limits(limits: &Limits) -> Result<(), UploadError> {
    let fields: [(&'static str, u64, u64); 11] = [
        ("cpu_ms", limits.cpu_ms, CEILING.cpu_ms),
        (
            "memory_bytes",
            limits.memory_bytes as u64,
            CEILING.memory_bytes as u64,
        ),
        (
            "table_elements",
            limits.table_elements as u64,
            CEILING.table_elements as u64,
        ),
        (
            "instances",
            limits.instances as u64,
            CEILING.instances as u64,
        ),
        ("tables", limits.tables as u64, CEILING.tables as u64),
        ("memories", limits.memories as u64, CEILING.memories as u64),
        (
            "output_bytes",
            limits.output_bytes as u64,
            CEILING.output_bytes as u64,
        ),
        ("wall_ms", limits.wall_ms, CEILING.wall_ms),
        (
            "log_lines",
            limits.log_lines as u64,
            CEILING.log_lines as u64,
        ),
        (
            "log_bytes",
            limits.log_bytes as u64,
            CEILING.log_bytes as u64,
        ),
        (
            "kv_write_bytes",
            limits.kv_write_bytes as u64,
            CEILING.kv_write_bytes as u64,
        ),
    ];
    for (field, value, ceiling) in fields {
        if value == 0 || value > ceiling {
            return Err(UploadError::Limits {
                field,
                message: format!("{value} is not between 1 and {ceiling}"),
            });
        }
    }
    Ok(())
}
