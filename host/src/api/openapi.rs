//! `GET /openapi.json`: the API described as OpenAPI 3.1, made from the route table itself
//! ([`super::routes`]): every route, the permission it needs and the roles that have it, what
//! it reads, and the statuses it answers, each error in the one error shape. What the route
//! table cannot say (a summary, the success status, errors of its own) is in [`DOCS`], and
//! a route without an entry there fails this module's test, as a route without a role fails
//! the role matrix.

use axum::Json;
use axum::http::Method;
use serde_json::{Value as Json_, json};

use super::{Access, Route, routes};
use crate::auth::{Permission, Role};

/// What a route's entry in the document says beyond the route table.
pub struct Doc {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    /// The statuses it answers when it did what was asked.
    pub success: &'static [u16],
    /// Errors of its own (a conflict, a refusal) by status and code, beside those every route
    /// of its kind has.
    pub errors: &'static [(u16, &'static str)],
}

const fn doc(
    method: Method,
    path: &'static str,
    summary: &'static str,
    success: &'static [u16],
    errors: &'static [(u16, &'static str)],
) -> Doc {
    Doc {
        method,
        path,
        summary,
        success,
        errors,
    }
}

/// A summary, the success statuses and the route's own errors, for every route.
#[rustfmt::skip]
pub const DOCS: &[Doc] = &[
    doc(Method::GET, "/healthz", "Whether the store takes writes and every worker runs", &[200], &[(503, "unhealthy")]),
    doc(Method::GET, "/openapi.json", "This document", &[200], &[]),
    doc(Method::GET, "/v1/plugins", "Installed plugins with their calls, errors and latency", &[200], &[]),
    doc(Method::GET, "/v1/admin/backup", "The whole store as a backup file, consistent at one moment", &[200], &[(409, "backup_running")]),
    doc(Method::POST, "/v1/contacts", "Create or update a contact (same email or phone, same contact)", &[200, 201], &[(409, "contact_identity_conflict"), (422, "invalid_contact"), (422, "too_large")]),
    doc(Method::GET, "/v1/contacts", "Find contacts by email, phone, tag or attribute", &[200], &[(403, "forbidden")]),
    doc(Method::GET, "/v1/contacts/{id}", "A contact with its journeys", &[200], &[(404, "contact_not_found")]),
    doc(Method::DELETE, "/v1/contacts/{id}", "Erase a contact (right to erasure)", &[200, 202], &[(404, "contact_not_found")]),
    doc(Method::GET, "/v1/contacts/{id}/messages", "A contact's messages and their delivery", &[200], &[(404, "contact_not_found")]),
    doc(Method::GET, "/v1/contacts/{id}/events", "A contact's processed events, newest first", &[200], &[(404, "contact_not_found")]),
    doc(Method::POST, "/v1/events", "Send events in (one or a list)", &[200, 202], &[(422, "invalid_event"), (422, "invalid_batch"), (409, "conflict")]),
    doc(Method::GET, "/v1/journeys", "Journeys with their status and counts", &[200], &[]),
    doc(Method::POST, "/v1/journeys", "Create a journey's draft", &[200, 201], &[(409, "journey_exists"), (422, "invalid_journey")]),
    doc(Method::GET, "/v1/journeys/{id}", "A journey: draft, versions, plugin versions", &[200], &[JOURNEY]),
    doc(Method::PUT, "/v1/journeys/{id}", "Create or replace a journey's draft", &[200, 201], &[(409, "journey_archived"), (422, "invalid_journey")]),
    doc(Method::POST, "/v1/journeys/{id}/publish", "Check and publish the draft as the next version", &[200, 201], &[JOURNEY, (409, "journey_archived"), (422, "invalid_journey"), (422, "content_not_approved")]),
    doc(Method::POST, "/v1/journeys/{id}/plugins", "Move the journey onto another version of one of its plugins", &[200], &[JOURNEY, (422, "plugin_not_loaded"), (422, "plugin_not_used"), (422, "plugin_refused_config")]),
    doc(Method::GET, "/v1/journeys/{id}/versions/{version}", "One published version", &[200], &[JOURNEY, (404, "journey_version_not_found")]),
    doc(Method::POST, "/v1/journeys/{id}/pause", "Stop enrolling", &[200], &[JOURNEY, (409, "journey_not_active"), (409, "journey_archived")]),
    doc(Method::POST, "/v1/journeys/{id}/resume", "Enroll again", &[200], &[JOURNEY, (409, "journey_not_active"), (409, "journey_archived")]),
    doc(Method::POST, "/v1/journeys/{id}/archive", "Retire the journey", &[200], &[JOURNEY, (409, "journey_archived")]),
    doc(Method::POST, "/v1/journeys/{id}/simulate", "Run the journey for a test contact and a script", &[200], &[JOURNEY, (422, "invalid_simulation"), (422, "invalid_journey")]),
    doc(Method::GET, "/v1/journeys/{id}/diff", "What changed between two published versions", &[200], &[JOURNEY, (404, "journey_version_not_found")]),
    doc(Method::GET, "/v1/journeys/{id}/stats", "Per-node counts", &[200], &[JOURNEY, (404, "journey_version_not_found")]),
    doc(Method::POST, "/v1/journeys/{id}/enrollments", "Enroll a contact now", &[200, 201, 202], &[JOURNEY, (404, "contact_not_found"), (409, "journey_not_active"), (409, "journey_archived")]),
    doc(Method::GET, "/v1/enrollments/{id}", "One contact's path through one journey", &[200], &[(404, "enrollment_not_found")]),
    doc(Method::POST, "/v1/enrollments/{id}/retry", "Run a parked enrollment's node again", &[200, 202], &[(404, "enrollment_not_found"), (409, "enrollment_not_parked")]),
    doc(Method::GET, "/v1/channels", "Bound channels", &[200], &[]),
    doc(Method::GET, "/v1/channels/{name}", "One channel's binding (secrets never shown)", &[200], &[(404, "channel_not_found")]),
    doc(Method::PUT, "/v1/channels/{name}", "Bind a channel: plugin, config, approved hosts, secrets, rate", &[200, 201], &[(422, "invalid_channel"), (409, "conflict")]),
    doc(Method::GET, "/v1/templates", "Templates and their versions", &[200], &[]),
    doc(Method::GET, "/v1/templates/{name}", "One template's versions", &[200], &[(404, "template_not_found")]),
    doc(Method::PUT, "/v1/templates/{name}", "Store a new version of a template", &[200, 201], &[(422, "invalid_template"), (409, "conflict")]),
    doc(Method::POST, "/v1/templates/{name}/preview", "Render a template for a contact", &[200], &[(404, "template_not_found"), (404, "contact_not_found"), (422, "render_failed")]),
    doc(Method::POST, "/v1/templates/{name}/test-send", "Send a rendered template to a test address", &[200, 202], &[(404, "template_not_found"), (404, "channel_not_found"), (422, "render_failed"), (409, "conflict")]),
    doc(Method::POST, "/v1/templates/{name}/versions/{version}/approve", "Approve a template version for sending", &[200], &[(404, "template_not_found"), (422, "approval_by_author"), (409, "conflict")]),
    doc(Method::GET, "/v1/messages/{id}", "One message and its delivery history", &[200], &[(404, "message_not_found")]),
    doc(Method::GET, "/v1/dead-letters", "Records set aside so the rest could run", &[200], &[]),
    doc(Method::POST, "/v1/dead-letters/{id}/requeue", "Put a dead letter back where it came from", &[200], &[(404, "dead_letter_not_found"), (409, "dead_letter_not_requeued"), (422, "invalid_contact")]),
    doc(Method::DELETE, "/v1/dead-letters/{id}", "Remove a dead letter", &[200], &[(404, "dead_letter_not_found"), (409, "conflict")]),
    doc(Method::GET, "/v1/audit", "The audit log, newest first", &[200], &[]),
    doc(Method::PUT, "/v1/admin/plugins/{name}", "Upload a plugin version", &[200, 201], &[(413, "plugin_too_large"), (422, "plugin_not_wasm"), (422, "plugin_invalid_wasm"), (422, "plugin_wrong_world"), (422, "plugin_describe_failed"), (422, "plugin_name_mismatch"), (422, "plugin_limits_invalid"), (409, "plugin_version_conflict")]),
    doc(Method::DELETE, "/v1/admin/plugins/{name}/{version}", "Delete an uploaded plugin version no journey or channel uses", &[200], &[(404, "plugin_not_found"), (409, "plugin_in_use"), (409, "plugin_not_uploaded")]),
    doc(Method::GET, "/v1/admin/plugins", "Uploaded plugin versions", &[200], &[]),
    doc(Method::POST, "/v1/admin/tokens", "Create a token (shown once)", &[201], &[(422, "invalid_token")]),
    doc(Method::GET, "/v1/admin/tokens", "Tokens, without their secrets", &[200], &[]),
    doc(Method::DELETE, "/v1/admin/tokens/{id}", "Revoke a token", &[200], &[(404, "token_not_found"), (409, "last_admin_token")]),
    doc(Method::GET, "/v1/whoami", "The calling token's name, role and grants", &[200], &[]),
    doc(Method::GET, "/v1/scoring/models", "Scoring models, with what each did since start", &[200], &[]),
    doc(Method::GET, "/v1/scoring/models/{name}", "One scoring model", &[200], &[(404, "scoring_model_not_found")]),
    doc(Method::PUT, "/v1/scoring/models/{name}", "Create or replace a scoring model: scorer plugin, config, events, half-life, thresholds", &[200, 201], &[(422, "invalid_scoring_model")]),
    doc(Method::DELETE, "/v1/scoring/models/{name}", "Remove a scoring model (scores and history stay)", &[204], &[(404, "scoring_model_not_found")]),
    doc(Method::GET, "/v1/contacts/{id}/score-history", "A contact's score changes with their reasons, newest first", &[200], &[(400, "invalid_query"), (404, "contact_not_found")]),
    doc(Method::GET, "/v1/lifecycle", "The lifecycle stage rules", &[200], &[]),
    doc(Method::GET, "/v1/segments", "Segments with their sizes", &[200], &[]),
    doc(Method::GET, "/v1/segments/{name}", "A segment: its condition, size and a sample of members", &[200], &[(404, "segment_not_found")]),
    doc(Method::PUT, "/v1/segments/{name}", "Create or replace a segment (everyone is looked at again)", &[200, 201], &[(422, "invalid_definition")]),
    doc(Method::DELETE, "/v1/segments/{name}", "Delete a segment and its member list", &[204], &[(404, "segment_not_found")]),
    doc(Method::GET, "/v1/segments/{name}/members", "A segment's members in id order, a page at a time", &[200], &[(404, "segment_not_found")]),
    doc(Method::GET, "/v1/tag-rules", "Tag rules", &[200], &[]),
    doc(Method::GET, "/v1/tag-rules/{name}", "A tag rule", &[200], &[(404, "tag_rule_not_found")]),
    doc(Method::PUT, "/v1/tag-rules/{name}", "Create or replace the rule of a tag (everyone is looked at again)", &[200, 201], &[(422, "invalid_definition")]),
    doc(Method::DELETE, "/v1/tag-rules/{name}", "Delete a tag rule (tags it added stay)", &[204], &[(404, "tag_rule_not_found")]),
    doc(Method::GET, "/v1/sweeps", "Sweeps (a definition's first look at everyone, a journey's backfill) and how far each got", &[200], &[]),
    doc(Method::PUT, "/v1/lifecycle", "Replace the lifecycle stage rules", &[200], &[(422, "invalid_lifecycle")]),
    doc(Method::GET, "/v1/settings", "Workspace settings", &[200], &[]),
    doc(Method::PUT, "/v1/settings", "Replace the workspace settings", &[200], &[(422, "invalid_settings")]),
    doc(Method::POST, "/v1/imports/contacts", "Import a CSV or NDJSON file of contacts", &[200], &[(413, "import_too_large"), (422, "import_malformed")]),
    doc(Method::GET, "/v1/exports/contacts", "Every contact, streamed as NDJSON or CSV", &[200], &[]),
    doc(Method::POST, "/v1/webhooks/{channel}", "A provider's delivery report (signature checked)", &[200, 204], &[(401, "webhook_unauthenticated"), (404, "channel_not_found"), (422, "webhook_malformed")]),
    doc(Method::GET, "/t/open/{token}", "Open pixel", &[200], &[(404, "invalid_link")]),
    doc(Method::GET, "/t/click/{token}", "Tracked link: redirect to its target", &[302, 303, 307], &[(404, "invalid_link")]),
    doc(Method::GET, "/unsubscribe/{token}", "Unsubscribe confirmation page", &[200], &[(404, "invalid_link")]),
    doc(Method::POST, "/unsubscribe/{token}", "One-click unsubscribe (RFC 8058)", &[200], &[(404, "invalid_link")]),
    doc(Method::POST, "/v1/batch", "Segment: a batch of calls", &[200], &[(400, "invalid_batch"), (400, "invalid_message")]),
    doc(Method::POST, "/v1/identify", "Segment: identify", &[200], &[(400, "invalid_message")]),
    doc(Method::POST, "/v1/track", "Segment: track", &[200], &[(400, "invalid_message")]),
    doc(Method::POST, "/v1/page", "Segment: page", &[200], &[(400, "invalid_message")]),
    doc(Method::POST, "/v1/screen", "Segment: screen", &[200], &[(400, "invalid_message")]),
    doc(Method::POST, "/v1/group", "Segment: group", &[200], &[(400, "invalid_message")]),
    doc(Method::POST, "/v1/alias", "Segment: alias", &[200], &[(400, "invalid_message")]),
];

