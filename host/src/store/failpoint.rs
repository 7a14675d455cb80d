//! Stopping on purpose at a chosen point, for the crash tests. `WAYLINE_FAILPOINT=NAME:N` makes
//! the Nth time the store reaches point `NAME` write what it has so far to the disk and abort
//! the process there, as a kill -9 or a power cut would stop it, so that the test can check
//! what the next start repairs. Without the variable (always, outside those tests) a point
//! costs one atomic load.
//!
//! Points: `write_set.part_way` (a write set recorded and its first write made, the rest not),
//! `ingest.queued` (an event's inbox item written, the event not yet recorded). One point
//! stalls instead of stopping: `store.log_wedged` (the log watch's flush never returns, as
//! when sled loses a log buffer; see `store::watchdog`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static CHOSEN: OnceLock<Option<(String, u64)>> = OnceLock::new();
static REACHED: AtomicU64 = AtomicU64::new(0);

fn chosen() -> &'static Option<(String, u64)> {
    CHOSEN.get_or_init(|| {
        let value = std::env::var("WAYLINE_FAILPOINT").ok()?;
        let (name, count) = value.rsplit_once(':')?;
        Some((name.to_owned(), count.parse().ok()?))
    })
}

/// The store reached point `name`; stop here if this is the chosen time.
pub(super) fn reached(name: &str, db: &sled::Db) {
    let Some((point, count)) = chosen() else {
        return;
    };
    if point == name && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *count {
        let _ = db.flush();
        eprintln!("failpoint `{name}` reached for the {count}th time: stopping here");
        std::process::abort();
    }
}

/// The store reached point `name`; if this is the chosen time, wait here for ever.
pub(super) fn stall(name: &str) {
    let Some((point, count)) = chosen() else {
        return;
    };
    if point == name && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *count {
        eprintln!("failpoint `{name}` reached for the {count}th time: stalling here");
        loop {
            std::thread::park();
        }
    }
}
