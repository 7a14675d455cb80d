//! Contacts and events: upsert, read, and idempotent event ingest.
//!
//! Every write is flushed before the response, so a 2xx means the data survives a crash.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiJson, AppState, blocking};
use crate::model::{Contact, Event, Millis};
use crate::store::{ContactUpsert, OutboxMessage, Recorded, StateName, partition_of};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/contacts", post(upsert_contact))
        .route("/contacts/{id}", get(get_contact))
        .route("/contacts/{id}/messages", get(contact_messages))
        .route("/events", post(ingest_events))
}

async fn upsert_contact(
    State(state): State<AppState>,
    ApiJson(upsert): ApiJson<ContactUpsert>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let now = state.clock.now();
    let store = state.store.clone();
    let upserted = blocking(move || {
        let upserted = store.upsert_contact(upsert, now)?;
        store.flush()?;
        Ok(upserted)
    })
    .await?;
    let status = if upserted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(upserted.contact)))
}

/// A contact with the journeys they are in and have been in.
#[derive(Serialize)]
struct ContactView {
    #[serde(flatten)]
    contact: Contact,
    /// Newest first within each journey.
    enrollments: Vec<EnrollmentSummary>,
}

#[derive(Serialize)]
struct EnrollmentSummary {
    id: String,
    journey_id: String,
    version: u32,
    state: StateName,
    node: String,
    #[serde(with = "crate::model::timestamp_json")]
    entered_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_reason: Option<String>,
}

async fn get_contact(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ContactView>, ApiError> {
    let store = state.store.clone();
    let found = blocking(move || {
        let (contact, journeys) = store
            .contact_with_journeys(&id)?
            .ok_or_else(|| no_contact(&id))?;
        let mut enrollments = Vec::new();
        for record in journeys {
            for enrollment_id in record.recent.iter().rev() {
                if let Some(e) = store.enrollment(enrollment_id)? {
                    enrollments.push(EnrollmentSummary {
                        error: e.state.error().map(str::to_owned),
                        exit_reason: e.state.reason().map(str::to_owned),
                        waiting_until: e.state.due_at().map(crate::model::format_timestamp),
                        state: e.state.name(),
                        id: e.id,
                        journey_id: e.journey_id,
                        version: e.version,
                        node: e.node,
                        entered_at: e.entered_at,
                    });
                }
            }
        }
        Ok(ContactView {
            contact,
            enrollments,
        })
    })
    .await?;
    Ok(Json(found))
}

fn no_contact(id: &str) -> ApiError {
    ApiError::not_found("contact_not_found", format!("no contact `{id}`"))
}

/// The messages journeys asked to send this contact, oldest first.
async fn contact_messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<OutboxMessage>>, ApiError> {
    let store = state.store.clone();
    let messages = blocking(move || {
        if !store.contact_exists(&id)? {
            return Err(no_contact(&id));
        }
        Ok(store.messages(&id)?)
    })
    .await?;
    Ok(Json(messages))
}

/// One event, or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Event>),
    One(Box<Event>),
}

#[derive(Serialize)]
struct EventResult {
    id: String,
    status: &'static str,
}

/// Most events one request may carry.
pub(super) const MAX_BATCH: usize = 1_000;

async fn ingest_events(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OneOrMany>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let events = match body {
        OneOrMany::Many(events) => events,
        OneOrMany::One(event) => vec![*event],
    };
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
            format!("send 1 to {MAX_BATCH} events"),
        ));
    }
    if let Some(event) = events
        .iter()
        .find(|e| e.contact_id.is_empty() || e.name.is_empty())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            format!("event `{}` needs a `contact_id` and a `name`", event.id),
        ));
    }
    let now = state.clock.now();
    let results = blocking(move || {
        let recorded = record_events(&state, &[], &events, now)?;
        Ok(events
            .iter()
            .zip(recorded)
            .map(|(event, recorded)| EventResult {
                id: event.id.clone(),
                status: if recorded == Recorded::New {
                    "accepted"
                } else {
                    "duplicate"
                },
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "results": results })),
    ))
}

/// Apply contact upserts, then record events (creating contacts they name that do not exist,
/// as analytics pipelines expect), then flush, then wake the journey workers: the one write
/// path for every ingest route.
pub(super) fn record_events(
    state: &AppState,
    upserts: &[ContactUpsert],
    events: &[Event],
    now: Millis,
) -> Result<Vec<Recorded>, ApiError> {
    let store = state.store.as_ref();
    for upsert in upserts {
        store.upsert_contact(upsert.clone(), now)?;
    }
    for contact_id in events
        .iter()
        .map(|e| &e.contact_id)
        .collect::<std::collections::BTreeSet<_>>()
    {
        if !store.contact_exists(contact_id)? {
            store.upsert_contact(
                ContactUpsert {
                    id: Some(contact_id.clone()),
                    ..ContactUpsert::default()
                },
                now,
            )?;
        }
    }
    let recorded = store.record_events(events)?;
    // Wake the workers before the flush, not after: they can start on the events while the
    // disk catches up. Safe, because sled's log is written in order: a step's commit can only
    // be durable if the event it consumed is. The client still hears back only once flushed.
    let partitions: Vec<u8> = events
        .iter()
        .zip(&recorded)
        .filter(|(_, r)| **r == Recorded::New)
        .map(|(e, _)| partition_of(&e.contact_id))
        .collect();
    state.scheduler.notify(&partitions);
    store.flush()?;
    Ok(recorded)
}
