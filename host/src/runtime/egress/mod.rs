//! What one plugin may send out over HTTP, decided by the operator when the plugin is loaded:
//! the targets approved for it (`scheme://host:port`), the addresses it may reach, its secrets
//! and the targets each is bound to, and the HTTP client that enforces all of it.

mod address;
pub mod relay;
mod secrets;
mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub use address::Refused;
pub use secrets::{Secret, SecretError, SecretValue, Secrets};
pub use target::{Approval, Declared, Host as TargetHost, Scheme, Target};

/// Certificates outbound TLS trusts besides the public roots: an operator's own CA, for a
/// relay or an API inside the company. One set for the whole server, set at start.
#[derive(Debug, Clone, Default)]
pub struct TlsRoots {
    /// PEM, one or more certificates; checked to parse when it was set.
    pem: Option<Arc<[u8]>>,
}

impl TlsRoots {
    /// The certificates in `pem`; an error when it holds none, or one that does not parse.
    pub fn from_pem(pem: &[u8]) -> Result<TlsRoots, String> {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("the TLS roots do not parse as PEM certificates: {e}"))?;
        if certificates.is_empty() {
            return Err("the TLS roots hold no PEM certificate".into());
        }
        lettre::transport::smtp::client::Certificate::from_pem(pem)
            .map_err(|e| format!("the TLS roots do not parse as PEM certificates: {e}"))?;
        Ok(TlsRoots {
            pem: Some(Arc::from(pem)),
        })
    }

    fn for_http(&self) -> Vec<reqwest::Certificate> {
        self.pem
            .as_deref()
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(pem).ok())
            .unwrap_or_default()
    }

    fn for_smtp(&self) -> Option<lettre::transport::smtp::client::Certificate> {
        self.pem
            .as_deref()
            .and_then(|pem| lettre::transport::smtp::client::Certificate::from_pem(pem).ok())
    }
}

/// Largest response body a plugin may receive (after decompression), and the longest it may
/// wait for one.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests one call may send.
pub const MAX_REQUESTS_PER_CALL: u32 = 8;

/// A secret as the operator sets it: its value and the targets it may be sent to.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSetting {
    pub value: SecretValue,
    /// `scheme://host[:port]` targets, like approved hosts: usually the provider's API only.
    pub hosts: Vec<String>,
    /// Whether the channel's plugin may check its provider's webhook signatures with it
    /// (`signatures.verify-hmac`); no other secret is ever used as a key there.
    #[serde(default)]
    pub verifies_webhooks: bool,
}

/// Why a plugin's outbound HTTP could not be set up.
#[derive(Debug)]
pub enum EgressError {
    /// A host the plugin declares in `describe` is not a host pattern.
    Declared(String),
    /// The operator's approvals or secrets are not ones the host can apply.
    Settings(String),
}

/// One plugin's outbound HTTP.
#[derive(Debug)]
pub struct Egress {
    /// Hosts the plugin declared in `describe`.
    pub declared: Vec<Declared>,
    /// Targets the operator approved for it.
    pub approved: Vec<Approval>,
    pub secrets: Secrets,
    /// Addresses beyond the public internet that it may reach: those approved as themselves.
    reachable: address::Reachable,
    pub max_response_bytes: usize,
    pub max_timeout: Duration,
    /// No redirects, no proxies, no cookies, and names resolved only to reachable addresses.
    pub client: reqwest::Client,
    /// Pooled SMTP connections to the relays it submits to.
    pub relays: relay::Relays,
}

impl Egress {
    /// The egress of a plugin that declared `declared` and was approved `approved` with
    /// `secrets`; an error names the first declaration or setting that is not one.
    pub fn new(
        declared: &[String],
        approved: &[String],
        secrets: &BTreeMap<String, SecretSetting>,
        roots: &TlsRoots,
    ) -> Result<Egress, EgressError> {
        let declared = declared
            .iter()
            .map(|d| Declared::parse(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EgressError::Declared)?;
        Self::approved(declared, approved, secrets, roots).map_err(EgressError::Settings)
    }

    fn approved(
        declared: Vec<Declared>,
        approved: &[String],
        secrets: &BTreeMap<String, SecretSetting>,
        roots: &TlsRoots,
    ) -> Result<Egress, String> {
        let approved = approved
            .iter()
            .map(|a| Approval::parse(a).map_err(|e| format!("approved host {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let secrets = secrets
            .iter()
            .map(|(name, setting)| {
                // A key that only checks webhook signatures is sent nowhere; any other secret
                // is for sending, and must say where to.
                if setting.hosts.is_empty() && !setting.verifies_webhooks {
                    return Err(format!(
                        "secret `{name}` names no host it may be sent to; give it `hosts`, e.g. [\"https://api.provider.com\"], or set `verifies_webhooks` for a key that only checks the provider's webhook signatures"
                    ));
                }
                let bound_to = setting
                    .hosts
                    .iter()
                    .map(|h| Approval::parse(h).map_err(|e| format!("secret `{name}`: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let secret = Secret {
                    value: setting.value.clone(),
                    bound_to,
                    verifies_webhooks: setting.verifies_webhooks,
                };
                Ok((name.clone(), secret))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let reachable = address::Reachable {
            approved: Arc::new(
                approved
                    .iter()
                    .filter_map(Approval::address)
                    .collect::<BTreeSet<_>>(),
            ),
        };
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .dns_resolver(Arc::new(reachable.clone()));
        for certificate in roots.for_http() {
            client = client.add_root_certificate(certificate);
        }
        let client = client
            .build()
            .map_err(|e| format!("the HTTP client could not be built: {e}"))?;
        Ok(Egress {
            declared,
            approved,
            secrets: Secrets(secrets),
            reachable,
            max_response_bytes: MAX_RESPONSE_BYTES,
            max_timeout: MAX_TIMEOUT,
            client,
            relays: relay::Relays::trusting(roots.for_smtp()),
        })
    }

    /// Whether a request to `target` may leave: declared by the plugin and approved by the
    /// operator. (Where a name then resolves to is checked by the client's resolver.)
    pub fn allows(&self, target: &Target) -> bool {
        self.declared.iter().any(|d| d.covers(target))
            && self.approved.iter().any(|a| a.covers(target))
    }

    /// Whether an address literal may be connected to: a public one, or one the operator
    /// approved by address.
    pub fn reaches(&self, ip: std::net::IpAddr) -> bool {
        self.reachable.allows(ip)
    }

    /// The pooled SMTP transport for `target` (an approved relay) with `login`.
    pub async fn relay(
        &self,
        target: &Target,
        login: Option<relay::Login>,
    ) -> Result<relay::Transport, relay::RelayError> {
        self.relays.transport(target, login, &self.reachable).await
    }
}
