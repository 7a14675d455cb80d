//! What an operator does about work that could not run: dead letters listed, put back once
//! their cause is fixed, or deleted; each change recorded in the audit log, which is listed
//! newest first.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};

use super::{Access, ApiError, ApiPath, ApiQuery, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::store::{AuditEntry, AuditPage, AuditQuery, DeadLetter, partition_of};

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::GET,
            "/v1/dead-letters",
            Needs(Permission::Operate),
            false,
            get(list),
        ),
        Route::new(
            Method::POST,
            "/v1/dead-letters/{id}/requeue",
            Needs(Permission::Operate),
            false,
            post(requeue),
        ),
        Route::new(
            Method::DELETE,
            "/v1/dead-letters/{id}",
            Needs(Permission::Operate),
            false,
            delete(remove),
        ),
        Route::new(
            Method::GET,
            "/v1/audit",
            Needs(Permission::Operate),
            false,
            get(audit),
        ),
    ]
}

/// Most dead letters or audit entries one listing returns.
const MAX_LISTED: usize = 1000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Listing {
    #[serde(default)]
    limit: Option<usize>,
}

impl Listing {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(MAX_LISTED).min(MAX_LISTED)
    }
}

/// Records set aside so the rest could run, oldest first, with where they came from and why.
async fn list(
    State(state): State<AppState>,
    ApiQuery(listing): ApiQuery<Listing>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = state.store.clone();
    let letters = blocking(move || Ok(store.dead_letters(listing.limit())?)).await?;
    Ok(Json(serde_json::json!({ "dead_letters": letters })))
}

fn entry(state: &AppState, by: &Principal, action: &str, id: &str) -> AuditEntry {
    AuditEntry::new(
        state.clock.now(),
        by.actor(),
        action,
        id,
        serde_json::Value::Null,
    )
}

fn dead_letter_error(error: crate::store::StoreError) -> ApiError {
    match error {
        crate::store::StoreError::NotFound(message) => {
            ApiError::not_found("dead_letter_not_found", message)
        }
        crate::store::StoreError::Conflict(message) => {
            ApiError::new(StatusCode::CONFLICT, "dead_letter_not_requeued", message)
        }
        other => other.into(),
    }
}

/// Put a dead letter back where it came from: journey work runs again, in its place.
async fn requeue(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<DeadLetter>), ApiError> {
    let (store, audit) = (
        state.store.clone(),
        entry(&state, &by, "dead_letter.requeue", &id),
    );
    let letter = blocking(move || {
        let letter = store
            .requeue_dead_letter(&id, audit)
            .map_err(dead_letter_error)?;
        store.flush()?;
        Ok(letter)
    })
    .await?;
    if let Some(item) = &letter.item {
        state.scheduler.notify(&[partition_of(item.contact_id())]);
    }
    Ok((StatusCode::ACCEPTED, Json(letter)))
}

/// Remove a dead letter for good, once looked at.
async fn remove(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    let (store, audit) = (
        state.store.clone(),
        entry(&state, &by, "dead_letter.delete", &id),
    );
    let letter = blocking(move || {
        let letter = store
            .delete_dead_letter(&id, audit)
            .map_err(dead_letter_error)?;
        store.flush()?;
        Ok(letter)
    })
    .await?;
    Ok(Json(letter))
}

/// What `GET /v1/audit` may be asked.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditListing {
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    object: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

fn timestamp(field: &str, text: Option<String>) -> Result<Option<crate::model::Millis>, ApiError> {
    text.map(|text| {
        crate::model::parse_timestamp(&text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("`{field}` must be an RFC 3339 time (2026-12-01T09:00:00Z)"),
            )
        })
    })
    .transpose()
}

/// The audit log, newest first: in a time range, by actor (a token id), action
/// (`token.create`) or object, a page at a time (`next` is the `before` of the next page).
async fn audit(
    State(state): State<AppState>,
    ApiQuery(listing): ApiQuery<AuditListing>,
) -> Result<Json<AuditPage>, ApiError> {
    if let Some(cursor) = &listing.before
        && hex::decode(cursor).map_or(true, |key| key.len() != 16)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "`before` must be the `next` of an earlier page",
        ));
    }
    let query = AuditQuery {
        since: timestamp("since", listing.since)?,
        until: timestamp("until", listing.until)?,
        actor: listing.actor,
        action: listing.action,
        object: listing.object,
        before: listing.before,
        limit: listing.limit.unwrap_or(MAX_LISTED).clamp(1, MAX_LISTED),
    };
    let store = state.store.clone();
    Ok(Json(blocking(move || Ok(store.audit(&query)?)).await?))
}
