//! Segment-spec ingest: `POST /v1/identify`, `/v1/track`, `/v1/page`, `/v1/screen`,
//! `/v1/group`, `/v1/alias` and `/v1/batch` with the Segment JSON shapes and write-key auth
//! (HTTP Basic, the write key as user name), gzip bodies included, so existing analytics SDKs
//! and CDPs can send to Wayline unchanged.
//!
//! identify → contact upsert (traits become attributes, nested objects flattened to `a.b`);
//! track → event; page → event `page_viewed`, screen → `screen_viewed`; group → the contact's
//! `group_id` and `group.*` attributes; alias → the previous id merged into the user. An
//! identify or alias that names both an `anonymousId` and a `userId` merges the anonymous
//! contact into the user, once; so does an identify whose email or phone an anonymous contact
//! holds. `messageId` is the event id, so a retried message is recorded once.
//!
//! Segment clients do not retry a 4xx, so a batch is never refused for one bad message: each
//! is taken or refused on its own, and the refused ones come back in `errors`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value as JsonValue};

use super::contacts::{Ingest, check_event, record};
use super::rate::Class;
use super::{Access, ApiError, ApiJson, AppState, Route, access, blocking, constant_time_eq};
use crate::auth::Permission;
use crate::model::{Attributes, Event, Millis, Value, parse_timestamp};
use crate::store::{ContactUpsert, Store, StoreError};

/// The single-message calls, by path and the message type they take.
const CALLS: [(&str, &str); 6] = [
    ("/v1/identify", "identify"),
    ("/v1/track", "track"),
    ("/v1/page", "page"),
    ("/v1/screen", "screen"),
    ("/v1/group", "group"),
    ("/v1/alias", "alias"),
];

pub fn routes() -> Vec<Route> {
    use Access::WriteKey;
    CALLS
        .into_iter()
        .map(|(path, kind)| {
            let handler = post(
                move |State(state): State<AppState>,
                      ApiJson(message): ApiJson<Map<String, JsonValue>>| {
                    one(state, message, kind)
                },
            );
            Route::new(Method::POST, path, WriteKey, true, handler)
        })
        .chain(std::iter::once(Route::new(
            Method::POST,
            "/v1/batch",
            WriteKey,
            true,
            post(batch),
        )))
        .collect()
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
    if let Some(key) = &presented
        && constant_time_eq(key.as_bytes(), state.write_key.as_bytes())
    {
        if let Err(limited) = access::limit(&state, Class::Ingest, "write-key") {
            return Ok(limited.into_response());
        }
        return Ok(next.run(request).await);
    }
    // A token that may ingest works too: as the Basic user name (a Segment SDK configured
    // with it as its write key) or as a bearer token.
    let token = presented.as_deref().or_else(|| access::bearer(&request));
    match token.map(|token| access::authenticate(&state, Some(token))) {
        Some(Ok(principal)) => {
            access::authorize(&principal, Permission::Ingest)?;
            if let Err(limited) = access::limit(&state, Class::Ingest, &principal.id) {
                return Ok(limited.into_response());
            }
            let mut request = request;
            request.extensions_mut().insert(principal);
            Ok(next.run(request).await)
        }
        Some(Err(error)) if error.code != "unauthorized" => Err(error),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the write key (or a token with the ingest role) as HTTP Basic user name, as Segment SDKs do",
        )),
    }
}

/// What a message is about and when, as every Segment message has it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    #[serde(default, deserialize_with = "id")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "id")]
    anonymous_id: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    original_timestamp: Option<String>,
    #[serde(default)]
    sent_at: Option<String>,
}

/// Segment ids are strings, but clients send numbers too (`userId: 42`).
fn id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<JsonValue>::deserialize(deserializer)? {
        Some(JsonValue::String(text)) if !text.is_empty() => Some(text),
        Some(JsonValue::Number(number)) => Some(number.to_string()),
        _ => None,
    })
}

/// A message, by its `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Message {
    Identify {
        #[serde(flatten)]
        common: Common,
        #[serde(default)]
        traits: Map<String, JsonValue>,
    },
    Track {
        #[serde(flatten)]
        common: Common,
        event: String,
        #[serde(default)]
        properties: Map<String, JsonValue>,
    },
    Page(Viewed),
    Screen(Viewed),
    Group {
        #[serde(flatten)]
        common: Common,
        #[serde(rename = "groupId", deserialize_with = "id")]
        group_id: Option<String>,
        #[serde(default)]
        traits: Map<String, JsonValue>,
    },
    Alias {
        #[serde(flatten)]
        common: Common,
        #[serde(default, rename = "previousId", deserialize_with = "id")]
        previous_id: Option<String>,
    },
}

