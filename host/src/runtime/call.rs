//! One plugin call of each kind: lower the inputs, call the plugin's function in a fresh store
//! (see `run`), and lift what it returned into the host's types.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Runtime;
use super::bindings::{v2, wit};
use super::entry::{self, Evaluate, Matches, Run, Score};
use super::error::CallError;
use super::host::{HttpGrant, LogRecord};
use super::limits::Limits;
use super::load::{Plugin, PluginKind, WitVersion};
use super::lower::{ContactRef, EventRef};
use super::output;
use super::run::block_on;
use crate::model::{
    ConfigProblem, Contact, DeliveryOutcome, Effect, Event, Message, PluginInfo, PreparedConfig,
    ProviderEvent, ScoreChange, WebhookRejection, WebhookRequest,
};

/// What one call produced: its result, the plugin's logs, and how long it took.
#[derive(Debug)]
pub struct CallReport<T> {
    pub result: Result<T, CallError>,
    pub logs: Vec<LogRecord>,
    pub elapsed: Duration,
    /// Of `elapsed`, the time spent waiting on the host's HTTP and SMTP for the plugin.
    pub waited: Duration,
}

/// `{"ok": …}` or `{"error": {"code", "message"}}`, with `logs` and `elapsed_us`.
impl<T: Serialize> Serialize for CallReport<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        match &self.result {
            Ok(value) => map.serialize_entry("ok", value)?,
            Err(error) => map.serialize_entry(
                "error",
                &serde_json::json!({"code": error.code(), "message": error.to_string()}),
            )?,
        }
        map.serialize_entry("logs", &self.logs)?;
        map.serialize_entry("elapsed_us", &(self.elapsed.as_micros() as u64))?;
        map.end()
    }
}

impl<T> CallReport<T> {
    fn wrong_kind(plugin: &Plugin, expected: PluginKind) -> Self {
        CallReport {
            result: Err(CallError::WrongKind {
                expected: expected.as_str(),
                actual: plugin.kind.as_str(),
            }),
            logs: Vec::new(),
            elapsed: Duration::ZERO,
            waited: Duration::ZERO,
        }
    }

    /// The same report with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> CallReport<U> {
        CallReport {
            result: self.result.map(f),
            logs: self.logs,
            elapsed: self.elapsed,
            waited: self.waited,
        }
    }
}

/// How long a webhook read may run: a provider's report is small and its signature is checked
/// by the host, and the route is public, so each request gets far less than a delivery.
const WEBHOOK_CPU_MS: u64 = 20;
const WEBHOOK_WALL_MS: u64 = 2_000;

impl Runtime {
    /// `describe` of any plugin.
    pub fn describe(&self, plugin: &Plugin) -> CallReport<PluginInfo> {
        let pre = &plugin.pre;
        let report = if plugin.kind == PluginKind::Channel {
            block_on(self.run_async(plugin, None, async |s| {
                let instance = pre.instance.instantiate_async(&mut *s).await?;
                let describe =
                    instance.get_typed_func::<(), (wit::PluginInfo,)>(&mut *s, pre.describe)?;
                Ok(Ok::<_, CallError>(describe.call_async(s, ()).await?.0))
            }))
        } else {
            self.run(plugin, |s| {
                let instance = pre.instance.instantiate(&mut *s)?;
                let describe =
                    instance.get_typed_func::<(), (wit::PluginInfo,)>(&mut *s, pre.describe)?;
                Ok(Ok::<_, CallError>(describe.call(s, ())?.0))
            })
        };
        report.map(PluginInfo::from)
    }

    /// `validate-config` of any plugin: `Ok(Ok(prepared))` when the plugin accepts the JSON
    /// config, `Ok(Err(problems))` when it refuses it.
    ///
    /// The prepared config is what every later call of this plugin takes: keep it with the
    /// journey step. Its bytes are opaque to the host and belong to this plugin binary; after
    /// loading another version, validate the config again. Its size counts against the
    /// plugin's output limit.
    pub fn validate_config(
        &self,
        plugin: &Plugin,
        config: &str,
    ) -> CallReport<Result<PreparedConfig, Vec<ConfigProblem>>> {
        type Verdict = Result<wit::PreparedConfig, Vec<wit::ConfigProblem>>;
        let pre = &plugin.pre;
        let report = if plugin.kind == PluginKind::Channel {
            block_on(self.run_async(plugin, None, async |s| {
                let instance = pre.instance.instantiate_async(&mut *s).await?;
                let validate =
                    instance.get_typed_func::<(&str,), (Verdict,)>(&mut *s, pre.validate_config)?;
                Ok(Ok::<_, CallError>(
                    validate.call_async(s, (config,)).await?.0,
                ))
            }))
        } else {
            self.run(plugin, |s| {
                let instance = pre.instance.instantiate(&mut *s)?;
                let validate =
                    instance.get_typed_func::<(&str,), (Verdict,)>(&mut *s, pre.validate_config)?;
                Ok(Ok::<_, CallError>(validate.call(s, (config,))?.0))
            })
        };
        report.map(|verdict| {
            verdict
                .map(PreparedConfig::from)
                .map_err(|problems| problems.into_iter().map(ConfigProblem::from).collect())
        })
    }

