//! `POST /v1/webhooks/{channel}`: what a channel's provider reports back (delivered, bounced,
//! complaint, opens, clicks, unsubscribes). Public: the provider authenticates the way it
//! documents it, and the channel plugin checks that (`parse-webhook`), with the channel's
//! secrets held by the host.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::routing::post;

use super::{Access, ApiError, ApiPath, AppState, Route, tracking};
use crate::messaging::webhooks::WebhookReceipt;
use crate::model::{ProviderEventKind, WebhookRequest};

pub fn routes() -> Vec<Route> {
    vec![Route::new(
        Method::POST,
        "/v1/webhooks/{channel}",
        Access::Public,
        true,
        post(receive),
    )]
}

async fn receive(
    State(state): State<AppState>,
    ApiPath(channel): ApiPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceipt>, ApiError> {
    let request = WebhookRequest {
        method: "POST".into(),
        query: query.unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let (receipt, engagements) = state.messaging.webhook(&channel, request).await?;
    for engagement in engagements {
        let message = &engagement.message;
        match engagement.kind {
            ProviderEventKind::Opened => tracking::opened(&state, message).await?,
            ProviderEventKind::Clicked => {
                let url = engagement.url.as_deref().unwrap_or_default();
                tracking::clicked(&state, message, url).await?;
            }
            ProviderEventKind::Unsubscribed => {
                tracking::unsubscribed(&state, message).await?;
            }
            // Delivery reports were applied by messaging.
            _ => {}
        }
    }
    Ok(Json(receipt))
}
