//! Contacts and events: upsert, read, and idempotent event ingest.
//!
//! Every write is flushed before the response, so a 2xx means the data survives a crash.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{
    Access, ApiError, ApiJson, ApiJsonOrList, ApiPath, ApiQuery, AppState, Route, blocking,
};
use crate::auth::{Permission, Principal};
use crate::model::{Attributes, Event, Millis, check_name};
use crate::standing::Standing;
use crate::store::{
    ContactPage, ContactQuery, ContactUpsert, EventPage, MAX_RECORD_BYTES, OutboxMessage, Recorded,
    StateName, partition_of,
};

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::POST,
            "/v1/contacts",
            Needs(Permission::WriteContacts),
            true,
            post(upsert_contact),
        ),
        Route::new(
            Method::GET,
            "/v1/contacts",
            Needs(Permission::ReadContacts),
            false,
            get(search),
        ),
        Route::new(
            Method::GET,
            "/v1/contacts/{id}",
            Needs(Permission::ReadContacts),
            false,
            get(get_contact),
        ),
        Route::new(
            Method::DELETE,
            "/v1/contacts/{id}",
            Needs(Permission::DeleteContacts),
            false,
            delete(erase),
        ),
        Route::new(
            Method::GET,
            "/v1/contacts/{id}/messages",
            Needs(Permission::ReadContacts),
            false,
            get(contact_messages),
        ),
        Route::new(
            Method::GET,
            "/v1/contacts/{id}/events",
            Needs(Permission::ReadContacts),
            false,
            get(contact_events),
        ),
        Route::new(
            Method::POST,
            "/v1/events",
            Needs(Permission::Ingest),
            true,
            post(ingest_events),
        ),
    ]
}

async fn upsert_contact(
    State(state): State<AppState>,
    ApiJson(upsert): ApiJson<ContactUpsert>,
) -> Result<(StatusCode, Json<Standing>), ApiError> {
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
    let (scoring, audiences) = (&state.journeys.scoring, &state.journeys.audiences);
    let standing = Standing::of(upserted.contact, now, scoring, audiences);
    Ok((status, Json(standing)))
}

/// A contact with the journeys they are in and have been in.
#[derive(Serialize)]
struct ContactView {
    #[serde(flatten)]
    contact: Standing,
    /// Whether it is in the global control group, which no marketing message reaches.
    control_group: bool,
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
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ContactView>, ApiError> {
    let store = state.store.clone();
    let scoring = state.journeys.scoring.clone();
    let audiences = state.journeys.audiences.clone();
    let now = state.clock.now();
    let found = blocking(move || {
        // An id merged into another contact is that contact's.
        let found = match store.contact_with_journeys(&id)? {
            Some(found) => Some(found),
            None => match store.alias(&id)? {
                Some(into) => store.contact_with_journeys(&into)?,
                None => None,
            },
        };
        let (contact, journeys) = found.ok_or_else(|| no_contact(&id))?;
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
        let held_out = store.workspace()?.control_group_percent;
        Ok(ContactView {
            control_group: crate::messaging::control::holds_out(&contact.id, held_out),
            contact: Standing::of(contact, now, &scoring, &audiences),
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
    ApiPath(id): ApiPath<String>,
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

/// How long an erasure request waits for the contact's worker to have done it before it
/// answers `202` (it is queued durably, and done in order after the contact's earlier work).
const ERASURE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Erase the contact (the right to erasure): it, its events, enrollments and every record
/// that names it, its messages anonymised; recorded in the audit log under a random reference.
/// An id merged into another contact erases that contact.
async fn erase(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let now = state.clock.now();
    let store = state.store.clone();
    let erased = crate::store::erasure_reference();
    let reference = erased.clone();
    // Subscribed before the erasure is queued, so the commit that does it is not missed.
    let mut commits = state.scheduler.commits();
    let (owner, partition) = blocking(move || {
        let owner = match store.contact_exists(&id)? {
            true => id.clone(),
            false => store.alias(&id)?.ok_or_else(|| no_contact(&id))?,
        };
        store.enqueue(&crate::store::WorkItem::Erase {
            contact_id: owner.clone(),
            actor: by.actor().to_owned(),
            reference: reference.clone(),
            requested_at: now,
        })?;
        store.flush()?;
        let partition = partition_of(&owner);
        Ok((owner, partition))
    })
    .await?;
    state.scheduler.notify(&[partition]);
    // Looked at again after each batch the workers commit, until the erasure's has.
    let done = async {
        loop {
            commits.borrow_and_update();
            let (store, owner) = (state.store.clone(), owner.clone());
            if !blocking(move || Ok(store.contact_exists(&owner)?)).await? {
                return Ok::<bool, ApiError>(true);
            }
            if commits.changed().await.is_err() {
                return Ok(false);
            }
        }
    };
    match tokio::time::timeout(ERASURE_WAIT, done).await {
        Ok(Ok(true)) => Ok((
            StatusCode::OK,
            Json(serde_json::json!({"status": "erased", "audit_object": erased})),
        )),
        Ok(Err(error)) => Err(error),
        Ok(Ok(false)) | Err(_) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"status": "queued", "audit_object": erased})),
        )),
    }
}

/// What `GET /v1/contacts` may be asked: every filter given must hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Search {
    email: Option<String>,
    phone: Option<String>,
    tag: Option<String>,
    /// With `value`: contacts whose attribute has that value.
    attribute: Option<String>,
    value: Option<String>,
    /// The `next` of the page before.
    after: Option<String>,
    limit: Option<usize>,
}

