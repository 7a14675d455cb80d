//! What providers report back through `POST /v1/webhooks/{channel}`: the channel plugin checks
//! the request's signature and reads it (`parse-webhook`), and each report about one of this
//! channel's messages becomes a step in its history and an event on its contact.
//!
//! A report names its message by Wayline's id (providers echo it back from custom arguments
//! or a tag; the SMTP plugin derives the `Message-ID` from it). A report about a message of
//! another channel, or one this server never sent, is ignored and counted, never applied: a
//! provider's webhook can speak only for its own channel.

use serde::Serialize;

use super::{Messaging, MessagingError};
use crate::model::{ProviderEvent, ProviderEventKind, WebhookRejection, WebhookRequest};
use crate::store::{
    COMPLAINT_REASON, DeliveryStatus, DeliveryUpdate, OutboxMessage, SuppressionKind,
};

/// Bytes of a plugin's reason for refusing a malformed request that the answer carries.
const MALFORMED_SHOWN: usize = 300;

/// What a webhook request came to.
#[derive(Debug, Default, Serialize)]
pub struct WebhookReceipt {
    /// Reports applied to a message.
    pub accepted: usize,
    /// Reports about no message of this channel.
    pub ignored: usize,
}

/// A report that is about a contact's engagement rather than the delivery itself: the caller
/// records it the way a tracked open, click or unsubscribe is recorded.
#[derive(Debug)]
pub struct Engagement {
    pub kind: ProviderEventKind,
    pub message: OutboxMessage,
    pub url: Option<String>,
}

impl Messaging {
    /// Read `request` with `channel`'s plugin and apply what it reports about delivery
    /// (delivered, bounced, complaint); opens, clicks and unsubscribes come back for the
    /// caller to record as tracking does.
    pub async fn webhook(
        self: &std::sync::Arc<Self>,
        channel: &str,
        request: WebhookRequest,
    ) -> Result<(WebhookReceipt, Vec<Engagement>), MessagingError> {
        // Public: whoever posts learns no more than whether the channel takes webhooks.
        let bound = self.bound(channel).map_err(|why| {
            tracing::debug!(channel, why, "webhook for a channel that cannot read it");
            MessagingError::NotFound(
                "channel_not_found",
                format!("no channel `{channel}` reads webhooks here"),
            )
        })?;
        if !bound.plugin.reads_webhooks() {
            return Err(MessagingError::NotFound(
                "webhooks_not_supported",
                format!(
                    "channel `{channel}`'s plugin reads no webhooks (a wayline:plugin@0.2.0 channel does)"
                ),
            ));
        }
        let Ok(_permit) = bound.webhooks.try_acquire() else {
            return Err(MessagingError::Busy(
                "webhook_busy",
                format!("channel `{channel}` is reading as many webhooks as it can; retry"),
            ));
        };
        let report = self
            .runtime
            .parse_webhook(
                &bound.plugin,
                Some(bound.egress.clone()),
                &bound.config,
                &request,
            )
            .await;
        let events = match report.result {
            Ok(Ok(events)) => events,
            Ok(Err(WebhookRejection::Unauthenticated(why))) => {
                tracing::debug!(
                    channel,
                    why,
                    "webhook refused: not the provider's signature"
                );
                return Err(MessagingError::Unauthenticated(
                    "the request does not carry the provider's valid signature".into(),
                ));
            }
            Ok(Err(WebhookRejection::Malformed(why))) => {
                // For whoever integrates the provider; short, as anyone may post here.
                let why = crate::store::truncated(&why, MALFORMED_SHOWN);
                return Err(MessagingError::Invalid("webhook_malformed", why));
            }
            Err(error) => {
                // What went wrong inside the plugin is for the operator, not for whoever
                // posted: the log has it, the answer says only that the provider may retry.
                tracing::warn!(
                    channel,
                    plugin = bound.plugin.id(),
                    code = error.code(),
                    %error,
                    "a channel plugin failed to read a webhook"
                );
                return Err(MessagingError::Unavailable(
                    "webhook_failed",
                    "the channel could not read this request now; retry later".to_owned(),
                ));
            }
        };
        let me = self.clone();
        let channel = channel.to_owned();
        tokio::task::spawn_blocking(move || me.apply(&channel, events))
            .await
            .map_err(|panic| {
                MessagingError::Store(crate::store::StoreError::Backend(format!(
                    "applying a webhook panicked: {panic}"
                )))
            })?
    }