    /// Does `event` enroll `contact`? (trigger plugins)
    pub fn matches(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        event: &Event,
        contact: &Contact,
    ) -> CallReport<bool> {
        if plugin.kind != PluginKind::Trigger {
            return CallReport::wrong_kind(plugin, PluginKind::Trigger);
        }
        let (event, contact) = (
            EventRef::from(event),
            ContactRef::new(contact, config.attributes.as_deref()),
        );
        self.run(plugin, |s| {
            let instance = plugin.pre.instance.instantiate(&mut *s)?;
            let matches = entry::typed::<Matches>(plugin, &instance, s)?;
            let limit = plugin.limits.output_bytes;
            Ok(
                match matches
                    .call(&mut *s, (config.bytes.as_slice(), &event, &contact))?
                    .0
                {
                    Ok(matched) => Ok(matched),
                    Err(error) => Err(output::plugin_error(&error, s, limit)?),
                },
            )
        })
    }

    /// Which branch does `contact` take? (condition plugins)
    pub fn evaluate(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        contact: &Contact,
        event: Option<&Event>,
    ) -> CallReport<String> {
        if plugin.kind != PluginKind::Condition {
            return CallReport::wrong_kind(plugin, PluginKind::Condition);
        }
        let (contact, event) = (
            ContactRef::new(contact, config.attributes.as_deref()),
            event.map(EventRef::from),
        );
        self.run(plugin, |s| {
            let instance = plugin.pre.instance.instantiate(&mut *s)?;
            let evaluate = entry::typed::<Evaluate>(plugin, &instance, s)?;
            let limit = plugin.limits.output_bytes;
            let result = evaluate
                .call(&mut *s, (config.bytes.as_slice(), &contact, event.as_ref()))?
                .0;
            match result {
                Ok(label) => output::text(&label, s, limit),
                Err(error) => Ok(Err(output::plugin_error(&error, s, limit)?)),
            }
        })
    }

    /// What changes for `contact`? (action plugins)
    pub fn run_action(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        contact: &Contact,
        event: Option<&Event>,
    ) -> CallReport<Vec<Effect>> {
        if plugin.kind != PluginKind::Action {
            return CallReport::wrong_kind(plugin, PluginKind::Action);
        }
        let (contact, event) = (
            ContactRef::new(contact, config.attributes.as_deref()),
            event.map(EventRef::from),
        );
        self.run(plugin, |s| {
            let instance = plugin.pre.instance.instantiate(&mut *s)?;
            let run = entry::typed::<Run>(plugin, &instance, s)?;
            let limit = plugin.limits.output_bytes;
            let result = run
                .call(&mut *s, (config.bytes.as_slice(), &contact, event.as_ref()))?
                .0;
            match result {
                Ok(effects) => output::list(&effects, s, limit),
                Err(error) => Ok(Err(output::plugin_error(&error, s, limit)?)),
            }
        })
        .map(|effects| effects.into_iter().map(Effect::from).collect())
    }

    /// How does `event` change `contact`'s score? (scorer plugins)
    pub fn score(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        contact: &Contact,
        event: &Event,
    ) -> CallReport<Vec<ScoreChange>> {
        if plugin.kind != PluginKind::Scorer {
            return CallReport::wrong_kind(plugin, PluginKind::Scorer);
        }
        let (contact, event) = (
            ContactRef::new(contact, config.attributes.as_deref()),
            EventRef::from(event),
        );
        self.run(plugin, |s| {
            let instance = plugin.pre.instance.instantiate(&mut *s)?;
            let score = entry::typed::<Score>(plugin, &instance, s)?;
            let limit = plugin.limits.output_bytes;
            let result = score
                .call(&mut *s, (config.bytes.as_slice(), &contact, &event))?
                .0;
            match result {
                Ok(changes) => output::list(&changes, s, limit),
                Err(error) => Ok(Err(output::plugin_error(&error, s, limit)?)),
            }
        })
        .map(|changes| changes.into_iter().map(ScoreChange::from).collect())
    }

