//! Segment-spec ingest: `POST /v1/identify`, `/v1/track`, `/v1/page` and `/v1/batch` with the
//! Segment JSON shapes and write-key auth (HTTP Basic, the write key as user name), so existing
//! analytics SDKs and CDPs can send to Wayline unchanged.
//!
//! identify → contact upsert (traits become attributes, nested objects flattened to `a.b`);
//! track → event; page → event `page_viewed`. `messageId` is the event id, so a retried message
//! is recorded once.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value as JsonValue};

use super::{ApiError, ApiJson, AppState, blocking, constant_time_eq};
use crate::model::{Attributes, Event, Millis, Value, parse_timestamp};
use crate::store::ContactUpsert;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/identify", post(identify))
        .route("/track", post(track))
        .route("/page", post(page))
        .route("/batch", post(batch))
}

/// Segment sends `Authorization: Basic base64(<write key>:)`.
pub async fn require_write_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .map(|user_pass| {
            user_pass
                .split_once(':')
                .map_or(user_pass.clone(), |(user, _)| user.to_owned())
        });
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), state.write_key.as_bytes()) => {
            Ok(next.run(request).await)
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the write key as HTTP Basic user name, as Segment SDKs do",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    message_id: Option<String>,
    timestamp: Option<String>,
}

impl Identity {
    fn contact_id(&self) -> Result<String, ApiError> {
        self.user_id
            .clone()
            .or_else(|| self.anonymous_id.clone())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_message",
                    "a message needs `userId` or `anonymousId`",
                )
            })
    }

    fn event(
        &self,
        name: String,
        properties: &Map<String, JsonValue>,
        now: Millis,
    ) -> Result<Event, ApiError> {
        let message_id = self
            .message_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_message",
                    "a message needs a `messageId`",
                )
            })?;
        let timestamp = match &self.timestamp {
            Some(text) => parse_timestamp(text).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_message",
                    format!("`timestamp` `{text}` is not ISO 8601"),
                )
            })?,
            None => now,
        };
        Ok(Event {
            id: message_id,
            contact_id: self.contact_id()?,
            name,
            properties: flatten(properties),
            timestamp,
            depth: 0,
        })
    }
}

#[derive(Debug, Deserialize)]
struct Identify {
    #[serde(flatten)]
    identity: Identity,
    #[serde(default)]
    traits: Map<String, JsonValue>,
}

#[derive(Debug, Deserialize)]
struct Track {
    #[serde(flatten)]
    identity: Identity,
    event: String,
    #[serde(default)]
    properties: Map<String, JsonValue>,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(flatten)]
    identity: Identity,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    properties: Map<String, JsonValue>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Message {
    Identify(Identify),
    Track(Track),
    Page(Page),
}

#[derive(Debug, Deserialize)]
struct Batch {
    batch: Vec<Message>,
}

/// Segment's nested traits and properties as flat, typed attributes: `{"address": {"city": "X"}}`
/// becomes `address.city`; nulls are dropped; lists of non-strings are kept as JSON text.
fn flatten(object: &Map<String, JsonValue>) -> Attributes {
    fn walk(prefix: &str, value: &JsonValue, into: &mut Attributes) {
        match value {
            JsonValue::Null => {}
            JsonValue::Object(fields) => fields
                .iter()
                .for_each(|(name, value)| walk(&format!("{prefix}.{name}"), value, into)),
            other => {
                let typed =
                    Value::from_json(other).unwrap_or_else(|_| Value::Text(other.to_string()));
                into.insert(prefix.to_owned(), typed);
            }
        }
    }
    let mut attributes = Attributes::new();
    for (name, value) in object {
        walk(name, value, &mut attributes);
    }
    attributes
}

/// One Segment message as the store's writes.
fn convert(
    message: Message,
    now: Millis,
    upserts: &mut Vec<ContactUpsert>,
    events: &mut Vec<Event>,
) -> Result<(), ApiError> {
    match message {
        Message::Identify(identify) => upserts.push(ContactUpsert {
            id: Some(identify.identity.contact_id()?),
            attributes: flatten(&identify.traits),
            ..ContactUpsert::default()
        }),
        Message::Track(track) => {
            if track.event.is_empty() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_message",
                    "a track message needs an `event`",
                ));
            }
            events.push(track.identity.event(track.event, &track.properties, now)?);
        }
        Message::Page(page) => {
            let mut properties = page.properties;
            if let Some(name) = page.name {
                properties.insert("name".into(), JsonValue::String(name));
            }
            events.push(
                page.identity
                    .event("page_viewed".into(), &properties, now)?,
            );
        }
    }
    Ok(())
}

async fn ingest(state: AppState, messages: Vec<Message>) -> Result<Json<JsonValue>, ApiError> {
    if messages.is_empty() || messages.len() > super::contacts::MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!("send 1 to {} messages", super::contacts::MAX_BATCH),
        ));
    }
    let now = state.clock.now();
    let (mut upserts, mut events) = (Vec::new(), Vec::new());
    for message in messages {
        convert(message, now, &mut upserts, &mut events)?;
    }
    blocking(move || super::contacts::record_events(&state, &upserts, &events, now)).await?;
    Ok(Json(serde_json::json!({"success": true})))
}

async fn identify(
    State(state): State<AppState>,
    ApiJson(message): ApiJson<Identify>,
) -> Result<Json<JsonValue>, ApiError> {
    ingest(state, vec![Message::Identify(message)]).await
}

async fn track(
    State(state): State<AppState>,
    ApiJson(message): ApiJson<Track>,
) -> Result<Json<JsonValue>, ApiError> {
    ingest(state, vec![Message::Track(message)]).await
}

async fn page(
    State(state): State<AppState>,
    ApiJson(message): ApiJson<Page>,
) -> Result<Json<JsonValue>, ApiError> {
    ingest(state, vec![Message::Page(message)]).await
}

async fn batch(
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<Batch>,
) -> Result<Json<JsonValue>, ApiError> {
    ingest(state, batch.batch).await
}
