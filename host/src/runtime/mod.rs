//! The plugin runtime: loads untrusted Wasm components and calls them under limits.
//!
//! Owns the wasmtime engine, the per-world linkers, the compile cache and the host side of the
//! WIT imports. It knows nothing of journeys or the store's layout: callers hand it a contact,
//! an event or a message and get a typed answer back. A misbehaving plugin fails its own call.

mod bindings;
mod cache;
mod call;
pub mod egress;
mod engine;
mod entry;
mod error;
pub mod host;
mod limits;
mod load;
mod lower;
mod output;
mod run;
mod stats;
mod warm;

use std::path::PathBuf;
use std::sync::Arc;

pub use cache::{CacheCounts, sha256_hex};
pub use call::CallReport;
pub use engine::Allocator;
pub use error::{CallError, LoadError};
pub use host::{KvSpace, LogRecord, MemoryKv};
pub use limits::{Limits, MAX_MEMORY_BYTES};
pub use load::{Plugin, PluginKind, PluginSettings, WitVersion, valid_name};
pub use stats::{CallStats, CallStatsView};
#[doc(hidden)]
pub use warm::{WarmScorer, to_wit};

use crate::clock::{SharedClock, SystemClock};
use egress::TlsRoots;

/// How to build a [`Runtime`].
pub struct RuntimeConfig {
    /// Where precompiled plugins are kept across restarts; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Largest plugin binary accepted.
    pub max_binary_bytes: usize,
    pub clock: SharedClock,
    pub kv: Arc<dyn KvSpace>,
    /// The instance allocator to try first; pooling falls back to on-demand by itself where
    /// the machine will not reserve its address space.
    pub allocator: Allocator,
    /// Certificates plugins' outbound TLS trusts besides the public roots.
    pub tls_roots: TlsRoots,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_binary_bytes: 16 << 20,
            clock: Arc::new(SystemClock),
            kv: Arc::new(MemoryKv::default()),
            allocator: Allocator::Pooling,
            tls_roots: TlsRoots::default(),
        }
    }
}

/// The engine and everything shared by all plugin calls. One per process; [`Runtime::with_env`]
/// gives views of it whose calls see another clock and key-value store.
pub struct Runtime {
    shared: Arc<Shared>,
    clock: SharedClock,
    kv: Arc<dyn KvSpace>,
}

/// What every view of a runtime shares.
#[doc(hidden)]
pub struct Shared {
    engine: wasmtime::Engine,
    allocator: Allocator,
    linkers: load::Linkers,
    compiler: cache::Compiler,
    ticker: engine::EpochTicker,
    max_binary_bytes: usize,
    tls_roots: TlsRoots,
}

impl std::ops::Deref for Runtime {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("plugin runtime: {0}")]
pub struct StartError(String);

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, StartError> {
        let (engine, allocator) =
            engine::build(config.allocator).map_err(|e| StartError(format!("{e:#}")))?;
        let linkers = load::Linkers::new(&engine).map_err(|e| StartError(format!("{e:#}")))?;
        let compiler = cache::Compiler::new(engine.clone(), config.cache_dir.as_deref())
            .map_err(|e| StartError(format!("compile cache: {e}")))?;
        let ticker = engine::EpochTicker::start(&engine);
        Ok(Runtime {
            shared: Arc::new(Shared {
                engine,
                allocator,
                linkers,
                compiler,
                ticker,
                max_binary_bytes: config.max_binary_bytes,
                tls_roots: config.tls_roots,
            }),
            clock: config.clock,
            kv: config.kv,
        })
    }

    /// The same runtime (engine, loaded plugins stay valid) whose calls read `clock` and keep
    /// plugin key-value data in `kv`: a journey step's own view, or a simulation's.
    pub fn with_env(&self, clock: SharedClock, kv: Arc<dyn KvSpace>) -> Runtime {
        Runtime {
            shared: self.shared.clone(),
            clock,
            kv,
        }
    }

    /// The key-value store this runtime's calls use.
    pub fn kv(&self) -> &Arc<dyn KvSpace> {
        &self.kv
    }

    /// Which instance allocator is in use.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The largest plugin binary it loads, in bytes.
    pub fn max_binary_bytes(&self) -> usize {
        self.max_binary_bytes
    }

    /// What the compile cache has done since start.
    pub fn cache_counts(&self) -> CacheCounts {
        self.compiler.stats.snapshot()
    }
}
