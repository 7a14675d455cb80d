//! What the store keeps for messaging: channel bindings, template versions, where each message
//! is in its delivery, and the addresses nothing more may be sent to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::records::{AuditEntry, OutboxMessage};
use crate::model::{Attributes, Event, Millis, Value};

/// Where a message is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Written by a version that did not deliver; never queued for delivery.
    Pending,
    /// Waiting for its first attempt.
    Queued,
    /// Handed to the channel plugin; a crash now sends it again with the same id.
    Sending,
    /// The provider accepted it.
    Sent,
    /// The provider says it reached the recipient.
    Delivered,
    /// The recipient's address does not take messages; later sends there are suppressed.
    Bounced,
    /// It will not be sent: a permanent failure, or retries ran out.
    Failed,
    /// Not sent, on purpose: no consent, opted out, a suppressed address, a test-only channel.
    Suppressed,
    /// Waiting for a later attempt (a retry, a rate limit, a channel not bound yet).
    Deferred,
}

impl DeliveryStatus {
    /// Whether nothing more will happen to the message.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Sent
                | DeliveryStatus::Delivered
                | DeliveryStatus::Bounced
                | DeliveryStatus::Failed
                | DeliveryStatus::Suppressed
        )
    }

    /// Whether the provider has said where the message ended (delivered, bounced): nothing
    /// the worker records after that moves it.
    pub fn settled_by_provider(self) -> bool {
        matches!(self, DeliveryStatus::Delivered | DeliveryStatus::Bounced)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Bounced => "bounced",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Deferred => "deferred",
        }
    }
}

/// One step of a message's delivery, as its history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStep {
    #[serde(with = "crate::model::timestamp_json")]
    pub at: Millis,
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Most steps a message's history keeps: the first and the latest.
pub const DELIVERY_STEPS_KEPT: usize = 24;
/// Longest detail a step keeps.
const DETAIL_KEPT: usize = 512;
/// Longest provider id kept for a message.
const PROVIDER_ID_KEPT: usize = 256;

/// `text` cut to at most `limit` bytes, on a character boundary.
fn cut(text: &str, limit: usize) -> String {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A change to a message's delivery, applied to the stored message under its contact's lock.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    pub message_id: String,
    pub status: DeliveryStatus,
    pub at: Millis,
    pub detail: String,
    /// When to try again; `None` takes the message off the delivery queue.
    pub due_at: Option<Millis>,
    /// Whether this update is the end of an attempt (counted in `attempts`).
    pub attempted: bool,
    pub recipient: Option<String>,
    pub template_version: Option<u32>,
    pub provider_id: Option<String>,
    /// An event to record on the message's contact (`email_sent`), carrying the message.
    pub event: Option<String>,
    /// Suppress later sends on the message's channel to its recipient, with `detail` as why.
    pub suppress: Option<SuppressionKind>,
    /// Raise an alert on the message's channel, with `detail` as why.
    pub alert: bool,
    /// Only a step in the history (a complaint): the status and due time stay as they are.
    pub note_only: bool,
}

/// What [`MessageStore::record_deliveries`] made of its steps.
#[derive(Debug, Default)]
pub struct DeliveriesRecorded {
    /// One per step, in their order.
    pub steps: Vec<Result<(), StoreError>>,
    /// The partitions whose inboxes got an event, each once.
    pub partitions: Vec<u8>,
}

impl DeliveryUpdate {
    pub fn new(message_id: &str, status: DeliveryStatus, at: Millis) -> Self {
        DeliveryUpdate {
            message_id: message_id.to_owned(),
            status,
            at,
            detail: String::new(),
            due_at: None,
            attempted: false,
            recipient: None,
            template_version: None,
            provider_id: None,
            event: None,
            suppress: None,
            alert: false,
            note_only: false,
        }
    }

    /// Apply to the stored message; whether the update's event is still true of it.
    ///
    /// A provider's report that the message was delivered or bounced settles it: the worker's
    /// own later record of the attempt (sent, deferred, failed: its call may have returned or
    /// timed out after the provider's webhook came) joins the history but neither changes the
    /// status nor puts the message back on the queue, so it is not sent again; of those, only
    /// "sent" is still true.
    /// The detail as it is stored, in the history, a suppression or an alert: a plugin's
    /// failure text can be long, and no record it goes into may grow past its bound.
    pub(super) fn kept_detail(&self) -> String {
        cut(&self.detail, DETAIL_KEPT)
    }

