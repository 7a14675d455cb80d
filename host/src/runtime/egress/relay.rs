//! SMTP relays a channel submits email to: the pooled connections of one channel's egress.
//!
//! A relay is a target like any other (`smtp://host:port` with STARTTLS required,
//! `smtps://host:port`, or `smtp+insecure://host:port` only where approved as that). Its name
//! is resolved here and checked like an HTTP target's, and the pool connects to the checked
//! address itself, verifying TLS against the name: DNS has no second say. Pools are kept per
//! relay and credentials, and dropped with the egress when the channel is bound again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{AsyncTransport, Tokio1Executor};

use super::address::Reachable;
use super::target::{Host, Scheme, Target};

/// Connections kept open per relay, and how long an idle one stays.
const POOL_SIZE: u32 = 8;
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Longest wait on one SMTP command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Credentials with the secrets written in, for one submission.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// Pooled transports by relay and login.
#[derive(Default)]
pub struct Relays {
    pools: Mutex<HashMap<(Target, Option<Login>), Transport>>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pools = self.pools.lock().map(|p| p.len()).unwrap_or_default();
        write!(f, "Relays({pools} pools)")
    }
}

/// Why no connection to a relay could be set up.
#[derive(Debug)]
pub enum RelayError {
    /// The policy refused it (an address that is not public and not approved, credentials
    /// over no TLS).
    Denied(String),
    Transport(String),
}

impl Relays {
    /// The pooled transport for `target` with `login`, set up on first use.
    pub async fn transport(
        &self,
        target: &Target,
        login: Option<Login>,
        reachable: &Reachable,
    ) -> Result<Transport, RelayError> {
        if target.scheme == Scheme::SmtpInsecure && login.is_some() {
            return Err(RelayError::Denied(format!(
                "credentials are never sent without TLS; use smtp:// (STARTTLS) or smtps:// for {target}"
            )));
        }
        let key = (target.clone(), login);
        if let Some(transport) = self.pools.lock().expect("relay lock").get(&key) {
            return Ok(transport.clone());
        }
        let address = resolve(&target.host, reachable).await?;
        let transport = build(target, address, key.1.clone())?;
        let mut pools = self.pools.lock().expect("relay lock");
        Ok(pools.entry(key).or_insert(transport).clone())
    }
}

/// The address to connect to: the literal, or the first answer for the name that the policy
/// allows.
async fn resolve(host: &Host, reachable: &Reachable) -> Result<IpAddr, RelayError> {
    let name = match host {
        Host::Ip(ip) if reachable.allows(*ip) => return Ok(*ip),
        Host::Ip(ip) => {
            return Err(RelayError::Denied(format!(
                "{ip} is not a public address and is not approved as one"
            )));
        }
        Host::Name(name) => name,
    };
    let answers: Vec<IpAddr> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .map_err(|e| RelayError::Transport(format!("resolving `{name}`: {e}")))?
        .map(|address| address.ip().to_canonical())
        .collect();
    answers
        .iter()
        .copied()
        .find(|ip| reachable.allows(*ip))
        .ok_or_else(|| {
            RelayError::Denied(format!(
                "`{name}` resolves to {}, which is not a public address; an operator may approve an address itself to reach it",
                if answers.is_empty() {
                    "nothing".to_owned()
                } else {
                    answers
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })
}

fn build(target: &Target, address: IpAddr, login: Option<Login>) -> Result<Transport, RelayError> {
    // Certificates are checked against the name the operator approved, not the address.
    let tls_name = match &target.host {
        Host::Name(name) => name.clone(),
        Host::Ip(ip) => ip.to_string(),
    };
    let tls = |name: String| {
        TlsParameters::new(name).map_err(|e| RelayError::Transport(format!("TLS setup: {e}")))
    };
    let tls = match target.scheme {
        Scheme::Smtp => Tls::Required(tls(tls_name)?),
        Scheme::Smtps => Tls::Wrapper(tls(tls_name)?),
        Scheme::SmtpInsecure => Tls::None,
        Scheme::Http | Scheme::Https => {
            return Err(RelayError::Denied(format!("{target} is not an SMTP relay")));
        }
    };
    let mut builder = Transport::builder_dangerous(address.to_string())
        .port(target.port)
        .tls(tls)
        .timeout(Some(COMMAND_TIMEOUT))
        .hello_name(ClientId::Domain("wayline.invalid".into()))
        .pool_config(
            PoolConfig::new()
                .max_size(POOL_SIZE)
                .idle_timeout(POOL_IDLE),
        );
    if let Some(login) = login {
        builder = builder.credentials(Credentials::new(login.username, login.password));
    }
    Ok(builder.build())
}

/// Submit `email` through `transport`; the relay's reply, or what went wrong.
pub async fn submit(
    transport: &Transport,
    email: lettre::Message,
) -> Result<String, lettre::transport::smtp::Error> {
    let response = transport.send(email).await?;
    Ok(format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    ))
}
