//! [`MessageStore`] for the sled store.
//!
//! A message lives in the outbox under its contact (`<contact>\0<sequence>`), is found by id
//! through `message_ids`, and waits for an attempt in `deliveries`, keyed by when it is due. A
//! delivery step is written under the lock of the message's contact's partition, the lock a
//! merge holds while it moves the contact's messages, and reads the message afresh under it.

use super::StoreError;
use super::codec::{decode, encode};
use super::commit::{add_message, queue_event};
use super::layout::{TreeId, pair_key, prefix, time_from_ordered, timer_key};
use super::messaging::*;
use super::records::{AuditEntry, OutboxMessage, partition_of};
use super::sled_store::{SledStore, backend, lock};
use super::write_set::WriteSet;
use crate::model::{Event, Millis, Value};

fn template_key(name: &str, version: u32) -> Vec<u8> {
    let mut key = prefix(name);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

impl SledStore {
    /// The outbox key and the message with this id, as stored now.
    fn located(&self, id: &str) -> Result<Option<(sled::IVec, OutboxMessage)>, StoreError> {
        let Some(key) = self.message_ids.get(id.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        match self.outbox.get(&key).map_err(backend)? {
            Some(bytes) => Ok(Some((key, decode(&bytes)?))),
            None => Ok(None),
        }
    }
}

impl MessageStore for SledStore {
    fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.channels
            .get(name.as_bytes())
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.channels
            .iter()
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn put_channel(&self, record: &ChannelRecord, audit: AuditEntry) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Channels, record.name.as_bytes(), encode(record));
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<TemplateVersion>, StoreError> {
        let bytes = match version {
            Some(version) => self
                .templates
                .get(template_key(name, version))
                .map_err(backend)?,
            None => self
                .templates
                .scan_prefix(prefix(name))
                .values()
                .next_back()
                .transpose()
                .map_err(backend)?,
        };
        bytes.map(|bytes| decode(&bytes)).transpose()
    }

    fn template_versions(&self, name: &str) -> Result<Vec<TemplateVersion>, StoreError> {
        self.templates
            .scan_prefix(prefix(name))
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn templates(&self) -> Result<Vec<TemplateVersion>, StoreError> {
        let mut newest: Vec<TemplateVersion> = Vec::new();
        for bytes in self.templates.iter().values() {
            let template: TemplateVersion = decode(&bytes.map_err(backend)?)?;
            match newest.last_mut() {
                Some(last) if last.name == template.name => *last = template,
                _ => newest.push(template),
            }
        }
        Ok(newest)
    }

    fn add_template_version(
        &self,
        mut template: TemplateVersion,
        audit: AuditEntry,
    ) -> Result<TemplateVersion, StoreError> {
        let _operations = lock(&self.locks.operations);
        template.version = self
            .template(&template.name, None)?
            .map_or(1, |t| t.version + 1);
        let mut writes = WriteSet::new(self);
        writes.put(
            TreeId::Templates,
            template_key(&template.name, template.version),
            encode(&template),
        );
        self.audit_write(&mut writes, audit)?;
        writes.apply()?;
        Ok(template)
    }

    fn message(&self, id: &str) -> Result<Option<OutboxMessage>, StoreError> {
        Ok(self.located(id)?.map(|(_, message)| message))
    }

    fn due_messages(&self, now: Millis, limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        let mut due = Vec::new();
        for entry in self
            .deliveries
            .range(..timer_key(now.saturating_add(1), ""))
        {
            let (key, _) = entry.map_err(backend)?;
            let id = String::from_utf8_lossy(&key[8.min(key.len())..]).into_owned();
            match self.located(&id)? {
                Some((_, message)) if message.due_at == Some(time_from_ordered(&key)) => {
                    due.push(message)
                }
                // Due at another time: an entry left behind, or one a delivery step is
                // replacing right now. Removed only under the contact's lock, if still so.
                Some((_, message)) => {
                    let _contact = self.locks.partition(partition_of(&message.contact_id));
                    let stale = self
                        .located(&id)?
                        .is_none_or(|(_, now)| now.due_at != Some(time_from_ordered(&key)));
                    if stale {
                        self.deliveries.remove(&key).map_err(backend)?;
                    }
                }
                // No message behind it: nothing writes one that way (see
                // `commit::add_message`), so it is left rather than guessed at.
                None => {}
            }
            if due.len() == limit {
                break;
            }
        }
        Ok(due)
    }

    fn next_delivery_due(&self) -> Result<Option<Millis>, StoreError> {
        Ok(self
            .deliveries
            .first()
            .map_err(backend)?
            .map(|(key, _)| time_from_ordered(&key)))
    }

    fn record_delivery(&self, update: &DeliveryUpdate) -> Result<Vec<u8>, StoreError> {
        // The message's contact may be merged into another between reading where it is and
        // locking that contact's partition; then it is looked for again.
        let ((queued, news), channel) = loop {
            let Some((_, seen)) = self.located(&update.message_id)? else {
                return Err(StoreError::NotFound(format!(
                    "no message `{}`",
                    update.message_id
                )));
            };
            let _contact = self.locks.partition(partition_of(&seen.contact_id));
            let Some((key, mut message)) = self.located(&update.message_id)? else {
                continue;
            };
            if message.contact_id != seen.contact_id {
                continue;
            }
            break (
                self.write_delivery(key, &mut message, update)?,
                message.channel,
            );
        };
        // Outside the contact's lock: a channel's record is written under the operations
        // lock, which is never taken while a partition lock is held.
        // An alert is news only if the step was (not a worker's failure after the provider's
        // report of delivery).
        if update.alert && news {
            let _operations = lock(&self.locks.operations);
            if let Some(mut record) = self.channel(&channel)? {
                record.alert = Some(ChannelAlert {
                    at: update.at,
                    message_id: update.message_id.clone(),
                    reason: update.detail.clone(),
                });
                let mut writes = WriteSet::new(self);
                writes.put(TreeId::Channels, record.name.as_bytes(), encode(&record));
                writes.apply()?;
            }
        }
        Ok(queued)
    }

    fn queue_message(&self, message: &OutboxMessage) -> Result<(), StoreError> {
        let _contact = self.locks.partition(partition_of(&message.contact_id));
        let mut writes = WriteSet::new(self);
        add_message(self, &mut writes, message)?;
        writes.apply()
    }

    fn suppression(&self, channel: &str, address: &str) -> Result<Option<Suppression>, StoreError> {
        self.suppressions
            .get(pair_key(channel, address))
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }
}

impl SledStore {
    fn write_delivery(
        &self,
        key: sled::IVec,
        message: &mut OutboxMessage,
        update: &DeliveryUpdate,
    ) -> Result<(Vec<u8>, bool), StoreError> {
        // The worker claims a message by recording `sending`; one the provider has reported
        // delivered or bounced since the worker read it is not sent again.
        if update.status == DeliveryStatus::Sending && message.status.settled_by_provider() {
            return Err(StoreError::Conflict(format!(
                "message `{}` is {} already",
                message.id,
                message.status.as_str()
            )));
        }
        let mut writes = WriteSet::new(self);
        if let Some(due_at) = message.due_at {
            writes.remove(TreeId::Deliveries, timer_key(due_at, &message.id));
        }
        let news = update.apply_to(message);
        if let Some(due_at) = message.due_at {
            writes.put(
                TreeId::Deliveries,
                timer_key(due_at, &message.id),
                Vec::new(),
            );
        }
        writes.put(TreeId::Outbox, key.to_vec(), encode(&*message));
        if let (Some(kind), Some(address)) = (update.suppress, &message.recipient) {
            let key = pair_key(&message.channel, address);
            // A bounce outranks a complaint: the address stays closed to everything.
            let kept = match self.suppressions.get(&key).map_err(backend)? {
                Some(stored) => decode::<Suppression>(&stored)?.kind == SuppressionKind::Bounced,
                None => false,
            };
            if !kept || kind == SuppressionKind::Bounced {
                let suppression = Suppression {
                    channel: message.channel.clone(),
                    address: address.clone(),
                    kind,
                    reason: update.detail.clone(),
                    message_id: message.id.clone(),
                    at: update.at,
                };
                writes.put(TreeId::Suppressions, key, encode(&suppression));
            }
        }
        let mut queued = Vec::new();
        if let Some(name) = update.event.as_ref().filter(|_| news) {
            queued.extend(queue_event(
                &mut writes,
                &delivery_event(message, name, update),
            )?);
        }
        writes.apply()?;
        Ok((queued, news))
    }
}

/// The event a delivery step records on the contact (`email_sent` and the like), with why
/// when its step says.
fn delivery_event(message: &OutboxMessage, name: &str, update: &DeliveryUpdate) -> Event {
    let mut event = message.event(name, format!("{}:{name}", message.id), update.at);
    if let Some(step) = message.history.last().filter(|s| !s.detail.is_empty()) {
        event
            .properties
            .insert("reason".into(), Value::Text(step.detail.clone()));
    }
    event
}
