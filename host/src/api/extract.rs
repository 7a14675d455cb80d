//! Extractors whose rejections are our error shape, with the same status and code for the same
//! mistake on every route: a body that is not JSON is 400 `malformed_json`; JSON of the wrong
//! shape is 422 `invalid_request` naming the field; a body that must be an object and is not is
//! 422 `invalid_request`; a path parameter that does not parse (or is not UTF-8) is 400
//! `invalid_path`; a query that does not, 400 `invalid_query`.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON object body.
pub struct ApiJson<T>(pub T);

/// A JSON body that is one object or a list of them (a batch): always a list here.
pub struct ApiJsonOrList<T>(pub Vec<T>);

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"))
}

/// The body's bytes, once it is known to be JSON by its content type.
async fn json_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    if !is_json(&request) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send `Content-Type: application/json`",
        ));
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "payload_too_large",
                    format!(
                        "the request body is larger than the server accepts ({} bytes)",
                        super::MAX_BODY_BYTES
                    ),
                )
            } else {
                ApiError::new(status, "bad_request", rejection.body_text())
            }
        })
}

fn malformed(error: serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        format!("the body is not JSON: {error}"),
    )
}

/// `bytes` as JSON of `T`. JSON of the wrong shape is told apart from bytes that are not JSON
/// at all only when parsing fails, so a body that parses costs one pass.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            return malformed(inner);
        }
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return malformed(syntax);
        }
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            match path.as_str() {
                "." => inner.to_string(),
                path => format!("{path}: {inner}"),
            },
        )
    })?;
    deserializer.end().map_err(malformed)?;
    Ok(value)
}

/// The first byte of the JSON text, past whitespace.
fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// A body that must be an object and is JSON of another kind.
fn not_an_object(bytes: &[u8]) -> Result<(), ApiError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(malformed)?;
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "the body must be a JSON object",
    ))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(request, state).await?;
        // Checked first: a struct would read a JSON array as its fields, in order.
        if first_byte(&bytes) != Some(b'{') {
            not_an_object(&bytes)?;
        }
        parse(&bytes).map(ApiJson)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJsonOrList<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(request, state).await?;
        match first_byte(&bytes) {
            Some(b'[') => parse(&bytes).map(ApiJsonOrList),
            Some(b'{') => parse(&bytes).map(|one| ApiJsonOrList(vec![one])),
            _ => not_an_object(&bytes).map(|()| ApiJsonOrList(Vec::new())),
        }
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_error(rejection)),
        }
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    let message = match &rejection {
        PathRejection::FailedToDeserializePathParams(inner) => inner.body_text(),
        other => other.body_text(),
    };
    let message = message
        .trim_start_matches("Invalid URL: ")
        .trim_start_matches("Wrong number of path arguments for `Path`. ")
        .to_owned();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_path",
        format!("the path is not one this route takes: {message}"),
    )
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    rejection.body_text(),
                )
            })
    }
}