/// Contacts by email, phone, tag or attribute value, in id order, a page at a time. A search
/// by tag or attribute looks at up to `MAX_SCANNED` contacts a page: a page may then hold
/// fewer than `limit`, with `next` to go on.
async fn search(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiQuery(search): ApiQuery<Search>,
) -> Result<Json<ContactPage<Standing>>, ApiError> {
    // Whoever reads addresses masked may not find a contact by one: that would unmask it.
    let by_identity = search.email.is_some()
        || search.phone.is_some()
        || search
            .attribute
            .as_deref()
            .is_some_and(|name| name.contains("email") || name.contains("phone"));
    if by.masked() && by_identity {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "contact data is masked for this token: search by tag or attribute, not by email or phone",
        ));
    }
    let attribute = match (search.attribute, search.value) {
        (Some(name), Some(value)) => Some((name, value)),
        (None, None) => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "`attribute` and `value` go together: ?attribute=plan&value=pro",
            ));
        }
    };
    let query = ContactQuery {
        email: search.email,
        phone: search.phone,
        tag: search.tag,
        attribute,
        after: search.after,
        limit: search.limit.unwrap_or(100).clamp(1, 1000),
    };
    let store = state.store.clone();
    let page = blocking(move || Ok(store.search_contacts(&query)?)).await?;
    let now = state.clock.now();
    let (scoring, audiences) = (&state.journeys.scoring, &state.journeys.audiences);
    Ok(Json(ContactPage {
        contacts: (page.contacts.into_iter())
            .map(|contact| Standing::of(contact, now, scoring, audiences))
            .collect(),
        next: page.next,
        scanned: page.scanned,
    }))
}

/// What `GET /v1/contacts/{id}/events` may be asked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventListing {
    /// The `next` of the page before.
    before: Option<String>,
    limit: Option<usize>,
}

/// Most events one page lists.
const MAX_EVENTS_LISTED: usize = 1000;

/// The events the journeys processed for the contact, newest first, a page at a time.
async fn contact_events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(listing): ApiQuery<EventListing>,
) -> Result<Json<EventPage>, ApiError> {
    if let Some(cursor) = &listing.before
        && hex::decode(cursor).map_or(true, |key| key.len() <= 8)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "`before` must be the `next` of an earlier page",
        ));
    }
    let limit = listing.limit.unwrap_or(100).clamp(1, MAX_EVENTS_LISTED);
    let store = state.store.clone();
    let page = blocking(move || {
        if !store.contact_exists(&id)? {
            return Err(no_contact(&id));
        }
        Ok(store.contact_events(&id, listing.before.as_deref(), limit)?)
    })
    .await?;
    Ok(Json(page))
}

/// An event as a client sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventBody {
    id: String,
    contact_id: String,
    name: String,
    #[serde(default)]
    properties: Attributes,
    #[serde(with = "crate::model::timestamp_json")]
    timestamp: Millis,
}

/// How far ahead of the server's clock an event may be dated (a client's clock runs fast).
const MAX_AHEAD: Millis = 86_400_000;

