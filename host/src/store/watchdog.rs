//! A watch on the store's disk log, so that a wedged log stops the server instead of hanging it.
//!
//! sled 0.34.7 waits without a timeout for its log's durable point to pass what a flush, or a
//! read of an evicted page, needs. If a log buffer is never written, that point never moves
//! again: every flush and many reads wait forever, without an error, and the server stops
//! answering. The one cause found, a buffer that filled a 16 MiB segment to its last byte (see
//! `layout::SEGMENT_BYTES`), is gone with layout 3's 8 MiB segments; this watch stays for any
//! other. Nothing inside the process can unstick a wedged log, but a restart recovers the store
//! to its last durable point, and nothing acknowledged as durable is past that point, because
//! acknowledging waited for it.
//!
//! So a probe flushes the log every few seconds, and when one flush has not returned within
//! the limit, the process says why and exits with [`WEDGED_EXIT`], for its supervisor to start
//! it again.

use std::sync::mpsc;
use std::time::Duration;

use super::failpoint;
use super::sled_store::SledStore;

/// The exit status of a server whose store's log stopped making writes durable (`EX_TEMPFAIL`:
/// starting it again is the remedy).
pub const WEDGED_EXIT: i32 = 75;

/// How long a flush may take before the log is taken as wedged, when not configured.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

impl SledStore {
    /// Watch the log from two threads for the life of the process: one flushes it now and
    /// then and reports each flush done; the other exits the process when no report has come
    /// within `limit` after the pause between flushes.
    pub fn watch_log(&self, limit: Duration) -> std::io::Result<()> {
        let every = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let (done, flushed) = mpsc::channel::<()>();
        let db = self.db.clone();
        std::thread::Builder::new()
            .name("store-log-probe".into())
            .spawn(move || {
                loop {
                    failpoint::stall("store.log_wedged");
                    if let Err(error) = db.flush() {
                        tracing::error!(%error, "the store's log could not be flushed");
                    }
                    if done.send(()).is_err() {
                        return;
                    }
                    // The pause between probes: the watch allows for it.
                    std::thread::sleep(every);
                }
            })?;
        std::thread::Builder::new()
            .name("store-log-watch".into())
            .spawn(move || {
                loop {
                    match flushed.recv_timeout(every + limit) {
                        Ok(()) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => wedged(limit),
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            tracing::error!("the store's log probe stopped; the log is unwatched");
                            return;
                        }
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
