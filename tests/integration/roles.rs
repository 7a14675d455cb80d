//! Roles and tokens through the API: each role reaches exactly its routes, grants add what an
//! admin gave, a token is shown once and kept only as a hash, expiry and revocation take effect
//! on the next request, and an analyst reads contact data masked.

use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::server::{Server, TOKEN, WRITE_KEY};

const ROLES: [&str; 5] = ["admin", "manager", "operator", "analyst", "ingest"];

/// Who may call a route, written here from the product's rules rather than read from the
/// server's declarations, so a route with the wrong role fails as surely as one without.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Public,
    /// A Segment route: the write key, or the token of one of these roles.
    WriteKey(&'static [&'static str]),
    Roles(&'static [&'static str]),
}

const ALL: &[&str] = &ROLES;
const READERS: &[&str] = &["admin", "manager", "operator", "analyst"];
const EDITORS: &[&str] = &["admin", "manager", "operator"];
const MANAGERS: &[&str] = &["admin", "manager"];
const ADMIN: &[&str] = &["admin"];
const INGEST: &[&str] = &["admin", "ingest"];

fn expected() -> Vec<(Method, &'static str, Expect)> {
    use Expect::*;
    let segment = |path| (Method::POST, path, WriteKey(INGEST));
    vec![
        (Method::GET, "/healthz", Public),
        (Method::GET, "/openapi.json", Public),
        (Method::GET, "/v1/admin/backup", Roles(ADMIN)),
        (Method::GET, "/v1/whoami", Roles(ALL)),
        (Method::GET, "/v1/plugins", Roles(READERS)),
        // Contacts: everyone but ingest reads them; writing contact data is ingest's job or
        // an admin's grant; events are ingest.
        (Method::POST, "/v1/contacts", Roles(INGEST)),
        (Method::GET, "/v1/contacts/{id}", Roles(READERS)),
        (Method::GET, "/v1/contacts/{id}/messages", Roles(READERS)),
        (Method::GET, "/v1/contacts/{id}/events", Roles(READERS)),
        (Method::GET, "/v1/contacts", Roles(READERS)),
        (Method::DELETE, "/v1/contacts/{id}", Roles(ADMIN)),
        (Method::POST, "/v1/imports/contacts", Roles(INGEST)),
        (Method::GET, "/v1/exports/contacts", Roles(EDITORS)),
        (Method::POST, "/v1/events", Roles(INGEST)),
        // Journeys: reports for readers, editing and running for editors, deleting for admin.
        (Method::GET, "/v1/journeys", Roles(READERS)),
        (Method::POST, "/v1/journeys", Roles(EDITORS)),
        (Method::GET, "/v1/journeys/{id}", Roles(READERS)),
        (Method::PUT, "/v1/journeys/{id}", Roles(EDITORS)),
        (Method::POST, "/v1/journeys/{id}/publish", Roles(EDITORS)),
        (Method::POST, "/v1/journeys/{id}/plugins", Roles(EDITORS)),
        (
            Method::GET,
            "/v1/journeys/{id}/versions/{version}",
            Roles(READERS),
        ),
        (Method::POST, "/v1/journeys/{id}/pause", Roles(EDITORS)),
        (Method::POST, "/v1/journeys/{id}/resume", Roles(EDITORS)),
        (Method::POST, "/v1/journeys/{id}/archive", Roles(ADMIN)),
        (Method::POST, "/v1/journeys/{id}/simulate", Roles(EDITORS)),
        (Method::GET, "/v1/journeys/{id}/stats", Roles(READERS)),
        (Method::GET, "/v1/journeys/{id}/diff", Roles(READERS)),
        (
            Method::POST,
            "/v1/journeys/{id}/enrollments",
            Roles(EDITORS),
        ),
        (Method::GET, "/v1/enrollments/{id}", Roles(READERS)),
        (Method::POST, "/v1/enrollments/{id}/retry", Roles(EDITORS)),
        // Messaging: channels hold secrets, so binding one is admin's.
        (Method::GET, "/v1/channels", Roles(READERS)),
        (Method::GET, "/v1/channels/{name}", Roles(READERS)),
        (Method::PUT, "/v1/channels/{name}", Roles(ADMIN)),
        (Method::GET, "/v1/templates", Roles(READERS)),
        (Method::GET, "/v1/templates/{name}", Roles(READERS)),
        (Method::PUT, "/v1/templates/{name}", Roles(EDITORS)),
        (Method::POST, "/v1/templates/{name}/preview", Roles(EDITORS)),
        (
            Method::POST,
            "/v1/templates/{name}/test-send",
            Roles(EDITORS),
        ),
        (
            Method::POST,
            "/v1/templates/{name}/versions/{version}/approve",
            Roles(MANAGERS),
        ),
        (Method::GET, "/v1/messages/{id}", Roles(READERS)),
        // Scoring: models move every contact's score, so changing one is a manager's.
        (Method::GET, "/v1/scoring/models", Roles(READERS)),
        (Method::GET, "/v1/scoring/models/{name}", Roles(READERS)),
        (Method::PUT, "/v1/scoring/models/{name}", Roles(MANAGERS)),
        (Method::DELETE, "/v1/scoring/models/{name}", Roles(MANAGERS)),
        (
            Method::GET,
            "/v1/contacts/{id}/score-history",
            Roles(READERS),
        ),
        (Method::GET, "/v1/lifecycle", Roles(READERS)),
        (Method::PUT, "/v1/lifecycle", Roles(MANAGERS)),
        (Method::GET, "/v1/segments", Roles(READERS)),
        (Method::GET, "/v1/segments/{name}", Roles(READERS)),
        (Method::PUT, "/v1/segments/{name}", Roles(MANAGERS)),
        (Method::DELETE, "/v1/segments/{name}", Roles(MANAGERS)),
        (Method::GET, "/v1/segments/{name}/members", Roles(READERS)),
        (Method::GET, "/v1/tag-rules", Roles(READERS)),
        (Method::GET, "/v1/tag-rules/{name}", Roles(READERS)),
        (Method::PUT, "/v1/tag-rules/{name}", Roles(MANAGERS)),
        (Method::DELETE, "/v1/tag-rules/{name}", Roles(MANAGERS)),
        (Method::GET, "/v1/sweeps", Roles(READERS)),
        (Method::GET, "/v1/settings", Roles(ALL)),
        (Method::PUT, "/v1/settings", Roles(ADMIN)),
        // Operations.
        (Method::GET, "/v1/dead-letters", Roles(MANAGERS)),
        (
            Method::POST,
            "/v1/dead-letters/{id}/requeue",
            Roles(MANAGERS),
        ),
        (Method::DELETE, "/v1/dead-letters/{id}", Roles(MANAGERS)),
        (Method::GET, "/v1/audit", Roles(MANAGERS)),
        (Method::POST, "/v1/admin/tokens", Roles(ADMIN)),
        (Method::GET, "/v1/admin/tokens", Roles(ADMIN)),
        (Method::DELETE, "/v1/admin/tokens/{id}", Roles(ADMIN)),
        (Method::PUT, "/v1/admin/plugins/{name}", Roles(ADMIN)),
        (Method::GET, "/v1/admin/plugins", Roles(ADMIN)),
        (
            Method::DELETE,
            "/v1/admin/plugins/{name}/{version}",
            Roles(ADMIN),
        ),
        // Segment.
        segment("/v1/identify"),
        segment("/v1/track"),
        segment("/v1/page"),
        segment("/v1/screen"),
        segment("/v1/group"),
        segment("/v1/alias"),
        segment("/v1/batch"),
        // Links in messages and provider callbacks, which check their own signatures.
        (Method::GET, "/t/open/{token}", Public),
        (Method::GET, "/t/click/{token}", Public),
        (Method::GET, "/unsubscribe/{token}", Public),
        (Method::POST, "/unsubscribe/{token}", Public),
        (Method::POST, "/v1/webhooks/{channel}", Public),
    ]
}