    pub(super) fn apply_to(&self, message: &mut OutboxMessage) -> bool {
        let settled = !self.note_only
            && message.status.settled_by_provider()
            && !self.status.settled_by_provider();
        let step_status = if self.note_only {
            message.status
        } else {
            self.status
        };
        if settled {
            message.due_at = None;
        } else if !self.note_only {
            message.status = self.status;
            message.due_at = self.due_at;
        }
        if self.attempted {
            message.attempts += 1;
        }
        if let Some(recipient) = &self.recipient {
            message.recipient = Some(recipient.clone());
        }
        if let Some(version) = self.template_version {
            message.template_version = Some(version);
        }
        if let Some(id) = &self.provider_id {
            message.provider_id = Some(cut(id, PROVIDER_ID_KEPT));
        }
        message.history.push(DeliveryStep {
            at: self.at,
            status: step_status,
            detail: self.kept_detail(),
        });
        if message.history.len() > DELIVERY_STEPS_KEPT {
            message.history.remove(1);
        }
        !settled || self.status == DeliveryStatus::Sent
    }
}

impl OutboxMessage {
    /// An event on the message's contact about the message (`email_sent`, `email_opened`),
    /// carrying the message, its channel, template, journey and node, so a journey can wait
    /// for it or branch on it. `id` makes it once-only: the same id is recorded once.
    pub fn event(&self, name: &str, id: String, at: Millis) -> Event {
        let mut properties = Attributes::new();
        let text = |s: &str| Value::Text(s.to_owned());
        properties.insert("message_id".into(), text(&self.id));
        properties.insert("channel".into(), text(&self.channel));
        properties.insert("template".into(), text(&self.template));
        properties.insert("journey_id".into(), text(&self.journey_id));
        properties.insert("node".into(), text(&self.node));
        Event {
            id,
            contact_id: self.contact_id.clone(),
            name: name.to_owned(),
            properties,
            timestamp: at,
            depth: 0,
        }
    }
}

/// A channel name bound to a plugin, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub name: String,
    /// `name@version` of the channel plugin.
    pub plugin: String,
    /// As the operator wrote it; checked by the plugin's `validate-config`.
    pub config: serde_json::Value,
    /// The contact attribute that holds the address; `None` sends to the contact's id.
    pub recipient: Option<String>,
    /// The consent that governs marketing messages here; the channel's name when `None`.
    pub consent: Option<String>,
    pub approved_hosts: Vec<String>,
    pub secrets: BTreeMap<String, SealedSecret>,
    pub rate: Option<Rate>,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    #[serde(with = "crate::model::timestamp_json")]
    pub updated_at: Millis,
    /// 1 for the first binding, one more for each change.
    pub revision: u32,
    /// The last permanent failure, until the binding is changed.
    #[serde(default)]
    pub alert: Option<ChannelAlert>,
    /// Frequency caps on marketing messages; the default caps when `None`.
    #[serde(default)]
    pub caps: Option<Vec<Cap>>,
    #[serde(default)]
    pub when_capped: WhenCapped,
    /// The hours of the contact's day marketing messages may arrive; any hour when `None`.
    #[serde(default)]
    pub send_hours: Option<SendHours>,
}

/// What a cap counts: every message of the channel, those of one journey, or those of one
/// template (one touchpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapScope {
    Channel,
    Journey,
    Template,
}

/// At most `messages` messages in any `per_ms` to one contact, counted over `scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cap {
    pub messages: u32,
    pub per_ms: Millis,
    pub scope: CapScope,
}

/// What becomes of a capped message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenCapped {
    /// Deferred until the cap lets it go.
    #[default]
    Defer,
    /// Suppressed, with the cap as the reason.
    Drop,
}

/// The hours of the contact's day a message may arrive, `from` to `to` (`to` before `from`
/// wraps past midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendHours {
    pub from: String,
    pub to: String,
}

