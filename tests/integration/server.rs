//! A real Wayline server for the tests: 127.0.0.1, real sled on a temp dir, a virtual clock.

use std::sync::Arc;

use serde_json::Value as Json;
use wayline::api::{AppState, HttpEdges, app};
use wayline::clock::VirtualClock;
use wayline::messaging::{DeliverySettings, MessagingConfig, SealingKey, seed};
use wayline::registry::Registry;
use wayline::runtime::egress::TlsRoots;
use wayline::store::{SledStore, Store};

use crate::support;

pub const TOKEN: &str = "test-token-0123456789";
pub const WRITE_KEY: &str = "segment-write-key-0123";
pub const SEALING_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A running server and what a test needs to drive it.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    /// The server's clock: tests move it to let waits pass.
    pub clock: VirtualClock,
    pub state: AppState,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.scheduler.stop();
        self.state.messaging.stop();
    }
}

impl Server {
    /// A server on 127.0.0.1 with a virtual clock, real sled on a temp dir and two journey
    /// workers; with the first-party plugins and the `flaky-action` and `flaky-trigger` fixtures
    /// loaded when `plugins` is set.
    pub async fn start(plugins: bool) -> Server {
        Self::start_on(plugins, |_| {}).await
    }

    /// Like [`Server::start`], after `prepare` has had the store's directory to itself (to
    /// leave records there that a server would find on disk).
    pub async fn start_on(plugins: bool, prepare: impl FnOnce(&std::path::Path)) -> Server {
        Self::start_with(
            plugins,
            prepare,
            |store| Arc::new(store),
            HttpEdges::default(),
            TlsRoots::default(),
        )
        .await
    }

    /// Like [`Server::start`] with the plugins, their outbound TLS trusting `roots` (a test
    /// CA) besides the public roots, as `wayline serve --tls-roots` sets it.
    pub async fn start_trusting(roots: TlsRoots) -> Server {
        let edges = HttpEdges::default();
        Self::start_with(true, |_| {}, |store| Arc::new(store), edges, roots).await
    }

    /// Like [`Server::start`], on the store `wrap` makes of the real one (to make it fail).
    pub async fn start_wrapped(
        plugins: bool,
        wrap: impl FnOnce(SledStore) -> Arc<dyn Store>,
    ) -> Server {
        Self::start_with(
            plugins,
            |_| {},
            wrap,
            HttpEdges::default(),
            TlsRoots::default(),
        )
        .await
    }

    /// Like [`Server::start`] with the plugins, serving each request within `edges` (to see
    /// the timeout and the load shedding without waiting 30 s or sending a thousand requests).
    pub async fn start_within(edges: HttpEdges) -> Server {
        let roots = TlsRoots::default();
        Self::start_with(true, |_| {}, |store| Arc::new(store), edges, roots).await
    }

    async fn start_with(
        plugins: bool,
        prepare: impl FnOnce(&std::path::Path),
        wrap: impl FnOnce(SledStore) -> Arc<dyn Store>,
        edges: HttpEdges,
        roots: TlsRoots,
    ) -> Server {
        let data = tempfile::tempdir().unwrap();
        prepare(&data.path().join("store"));
        let (runtime, clock) = support::runtime_trusting(roots);
        let runtime = Arc::new(runtime);
        let registry = Arc::new(Registry::default());
        if plugins {
            registry.load_dir(&runtime, &support::plugin_dir()).unwrap();
            for fixture in ["flaky-action", "flaky-trigger"] {
                registry
                    .insert(support::load(&runtime, &support::fixture_bytes(fixture)))
                    .unwrap();
            }
        }
        let store = wrap(SledStore::open(&data.path().join("store")).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut state = AppState::start(
            runtime,
            registry,
            store,
            Arc::new(clock.clone()),
            TOKEN,
            WRITE_KEY,
            2,
            MessagingConfig {
                sealing_key: SealingKey::from_hex(SEALING_KEY).unwrap(),
                public_url: base.clone(),
                delivery: DeliverySettings::default(),
            },
        )
        .unwrap();
        state.edges = edges;
        if plugins {
            // As `cargo xtask serve` does: the example channel and templates, which the
            // example journeys send.
            let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
            seed::channels(&state.messaging, &examples.join("channels")).unwrap();
            seed::templates(&state.messaging, &examples.join("templates")).unwrap();
        }
        let router = app(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Server {
            base,
            client: reqwest::Client::new(),
            clock,
            state,
            _data: data,
        }
    }

    /// The server's data directory (its store is `store/` in it).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// Flush the store and fail if `text` is anywhere in the bytes of its files: a secret or
    /// token that must be kept sealed or hashed.
    pub fn assert_stored_nowhere(&self, text: &str) {
        self.state.store.flush().unwrap();
        let mut files = vec![self.data_dir().to_owned()];
        let mut read = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            read += bytes.len();
            assert!(
                !bytes.windows(text.len()).any(|w| w == text.as_bytes()),
                "{} holds {text:?} in clear",
                path.display()
            );
        }
        assert!(read > 0, "the store wrote nothing");
    }

    /// Wait until the journeys have done all the work queued and due by the clock.
    pub async fn settle(&self) {
        let scheduler = self.state.scheduler.clone();
        let settled = tokio::task::spawn_blocking(move || {
            scheduler.settle(std::time::Duration::from_secs(30))
        })
        .await
        .unwrap();
        assert!(settled, "journey work did not settle within 30 s");
    }

    /// Move the clock on by `ms` and let everything due run.
    pub async fn advance(&self, ms: i64) {
        self.clock.advance(ms);
        self.settle().await;
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> (u16, Json) {
        self.send_as(TOKEN, method, path, body).await
    }

    /// A request with `token` as bearer token.
    pub async fn send_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> (u16, Json) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Json::Null))
    }

    pub async fn post(&self, path: &str, body: Json) -> (u16, Json) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// A POST without a body: an action on what the path names (publish, pause, retry, …).
    pub async fn act(&self, path: &str) -> (u16, Json) {
        self.send(reqwest::Method::POST, path, None).await
    }

    pub async fn put(&self, path: &str, body: Json) -> (u16, Json) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Json) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// A Segment-style call: the write key as HTTP Basic user name.
    pub async fn segment(&self, path: &str, write_key: &str, body: Json) -> (u16, Json) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .basic_auth(write_key, Some(""))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Json::Null),
        )
    }

    pub async fn raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Json) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Json::Null),
        )
    }
}
