//! The HTTP API. Routes are grouped per area; each area lists its routes with the access they
//! need and whether they read a body ([`Route`]), and the router is built from that one list, so
//! no route exists without a declared access. Handlers translate HTTP to calls on the layers
//! below and never reach into wasm or the store's layout themselves.
//!
//! Every response that is an error has one shape, `{"error": {"code", "message", …}}`, also
//! for an unknown route, a wrong method, a bad path parameter, a timeout or an overload; every
//! request is logged with its status and duration.

mod access;
mod audiences;
mod backup;
mod bounded;
mod contacts;
mod error;
mod extract;
mod journeys;
mod lifecycle;
mod messaging;
mod openapi;
mod operations;
mod plugins;
mod rate;
mod scoring;
mod segment;
mod settings;
mod tokens;
mod tracking;
mod transfer;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use error::ApiError;
pub use extract::{ApiJson, ApiJsonOrList, ApiPath, ApiQuery};
pub use rate::Rate;

use crate::auth::{Permission, Tokens};
use crate::clock::SharedClock;
use crate::journeys::Journeys;
use crate::messaging::{Messaging, MessagingConfig};
use crate::registry::{PluginSummary, Registry};
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::store::{Store, StoreError};
use crate::uploads::Uploads;

/// Largest request body accepted (a batch of events included), once decompressed.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The bounds every request is served within.
#[derive(Debug, Clone, Copy)]
pub struct HttpEdges {
    /// Longest a request may take before it is answered 503 `timeout`.
    pub timeout: Duration,
    /// Most requests served at once; more are answered 503 `overloaded` at once.
    pub max_concurrent: usize,
    /// How fast one token may call the admin routes.
    pub admin_rate: Rate,
    /// How fast one token (or the write key) may send contacts and events in.
    pub ingest_rate: Rate,
}

impl Default for HttpEdges {
    fn default() -> Self {
        HttpEdges {
            timeout: Duration::from_secs(30),
            max_concurrent: 1024,
            admin_rate: Rate {
                per_second: 10.0,
                burst: 100.0,
            },
            ingest_rate: Rate {
                per_second: 5_000.0,
                burst: 10_000.0,
            },
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the health check, tracking links, provider webhooks (which check signatures).
    Public,
    /// A token, as `Authorization: Bearer <token>`, whose role or grants give this.
    Needs(Permission),
    /// Segment ingest: the write key as HTTP Basic user name, or a token that may ingest.
    WriteKey,
}

/// One route: what it answers, who may call it, and whether it reads a body.
pub struct Route {
    pub method: Method,
    /// As the router writes it: `/v1/contacts/{id}`.
    pub path: &'static str,
    pub access: Access,
    /// Whether it reads a request body; one that does not refuses a body sent to it.
    pub body: bool,
    /// Whether it reads a body larger than [`MAX_BODY_BYTES`] (a plugin binary) and bounds it
    /// itself.
    bounds_own_body: bool,
    /// Whether it may take longer than [`HttpEdges::timeout`] (an import of a million rows).
    unhurried: bool,
    handler: MethodRouter<AppState>,
}

impl Route {
    fn new(
        method: Method,
        path: &'static str,
        access: Access,
        body: bool,
        handler: MethodRouter<AppState>,
    ) -> Self {
        Route {
            method,
            path,
            access,
            body,
            bounds_own_body: false,
            unhurried: false,
            handler,
        }
    }

    /// The route's work grows with what it is sent: no time limit.
    fn unhurried(mut self) -> Self {
        self.unhurried = true;
        self
    }

    /// The route reads a body past [`MAX_BODY_BYTES`] and bounds it itself.
    fn bounding_its_own_body(mut self) -> Self {
        self.bounds_own_body = true;
        self
    }
}

/// Every route the API serves.
pub fn routes() -> Vec<Route> {
    let mut routes = vec![
        Route::new(Method::GET, "/healthz", Access::Public, false, get(healthz)),
        openapi::route(),
        Route::new(
            Method::GET,
            "/v1/plugins",
            Access::Needs(Permission::ReadReports),
            false,
            get(list_plugins),
        ),
    ];
    routes.extend(backup::routes());
    routes.extend(contacts::routes());
    routes.extend(journeys::routes());
    routes.extend(lifecycle::routes());
    routes.extend(audiences::routes());
    routes.extend(messaging::routes());
    routes.extend(operations::routes());
    routes.extend(plugins::routes());
    routes.extend(scoring::routes());
    routes.extend(segment::routes());
    routes.extend(settings::routes());
    routes.extend(tokens::routes());
    routes.extend(tracking::routes());
    routes.extend(transfer::routes());
    routes.extend(webhooks::routes());
    routes
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    /// The API tokens, by hash: who a request is from and what it may do.
    pub tokens: Arc<Tokens>,
    /// The write key Segment-style ingest (`/v1/identify`, `/v1/track`, …) authenticates with.
    pub write_key: Arc<str>,
    pub journeys: Arc<Journeys>,
    /// Woken when new work is queued, so it runs at once.
    pub scheduler: Arc<Scheduler>,
    /// Channels, templates and the delivery worker.
    pub messaging: Arc<Messaging>,
    /// Plugins uploaded through the admin API.
    pub uploads: Arc<Uploads>,
    /// Each caller's rate on the admin and ingest routes.
    pub rates: Arc<rate::Buckets>,
    pub edges: HttpEdges,
}

impl AppState {
    /// Put the parts together, install the plugins uploaded before (beside those already in
    /// `registry`), and start the journey workers (`workers` threads) and the delivery worker.
    /// `token` is the admin token the server was started with: added to the
    /// store's tokens unless a token with its hash is there (a revoked one stays revoked).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        clock: SharedClock,
        token: &str,
        write_key: &str,
        workers: usize,
        messaging: MessagingConfig,
    ) -> Result<AppState, StoreError> {
        let tokens = Arc::new(Tokens::load(store.clone())?);
        tokens
            .ensure_admin(token, clock.now())
            .map_err(|error| match error {
                crate::auth::TokenError::Store(error) => error,
                other => StoreError::Invalid(other.to_string()),
            })?;
        // Before the journeys and channels, which may pin an uploaded plugin.
        let uploads = Arc::new(Uploads::new(
            runtime.clone(),
            registry.clone(),
            store.clone(),
        ));
        for plugin in uploads.restore()? {
            tracing::info!(plugin = %plugin.id, kind = plugin.kind.as_str(), sha256 = %plugin.sha256, "uploaded plugin installed");
        }
        let journeys = Arc::new(Journeys::new(
            store.clone(),
            runtime.clone(),
            registry.clone(),
            clock.clone(),
        )?);
        let scheduler = Scheduler::start(journeys.clone(), workers);
        let messaging = Messaging::new(
            store.clone(),
            registry.clone(),
            runtime.clone(),
            clock.clone(),
            scheduler.clone(),
            messaging,
        );
        messaging.start();
        Ok(AppState {
            runtime,
            registry,
            store,
            clock,
            tokens,
            write_key: write_key.into(),
            journeys,
            scheduler,
            messaging,
            uploads,
            rates: Arc::default(),
            edges: HttpEdges::default(),
        })
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let edges = state.edges;
    let mut router = Router::new();
    for route in routes() {
        let mut handler = route.handler;
        if !route.body {
            handler = handler.route_layer(middleware::from_fn(refuse_body));
        }
        // Bodies are bounded as they arrive (decompressed, if they were sent compressed).
        handler = if route.bounds_own_body {
            handler.layer::<_, std::convert::Infallible>(DefaultBodyLimit::disable())
        } else {
            handler
                .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer::<_, std::convert::Infallible>(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        };
        handler = match route.access {
            Access::Public => handler,
            Access::Needs(permission) => handler.route_layer(middleware::from_fn_with_state(
                (state.clone(), permission),
                access::require,
            )),
            Access::WriteKey => handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                segment::require_write_key,
            )),
        };
        if !route.unhurried {
            handler = handler.layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                edges.timeout,
            ));
        }
        router = router.route(route.path, handler);
    }
    router
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(RequestDecompressionLayer::new())
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "the server is serving as many requests as it can; try again shortly",
                    )
                }))
                .load_shed()
                // One semaphore for the whole server: `Router::layer` wraps every route on
                // its own, so a per-layer limit would be a limit per route.
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::new(
                    tokio::sync::Semaphore::new(edges.max_concurrent),
                ))),
        )
        .layer(middleware::from_fn(error::errors_as_json))
        .layer(
            TraceLayer::new_for_http()
                // The path only: a query may hold an address searched for, which the log
                // must not keep.
                .make_span_with(|request: &Request| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .with_state(state)
}

async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(
        "route_not_found",
        format!("there is no route `{}`", request.uri().path()),
    )
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "`{}` does not take {}",
            request.uri().path(),
            request.method()
        ),
    )
}

