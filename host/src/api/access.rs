//! The check every route but the public ones passes first: the bearer token is looked up, its
//! role and grants must give the route's [`Permission`], and the [`Principal`] it names is put
//! in the request for handlers (the audit log's actor). What an analyst reads is masked.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::rate::{Class, Limited};
use super::{ApiError, AppState};
use crate::auth::{Permission, Principal, TokenError, mask_json};

/// Largest response masked for an analyst; a larger one is refused rather than sent unmasked.
const MAX_MASKED_BYTES: usize = 64 << 20;

/// The bearer token a request carries.
pub(super) fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Who `token` is, or the error that refuses it.
pub(super) fn authenticate(state: &AppState, token: Option<&str>) -> Result<Principal, ApiError> {
    let Some(token) = token else {
        return Err(ApiError::unauthorized());
    };
    state
        .tokens
        .authenticate(token, state.clock.now())
        .map_err(|error| match error {
            TokenError::Expired(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", error.to_string())
            }
            TokenError::Revoked(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "token_revoked", error.to_string())
            }
            _ => ApiError::unauthorized(),
        })
}

/// Refuse, naming what it needs, a principal that may not do `permission`.
pub(super) fn authorize(principal: &Principal, permission: Permission) -> Result<(), ApiError> {
    if principal.may(permission) {
        return Ok(());
    }
    let roles: Vec<&str> = permission.roles().iter().map(|r| r.as_str()).collect();
    let mut needs = format!("the role {}", roles.join(" or "));
    if let Some(grant) = permission.grant() {
        needs.push_str(&format!(", or the grant `{}`", grant.as_str()));
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "token `{}` has the role {}; this needs `{}`: {needs}",
            principal.id,
            principal.role,
            permission.as_str()
        ),
    )
    .with_details(serde_json::json!({
        "permission": permission.as_str(),
        "roles": roles,
        "grant": permission.grant().map(|g| g.as_str()),
        "role": principal.role.as_str(),
    })))
}

pub(super) async fn require(
    State((state, permission)): State<(AppState, Permission)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, bearer(&request))?;
    authorize(&principal, permission)?;
    if let Some(class) = Class::of(permission)
        && let Err(limited) = limit(&state, class, &principal.id)
    {
        return Ok(limited.into_response());
    }
    let masked = principal.masked();
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if !masked {
        return Ok(response);
    }
    mask_response(response).await
}

/// Take one request from `caller`'s rate for `class`, or the `429` that refuses it.
pub(super) fn limit(state: &AppState, class: Class, caller: &str) -> Result<(), Limited> {
    let rate = match class {
        Class::Admin => state.edges.admin_rate,
        Class::Ingest => state.edges.ingest_rate,
    };
    state.rates.take(class, caller, rate)
}

/// The response with every email address and phone number in its JSON masked.
async fn mask_response(response: Response) -> Result<Response, ApiError> {
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_MASKED_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "a response too large to mask for an analyst",
            )
        })?;
    if bytes.is_empty() {
        return Ok((parts, bytes).into_response());
    }
    // Never sent unmasked: a body that is not JSON, or JSON that does not parse, is refused.
    if !is_json {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "a response that is not JSON cannot be masked, so it is not sent to an analyst",
        ));
    }
    let mut value = serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("a JSON response that does not parse, not sent to an analyst: {error}"),
        )
    })?;
    mask_json(&mut value);
    let body = serde_json::to_vec(&value).expect("a JSON value serializes");
    parts.headers.remove(CONTENT_LENGTH);
    Ok((parts, body).into_response())
}
