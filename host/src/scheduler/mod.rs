//! When journey work runs: worker threads that each own a share of the inbox partitions (so one
//! contact's steps never run at once, and different contacts run on all cores), and a timer
//! thread that moves due waits into the inbox and moves sweeps on (`audiences::sweeps`).
//!
//! Owns threads and wake-ups only; what a step does is the journeys module's business.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::journeys::Journeys;
use crate::store::{PARTITIONS, WorkItem, WorkKey};

/// Most inbox items one batch (and so one commit) takes.
const BATCH: usize = 256;
/// Most timers moved into the inbox per scan.
const TIMER_SCAN: usize = 20_000;
/// How often the timer thread looks for due waits.
const TIMER_TICK: Duration = Duration::from_millis(20);
/// How long an idle worker sleeps before looking again without being woken.
const IDLE: Duration = Duration::from_millis(250);
/// How many times an item may fail on its own before it is set aside, so that one item the
/// journeys cannot run (a corrupt record, say) does not stall every contact behind it.
const ATTEMPTS_ALONE: u32 = 3;

/// A worker's doorbell.
#[derive(Default)]
struct Doorbell {
    rung: Mutex<bool>,
    ring: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().expect("doorbell lock") = true;
        self.ring.notify_one();
    }

    fn wait(&self, timeout: Duration) {
        let rung = self.rung.lock().expect("doorbell lock");
        let (mut rung, _) = self
            .ring
            .wait_timeout_while(rung, timeout, |rung| !*rung)
            .expect("doorbell lock");
        *rung = false;
    }
}

/// Set once, when the scheduler stops; threads that pause wait on it so a stop ends the pause.
#[derive(Default)]
struct Halt {
    stopped: Mutex<bool>,
    signal: Condvar,
}

impl Halt {
    fn set(&self) {
        *self.stopped.lock().expect("halt lock") = true;
        self.signal.notify_all();
    }

    /// Wait `duration`, or until the scheduler stops.
    fn pause(&self, duration: Duration) {
        let stopped = self.stopped.lock().expect("halt lock");
        let _ = self
            .signal
            .wait_timeout_while(stopped, duration, |stopped| !*stopped)
            .expect("halt lock");
    }
}

/// The running workers and timer thread.
pub struct Scheduler {
    journeys: Arc<Journeys>,
    doorbells: Vec<Arc<Doorbell>>,
    stop: Arc<AtomicBool>,
    halt: Halt,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Counts the batches the workers have committed (or set aside), for whoever waits on
    /// journey work being done: see [`Scheduler::commits`].
    committed: tokio::sync::watch::Sender<u64>,
    sweeper: crate::audiences::sweeps::Sweeper,
}

impl Scheduler {
    /// The journeys it runs work for.
    pub fn journeys(&self) -> &Arc<Journeys> {
        &self.journeys
    }

