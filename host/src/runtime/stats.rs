//! What each plugin version's calls did since the server started: how many, which failed and
//! with what code, how many met a limit, and how long they took (p50 and p99). Recorded at the
//! end of every call with a few relaxed atomic adds; failures, which are rare, take a lock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::CallError;

/// Latency buckets: four per power of two of microseconds, so a percentile is read to within
/// a quarter of its value.
const BUCKETS: usize = 256;

/// One plugin version's call counts and latencies.
pub struct CallStats {
    calls: AtomicU64,
    limit_hits: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    latency: [AtomicU64; BUCKETS],
}

impl Default for CallStats {
    fn default() -> Self {
        CallStats {
            calls: AtomicU64::new(0),
            limit_hits: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// What [`CallStats`] hold, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallStatsView {
    pub calls: u64,
    /// Failed calls by error code (`plugin_cpu_limit`, `plugin_error`, …).
    pub errors: BTreeMap<&'static str, u64>,
    /// Calls stopped by a limit: CPU, wall-clock time, memory, stack or output.
    pub limit_hits: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let top = 63 - us.leading_zeros() as usize;
    let quarter = ((us >> (top - 2)) & 0b11) as usize;
    (4 * (top - 1) + quarter).min(BUCKETS - 1)
}

/// The highest latency a bucket holds, in microseconds.
fn upper_bound(index: usize) -> u64 {
    if index < 4 {
        return index as u64;
    }
    let top = index / 4 + 1;
    let quarter = (index % 4) as u64;
    ((4 + quarter + 1) << (top - 2)) - 1
}

fn is_limit(error: &CallError) -> bool {
    matches!(
        error,
        CallError::CpuLimit { .. }
            | CallError::MemoryLimit(_)
            | CallError::StackOverflow
            | CallError::OutputLimit { .. }
            | CallError::Timeout { .. }
    )
}

impl CallStats {
    pub(crate) fn record(&self, elapsed: Duration, error: Option<&CallError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency[bucket(us)].fetch_add(1, Ordering::Relaxed);
        if let Some(error) = error {
            if is_limit(error) {
                self.limit_hits.fetch_add(1, Ordering::Relaxed);
            }
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            *errors.entry(error.code()).or_default() += 1;
        }
    }

    pub fn view(&self) -> CallStatsView {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let percentile = |p: f64| {
            if total == 0 {
                return 0;
            }
            let rank = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (index, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return upper_bound(index);
                }
            }
            upper_bound(BUCKETS - 1)
        };
        CallStatsView {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            limit_hits: self.limit_hits.load(Ordering::Relaxed),
            p50_us: percentile(0.50),
            p99_us: percentile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_a_bucket_whose_bound_is_within_a_quarter_of_it() {
        for us in [
            0, 1, 3, 4, 5, 7, 8, 15, 16, 100, 999, 1_000, 123_456, 10_000_000,
        ] {
            let bound = upper_bound(bucket(us));
            assert!(bound >= us, "{us} → {bound}");
            assert!(bound as f64 <= (us as f64) * 1.25 + 1.0, "{us} → {bound}");
        }
    }

    #[test]
    fn percentiles_and_errors_are_counted_per_call() {
        let stats = CallStats::default();
        for _ in 0..98 {
            stats.record(Duration::from_micros(100), None);
        }
        stats.record(
            Duration::from_millis(50),
            Some(&CallError::CpuLimit { cpu_ms: 50 }),
        );
        stats.record(
            Duration::from_millis(2),
            Some(&CallError::Plugin("no".into())),
        );
        let view = stats.view();
        assert_eq!(view.calls, 100);
        assert_eq!(view.limit_hits, 1);
        assert_eq!(
            view.errors,
            BTreeMap::from([("plugin_cpu_limit", 1), ("plugin_error", 1)])
        );
        assert!((100..=125).contains(&view.p50_us), "{view:?}");
        assert!((2_000..=2_500).contains(&view.p99_us), "{view:?}");
    }
}
