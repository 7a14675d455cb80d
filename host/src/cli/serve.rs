//! `wayline serve`: the server on the embedded default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::config::{FileConfig, LimitSettings};
use crate::api::{AppState, HttpEdges, app};
use crate::clock::{SharedClock, SystemClock};
use crate::journeys::{JourneyError, Journeys};
use crate::messaging::{DeliverySettings, MessagingConfig, SealingKey, seed};
use crate::plugin_kv::StoredKv;
use crate::registry::Registry;
use crate::runtime::egress::TlsRoots;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::{SledStore, Store};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of these settings (the flags' names, `_` for `-`; limits under
    /// `[limits]`). The environment overrides it, and flags override both.
    #[arg(long, env = "WAYLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "WAYLINE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory (store, compile cache) [default: wayline-data].
    #[arg(long, env = "WAYLINE_DATA")]
    data: Option<PathBuf>,
    /// Directory of plugin binaries to load at start-up.
    #[arg(long, env = "WAYLINE_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Directory of journey definitions (`ID.json`) to create and publish at start-up; a
    /// journey that exists already is left as it is.
    #[arg(long, env = "WAYLINE_JOURNEYS")]
    journeys: Option<PathBuf>,
    /// Directory of channel bindings (`NAME.json`, the body of `PUT /v1/channels/NAME`) to bind
    /// at start-up; a channel bound already is left as it is. Without it, `channels/` beside
    /// the `--journeys` directory, if there is one (the journeys send through them).
    #[arg(long, env = "WAYLINE_CHANNELS")]
    channels: Option<PathBuf>,
    /// Directory of templates (`NAME.json`, the body of `PUT /v1/templates/NAME`) to store at
    /// start-up; a template that has a version already is left as it is. Without it,
    /// `templates/` beside the `--journeys` directory, if there is one.
    #[arg(long, env = "WAYLINE_TEMPLATES")]
    templates: Option<PathBuf>,
    /// Directory of scoring models (`NAME.json`, the body of `PUT /v1/scoring/models/NAME`)
    /// to create at start-up; a model that exists already is left as it is. Without it,
    /// `scoring/` beside the `--journeys` directory, if there is one.
    #[arg(long, env = "WAYLINE_SCORING")]
    scoring: Option<PathBuf>,
    /// Directory of tag rules and segments (`tag-rules/NAME.json`, `segments/NAME.json`, each
    /// the body of its `PUT`) to define at start-up; one that exists already is left as it
    /// is. Without it, `audiences/` beside the `--journeys` directory, if there is one.
    #[arg(long, env = "WAYLINE_AUDIENCES")]
    audiences: Option<PathBuf>,
    /// A file of lifecycle stage rules (the body of `PUT /v1/lifecycle`) to set at start-up
    /// when none are set. Without it, `lifecycle/stages.json` beside the `--journeys`
    /// directory, if there is one.
    #[arg(long, env = "WAYLINE_LIFECYCLE")]
    lifecycle: Option<PathBuf>,
    /// Journey worker threads; the number of cores when absent.
    #[arg(long, env = "WAYLINE_WORKERS")]
    workers: Option<usize>,
    /// An admin token to start with. The store keeps it (as a hash) as an admin token named
    /// `bootstrap` unless it knows it already; a revoked one stays revoked. Without it, the
    /// one in `DATA/api-token`, generated on first start (readable by the owner only).
    #[arg(long, env = "WAYLINE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Write key for Segment-style ingest (HTTP Basic user name). Without it, one is generated
    /// and written to `DATA/write-key`.
    #[arg(long, env = "WAYLINE_WRITE_KEY", hide_env_values = true)]
    write_key: Option<String>,
    /// Key that channel secrets are sealed with at rest: 64 hex digits (`openssl rand -hex
    /// 32`). Keep it out of the data directory's backups. Without it, and without
    /// `--secret-key-file`, one is generated and written to `DATA/secret-key`.
    #[arg(long, env = "WAYLINE_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Where people reach this server from outside, for the tracking and unsubscribe links in
    /// messages (e.g. `https://mail.example.com`); `http://LISTEN` when absent.
    #[arg(long, env = "WAYLINE_PUBLIC_URL")]
    public_url: Option<String>,
    /// A file holding the sealing key (64 hex digits), e.g. a mounted secret.
    #[arg(long, env = "WAYLINE_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// A PEM file of CA certificates that channels' outbound TLS (HTTPS, SMTP STARTTLS and
    /// SMTPS) trusts besides the public roots: a company relay's or API's own CA.
    #[arg(long, env = "WAYLINE_TLS_ROOTS")]
    tls_roots: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitSettings,
}

