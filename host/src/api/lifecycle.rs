//! The lifecycle stage rules over HTTP: `GET /v1/lifecycle` for anyone who reads reports,
//! `PUT /v1/lifecycle` for admins and managers (recorded in the audit log).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Extension, Json};

use super::{Access, ApiError, ApiJson, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::lifecycle::{LifecycleError, RulesRequest};

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::GET,
            "/v1/lifecycle",
            Needs(Permission::ReadReports),
            false,
            get(read),
        ),
        Route::new(
            Method::PUT,
            "/v1/lifecycle",
            Needs(Permission::Operate),
            true,
            axum::routing::put(replace),
        ),
    ]
}

impl From<LifecycleError> for ApiError {
    fn from(error: LifecycleError) -> Self {
        let message = error.to_string();
        match error {
            LifecycleError::Invalid(problems) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_lifecycle",
                message,
            )
            .with_details(serde_json::json!({ "problems": problems })),
            LifecycleError::Store(error) => error.into(),
        }
    }
}

async fn read(State(state): State<AppState>) -> Json<RulesRequest> {
    Json(state.journeys.lifecycle.request())
}

async fn replace(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiJson(request): ApiJson<RulesRequest>,
) -> Result<Json<RulesRequest>, ApiError> {
    let journeys = state.journeys.clone();
    let saved = blocking(move || Ok(journeys.lifecycle.put(request, by.actor())?)).await?;
    Ok(Json(saved))
}
