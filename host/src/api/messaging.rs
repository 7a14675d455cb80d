//! Channels, templates and messages: bind a channel name to a plugin, write templates (each
//! change a new version), preview and test-send them, and follow a message's delivery.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use serde::Deserialize;

use super::{Access, ApiError, ApiJson, ApiPath, ApiQuery, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::messaging::{ChannelRequest, MessagingError, TemplateDraft};
use crate::model::Attributes;
use crate::store::TemplateVersion;

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::GET,
            "/v1/channels",
            Needs(Permission::ReadReports),
            false,
            get(list_channels),
        ),
        Route::new(
            Method::GET,
            "/v1/channels/{name}",
            Needs(Permission::ReadReports),
            false,
            get(get_channel),
        ),
        Route::new(
            Method::PUT,
            "/v1/channels/{name}",
            Needs(Permission::Admin),
            true,
            put(put_channel),
        ),
        Route::new(
            Method::GET,
            "/v1/templates",
            Needs(Permission::ReadReports),
            false,
            get(list_templates),
        ),
        Route::new(
            Method::GET,
            "/v1/templates/{name}",
            Needs(Permission::ReadReports),
            false,
            get(get_template),
        ),
        Route::new(
            Method::PUT,
            "/v1/templates/{name}",
            Needs(Permission::EditContent),
            true,
            put(put_template),
        ),
        Route::new(
            Method::POST,
            "/v1/templates/{name}/preview",
            Needs(Permission::EditContent),
            true,
            post(preview),
        ),
        Route::new(
            Method::POST,
            "/v1/templates/{name}/test-send",
            Needs(Permission::EditContent),
            true,
            post(test_send),
        ),
        Route::new(
            Method::POST,
            "/v1/templates/{name}/versions/{version}/approve",
            Needs(Permission::ApproveContent),
            false,
            post(approve_template),
        ),
        Route::new(
            Method::GET,
            "/v1/messages/{id}",
            Needs(Permission::ReadContacts),
            false,
            get(get_message),
        ),
    ]
}

impl From<MessagingError> for ApiError {
    fn from(error: MessagingError) -> Self {
        let message = error.to_string();
        match error {
            MessagingError::BadChannel(problems) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_channel", message)
                    .with_details(serde_json::json!({ "problems": problems }))
            }
            MessagingError::BadTemplate(problems) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_template",
                message,
            )
            .with_details(serde_json::json!({ "problems": problems })),
            MessagingError::NotFound(code, _) => ApiError::not_found(code, message),
            MessagingError::Invalid(code, _) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            MessagingError::Unauthenticated(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "webhook_unauthenticated", message)
            }
            MessagingError::Busy(code, _) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message).retry_after(1)
            }
            MessagingError::Unavailable(code, _) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(30)
            }
            MessagingError::Store(error) => error.into(),
        }
    }
}

async fn list_channels(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let messaging = state.messaging.clone();
    let channels = blocking(move || Ok(messaging.channels()?)).await?;
    Ok(Json(serde_json::json!({ "channels": channels })))
}

async fn get_channel(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let messaging = state.messaging.clone();
    let channel = blocking(move || Ok(messaging.channel(&name)?)).await?;
    Ok(Json(channel))
}

async fn put_channel(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<ChannelRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let messaging = state.messaging.clone();
    let (view, created) =
        blocking(move || Ok(messaging.put_channel(&name, request, by.actor())?)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

async fn list_templates(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let store = state.store.clone();
    let templates = blocking(move || Ok(store.templates()?)).await?;
    Ok(Json(serde_json::json!({ "templates": templates })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    #[serde(default)]
    version: Option<u32>,
}

async fn get_template(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<VersionQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let messaging = state.messaging.clone();
    let (template, versions) = blocking(move || {
        let template = messaging.template(&name, query.version)?;
        let versions: Vec<u32> = messaging
            .store
            .template_versions(&name)?
            .iter()
            .map(|t| t.version)
            .collect();
        Ok((template, versions))
    })
    .await?;
    Ok(Json(
        serde_json::json!({ "template": template, "versions": versions }),
    ))
}

async fn put_template(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(draft): ApiJson<TemplateDraft>,
) -> Result<impl IntoResponse, ApiError> {
    let messaging = state.messaging.clone();
    let (template, unguarded) =
        blocking(move || Ok(messaging.put_template(&name, draft, by.actor())?)).await?;
    let warnings: Vec<String> = unguarded
        .iter()
        .map(|variable| {
            format!(
                "`{variable}` is printed without a fallback: a message to a contact without it fails; write {{{{ {variable} | default(\"…\") }}}}"
            )
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "template": template, "warnings": warnings })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    contact_id: String,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    variables: Attributes,
}

async fn preview(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<PreviewRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let messaging = state.messaging.clone();
    let rendered = blocking(move || {
        Ok(messaging.preview(
            &name,
            request.version,
            &request.contact_id,
            request.variables,
        )?)
    })
    .await?;
    Ok(Json(rendered))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSendRequest {
    contact_id: String,
    /// The test address: the message goes there and nowhere else.
    to: String,
    #[serde(default)]
    variables: Attributes,
}

async fn test_send(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<TestSendRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let messaging = state.messaging.clone();
    let message = blocking(move || {
        Ok(messaging.test_send(&name, &request.contact_id, &request.to, request.variables)?)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

async fn get_message(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let messaging = state.messaging.clone();
    let message = blocking(move || Ok(messaging.message(&id)?)).await?;
    Ok(Json(message))
}

/// Approve a template version for sending (a manager who did not write it).
async fn approve_template(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath((name, version)): ApiPath<(String, u32)>,
) -> Result<Json<TemplateVersion>, ApiError> {
    let messaging = state.messaging.clone();
    Ok(Json(
        blocking(move || Ok(messaging.approve_template(&name, version, by.actor())?)).await?,
    ))
}