/// A page or a screen the user viewed.
#[derive(Debug, Deserialize)]
struct Viewed {
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    properties: Map<String, JsonValue>,
}

/// A refused message, as the response names it.
#[derive(Debug, serde::Serialize)]
struct Refused {
    index: usize,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    code: &'static str,
    message: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_message", message)
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

impl Common {
    /// The contact: the user, or else the anonymous visitor.
    fn contact_id(&self) -> Result<String, ApiError> {
        self.user_id
            .clone()
            .or_else(|| self.anonymous_id.clone())
            .ok_or_else(|| invalid("a message needs `userId` or `anonymousId`"))
    }

    /// An anonymous visitor that the message says is this user.
    fn anonymous_and_user(&self) -> Option<(String, String)> {
        match (&self.anonymous_id, &self.user_id) {
            (Some(anonymous), Some(user)) if anonymous != user => {
                Some((anonymous.clone(), user.clone()))
            }
            _ => None,
        }
    }

    /// When the message happened, by the spec: its `originalTimestamp` (or `timestamp`) as the
    /// client's clock had it, corrected for that clock's skew when the client says when it
    /// sent the message (`sentAt`, here or on the batch): received − (sent − happened).
    fn happened_at(
        &self,
        batch_sent_at: Option<&str>,
        received: Millis,
    ) -> Result<Millis, ApiError> {
        let parse = |field: &str, text: &str| {
            parse_timestamp(text)
                .ok_or_else(|| invalid(format!("`{field}` `{text}` is not an ISO 8601 timestamp")))
        };
        let happened = match (&self.original_timestamp, &self.timestamp) {
            (Some(text), _) => parse("originalTimestamp", text)?,
            (None, Some(text)) => parse("timestamp", text)?,
            (None, None) => return Ok(received),
        };
        let Some(sent) = self.sent_at.as_deref().or(batch_sent_at) else {
            return Ok(happened);
        };
        let sent = parse("sentAt", sent)?;
        Ok(received.saturating_sub(sent.saturating_sub(happened).max(0)))
    }

    fn event(
        &self,
        name: String,
        properties: &Map<String, JsonValue>,
        batch_sent_at: Option<&str>,
        received: Millis,
    ) -> Result<Event, ApiError> {
        let id = self
            .message_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| invalid("a message needs a `messageId`"))?;
        let event = Event {
            id,
            contact_id: self.contact_id()?,
            name,
            properties: flatten(properties),
            timestamp: self.happened_at(batch_sent_at, received)?,
            depth: 0,
        };
        check_event(&event, received)?;
        Ok(event)
    }
}

/// Take one message: a contact upsert now, an event or a merge for `ingest` to write.
fn take(
    store: &dyn Store,
    message: Message,
    batch_sent_at: Option<&str>,
    now: Millis,
    ingest: &mut Ingest,
) -> Result<(), ApiError> {
    let named = |common: &Common,
                 name: &str,
                 page_name: Option<String>,
                 properties: Map<String, JsonValue>| {
        let mut properties = properties;
        if let Some(page_name) = page_name {
            properties.insert("name".into(), JsonValue::String(page_name));
        }
        common.event(name.into(), &properties, batch_sent_at, now)
    };
    let common = match &message {
        Message::Identify { common, .. }
        | Message::Track { common, .. }
        | Message::Page(Viewed { common, .. })
        | Message::Screen(Viewed { common, .. })
        | Message::Group { common, .. }
        | Message::Alias { common, .. } => common,
    };
    if common.user_id.is_none()
        && let Some(anonymous) = &common.anonymous_id
    {
        ingest.anonymous.insert(anonymous.clone());
    }
    match message {
        Message::Identify { common, traits } => {
            upsert(store, &common, flatten(&traits), now, ingest)?;
            ingest.merges.extend(common.anonymous_and_user());
        }
        Message::Group {
            common,
            group_id,
            traits,
        } => {
            let group_id = group_id.ok_or_else(|| invalid("a group message needs a `groupId`"))?;
            let mut attributes: Attributes = flatten(&traits)
                .into_iter()
                .map(|(name, value)| (format!("group.{name}"), value))
                .collect();
            attributes.insert("group_id".into(), Value::Text(group_id));
            upsert(store, &common, attributes, now, ingest)?;
        }
        Message::Alias {
            common,
            previous_id,
        } => {
            let user = common
                .user_id
                .clone()
                .ok_or_else(|| invalid("an alias message needs a `userId`"))?;
            let previous = previous_id
                .or_else(|| common.anonymous_id.clone())
                .ok_or_else(|| invalid("an alias message needs a `previousId`"))?;
            if previous != user {
                ingest.merges.push((previous, user));
            }
        }
        Message::Track {
            common,
            event,
            properties,
        } => {
            if event.trim().is_empty() {
                return Err(invalid("a track message needs an `event`"));
            }
            ingest
                .events
                .push(named(&common, &event, None, properties)?);
        }
        Message::Page(Viewed {
            common,
            name,
            properties,
        }) => ingest
            .events
            .push(named(&common, "page_viewed", name, properties)?),
        Message::Screen(Viewed {
            common,
            name,
            properties,
        }) => ingest
            .events
            .push(named(&common, "screen_viewed", name, properties)?),
    }
    Ok(())
}

