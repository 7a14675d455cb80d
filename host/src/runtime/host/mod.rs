//! Per-call host state and the host side of every WIT import. Each interface is implemented in
//! its own file; this module owns the state they share.

mod clock;
pub mod http;
pub mod kv;
mod log;
mod signatures;
pub mod smtp;
mod v2;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::clock::SharedClock;
use crate::model::Millis;
use crate::runtime::limits::{CallLimiter, Limits};

pub use http::HttpGrant;
pub use kv::{KvSpace, MemoryKv};

/// One line a plugin logged during a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    pub level: &'static str,
    pub message: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub at: Millis,
}

/// Everything a store holds for one call. A fresh one per call: nothing leaks between contacts.
pub struct HostState {
    pub(crate) limiter: CallLimiter,
    pub(crate) plugin_id: Arc<str>,
    /// Where the call's outcome and time are counted.
    pub(crate) stats: Arc<crate::runtime::CallStats>,
    pub(crate) kv: Arc<dyn KvSpace>,
    pub(crate) kv_namespace: Arc<str>,
    pub(crate) clock: SharedClock,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) dropped_logs: usize,
    /// Bytes of log lines kept so far in this call.
    pub(crate) log_bytes: usize,
    pub(crate) limits: Limits,
    /// Bytes this call has asked its key-value space to store so far.
    pub(crate) kv_written: usize,
    /// Outbound HTTP for this call; `None` outside channel deliveries.
    pub(crate) http: Option<HttpGrant>,
    pub(crate) cpu: CpuMeter,
    /// Time spent waiting on HTTP and SMTP for the plugin in this call.
    pub(crate) waited: std::time::Duration,
}

/// Which of a call's time limits stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeLimit {
    Cpu,
    Wall,
}

/// Measures a call's CPU time: the CPU clock of the thread running it, read each time wasmtime
/// checks in (every epoch tick while the guest runs, see `engine`), so a call that is not
/// scheduled, or waits on the host's HTTP, spends none. Host work done on the call's behalf on
/// its thread (a key-value write, say) counts. A call of a few microseconds never reaches a
/// check, and costs nothing here.
pub(crate) struct CpuMeter {
    /// Epoch ticks, for the wall-clock bound.
    pub(crate) ticks: Arc<AtomicU64>,
    pub(crate) started_at: u64,
    /// Ticks after which the call has run too long in wall-clock time.
    pub(crate) wall_budget: u64,
    budget_ns: u64,
    spent_ns: u64,
    /// The thread the call last ran on and its CPU clock then.
    anchor: Option<(std::thread::ThreadId, u64)>,
    pub(crate) exceeded: Option<TimeLimit>,
}

impl CpuMeter {
    pub(crate) fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Add the CPU used since the last check on this thread; `false` once a limit is passed.
    pub(crate) fn check(&mut self) -> bool {
        let thread = std::thread::current().id();
        let now = thread_cpu_ns();
        if let Some((last_thread, before)) = self.anchor
            && last_thread == thread
        {
            self.spent_ns += now.saturating_sub(before);
        }
        self.anchor = Some((thread, now));
        if self.spent_ns > self.budget_ns {
            self.exceeded = Some(TimeLimit::Cpu);
        } else if self.now().saturating_sub(self.started_at) > self.wall_budget {
            self.exceeded = Some(TimeLimit::Wall);
        }
        self.exceeded.is_none()
    }

    /// The call is about to wait on the host (HTTP): count what it used, and start afresh
    /// when it resumes, on whichever thread that is.
    pub(crate) fn pause(&mut self) {
        self.check();
        self.anchor = None;
    }
}

/// The CPU time the calling thread has used, in nanoseconds.
#[allow(unsafe_code)]
fn thread_cpu_ns() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer, which points to a
    // live, writable one; CLOCK_THREAD_CPUTIME_ID is defined on every platform we build for.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    if result != 0 {
        return 0;
    }
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

// The `types` interface has no functions; its host trait is empty.
impl crate::runtime::bindings::wit::Host for HostState {}

/// What a call needs from its caller to build its [`HostState`].
pub(crate) struct CallContext {
    pub(crate) plugin_id: Arc<str>,
    pub(crate) stats: Arc<crate::runtime::CallStats>,
    pub(crate) kv: Arc<dyn KvSpace>,
    pub(crate) kv_namespace: Arc<str>,
    pub(crate) clock: SharedClock,
    pub(crate) http: Option<HttpGrant>,
    pub(crate) ticks: Arc<AtomicU64>,
    pub(crate) tick_ms: u64,
}

impl HostState {
    pub(crate) fn new(context: CallContext, limits: &Limits) -> Self {
        let started_at = context.ticks.load(Ordering::Relaxed);
        HostState {
            limiter: CallLimiter::new(*limits),
            plugin_id: context.plugin_id,
            stats: context.stats,
            kv: context.kv,
            kv_namespace: context.kv_namespace,
            clock: context.clock,
            logs: Vec::new(),
            dropped_logs: 0,
            log_bytes: 0,
            limits: *limits,
            kv_written: 0,
            http: context.http,
            waited: std::time::Duration::ZERO,
            cpu: CpuMeter {
                ticks: context.ticks,
                started_at,
                wall_budget: limits.wall_ms.div_ceil(context.tick_ms).max(1),
                budget_ns: limits.cpu_ms.saturating_mul(1_000_000),
                spent_ns: 0,
                anchor: None,
                exceeded: None,
            },
        }
    }

    /// The logs of this call, with a last line saying how many were dropped, if any.
    pub(crate) fn take_logs(&mut self) -> Vec<LogRecord> {
        let mut logs = std::mem::take(&mut self.logs);
        if self.dropped_logs > 0 {
            logs.push(LogRecord {
                level: "warn",
                message: format!(
                    "{} more log lines dropped (limits: {} lines, {} bytes)",
                    self.dropped_logs, self.limits.log_lines, self.limits.log_bytes
                ),
                at: self.clock.now(),
            });
        }
        logs
    }
}