/// Refuse an event no journey can use, naming the field: ids and names as the store takes
/// them, property names, a timestamp before 1970 or more than a day ahead, a size past what a
/// record may hold.
pub(super) fn check_event(event: &Event, now: Millis) -> Result<(), ApiError> {
    let invalid = |message: String| {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            message,
        ))
    };
    let id = event.id.escape_debug();
    if event.id.is_empty() || event.id.len() > 256 {
        return invalid(format!("event `{id}`: `id` is 1 to 256 characters"));
    }
    if event.contact_id.trim().is_empty() || event.contact_id.len() > 256 {
        return invalid(format!("event `{id}`: `contact_id` is 1 to 256 characters"));
    }
    if let Err(problem) = check_name(&event.name) {
        return invalid(format!("event `{id}`: `name`: {problem}"));
    }
    for name in event.properties.keys() {
        if let Err(problem) = check_name(name) {
            return invalid(format!(
                "event `{id}`: property `{}`: {problem}",
                name.escape_debug()
            ));
        }
    }
    if event.timestamp < 0 {
        return invalid(format!("event `{id}`: `timestamp` is before 1970"));
    }
    if event.timestamp > now.saturating_add(MAX_AHEAD) {
        return invalid(format!(
            "event `{id}`: `timestamp` {} is more than a day ahead of the server's clock ({})",
            crate::model::format_timestamp(event.timestamp),
            crate::model::format_timestamp(now)
        ));
    }
    let size = serde_json::to_vec(&event.properties).map_or(0, |bytes| bytes.len());
    if size > MAX_RECORD_BYTES / 2 {
        return invalid(format!(
            "event `{id}`: `properties` are {size} bytes; at most {}",
            MAX_RECORD_BYTES / 2
        ));
    }
    Ok(())
}

impl From<EventBody> for Event {
    fn from(body: EventBody) -> Self {
        Event {
            id: body.id,
            contact_id: body.contact_id,
            name: body.name,
            properties: body.properties,
            timestamp: body.timestamp,
            depth: 0,
        }
    }
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
    ApiJsonOrList(events): ApiJsonOrList<EventBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let events: Vec<Event> = events.into_iter().map(Event::from).collect();
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
            format!("send 1 to {MAX_BATCH} events"),
        ));
    }
    let now = state.clock.now();
    for event in &events {
        check_event(event, now)?;
    }
    let results = blocking(move || {
        let ingest = Ingest {
            events: events.clone(),
            ..Ingest::default()
        };
        let recorded = record(&state, ingest, now)?;
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

/// What an ingest request writes besides contact upserts: events, and merges of contacts that
/// turned out to be one person.
#[derive(Default)]
pub(super) struct Ingest {
    pub events: Vec<Event>,
    /// Contacts to create as anonymous visitors if the events find them new.
    pub anonymous: std::collections::BTreeSet<String>,
    /// `(from, into)`: queued after the events, in `from`'s partition.
    pub merges: Vec<(String, String)>,
}

/// Record events (creating contacts they name that do not exist, as analytics pipelines
/// expect; an id merged into another contact is that one's), queue the merges, flush, and wake
/// the journey workers: the one write path for every ingest route.
pub(super) fn record(
    state: &AppState,
    mut ingest: Ingest,
    now: Millis,
) -> Result<Vec<Recorded>, ApiError> {
    let store = state.store.as_ref();
    let named: std::collections::BTreeSet<String> =
        ingest.events.iter().map(|e| e.contact_id.clone()).collect();
    for contact_id in named {
        if store.contact_exists(&contact_id)? {
            continue;
        }
        if let Some(into) = store.alias(&contact_id)? {
            for event in ingest
                .events
                .iter_mut()
                .filter(|e| e.contact_id == contact_id)
            {
                event.contact_id = into.clone();
            }
            continue;
        }
        store.upsert_contact(
            ContactUpsert {
                id: Some(contact_id.clone()),
                anonymous: ingest.anonymous.contains(&contact_id),
                ..ContactUpsert::default()
            },
            now,
        )?;
    }
    let events = ingest.events;
    let recorded = store.record_events(&events)?;
    let mut partitions: Vec<u8> = events
        .iter()
        .zip(&recorded)
        .filter(|(_, r)| **r == Recorded::New)
        .map(|(e, _)| partition_of(&e.contact_id))
        .collect();
    for (from, into) in ingest.merges {
        store.enqueue(&crate::store::WorkItem::Merge {
            contact_id: from.clone(),
            into,
        })?;
        partitions.push(partition_of(&from));
    }
    // Wake the workers before the flush, not after: they can start on the events while the
    // disk catches up. Safe, because sled's log is written in order: a step's commit can only
    // be durable if the event it consumed is. The client still hears back only once flushed.
    state.scheduler.notify(&partitions);
    store.flush()?;
    Ok(recorded)
}
