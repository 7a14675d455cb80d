//! Plugin uploads over HTTP (admin only): `PUT /v1/admin/plugins/{name}` with the binary as
//! the body and the limits it asks for in the query, and `GET /v1/admin/plugins` for what was
//! uploaded, by whom and when.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{delete, get, put};
use axum::{Extension, Json};

use super::bounded::{media_type, read_bounded};
use super::{Access, ApiError, ApiPath, ApiQuery, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::runtime::Limits;
use crate::uploads::UploadError;

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::PUT,
            "/v1/admin/plugins/{name}",
            Needs(Permission::Admin),
            true,
            put(upload),
        )
        .bounding_its_own_body(),
        Route::new(
            Method::DELETE,
            "/v1/admin/plugins/{name}/{version}",
            Needs(Permission::Admin),
            false,
            delete(remove),
        ),
        Route::new(
            Method::GET,
            "/v1/admin/plugins",
            Needs(Permission::Admin),
            false,
            get(list),
        ),
    ]
}

impl From<UploadError> for ApiError {
    fn from(error: UploadError) -> Self {
        let status = match error {
            UploadError::Store(error) => return error.into(),
            UploadError::Registry(crate::registry::RegistryError::VersionConflict { .. }) => {
                StatusCode::CONFLICT
            }
            UploadError::Registry(crate::registry::RegistryError::Load {
                source: crate::runtime::LoadError::TooLarge { .. },
                ..
            }) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::NotFound(_) => StatusCode::NOT_FOUND,
            UploadError::NotUploaded(_) | UploadError::InUse { .. } => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let details = match &error {
            UploadError::InUse { uses, .. } => Some(serde_json::json!({ "used_by": uses })),
            _ => None,
        };
        let api = ApiError::new(status, error.code(), error.to_string());
        match details {
            Some(details) => api.with_details(details),
            None => api,
        }
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "plugin_too_large",
        format!("a plugin binary may be at most {limit} bytes"),
    )
}

/// Check, store and install the plugin in the body under `name`: `201` with its description,
/// or `200` when this very binary is installed already.
async fn upload(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(limits): ApiQuery<Limits>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let wasm = media_type(&headers)
        .is_some_and(|mime| mime == "application/wasm" || mime == "application/octet-stream");
    if !wasm {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the plugin binary with `Content-Type: application/wasm`",
        ));
    }
    let limit = state.runtime.max_binary_bytes();
    let binary = read_bounded(&headers, body, limit, too_large).await?;
    let now = state.clock.now();
    let uploads = state.uploads.clone();
    let installed =
        blocking(move || Ok(uploads.install(&name, &binary, limits, &by, now)?)).await?;
    let status = if installed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = serde_json::to_value(&installed.plugin).expect("a summary serializes");
    if let Some(upload) = &installed.upload {
        body["limits"] = serde_json::to_value(upload.limits).expect("limits serialize");
        body["uploaded_by"] = upload.uploaded_by.clone().into();
        body["uploaded_at"] = crate::model::format_timestamp(upload.uploaded_at).into();
    }
    body["installed"] = installed.created.into();
    Ok((status, Json(body)))
}

async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let uploads = state.uploads.clone();
    let list = blocking(move || Ok(uploads.list()?)).await?;
    Ok(Json(serde_json::json!({ "uploads": list })))
}

/// Remove an uploaded version no journey or channel uses.
async fn remove(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = state.clock.now();
    let uploads = state.uploads.clone();
    let id = format!("{name}@{version}");
    let removed = blocking(move || Ok(uploads.delete(&id, &by, now)?)).await?;
    Ok(Json(serde_json::json!({ "deleted": removed })))
}