/// Set `attributes` on the message's contact. An email or phone that an anonymous contact holds
/// means that contact is this one: it is merged in (after what was queued for it), and the
/// identity comes with it. One that an identified contact holds is a conflict.
fn upsert(
    store: &dyn Store,
    common: &Common,
    mut attributes: Attributes,
    now: Millis,
    ingest: &mut Ingest,
) -> Result<(), ApiError> {
    let id = common.contact_id()?;
    loop {
        let upsert = ContactUpsert {
            id: Some(id.clone()),
            attributes: attributes.clone(),
            anonymous: common.user_id.is_none(),
            ..ContactUpsert::default()
        };
        match store.upsert_contact(upsert, now) {
            Ok(_) => return Ok(()),
            Err(StoreError::IdentityConflict { field, owner, .. })
                if common.user_id.is_some()
                    && store.contact(&owner)?.is_some_and(|c| c.anonymous) =>
            {
                attributes.remove(field);
                ingest.merges.push((owner, id.clone()));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Take `messages`, each on its own; the refused ones, with why.
async fn ingest(
    state: AppState,
    messages: Vec<JsonValue>,
    batch_sent_at: Option<String>,
) -> Result<Vec<Refused>, ApiError> {
    if messages.is_empty() || messages.len() > super::contacts::MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!("send 1 to {} messages", super::contacts::MAX_BATCH),
        ));
    }
    let now = state.clock.now();
    blocking(move || {
        let store = state.store.clone();
        let mut ingest = Ingest::default();
        let mut refused = Vec::new();
        for (index, value) in messages.into_iter().enumerate() {
            let message_id = value["messageId"].as_str().map(str::to_owned);
            let taken = serde_json::from_value::<Message>(value)
                .map_err(|e| invalid(format!("not a Segment message: {e}")))
                .and_then(|message| {
                    take(
                        store.as_ref(),
                        message,
                        batch_sent_at.as_deref(),
                        now,
                        &mut ingest,
                    )
                });
            if let Err(error) = taken {
                if error.status.is_server_error() {
                    return Err(error);
                }
                refused.push(Refused {
                    index,
                    message_id,
                    code: error.code,
                    message: error.message,
                });
            }
        }
        record(&state, ingest, now)?;
        Ok(refused)
    })
    .await
}

/// `/v1/identify`, `/v1/track`, …: one message, of the path's type.
async fn one(
    state: AppState,
    mut message: Map<String, JsonValue>,
    kind: &'static str,
) -> Result<Json<JsonValue>, ApiError> {
    message.insert("type".into(), JsonValue::String(kind.into()));
    let sent_at = message
        .get("sentAt")
        .and_then(JsonValue::as_str)
        .map(str::to_owned);
    let refused = ingest(state, vec![JsonValue::Object(message)], sent_at).await?;
    match refused.into_iter().next() {
        // One message that cannot be taken: the call fails, as the spec's single calls do.
        Some(refused) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            refused.code,
            refused.message,
        )),
        None => Ok(Json(serde_json::json!({"success": true}))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Batch {
    batch: Vec<JsonValue>,
    #[serde(default)]
    sent_at: Option<String>,
}

async fn batch(
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<Batch>,
) -> Result<Json<JsonValue>, ApiError> {
    let refused = ingest(state, batch.batch, batch.sent_at).await?;
    let mut body = serde_json::json!({"success": true});
    if !refused.is_empty() {
        body["errors"] = serde_json::to_value(refused).expect("refusals serialize");
    }
    Ok(Json(body))
}
