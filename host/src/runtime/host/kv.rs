//! `wayline:plugin/kv`: a small key-value space private to each plugin.
//!
//! The namespace is the plugin's name as the host installed it (checked against a safe set of
//! characters, and against the file or upload the plugin came from; see `registry`), never a
//! name the guest passes: a call names only keys, so one plugin cannot reach another's. Sizes
//! are bounded here, before any backend sees the request: keys and values, what one call may
//! write, and what one space may hold.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::HostState;
use crate::runtime::bindings::kv;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most keys one plugin may hold.
pub const MAX_KEYS: usize = 100_000;
/// Most bytes (keys and values) one plugin may hold.
pub const MAX_SPACE_BYTES: usize = 16 << 20;

/// Where plugin key-value spaces live. Implemented in memory here and by the store.
pub trait KvSpace: Send + Sync + 'static {
    /// The value at `key` in `namespace`.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Store `value` at `key`; refuse when the namespace would then hold more than
    /// [`MAX_KEYS`] keys or [`MAX_SPACE_BYTES`] bytes.
    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvSetError>;
    /// Remove `key`.
    fn delete(&self, namespace: &str, key: &str) -> Result<(), String>;
}

/// Why a set was refused.
#[derive(Debug)]
pub enum KvSetError {
    /// The plugin's space is full: the guest is told.
    Full,
    /// The backend failed: the call traps.
    Backend(String),
}

/// Key-value spaces in memory: for `wayline plugin call` and tests.
#[derive(Default)]
pub struct MemoryKv {
    spaces: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl KvSpace for MemoryKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let spaces = self.spaces.lock().map_err(|_| "kv lock poisoned")?;
        Ok(spaces
            .get(namespace)
            .and_then(|space| space.get(key))
            .cloned())
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvSetError> {
        let mut spaces = self
            .spaces
            .lock()
            .map_err(|_| KvSetError::Backend("kv lock poisoned".into()))?;
        let space = spaces.entry(namespace.to_owned()).or_default();
        let old = space.get(key).map_or(0, |old| key.len() + old.len());
        let bytes: usize = space.iter().map(|(k, v)| k.len() + v.len()).sum();
        let grows = key.len() + value.len() > old;
        if grows
            && ((space.len() >= MAX_KEYS && !space.contains_key(key))
                || bytes - old + key.len() + value.len() > MAX_SPACE_BYTES)
        {
            return Err(KvSetError::Full);
        }
        space.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        let mut spaces = self.spaces.lock().map_err(|_| "kv lock poisoned")?;
        if let Some(space) = spaces.get_mut(namespace) {
            space.remove(key);
        }
        Ok(())
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        if key.len() > MAX_KEY_BYTES {
            return Ok(None);
        }
        self.kv
            .get(&self.kv_namespace, &key)
            .map_err(|e| wasmtime::format_err!("kv backend: {e}"))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let written = self.kv_written + key.len() + value.len();
        if written > self.limits.kv_write_bytes {
            return Ok(Err(format!(
                "this call has written {written} bytes to its key-value space; a call may write {}",
                self.limits.kv_write_bytes
            )));
        }
        if key.len() > MAX_KEY_BYTES {
            return Ok(Err(format!(
                "key is {} bytes; the limit is {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(format!(
                "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        match self.kv.set(&self.kv_namespace, &key, &value) {
            Ok(()) => {
                self.kv_written = written;
                Ok(Ok(()))
            }
            Err(KvSetError::Full) => Ok(Err(format!(
                "key-value space is full ({MAX_KEYS} keys or {MAX_SPACE_BYTES} bytes)"
            ))),
            Err(KvSetError::Backend(e)) => Err(wasmtime::format_err!("kv backend: {e}")),
        }
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        if key.len() > MAX_KEY_BYTES {
            return Ok(());
        }
        self.kv
            .delete(&self.kv_namespace, &key)
            .map_err(|e| wasmtime::format_err!("kv backend: {e}"))
    }
}
