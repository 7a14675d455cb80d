//! Messaging: what a journey's `send` becomes. Channels bind a name to a channel plugin with its
//! config, hosts, sealed secrets and rate; templates are versioned and rendered by the host;
//! the delivery worker takes messages from the outbox, applies the rules every send obeys, and
//! records each step durably.
//!
//! Owns bindings, templates and deliveries; the store keeps them, the runtime runs the plugins.

pub mod channels;
pub mod control;
pub mod costs;
mod delivery;
pub mod links;
mod prepare;
mod rate;
mod rules;
pub mod sealing;
pub mod seed;
pub mod templates;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

pub use channels::{BindingProblem, ChannelRequest, ChannelView};
pub use delivery::DeliverySettings;
pub use links::Links;
pub use sealing::SealingKey;
pub use templates::{Rendered, TemplateDraft, TemplateProblem};

use crate::clock::SharedClock;
use crate::model::Millis;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::store::{
    AuditEntry, ChannelRecord, DeliveryStatus, OutboxMessage, Store, StoreError, TemplateVersion,
};

/// Why a messaging request was refused.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("the channel binding is not valid")]
    BadChannel(Vec<BindingProblem>),
    #[error("the template is not valid")]
    BadTemplate(Vec<TemplateProblem>),
    /// What is missing, by its stable code (`channel_not_found`), and what it says.
    #[error("{1}")]
    NotFound(&'static str, String),
    /// A request that cannot be done as asked, by its stable code (`render_failed`).
    #[error("{1}")]
    Invalid(&'static str, String),
    /// A provider's webhook request without the provider's valid signature.
    #[error("{0}")]
    Unauthenticated(String),
    /// Too much at once: the client should retry after a moment, by its stable code.
    #[error("{1}")]
    Busy(&'static str, String),
    /// The request is fine but cannot be handled now (a plugin failed), by its stable code;
    /// the client should retry.
    #[error("{1}")]
    Unavailable(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a binding that could not be made ready is not tried again (unless it changes).
const REBIND_AFTER_MS: Millis = 10_000;

/// The messaging service: bindings ready to send through, and the delivery worker's switch.
pub struct Messaging {
    pub store: Arc<dyn Store>,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    clock: SharedClock,
    key: SealingKey,
    /// Bindings made ready to send, by channel name; dropped when a binding changes.
    bound: RwLock<HashMap<String, Arc<channels::Bound>>>,
    /// Bindings that could not be made ready, by channel name: the revision, when it was
    /// tried and why not. Each binding costs a plugin call, and the webhook route is public:
    /// a broken one is tried again only after [`REBIND_AFTER_MS`] or when it changes.
    unbound: std::sync::Mutex<HashMap<String, (u32, Millis, String)>>,
    settings: DeliverySettings,
    links: links::Links,
    /// Woken when a delivery step gives journeys work (its event).
    scheduler: Arc<Scheduler>,
    stopped: AtomicBool,
    /// The running delivery worker, for [`Messaging::shutdown`] to wait on.
    worker: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Where the worker's time goes.
    costs: costs::DeliveryCosts,
}

/// What the operator configures for messaging.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    pub sealing_key: SealingKey,
    /// Where people reach this server from outside (tracking and unsubscribe links), e.g.
    /// `https://mail.example.com`.
    pub public_url: String,
    pub delivery: DeliverySettings,
}

impl Messaging {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        runtime: Arc<Runtime>,
        clock: SharedClock,
        scheduler: Arc<Scheduler>,
        config: MessagingConfig,
    ) -> Arc<Messaging> {
        Arc::new(Messaging {
            store,
            registry,
            runtime,
            clock,
            links: links::Links::new(config.sealing_key.link_key(), &config.public_url),
            key: config.sealing_key,
            bound: RwLock::default(),
            unbound: std::sync::Mutex::default(),
            settings: config.delivery,
            scheduler,
            stopped: AtomicBool::new(false),
            worker: std::sync::Mutex::new(None),
            costs: costs::DeliveryCosts::default(),
        })
    }

    /// `contact` as a template sees it at `now`: its scores decayed, with 0 in each model it
    /// has no points in, and its segments.
    fn standing(&self, contact: &crate::model::Contact, now: Millis) -> crate::standing::Standing {
        let journeys = self.scheduler.journeys();
        let (scoring, audiences) = (&journeys.scoring, &journeys.audiences);
        crate::standing::Standing::complete(contact.clone(), now, scoring, audiences)
    }

    /// The links messages carry, to check the tokens that come back.
    /// Where the delivery worker's time has gone since it started.
    pub fn delivery_costs(&self) -> costs::CostSnapshot {
        self.costs.snapshot()
    }

    pub fn links(&self) -> &links::Links {
        &self.links
    }

    /// Start the delivery worker (on the current tokio runtime).
    pub fn start(self: &Arc<Self>) {
        let messaging = self.clone();
        let worker = tokio::spawn(async move { messaging.deliver_forever().await });
        *self.worker.lock().expect("worker lock") = Some(worker);
    }

    /// Stop the delivery worker and wait until its current batch is sent and recorded.
    pub async fn shutdown(&self) {
        self.stop();
        let worker = self.worker.lock().expect("worker lock").take();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
    }

    /// Stop the delivery worker after its current batch.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Create or change a binding; the binding as stored, and whether it is new.
    pub fn put_channel(
        &self,
        name: &str,
        request: ChannelRequest,
        actor: &str,
    ) -> Result<(ChannelView, bool), MessagingError> {
        // The plugin it binds cannot be deleted until the binding is stored.
        let _pins = self.registry.pinning();
        let previous = self.store.channel(name)?;
        let now = self.clock.now();
        let record = channels::record_from(
            name,
            request,
            previous.as_ref(),
            &self.key,
            &self.registry,
            &self.runtime,
            now,
        )
        .map_err(MessagingError::BadChannel)?;
        let action = if previous.is_some() {
            "channel.update"
        } else {
            "channel.create"
        };
        // Secret names and hosts only: their values are never written anywhere readable.
        let detail = serde_json::json!({
            "plugin": record.plugin,
            "revision": record.revision,
            "secrets": record.secrets.keys().collect::<Vec<_>>(),
            "approved_hosts": record.approved_hosts,
        });
        let audit = AuditEntry::new(now, actor, action, name, detail);
        self.store.put_channel(&record, audit)?;
        self.bound.write().expect("bound lock").remove(name);
        Ok((channels::view(&record, None), previous.is_none()))
    }

    pub fn channel(&self, name: &str) -> Result<ChannelView, MessagingError> {
        let record = self.store.channel(name)?.ok_or_else(|| {
            MessagingError::NotFound("channel_not_found", format!("no channel `{name}` is bound"))
        })?;
        Ok(self.view(record))
    }

    pub fn channels(&self) -> Result<Vec<ChannelView>, MessagingError> {
        Ok(self
            .store
            .channels()?
            .into_iter()
            .map(|record| self.view(record))
            .collect())
    }

    fn view(&self, record: ChannelRecord) -> ChannelView {
        let problem = self.bound(&record.name).err();
        channels::view(&record, problem)
    }

    /// The binding of `name`, ready to send; why not, if it is not.
    fn bound(&self, name: &str) -> Result<Arc<channels::Bound>, String> {
        if let Some(bound) = self.bound.read().expect("bound lock").get(name) {
            return Ok(bound.clone());
        }
        let record = self
            .store
            .channel(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("channel `{name}` is not bound; bind it with PUT /v1/channels/{name}")
            })?;
        let now = self.clock.now();
        if let Some((revision, at, why)) = self.unbound.lock().expect("unbound lock").get(name)
            && *revision == record.revision
            && now - at < REBIND_AFTER_MS
        {
            return Err(why.clone());
        }
        let revision = record.revision;
        // The sends its rate window remembers, so a new binding or a restart forgets none.
        let window = match record.rate {
            Some(_) => self.store.send_window(name).map_err(|e| e.to_string())?,
            None => None,
        };
        let bound = match channels::bind(
            record,
            &self.key,
            &self.registry,
            &self.runtime,
            window,
            now,
        ) {
            Ok(bound) => Arc::new(bound),
            Err(why) => {
                let mut unbound = self.unbound.lock().expect("unbound lock");
                unbound.insert(name.to_owned(), (revision, now, why.clone()));
                return Err(why);
            }
        };
        // Kept only if the binding is still the one stored: a change made while this one was
        // being bound (its removal from here taking the same lock) must not be undone.
        let mut cache = self.bound.write().expect("bound lock");
        let current = self.store.channel(name).map_err(|e| e.to_string())?;
        if current.is_some_and(|c| c.revision == bound.record.revision) {
            cache.insert(name.to_owned(), bound.clone());
        }
        Ok(bound)
    }

    /// Store a template as its name's next version; the version, and the variables it prints
    /// without a fallback (which a contact lacking them would fail).
    pub fn put_template(
        &self,
        name: &str,
        draft: TemplateDraft,
        actor: &str,
    ) -> Result<(TemplateVersion, Vec<String>), MessagingError> {
        if !crate::runtime::valid_name(name) {
            return Err(MessagingError::BadTemplate(vec![TemplateProblem {
                path: "name".into(),
                message: "a template name is 1 to 64 lower-case letters, digits, `-` and `_`"
                    .into(),
            }]));
        }
        templates::check(&draft).map_err(MessagingError::BadTemplate)?;
        let now = self.clock.now();
        let template = TemplateVersion {
            name: name.to_owned(),
            version: 0,
            channel: draft.channel,
            subject: draft.subject,
            html: draft.html,
            text: draft.text,
            transactional: draft.transactional,
            created_at: now,
            created_by: Some(actor.to_owned()),
            approved_by: None,
            approved_at: None,
        };
        let detail = serde_json::json!({"channel": template.channel});
        let audit = AuditEntry::new(now, actor, "template.version", name, detail);
        let stored = self.store.add_template_version(template, audit)?;
        let models = self.scheduler.journeys().scoring.names();
        let unguarded = templates::unguarded(&stored, &models);
        Ok((stored, unguarded))
    }

    /// Approve template `name` v`version` for sending, as `approver` (a token id). Its author
    /// cannot approve it; approving it again changes nothing.
    pub fn approve_template(
        &self,
        name: &str,
        version: u32,
        approver: &str,
    ) -> Result<TemplateVersion, MessagingError> {
        let template = self.template(name, Some(version))?;
        if template.approved_by.is_some() {
            return Ok(template);
        }
        if template.created_by.as_deref() == Some(approver) {
            return Err(MessagingError::Invalid(
                "approval_by_author",
                format!(
                    "template `{name}` v{version} was written with this token; another manager approves it"
                ),
            ));
        }
        let now = self.clock.now();
        let approved = TemplateVersion {
            approved_by: Some(approver.to_owned()),
            approved_at: Some(now),
            ..template
        };
        let detail = serde_json::json!({"author": approved.created_by});
        let audit = AuditEntry::new(
            now,
            approver,
            "template.approve",
            &format!("{name}@{version}"),
            detail,
        );
        self.store.approve_template(&approved, audit)?;
        Ok(approved)
    }

    pub fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<TemplateVersion, MessagingError> {
        self.store.template(name, version)?.ok_or_else(|| {
            MessagingError::NotFound(
                "template_not_found",
                match version {
                    Some(v) => format!("template `{name}` has no version {v}"),
                    None => format!("no template `{name}`"),
                },
            )
        })
    }

    /// Render a template for a contact, as a message to them would be.
    pub fn preview(
        &self,
        name: &str,
        version: Option<u32>,
        contact_id: &str,
        variables: crate::model::Attributes,
    ) -> Result<Rendered, MessagingError> {
        let template = self.template(name, version)?;
        let contact = self.store.contact(contact_id)?.ok_or_else(|| {
            MessagingError::NotFound("contact_not_found", format!("no contact `{contact_id}`"))
        })?;
        let mut message = test_message(&template, &contact.id, "preview", self.clock.now());
        message.variables = variables;
        let mut extra = vec![("channel", template.channel.clone())];
        if !template.transactional {
            extra.push(("unsubscribe_url", self.links.unsubscribe_url(&message.id)));
        }
        let context =
            templates::context(&self.standing(&contact, self.clock.now()), &message, &extra);
        templates::render(&template, &context)
            .map_err(|e| MessagingError::Invalid("render_failed", e))
    }

    /// Queue a test send of a template, rendered for a contact, to `address` only; marked as a
    /// test in its message, its metadata and its history, and exempt from consent (it goes to
    /// an internal address, not to the contact).
    pub fn test_send(
        &self,
        name: &str,
        contact_id: &str,
        address: &str,
        variables: crate::model::Attributes,
    ) -> Result<OutboxMessage, MessagingError> {
        if address.trim().is_empty() || address.len() > 320 {
            return Err(MessagingError::Invalid(
                "invalid_test_send",
                "`to` is the test address to send to, 1 to 320 characters".into(),
            ));
        }
        let template = self.template(name, None)?;
        if !self.store.contact_exists(contact_id)? {
            return Err(MessagingError::NotFound(
                "contact_not_found",
                format!("no contact `{contact_id}`"),
            ));
        }
        let now = self.clock.now();
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))?;
        let mut message = test_message(&template, contact_id, &hex::encode(id), now);
        message.variables = variables;
        message.recipient = Some(address.to_owned());
        self.store.queue_message(&message)?;
        Ok(message)
    }

    pub fn message(&self, id: &str) -> Result<OutboxMessage, MessagingError> {
        self.store.message(id)?.ok_or_else(|| {
            MessagingError::NotFound("message_not_found", format!("no message `{id}`"))
        })
    }
}

fn test_message(
    template: &TemplateVersion,
    contact_id: &str,
    id: &str,
    now: crate::model::Millis,
) -> OutboxMessage {
    OutboxMessage {
        id: format!("test:{id}"),
        contact_id: contact_id.to_owned(),
        channel: template.channel.clone(),
        template: template.name.clone(),
        variables: Default::default(),
        journey_id: String::new(),
        version: 0,
        node: String::new(),
        enrollment_id: String::new(),
        created_at: now,
        status: DeliveryStatus::Queued,
        template_version: Some(template.version),
        attempts: 0,
        due_at: Some(now),
        recipient: None,
        provider_id: None,
        history: vec![crate::store::DeliveryStep {
            at: now,
            status: DeliveryStatus::Queued,
            detail: "a test send".into(),
        }],
        test: true,
    }
}
