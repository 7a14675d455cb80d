//! What the benchmarks share: the machine they ran on, their settings, what they cost. Each
//! bench compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use wayline::api::{AppState, app};
use wayline::clock::{SharedClock, SystemClock};
use wayline::plugin_kv::StoredKv;
use wayline::registry::Registry;
use wayline::runtime::Runtime;
use wayline::store::{SledStore, Store};

/// The CPU model, as /proc/cpuinfo names it.
pub fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where the built first-party plugins are.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("WAYLINE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

/// CPU time this process has used, user and system, in seconds (clock ticks of 10 ms): the
/// cost of a load, which the neighbours on a shared machine do not change as much as its
/// wall-clock time.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// An HTTP sink on 127.0.0.1 that accepts every POST to `/hook` at once, counting them.
pub async fn http_sink() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                axum::Json(serde_json::json!({"id": "ok"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, count)
}

/// A server on 127.0.0.1 on real sled in a temporary directory, with the system clock and two
/// journey workers, its admin token `token`.
pub struct Server {
    pub base: String,
    pub state: AppState,
    pub _data: tempfile::TempDir,
}

pub async fn server(registry: Arc<Registry>, runtime: Arc<Runtime>, token: &str) -> Server {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.path().join("store")).unwrap());
    let clock: SharedClock = Arc::new(SystemClock);
    let runtime = Arc::new(runtime.with_env(clock.clone(), Arc::new(StoredKv(store.clone()))));
    let state = AppState::start(
        runtime,
        registry,
        store,
        clock,
        token,
        "write-key-0123456789",
        2,
        wayline::messaging::MessagingConfig {
            sealing_key: wayline::messaging::SealingKey::from_hex(&"00".repeat(32)).unwrap(),
            public_url: "http://127.0.0.1:8080".into(),
            delivery: Default::default(),
        },
    )
    .unwrap();
    let base = serve(&state).await;
    Server {
        base,
        state,
        _data: data,
    }
}

/// Serve the API of `state` on 127.0.0.1, on a port of its own; its base URL.
pub async fn serve(state: &AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}
