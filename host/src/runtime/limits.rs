//! What one plugin call may use, and the limiter that enforces it inside a store.

use serde::{Deserialize, Serialize};

/// Bounds on every call of one plugin. Defaults are safe for untrusted code; an operator may
/// tighten or loosen them per plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// CPU time one call may use: the CPU clock of the thread running it, the guest's and the
    /// host's work on its behalf (a key-value write). Time the call is not scheduled, or waits
    /// on the host's HTTP, is not CPU time.
    pub cpu_ms: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Largest table, in elements.
    pub table_elements: usize,
    /// Core instances, tables and memories one call may create.
    pub instances: usize,
    pub tables: usize,
    pub memories: usize,
    /// Largest result, in bytes of strings and list items.
    pub output_bytes: usize,
    /// Wall-clock bound on a whole call, including host HTTP.
    pub wall_ms: u64,
    /// Log lines kept per call; more are counted and dropped.
    pub log_lines: usize,
    /// Bytes of log lines kept per call; more are counted and dropped.
    pub log_bytes: usize,
    /// Bytes (keys and values) one call may write to its key-value space.
    pub kv_write_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_ms: 100,
            memory_bytes: 32 << 20,
            table_elements: 20_000,
            instances: 16,
            tables: 16,
            memories: 4,
            output_bytes: 1 << 20,
            wall_ms: 15_000,
            log_lines: 100,
            log_bytes: 64 << 10,
            kv_write_bytes: 1 << 20,
        }
    }
}

/// The ceiling the engine is built for: per-plugin limits cannot exceed it.
pub const MAX_MEMORY_BYTES: usize = 512 << 20;

/// Enforces [`Limits`] on a store and remembers which limit refused a request, so the error
/// the caller sees names the limit rather than whatever trap the guest hit next.
pub(crate) struct CallLimiter {
    limits: Limits,
    pub(crate) refused: Option<String>,
}

impl CallLimiter {
    pub(crate) fn new(limits: Limits) -> Self {
        CallLimiter {
            limits,
            refused: None,
        }
    }
}

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            let message = format!(
                "memory limit of {} bytes reached (asked for {desired})",
                self.limits.memory_bytes
            );
            self.refused = Some(message.clone());
            // Trap instead of returning -1 from memory.grow: a guest that ignores the failure
            // would otherwise limp on or abort with a less useful message.
            return Err(wasmtime::format_err!(message));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            let message = format!(
                "table limit of {} elements reached",
                self.limits.table_elements
            );
            self.refused = Some(message.clone());
            return Err(wasmtime::format_err!(message));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}
