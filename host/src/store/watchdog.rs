//! A watch on the store's disk log, so that a wedged log stops the server instead of hanging it.
//!
//! sled 0.34.7 can lose one of its log buffers under a heavy write load: the buffer is never
//! written, so the log's durable point never passes it. From then on every flush, and every
//! read of a page written after that point and since evicted from the cache, waits forever,
//! without an error; the server stops answering. (Seen in imports of a million new contacts,
//! several a minute apart in one process: the durable point sat at the end of one segment and
//! the following segment was never written, while 37 later ones were.) Nothing inside the
//! process can unstick it, but a restart recovers the store to its last durable point, and
//! nothing acknowledged as durable is past that point, because acknowledging waited for it.
//!
//! So a probe flushes the log every few seconds, and when one flush has not returned within
//! the limit, the process says why and exits with [`WEDGED_EXIT`], for its supervisor to start
//! it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::failpoint;
use super::sled_store::SledStore;

/// The exit status of a server whose store's log stopped making writes durable (`EX_TEMPFAIL`:
/// starting it again is the remedy).
pub const WEDGED_EXIT: i32 = 75;

/// How long a flush may take before the log is taken as wedged, when not configured.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

impl SledStore {
    /// Watch the log from two threads for the life of the process: one flushes it now and
    /// then, the other exits the process when one of those flushes has not returned within
    /// `limit`.
    pub fn watch_log(&self, limit: Duration) -> std::io::Result<()> {
        let every = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let epoch = Instant::now();
        // When the flush under way began (ms after `epoch`, plus one); 0 when none is.
        let began = Arc::new(AtomicU64::new(0));
        let db = self.db.clone();
        let probe = began.clone();
        std::thread::Builder::new()
            .name("store-log-probe".into())
            .spawn(move || {
                loop {
                    let since = epoch.elapsed().as_millis() as u64 + 1;
                    probe.store(since, Ordering::SeqCst);
                    failpoint::stall("store.log_wedged");
                    if let Err(error) = db.flush() {
                        tracing::error!(%error, "the store's log could not be flushed");
                    }
                    probe.store(0, Ordering::SeqCst);
                    std::thread::sleep(every);
                }
            })?;
        std::thread::Builder::new()
            .name("store-log-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let since = began.load(Ordering::SeqCst);
                    let now = epoch.elapsed().as_millis() as u64 + 1;
                    if since != 0 && now.saturating_sub(since) > limit.as_millis() as u64 {
                        wedged(limit);
                    }
                }
            })?;
        Ok(())
    }
}

fn wedged(limit: Duration) -> ! {
    let message = format!(
        "the store's log has made no write durable for {} s (a flush has not returned): \
         stopping so that a restart recovers the store to its last durable point \
         (exit status {WEDGED_EXIT})",
        limit.as_secs()
    );
    tracing::error!("{message}");
    eprintln!("wayline: {message}");
    std::process::exit(WEDGED_EXIT)
}