/// What the server runs with once the layers are put together.
struct Settings {
    listen: SocketAddr,
    data: PathBuf,
    plugins: Option<PathBuf>,
    journeys: Option<PathBuf>,
    channels: Option<PathBuf>,
    templates: Option<PathBuf>,
    scoring: Option<PathBuf>,
    audiences: Option<PathBuf>,
    lifecycle: Option<PathBuf>,
    workers: Option<usize>,
    token: Option<String>,
    write_key: Option<String>,
    secret_key: Option<String>,
    secret_key_file: Option<PathBuf>,
    public_url: Option<String>,
    tls_roots: Option<PathBuf>,
    edges: HttpEdges,
    max_plugin_bytes: usize,
    store_stall: Duration,
}

impl Settings {
    /// Flags and environment (which clap has already layered) over the config file.
    fn layered(args: ServeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let limits = args.limits.over(file.limits);
        // clap has merged flags over the environment for each of the two; between them, one
        // given as a flag wins over the other from the environment.
        let from_env = |name: &str, given: Option<&str>| {
            given.is_some() && std::env::var(name).ok().as_deref() == given
        };
        let key_from_env = from_env("WAYLINE_SECRET_KEY", args.secret_key.as_deref());
        let file_from_env = from_env(
            "WAYLINE_SECRET_KEY_FILE",
            args.secret_key_file.as_ref().and_then(|p| p.to_str()),
        );
        let (secret_key, secret_key_file) = match (args.secret_key, args.secret_key_file) {
            (Some(key), Some(_)) if file_from_env && !key_from_env => (Some(key), None),
            (Some(_), Some(file)) if key_from_env && !file_from_env => (None, Some(file)),
            (Some(_), Some(_)) => {
                anyhow::bail!("give the secret key or its file (--secret-key-file), not both")
            }
            // A key given above the file's layer replaces the file's key or key file.
            (Some(key), None) => (Some(key), None),
            (None, Some(path)) => (None, Some(path)),
            (None, None) => match (file.secret_key, file.secret_key_file) {
                (Some(_), Some(_)) => {
                    anyhow::bail!("config file: give `secret_key` or `secret_key_file`, not both")
                }
                pair => pair,
            },
        };
        Ok(Settings {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            data: args
                .data
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from("wayline-data")),
            plugins: args.plugins.or(file.plugins),
            journeys: args.journeys.or(file.journeys),
            channels: args.channels.or(file.channels),
            templates: args.templates.or(file.templates),
            scoring: args.scoring.or(file.scoring),
            audiences: args.audiences.or(file.audiences),
            lifecycle: args.lifecycle.or(file.lifecycle),
            workers: args.workers.or(file.workers),
            token: args.token.or(file.token),
            write_key: args.write_key.or(file.write_key),
            secret_key,
            secret_key_file,
            public_url: args.public_url.or(file.public_url),
            tls_roots: args.tls_roots.or(file.tls_roots),
            edges: limits.edges()?,
            max_plugin_bytes: limits.max_plugin_bytes(RuntimeConfig::default().max_binary_bytes)?,
            store_stall: limits.store_stall(crate::store::DEFAULT_LIMIT)?,
        })
    }
}

