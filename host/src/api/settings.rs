//! The workspace settings: `GET /v1/settings` for anyone with a token to see how content is
//! governed and who is held out, `PUT /v1/settings` for an admin to change it (recorded in the
//! audit log).

use axum::extract::State;
use axum::http::Method;
use axum::routing::{get, put};
use axum::{Extension, Json};

use super::{Access, ApiError, ApiJson, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::store::{AuditEntry, Workspace};

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::GET,
            "/v1/settings",
            Needs(Permission::Authenticated),
            false,
            get(read),
        ),
        Route::new(
            Method::PUT,
            "/v1/settings",
            Needs(Permission::Admin),
            true,
            put(replace),
        ),
    ]
}

async fn read(State(state): State<AppState>) -> Result<Json<Workspace>, ApiError> {
    let store = state.store.clone();
    Ok(Json(blocking(move || Ok(store.workspace()?)).await?))
}

async fn replace(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiJson(workspace): ApiJson<Workspace>,
) -> Result<Json<Workspace>, ApiError> {
    let percent = workspace.control_group_percent;
    if !(0.0..=crate::messaging::control::MAX_PERCENT).contains(&percent) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_settings",
            format!(
                "`control_group_percent` is a share of contacts from 0 to {}, not {percent}",
                crate::messaging::control::MAX_PERCENT
            ),
        ));
    }
    let store = state.store.clone();
    let now = state.clock.now();
    let saved = blocking(move || {
        let before = store.workspace()?;
        let detail = serde_json::json!({"before": before, "after": workspace});
        let audit = AuditEntry::new(now, by.actor(), "settings.update", "workspace", detail);
        store.put_workspace(&workspace, audit)?;
        Ok(workspace)
    })
    .await?;
    Ok(Json(saved))
}
