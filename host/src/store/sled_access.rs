//! [`AccessStore`] for the sled store.

use std::sync::atomic::Ordering;

use super::StoreError;
use super::SweepRecord;
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
        sweep: Option<&SweepRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let _sweeps = sweep.map(|_| lock(&self.locks.sweeps));
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Settings, LIFECYCLE, encode(&rules.to_string()));
        if let Some(sweep) = sweep {
            writes.put(TreeId::Sweeps, sweep.id.as_bytes().to_vec(), encode(sweep));
        }
        self.audit_write(&mut writes, audit)?;
        writes.apply()?;
        // An update made before this is covered by the sweep, one made after by its own look.
        (self.stages_read_contacts).store(reads_contacts(rules), Ordering::SeqCst);
        Ok(())
    }

    fn record_audit(&self, audit: AuditEntry) -> Result<(), StoreError> {
        let mut writes = WriteSet::new(self);
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }
}

/// Whether stored lifecycle rules read what a contact update changes: a rule with a
/// `condition` (an attribute, a tag, a score, consent). Counts, quiet time and sign-up age
/// change only with events and time.
fn reads_contacts(rules: &serde_json::Value) -> bool {
    (rules["stages"].as_array()).is_some_and(|stages| {
        (stages.iter()).any(|stage| stage.get("condition").is_some_and(|c| !c.is_null()))
    })
}

/// [`reads_contacts`] for the rules stored in `settings`, as the store opens.
pub(super) fn stages_read_contacts(settings: &sled::Tree) -> Result<bool, StoreError> {
    Ok(match settings.get(LIFECYCLE).map_err(backend)? {
        Some(bytes) => {
            let text: String = decode(&bytes)?;
            serde_json::from_str(&text).is_ok_and(|rules| reads_contacts(&rules))
        }
        None => false,
    })
}

/// The settings key of the workspace settings.
const WORKSPACE: &[u8] = b"workspace";
const LIFECYCLE: &[u8] = b"lifecycle";