pub async fn run(args: ServeArgs) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let args = Settings::layered(args)?;
    if args.workers == Some(0) {
        anyhow::bail!("workers: must be at least 1");
    }
    std::fs::create_dir_all(&args.data)?;
    let sealing_key = sealing_key(&args)?;
    let tls_roots = match &args.tls_roots {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--tls-roots {}: {e}", path.display()))?;
            TlsRoots::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("--tls-roots {}: {e}", path.display()))?
        }
        None => TlsRoots::default(),
    };
    let (token, first) = secret_or_generated(args.token, &args.data, "api-token", "--token")?;
    if first {
        // On standard output, once, and never through the log.
        println!(
            "wayline: created the first admin token; it is also in {} (readable by you only). Make named tokens with POST /v1/admin/tokens and revoke this one.\n{token}",
            args.data.join("api-token").display()
        );
    }
    let (write_key, _) =
        secret_or_generated(args.write_key, &args.data, "write-key", "--write-key")?;
    let store = SledStore::open(&args.data.join("store"))?;
    store.watch_log(args.store_stall)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let clock: SharedClock = Arc::new(SystemClock);
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(args.data.join("compile-cache")),
        clock: clock.clone(),
        kv: Arc::new(StoredKv(store.clone())),
        tls_roots,
        max_binary_bytes: args.max_plugin_bytes,
        ..RuntimeConfig::default()
    })?);
    let registry = Arc::new(Registry::default());
    if let Some(dir) = &args.plugins {
        let dir = dir.clone();
        let (runtime, registry) = (runtime.clone(), registry.clone());
        let loaded =
            tokio::task::spawn_blocking(move || registry.load_dir(&runtime, &dir)).await??;
        for plugin in &loaded {
            tracing::info!(plugin = %plugin.id, kind = plugin.kind.as_str(), sha256 = %plugin.sha256, "plugin loaded");
        }
    }
    let counts = runtime.cache_counts();
    tracing::info!(allocator = ?runtime.allocator(), compiled = counts.compiled, cache_hits = counts.hits, cache_rejected = counts.rejected, "plugin runtime ready");
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut state = AppState::start(
        runtime,
        registry,
        store,
        clock,
        &token,
        &write_key,
        workers,
        MessagingConfig {
            sealing_key,
            public_url: args
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", args.listen)),
            delivery: DeliverySettings::default(),
        },
    )?;
    state.edges = args.edges;
    // Channels and templates first: publishing a journey checks that what it sends exists.
    let beside_journeys = |name: &str| {
        args.journeys
            .as_ref()
            .and_then(|dir| dir.parent())
            .map(|parent| parent.join(name))
            .filter(|dir| dir.is_dir())
    };
    let (scoring, models) = (
        state.journeys.scoring.clone(),
        args.scoring.clone().or_else(|| beside_journeys("scoring")),
    );
    let (audiences, definitions) = (
        state.journeys.audiences.clone(),
        args.audiences
            .clone()
            .or_else(|| beside_journeys("audiences")),
    );
    let (lifecycle, stages) = (
        state.journeys.lifecycle.clone(),
        (args.lifecycle.clone())
            .or_else(|| beside_journeys("lifecycle").map(|dir| dir.join("stages.json"))),
    );
    let (messaging, channels, templates) = (
        state.messaging.clone(),
        args.channels
            .clone()
            .or_else(|| beside_journeys("channels")),
        args.templates
            .clone()
            .or_else(|| beside_journeys("templates")),
    );
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        if let Some(dir) = channels {
            for name in seed::channels(&messaging, &dir)? {
                tracing::info!(channel = %name, "channel bound");
            }
        }
        if let Some(dir) = templates {
            for name in seed::templates(&messaging, &dir)? {
                tracing::info!(template = %name, "template stored");
            }
        }
        if let Some(dir) = models {
            for name in crate::scoring::seed(&scoring, &dir)? {
                tracing::info!(model = %name, "scoring model created");
            }
        }
        if let Some(dir) = definitions {
            for name in crate::audiences::seed(&audiences, &dir)? {
                tracing::info!(definition = %name, "segment or tag rule defined");
            }
        }
        // Only into a store that never had rules: rules an operator turned off stay off.
        if let Some(file) = stages
            && lifecycle.never_set()?
        {
            crate::lifecycle::seed(&lifecycle, &file)?;
            tracing::info!(file = %file.display(), "lifecycle stage rules set");
        }
        Ok(())
    })
    .await??;
    if let Some(dir) = &args.journeys {
        let (journeys, dir) = (state.journeys.clone(), dir.clone());
        tokio::task::spawn_blocking(move || load_journeys(&journeys, &dir)).await??;
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, workers, "listening");
    let scheduler = state.scheduler.clone();
    let messaging = state.messaging.clone();
    let flush_on_exit = state.store.clone();
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    scheduler.stop();
    // Messages in flight are recorded before the store is flushed and closed.
    messaging.shutdown().await;
    flush_on_exit.flush()?;
    Ok(())
}

