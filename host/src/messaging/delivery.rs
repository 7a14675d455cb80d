//! The delivery worker: takes messages from the outbox when they are due, in due order, has
//! each decided (`prepare`: the rules, the render), claims the batch (`sending`, in one
//! write), calls the channel plugin with the message id as idempotency key, and records the
//! outcomes as they come, as many in one write as arrived during the previous one, retrying
//! with backoff. The batch is flushed to disk before its next one is read.
//!
//! One write per batch of steps, not one per step, is what brought delivery to the 10,000
//! messages/s of issue 13 (see BENCHMARKS.md): a write per step cost two hops to a blocking
//! thread, an intent record and the partition lock for each message.
//!
//! A message stays on the delivery queue until its outcome is recorded, so a crash between the
//! provider accepting it and the record sends it again, with the same id: a provider that
//! honours idempotency keys delivers it once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Messaging;
use super::prepare::Ready;
use crate::model::{DeliveryOutcome, FailureKind, Millis};
use crate::store::{DeliveryStatus, DeliveryUpdate, OutboxMessage, StoreError, SuppressionKind};

/// How the worker retries and how much it does at once.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// Attempts before a message that keeps failing on a retryable error is failed.
    pub max_attempts: u32,
    /// The wait before the first retry; each retry waits twice as long, up to `max_retry_ms`.
    pub first_retry_ms: Millis,
    pub max_retry_ms: Millis,
    /// Plugin calls in flight at once.
    pub concurrency: usize,
    /// Most messages taken from the queue at once.
    pub batch: usize,
    /// How long the worker sleeps when nothing is due.
    pub idle: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_attempts: 8,
            first_retry_ms: 30_000,
            max_retry_ms: 3_600_000,
            concurrency: 64,
            batch: 512,
            idle: Duration::from_millis(50),
        }
    }
}

/// Most outcomes recorded in one write.
const OUTCOMES_AT_ONCE: usize = 256;

/// Store work off the async threads; a panic in it becomes an error, so the worker goes on.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|panic| {
            Err(StoreError::Backend(format!(
                "a delivery step panicked: {panic}"
            )))
        })
}

