//! [`AccessStore`] for the sled store.

use super::StoreError;
use super::access::{AccessStore, TokenRecord, Workspace};
use super::codec::{decode, encode};
use super::layout::TreeId;
use super::records::AuditEntry;
use super::sled_store::{SledStore, backend, lock};
use super::write_set::WriteSet;

impl AccessStore for SledStore {
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.tokens
            .iter()
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn put_token(&self, record: &TokenRecord, audit: AuditEntry) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Tokens, record.id.as_bytes(), encode(record));
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn workspace(&self) -> Result<Workspace, StoreError> {
        match self.settings.get(WORKSPACE).map_err(backend)? {
            Some(bytes) => decode(&bytes),
            None => Ok(Workspace::default()),
        }
    }

    fn put_workspace(&self, workspace: &Workspace, audit: AuditEntry) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Settings, WORKSPACE, encode(workspace));
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn lifecycle_rules(&self) -> Result<Option<serde_json::Value>, StoreError> {
        match self.settings.get(LIFECYCLE).map_err(backend)? {
            Some(bytes) => {
                let text: String = decode(&bytes)?;
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("lifecycle rules: {e}")))
            }
            None => Ok(None),
        }
    }

    fn put_lifecycle_rules(
        &self,
        rules: &serde_json::Value,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Settings, LIFECYCLE, encode(&rules.to_string()));
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn record_audit(&self, audit: AuditEntry) -> Result<(), StoreError> {
        let mut writes = WriteSet::new(self);
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }
}

/// The settings key of the workspace settings.
const WORKSPACE: &[u8] = b"workspace";
const LIFECYCLE: &[u8] = b"lifecycle";
