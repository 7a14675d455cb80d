//! `GET /v1/admin/backup`: the whole store, streamed as a backup file while the server keeps
//! working (see `store::backup`), for `wayline backup`. Admin only, and recorded in the audit
//! log before the first byte: a backup holds every contact.

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Access, ApiError, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::store::{AuditEntry, StoreError};

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(
            Method::GET,
            "/v1/admin/backup",
            Access::Needs(Permission::Admin),
            false,
            get(backup),
        )
        .unhurried(),
    ]
}

/// How long the backup waits for a client that stopped reading before it gives up: while it
/// runs, every write is also logged for it.
const STALLED: std::time::Duration = std::time::Duration::from_secs(60);

/// Hands what the backup writes to the response, a chunk at a time; fails once the client
/// has gone or has read nothing for [`STALLED`], which ends the backup.
struct ToResponse {
    sender: tokio::sync::mpsc::Sender<Result<Bytes, StoreError>>,
    runtime: tokio::runtime::Handle,
}

impl std::io::Write for ToResponse {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let sent = self.runtime.block_on(tokio::time::timeout(
            STALLED,
            self.sender.send(Ok(Bytes::copy_from_slice(bytes))),
        ));
        match sent {
            Ok(Ok(())) => Ok(bytes.len()),
            Ok(Err(_)) => Err(std::io::Error::other(
                "the client stopped reading the backup",
            )),
            Err(_) => Err(std::io::Error::other(
                "the client read nothing for 60 s; the backup was stopped",
            )),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn backup(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
) -> Result<Response, ApiError> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, StoreError>>(8);
    let store = state.store.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = ToResponse {
            sender: sender.clone(),
            runtime,
        };
        match store.backup(&mut out) {
            Ok(summary) => {
                tracing::info!(copied = summary.copied, logged = summary.logged, bytes = summary.bytes, sha256 = %summary.sha256, "backup written")
            }
            Err(error) => {
                tracing::error!(%error, "backup stopped");
                // Not waiting on a client that stopped reading: a stream cut short fails its
                // checksum just as well.
                let _ = sender.try_send(Err(error));
            }
        }
    });
    // A backup that cannot start (another is running) is refused with a status; once bytes
    // flow, a broken stream (and no checksum at its end) is how the reader learns it failed.
    let first = match receiver.recv().await {
        Some(Ok(bytes)) => bytes,
        Some(Err(StoreError::Conflict(message))) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "backup_running",
                message,
            ));
        }
        Some(Err(error)) => return Err(error.into()),
        None => Bytes::new(),
    };
    // Recorded once it runs (it holds every contact).
    let (store, now) = (state.store.clone(), state.clock.now());
    blocking(move || {
        let detail = serde_json::json!({});
        let audit = AuditEntry::new(now, by.actor(), "store.backup", "store", detail);
        Ok(store.record_audit(audit)?)
    })
    .await?;
    let stream = futures_util::stream::unfold(
        (Some(first), receiver),
        |(first, mut receiver)| async move {
            let chunk = match first {
                Some(first) => Ok(first),
                None => receiver
                    .recv()
                    .await?
                    .map_err(|e| std::io::Error::other(e.to_string())),
            };
            Some((chunk, (None, receiver)))
        },
    );
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"wayline.backup\""),
    );
    Ok(response)
}
