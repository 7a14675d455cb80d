//! Plugins an admin uploaded: each version's record and its binary, kept in the store so a
//! restart (or a restored backup) installs them again.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::records::AuditEntry;
use crate::model::Millis;
use crate::runtime::Limits;

/// One uploaded plugin version as stored; its binary is kept beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginUpload {
    /// `name@version`.
    pub id: String,
    pub name: String,
    pub version: String,
    /// `trigger`, `condition`, `action`, `scorer` or `channel`.
    pub kind: String,
    /// SHA-256 of the binary as uploaded, hex.
    pub sha256: String,
    pub size: usize,
    /// The limits the admin asked for, within the engine's ceilings.
    pub limits: Limits,
    /// The token that uploaded it.
    pub uploaded_by: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub uploaded_at: Millis,
    /// When an admin deleted it. Its record stays (without the binary), so the version can
    /// never come back as other bytes.
    #[serde(default, with = "crate::model::timestamp_json::option")]
    pub deleted_at: Option<Millis>,
}

/// The uploaded plugins' durable part of the store.
pub trait PluginStore {
    /// Every uploaded plugin version, by id, deleted ones included.
    fn plugin_uploads(&self) -> Result<Vec<PluginUpload>, StoreError>;
    /// The upload `id`'s record, deleted or not.
    fn plugin_upload(&self, id: &str) -> Result<Option<PluginUpload>, StoreError>;
    /// The binary of the upload `id`, whole, or `None` if none is stored.
    fn plugin_binary(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store an upload, its binary and the audit entry together: after a crash all are there
    /// or none is.
    fn put_plugin_upload(
        &self,
        upload: &PluginUpload,
        binary: &[u8],
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
    /// Keep `tombstone` (the upload's record, marked deleted) in place of the upload and its
    /// binary, and record it, together.
    fn delete_plugin_upload(
        &self,
        tombstone: &PluginUpload,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
}
