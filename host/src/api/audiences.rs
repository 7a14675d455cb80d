//! Segments and tag rules over HTTP: anyone who reads reports lists them and sees a segment's
//! size and a sample of its members; admins and managers put and delete them (recorded in the
//! audit log); a segment's full member list is contact data (`ReadContacts`). `GET /v1/sweeps`
//! shows how far each sweep (a definition's first look at everyone, a journey's backfill) got.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{Access, ApiError, ApiJson, ApiPath, ApiQuery, AppState, Route, blocking};
use crate::audiences::{AudienceError, DefinitionRequest};
use crate::auth::{Permission, Principal};
use crate::store::{AudienceKind, AudienceRecord, MemberPage, SweepRecord};

pub fn routes() -> Vec<Route> {
    use Access::Needs;
    let mut routes = Vec::new();
    for (path, kind) in [
        ("/v1/segments", AudienceKind::Segment),
        ("/v1/tag-rules", AudienceKind::Tag),
    ] {
        let one: &'static str = match kind {
            AudienceKind::Segment => "/v1/segments/{name}",
            AudienceKind::Tag => "/v1/tag-rules/{name}",
        };
        routes.extend([
            Route::new(
                Method::GET,
                path,
                Needs(Permission::ReadReports),
                false,
                get(move |state: State<AppState>| list(state, kind)),
            ),
            Route::new(
                Method::GET,
                one,
                Needs(Permission::ReadReports),
                false,
                get(move |state: State<AppState>, name: ApiPath<String>| read(state, name, kind)),
            ),
            Route::new(
                Method::PUT,
                one,
                Needs(Permission::Operate),
                true,
                axum::routing::put(
                    move |state: State<AppState>,
                          by: Extension<Principal>,
                          name: ApiPath<String>,
                          body: ApiJson<DefinitionRequest>| {
                        replace(state, by, name, body, kind)
                    },
                ),
            ),
            Route::new(
                Method::DELETE,
                one,
                Needs(Permission::Operate),
                false,
                axum::routing::delete(
                    move |state: State<AppState>,
                          by: Extension<Principal>,
                          name: ApiPath<String>| {
                        remove(state, by, name, kind)
                    },
                ),
            ),
        ]);
    }
    routes.extend([
        Route::new(
            Method::GET,
            "/v1/segments/{name}/members",
            Needs(Permission::ReadContacts),
            false,
            get(members),
        ),
        Route::new(
            Method::GET,
            "/v1/sweeps",
            Needs(Permission::ReadReports),
            false,
            get(sweeps),
        ),
    ]);
    routes
}

impl From<AudienceError> for ApiError {
    fn from(error: AudienceError) -> Self {
        let message = error.to_string();
        match error {
            AudienceError::NotFound(kind, _) => ApiError::not_found(
                match kind {
                    "segment" => "segment_not_found",
                    _ => "tag_rule_not_found",
                },
                message,
            ),
            AudienceError::Invalid(problems) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_definition",
                message,
            )
            .with_details(serde_json::json!({ "problems": problems })),
            AudienceError::Store(error) => error.into(),
        }
    }
}

/// Members shown with a segment.
const SAMPLE: usize = 10;

/// A definition as listed: a segment with its size and a sample of its members.
#[derive(Serialize)]
struct View {
    #[serde(flatten)]
    record: AudienceRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<Vec<String>>,
}

fn view(
    state: &AppState,
    record: AudienceRecord,
    sample: bool,
) -> Result<View, crate::store::StoreError> {
    let segment = record.kind == AudienceKind::Segment;
    let size = segment
        .then(|| state.store.segment_size(&record.name))
        .transpose()?;
    let sample = (segment && sample)
        .then(|| state.store.segment_members(&record.name, None, SAMPLE))
        .transpose()?
        .map(|page| page.members);
    Ok(View {
        record,
        size,
        sample,
    })
}

fn not_found(kind: AudienceKind, name: &str) -> ApiError {
    AudienceError::NotFound(kind.as_str(), name.to_owned()).into()
}

async fn list(
    State(state): State<AppState>,
    kind: AudienceKind,
) -> Result<Json<serde_json::Value>, ApiError> {
    let listed = blocking(move || {
        let records = state.journeys.audiences.list(kind);
        (records.into_iter())
            .map(|record| Ok(view(&state, record, false)?))
            .collect::<Result<Vec<View>, ApiError>>()
    })
    .await?;
    let field = match kind {
        AudienceKind::Segment => "segments",
        AudienceKind::Tag => "tag_rules",
    };
    Ok(Json(serde_json::json!({ field: listed })))
}

async fn read(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    kind: AudienceKind,
) -> Result<Json<View>, ApiError> {
    let found = blocking(move || {
        let record =
            (state.journeys.audiences.get(kind, &name)).ok_or_else(|| not_found(kind, &name))?;
        Ok(view(&state, record, true)?)
    })
    .await?;
    Ok(Json(found))
}

async fn replace(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<DefinitionRequest>,
    kind: AudienceKind,
) -> Result<(StatusCode, Json<AudienceRecord>), ApiError> {
    let journeys = state.journeys.clone();
    let record =
        blocking(move || Ok(journeys.audiences.put(kind, &name, request, by.actor())?)).await?;
    let status = if record.revision == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)))
}

async fn remove(
    State(state): State<AppState>,
    Extension(by): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    kind: AudienceKind,
) -> Result<StatusCode, ApiError> {
    let journeys = state.journeys.clone();
    blocking(move || Ok(journeys.audiences.delete(kind, &name, by.actor())?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What `GET /v1/segments/{name}/members` may be asked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberListing {
    /// The `next` of the page before.
    after: Option<String>,
    limit: Option<usize>,
}

/// Most members one page lists.
const MAX_LISTED: usize = 1000;

async fn members(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(listing): ApiQuery<MemberListing>,
) -> Result<Json<MemberPage>, ApiError> {
    let limit = listing.limit.unwrap_or(100).clamp(1, MAX_LISTED);
    let page = blocking(move || {
        if state
            .journeys
            .audiences
            .get(AudienceKind::Segment, &name)
            .is_none()
        {
            return Err(not_found(AudienceKind::Segment, &name));
        }
        Ok(state
            .store
            .segment_members(&name, listing.after.as_deref(), limit)?)
    })
    .await?;
    Ok(Json(page))
}

async fn sweeps(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let sweeps: Vec<SweepRecord> = blocking(move || Ok(state.store.sweeps()?)).await?;
    Ok(Json(serde_json::json!({ "sweeps": sweeps })))
}