impl Messaging {
    pub(super) async fn deliver_forever(self: Arc<Self>) {
        while !self.stopping() {
            let me = self.clone();
            let now = self.clock.now();
            let taken = off_thread(move || me.store.due_messages(now, me.settings.batch)).await;
            let due = match taken {
                Ok(due) if !due.is_empty() => due,
                Ok(_) => {
                    tokio::time::sleep(self.settings.idle).await;
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "delivery: reading the queue failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let me = self.clone();
            let prepared = off_thread(move || {
                // Only what is durable leaves: a message read before the journey step that
                // made it reached the disk could be lost in a crash and made again, under
                // another id, after it was sent.
                let started = Instant::now();
                me.store.flush()?;
                me.costs.flushed(started.elapsed());
                let started = Instant::now();
                let prepared = me.prepare_all(due, now);
                me.costs.prepared(started.elapsed());
                Ok(prepared)
            })
            .await;
            let ready = match prepared {
                Ok((ready, 0)) => ready,
                // A message whose step cannot be recorded stays due: do not spin on it.
                Ok((ready, _failed)) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    ready
                }
                Err(error) => {
                    tracing::error!(%error, "delivery: preparing a batch failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let ready = self.claim(ready).await;
            // A channel with a rate sends one message after another, so they arrive in the
            // order they were released; the others send side by side.
            let mut queues: Vec<Vec<Ready>> = Vec::new();
            let mut in_order: HashMap<String, usize> = HashMap::new();
            for message in ready {
                if message.bound.record.rate.is_none() {
                    queues.push(vec![message]);
                    continue;
                }
                let channel = message.outbox.channel.clone();
                match in_order.get(&channel) {
                    Some(&queue) => queues[queue].push(message),
                    None => {
                        in_order.insert(channel, queues.len());
                        queues.push(vec![message]);
                    }
                }
            }
            let limit = Arc::new(tokio::sync::Semaphore::new(self.settings.concurrency));
            let (outcomes, recording) = self.record_outcomes();
            let mut sending = tokio::task::JoinSet::new();
            for queue in queues {
                let permit = limit.clone().acquire_owned().await.expect("never closed");
                let me = self.clone();
                let outcomes = outcomes.clone();
                sending.spawn(async move {
                    for message in queue {
                        me.clone().send(message, &outcomes).await;
                    }
                    drop(permit);
                });
            }
            drop(outcomes);
            while sending.join_next().await.is_some() {}
            // Every outcome recorded before the batch's flush.
            recording.await.ok();
            let me = self.clone();
            let started = Instant::now();
            if let Err(error) = off_thread(move || me.store.flush()).await {
                tracing::error!(%error, "delivery: flushing the store failed");
            }
            self.costs.flushed(started.elapsed());
        }
    }

    /// Claim a batch: `sending` recorded for each message, all in one write. What comes back
    /// is what may be sent; a message the provider settled meanwhile (a report of an earlier
    /// attempt) is not sent again.
    async fn claim(self: &Arc<Self>, ready: Vec<Ready>) -> Vec<Ready> {
        if ready.is_empty() {
            return ready;
        }
        let now = self.clock.now();
        let claims = ready
            .iter()
            .map(|ready| {
                let mut sending =
                    DeliveryUpdate::new(&ready.outbox.id, DeliveryStatus::Sending, now);
                sending.due_at = ready.outbox.due_at;
                sending.recipient = Some(ready.wire.recipient.clone());
                sending.template_version = Some(ready.template_version);
                sending
            })
            .collect();
        let steps = match self.record_all(claims).await {
            Ok(steps) => steps,
            Err(error) => {
                tracing::error!(%error, "delivery: recording `sending` failed");
                // Nothing is sent, and nothing spins: the batch is read again in a second.
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Vec::new();
            }
        };
        ready
            .into_iter()
            .zip(steps)
            .filter_map(|(ready, step)| match step {
                Ok(()) => Some(ready),
                Err(StoreError::Conflict(why)) => {
                    tracing::debug!(message = %ready.outbox.id, why, "delivery: not sent");
                    None
                }
                Err(error) => {
                    tracing::error!(message = %ready.outbox.id, %error, "delivery: recording `sending` failed");
                    None
                }
            })
            .collect()
    }

    /// The batch's outcome writer: the outcomes sent to it are recorded together, as many in
    /// one write as have arrived while the previous write was made. It ends when every sender
    /// is gone and all is written.
    fn record_outcomes(
        self: &Arc<Self>,
    ) -> (
        mpsc::UnboundedSender<DeliveryUpdate>,
        tokio::task::JoinHandle<()>,
    ) {
        let (outcomes, mut arriving) = mpsc::unbounded_channel::<DeliveryUpdate>();
        let me = self.clone();
        let recording = tokio::spawn(async move {
            let mut steps = Vec::new();
            while arriving.recv_many(&mut steps, OUTCOMES_AT_ONCE).await > 0 {
                let updates = std::mem::take(&mut steps);
                let ids: Vec<String> = updates.iter().map(|u| u.message_id.clone()).collect();
                match me.record_all(updates).await {
                    Ok(steps) => {
                        for (id, step) in ids.iter().zip(steps) {
                            if let Err(error) = step {
                                tracing::error!(message = %id, %error, "delivery: recording the outcome failed");
                            }
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, messages = ids.len(), "delivery: recording outcomes failed")
                    }
                }
            }
        });
        (outcomes, recording)
    }

    async fn send(self: Arc<Self>, ready: Ready, outcomes: &mpsc::UnboundedSender<DeliveryUpdate>) {
        let bound = &ready.bound;
        let report = self
            .runtime
            .deliver_through(
                &bound.plugin,
                Some(bound.egress.clone()),
                &bound.config,
                &ready.wire,
            )
            .await;
        self.costs.called(report.elapsed, report.waited);
        let now = self.clock.now();
        let message = &ready.outbox;
        let channel = &message.channel;
        let update = match report.result {
            Ok(DeliveryOutcome::Delivered { provider_id }) => {
                let mut update = DeliveryUpdate::new(&message.id, DeliveryStatus::Sent, now);
                update.provider_id = Some(provider_id);
                update.attempted = true;
                update.event = Some(format!("{channel}_sent"));
                update
            }
            Ok(DeliveryOutcome::Failed {
                kind: FailureKind::Retryable,
                message: reason,
                retry_after_ms,
            }) => self.retry_update(message, now, reason, retry_after_ms),
            Ok(DeliveryOutcome::Failed {
                kind: FailureKind::Permanent,
                message: reason,
                ..
            }) => {
                let mut update = DeliveryUpdate::new(&message.id, DeliveryStatus::Failed, now);
                update.detail = format!("permanent failure: {reason}");
                update.attempted = true;
                update.alert = true;
                update.event = Some(format!("{channel}_failed"));
                update
            }
            Ok(DeliveryOutcome::Failed {
                kind: FailureKind::InvalidRecipient,
                message: reason,
                ..
            }) => {
                let mut update = DeliveryUpdate::new(&message.id, DeliveryStatus::Bounced, now);
                update.detail = format!("invalid recipient: {reason}");
                update.attempted = true;
                update.suppress = (!message.test).then_some(SuppressionKind::Bounced);
                update.event = Some(format!("{channel}_bounced"));
                update
            }
            // The plugin broke (a trap, a limit, a timeout): maybe not for good.
            Err(error) => self.retry_update(
                message,
                now,
                format!("the channel plugin failed ({}): {error}", error.code()),
                None,
            ),
        };
        let mut update = update;
        if message.test {
            update.event = None;
            update.alert = false;
        }
        if outcomes.send(update).is_err() {
            tracing::error!(message = %message.id, "delivery: the outcome writer is gone");
        }
    }

    /// Record steps in one write, off the async threads, and wake the journeys their events
    /// give work to; what became of each step.
    async fn record_all(
        self: &Arc<Self>,
        updates: Vec<DeliveryUpdate>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let me = self.clone();
        let started = Instant::now();
        let recorded = off_thread(move || {
            let recorded = me.store.record_deliveries(&updates)?;
            if !recorded.partitions.is_empty() {
                me.scheduler.notify(&recorded.partitions);
            }
            Ok(recorded.steps)
        })
        .await;
        self.costs.recorded(started.elapsed());
        recorded
    }

    /// Record a step, and wake the journeys its event gives work to.
    fn write(&self, update: &DeliveryUpdate) -> Result<(), StoreError> {
        let partitions = self.store.record_delivery(update)?;
        if !partitions.is_empty() {
            self.scheduler.notify(&partitions);
        }
        Ok(())
    }

    /// A retryable failure: deferred with backoff (or the provider's `retry-after`, if
    /// longer), or failed once attempts run out.
    fn retry_update(
        &self,
        message: &OutboxMessage,
        now: Millis,
        reason: String,
        retry_after_ms: Option<u64>,
    ) -> DeliveryUpdate {
        let attempts = message.attempts + 1;
        if attempts >= self.settings.max_attempts {
            let mut update = DeliveryUpdate::new(&message.id, DeliveryStatus::Failed, now);
            update.detail = format!("gave up after {attempts} attempts: {reason}");
            update.attempted = true;
            if !message.test {
                update.event = Some(format!("{}_failed", message.channel));
            }
            return update;
        }
        let wait = self
            .backoff(message, attempts)
            .max(retry_after_ms.map_or(0, |ms| ms.min(86_400_000) as Millis));
        let mut update = DeliveryUpdate::new(&message.id, DeliveryStatus::Deferred, now);
        update.detail = format!("attempt {attempts} failed, retrying: {reason}");
        update.attempted = true;
        update.due_at = Some(now + wait);
        update
    }

    /// The wait before retry `attempts`: doubling from the first, capped, with jitter (a half
    /// to the whole of it, spread by message) so retries of many messages do not arrive at
    /// once.
    fn backoff(&self, message: &OutboxMessage, attempts: u32) -> Millis {
        let settings = &self.settings;
        let full = settings
            .first_retry_ms
            .saturating_mul(1 << attempts.saturating_sub(1).min(20))
            .min(settings.max_retry_ms);
        let spread = message
            .id
            .bytes()
            .chain(attempts.to_be_bytes())
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
        full / 2 + (spread % (full as u64 / 2 + 1)) as Millis
    }

    /// A channel or template that is not there yet: tried again later, counted as an attempt.
    pub(super) fn retry_later(
        &self,
        message: &OutboxMessage,
        now: Millis,
        reason: String,
        retry_after_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let update = self.retry_update(message, now, reason, retry_after_ms);
        self.write(&update)
    }

    /// Put a message off until `until` for its channel's rate; not an attempt.
    pub(super) fn hold(
        &self,
        message: &OutboxMessage,
        until: Millis,
        reason: String,
    ) -> Result<(), StoreError> {
        let mut update =
            DeliveryUpdate::new(&message.id, DeliveryStatus::Deferred, self.clock.now());
        update.detail = reason;
        update.due_at = Some(until);
        self.write(&update)
    }

    /// A final outcome reached without calling the plugin.
    pub(super) fn finish(
        &self,
        message: &OutboxMessage,
        status: DeliveryStatus,
        now: Millis,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut update = DeliveryUpdate::new(&message.id, status, now);
        update.detail = reason.to_owned();
        if !message.test {
            update.event = Some(format!("{}_{}", message.channel, status.as_str()));
        }
        self.write(&update)
    }
}
