//! The API's one error type: a stable code, an HTTP status and a message, as JSON.

use axum::Json;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::journeys::JourneyError;
use crate::store::StoreError;

/// An error as clients see it: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// More for the client to act on, e.g. every problem in a journey: `error.details`.
    pub details: Option<serde_json::Value>,
    /// Seconds after which the client may try again (`Retry-After`).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// The same error, telling the client to try again after `seconds`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The same error with details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>` with the token the server was started with",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(code = self.code, message = %self.message, "request failed");
            let body = serde_json::json!({"error": {"code": self.code, "message": "internal error; see the server log"}});
            return (self.status, Json(body)).into_response();
        }
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response =
            (self.status, Json(serde_json::json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match &error {
            StoreError::IdentityConflict { .. } => StatusCode::CONFLICT,
            StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::Corrupt(_) | StoreError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<JourneyError> for ApiError {
    fn from(error: JourneyError) -> Self {
        let message = error.to_string();
        match error {
            JourneyError::NotFound(_) => ApiError::not_found("journey_not_found", message),
            JourneyError::VersionNotFound(..) => {
                ApiError::not_found("journey_version_not_found", message)
            }
            JourneyError::Malformed(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_journey", message)
            }
            JourneyError::EnrollmentNotFound(_) => {
                ApiError::not_found("enrollment_not_found", message)
            }
            JourneyError::NotParked(_) => {
                ApiError::new(StatusCode::CONFLICT, "enrollment_not_parked", message)
            }
            JourneyError::BadSimulation(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_simulation",
                message,
            ),
            JourneyError::Invalid(problems) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_journey", message)
                    .with_details(serde_json::json!({ "problems": problems }))
            }
            JourneyError::Archived(_) => {
                ApiError::new(StatusCode::CONFLICT, "journey_archived", message)
            }
            JourneyError::Unapproved(templates) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "content_not_approved",
                message,
            )
            .with_details(serde_json::json!({ "templates": templates })),
            JourneyError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "journey_exists", message)
            }
            JourneyError::NotActive(..) => {
                ApiError::new(StatusCode::CONFLICT, "journey_not_active", message)
            }
            JourneyError::PluginNotLoaded(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_not_loaded",
                message,
            ),
            JourneyError::PluginNotUsed(..) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugin_not_used", message)
            }
            JourneyError::MoveRefused(_, problems) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_refused_config",
                message,
            )
            .with_details(serde_json::json!({ "problems": problems })),
            JourneyError::Store(error) => error.into(),
        }
    }
}

/// The code of an error a layer or the framework answered with, by its status.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "route_not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "timeout",
        status if status.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Any error response that is not already ours (one a layer or the framework made: a request
/// body over the limit, a timeout, a body in an encoding the server does not read) gets our
/// shape, with a code for its status and its text as the message.
pub async fn errors_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let ours = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || ours {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4 << 10)
        .await
        .unwrap_or_default();
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned(),
        text => text.to_owned(),
    };
    let mut error = ApiError::new(status, code_of(status), message).into_response();
    // Keep what the framework said beside the body (`Allow` for a wrong method, say).
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(CONTENT_TYPE);
    for (name, value) in parts.headers.iter() {
        error.headers_mut().insert(name.clone(), value.clone());
    }
    error
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    error
}
