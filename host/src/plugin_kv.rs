//! Plugins' private key-value spaces, kept in the store so they survive restarts.
//!
//! The one place that knows both the runtime's [`KvSpace`] and the [`Store`]: the runtime and
//! the store stay independent of each other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::runtime::KvSpace;
use crate::runtime::host::kv::{KvSetError, MAX_KEYS};
use crate::store::{KvUsage, KvWrite, Store};

/// What one plugin's space may hold.
const QUOTA: KvUsage = KvUsage {
    keys: MAX_KEYS as u64,
    bytes: crate::runtime::host::kv::MAX_SPACE_BYTES as u64,
};

/// A [`KvSpace`] backed by a [`Store`].
pub struct StoredKv(pub Arc<dyn Store>);

impl KvSpace for StoredKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0
            .plugin_kv_get(namespace, key)
            .map_err(|e| e.to_string())
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvSetError> {
        match self.0.plugin_kv_set(namespace, key, value, QUOTA) {
            Ok(true) => Ok(()),
            Ok(false) => Err(KvSetError::Full),
            Err(error) => Err(KvSetError::Backend(error.to_string())),
        }
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.0
            .plugin_kv_delete(namespace, key)
            .map_err(|e| e.to_string())
    }
}

/// A step's view of the plugins' key-value spaces: reads see the store and the step's own
/// writes; writes are held until the step commits, and then written in the same write set as
/// everything else the step did. A step that is run again after a crash starts clean.
pub struct StepKv {
    store: Arc<dyn Store>,
    writes: Mutex<PendingWrites>,
}

/// `(namespace, key)` → the value to set, or `None` to delete.
type PendingWrites = BTreeMap<(String, String), Option<Vec<u8>>>;

impl StepKv {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StepKv {
            store,
            writes: Mutex::default(),
        }
    }

    /// The writes to commit with the step.
    pub fn take(&self) -> Vec<KvWrite> {
        std::mem::take(&mut *self.writes.lock().expect("step kv lock"))
            .into_iter()
            .map(|((namespace, key), value)| KvWrite {
                namespace,
                key,
                value,
            })
            .collect()
    }
}

impl KvSpace for StepKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let writes = self.writes.lock().map_err(|_| "step kv lock poisoned")?;
        match writes.get(&(namespace.to_owned(), key.to_owned())) {
            Some(written) => Ok(written.clone()),
            None => self
                .store
                .plugin_kv_get(namespace, key)
                .map_err(|e| e.to_string()),
        }
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvSetError> {
        self.writes
            .lock()
            .map_err(|_| KvSetError::Backend("step kv lock poisoned".into()))?
            .insert((namespace.to_owned(), key.to_owned()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.writes
            .lock()
            .map_err(|_| "step kv lock poisoned")?
            .insert((namespace.to_owned(), key.to_owned()), None);
        Ok(())
    }
}