/// A journey named in the path that does not exist.
const JOURNEY: (u16, &str) = (404, "journey_not_found");

fn doc_for(route: &Route) -> Option<&'static Doc> {
    DOCS.iter()
        .find(|doc| doc.method == route.method && doc.path == route.path)
}

/// Why a status is answered, and the codes any route of its kind answers it with.
fn reason(status: u16) -> (&'static str, &'static [&'static str]) {
    match status {
        400 => (
            "A path parameter, query or body the route cannot read",
            &[
                "malformed_json",
                "invalid_path",
                "invalid_query",
                "unexpected_body",
                "bad_request",
            ],
        ),
        401 => (
            "No token, or one that is unknown, expired or revoked",
            &["unauthorized", "token_expired", "token_revoked"],
        ),
        403 => (
            "The token's role and grants do not give this permission; `details` names the roles and grant that do",
            &["forbidden"],
        ),
        404 => ("What the path names does not exist", &["route_not_found"]),
        405 => (
            "The path does not take this method",
            &["method_not_allowed"],
        ),
        409 => ("It conflicts with what is stored", &[]),
        413 => (
            "The body is larger than the route takes",
            &["payload_too_large"],
        ),
        415 => (
            "The body's media type is not one the route reads",
            &["unsupported_media_type"],
        ),
        422 => (
            "The request is well-formed but refused; `error.details` says why where there is more to say",
            &["invalid_request"],
        ),
        429 => (
            "Too many requests from this token; see `Retry-After`",
            &["rate_limited"],
        ),
        503 => (
            "The server is overloaded or the request timed out",
            &["overloaded", "timeout"],
        ),
        _ => ("", &[]),
    }
}

fn permission_roles(permission: Permission) -> String {
    let roles: Vec<&str> = Role::ALL
        .into_iter()
        .filter(|role| permission.roles().contains(role))
        .map(Role::as_str)
        .collect();
    let mut text = format!(
        "Needs `{}`: roles {}",
        permission.as_str(),
        roles.join(", ")
    );
    if let Some(grant) = permission.grant() {
        text.push_str(&format!(", or the `{}` grant", grant.as_str()));
    }
    text
}

fn operation(route: &Route, doc: &Doc) -> Json_ {
    let mut statuses: Vec<u16> = doc.success.to_vec();
    statuses.extend([400, 404, 503]);
    if route.body {
        statuses.extend([413, 415, 422]);
    }
    match route.access {
        Access::Public => {}
        Access::Needs(_) | Access::WriteKey => statuses.extend([401, 403, 429]),
    }
    statuses.extend(doc.errors.iter().map(|(status, _)| *status));
    statuses.sort_unstable();
    statuses.dedup();
    let mut responses = serde_json::Map::new();
    for status in statuses {
        let response = if doc.success.contains(&status) {
            json!({"description": "Done", "content": {"*/*": {"schema": {}}}})
        } else {
            let (why, mut common) = reason(status);
            // A route without a time limit is never answered `timeout`.
            if status == 503 && route.unhurried {
                common = &["overloaded"];
            }
            let codes: Vec<&str> = common
                .iter()
                .copied()
                .chain(
                    doc.errors
                        .iter()
                        .filter(|(s, _)| *s == status)
                        .map(|(_, code)| *code),
                )
                .collect();
            let listed: Vec<String> = codes.iter().map(|code| format!("`{code}`")).collect();
            json!({
                "description": format!("{why}. Codes: {}", listed.join(", ")),
                "content": {"application/json": {"schema": {"allOf": [
                    {"$ref": "#/components/schemas/Error"},
                    {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
                ]}}},
            })
        };
        responses.insert(status.to_string(), response);
    }
    let parameters: Vec<Json_> = route
        .path
        .split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let (security, who) = match route.access {
        Access::Public => (json!([]), "Public".to_owned()),
        Access::Needs(permission) => (json!([{"bearer": []}]), permission_roles(permission)),
        Access::WriteKey => (
            json!([{"writeKey": []}, {"bearer": []}]),
            "The Segment write key, or a token that may ingest".to_owned(),
        ),
    };
    let mut operation = json!({
        "summary": doc.summary,
        "description": who,
        "operationId": operation_id(route),
        "parameters": parameters,
        "security": security,
        "responses": responses,
        "x-wayline-access": match route.access {
            Access::Public => "public".to_owned(),
            Access::Needs(permission) => permission.as_str().to_owned(),
            Access::WriteKey => "write_key".to_owned(),
        },
    });
    if route.body {
        operation["requestBody"] = json!({
            "required": true,
            "content": request_media(route.path),
        });
    }
    operation
}

/// What a route's body may be: JSON, except for the routes that take files.
fn request_media(path: &str) -> Json_ {
    match path {
        "/v1/admin/plugins/{name}" => json!({
            "application/wasm": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }),
        "/v1/imports/contacts" => json!({
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        }),
        _ => json!({"application/json": {"schema": request_schema(path)}}),
    }
}

/// The JSON body a route reads, where it is a fixed shape; a journey, a channel binding or a
/// template is described in the README and checked whole by the route, so any JSON here.
fn request_schema(path: &str) -> Json_ {
    let text = json!({"type": "string", "minLength": 1, "maxLength": 128});
    let attributes = json!({"type": "object", "additionalProperties": true});
    let event = json!({
        "type": "object",
        "required": ["id", "contact_id", "name", "timestamp"],
        "additionalProperties": false,
        "properties": {
            "id": text, "contact_id": text, "name": text,
            "properties": attributes,
            "timestamp": {"type": "string", "format": "date-time"},
        },
    });
    match path {
        "/v1/contacts" => json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "id": text,
                "attributes": attributes,
                "tags": {"type": "array", "items": text},
                "consents": {"type": "object", "additionalProperties": {"enum": ["granted", "revoked", "unknown"]}},
                "timezone": text,
                "lifecycle_stage": text,
            },
        }),
        "/v1/events" => {
            json!({"oneOf": [event, {"type": "array", "items": event, "maxItems": 1000}]})
        }
        "/v1/admin/tokens" => json!({
            "type": "object",
            "required": ["name", "role"],
            "additionalProperties": false,
            "properties": {
                "name": text,
                "role": {"enum": ["admin", "manager", "operator", "analyst", "ingest"]},
                "grants": {"type": "array", "items": {"enum": ["delete_journeys", "edit_contacts", "delete_contacts"]}},
                "expires_at": {"type": "string", "format": "date-time"},
                "expires_in_days": {"type": "integer", "minimum": 1},
            },
        }),
        "/v1/scoring/models/{name}" => json!({
            "type": "object",
            "required": ["plugin", "events"],
            "additionalProperties": false,
            "properties": {
                "description": {"type": "string"},
                "plugin": {"type": "string", "description": "`name@version` of a scorer plugin"},
                "config": {"type": "object"},
                "events": {"type": "array", "items": text},
                "half_life": {"type": "string", "description": "e.g. `30d`"},
                "thresholds": {"type": "array", "items": {"type": "number"}},
            },
        }),
        "/v1/lifecycle" => json!({
            "type": "object",
            "required": ["stages"],
            "additionalProperties": false,
            "properties": {"stages": {"type": "array", "items": {
                "type": "object",
                "required": ["stage"],
                "additionalProperties": false,
                "properties": {
                    "stage": text,
                    "inactive_for": {"type": "string", "description": "e.g. `90d`"},
                    "registered_within": {"type": "string", "description": "e.g. `30d`"},
                    "otherwise": {"type": "boolean", "description": "the last rule only: holds always"},
                    "count": {"type": "object", "required": ["event", "at_least"], "additionalProperties": false,
                              "properties": {"event": text, "at_least": {"type": "integer", "minimum": 1}}},
                },
            }}},
        }),
        "/v1/segments/{name}" | "/v1/tag-rules/{name}" => json!({
            "type": "object",
            "required": ["condition"],
            "additionalProperties": false,
            "properties": {
                "description": {"type": "string"},
                "condition": {"type": "object", "description": "all/any/not of attribute, tag, stage, consent, score, event (in a window) and created_within clauses: see the README"},
            },
        }),
        "/v1/settings" => json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "content_approval": {"type": "boolean"},
                "control_group_percent": {"type": "number", "minimum": 0, "maximum": 50},
            },
        }),
        "/v1/journeys/{id}/plugins" => json!({
            "type": "object",
            "required": ["plugin"],
            "additionalProperties": false,
            "properties": {"plugin": {"type": "string", "description": "`name@version`"}},
        }),
        "/v1/journeys/{id}/enrollments" => json!({
            "type": "object",
            "required": ["contact_id"],
            "additionalProperties": false,
            "properties": {"contact_id": text, "request_id": text},
        }),
        _ => json!({}),
    }
}

fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for part in route.path.split('/').filter(|p| !p.is_empty()) {
        let part = part.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.extend(
            part.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

/// The whole document.
pub fn document() -> Json_ {
    let mut paths = serde_json::Map::new();
    for route in routes() {
        let Some(doc) = doc_for(&route) else {
            continue;
        };
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation(&route, doc);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Wayline",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Marketing automation whose every journey step is a sandboxed Wasm plugin. Every error has one shape, `{\"error\": {\"code\", \"message\", \"details\"?}}`, with a stable `code`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token: `Authorization: Bearer wl_…`"},
                "writeKey": {"type": "http", "scheme": "basic", "description": "The Segment write key as the user name"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": false,
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "additionalProperties": false,
                            "properties": {
                                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "description": "Stable: what a client matches on"},
                                "message": {"type": "string", "description": "For people; may change"},
                                "details": {"description": "More to act on, e.g. every problem in a journey"},
                            },
                        },
                    },
                },
            },
        },
    })
}

pub(super) fn route() -> Route {
    Route::new(
        Method::GET,
        "/openapi.json",
        Access::Public,
        false,
        axum::routing::get(|| async { Json(document()) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_entry_is_a_route() {
        let routes = routes();
        let missing: Vec<String> = routes
            .iter()
            .filter(|route| doc_for(route).is_none())
            .map(|route| format!("{} {}", route.method, route.path))
            .collect();
        assert!(
            missing.is_empty(),
            "routes without a DOCS entry: {missing:?}"
        );
        let stale: Vec<String> = DOCS
            .iter()
            .filter(|doc| {
                !routes
                    .iter()
                    .any(|route| route.method == doc.method && route.path == doc.path)
            })
            .map(|doc| format!("{} {}", doc.method, doc.path))
            .collect();
        assert!(stale.is_empty(), "DOCS entries without a route: {stale:?}");
    }

    #[test]
    fn the_document_names_each_routes_permission_and_its_roles() {
        let document = document();
        let export = &document["paths"]["/v1/exports/contacts"]["get"];
        assert_eq!(export["x-wayline-access"], "export_contacts");
        let description = export["description"].as_str().unwrap();
        assert!(
            description.contains("admin, manager, operator"),
            "{description}"
        );
        assert!(!description.contains("analyst"), "{description}");
        let erase = &document["paths"]["/v1/contacts/{id}"]["delete"];
        assert!(
            erase["description"]
                .as_str()
                .unwrap()
                .contains("`delete_contacts` grant"),
            "{erase}"
        );
        assert_eq!(erase["parameters"][0]["name"], "id");
        assert!(erase["responses"]["403"].is_object());
        let revoke = &document["paths"]["/v1/admin/tokens/{id}"]["delete"]["responses"]["409"];
        let codes = &revoke["content"]["application/json"]["schema"]["allOf"][1]["properties"]["error"]
            ["properties"]["code"]["enum"];
        assert_eq!(codes, &json!(["last_admin_token"]), "{revoke}");
        let health = &document["paths"]["/healthz"]["get"];
        assert_eq!(health["security"], json!([]));
        assert!(health["responses"]["401"].is_null());
    }
}
