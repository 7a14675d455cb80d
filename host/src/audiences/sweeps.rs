//! Sweeps: work queued for many contacts a page at a time, throttled to the sweep's rate — a
//! definition's first look at everyone (`Refresh`), a journey's backfill of a segment's
//! members (`Enroll`). Each page's items and the sweep's new position are one write, so after
//! a crash a sweep goes on from where it stood and queues nobody twice. The scheduler's timer
//! thread calls [`step`] on each tick.

use std::time::Duration;

use crate::model::Millis;
use crate::store::{Store, StoreError, SweepRecord, sweep_item};

/// Most contacts one page of a sweep queues (one write).
const MAX_PAGE: u128 = 2_000;

/// Queue the next page of every unfinished sweep, as much as its rate allows in `tick`. The
/// partitions that got work.
pub fn step(store: &dyn Store, now: Millis, tick: Duration) -> Result<Vec<u8>, StoreError> {
    let mut partitions = Vec::new();
    for mut sweep in store.sweeps()? {
        let mut budget = (u128::from(sweep.per_second) * tick.as_millis() / 1_000).max(1);
        while sweep.finished_at.is_none() && budget > 0 {
            let size = budget.min(MAX_PAGE) as usize;
            budget -= size as u128;
            let (next, queued) = page(store, sweep, size, now)?;
            partitions.extend(queued);
            sweep = next;
        }
    }
    partitions.sort_unstable();
    partitions.dedup();
    Ok(partitions)
}

/// Queue one page of at most `budget` contacts; the sweep as it then stands, and the
/// partitions that got work.
fn page(
    store: &dyn Store,
    mut sweep: SweepRecord,
    budget: usize,
    now: Millis,
) -> Result<(SweepRecord, Vec<u8>), StoreError> {
    let ids = store.sweep_page(&sweep, budget)?;
    let items: Vec<_> = (ids.iter()).map(|id| sweep_item(&sweep.work, id)).collect();
    sweep.queued += ids.len() as u64;
    if let Some(last) = ids.last() {
        sweep.after = Some(last.clone());
    }
    if ids.len() < budget {
        sweep.finished_at = Some(now);
    }
    let partitions = store.sweep_step(&sweep, &items)?;
    Ok((sweep, partitions))
}

/// Whether a sweep is still queueing.
pub fn unfinished(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store.sweeps()?.iter().any(|s| s.finished_at.is_none()))
}
