//! What comes back from a message: its open pixel, its tracked clicks and its one-click
//! unsubscribe (RFC 8058). Public routes, each authenticated by the signed token in its path;
//! each becomes an event on the contact, carrying the message, journey and node. An event's id
//! is made from the message, so a second open is a duplicate that triggers nothing again.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::contacts::{Ingest, record};
use super::{Access, ApiError, ApiPath, AppState, Route, blocking};
use crate::messaging::links::{Purpose, escape};
use crate::model::{ConsentState, Event, Value};
use crate::store::{ContactUpsert, OutboxMessage};

pub fn routes() -> Vec<Route> {
    use Access::Public;
    vec![
        Route::new(Method::GET, "/t/open/{token}", Public, false, get(open)),
        Route::new(Method::GET, "/t/click/{token}", Public, false, get(click)),
        Route::new(
            Method::GET,
            "/unsubscribe/{token}",
            Public,
            false,
            get(confirm_page),
        ),
        // A mail client's one-click POST carries `List-Unsubscribe=One-Click` as its body.
        Route::new(
            Method::POST,
            "/unsubscribe/{token}",
            Public,
            true,
            axum::routing::post(unsubscribe),
        ),
    ]
}

/// A transparent 1×1 GIF.
const PIXEL: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn invalid() -> ApiError {
    ApiError::not_found(
        "invalid_link",
        "this link is not one this server made, or it was changed",
    )
}

/// The message a token names, if the token is valid for `purpose`.
async fn message_of(
    state: &AppState,
    purpose: Purpose,
    token: &str,
) -> Result<(OutboxMessage, Option<String>), ApiError> {
    let signed = state
        .messaging
        .links()
        .check(purpose, token)
        .ok_or_else(invalid)?;
    let store = state.store.clone();
    let id = signed.message_id.clone();
    let message = blocking(move || Ok(store.message(&id)?))
        .await?
        .ok_or_else(invalid)?;
    Ok((message, signed.url))
}

async fn record_event(state: &AppState, event: Event) -> Result<(), ApiError> {
    let state = state.clone();
    blocking(move || {
        let now = state.clock.now();
        record(
            &state,
            Ingest {
                events: vec![event],
                ..Ingest::default()
            },
            now,
        )
        .map(drop)
    })
    .await
}

/// A first open of `message` (later ones are duplicates of it).
pub(super) async fn opened(state: &AppState, message: &OutboxMessage) -> Result<(), ApiError> {
    let name = format!("{}_opened", message.channel);
    let event = message.event(&name, format!("{}:opened", message.id), state.clock.now());
    record_event(state, event).await
}

/// A first click of `url` in `message`.
pub(super) async fn clicked(
    state: &AppState,
    message: &OutboxMessage,
    url: &str,
) -> Result<(), ApiError> {
    let which = &crate::runtime::sha256_hex(url.as_bytes())[..16];
    let mut event = message.event(
        "link_clicked",
        format!("{}:clicked:{which}", message.id),
        state.clock.now(),
    );
    event
        .properties
        .insert("url".into(), Value::Text(url.to_owned()));
    record_event(state, event).await
}

/// `message`'s contact opts out of its channel's consent; the consent's name.
pub(super) async fn unsubscribed(
    state: &AppState,
    message: &OutboxMessage,
) -> Result<String, ApiError> {
    let store = state.store.clone();
    let (contact_id, channel) = (message.contact_id.clone(), message.channel.clone());
    let now = state.clock.now();
    let consent = blocking(move || {
        let consent = store
            .channel(&channel)?
            .and_then(|c| c.consent)
            .unwrap_or(channel);
        let mut upsert = ContactUpsert {
            id: Some(contact_id),
            ..ContactUpsert::default()
        };
        upsert
            .consents
            .insert(consent.clone(), ConsentState::Revoked);
        store.upsert_contact(upsert, now)?;
        Ok(consent)
    })
    .await?;
    let mut event = message.event(
        "unsubscribed",
        format!("{}:unsubscribed", message.id),
        state.clock.now(),
    );
    event
        .properties
        .insert("consent".into(), Value::Text(consent.clone()));
    record_event(state, event).await?;
    Ok(consent)
}

async fn open(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (message, _) = message_of(&state, Purpose::Open, &token).await?;
    if !message.test {
        opened(&state, &message).await?;
    }
    Ok((
        [(CONTENT_TYPE, "image/gif"), (CACHE_CONTROL, "no-store")],
        PIXEL.to_vec(),
    )
        .into_response())
}

async fn click(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (message, url) = message_of(&state, Purpose::Click, &token).await?;
    let url = url.ok_or_else(invalid)?;
    if !message.test {
        clicked(&state, &message, &url).await?;
    }
    Ok((
        StatusCode::FOUND,
        [(LOCATION, url.as_str()), (CACHE_CONTROL, "no-store")],
    )
        .into_response())
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">{body}</body></html>"
    ))
}

/// A GET only asks: link scanners open every link in a message, and must unsubscribe no one.
async fn confirm_page(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<Html<String>, ApiError> {
    let (message, _) = message_of(&state, Purpose::Unsubscribe, &token).await?;
    Ok(page(
        "Unsubscribe",
        &format!(
            "<h1>Unsubscribe</h1><p>Stop receiving these messages on {channel}?</p><form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>",
            channel = escape(&message.channel)
        ),
    ))
}

/// The POST unsubscribes at once, without a login: the token is the proof.
async fn unsubscribe(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<Html<String>, ApiError> {
    let (message, _) = message_of(&state, Purpose::Unsubscribe, &token).await?;
    if message.test {
        return Ok(page(
            "Test message",
            "<h1>Test message</h1><p>This was a test send; nobody was unsubscribed.</p>",
        ));
    }
    let consent = unsubscribed(&state, &message).await?;
    Ok(page(
        "Unsubscribed",
        &format!(
            "<h1>You are unsubscribed</h1><p>You will get no more of these messages on {consent}.</p>"
        ),
    ))
}
