//! Deciding what a due message comes to before any plugin sees it: the rules every send obeys
//! (consent, suppressed addresses, frequency caps, send hours, the channel's rate), the render
//! with its tracked links and unsubscribe headers, and the last check that nothing in the
//! message is a placeholder the host would fill with a secret. What is not sent is recorded
//! with its reason; what is, comes back [`Ready`] for the worker (`delivery`).

use std::collections::HashMap;
use std::sync::Arc;

use super::Messaging;
use super::channels::Bound;
use super::{rules, templates};
use crate::model::{ConsentState, Message, MessageClass, Millis, Value};
use crate::store::{DeliveryStatus, OutboxMessage, StoreError, WhenCapped};

/// What one batch has decided so far, for the decisions after it.
#[derive(Default)]
struct Batch {
    /// Per channel, when the last message held for its rate goes.
    held: HashMap<String, Millis>,
    /// Per contact and channel, the messages this batch is sending: `(at, journey, template)`,
    /// counted by the frequency caps with those sent before.
    going: HashMap<(String, String), Vec<rules::Going>>,
    /// The channels whose rate window this batch took sends from, to be saved before they go.
    windows: HashMap<String, Arc<Bound>>,
}

/// A message ready to hand to its channel plugin.
pub(super) struct Ready {
    pub(super) bound: Arc<Bound>,
    pub(super) outbox: OutboxMessage,
    pub(super) wire: Message,
    pub(super) template_version: u32,
}

impl Messaging {
    /// Decide each due message, in due order: the ones to send now, ready; the others (no
    /// consent, a suppressed address, over the rate, a channel that cannot send, a render that
    /// fails) recorded as such.
    /// Also how many could not be decided (their step not recorded), which stay due.
    pub(super) fn prepare_all(&self, due: Vec<OutboxMessage>, now: Millis) -> (Vec<Ready>, usize) {
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
        // The rate windows reach the disk before their sends go: a crash or a new binding
        // then remembers them (see `rate`). A channel whose window cannot be saved sends
        // nothing of this batch; its messages stay due.
        let mut unsaved = Vec::new();
        for (channel, bound) in &batch.windows {
            let window = bound.bucket.lock().expect("rate lock").saved();
            if let Err(error) = self
                .store
                .save_send_window(channel, &window)
                .and_then(|()| self.store.flush())
            {
                tracing::error!(%channel, %error, "delivery: saving the rate window failed");
                unsaved.push(channel.as_str());
            }
        }
        if !unsaved.is_empty() {
            let before = ready.len();
            ready.retain(|r| !unsaved.contains(&r.outbox.channel.as_str()));
            failed += before - ready.len();
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
        // A send its journey did not pin at publish (a plugin chose the template) takes the
        // newest version, and where content approval is on, the newest approved one.
        let approval =
            message.template_version.is_none() && self.store.workspace()?.content_approval;
        let template = if approval {
            self.store
                .template_versions(&message.template)?
                .into_iter()
                .filter(|t| t.approved_by.is_some())
                .max_by_key(|t| t.version)
        } else {
            self.store
                .template(&message.template, message.template_version)?
        };
        let template = match template {
            Some(template) => template,
            None => {
                let reason = match message.template_version {
                    Some(v) => format!("template `{}` has no version {v}", message.template),
                    None if approval => format!(
                        "template `{}` has no approved version; a manager approves one with POST /v1/templates/{}/versions/N/approve",
                        message.template, message.template
                    ),
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
            let held_out = self.store.workspace()?.control_group_percent;
            if !template.transactional && super::control::holds_out(&contact.id, held_out) {
                let reason = format!(
                    "the contact is in the global control group ({held_out} % of contacts), which no marketing message reaches"
                );
                return self
                    .finish(&message, DeliveryStatus::Suppressed, now, &reason)
                    .map(|_| None);
            }
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
                .filter(|s| s.blocks(template.transactional))
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
        let context = templates::context(&self.standing(&contact, now), &message, &extra);
        // A message its template cannot make is failed, with the version named.
        let unmade = |reason: String| {
            let reason = format!(
                "template `{}` v{}: {reason}",
                template.name, template.version
            );
            self.finish(&message, DeliveryStatus::Failed, now, &reason)
                .map(|_| None)
        };
        let rendered = match templates::render(&template, &context) {
            Ok(rendered) => rendered,
            Err(reason) => return unmade(reason),
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
        if bound.record.rate.is_some() {
            batch
                .windows
                .entry(message.channel.clone())
                .or_insert_with(|| bound.clone());
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
            return unmade(reason);
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
