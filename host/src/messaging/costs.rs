//! Where the delivery worker's time goes, summed since it started: deciding and rendering a
//! batch, the channel plugin's own work, the plugin's waits on the network, and the store's
//! writes and durability flushes. Read by the delivery benchmark to split the cost of a message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// The running sums.
#[derive(Debug, Default)]
pub struct DeliveryCosts {
    messages: AtomicU64,
    prepare_ns: AtomicU64,
    plugin_ns: AtomicU64,
    network_ns: AtomicU64,
    record_ns: AtomicU64,
    flush_ns: AtomicU64,
}

/// The sums at one moment, in microseconds. Times of messages in flight side by side overlap:
/// these are time spent per phase, not the CPU it used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CostSnapshot {
    /// Messages handed to a channel plugin.
    pub messages: u64,
    /// Deciding each due message (consent, suppression, caps, rate) and rendering it.
    pub prepare_us: u64,
    /// The plugin call, less its waits on the network.
    pub plugin_us: u64,
    /// The plugin's waits on HTTP and SMTP.
    pub network_us: u64,
    /// Writing each step (`sending`, then the outcome).
    pub record_us: u64,
    /// Flushing to disk: before a batch leaves, and after it.
    pub flush_us: u64,
}

fn add(sum: &AtomicU64, time: Duration) {
    sum.fetch_add(time.as_nanos() as u64, Ordering::Relaxed);
}

impl DeliveryCosts {
    pub(super) fn prepared(&self, time: Duration) {
        add(&self.prepare_ns, time);
    }

    pub(super) fn called(&self, elapsed: Duration, waited: Duration) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        add(&self.plugin_ns, elapsed.saturating_sub(waited));
        add(&self.network_ns, waited);
    }

    pub(super) fn recorded(&self, time: Duration) {
        add(&self.record_ns, time);
    }

    pub(super) fn flushed(&self, time: Duration) {
        add(&self.flush_ns, time);
    }

    pub fn snapshot(&self) -> CostSnapshot {
        let us = |sum: &AtomicU64| sum.load(Ordering::Relaxed) / 1_000;
        CostSnapshot {
            messages: self.messages.load(Ordering::Relaxed),
            prepare_us: us(&self.prepare_ns),
            plugin_us: us(&self.plugin_ns),
            network_us: us(&self.network_ns),
            record_us: us(&self.record_ns),
            flush_us: us(&self.flush_ns),
        }
    }
}
