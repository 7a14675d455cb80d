//! API tokens over HTTP (admin only): create one (shown once), list them, revoke one; and
//! `GET /v1/whoami` for any token to see what it is.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};

use super::{Access, ApiError, ApiJson, ApiPath, AppState, Route, blocking};
use crate::auth::{NewToken, Permission, Principal, TokenError};

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::POST,
            "/v1/admin/tokens",
            Needs(Permission::Admin),
            true,
            post(create),
        ),
        Route::new(
            Method::GET,
            "/v1/admin/tokens",
            Needs(Permission::Admin),
            false,
            get(list),
        ),
        Route::new(
            Method::DELETE,
            "/v1/admin/tokens/{id}",
            Needs(Permission::Admin),
            false,
            delete(revoke),
        ),
        Route::new(
            Method::GET,
            "/v1/whoami",
            Needs(Permission::Authenticated),
            false,
            get(whoami),
        ),
    ]
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        let message = error.to_string();
        match error {
            TokenError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_token", message)
            }
            TokenError::NotFound(_) => ApiError::not_found("token_not_found", message),
            TokenError::LastAdmin(_) => {
                ApiError::new(StatusCode::CONFLICT, "last_admin_token", message)
            }
            TokenError::Store(error) => error.into(),
            TokenError::Unknown | TokenError::Expired(_) | TokenError::Revoked(_) => {
                ApiError::unauthorized()
            }
        }
    }
}

/// A new token: the only response that ever holds it.
async fn create(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiJson(request): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let now = state.clock.now();
    let tokens = state.tokens.clone();
    let (token, view) = blocking(move || Ok(tokens.create(request, &by, now)?)).await?;
    let mut body = serde_json::to_value(view).expect("a token view serializes");
    body["token"] = token.into();
    body["note"] = "the token is shown only now; keep it in a secret store".into();
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "tokens": state.tokens.list(state.clock.now()) }))
}

/// Refuse the token from the next request on.
async fn revoke(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = state.clock.now();
    let tokens = state.tokens.clone();
    let view = blocking(move || Ok(tokens.revoke(&id, &by, now)?)).await?;
    Ok(Json(
        serde_json::to_value(view).expect("a token view serializes"),
    ))
}

/// The token's id, name, role and what it may do.
async fn whoami(Extension(principal): Extension<Principal>) -> Json<serde_json::Value> {
    let permissions: Vec<&str> = Permission::ALL
        .into_iter()
        .filter(|p| principal.may(*p))
        .map(Permission::as_str)
        .collect();
    Json(serde_json::json!({
        "id": principal.id,
        "name": principal.name,
        "role": principal.role,
        "grants": principal.grants,
        "permissions": permissions,
        "masked": principal.masked(),
    }))
}
