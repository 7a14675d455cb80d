//! Channel bindings: a name journeys send through (`email`) bound by the operator to a channel
//! plugin, its config (checked by the plugin's `validate-config`), the targets it may reach,
//! its secrets (sealed at rest, each bound to its provider's hosts) and its send rate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::rate::SendWindow;
use super::sealing::SealingKey;
use crate::model::{Millis, PreparedConfig};
use crate::registry::Registry;
use crate::runtime::egress::{Egress, EgressError, SecretSetting, SecretValue};
use crate::runtime::{Plugin, PluginKind, Runtime};
use crate::store::{
    Cap, CapScope, ChannelAlert, ChannelRecord, Rate, SavedWindow, SealedSecret, SendHours,
    WhenCapped,
};

/// Longest rate window, and most messages per window.
const MAX_RATE_WINDOW: Millis = 24 * 3_600_000;
/// Most messages a rate window admits (the window remembers each send's time).
const MAX_RATE_MESSAGES: u32 = 100_000;
/// Longest frequency-cap window.
const MAX_CAP_WINDOW: Millis = 90 * 86_400_000;

/// A binding as the operator sends it (`PUT /v1/channels/{name}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRequest {
    /// `name@version`, or a name for its newest loaded version (pinned here).
    pub plugin: String,
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// The contact attribute holding the address (`email`, `phone`); the contact's id when
    /// absent.
    #[serde(default)]
    pub recipient: Option<String>,
    /// The consent that governs marketing sends here; the channel's name when absent.
    #[serde(default)]
    pub consent: Option<String>,
    #[serde(default)]
    pub approved_hosts: Vec<String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRequest>,
    #[serde(default)]
    pub rate: Option<RateRequest>,
    /// Frequency caps on marketing messages (`[]` for none); the default, the same message at
    /// most twice a day to a contact, when absent.
    #[serde(default)]
    pub caps: Option<Vec<CapRequest>>,
    /// `defer` (the default) or `drop` a capped message.
    #[serde(default)]
    pub when_capped: WhenCapped,
    /// The hours of the contact's day marketing messages may arrive, e.g.
    /// `{"from": "09:00", "to": "21:00"}`; outside them a message waits for the next opening.
    #[serde(default)]
    pub send_hours: Option<SendHours>,
}

/// `{"messages": 2, "per": "1d", "scope": "template"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapRequest {
    pub messages: u32,
    pub per: String,
    pub scope: CapScope,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// A secret as sent: without `value`, the value stored already is kept (so a binding can be
/// changed without sending its secrets again).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    #[serde(default)]
    pub value: Option<SecretValue>,
    /// Where it may be sent; empty for a key that only checks webhook signatures.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Whether the plugin may check its provider's webhook signatures with it.
    #[serde(default)]
    pub verifies_webhooks: bool,
}

/// `{"messages": 20, "per": "1m"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateRequest {
    pub messages: u32,
    pub per: String,
}

