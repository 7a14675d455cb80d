//! The HTTP API. Routes are grouped per area; handlers translate HTTP to calls on the layers
//! below and never reach into wasm or the store's layout themselves.

mod contacts;
mod error;
mod journeys;
mod segment;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use error::ApiError;

use crate::clock::SharedClock;
use crate::journeys::Journeys;
use crate::registry::{PluginSummary, Registry};
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::store::{Store, StoreError};

/// Largest request body accepted (a batch of events included).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    /// Every `/v1` request must carry this bearer token (until roles and tokens arrive).
    pub token: Arc<str>,
    /// The write key Segment-style ingest (`/v1/identify`, `/v1/track`, …) authenticates with.
    pub write_key: Arc<str>,
    pub journeys: Arc<Journeys>,
    /// Woken when new work is queued, so it runs at once.
    pub scheduler: Arc<Scheduler>,
}

impl AppState {
    /// Put the parts together and start the journey workers (`workers` threads).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        clock: SharedClock,
        token: &str,
        write_key: &str,
        workers: usize,
    ) -> Result<AppState, StoreError> {
        let journeys = Arc::new(Journeys::new(
            store.clone(),
            runtime.clone(),
            registry.clone(),
            clock.clone(),
        )?);
        let scheduler = Scheduler::start(journeys.clone(), workers);
        Ok(AppState {
            runtime,
            registry,
            store,
            clock,
            token: token.into(),
            write_key: write_key.into(),
            journeys,
            scheduler,
        })
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(plugin_routes())
        .merge(contacts::routes())
        .merge(journeys::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .merge(
            segment::routes().route_layer(middleware::from_fn_with_state(
                state.clone(),
                segment::require_write_key,
            )),
        );
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/v1", v1)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn plugin_routes() -> Router<AppState> {
    Router::new().route("/plugins", get(list_plugins))
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

async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => {
            Ok(next.run(request).await)
        }
        _ => Err(ApiError::unauthorized()),
    }
}

/// Compare without leaking, through timing, how much of the token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Json` whose rejections are our error shape, with a stable code.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
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