    /// Deliver `message` with the plugin's own outbound policy (the settings it was loaded
    /// with). (channel plugins; the only calls that may use outbound HTTP)
    pub async fn deliver(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        message: &Message,
    ) -> CallReport<DeliveryOutcome> {
        let egress = plugin.http.clone();
        self.deliver_through(plugin, egress, config, message).await
    }

    /// Deliver `message` with `egress` as the outbound policy: a channel binding's approved
    /// hosts and secrets.
    pub async fn deliver_through(
        &self,
        plugin: &Plugin,
        egress: Option<Arc<super::egress::Egress>>,
        config: &PreparedConfig,
        message: &Message,
    ) -> CallReport<DeliveryOutcome> {
        if plugin.kind != PluginKind::Channel {
            return CallReport::wrong_kind(plugin, PluginKind::Channel);
        }
        type Outcome = (Result<wit::Delivery, wit::DeliveryFailure>,);
        let grant = egress.map(HttpGrant::sending);
        let (pre, entry) = (&plugin.pre, plugin.entry);
        let report = match plugin.wit_version {
            WitVersion::V0_1 => {
                let message = wit::Message::from(message);
                self.run_async(plugin, grant, async |s| {
                    let instance = pre.instance.instantiate_async(&mut *s).await?;
                    let deliver = instance
                        .get_typed_func::<(&[u8], &wit::Message), Outcome>(&mut *s, entry)?;
                    let outcome = deliver.call_async(s, (&config.bytes, &message)).await?.0;
                    // A classified delivery failure is the plugin doing its job, not a call
                    // error.
                    Ok(Ok::<_, CallError>(outcome))
                })
                .await
            }
            WitVersion::V0_2 => {
                let message = v2::types::Message::from(message);
                self.run_async(plugin, grant, async |s| {
                    let instance = pre.instance.instantiate_async(&mut *s).await?;
                    let deliver = instance
                        .get_typed_func::<(&[u8], &v2::types::Message), Outcome>(&mut *s, entry)?;
                    let outcome = deliver.call_async(s, (&config.bytes, &message)).await?.0;
                    Ok(Ok::<_, CallError>(outcome))
                })
                .await
            }
        };
        report.map(DeliveryOutcome::from)
    }

    /// What a provider's webhook request reports, read by the channel plugin (0.2.0 channels;
    /// a 0.1.0 channel has no `parse-webhook`). No outbound HTTP or SMTP.
    pub async fn parse_webhook(
        &self,
        plugin: &Plugin,
        egress: Option<Arc<super::egress::Egress>>,
        config: &PreparedConfig,
        request: &WebhookRequest,
    ) -> CallReport<Result<Vec<ProviderEvent>, WebhookRejection>> {
        let Some(parse) = plugin.pre.parse_webhook else {
            return CallReport {
                result: Err(CallError::WrongKind {
                    expected: "0.2.0 channel (with parse-webhook)",
                    actual: plugin.kind.as_str(),
                }),
                logs: Vec::new(),
                elapsed: Duration::ZERO,
                waited: Duration::ZERO,
            };
        };
        let request = v2::types::WebhookRequest::from(request);
        // Signatures are checked with the channel's secrets; nothing is sent anywhere.
        let grant = egress.map(HttpGrant::verifying);
        let pre = &plugin.pre;
        let limits = Limits {
            cpu_ms: plugin.limits.cpu_ms.min(WEBHOOK_CPU_MS),
            wall_ms: plugin.limits.wall_ms.min(WEBHOOK_WALL_MS),
            ..plugin.limits
        };
        let report = self
            .run_async_within(plugin, limits, grant, async |s| {
                let instance = pre.instance.instantiate_async(&mut *s).await?;
                let parse = instance
                    .get_typed_func::<(&[u8], &v2::types::WebhookRequest), entry::ParsedWebhook>(
                        &mut *s, parse,
                    )?;
                let parsed = parse.call_async(s, (&config.bytes, &request)).await?.0;
                Ok(Ok::<_, CallError>(parsed))
            })
            .await;
        report.map(|parsed| {
            parsed
                .map(|events| events.into_iter().map(ProviderEvent::from).collect())
                .map_err(WebhookRejection::from)
        })
    }
}

impl From<String> for CallError {
    fn from(message: String) -> Self {
        CallError::Plugin(message)
    }
}