/// A route that reads no body refuses one, rather than ignore what the client meant by it.
async fn refuse_body(request: Request, next: Next) -> Result<Response, ApiError> {
    let sent = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .is_some_and(|length| length.trim() != "0")
        || request.headers().contains_key(TRANSFER_ENCODING);
    if sent {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unexpected_body",
            format!(
                "{} {} takes no request body; send none",
                request.method(),
                request.uri().path()
            ),
        ));
    }
    Ok(next.run(request).await)
}

/// Whether the server can do its work: 200 when it can, 503 naming what stops it (the store
/// refusing writes, a journey worker gone). Either way, what opening the store repaired.
async fn healthz(State(state): State<AppState>) -> Response {
    let mut problems = state.scheduler.problems();
    if let Err(error) = state.store.writable() {
        problems.push(format!("the store refuses writes: {error}"));
    }
    let report = serde_json::json!({
        "store": {"recovery": state.store.recovery()},
    });
    if problems.is_empty() {
        let mut body = report;
        body["status"] = "ok".into();
        return Json(body).into_response();
    }
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "unhealthy",
        problems.join("; "),
    )
    .with_details(serde_json::json!({"problems": problems, "store": report["store"]}))
    .into_response()
}

/// A loaded plugin and what its key-value space holds, of what it may.
#[derive(serde::Serialize)]
struct PluginView {
    #[serde(flatten)]
    summary: PluginSummary,
    kv: KvView,
}

#[derive(serde::Serialize)]
struct KvView {
    keys: u64,
    bytes: u64,
    max_keys: u64,
    max_bytes: u64,
}

async fn list_plugins(State(state): State<AppState>) -> Result<Json<Vec<PluginView>>, ApiError> {
    let (registry, store) = (state.registry.clone(), state.store.clone());
    let plugins = blocking(move || {
        registry
            .list()
            .into_iter()
            .map(|summary| {
                let usage = store.plugin_kv_usage(&summary.name)?;
                Ok(PluginView {
                    kv: KvView {
                        keys: usage.keys,
                        bytes: usage.bytes,
                        max_keys: crate::plugin_kv::QUOTA.keys,
                        max_bytes: crate::plugin_kv::QUOTA.bytes,
                    },
                    summary,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(plugins))
}

/// Compare without leaking, through timing, how much of the token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Run blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )
    })?
}
