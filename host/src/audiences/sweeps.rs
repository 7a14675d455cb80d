//! Sweeps: work queued for many contacts a page at a time, throttled to the sweep's rate — a
//! definition's first look at everyone (`Refresh`), a journey's backfill of a segment's
//! members (`Enroll`). Each page's items and the sweep's new position are one write, so after
//! a crash a sweep goes on from where it stood and queues nobody twice. A page's items for one
//! partition are one inbox record (a bundle), which a worker runs in one batch: a million
//! members cost a few thousand inbox keys rather than a million. The scheduler's timer
//! thread moves them on each tick ([`Sweeper::step`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::Millis;
use crate::store::{Store, StoreError, SweepRecord, sweep_item};

/// Most contacts one page of a sweep queues (one write).
const MAX_PAGE: u128 = 2_000;
/// Contact ids read ahead at once. A read of a page the workers wrote moments ago waits for
/// sled to make that write durable; reading ahead in long passes keeps such waits rare.
const READ_AHEAD: usize = 20_000;

/// The ids a sweep will queue next, read ahead, and where they start.
struct Ahead {
    started_at: Millis,
    /// The sweep's position the first id follows.
    after: Option<String>,
    ids: VecDeque<String>,
    /// Nothing is left to read after the last id.
    exhausted: bool,
    /// When it last queued: the next step queues what the rate allows since then.
    stepped: Option<Instant>,
}

/// Moves the sweeps on; one per scheduler.
#[derive(Default)]
pub struct Sweeper {
    ahead: Mutex<HashMap<String, Ahead>>,
}

impl Sweeper {
    /// Queue the next pages of every unfinished sweep, as much as its rate allows since its
    /// last step (`tick` for its first, at most a second's worth). The partitions that got
    /// work.
    pub fn step(
        &self,
        store: &dyn Store,
        now: Millis,
        tick: Duration,
    ) -> Result<Vec<u8>, StoreError> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        let mut partitions = Vec::new();
        let sweeps = store.sweeps()?;
        ahead.retain(|id, _| {
            sweeps
                .iter()
                .any(|s| s.id == *id && s.finished_at.is_none())
        });
        for mut sweep in sweeps {
            if sweep.finished_at.is_some() {
                continue;
            }
            let held = ahead
                .entry(sweep.id.clone())
                .or_insert_with(|| fresh(&sweep));
            let since = (held.stepped.map(|at| at.elapsed()))
                .unwrap_or(tick)
                .min(Duration::from_secs(1));
            held.stepped = Some(Instant::now());
            let mut budget = (u128::from(sweep.per_second) * since.as_micros() / 1_000_000).max(1);
            while sweep.finished_at.is_none() && budget > 0 {
                let size = budget.min(MAX_PAGE) as usize;
                budget -= size as u128;
                let held = ahead
                    .entry(sweep.id.clone())
                    .or_insert_with(|| fresh(&sweep));
                if held.started_at != sweep.started_at || held.after != sweep.after {
                    let stepped = held.stepped;
                    *held = fresh(&sweep);
                    held.stepped = stepped;
                }
                match page(store, &mut sweep, held, size, now)? {
                    Some(queued) => partitions.extend(queued),
                    // Another caller moved it first: read it again next time.
                    None => {
                        ahead.remove(&sweep.id);
                        break;
                    }
                }
            }
        }
        partitions.sort_unstable();
        partitions.dedup();
        Ok(partitions)
    }
}

fn fresh(sweep: &SweepRecord) -> Ahead {
    Ahead {
        started_at: sweep.started_at,
        after: sweep.after.clone(),
        ids: VecDeque::new(),
        exhausted: false,
        stepped: None,
    }
}

/// Queue one page of at most `size` contacts and move `sweep` past them; the partitions that
/// got work, or `None` when the sweep had moved meanwhile and nothing was queued.
fn page(
    store: &dyn Store,
    sweep: &mut SweepRecord,
    ahead: &mut Ahead,
    size: usize,
    now: Millis,
) -> Result<Option<Vec<u8>>, StoreError> {
    if ahead.ids.len() < size && !ahead.exhausted {
        // A page sled evicted before it was durable is read back only after a flush; one
        // flush first is cheaper than one per page read.
        store.flush()?;
        let mut from = sweep.clone();
        from.after = ahead.ids.back().cloned().or_else(|| ahead.after.clone());
        let read = store.sweep_page(&from, READ_AHEAD)?;
        ahead.exhausted = read.len() < READ_AHEAD;
        ahead.ids.extend(read);
    }
    let take = size.min(ahead.ids.len());
    let ids: Vec<String> = ahead.ids.drain(..take).collect();
    let items: Vec<_> = (ids.iter()).map(|id| sweep_item(&sweep.work, id)).collect();
    let mut next = sweep.clone();
    next.queued += ids.len() as u64;
    if let Some(last) = ids.last() {
        next.after = Some(last.clone());
    }
    if ahead.ids.is_empty() && ahead.exhausted {
        next.finished_at = Some(now);
        // Done, it needs no position (which names a contact).
        next.after = None;
    }
    let queued = store.sweep_step(&next, &items)?;
    if queued.is_some() {
        *sweep = next;
        ahead.after = sweep.after.clone();
    }
    Ok(queued)
}

/// Whether a sweep is still queueing.
pub fn unfinished(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store.sweeps()?.iter().any(|s| s.finished_at.is_none()))
}