/// A new token from the server's admin token; its secret and id.
pub(crate) async fn token(
    server: &Server,
    name: &str,
    role: &str,
    grants: &[&str],
) -> (String, String) {
    let (status, body) = server
        .post(
            "/v1/admin/tokens",
            json!({"name": name, "role": role, "grants": grants}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["token"].as_str().unwrap().to_owned(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

async fn whoami(server: &Server, token: &str) -> (u16, Json) {
    server.send_as(token, Method::GET, "/v1/whoami", None).await
}

pub(crate) fn code(body: &Json) -> Option<&str> {
    body["error"]["code"].as_str()
}

/// Every role against every route: allowed where the table says, `403 forbidden` elsewhere, and
/// a route the table does not name fails here.
#[tokio::test]
async fn every_role_reaches_exactly_its_routes() {
    let server = Server::start(false).await;
    let table = expected();
    let routes = wayline::api::routes();
    for route in &routes {
        assert!(
            table
                .iter()
                .any(|(m, p, _)| *m == route.method && *p == route.path),
            "{} {} is not in the role table: say who may call it",
            route.method,
            route.path
        );
    }
    assert_eq!(
        routes.len(),
        table.len(),
        "the table names a route that is gone"
    );

    let mut tokens = Vec::new();
    for role in ROLES {
        tokens.push((role, token(&server, role, role, &[]).await.0));
    }
    for (method, path, expect) in &table {
        let url = format!(
            "{}{}",
            server.base,
            path.replace("{version}", "1")
                .replace("{id}", "x")
                .replace("{name}", "x")
        );
        for (role, secret) in &tokens {
            let request = server.client.request(method.clone(), &url);
            let request = match expect {
                Expect::WriteKey(_) => request.basic_auth(secret, Some("")),
                _ => request.bearer_auth(secret),
            };
            let request = if *method == Method::GET || *method == Method::DELETE {
                request
            } else {
                request.json(&json!({}))
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Json = response.json().await.unwrap_or_default();
            let allowed = match expect {
                Expect::Public => true,
                Expect::WriteKey(roles) | Expect::Roles(roles) => roles.contains(role),
            };
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{role} may {method} {path}, got {status} {body}"
                );
            } else {
                assert_eq!(
                    (status, code(&body)),
                    (403, Some("forbidden")),
                    "{role} may not {method} {path}: {body}"
                );
                assert_eq!(body["error"]["details"]["role"], *role, "{body}");
            }
        }
    }
}

/// What an admin grants is added to the role, and nothing else is: an operator who may delete
/// journeys archives one, a manager who may edit contacts writes one.
#[tokio::test]
async fn a_grant_adds_exactly_its_permission() {
    let server = Server::start(false).await;
    let (operator, _) = token(&server, "ops lead", "operator", &["delete_journeys"]).await;
    let (manager, _) = token(&server, "crm owner", "manager", &["edit_contacts"]).await;
    let (plain, _) = token(&server, "marketer", "manager", &[]).await;

    let (status, body) = server
        .send_as(&operator, Method::POST, "/v1/journeys/x/archive", None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (404, Some("journey_not_found")),
        "{body}"
    );
    let (status, body) = server
        .send_as(&operator, Method::GET, "/v1/dead-letters", None)
        .await;
    assert_eq!((status, code(&body)), (403, Some("forbidden")), "{body}");

    let contact = json!({"id": "u-1", "attributes": {"plan": "pro"}});
    let (status, body) = server
        .send_as(&plain, Method::POST, "/v1/contacts", Some(contact.clone()))
        .await;
    assert_eq!((status, code(&body)), (403, Some("forbidden")), "{body}");
    assert_eq!(body["error"]["details"]["grant"], "edit_contacts", "{body}");
    let (status, body) = server
        .send_as(&manager, Method::POST, "/v1/contacts", Some(contact))
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    assert_eq!(
        server.get("/v1/contacts/u-1").await.1["attributes"]["plan"],
        "pro"
    );

    let (whoami_status, whoami) = server
        .send_as(&manager, Method::GET, "/v1/whoami", None)
        .await;
    assert_eq!(whoami_status, 200);
    assert_eq!(
        (&whoami["role"], &whoami["grants"]),
        (&json!("manager"), &json!(["edit_contacts"]))
    );
    assert!(
        whoami["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("write_contacts")),
        "{whoami}"
    );

    for (request, field) in [
        (json!({"name": "x", "role": "root"}), "role"),
        (
            json!({"name": "x", "role": "analyst", "grants": ["everything"]}),
            "grant",
        ),
        (json!({"name": "", "role": "analyst"}), "name"),
        (
            json!({"name": "x", "role": "analyst", "scopes": []}),
            "scopes",
        ),
    ] {
        let (status, body) = server.post("/v1/admin/tokens", request.clone()).await;
        assert!(status == 422 || status == 400, "{request}: {status} {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{request}: {body}"
        );
    }
}

/// A token is shown once: the list has its id and never its secret, and the store holds only
/// its hash. Expiry and revocation refuse it from the next request, with their own codes.
#[tokio::test]
async fn a_token_is_shown_once_kept_hashed_and_refused_once_expired_or_revoked() {
    let server = Server::start(false).await;
    let (status, created) = server
        .post(
            "/v1/admin/tokens",
            json!({"name": "dashboard", "role": "analyst", "expires_in_days": 30}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let expiring = created["token"].as_str().unwrap().to_owned();
    assert!(
        expiring.starts_with("wl_") && expiring.len() > 40,
        "{expiring}"
    );
    let (revoked, revoked_id) = token(&server, "old laptop", "operator", &[]).await;

    let (status, list) = server.get("/v1/admin/tokens").await;
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(
        !text.contains(&expiring) && !text.contains(&revoked),
        "{list}"
    );
    assert!(!text.contains("hash"), "{list}");
    let listed = list["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{list}");
    assert!(listed.iter().all(|t| t["status"] == "active"), "{list}");
    server.assert_stored_nowhere(&expiring);
    server.assert_stored_nowhere(&revoked);
    server.assert_stored_nowhere(TOKEN);

    // Revoked: refused from the very next request; revoking again changes nothing.
    assert_eq!(whoami(&server, &revoked).await.0, 200);
    let path = format!("/v1/admin/tokens/{revoked_id}");
    let (status, body) = server.send(Method::DELETE, &path, None).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("revoked")),
        "{body}"
    );
    let (status, body) = whoami(&server, &revoked).await;
    assert_eq!(
        (status, code(&body)),
        (401, Some("token_revoked")),
        "{body}"
    );
    assert_eq!(server.send(Method::DELETE, &path, None).await.0, 200);
    let (status, body) = server
        .send(Method::DELETE, "/v1/admin/tokens/tok_nope", None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (404, Some("token_not_found")),
        "{body}"
    );

    // Expired: works until its day, then refused.
    server.clock.advance(29 * 86_400_000);
    assert_eq!(whoami(&server, &expiring).await.0, 200);
    server.clock.advance(86_400_000);
    let (status, body) = whoami(&server, &expiring).await;
    assert_eq!(
        (status, code(&body)),
        (401, Some("token_expired")),
        "{body}"
    );
    let list = server.get("/v1/admin/tokens").await.1;
    let statuses: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "expired").count(),
        1,
        "{list}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "revoked").count(),
        1,
        "{list}"
    );

    // Each change is in the audit log, under the id of the token that made it.
    let me = server.get("/v1/whoami").await.1;
    let audit = server.get("/v1/audit").await.1;
    let entries = audit["audit"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"));
    let revocation = entries
        .iter()
        .find(|e| e["action"] == "token.revoke")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(
        (&revocation["actor"], &revocation["object"]),
        (&me["id"], &json!(revoked_id))
    );
    let created = |e: &&Json| e["action"] == "token.create" && e["actor"] == me["id"];
    assert_eq!(entries.iter().filter(created).count(), 2, "{audit}");
    assert!(!audit.to_string().contains(&expiring), "{audit}");
}

/// The server is never left without a working admin token, now or once the others expire.
#[tokio::test]
async fn the_last_admin_token_cannot_be_revoked() {
    let server = Server::start(false).await;
    let me = server.get("/v1/whoami").await.1;
    let own = format!("/v1/admin/tokens/{}", me["id"].as_str().unwrap());
    let (status, body) = server.send(Method::DELETE, &own, None).await;
    assert_eq!(
        (status, code(&body)),
        (409, Some("last_admin_token")),
        "{body}"
    );
    assert_eq!(server.get("/v1/whoami").await.0, 200);
    // An admin token that expires tomorrow does not stand in for one that never does.
    let (status, body) = server
        .post(
            "/v1/admin/tokens",
            json!({"name": "temp admin", "role": "admin", "expires_in_days": 1}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.send(Method::DELETE, &own, None).await;
    assert_eq!(
        (status, code(&body)),
        (409, Some("last_admin_token")),
        "{body}"
    );

    let (second, _) = token(&server, "second admin", "admin", &[]).await;
    assert_eq!(server.send(Method::DELETE, &own, None).await.0, 200);
    assert_eq!(server.get("/v1/whoami").await.0, 401);
    assert_eq!(
        server
            .send_as(&second, Method::GET, "/v1/whoami", None)
            .await
            .0,
        200
    );
}

/// An analyst sees the numbers, not the people: phone numbers and email addresses come masked
/// on every route it reads, while the same route shows them to a manager.
#[tokio::test]
async fn an_analyst_reads_contact_data_masked() {
    let server = Server::start(false).await;
    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "u-7", "attributes": {"email": "li.wei@example.com", "phone": "13812345678", "city": "Shenzhen"}}),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    let (analyst, _) = token(&server, "bi", "analyst", &[]).await;
    let (manager, _) = token(&server, "lead", "manager", &[]).await;

    let (status, seen) = server
        .send_as(&analyst, Method::GET, "/v1/contacts/u-7", None)
        .await;
    assert_eq!(status, 200, "{seen}");
    let attributes = &seen["attributes"];
    assert_eq!(attributes["email"], "l***@example.com", "{seen}");
    assert_eq!(attributes["phone"], "138****5678", "{seen}");
    assert_eq!(attributes["city"], "Shenzhen", "{seen}");
    assert!(!seen.to_string().contains("li.wei"), "{seen}");

    let (_, full) = server
        .send_as(&manager, Method::GET, "/v1/contacts/u-7", None)
        .await;
    assert_eq!(full["attributes"]["email"], "li.wei@example.com");
    assert_eq!(full["attributes"]["phone"], "13812345678");
    let (_, me) = server
        .send_as(&analyst, Method::GET, "/v1/whoami", None)
        .await;
    assert_eq!(me["masked"], true, "{me}");
}

/// A Segment SDK configured with an ingest token as its write key sends events; a token of
/// another role is refused there, and the write key still works.
#[tokio::test]
async fn segment_takes_an_ingest_token_as_its_write_key() {
    let server = Server::start(false).await;
    let (ingest, _) = token(&server, "website", "ingest", &[]).await;
    let (analyst, _) = token(&server, "bi", "analyst", &[]).await;
    let track = |id: &str| json!({"userId": "u-9", "event": "Signed Up", "messageId": id});

    let (status, body) = server.segment("/v1/track", &ingest, track("m-1")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.segment("/v1/track", &analyst, track("m-2")).await;
    assert_eq!((status, code(&body)), (403, Some("forbidden")), "{body}");
    let (status, body) = server.segment("/v1/track", WRITE_KEY, track("m-3")).await;
    assert_eq!(status, 200, "{body}");
    assert!(server.get("/v1/contacts/u-9").await.0 == 200);

    // The ingest token reaches nothing else.
    let (status, body) = server
        .send_as(&ingest, Method::GET, "/v1/contacts/u-9", None)
        .await;
    assert_eq!((status, code(&body)), (403, Some("forbidden")), "{body}");
}