/// A secret's value, sealed with the server's key, and the targets it may go to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub hosts: Vec<String>,
    /// Usable to check the provider's webhook signatures (see `SecretSetting`).
    #[serde(default)]
    pub verifies_webhooks: bool,
    /// Base64 of nonce and ciphertext (see `messaging::sealing`).
    pub sealed: String,
}

/// At most `messages` sends per `per_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub messages: u32,
    pub per_ms: i64,
}

/// Why a channel needs its operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelAlert {
    #[serde(with = "crate::model::timestamp_json")]
    pub at: Millis,
    pub message_id: String,
    pub reason: String,
}

/// One version of a template. Versions are never rewritten: a journey pins the one it was
/// published with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateVersion {
    pub name: String,
    pub version: u32,
    /// The channel it is written for.
    pub channel: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// Transactional messages (a receipt, a password reset) need no marketing consent.
    #[serde(default)]
    pub transactional: bool,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    /// The token that wrote it (`start-up` for the example templates); none for versions
    /// written before authors were kept.
    #[serde(default)]
    pub created_by: Option<String>,
    /// The manager's token that approved it for sending, where content approval is on.
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default, with = "crate::model::timestamp_json::option")]
    pub approved_at: Option<Millis>,
}

/// An address on a channel that no more is sent to, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    pub channel: String,
    pub address: String,
    /// Records from before kinds were kept read as bounces; see [`Suppression::blocks`] for
    /// the complaints among them.
    #[serde(default)]
    pub kind: SuppressionKind,
    pub reason: String,
    pub message_id: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub at: Millis,
}

impl Suppression {
    /// Whether it keeps a message of this class from its address. A record from before kinds
    /// were kept says what it was only in its reason: a complaint's starts as below.
    pub fn blocks(&self, transactional: bool) -> bool {
        let kind = match self.kind {
            SuppressionKind::Bounced if self.reason.starts_with(COMPLAINT_REASON) => {
                SuppressionKind::Complaint
            }
            kind => kind,
        };
        kind.blocks(transactional)
    }
}

/// How a complaint's step (and its suppression) begins its reason.
pub const COMPLAINT_REASON: &str = "the recipient reported it as spam";

/// Why an address is suppressed, which decides what it still receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionKind {
    /// The address does not take mail: nothing is sent to it, transactional or not.
    #[default]
    Bounced,
    /// The recipient reported a message as spam: no more marketing, but a receipt or a
    /// password reset they ask for still goes.
    Complaint,
}

impl SuppressionKind {
    /// Whether a message of this class may still go to a suppressed address.
    pub fn blocks(self, transactional: bool) -> bool {
        match self {
            SuppressionKind::Bounced => true,
            SuppressionKind::Complaint => !transactional,
        }
    }
}

/// Messaging's durable state. The messaging module writes it; journeys only add messages.
pub trait MessageStore {
    fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError>;
    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;
    /// Create or replace a binding, and record who did it.
    fn put_channel(&self, record: &ChannelRecord, audit: AuditEntry) -> Result<(), StoreError>;

