//! Journeys over HTTP: drafts, publishing, pause/resume/archive, simulation, per-node stats,
//! enrollment by API call, and reading an enrollment.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use serde::Deserialize;

use super::{Access, ApiError, ApiJson, ApiPath, ApiQuery, AppState, Route, blocking};
use crate::auth::{Permission, Principal};
use crate::journeys::{Moved, Simulation, SimulationRequest};
use crate::store::{Enrollment, JourneyRecord, JourneyStatus, JourneyVersion, partition_of};

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    vec![
        Route::new(
            Method::GET,
            "/v1/journeys",
            Needs(Permission::ReadReports),
            false,
            get(list),
        ),
        Route::new(
            Method::POST,
            "/v1/journeys",
            Needs(Permission::EditContent),
            true,
            post(create),
        ),
        Route::new(
            Method::GET,
            "/v1/journeys/{id}",
            Needs(Permission::ReadReports),
            false,
            get(read),
        ),
        Route::new(
            Method::PUT,
            "/v1/journeys/{id}",
            Needs(Permission::EditContent),
            true,
            put(save_draft),
        ),
        Route::new(
            Method::POST,
            "/v1/journeys/{id}/publish",
            Needs(Permission::RunJourneys),
            false,
            post(publish),
        ),
        Route::new(
            Method::POST,
            "/v1/journeys/{id}/plugins",
            Needs(Permission::RunJourneys),
            true,
            post(move_plugin),
        ),
        Route::new(
            Method::GET,
            "/v1/journeys/{id}/versions/{version}",
            Needs(Permission::ReadReports),
            false,
            get(read_version),
        ),
        Route::new(
            Method::POST,
            "/v1/journeys/{id}/pause",
            Needs(Permission::RunJourneys),
            false,
            post(pause),
        ),
        Route::new(
            Method::POST,
            "/v1/journeys/{id}/resume",
            Needs(Permission::RunJourneys),
            false,
            post(resume),
        ),
        Route::new(
            Method::POST,
            "/v1/journeys/{id}/archive",
            Needs(Permission::DeleteJourneys),
            false,
            post(archive),
        ),
        Route::new(
            Method::POST,
            "/v1/journeys/{id}/simulate",
            Needs(Permission::EditContent),
            true,
            post(simulate),
        ),
        Route::new(
            Method::GET,
            "/v1/journeys/{id}/diff",
            Needs(Permission::ReadReports),
            false,
            get(diff),
        ),
        Route::new(
            Method::GET,
            "/v1/journeys/{id}/stats",
            Needs(Permission::ReadReports),
            false,
            get(stats),
        ),
        Route::new(
            Method::POST,
            "/v1/journeys/{id}/enrollments",
            Needs(Permission::RunJourneys),
            true,
            post(enroll),
        ),
        Route::new(
            Method::GET,
            "/v1/enrollments/{id}",
            Needs(Permission::ReadContacts),
            false,
            get(read_enrollment),
        ),
        Route::new(
            Method::POST,
            "/v1/enrollments/{id}/retry",
            Needs(Permission::RunJourneys),
            false,
            post(retry_enrollment),
        ),
    ]
}

/// Every journey with its status and its counts over all its versions.
async fn list(State(state): State<AppState>) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let journeys = state.journeys.clone();
    let listed = blocking(move || {
        let mut listed = Vec::new();
        for record in journeys.list()? {
            let mut entry = serde_json::to_value(&record).expect("a journey serializes");
            entry["counts"] =
                serde_json::to_value(journeys.totals(&record)?).expect("counts serialize");
            listed.push(entry);
        }
        Ok(listed)
    })
    .await?;
    Ok(Json(listed))
}

/// The body is the draft definition; an `id` in it names the journey.
async fn create(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiJson(mut body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<JourneyRecord>), ApiError> {
    let id = match body.as_object_mut().and_then(|o| o.remove("id")) {
        None => None,
        Some(serde_json::Value::String(id)) => Some(id),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_journey",
                "`id` is a string",
            ));
        }
    };
    let journeys = state.journeys.clone();
    let record = blocking(move || Ok(journeys.create(id, body, by.actor())?)).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JourneyRecord>, ApiError> {
    let journeys = state.journeys.clone();
    Ok(Json(blocking(move || Ok(journeys.get(&id)?)).await?))
}

async fn save_draft(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(draft): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<JourneyRecord>), ApiError> {
    let journeys = state.journeys.clone();
    let (record, created) =
        blocking(move || Ok(journeys.save_draft(id, draft, by.actor())?)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)))
}

