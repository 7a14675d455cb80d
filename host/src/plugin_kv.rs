//! Plugins' private key-value spaces, kept in the store so they survive restarts.
//!
//! The one place that knows both the runtime's [`KvSpace`] and the [`Store`]: the runtime and
//! the store stay independent of each other.

use std::sync::Arc;

use crate::runtime::KvSpace;
use crate::runtime::host::kv::{KvSetError, MAX_KEYS};
use crate::store::Store;

/// A [`KvSpace`] backed by a [`Store`].
pub struct StoredKv(pub Arc<dyn Store>);

impl KvSpace for StoredKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0
            .plugin_kv_get(namespace, key)
            .map_err(|e| e.to_string())
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvSetError> {
        match self.0.plugin_kv_set(namespace, key, value, MAX_KEYS as u64) {
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
