//! `wayline serve`: the server on the embedded default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::api::{AppState, app};
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory (store, compile cache).
    #[arg(long, default_value = "wayline-data")]
    data: PathBuf,
    /// Directory of plugin binaries to load at start-up.
    #[arg(long)]
    plugins: Option<PathBuf>,
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
    std::fs::create_dir_all(&args.data)?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(args.data.join("compile-cache")),
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
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    axum::serve(listener, app(AppState { runtime, registry }))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}
