//! [`MessageStore`] for the sled store.
//!
//! A message lives in the outbox under its contact (`<contact>\0<sequence>`), is found by id
//! through `message_ids`, and waits for an attempt in `deliveries`, keyed by when it is due. A
//! batch of delivery steps is one write set, made under the locks of its messages' contacts'
//! partitions (the locks a merge holds while it moves a contact's messages), reading each
//! message afresh under them and through the steps before it in the batch.

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

    fn approve_template(
        &self,
        template: &TemplateVersion,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let key = template_key(&template.name, template.version);
        if self.templates.get(&key).map_err(backend)?.is_none() {
            return Err(StoreError::NotFound(format!(
                "template `{}` has no version {}",
                template.name, template.version
            )));
        }
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Templates, key, encode(template));
        self.audit_write(&mut writes, audit)?;
        writes.apply()
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
                        let gate = self.write_gate();
                        let mut log = gate.as_ref().map(|tap| tap.hold());
                        self.deliveries.remove(&key).map_err(backend)?;
                        if let Some(log) = log.as_mut() {
                            log.note(TreeId::Deliveries, &key, None);
                        }
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

    fn record_deliveries(
        &self,
        updates: &[DeliveryUpdate],
    ) -> Result<DeliveriesRecorded, StoreError> {
        // Where each message is now, and so whose partitions to lock; a message whose contact
        // is merged into another between this look and the locks is looked for again.
        let (recorded, alerts) = loop {
            let seen: Vec<Option<String>> = updates
                .iter()
                .map(|update| {
                    self.located(&update.message_id)
                        .ok()
                        .flatten()
                        .map(|(_, message)| message.contact_id)
                })
                .collect();
            let mut partitions: Vec<u8> = seen.iter().flatten().map(|c| partition_of(c)).collect();
            partitions.sort_unstable();
            partitions.dedup();
            let contacts = self.locks.partitions(&partitions);
            match self.write_deliveries(updates, &seen) {
                Ok(Some(done)) => break done,
                Ok(None) => {}
                // One step too large for its record (refused before anything was written)
                // must not keep the others from being recorded: each on its own, then.
                Err(StoreError::TooLarge { .. }) if updates.len() > 1 => {
                    drop(contacts);
                    return self.one_by_one(updates);
                }
                Err(error) => return Err(error),
            }
        };
        // Outside the contacts' locks: a channel's record is written under the operations
        // lock, which is never taken while a partition lock is held.
        if !alerts.is_empty() {
            let _operations = lock(&self.locks.operations);
            for (channel, alert) in alerts {
                if let Some(mut record) = self.channel(&channel)? {
                    record.alert = Some(alert);
                    let mut writes = WriteSet::new(self);
                    writes.put(TreeId::Channels, record.name.as_bytes(), encode(&record));
                    writes.apply()?;
                }
            }
        }
        Ok(recorded)
    }

    fn queue_message(&self, message: &OutboxMessage) -> Result<(), StoreError> {
        let _contact = self.locks.partition(partition_of(&message.contact_id));
        let mut writes = WriteSet::new(self);
        add_message(self, &mut writes, message)?;
        writes.apply()
    }

    fn send_window(&self, channel: &str) -> Result<Option<SavedWindow>, StoreError> {
        self.send_windows
            .get(channel.as_bytes())
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn save_send_window(&self, channel: &str, window: &SavedWindow) -> Result<(), StoreError> {
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::SendWindows, channel.as_bytes(), encode(window));
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
    fn one_by_one(&self, updates: &[DeliveryUpdate]) -> Result<DeliveriesRecorded, StoreError> {
        let mut recorded = DeliveriesRecorded::default();
        for update in updates {
            match self.record_deliveries(std::slice::from_ref(update)) {
                Ok(mut one) => {
                    recorded.steps.append(&mut one.steps);
                    recorded.partitions.append(&mut one.partitions);
                }
                Err(error @ StoreError::TooLarge { .. }) => recorded.steps.push(Err(error)),
                Err(error) => return Err(error),
            }
        }
        recorded.partitions.sort_unstable();
        recorded.partitions.dedup();
        Ok(recorded)
    }
}

/// The channel alerts a batch of steps raised, to be written after it.
type Alerts = Vec<(String, ChannelAlert)>;