/// A binding as the API shows it: secrets by name and hosts, never their values.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    pub name: String,
    pub plugin: String,
    pub config: serde_json::Value,
    pub recipient: Option<String>,
    pub consent: String,
    pub approved_hosts: Vec<String>,
    pub secrets: BTreeMap<String, SecretView>,
    pub rate: Option<RateView>,
    pub caps: Vec<Cap>,
    pub when_capped: WhenCapped,
    pub send_hours: Option<SendHours>,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    #[serde(with = "crate::model::timestamp_json")]
    pub updated_at: Millis,
    pub revision: u32,
    /// `ok`, `alert` (a permanent failure, see `alert`) or `unavailable` (see `problem`).
    pub status: &'static str,
    pub alert: Option<ChannelAlert>,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretView {
    pub hosts: Vec<String>,
    pub verifies_webhooks: bool,
    pub set: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateView {
    pub messages: u32,
    pub per_ms: i64,
}

/// Why a binding was refused, by the field it is about.
#[derive(Debug, Clone, Serialize)]
pub struct BindingProblem {
    pub path: String,
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> BindingProblem {
    BindingProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// A binding ready to send through.
pub struct Bound {
    pub record: ChannelRecord,
    pub plugin: Arc<Plugin>,
    pub config: PreparedConfig,
    pub egress: Arc<Egress>,
    pub bucket: Mutex<SendWindow>,
    /// Webhook requests this binding reads at once. The route is public, so each request
    /// waits for no other: one that finds them all taken is turned away for the provider to
    /// retry.
    pub webhooks: tokio::sync::Semaphore,
}

/// Webhook requests one channel reads at once (the machine has a few cores; a provider
/// retries what it is turned away with).
const WEBHOOKS_AT_ONCE: usize = 4;

impl Bound {
    /// The consent that governs marketing sends here.
    pub fn consent(&self) -> &str {
        self.record.consent.as_deref().unwrap_or(&self.record.name)
    }
}

/// Turn a request into the record to store: the plugin pinned, its config validated by the
/// plugin, the secrets sealed (values not sent are kept from `previous`), the egress checked.
pub fn record_from(
    name: &str,
    request: ChannelRequest,
    previous: Option<&ChannelRecord>,
    key: &SealingKey,
    registry: &Registry,
    runtime: &Runtime,
    now: Millis,
) -> Result<ChannelRecord, Vec<BindingProblem>> {
    if !crate::runtime::valid_name(name) {
        return Err(vec![problem(
            "name",
            "a channel name is 1 to 64 lower-case letters, digits, `-` and `_`",
        )]);
    }
    let plugin = registry.resolve(&request.plugin).ok_or_else(|| {
        vec![problem(
            "plugin",
            format!("no plugin `{}` is loaded", request.plugin),
        )]
    })?;
    if plugin.kind != PluginKind::Channel {
        return Err(vec![problem(
            "plugin",
            format!(
                "`{}` is a {} plugin; a channel is bound to a channel plugin",
                plugin.id(),
                plugin.kind.as_str()
            ),
        )]);
    }
    let mut problems = Vec::new();
    let mut secrets = BTreeMap::new();
    for (secret, wanted) in &request.secrets {
        let path = format!("secrets.{secret}");
        let sealed = match &wanted.value {
            Some(value) if value.0.is_empty() => {
                problems.push(problem(format!("{path}.value"), "is empty"));
                continue;
            }
            Some(value) => match key.seal(name, secret, &wanted.hosts, value) {
                Ok(sealed) => sealed,
                Err(error) => {
                    problems.push(problem(format!("{path}.value"), error));
                    continue;
                }
            },
            None => match previous.and_then(|p| p.secrets.get(secret)) {
                // Kept only as it was: a value that goes to other hosts must be given again,
                // so whoever may change a binding cannot send its secret somewhere new.
                // Marking it for webhook signatures sends it nowhere new: the value is kept.
                Some(stored) if stored.hosts == wanted.hosts => stored.sealed.clone(),
                Some(_) => {
                    problems.push(problem(
                        format!("{path}.value"),
                        "is required to change the hosts this secret goes to",
                    ));
                    continue;
                }
                None => {
                    problems.push(problem(
                        format!("{path}.value"),
                        "is required: this channel has no value stored for it yet",
                    ));
                    continue;
                }
            },
        };
        secrets.insert(
            secret.clone(),
            SealedSecret {
                hosts: wanted.hosts.clone(),
                verifies_webhooks: wanted.verifies_webhooks,
                sealed,
            },
        );
    }
    let rate = match &request.rate {
        None => None,
        Some(rate) => match rate_of(rate) {
            Ok(rate) => Some(rate),
            Err(error) => {
                problems.push(error);
                None
            }
        },
    };
    let caps = caps_requested(&request, &mut problems);
    if let Some(hours) = &request.send_hours
        && let Err(error) = hours.check()
    {
        problems.push(problem("send_hours", error));
    }
    for (path, attribute) in [
        ("recipient", &request.recipient),
        ("consent", &request.consent),
    ] {
        if attribute
            .as_ref()
            .is_some_and(|a| a.is_empty() || a.len() > 128)
        {
            problems.push(problem(path, "must be 1 to 128 characters"));
        }
    }
    let config_text = request.config.to_string();
    let prepared = match runtime.validate_config(&plugin, &config_text).result {
        Ok(Ok(prepared)) => Some(prepared),
        Ok(Err(refused)) => {
            problems.extend(refused.into_iter().map(|p| {
                problem(
                    format!("config.{}", p.path).trim_end_matches('.'),
                    p.message,
                )
            }));
            None
        }
        Err(error) => {
            problems.push(problem(
                "config",
                format!("the plugin failed to check it: {error}"),
            ));
            None
        }
    };
    let record = ChannelRecord {
        name: name.to_owned(),
        plugin: plugin.id().to_owned(),
        config: request.config,
        recipient: request.recipient,
        consent: request.consent,
        approved_hosts: request.approved_hosts,
        secrets,
        rate,
        created_at: previous.map_or(now, |p| p.created_at),
        updated_at: now,
        revision: previous.map_or(1, |p| p.revision + 1),
        alert: None,
        caps,
        when_capped: request.when_capped,
        send_hours: request.send_hours,
    };
    if prepared.is_some() && problems.is_empty() {
        // The same checks sending makes, so a binding stored is one that can send.
        if let Err(error) = egress_of(&record, &plugin, key) {
            problems.push(problem("approved_hosts", error));
        }
    }
    if problems.is_empty() {
        Ok(record)
    } else {
        Err(problems)
    }
}

fn caps_requested(
    request: &ChannelRequest,
    problems: &mut Vec<BindingProblem>,
) -> Option<Vec<Cap>> {
    let wanted = request.caps.as_ref()?;
    let mut checked = Vec::new();
    for (i, cap) in wanted.iter().enumerate() {
        let path = format!("caps[{i}]");
        match crate::journeys::definition::parse_duration(&cap.per) {
            Ok(per_ms) if (60_000..=MAX_CAP_WINDOW).contains(&per_ms) && cap.messages >= 1 => {
                checked.push(Cap {
                    messages: cap.messages,
                    per_ms,
                    scope: cap.scope,
                })
            }
            Ok(_) => problems.push(problem(path, "a cap is at least 1 message per 1m to 90d")),
            Err(error) => problems.push(problem(format!("{path}.per"), error)),
        }
    }
    Some(checked)
}

fn rate_of(rate: &RateRequest) -> Result<Rate, BindingProblem> {
    let per_ms = crate::journeys::definition::parse_duration(&rate.per)
        .map_err(|error| problem("rate.per", error))?;
    if !(1_000..=MAX_RATE_WINDOW).contains(&per_ms) {
        return Err(problem("rate.per", "must be from 1s to 24h"));
    }
    if !(1..=MAX_RATE_MESSAGES).contains(&rate.messages) {
        return Err(problem(
            "rate.messages",
            format!("must be from 1 to {MAX_RATE_MESSAGES}"),
        ));
    }
    Ok(Rate {
        messages: rate.messages,
        per_ms,
    })
}

/// The outbound policy of a binding: its plugin's declared hosts, the binding's approvals and
/// its secrets, opened.
pub fn egress_of(
    record: &ChannelRecord,
    plugin: &Plugin,
    key: &SealingKey,
) -> Result<Egress, String> {
    let mut secrets = BTreeMap::new();
    for (name, sealed) in &record.secrets {
        secrets.insert(
            name.clone(),
            SecretSetting {
                value: key.open(&record.name, name, &sealed.hosts, &sealed.sealed)?,
                hosts: sealed.hosts.clone(),
                verifies_webhooks: sealed.verifies_webhooks,
            },
        );
    }
    Egress::new(
        &plugin.info.outbound_hosts,
        &record.approved_hosts,
        &secrets,
        &plugin.tls_roots,
    )
    .map_err(|error| match error {
        EgressError::Declared(e) => format!("the plugin declares an outbound host {e}"),
        EgressError::Settings(e) => e,
    })
}

/// Make a stored binding ready to send: its plugin loaded, its config prepared, its secrets
/// opened. An error says what keeps it from sending.
pub fn bind(
    record: ChannelRecord,
    key: &SealingKey,
    registry: &Registry,
    runtime: &Runtime,
    window: Option<SavedWindow>,
    now: Millis,
) -> Result<Bound, String> {
    let plugin = registry.get(&record.plugin).ok_or_else(|| {
        format!(
            "channel `{}` is bound to plugin `{}`, which is not loaded",
            record.name, record.plugin
        )
    })?;
    let config = match runtime
        .validate_config(&plugin, &record.config.to_string())
        .result
    {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(problems)) => {
            return Err(format!(
                "plugin `{}` now refuses channel `{}`'s config: {}",
                record.plugin,
                record.name,
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        Err(error) => {
            return Err(format!(
                "plugin `{}` failed to check its config: {error}",
                record.plugin
            ));
        }
    };
    let egress = Arc::new(egress_of(&record, &plugin, key)?);
    let bucket = Mutex::new(SendWindow::restore(record.rate, window, now));
    Ok(Bound {
        record,
        plugin,
        config,
        egress,
        bucket,
        webhooks: tokio::sync::Semaphore::new(WEBHOOKS_AT_ONCE),
    })
}

/// What the API shows of a stored binding, and whether it can send.
pub fn view(record: &ChannelRecord, problem: Option<String>) -> ChannelView {
    let status = match (&problem, &record.alert) {
        (Some(_), _) => "unavailable",
        (None, Some(_)) => "alert",
        (None, None) => "ok",
    };
    ChannelView {
        name: record.name.clone(),
        plugin: record.plugin.clone(),
        config: record.config.clone(),
        recipient: record.recipient.clone(),
        consent: record
            .consent
            .clone()
            .unwrap_or_else(|| record.name.clone()),
        approved_hosts: record.approved_hosts.clone(),
        secrets: record
            .secrets
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    SecretView {
                        hosts: s.hosts.clone(),
                        verifies_webhooks: s.verifies_webhooks,
                        set: true,
                    },
                )
            })
            .collect(),
        rate: record.rate.map(|r| RateView {
            messages: r.messages,
            per_ms: r.per_ms,
        }),
        caps: caps_of(record).to_vec(),
        when_capped: record.when_capped,
        send_hours: record.send_hours.clone(),
        created_at: record.created_at,
        updated_at: record.updated_at,
        revision: record.revision,
        status,
        alert: record.alert.clone(),
        problem,
    }
}

/// The caps a binding applies: its own, or the default.
pub fn caps_of(record: &ChannelRecord) -> &[Cap] {
    match &record.caps {
        Some(caps) => caps,
        None => &super::rules::DEFAULT_CAPS,
    }
}