    /// Apply the delivery reports among `events` to this channel's messages.
    fn apply(
        &self,
        channel: &str,
        events: Vec<ProviderEvent>,
    ) -> Result<(WebhookReceipt, Vec<Engagement>), MessagingError> {
        let mut receipt = WebhookReceipt::default();
        let mut engagements = Vec::new();
        for event in events {
            let message = match &event.message_id {
                Some(id) => self.store.message(id)?,
                None => None,
            };
            let Some(message) = message.filter(|m| m.channel == channel && !m.test) else {
                receipt.ignored += 1;
                continue;
            };
            receipt.accepted += 1;
            match event.kind {
                ProviderEventKind::Delivered
                | ProviderEventKind::Bounced
                | ProviderEventKind::Complaint => {
                    if already(&message, event.kind) {
                        continue;
                    }
                    let update = self.reported(&message, &event);
                    let partitions = self.store.record_delivery(&update)?;
                    self.scheduler.notify(&partitions);
                }
                kind => engagements.push(Engagement {
                    kind,
                    message,
                    url: event.url,
                }),
            }
        }
        Ok((receipt, engagements))
    }

    /// The step a delivery report adds to `message`'s history.
    fn reported(&self, message: &OutboxMessage, event: &ProviderEvent) -> DeliveryUpdate {
        let now = self.clock.now();
        let channel = &message.channel;
        let reason = event.reason.as_deref().unwrap_or_default();
        let (status, name, detail) = match event.kind {
            ProviderEventKind::Delivered => (
                DeliveryStatus::Delivered,
                format!("{channel}_delivered"),
                "the provider reports it delivered".to_owned(),
            ),
            ProviderEventKind::Bounced => (
                DeliveryStatus::Bounced,
                format!("{channel}_bounced"),
                format!("the provider reports a bounce: {reason}"),
            ),
            // A complaint leaves where the message got to (and when it is due, if it still
            // is), and stops marketing to the address.
            _ => (
                message.status,
                "complaint".to_owned(),
                format!("{COMPLAINT_REASON}: {reason}"),
            ),
        };
        let mut update = DeliveryUpdate::new(&message.id, status, now);
        update.detail = detail;
        update.event = Some(name);
        update.suppress = match event.kind {
            ProviderEventKind::Bounced => Some(SuppressionKind::Bounced),
            ProviderEventKind::Complaint => Some(SuppressionKind::Complaint),
            _ => None,
        };
        update.note_only = event.kind == ProviderEventKind::Complaint;
        if let Some(provider_id) = &event.provider_id {
            update.provider_id = Some(provider_id.clone());
        }
        update
    }
}

/// Whether a report of `kind` has nothing to add to `message`: providers send a report again
/// until they see a 2xx, and a repeat changes nothing; and a message that was suppressed was
/// never handed to the provider, so no report can be about it.
fn already(message: &OutboxMessage, kind: ProviderEventKind) -> bool {
    use DeliveryStatus::{Bounced, Delivered, Suppressed};
    match kind {
        ProviderEventKind::Delivered => matches!(message.status, Delivered | Bounced | Suppressed),
        ProviderEventKind::Bounced => matches!(message.status, Bounced | Suppressed),
        ProviderEventKind::Complaint => message
            .history
            .iter()
            .any(|step| step.detail.starts_with(COMPLAINT_REASON)),
        _ => false,
    }
}