impl SledStore {
    /// Write `updates` in one set, under the locks of the partitions their messages were
    /// `seen` in; `None` when a message has moved to another contact since (nothing written).
    fn write_deliveries(
        &self,
        updates: &[DeliveryUpdate],
        seen: &[Option<String>],
    ) -> Result<Option<(DeliveriesRecorded, Alerts)>, StoreError> {
        // Held from reading an address's suppression to writing it.
        let _suppressions = updates
            .iter()
            .any(|update| update.suppress.is_some())
            .then(|| lock(&self.locks.suppressions));
        let mut writes = WriteSet::new(self);
        let mut recorded = DeliveriesRecorded::default();
        let mut alerts = Alerts::new();
        for (update, contact) in updates.iter().zip(seen) {
            let Some(contact) = contact else {
                recorded.steps.push(Err(StoreError::NotFound(format!(
                    "no message `{}`",
                    update.message_id
                ))));
                continue;
            };
            let located = match self.located_in(&writes, &update.message_id) {
                Ok(Some(located)) if &located.1.contact_id == contact => located,
                // Gone or moved since it was seen: looked for again.
                Ok(_) => return Ok(None),
                Err(error) => {
                    recorded.steps.push(Err(error));
                    continue;
                }
            };
            let (key, mut message) = located;
            match self.write_delivery(&mut writes, key, &mut message, update) {
                Ok((queued, news)) => {
                    recorded.partitions.extend(queued);
                    // An alert is news only if the step was (not a worker's failure after the
                    // provider's report of delivery).
                    if update.alert && news {
                        let alert = ChannelAlert {
                            at: update.at,
                            message_id: update.message_id.clone(),
                            reason: update.kept_detail(),
                        };
                        alerts.push((message.channel, alert));
                    }
                    recorded.steps.push(Ok(()));
                }
                Err(error @ (StoreError::Conflict(_) | StoreError::Corrupt(_))) => {
                    recorded.steps.push(Err(error))
                }
                Err(error) => return Err(error),
            }
        }
        writes.apply()?;
        recorded.partitions.sort_unstable();
        recorded.partitions.dedup();
        Ok(Some((recorded, alerts)))
    }

    /// [`SledStore::located`], seeing the steps `writes` holds already.
    fn located_in(
        &self,
        writes: &WriteSet<'_>,
        id: &str,
    ) -> Result<Option<(sled::IVec, OutboxMessage)>, StoreError> {
        let Some(key) = self.message_ids.get(id.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        match writes.get(TreeId::Outbox, &key)? {
            Some(bytes) => Ok(Some((key, decode(&bytes)?))),
            None => Ok(None),
        }
    }

    /// Add one step to `writes`: the message, its place on the delivery queue, and its
    /// suppression and event; whether the step was news. Nothing is added when it fails.
    fn write_delivery(
        &self,
        writes: &mut WriteSet<'_>,
        key: sled::IVec,
        message: &mut OutboxMessage,
        update: &DeliveryUpdate,
    ) -> Result<(Option<u8>, bool), StoreError> {
        // The worker claims a message by recording `sending`; one the provider has reported
        // delivered or bounced since the worker read it is not sent again.
        if update.status == DeliveryStatus::Sending && message.status.settled_by_provider() {
            return Err(StoreError::Conflict(format!(
                "message `{}` is {} already",
                message.id,
                message.status.as_str()
            )));
        }
        // The address the message will have gone to once this step is applied.
        let address = update.recipient.as_ref().or(message.recipient.as_ref());
        let suppression_key = match (update.suppress, address) {
            (Some(_), Some(address)) => Some(pair_key(&message.channel, address)),
            _ => None,
        };
        // A bounce outranks a complaint: the address stays closed to everything.
        let bounced_already = match &suppression_key {
            Some(key) => match writes.get(TreeId::Suppressions, key)? {
                Some(stored) => decode::<Suppression>(&stored)?.kind == SuppressionKind::Bounced,
                None => false,
            },
            None => false,
        };
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
        if let (Some(kind), Some(key), Some(address)) =
            (update.suppress, suppression_key, &message.recipient)
            && (!bounced_already || kind == SuppressionKind::Bounced)
        {
            let suppression = Suppression {
                channel: message.channel.clone(),
                address: address.clone(),
                kind,
                reason: update.kept_detail(),
                message_id: message.id.clone(),
                at: update.at,
            };
            writes.put(TreeId::Suppressions, key, encode(&suppression));
        }
        let queued = match update.event.as_ref().filter(|_| news) {
            Some(name) => queue_event(writes, &delivery_event(message, name, update))?,
            None => None,
        };
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
