//! SMTP relays a channel submits email to: the pooled connections of one channel's egress.
//!
//! A relay is a target like any other (`smtp://host:port` with STARTTLS required,
//! `smtps://host:port`, or `smtp+insecure://host:port` only where approved as that). Its name
//! is resolved here and checked like an HTTP target's, and the pool connects to the checked
//! address itself, verifying TLS against the name (with the public roots and the operator's
//! `--tls-roots`): DNS has no second say. Pools are kept per
//! relay and credentials, and dropped with the egress when the channel is bound again.
//!
//! For `smtp://` and `smtp+insecure://` the host opens the TCP connection itself, with
//! `TCP_NODELAY`, and hands it to lettre: lettre writes a message's closing `.` on its own, and
//! with Nagle's algorithm that write waits for the relay's delayed ACK of the body, about 40 ms
//! a message on Linux (measured: 1,050 messages/s against 2,700 without the wait). `smtps://`
//! needs TLS before the greeting, which lettre only does on connections it opens: it uses
//! lettre's own pool.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{AsyncTransport, Tokio1Executor};

use super::address::Reachable;
use super::target::{Host, Scheme, Target};

/// Connections kept open per relay, and how long an idle one stays.
const POOL_SIZE: u32 = 32;
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Pools one channel keeps (one per relay and login; a plugin chooses the login, so it could
/// otherwise make as many as it likes). The least recently used goes first.
const MAX_POOLS: usize = 8;
/// How long a pool keeps the address its relay's name resolved to; then it is resolved (and
/// checked) again, so a provider moving its relay is followed.
const RESOLVE_EVERY: Duration = Duration::from_secs(300);
/// Longest wait on one SMTP command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How one relay is reached: connections of the host's own, or lettre's pool (`smtps`).
#[derive(Clone)]
pub enum Transport {
    Own(Arc<Connections>),
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
}

/// Idle connections to one relay with one login, opened by the host with `TCP_NODELAY`.
pub struct Connections {
    address: SocketAddr,
    /// For STARTTLS, checked against the approved name.
    starttls: Option<TlsParameters>,
    login: Option<Login>,
    idle: Mutex<Vec<(Instant, AsyncSmtpConnection)>>,
}

/// Why a submission failed: the relay's answer or the connection.
#[derive(Debug)]
pub enum SubmitError {
    Smtp(lettre::transport::smtp::Error),
    /// The relay refused the login. What it said is not kept: a relay may echo the
    /// credentials back in a form redaction would not recognise.
    Auth {
        transient: bool,
    },
    Connect(String),
    Timeout,
}

impl Connections {
    async fn open(&self) -> Result<AsyncSmtpConnection, SubmitError> {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| SubmitError::Connect(format!("connecting to {}: {e}", self.address)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| SubmitError::Connect(e.to_string()))?;
        let hello = hello();
        let mut connection = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
            .await
            .map_err(SubmitError::Smtp)?;
        if let Some(tls) = &self.starttls {
            connection
                .starttls(tls.clone(), &hello)
                .await
                .map_err(SubmitError::Smtp)?;
        }
        if let Some(login) = &self.login {
            let credentials = Credentials::new(login.username.clone(), login.password.clone());
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
                .map_err(|error| SubmitError::Auth {
                    transient: error.is_transient() || error.is_timeout(),
                })?;
        }
        Ok(connection)
    }

    /// A connection idle for less than [`POOL_IDLE`], or a new one.
    async fn take(&self) -> Result<(AsyncSmtpConnection, bool), SubmitError> {
        loop {
            let idle = self.idle.lock().expect("relay lock").pop();
            match idle {
                Some((since, connection)) if since.elapsed() < POOL_IDLE => {
                    return Ok((connection, true));
                }
                Some(_) => continue,
                None => return Ok((self.open().await?, false)),
            }
        }
    }

    async fn send(&self, email: &lettre::Message) -> Result<String, SubmitError> {
        let bytes = email.formatted();
        let (mut connection, reused) = self.take().await?;
        let mut sent = connection.send(email.envelope(), &bytes).await;
        // A pooled connection the relay has closed meanwhile fails before any reply: once
        // more on a new one.
        if reused && matches!(&sent, Err(e) if !e.is_response()) {
            connection = self.open().await?;
            sent = connection.send(email.envelope(), &bytes).await;
        }
        if !connection.has_broken() {
            let mut idle = self.idle.lock().expect("relay lock");
            if idle.len() < POOL_SIZE as usize {
                idle.push((Instant::now(), connection));
            }
        }
        sent.map(|response| reply(&response))
            .map_err(SubmitError::Smtp)
    }
}

fn hello() -> ClientId {
    ClientId::Domain("wayline.invalid".into())
}

fn reply(response: &lettre::transport::smtp::response::Response) -> String {
    format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    )
}

