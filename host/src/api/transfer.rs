//! Contacts in bulk over HTTP: `POST /v1/imports/contacts` (a CSV or NDJSON file, checked
//! whole before anything is written; see `crate::transfer`) and `GET /v1/exports/contacts`
//! (every contact, streamed as it is read).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;

use super::bounded::{media_type, read_bounded};
use super::{Access, ApiError, ApiQuery, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::standing::Standing;
use crate::store::AuditEntry;
use crate::transfer::{ExportFormat, Format, ImportError, ImportReport};

/// Largest import file: a million contacts of a few columns fit several times over.
pub const MAX_IMPORT_BYTES: usize = 512 << 20;

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::POST,
            "/v1/imports/contacts",
            Needs(Permission::WriteContacts),
            true,
            post(import),
        )
        .bounding_its_own_body()
        .unhurried(),
        Route::new(
            Method::GET,
            "/v1/exports/contacts",
            Needs(Permission::ExportContacts),
            false,
            get(export),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    /// `csv` or `ndjson`; by default what the Content-Type says.
    format: Option<String>,
    /// Check and count only; nothing is written.
    #[serde(default)]
    dry_run: bool,
}

impl From<ImportError> for ApiError {
    fn from(error: ImportError) -> Self {
        match error {
            ImportError::Malformed { line, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "import_malformed",
                error.to_string(),
            )
            .with_details(serde_json::json!({ "line": line })),
            ImportError::Store(error) => error.into(),
        }
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "import_too_large",
        format!("an import file may be at most {limit} bytes; split it"),
    )
}

fn import_format(query: &ImportQuery, headers: &HeaderMap) -> Result<Format, ApiError> {
    let mime = media_type(headers);
    let named = query.format.as_deref().or(match mime.as_deref() {
        Some("text/csv") => Some("csv"),
        Some("application/x-ndjson" | "application/ndjson") => Some("ndjson"),
        _ => None,
    });
    match named {
        Some("csv") => Ok(Format::Csv),
        Some("ndjson") => Ok(Format::Ndjson),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the file as text/csv or application/x-ndjson (or say ?format=csv|ndjson)",
        )),
    }
}

/// Import the file: `200` with the counts (`rows`, `created`, `updated`, `duplicates`,
/// `bad_rows`) and the first bad rows by line; `422 import_malformed` and nothing written when
/// the file itself cannot be read. Recorded in the audit log with the counts.
async fn import(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiQuery(query): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    let format = import_format(&query, &headers)?;
    let bytes = read_bounded(&headers, body, MAX_IMPORT_BYTES, too_large).await?;
    let now = state.clock.now();
    let store = state.store.clone();
    let report = blocking(move || {
        let report = crate::transfer::import(store.as_ref(), format, &bytes, query.dry_run, now)?;
        if !report.dry_run {
            let detail = serde_json::to_value(ImportReport {
                errors: Vec::new(),
                ..report.clone()
            })
            .expect("reports serialize");
            let audit = AuditEntry::new(now, by.actor(), "contacts.import", "contacts", detail);
            store.record_audit(audit)?;
            store.flush()?;
        }
        Ok(report)
    })
    .await?;
    Ok(Json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// `ndjson` (the default) or `csv`.
    format: Option<String>,
}

/// Every contact, in id order, streamed: NDJSON (each line a contact as the API shows it) or
/// CSV (the columns an import reads).
async fn export(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let (format, mime, file) = match query.format.as_deref() {
        None | Some("ndjson") => (
            ExportFormat::Ndjson,
            "application/x-ndjson",
            "contacts.ndjson",
        ),
        Some("csv") => (ExportFormat::Csv, "text/csv; charset=utf-8", "contacts.csv"),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("`format` is `ndjson` or `csv`, not `{other}`"),
            ));
        }
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = state.store.clone();
    let (scoring, audiences) = (
        state.journeys.scoring.clone(),
        state.journeys.audiences.clone(),
    );
    let now = state.clock.now();
    tokio::task::spawn_blocking(move || {
        let standing = |contact| Standing::of(contact, now, &scoring, &audiences);
        let written = crate::transfer::export(store.as_ref(), format, standing, |chunk| {
            sender.blocking_send(Ok(Bytes::from(chunk))).is_ok()
        });
        if let Err(error) = written {
            // The status is sent; a broken stream is how the reader learns it failed.
            tracing::error!(%error, "contact export stopped");
            let _ = sender.blocking_send(Err(std::io::Error::other(error.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(mime));
    headers.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")).expect("ascii"),
    );
    Ok(response)
}