    /// A version of a template; the newest when `version` is `None`.
    fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<TemplateVersion>, StoreError>;
    /// Every version of a template, oldest first.
    fn template_versions(&self, name: &str) -> Result<Vec<TemplateVersion>, StoreError>;
    /// The newest version of every template.
    fn templates(&self) -> Result<Vec<TemplateVersion>, StoreError>;
    /// Store `template` as its name's next version (its `version` is set here), and record it.
    fn add_template_version(
        &self,
        template: TemplateVersion,
        audit: AuditEntry,
    ) -> Result<TemplateVersion, StoreError>;
    /// Mark a stored template version approved (its content unchanged), and record it.
    fn approve_template(
        &self,
        template: &TemplateVersion,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;

    /// A message by id.
    fn message(&self, id: &str) -> Result<Option<OutboxMessage>, StoreError>;
    /// Up to `limit` messages due for an attempt at `now`, earliest first.
    fn due_messages(&self, now: Millis, limit: usize) -> Result<Vec<OutboxMessage>, StoreError>;
    /// When the earliest queued message is due.
    fn next_delivery_due(&self) -> Result<Option<Millis>, StoreError>;
    /// Apply delivery steps to their messages, each with its event, suppression and alert, in
    /// one write: what became of each step, and the partitions that got work (the events). A
    /// step refused (`NotFound`, or `Conflict` for a claim on a message the provider settled)
    /// does not stop the others; an error of the store does.
    fn record_deliveries(
        &self,
        updates: &[DeliveryUpdate],
    ) -> Result<DeliveriesRecorded, StoreError>;
    /// One delivery step, as [`MessageStore::record_deliveries`]; the partitions that got work.
    fn record_delivery(&self, update: &DeliveryUpdate) -> Result<Vec<u8>, StoreError> {
        let mut recorded = self.record_deliveries(std::slice::from_ref(update))?;
        recorded.steps.pop().expect("one result per step")?;
        Ok(recorded.partitions)
    }
    /// Queue a message made outside a journey (a test send).
    fn queue_message(&self, message: &OutboxMessage) -> Result<(), StoreError>;
    /// Why nothing is sent to `address` on `channel`, if so.
    fn suppression(&self, channel: &str, address: &str) -> Result<Option<Suppression>, StoreError>;
    /// The sends `channel`'s rate window remembered when it was last saved.
    fn send_window(&self, channel: &str) -> Result<Option<SavedWindow>, StoreError>;
    fn save_send_window(&self, channel: &str, window: &SavedWindow) -> Result<(), StoreError>;
}

/// A channel's recent sends, as its rate window saves them: counts per slice of the window,
/// each slice by when it ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedWindow {
    /// `(slice end, sends in the slice)`, oldest first.
    pub slices: Vec<(Millis, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sending() -> OutboxMessage {
        OutboxMessage {
            id: "m1".into(),
            contact_id: "lin".into(),
            channel: "email".into(),
            template: "welcome".into(),
            variables: Attributes::new(),
            journey_id: "welcome".into(),
            version: 1,
            node: "welcome-email".into(),
            enrollment_id: "e1".into(),
            created_at: 0,
            status: DeliveryStatus::Sending,
            template_version: Some(1),
            attempts: 0,
            due_at: Some(60_000),
            recipient: Some("lin@example.com".into()),
            provider_id: None,
            history: Vec::new(),
            test: false,
        }
    }

    #[test]
    fn a_delivery_report_that_beats_the_workers_record_is_not_undone_by_it() {
        let mut message = sending();
        let delivered = DeliveryUpdate::new("m1", DeliveryStatus::Delivered, 10);
        assert!(delivered.apply_to(&mut message));
        // The worker's call returns after the webhook: "sent" is still news, but the message
        // stays delivered and off the queue.
        let mut sent = DeliveryUpdate::new("m1", DeliveryStatus::Sent, 11);
        sent.attempted = true;
        assert!(sent.apply_to(&mut message));
        assert_eq!(message.status, DeliveryStatus::Delivered);
        assert_eq!(message.due_at, None);
        // Or its call timed out and it would try again: it does not.
        let mut deferred = DeliveryUpdate::new("m1", DeliveryStatus::Deferred, 12);
        deferred.due_at = Some(120_000);
        assert!(!deferred.apply_to(&mut message));
        assert_eq!(message.status, DeliveryStatus::Delivered);
        assert_eq!(message.due_at, None);
        // A bounce reported after delivery still counts.
        assert!(DeliveryUpdate::new("m1", DeliveryStatus::Bounced, 13).apply_to(&mut message));
        assert_eq!(message.status, DeliveryStatus::Bounced);
        let steps: Vec<_> = message.history.iter().map(|s| s.status).collect();
        use DeliveryStatus::*;
        assert_eq!(steps, [Delivered, Sent, Deferred, Bounced]);
    }

    #[test]
    fn a_complaint_about_a_waiting_message_leaves_it_waiting() {
        let mut message = sending();
        message.status = DeliveryStatus::Deferred;
        let mut complaint = DeliveryUpdate::new("m1", DeliveryStatus::Queued, 10);
        complaint.note_only = true;
        complaint.suppress = Some(SuppressionKind::Complaint);
        assert!(complaint.apply_to(&mut message));
        assert_eq!(message.status, DeliveryStatus::Deferred);
        assert_eq!(message.due_at, Some(60_000));
        assert_eq!(message.history[0].status, DeliveryStatus::Deferred);
    }
}
