//! The HTTP API. Routes are grouped per area; handlers translate HTTP to calls on the layers
//! below and never reach into wasm or the store's layout themselves.

mod error;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

pub use error::ApiError;

use crate::registry::{PluginSummary, Registry};
use crate::runtime::Runtime;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/v1", plugin_routes())
        .with_state(state)
}

fn plugin_routes() -> Router<AppState> {
    Router::new().route("/plugins", get(list_plugins))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn list_plugins(State(state): State<AppState>) -> Result<Json<Vec<PluginSummary>>, ApiError> {
    Ok(Json(state.registry.list()))
}
