//! Scoring models and score history over HTTP: `GET /v1/scoring/models` for anyone who reads
//! reports, `PUT`/`DELETE /v1/scoring/models/{name}` for admins and managers (recorded in the
//! audit log), and `GET /v1/contacts/{id}/score-history`: why a lead is hot, change by change.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json};
use serde::Deserialize;

use super::{Access, ApiError, ApiJson, ApiPath, ApiQuery, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::scoring::{ModelRequest, ScoringError};
use crate::store::ScorePage;

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::GET,
            "/v1/scoring/models",
            Needs(Permission::ReadReports),
            false,
            get(list),
        ),
        Route::new(
            Method::GET,
            "/v1/scoring/models/{name}",
            Needs(Permission::ReadReports),
            false,
            get(read),
        ),
        Route::new(
            Method::PUT,
            "/v1/scoring/models/{name}",
            Needs(Permission::Operate),
            true,
            axum::routing::put(replace),
        ),
        Route::new(
            Method::DELETE,
            "/v1/scoring/models/{name}",
            Needs(Permission::Operate),
            false,
            axum::routing::delete(remove),
        ),
        Route::new(
            Method::GET,
            "/v1/contacts/{id}/score-history",
            Needs(Permission::ReadContacts),
            false,
            get(history),
        ),
    ]
}

impl From<ScoringError> for ApiError {
    fn from(error: ScoringError) -> Self {
        let message = error.to_string();
        match error {
            ScoringError::NotFound(_) => ApiError::not_found("scoring_model_not_found", message),
            ScoringError::Invalid(problems) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_scoring_model",
                message,
            )
            .with_details(serde_json::json!({ "problems": problems })),
            ScoringError::Store(error) => error.into(),
        }
    }
}

async fn list(State(state): State<AppState>) -> impl IntoResponse {
    Json(serde_json::json!({ "models": state.journeys.scoring.list() }))
}

async fn read(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.journeys.scoring.get(&name)?))
}

async fn replace(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<ModelRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let journeys = state.journeys.clone();
    let (view, created) =
        blocking(move || Ok(journeys.scoring.put(&name, request, by.actor())?)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

async fn remove(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let journeys = state.journeys.clone();
    blocking(move || Ok(journeys.scoring.delete(&name, by.actor())?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What `GET /v1/contacts/{id}/score-history` may be asked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryListing {
    /// The `next` of the page before.
    before: Option<String>,
    limit: Option<usize>,
}

/// Most changes one page lists.
const MAX_LISTED: usize = 1000;

/// The contact's score changes, newest first: every model's, with the event, the plugin
/// version and the reason, and journeys' `adjust-score` changes with their journey and node.
async fn history(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(listing): ApiQuery<HistoryListing>,
) -> Result<Json<ScorePage>, ApiError> {
    if let Some(cursor) = &listing.before
        && hex::decode(cursor).map_or(true, |key| key.len() <= 8)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "`before` must be the `next` of an earlier page",
        ));
    }
    let limit = listing.limit.unwrap_or(100).clamp(1, MAX_LISTED);
    let store = state.store.clone();
    let page = blocking(move || {
        // An id merged into another contact is that contact's.
        let id = match store.contact_exists(&id)? {
            true => id,
            false => store.alias(&id)?.ok_or_else(|| {
                ApiError::not_found("contact_not_found", format!("no contact `{id}`"))
            })?,
        };
        Ok(store.score_history(&id, listing.before.as_deref(), limit)?)
    })
    .await?;
    Ok(Json(page))
}