/// Create and publish each `ID.json` in `dir` whose journey does not exist yet.
fn load_journeys(journeys: &Journeys, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let draft: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match journeys.store.journey(&id)? {
            // Created from this file by an earlier start that stopped before publishing it.
            Some(record) if record.published_version == 0 && record.draft == draft => {}
            Some(_) => {
                tracing::info!(journey = %id, "journey exists; left as it is");
                continue;
            }
            None => {
                journeys.create(Some(id.clone()), draft, crate::auth::STARTUP_ACTOR)?;
            }
        }
        match journeys.publish(&id, crate::auth::STARTUP_ACTOR) {
            Ok((version, warnings)) => {
                tracing::info!(journey = %id, version = version.version, "journey published");
                for warning in warnings {
                    tracing::warn!(journey = %id, node = ?warning.node, "{}", warning.message);
                }
            }
            Err(JourneyError::Invalid(problems)) => {
                anyhow::bail!(
                    "{}: cannot publish: {}",
                    path.display(),
                    serde_json::to_string(&problems)?
                )
            }
            Err(error) => return Err(error.into()),
        }
    }
    journeys.store.flush()?;
    Ok(())
}

/// The secret given on the command line, else the one in `DATA/<file>`, created (mode 0600)
/// on first start; and whether it was created now.
fn secret_or_generated(
    given: Option<String>,
    data: &std::path::Path,
    file: &str,
    flag: &str,
) -> anyhow::Result<(String, bool)> {
    match given {
        Some(secret) if secret.len() >= 16 => return Ok((secret, false)),
        Some(_) => anyhow::bail!("{flag} must be at least 16 characters"),
        None => {}
    }
    let path = data.join(file);
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_owned();
        if token.len() < 16 {
            anyhow::bail!(
                "{} holds {} characters; a secret must be at least 16 (delete the file to have one generated)",
                path.display(),
                token.len()
            );
        }
        return Ok((token, false));
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let token = hex::encode(bytes);
    write_private(&path, &token)?;
    tracing::info!(path = %path.display(), "generated {file}");
    Ok((token, true))
}

/// The key channel secrets are sealed with: given, read from its file, or generated into
/// `DATA/secret-key` on first start.
fn sealing_key(args: &Settings) -> anyhow::Result<SealingKey> {
    let text = match (&args.secret_key, &args.secret_key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the secret key {}: {e}", path.display()))?,
        (None, None) => {
            let path = args.data.join("secret-key");
            match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(_) => {
                    let key = SealingKey::generate_hex().map_err(anyhow::Error::msg)?;
                    write_private(&path, &key)?;
                    tracing::info!(path = %path.display(), "generated secret-key");
                    key
                }
            }
        }
    };
    SealingKey::from_hex(&text).map_err(|e| anyhow::anyhow!("the secret key: {e}"))
}

/// Create `path` readable by the owner only, holding `text`, whole or not at all: written
/// beside it, synced and renamed into place, so a server killed in its first second never
/// leaves an empty or half-written secret that the next start would refuse.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}
