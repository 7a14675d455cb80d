//! Per-call host state and the host side of every WIT import. Each interface is implemented in
//! its own file; this module owns the state they share.

mod clock;
pub mod http;
pub mod kv;
mod log;

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
    pub(crate) kv: Arc<dyn KvSpace>,
    pub(crate) kv_namespace: Arc<str>,
    pub(crate) clock: SharedClock,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) dropped_logs: usize,
    pub(crate) max_log_lines: usize,
    /// Outbound HTTP for this call; `None` outside channel deliveries.
    pub(crate) http: Option<HttpGrant>,
    pub(crate) cpu: CpuMeter,
}

/// Counts guest CPU in epoch ticks, leaving out ticks spent waiting on the host's HTTP.
pub(crate) struct CpuMeter {
    pub(crate) ticks: Arc<AtomicU64>,
    pub(crate) started_at: u64,
    pub(crate) waited: u64,
    pub(crate) budget: u64,
    pub(crate) exceeded: bool,
}

impl CpuMeter {
    pub(crate) fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Ticks of guest CPU still allowed, or `None` once the budget is spent.
    pub(crate) fn remaining(&self) -> Option<u64> {
        let spent = self
            .now()
            .saturating_sub(self.started_at)
            .saturating_sub(self.waited);
        self.budget.checked_sub(spent).filter(|left| *left > 0)
    }
}

// The `types` interface has no functions; its host trait is empty.
impl crate::runtime::bindings::wit::Host for HostState {}

/// What a call needs from its caller to build its [`HostState`].
pub(crate) struct CallContext {
    pub(crate) plugin_id: Arc<str>,
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
            kv: context.kv,
            kv_namespace: context.kv_namespace,
            clock: context.clock,
            logs: Vec::new(),
            dropped_logs: 0,
            max_log_lines: limits.log_lines,
            http: context.http,
            cpu: CpuMeter {
                ticks: context.ticks,
                started_at,
                waited: 0,
                budget: limits.cpu_ms.div_ceil(context.tick_ms).max(1),
                exceeded: false,
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
                    "{} more log lines dropped (limit {})",
                    self.dropped_logs, self.max_log_lines
                ),
                at: self.clock.now(),
            });
        }
        logs
    }
}
