//! How one plugin call runs: a fresh store with the call's limits (memory, CPU checked at every
//! epoch tick, wall clock), the call itself, and whatever happened turned into a
//! [`CallReport`]: a typed result, or the limit or fault that stopped it, with the plugin's logs
//! and the time it took.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::Runtime;
use super::call::CallReport;
use super::error::CallError;
use super::host::{CallContext, HostState, HttpGrant, LogRecord};
use super::limits::Limits;
use super::load::Plugin;
use super::output::OutputSize;

/// The plugin's own answer and the WIT result it was wrapped in.
pub(super) type Outcome<T, E> = wasmtime::Result<Result<T, E>>;

/// An async call hands its thread back to tokio every this many epoch ticks, so a guest that
/// computes for its whole CPU budget does not hold a worker that other requests wait on.
/// The CPU meter reads the thread's clock, so after a yield it starts again at the next tick:
/// up to one tick in this many goes uncounted (the budget is that much looser), and the
/// wall-clock bound holds regardless.
const YIELD_EVERY_TICKS: u32 = 5;

impl Runtime {
    /// A store for one synchronous call of `plugin`, within its own limits.
    pub(crate) fn store(&self, plugin: &Plugin, http: Option<HttpGrant>) -> Store<HostState> {
        self.store_within(plugin, &plugin.limits, http, false)
    }