/// The new version, with `warnings` about what deserves a look but did not stop it.
async fn publish(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let journeys = state.journeys.clone();
    let (version, warnings) = blocking(move || {
        let published = journeys.publish(&id, by.actor())?;
        journeys.store.flush()?;
        Ok(published)
    })
    .await?;
    let mut body = serde_json::to_value(version).expect("versions serialize");
    body["warnings"] = serde_json::to_value(warnings).expect("problems serialize");
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    /// The version to run, `name@version`.
    plugin: String,
}

/// Move the journey, every version and every contact in it, onto another version of one of
/// its plugins: activation of a new version, or rollback to an old one.
async fn move_plugin(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<MoveRequest>,
) -> Result<Json<Moved>, ApiError> {
    let journeys = state.journeys.clone();
    let moved = blocking(move || {
        let moved = journeys.move_plugin(&id, &request.plugin, by.actor())?;
        journeys.store.flush()?;
        Ok(moved)
    })
    .await?;
    Ok(Json(moved))
}

async fn read_version(
    State(state): State<AppState>,
    ApiPath((id, version)): ApiPath<(String, u32)>,
) -> Result<Json<JourneyVersion>, ApiError> {
    let journeys = state.journeys.clone();
    Ok(Json(
        blocking(move || Ok(journeys.version(&id, version)?)).await?,
    ))
}

async fn set_status(
    state: AppState,
    by: Principal,
    id: String,
    status: JourneyStatus,
) -> Result<Json<JourneyRecord>, ApiError> {
    let journeys = state.journeys.clone();
    let record = blocking(move || {
        let record = journeys.set_status(&id, status, by.actor())?;
        journeys.store.flush()?;
        Ok(record)
    })
    .await?;
    Ok(Json(record))
}

async fn pause(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JourneyRecord>, ApiError> {
    set_status(state, by, id, JourneyStatus::Paused).await
}

async fn resume(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JourneyRecord>, ApiError> {
    set_status(state, by, id, JourneyStatus::Active).await
}

async fn archive(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JourneyRecord>, ApiError> {
    set_status(state, by, id, JourneyStatus::Archived).await
}

async fn simulate(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<SimulationRequest>,
) -> Result<Json<Simulation>, ApiError> {
    let journeys = state.journeys.clone();
    Ok(Json(
        blocking(move || Ok(journeys.simulate(&id, request)?)).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    #[serde(default)]
    version: Option<u32>,
}

async fn stats(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let journeys = state.journeys.clone();
    let (version, nodes) = blocking(move || Ok(journeys.stats(&id, query.version)?)).await?;
    Ok(Json(
        serde_json::json!({"version": version, "nodes": nodes}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    contact_id: String,
    /// The same id enrolls once, however often the request is retried.
    #[serde(default)]
    request_id: Option<String>,
}

async fn enroll(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if request
        .request_id
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 256)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "`request_id` is 1 to 256 characters",
        ));
    }
    let (journeys, contact_id) = (state.journeys.clone(), request.contact_id.clone());
    let queued = blocking(move || {
        if !journeys.store.contact_exists(&request.contact_id)? {
            return Err(ApiError::not_found(
                "contact_not_found",
                format!("no contact `{}`", request.contact_id),
            ));
        }
        let request_id = request.request_id.unwrap_or_else(new_request_id);
        let queued = journeys.request_enrollment(&id, &request.contact_id, request_id)?;
        journeys.store.flush()?;
        Ok(queued)
    })
    .await?;
    if queued {
        state.scheduler.notify(&[partition_of(&contact_id)]);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": if queued { "queued" } else { "duplicate" }})),
    ))
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    hex::encode(bytes)
}

async fn read_enrollment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Enrollment>, ApiError> {
    let store = state.store.clone();
    Ok(Json(
        blocking(move || {
            store.enrollment(&id)?.ok_or_else(|| {
                ApiError::not_found("enrollment_not_found", format!("no enrollment `{id}`"))
            })
        })
        .await?,
    ))
}

/// Run a parked enrollment's node again, once what made it fail is fixed.
async fn retry_enrollment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Enrollment>), ApiError> {
    let journeys = state.journeys.clone();
    let enrollment = blocking(move || {
        let enrollment = journeys.retry(&id)?;
        journeys.store.flush()?;
        Ok(enrollment)
    })
    .await?;
    state
        .scheduler
        .notify(&[partition_of(&enrollment.contact_id)]);
    Ok((StatusCode::ACCEPTED, Json(enrollment)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    from: u32,
    to: u32,
}

/// What changed between two published versions: `?from=1&to=2`.
async fn diff(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let journeys = state.journeys.clone();
    Ok(Json(
        blocking(move || Ok(journeys.diff(&id, query.from, query.to)?)).await?,
    ))
}