/// Credentials with the secrets written in, for one submission.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// Pooled transports by relay and login.
#[derive(Default)]
pub struct Relays {
    pools: Mutex<HashMap<(Target, Option<Login>), Pool>>,
    /// The operator's own CA, trusted besides the public roots.
    extra_root: Option<Certificate>,
}

/// One relay's transport, when its address was resolved and when it was last used.
struct Pool {
    transport: Transport,
    resolved: Instant,
    used: Instant,
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
    /// No pools yet; TLS to relays trusts the public roots and `extra_root`.
    pub fn trusting(extra_root: Option<Certificate>) -> Relays {
        Relays {
            pools: Mutex::default(),
            extra_root,
        }
    }

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
        if let Some(pool) = self.pools.lock().expect("relay lock").get_mut(&key)
            && pool.resolved.elapsed() < RESOLVE_EVERY
        {
            pool.used = Instant::now();
            return Ok(pool.transport.clone());
        }
        let address = resolve(&target.host, reachable).await?;
        let transport = build(target, address, key.1.clone(), self.extra_root.as_ref())?;
        let mut pools = self.pools.lock().expect("relay lock");
        if !pools.contains_key(&key) && pools.len() >= MAX_POOLS {
            let oldest = pools
                .iter()
                .min_by_key(|(_, pool)| pool.used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                pools.remove(&oldest);
            }
        }
        let now = Instant::now();
        pools.insert(
            key,
            Pool {
                transport: transport.clone(),
                resolved: now,
                used: now,
            },
        );
        Ok(transport)
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

fn build(
    target: &Target,
    address: IpAddr,
    login: Option<Login>,
    extra_root: Option<&Certificate>,
) -> Result<Transport, RelayError> {
    // Certificates are checked against the name the operator approved, not the address.
    let tls_name = match &target.host {
        Host::Name(name) => name.clone(),
        Host::Ip(ip) => ip.to_string(),
    };
    let tls = |name: String| {
        let mut parameters = TlsParameters::builder(name);
        if let Some(root) = extra_root {
            parameters = parameters.add_root_certificate(root.clone());
        }
        parameters
            .build_rustls()
            .map_err(|e| RelayError::Transport(format!("TLS setup: {e}")))
    };
    let starttls = match target.scheme {
        Scheme::Smtp => Some(tls(tls_name)?),
        Scheme::SmtpInsecure => None,
        Scheme::Smtps => {
            let mut builder =
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.to_string())
                    .port(target.port)
                    .tls(Tls::Wrapper(tls(tls_name)?))
                    .timeout(Some(COMMAND_TIMEOUT))
                    .hello_name(hello())
                    .pool_config(
                        PoolConfig::new()
                            .max_size(POOL_SIZE)
                            .idle_timeout(POOL_IDLE),
                    );
            if let Some(login) = login {
                builder = builder.credentials(Credentials::new(login.username, login.password));
            }
            return Ok(Transport::Lettre(builder.build()));
        }
        Scheme::Http | Scheme::Https => {
            return Err(RelayError::Denied(format!("{target} is not an SMTP relay")));
        }
    };
    Ok(Transport::Own(Arc::new(Connections {
        address: SocketAddr::new(address, target.port),
        starttls,
        login,
        idle: Mutex::new(Vec::new()),
    })))
}

/// Submit `email` through `transport`; the relay's reply, or what went wrong. Bounded in time
/// as a whole, whatever the relay does.
pub async fn submit(transport: &Transport, email: lettre::Message) -> Result<String, SubmitError> {
    let submitted = async {
        match transport {
            Transport::Own(connections) => connections.send(&email).await,
            Transport::Lettre(pool) => pool
                .send(email)
                .await
                .map(|response| reply(&response))
                .map_err(SubmitError::Smtp),
        }
    };
    tokio::time::timeout(COMMAND_TIMEOUT * 3, submitted)
        .await
        .unwrap_or(Err(SubmitError::Timeout))
}