    /// A store for one call of `plugin` within `limits`; `yields` for async calls, which
    /// give their thread back to the executor now and then while the guest computes.
    fn store_within(
        &self,
        plugin: &Plugin,
        limits: &Limits,
        http: Option<HttpGrant>,
        yields: bool,
    ) -> Store<HostState> {
        let context = CallContext {
            plugin_id: plugin.id.clone(),
            stats: plugin.stats.clone(),
            kv: self.kv.clone(),
            kv_namespace: Arc::from(plugin.info.name.as_str()),
            clock: self.clock.clone(),
            http,
            ticks: self.ticker.ticks.clone(),
            tick_ms: super::engine::TICK.as_millis() as u64,
        };
        let state = HostState::new(context, limits);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Check the call's time at the next tick and every tick after, while the guest runs.
        store.set_epoch_deadline(1);
        let mut ticks_since_yield = 0;
        store.epoch_deadline_callback(move |mut context| {
            let cpu = &mut context.data_mut().cpu;
            if !cpu.check() {
                return Ok(UpdateDeadline::Interrupt);
            }
            ticks_since_yield += 1;
            if yields && ticks_since_yield >= YIELD_EVERY_TICKS {
                ticks_since_yield = 0;
                // The call may resume on another thread: count what it used on this one.
                cpu.pause();
                return Ok(UpdateDeadline::Yield(1));
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store
    }

    /// Run `call` in a fresh store and classify what happened.
    pub(super) fn run<T: OutputSize, E: Into<CallError>>(
        &self,
        plugin: &Plugin,
        call: impl FnOnce(&mut Store<HostState>) -> Outcome<T, E>,
    ) -> CallReport<T> {
        let started = Instant::now();
        let mut store = self.store(plugin, None);
        let outcome = call(&mut store);
        finish(store, Ok(outcome), started)
    }

    /// Like [`Runtime::run`] for async worlds, within the plugin's limits.
    pub(super) async fn run_async<T: OutputSize, E: Into<CallError>>(
        &self,
        plugin: &Plugin,
        http: Option<HttpGrant>,
        call: impl AsyncFnOnce(&mut Store<HostState>) -> Outcome<T, E>,
    ) -> CallReport<T> {
        self.run_async_within(plugin, plugin.limits, http, call)
            .await
    }

    /// Like [`Runtime::run`] for async worlds, within `limits`. With outbound HTTP granted,
    /// the call is also bounded by the wall-clock limit (a tokio timer, so only inside a tokio
    /// runtime); without it the guest cannot wait on anything and its CPU deadline bounds it.
    pub(super) async fn run_async_within<T: OutputSize, E: Into<CallError>>(
        &self,
        plugin: &Plugin,
        limits: Limits,
        http: Option<HttpGrant>,
        call: impl AsyncFnOnce(&mut Store<HostState>) -> Outcome<T, E>,
    ) -> CallReport<T> {
        let started = Instant::now();
        let bounded_by_wall_clock = http.is_some();
        let mut store = self.store_within(plugin, &limits, http, true);
        let outcome = if bounded_by_wall_clock {
            let wall = Duration::from_millis(limits.wall_ms);
            tokio::time::timeout(wall, call(&mut store))
                .await
                .map_err(|_| CallError::Timeout {
                    wall_ms: limits.wall_ms,
                })
        } else {
            Ok(call(&mut store).await)
        };
        finish(store, outcome, started)
    }
}

/// Turn the outcome and the store's record of the call into a report.
fn finish<T: OutputSize, E: Into<CallError>>(
    mut store: Store<HostState>,
    outcome: Result<Outcome<T, E>, CallError>,
    started: Instant,
) -> CallReport<T> {
    let elapsed = started.elapsed();
    let limits = store.data().limits;
    let waited = store.data().waited;
    let logs = store.data_mut().take_logs();
    let result = match outcome {
        Err(host_limit) => Err(host_limit),
        Ok(Ok(Ok(value))) => {
            let size = value.output_size();
            if size > limits.output_bytes {
                Err(CallError::OutputLimit {
                    size,
                    limit: limits.output_bytes,
                })
            } else {
                Ok(value)
            }
        }
        Ok(Ok(Err(error))) => Err(error.into()),
        Ok(Err(error)) => Err(classify_failure(&error, store.data(), &logs)),
    }
    .map_err(CallError::bounded);
    if let Err(error) = &result {
        tracing::debug!(plugin = %store.data().plugin_id, code = error.code(), %error, "plugin call failed");
    }
    store.data().stats.record(elapsed, result.as_ref().err());
    CallReport {
        result,
        logs,
        elapsed,
        waited,
    }
}

/// Name the limit or fault behind a trap, preferring what the host observed over the trap code.
fn classify_failure(error: &wasmtime::Error, state: &HostState, logs: &[LogRecord]) -> CallError {
    let limits = &state.limits;
    if let Some(refused) = &state.limiter.refused {
        return CallError::MemoryLimit(refused.clone());
    }
    let trap = error.downcast_ref::<Trap>().copied();
    match state.cpu.exceeded {
        Some(super::host::TimeLimit::Wall) => {
            return CallError::Timeout {
                wall_ms: limits.wall_ms,
            };
        }
        Some(super::host::TimeLimit::Cpu) => {
            return CallError::CpuLimit {
                cpu_ms: limits.cpu_ms,
            };
        }
        None if trap == Some(Trap::Interrupt) => {
            return CallError::CpuLimit {
                cpu_ms: limits.cpu_ms,
            };
        }
        None => {}
    }
    match trap {
        Some(Trap::StackOverflow) => CallError::StackOverflow,
        Some(Trap::MemoryOutOfBounds) if ran_past_shadow_stack(error) => CallError::StackOverflow,
        Some(Trap::UnreachableCodeReached) => match logs.last() {
            // The SDK's panic hook logs the message at error level just before aborting.
            Some(last) if last.level == "error" && last.message.starts_with("panic: ") => {
                CallError::Panicked(last.message["panic: ".len()..].to_owned())
            }
            _ => CallError::Trapped(format!("{error:#}")),
        },
        _ => CallError::Trapped(format!("{error:#}")),
    }
}

/// Whether a memory fault is a guest's shadow stack running out. Rust and C guests keep that
/// stack at the bottom of linear memory (below their data), so overflowing it wraps the stack
/// pointer below zero and the fault lands in the top megabyte of the 32-bit address space,
/// which no plugin's memory reaches. wasmtime reports the address only in the error's text.
fn ran_past_shadow_stack(error: &wasmtime::Error) -> bool {
    let text = format!("{error:#}");
    let Some((_, rest)) = text.split_once("memory fault at wasm address 0x") else {
        return false;
    };
    let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&hex, 16).is_ok_and(|address| (0xFFF0_0000..1 << 32).contains(&address))
}

/// Drive a future that never waits on I/O (HTTP is refused outside deliveries) to completion on
/// the current thread: describe and validate-config of async-world plugins.
pub(super) fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
