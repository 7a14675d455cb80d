//! The delivery worker: takes messages from the outbox when they are due, in due order, checks
//! the rules (consent, suppressed addresses, the channel's rate), renders, calls the channel
//! plugin with the message id as idempotency key, and records each step durably.
//!
//! A message stays on the delivery queue until its outcome is recorded, so a crash between the
//! provider accepting it and the record sends it again, with the same id: a provider that
//! honours idempotency keys delivers it once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Messaging;
use super::channels::Bound;
use super::{rules, templates};
use crate::model::{
    ConsentState, DeliveryOutcome, FailureKind, Message, MessageClass, Millis, Value,
};
use crate::store::{
    DeliveryStatus, DeliveryUpdate, OutboxMessage, StoreError, SuppressionKind, WhenCapped,
};

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

/// What one batch has decided so far, for the decisions after it.
#[derive(Default)]
struct Batch {
    /// Per channel, when the last message held for its rate goes.
    held: HashMap<String, Millis>,
    /// Per contact and channel, the messages this batch is sending: `(at, journey, template)`,
    /// counted by the frequency caps with those sent before.
    going: HashMap<(String, String), Vec<rules::Going>>,
}

/// A message ready to hand to its channel plugin.
struct Ready {
    bound: Arc<Bound>,
    outbox: OutboxMessage,
    wire: Message,
    template_version: u32,
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
            let mut sending = tokio::task::JoinSet::new();
            for queue in queues {
                let permit = limit.clone().acquire_owned().await.expect("never closed");
                let me = self.clone();
                sending.spawn(async move {
                    for message in queue {
                        me.clone().send(message).await;
                    }
                    drop(permit);
                });
            }
            while sending.join_next().await.is_some() {}
            let me = self.clone();
            let started = Instant::now();
            if let Err(error) = off_thread(move || me.store.flush()).await {
                tracing::error!(%error, "delivery: flushing the store failed");
            }
            self.costs.flushed(started.elapsed());
        }
    }

    /// Decide each due message, in due order: the ones to send now, ready; the others (no
    /// consent, a suppressed address, over the rate, a channel that cannot send, a render that
    /// fails) recorded as such.
    /// Also how many could not be decided (their step not recorded), which stay due.
    fn prepare_all(&self, due: Vec<OutboxMessage>, now: Millis) -> (Vec<Ready>, usize) {
        let mut ready = Vec::new();
        let mut failed = 0;
        let mut batch = Batch::default();
        for message in due {
            let id = message.id.clone();
            match self.prepare(message, now, &mut batch) {
                Ok(Some(message)) => ready.push(message),
                Ok(None) => {}
                Err(error) => {
                    failed += 1;
                    tracing::error!(message = %id, %error, "delivery: a step could not be recorded")
                }
            }
        }
        (ready, failed)
    }

    fn prepare(
        &self,
        message: OutboxMessage,
        now: Millis,
        batch: &mut Batch,
    ) -> Result<Option<Ready>, StoreError> {
        let bound = match self.bound(&message.channel) {
            Ok(bound) => bound,
            Err(reason) => return self.retry_later(&message, now, reason, None).map(|_| None),
        };
        let Some(contact) = self.store.contact(&message.contact_id)? else {
            return self
                .finish(
                    &message,
                    DeliveryStatus::Failed,
                    now,
                    "the contact no longer exists",
                )
                .map(|_| None);
        };
        let template = match self
            .store
            .template(&message.template, message.template_version)?
        {
            Some(template) => template,
            None => {
                let reason = match message.template_version {
                    Some(v) => format!("template `{}` has no version {v}", message.template),
                    None => format!(
                        "no template `{}`; create it with PUT /v1/templates/{}",
                        message.template, message.template
                    ),
                };
                return self.retry_later(&message, now, reason, None).map(|_| None);
            }
        };
        let recipient = match (&message.recipient, &bound.record.recipient) {
            (Some(test_address), _) if message.test => test_address.clone(),
            (_, None) => contact.id.clone(),
            (_, Some(attribute)) => match contact.attributes.get(attribute) {
                Some(Value::Text(address)) if !address.trim().is_empty() => address.clone(),
                _ => {
                    let reason = format!("the contact has no `{attribute}` to send to");
                    return self
                        .finish(&message, DeliveryStatus::Suppressed, now, &reason)
                        .map(|_| None);
                }
            },
        };
        if !message.test {
            if !template.transactional {
                let consent = bound.consent();
                let reason = match contact.consents.get(consent).copied().unwrap_or_default() {
                    ConsentState::Granted => None,
                    ConsentState::Revoked => Some(format!("the contact opted out of `{consent}`")),
                    ConsentState::Unknown => Some(format!(
                        "the contact has not consented to `{consent}` (marketing messages need consent; transactional templates do not)"
                    )),
                };
                if let Some(reason) = reason {
                    return self
                        .finish(&message, DeliveryStatus::Suppressed, now, &reason)
                        .map(|_| None);
                }
            }
            if let Some(suppression) = self
                .store
                .suppression(&message.channel, &recipient)?
                .filter(|s| s.kind.blocks(template.transactional))
            {
                let reason = format!(
                    "`{recipient}` is suppressed on `{}`: {}",
                    message.channel, suppression.reason
                );
                return self
                    .finish(&message, DeliveryStatus::Suppressed, now, &reason)
                    .map(|_| None);
            }
        }
        let marketing = !template.transactional && !message.test;
        if marketing {
            if let Some(hours) = &bound.record.send_hours
                && let Some(opening) = hours.next_opening(now, &contact.timezone)
            {
                let reason = format!(
                    "outside the send window {}–{} in {}",
                    hours.from, hours.to, contact.timezone
                );
                return self.hold(&message, opening, reason).map(|_| None);
            }
            let sent = self.store.messages(&contact.id)?;
            let going = batch
                .going
                .get(&(contact.id.clone(), message.channel.clone()))
                .map_or(&[][..], Vec::as_slice);
            let caps = super::channels::caps_of(&bound.record);
            if let Some((until, cap)) = rules::capped_until(caps, &message, &sent, going, now) {
                let reason = rules::describe(&cap);
                return match bound.record.when_capped {
                    WhenCapped::Defer => self.hold(&message, until, reason),
                    WhenCapped::Drop => {
                        self.finish(&message, DeliveryStatus::Suppressed, now, &reason)
                    }
                }
                .map(|_| None);
            }
        }
        let unsubscribe =
            (!template.transactional).then(|| self.links.unsubscribe_url(&message.id));
        let mut extra = vec![("channel", message.channel.clone())];
        extra.extend(unsubscribe.clone().map(|url| ("unsubscribe_url", url)));
        let context = templates::context(&contact, &message, &extra);
        let rendered = match templates::render(&template, &context) {
            Ok(rendered) => rendered,
            Err(reason) => {
                let reason = format!(
                    "template `{}` v{}: {reason}",
                    template.name, template.version
                );
                return self
                    .finish(&message, DeliveryStatus::Failed, now, &reason)
                    .map(|_| None);
            }
        };
        // Once one message of a channel waits for its rate, the rest of the batch waits
        // behind it, each a millisecond later, so they keep their order.
        if let Some(after) = batch.held.get_mut(&message.channel) {
            *after += 1;
            let reason = rate_reason(&bound);
            return self.hold(&message, *after, reason).map(|_| None);
        }
        if let Err(next) = bound.bucket.lock().expect("rate lock").take(now) {
            batch.held.insert(message.channel.clone(), next);
            return self.hold(&message, next, rate_reason(&bound)).map(|_| None);
        }
        batch
            .going
            .entry((contact.id.clone(), message.channel.clone()))
            .or_default()
            .push((now, message.journey_id.clone(), message.template.clone()));
        let rendered = self.with_links(&message, rendered, unsubscribe.as_deref());
        let mut wire = wire_message(&message, &recipient, rendered, template.transactional);
        if let Some(url) = unsubscribe {
            // RFC 8058: a mail client's one-click unsubscribe POSTs to this URL.
            wire.headers
                .push(("List-Unsubscribe".into(), format!("<{url}>")));
            wire.headers.push((
                "List-Unsubscribe-Post".into(),
                "List-Unsubscribe=One-Click".into(),
            ));
        }
        if let Err(reason) = host_placeholder_free(&wire) {
            let reason = format!(
                "template `{}` v{}: {reason}",
                template.name, template.version
            );
            return self
                .finish(&message, DeliveryStatus::Failed, now, &reason)
                .map(|_| None);
        }
        Ok(Some(Ready {
            bound,
            outbox: message,
            wire,
            template_version: template.version,
        }))
    }

    /// The rendered message with its links: clicks tracked and the open pixel in the HTML, and
    /// the unsubscribe link in the body of a marketing message whose template did not place
    /// it.
    fn with_links(
        &self,
        message: &OutboxMessage,
        mut rendered: templates::Rendered,
        unsubscribe: Option<&str>,
    ) -> templates::Rendered {
        if let Some(html) = rendered.html.take() {
            let mut html = html;
            if let Some(url) = unsubscribe
                && !html.contains(url)
                && !html.contains(&super::links::escape(url))
            {
                let footer = format!("<p><a href=\"{url}\">Unsubscribe</a></p>");
                match html.rfind("</body>") {
                    Some(at) => html.insert_str(at, &footer),
                    None => html.push_str(&footer),
                }
            }
            rendered.html = Some(self.links.track_html(&message.id, &html, unsubscribe));
        }
        if let (Some(text), Some(url)) = (&mut rendered.text, unsubscribe)
            && !text.contains(url)
        {
            text.push_str(&format!("\n\nUnsubscribe: {url}\n"));
        }
        rendered
    }

    async fn send(self: Arc<Self>, ready: Ready) {
        let now = self.clock.now();
        let mut sending = DeliveryUpdate::new(&ready.outbox.id, DeliveryStatus::Sending, now);
        sending.due_at = ready.outbox.due_at;
        sending.recipient = Some(ready.wire.recipient.clone());
        sending.template_version = Some(ready.template_version);
        if let Err(error) = self.record(sending).await {
            tracing::error!(message = %ready.outbox.id, %error, "delivery: recording `sending` failed");
            return;
        }
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
        if let Err(error) = self.record(update).await {
            tracing::error!(message = %message.id, %error, "delivery: recording the outcome failed");
        }
    }

    async fn record(self: &Arc<Self>, update: DeliveryUpdate) -> Result<(), StoreError> {
        let me = self.clone();
        let started = Instant::now();
        let written = off_thread(move || me.write(&update)).await;
        self.costs.recorded(started.elapsed());
        written
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
    fn retry_later(
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
    fn hold(
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
    fn finish(
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

fn rate_reason(bound: &Bound) -> String {
    match bound.record.rate {
        Some(rate) => format!(
            "held for channel `{}`'s rate of {} per {} ms",
            bound.record.name, rate.messages, rate.per_ms
        ),
        None => format!("held for channel `{}`'s rate", bound.record.name),
    }
}

/// Placeholders the host writes secrets and signatures into. Nothing in a message may carry
/// one: a contact whose name is `{{secret:api_key}}` would otherwise get the provider's key in
/// the message the channel plugin builds from it. The whole message is checked as the plugin
/// gets it (content, recipient, headers, metadata), whatever put the text there.
const HOST_PLACEHOLDERS: [&str; 2] = ["{{secret:", "{{hmac-sha256:"];

fn host_placeholder_free(message: &Message) -> Result<(), String> {
    let headers = message.headers.iter().flat_map(|(n, v)| [n, v]);
    let metadata = message.metadata.iter().flat_map(|(k, v)| [k, v]);
    let mut fields = [&message.recipient, &message.contact_id, &message.id]
        .into_iter()
        .chain(message.subject.as_ref())
        .chain(message.text.as_ref())
        .chain(message.html.as_ref())
        .chain(headers)
        .chain(metadata);
    match fields.any(|field| HOST_PLACEHOLDERS.iter().any(|p| field.contains(p))) {
        true => Err("the message or its recipient contains `{{secret:` or `{{hmac-sha256:`, which the host would fill in; it is not sent".into()),
        false => Ok(()),
    }
}

/// The message as the channel plugin gets it.
fn wire_message(
    message: &OutboxMessage,
    recipient: &str,
    rendered: templates::Rendered,
    transactional: bool,
) -> Message {
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("template".into(), message.template.clone());
    if !message.test {
        metadata.insert("journey_id".into(), message.journey_id.clone());
        metadata.insert("node".into(), message.node.clone());
    }
    Message {
        id: message.id.clone(),
        contact_id: message.contact_id.clone(),
        recipient: recipient.to_owned(),
        class: if transactional {
            MessageClass::Transactional
        } else {
            MessageClass::Marketing
        },
        test: message.test,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        headers: Vec::new(),
        metadata,
    }
}