    /// Start `workers` worker threads (at least one) and the timer thread.
    pub fn start(journeys: Arc<Journeys>, workers: usize) -> Arc<Scheduler> {
        let workers = workers.clamp(1, PARTITIONS as usize);
        let scheduler = Arc::new(Scheduler {
            journeys,
            doorbells: (0..workers).map(|_| Arc::default()).collect(),
            stop: Arc::default(),
            halt: Halt::default(),
            threads: Mutex::default(),
            committed: tokio::sync::watch::Sender::new(0),
            sweeper: Default::default(),
        });
        let mut threads = Vec::new();
        for worker in 0..workers {
            let scheduler = scheduler.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("journey-worker-{worker}"))
                    .spawn(move || scheduler.work(worker))
                    .expect("spawn a journey worker"),
            );
        }
        let timers = scheduler.clone();
        threads.push(
            std::thread::Builder::new()
                .name("journey-timers".into())
                .spawn(move || timers.fire_timers())
                .expect("spawn the timer thread"),
        );
        *scheduler.threads.lock().expect("threads lock") = threads;
        scheduler
    }

    /// Wake the workers that own these partitions.
    pub fn notify(&self, partitions: &[u8]) {
        let mut rung = vec![false; self.doorbells.len()];
        for partition in partitions {
            let worker = *partition as usize % self.doorbells.len();
            if !rung[worker] {
                rung[worker] = true;
                self.doorbells[worker].ring();
            }
        }
    }

    /// Changes each time a worker has committed a batch or set an item aside: a request that
    /// queued work waits on it, looking after each change whether its work is done, rather
    /// than polling the store. Take it before queueing, so no commit is missed.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    fn committed(&self) {
        self.committed.send_modify(|count| *count += 1);
    }

    /// Wake every worker.
    pub fn notify_all(&self) {
        for doorbell in &self.doorbells {
            doorbell.ring();
        }
    }

    /// Wait until nothing is queued and no timer is due by the clock's now (tests, and a
    /// graceful shutdown). Gives up after `timeout`; `false` if it did.
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let store = &self.journeys.store;
            match store.fire_due_timers(self.journeys.clock.now(), TIMER_SCAN) {
                Ok(partitions) => self.notify(&partitions),
                Err(error) => tracing::error!(%error, "firing timers failed"),
            }
            match self
                .sweeper
                .step(store.as_ref(), self.journeys.clock.now(), TIMER_TICK)
            {
                Ok(partitions) => self.notify(&partitions),
                Err(error) => tracing::error!(%error, "a sweep failed"),
            }
            let due = store
                .next_timer_due()
                .ok()
                .flatten()
                .is_some_and(|due| due <= self.journeys.clock.now());
            let sweeping = crate::audiences::sweeps::unfinished(store.as_ref()).unwrap_or(true);
            if !due && !sweeping && !store.has_pending_work().unwrap_or(true) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// What is wrong with the workers, if anything: one that is gone leaves its partitions'
    /// work undone.
    pub fn problems(&self) -> Vec<String> {
        if self.stop.load(Ordering::SeqCst) {
            return vec!["the journey workers are stopping".into()];
        }
        self.threads
            .lock()
            .expect("threads lock")
            .iter()
            .filter(|thread| thread.is_finished())
            .map(|thread| {
                format!(
                    "thread `{}` has stopped; its journey work is not running",
                    thread.thread().name().unwrap_or("?")
                )
            })
            .collect()
    }

    /// Stop the threads once their current batch has committed.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.halt.set();
        self.notify_all();
        for thread in self.threads.lock().expect("threads lock").drain(..) {
            let _ = thread.join();
        }
    }

    fn work(&self, worker: usize) {
        let workers = self.doorbells.len();
        let mine: Vec<u8> = (0..PARTITIONS)
            .filter(|p| *p as usize % workers == worker)
            .collect();
        let mut start = 0;
        let mut failures: HashMap<WorkKey, u32> = HashMap::new();
        while !self.stop.load(Ordering::SeqCst) {
            // Steps are caught one by one (see `run_alone`); this catches a bug anywhere else
            // in a round, so that the worker's partitions are never left without a worker.
            if let Err(Failure::Panicked(message)) = caught(|| {
                self.round(worker, &mine, &mut start, &mut failures);
                Ok(())
            }) {
                tracing::error!(
                    worker,
                    message,
                    "a journey worker panicked outside a step; it carries on"
                );
                self.halt.pause(Duration::from_secs(1));
            }
        }
    }

    /// One round of a worker: a batch from its partitions, run and committed. One batch
    /// gathers work from all of the worker's partitions, so a light load costs one commit per
    /// round rather than one per partition; the starting partition rotates so that under a
    /// heavy load none waits behind the others.
    fn round(
        &self,
        worker: usize,
        mine: &[u8],
        start: &mut usize,
        failures: &mut HashMap<WorkKey, u32>,
    ) {
        let mut items = Vec::new();
        let now = self.journeys.clock.now();
        for offset in 0..mine.len() {
            let partition = mine[(*start + offset) % mine.len()];
            match self.journeys.store.pending_work(
                partition,
                BATCH.saturating_sub(items.len()),
                now,
            ) {
                Ok(found) => items.extend(found),
                Err(error) => tracing::error!(%error, partition, "reading the inbox failed"),
            }
            if items.len() >= BATCH {
                break;
            }
        }
        *start = (*start + 1) % mine.len();
        if items.is_empty() {
            self.doorbells[worker].wait(IDLE);
            return;
        }
        match caught(|| self.journeys.process(&items)) {
            Ok(partitions) => {
                if !failures.is_empty() {
                    for (key, _) in &items {
                        failures.remove(key);
                    }
                }
                self.committed();
                self.notify(&partitions);
            }
            Err(error) => {
                tracing::error!(%error, worker, "journey batch failed; running its items one by one");
                if !self.run_alone(&items, failures) {
                    // Nothing ran: the store itself is failing. The items stay queued and
                    // run again; back off so it is not hammered.
                    self.halt.pause(Duration::from_secs(1));
                }
            }
        }
    }

    /// Run each inbox record of a failed batch (an item, or a sweep's bundle of them) in a
    /// batch of its own, so the others commit; a record that has failed alone
    /// [`ATTEMPTS_ALONE`] times is set aside with its error. Whether anything ran or was set
    /// aside.
    fn run_alone(
        &self,
        items: &[(WorkKey, WorkItem)],
        failures: &mut HashMap<WorkKey, u32>,
    ) -> bool {
        let mut progressed = false;
        // Partitions whose bundle was split: their later records wait for the next round, so
        // that none runs before the bundle's items, which now sit ahead of them one by one.
        let mut held: Vec<u8> = Vec::new();
        for record in items.chunk_by(|a, b| a.0 == b.0) {
            let key = &record[0].0;
            if key.0.first().is_some_and(|p| held.contains(p)) {
                continue;
            }
            match caught(|| self.journeys.process(record)) {
                Ok(partitions) => {
                    failures.remove(key);
                    self.committed();
                    self.notify(&partitions);
                    progressed = true;
                }
                // A sweep's bundle of many contacts' work is split at its first failure, so
                // one contact's failure holds up no other: each item then runs on its own.
                Err(error) if record.len() > 1 => {
                    tracing::warn!(%error, items = record.len(), "a bundle of sweep work failed; splitting it to run each contact's work alone");
                    held.extend(key.0.first());
                    match self.journeys.store.split_bundle(key) {
                        Ok(_) => progressed = true,
                        Err(error) => {
                            tracing::error!(%error, "splitting a bundle failed; it stays queued")
                        }
                    }
                }
                Err(error) => {
                    let attempts = failures.entry(key.clone()).or_default();
                    *attempts += 1;
                    // A panic is a bug that running again will not fix: set it aside at once.
                    let panicked = matches!(error, Failure::Panicked(_));
                    if *attempts < ATTEMPTS_ALONE && !panicked {
                        continue;
                    }
                    let message = match panicked {
                        true => error.to_string(),
                        false => format!("failed {ATTEMPTS_ALONE} times: {error}"),
                    };
                    tracing::error!(%error, "a journey work item keeps failing; setting it aside");
                    let now = self.journeys.clock.now();
                    match self.journeys.store.set_aside(key, &message, now) {
                        Ok(()) => {
                            failures.remove(key);
                            self.committed();
                            progressed = true;
                        }
                        Err(error) => {
                            tracing::error!(%error, "setting a work item aside failed; it stays queued")
                        }
                    }
                }
            }
        }
        progressed
    }

    fn fire_timers(&self) {
        while !self.stop.load(Ordering::SeqCst) {
            // A panic here is a bug; the timers must still fire, so the thread goes on.
            if let Err(Failure::Panicked(message)) = caught(|| {
                self.fire_timers_until_stopped();
                Ok(())
            }) {
                tracing::error!(message, "the timer thread panicked; it carries on");
                self.halt.pause(Duration::from_secs(1));
            }
        }
    }

    fn fire_timers_until_stopped(&self) {
        while !self.stop.load(Ordering::SeqCst) {
            let now = self.journeys.clock.now();
            match self.journeys.store.fire_due_timers(now, TIMER_SCAN) {
                Ok(partitions) => {
                    self.notify(&partitions);
                    if partitions.len() >= TIMER_SCAN {
                        continue;
                    }
                }
                Err(error) => tracing::error!(%error, "firing timers failed"),
            }
            match (self.sweeper).step(self.journeys.store.as_ref(), now, TIMER_TICK) {
                Ok(partitions) => self.notify(&partitions),
                Err(error) => tracing::error!(%error, "a sweep failed"),
            }
            self.halt.pause(TIMER_TICK);
        }
    }
}

/// Why running a batch failed: the store refused it, or the code panicked.
#[derive(Debug)]
enum Failure {
    Store(crate::store::StoreError),
    Panicked(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Store(error) => write!(f, "{error}"),
            Failure::Panicked(message) => write!(f, "the step panicked: {message}"),
        }
    }
}

/// Run `work`, turning a panic into an error instead of ending the thread. A batch that panics
/// has written nothing (the commit is the last thing it does, and one write set), so its items
/// are still queued and nothing is half done.
fn caught<T>(work: impl FnOnce() -> Result<T, crate::store::StoreError>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result.map_err(Failure::Store),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(Failure::Panicked(message))
        }
    }
}
