//! The process's one wasmtime [`Engine`] and the epoch ticker that bounds guest CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::MAX_MEMORY_BYTES;

/// How long one epoch tick lasts. CPU budgets are counted in these.
pub const TICK: Duration = Duration::from_millis(1);

/// How many plugin instances may be alive at once; sized for a few workers per core.
const POOLED_INSTANCES: u32 = 256;

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Allocator {
    Pooling,
    OnDemand,
}

/// Build the engine: pooling allocator if the machine lets us reserve its address space,
/// otherwise the on-demand allocator (slower to instantiate, same limits).
pub fn build(preferred: Allocator) -> Result<(Engine, Allocator), wasmtime::Error> {
    if preferred == Allocator::OnDemand {
        return Ok((
            Engine::new(&config(Allocator::OnDemand))?,
            Allocator::OnDemand,
        ));
    }
    match Engine::new(&config(Allocator::Pooling)) {
        Ok(engine) => Ok((engine, Allocator::Pooling)),
        Err(error) => {
            tracing::warn!(%error, "pooling allocator unavailable; falling back to on-demand allocation");
            Ok((
                Engine::new(&config(Allocator::OnDemand))?,
                Allocator::OnDemand,
            ))
        }
    }
}

fn config(allocator: Allocator) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(512 << 10);
    config.parallel_compilation(true);
    // `WAYLINE_PERFMAP=1`: write /tmp/perf-PID.map so `perf report` names guest functions.
    if std::env::var_os("WAYLINE_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if allocator == Allocator::Pooling {
        let mut pooling = PoolingAllocationConfig::new();
        pooling.total_component_instances(POOLED_INSTANCES);
        pooling.total_core_instances(POOLED_INSTANCES * 4);
        pooling.total_memories(POOLED_INSTANCES * 2);
        pooling.total_tables(POOLED_INSTANCES * 4);
        pooling.total_stacks(POOLED_INSTANCES);
        pooling.max_memory_size(MAX_MEMORY_BYTES);
        pooling.max_core_instances_per_component(16);
        pooling.max_memories_per_component(4);
        pooling.max_tables_per_component(16);
        // Reset only the pages a call dirtied (Linux 6.7+ pagemap scan), keeping a few resident
        // so the next instantiation does not fault them back in.
        pooling.pagemap_scan(wasmtime::Enabled::Auto);
        pooling.linear_memory_keep_resident(256 << 10);
        pooling.table_keep_resident(16 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}

/// Advances the engine's epoch every [`TICK`] on its own thread, and counts ticks so calls can
/// measure their CPU. Stops when dropped.
pub struct EpochTicker {
    pub(crate) ticks: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> Self {
        let ticks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, ticks, stop) = (engine.clone(), ticks.clone(), stop.clone());
            std::thread::Builder::new()
                .name("wayline-epoch".into())
                .spawn(move || {
                    // A sleeping thread is wasmtime's intended epoch source: the guest checks
                    // the epoch at loop heads and calls, so ticking costs the guest nothing.
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        ticks.fetch_add(1, Ordering::Relaxed);
                        engine.increment_epoch();
                    }
                })
                .expect("spawning the epoch thread")
        };
        EpochTicker {
            ticks,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
