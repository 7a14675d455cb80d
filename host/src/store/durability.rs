//! Group commit: many requests wait on one disk flush instead of each paying for its own.
//!
//! A caller takes a ticket after its write. If no flush is running, it runs one covering every
//! ticket taken so far; otherwise it waits for a flush that started after its ticket. A flush
//! that started before a write never counts for it.

use std::sync::{Condvar, Mutex};

#[derive(Default)]
struct Tickets {
    /// The last ticket handed out.
    issued: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    flushing: bool,
    /// The error of the last flush, for those who waited on it.
    failed: Option<String>,
}

/// Shares flushes between concurrent writers.
#[derive(Default)]
pub struct GroupCommit {
    tickets: Mutex<Tickets>,
    flushed: Condvar,
}

impl GroupCommit {
    /// Return once everything written before this call is durable.
    pub fn sync(&self, flush: impl Fn() -> Result<(), String>) -> Result<(), String> {
        let mut tickets = self.tickets.lock().expect("group commit lock");
        tickets.issued += 1;
        let mine = tickets.issued;
        loop {
            if tickets.durable >= mine {
                return match &tickets.failed {
                    Some(error) => Err(error.clone()),
                    None => Ok(()),
                };
            }
            if tickets.flushing {
                tickets = self.flushed.wait(tickets).expect("group commit lock");
                continue;
            }
            tickets.flushing = true;
            let covers = tickets.issued;
            drop(tickets);
            let result = flush();
            tickets = self.tickets.lock().expect("group commit lock");
            tickets.flushing = false;
            tickets.durable = covers;
            tickets.failed = result.err();
            self.flushed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn concurrent_writers_share_flushes_and_each_returns_after_one_that_covers_it() {
        let group = Arc::new(GroupCommit::default());
        let flushes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (group, flushes) = (group.clone(), flushes.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        group
                            .sync(|| {
                                flushes.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                Ok(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let flushes = flushes.load(Ordering::SeqCst);
        assert!(flushes < 800, "800 syncs shared flushes: {flushes} flushes");
        assert!(flushes > 0);
    }

    #[test]
    fn a_failed_flush_is_reported_to_its_waiters() {
        let group = GroupCommit::default();
        assert_eq!(
            group.sync(|| Err("disk full".into())),
            Err("disk full".into())
        );
        assert_eq!(group.sync(|| Ok(())), Ok(()));
    }
}
