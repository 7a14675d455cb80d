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
pub const QUOTA: KvUsage = KvUsage {
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
/// everything else the step did. A step that is run again after a crash starts clean. A write
/// that would take a space past its quota is refused here, counting the writes held; batches
/// running at once on other workers may each add their calls' writes (bounded per call) before
/// the quota is seen again.
pub struct StepKv {
    store: Arc<dyn Store>,
    state: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// `(namespace, key)` → the value to set, or `None` to delete.
    writes: BTreeMap<(String, String), Option<Vec<u8>>>,
    /// What each space will hold once the writes are made.
    usage: BTreeMap<String, KvUsage>,
}

impl StepKv {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StepKv {
            store,
            state: Mutex::default(),
        }
    }

    /// The writes to commit with the step.
    pub fn take(&self) -> Vec<KvWrite> {
        std::mem::take(&mut self.state.lock().expect("step kv lock").writes)
            .into_iter()
            .map(|((namespace, key), value)| KvWrite {
                namespace,
                key,
                value,
            })
            .collect()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Pending>, String> {
        self.state
            .lock()
            .map_err(|_| "step kv lock poisoned".into())
    }

    /// Hold a write, keeping the space's usage; `Ok(false)` past the quota.
    fn hold(&self, namespace: &str, key: &str, value: Option<&[u8]>) -> Result<bool, String> {
        let mut state = self.lock()?;
        let entry = (namespace.to_owned(), key.to_owned());
        let old = match state.writes.get(&entry) {
            Some(held) => held.as_ref().map(Vec::len),
            None => self
                .store
                .plugin_kv_get(namespace, key)
                .map_err(|e| e.to_string())?
                .map(|old| old.len()),
        };
        let usage = match state.usage.get(namespace) {
            Some(usage) => *usage,
            None => self
                .store
                .plugin_kv_usage(namespace)
                .map_err(|e| e.to_string())?,
        };
        let size = |len: Option<usize>| len.map_or(0, |len| (key.len() + len) as u64);
        let after = KvUsage {
            keys: usage.keys + u64::from(value.is_some()) - u64::from(old.is_some()),
            bytes: (usage.bytes + size(value.map(<[u8]>::len))).saturating_sub(size(old)),
        };
        let grows = after.keys > usage.keys || after.bytes > usage.bytes;
        if grows && (after.keys > QUOTA.keys || after.bytes > QUOTA.bytes) {
            return Ok(false);
        }
        state.usage.insert(namespace.to_owned(), after);
        state.writes.insert(entry, value.map(<[u8]>::to_vec));
        Ok(true)
    }
}

impl KvSpace for StepKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let state = self.lock()?;
        match state.writes.get(&(namespace.to_owned(), key.to_owned())) {
            Some(written) => Ok(written.clone()),
            None => self
                .store
                .plugin_kv_get(namespace, key)
                .map_err(|e| e.to_string()),
        }
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvSetError> {
        match self.hold(namespace, key, Some(value)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(KvSetError::Full),
            Err(error) => Err(KvSetError::Backend(error)),
        }
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.hold(namespace, key, None).map(drop)
    }
}
