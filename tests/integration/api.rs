//! The HTTP API as a client sees it: a real server on 127.0.0.1, real sled on a temp dir.

use serde_json::{Value as Json, json};

use crate::server::{Server, TOKEN, WRITE_KEY};

async fn server() -> Server {
    Server::start(false).await
}

/// Every route the router has, with its access as declared: without credentials, with the
/// wrong ones, or with the other kind, each is refused; a route added without access declared
/// could not be in the list, and one declared wrongly fails here.
#[tokio::test]
async fn every_route_refuses_a_caller_without_its_credentials_and_health_needs_none() {
    use wayline::api::Access;
    let server = server().await;
    let routes = wayline::api::routes();
    assert!(routes.len() > 20, "{} routes", routes.len());
    for route in routes {
        let path = route.path.replace("{version}", "1").replace("{id}", "x");
        let url = format!("{}{path}", server.base);
        let request = || server.client.request(route.method.clone(), &url);
        let refused = [
            request(),
            request().bearer_auth("wrong-token-0123456789"),
            request().basic_auth("wrong-write-key", Some("")),
            // The other kind of credential than the route takes: a write key is no token.
            match route.access {
                Access::Needs(_) => request().basic_auth(WRITE_KEY, Some("")),
                _ => request().bearer_auth(
                    "wl_0000000000000000000000000000000000000000000000000000000000000000",
                ),
            },
        ];
        for (n, attempt) in refused.into_iter().enumerate() {
            let response = attempt.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Json = response.json().await.unwrap_or_default();
            match route.access {
                Access::Public => assert_ne!(status, 401, "{} {path}", route.method),
                _ => assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (401, Some("unauthorized")),
                    "{} {path}, attempt {n}: {body}",
                    route.method
                ),
            }
        }
    }
    let (status, health) = server.get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")));
}

/// The same mistake gets the same status, code and shape on every route: an unknown route, a
/// wrong method, a path that does not parse, a body that is not JSON, a body where none is
/// taken, a list where an object is.
#[tokio::test]
async fn every_mistake_is_answered_in_one_shape_with_a_stable_code() {
    let server = server().await;
    let raw = |method: reqwest::Method, path: &str, body: Option<&'static [u8]>| {
        let mut request = server
            .client
            .request(method, format!("{}{path}", server.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let allow = response
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            let text = response.text().await.unwrap();
            let body: Json = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("not JSON: {status} {text:?}"));
            (status, body, allow)
        }
    };
    use reqwest::Method;
    /// A request, and the status and code it gets.
    type Case = (
        Method,
        &'static str,
        Option<&'static [u8]>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/v1/nothing-here",
            None,
            404,
            "route_not_found",
        ),
        (Method::GET, "/nothing", None, 404, "route_not_found"),
        (
            Method::DELETE,
            "/v1/contacts",
            None,
            405,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/journeys/welcome/versions/abc",
            None,
            400,
            "invalid_path",
        ),
        (
            Method::GET,
            "/v1/journeys/welcome/versions/99999999999",
            None,
            400,
            "invalid_path",
        ),
        (
            Method::GET,
            "/v1/contacts/%FF%FE",
            None,
            400,
            "invalid_path",
        ),
        (
            Method::GET,
            "/v1/journeys/welcome/stats?version=x",
            None,
            400,
            "invalid_query",
        ),
        (
            Method::POST,
            "/v1/journeys/welcome/publish",
            Some(b"{}"),
            400,
            "unexpected_body",
        ),
        (
            Method::POST,
            "/v1/contacts",
            Some(b"[]"),
            422,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/contacts",
            Some(b"\"id\""),
            422,
            "invalid_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, response, _) = raw(method.clone(), path, body).await;
        assert_eq!(
            (got, response["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {response}"
        );
        assert!(!response["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, _, allow) = raw(Method::DELETE, "/v1/events", None).await;
    assert_eq!(
        allow.as_deref(),
        Some("POST"),
        "a wrong method says which are right"
    );
    // Malformed JSON is 400 `malformed_json` wherever a body is read.
    for (method, path) in [
        (Method::POST, "/v1/contacts"),
        (Method::POST, "/v1/events"),
        (Method::POST, "/v1/journeys"),
        (Method::PUT, "/v1/journeys/welcome"),
        (Method::POST, "/v1/journeys/welcome/simulate"),
        (Method::POST, "/v1/journeys/welcome/enrollments"),
    ] {
        for broken in [&b"{\"id\": "[..], b"{\"a\": 1} trailing", b"nope"] {
            let (status, response, _) = raw(method.clone(), path, Some(broken)).await;
            assert_eq!(
                (status, response["error"]["code"].as_str()),
                (400, Some("malformed_json")),
                "{method} {path} {}: {response}",
                String::from_utf8_lossy(broken)
            );
        }
    }
}

/// Fields the store would have kept though no journey can use them are refused, naming them:
/// an attribute without a name, a time zone that is not one, an event from the year 5000 or
/// before 1970.
#[tokio::test]
async fn contact_and_event_fields_no_journey_can_use_are_refused_by_name() {
    let server = server().await;
    let event = |timestamp: &str| json!({"id": "e", "contact_id": "a", "name": "n", "timestamp": timestamp});
    let cases = [
        (
            "/v1/contacts",
            json!({"id": "a", "attributes": {"": 1}}),
            "invalid_contact",
            "attribute name",
        ),
        (
            "/v1/contacts",
            json!({"id": "a", "timezone": "Mars/Olympus"}),
            "invalid_contact",
            "Mars/Olympus",
        ),
        (
            "/v1/events",
            event("5000-01-01T00:00:00Z"),
            "invalid_event",
            "more than a day ahead",
        ),
        (
            "/v1/events",
            event("1969-12-31T23:59:59Z"),
            "invalid_event",
            "before 1970",
        ),
        (
            "/v1/events",
            json!({"id": "e", "contact_id": "a", "name": "n", "timestamp": 1, "properties": {"": 1}}),
            "invalid_event",
            "property",
        ),
        (
            "/v1/events",
            json!({"id": "e", "contact_id": "a", "name": "n", "timestamp": 1, "depth": 5}),
            "invalid_request",
            "depth",
        ),
    ];
    for (path, body, code, names) in cases {
        let (status, response) = server.post(path, body.clone()).await;
        assert_eq!(
            (status, response["error"]["code"].as_str()),
            (422, Some(code)),
            "{body}: {response}"
        );
        let message = response["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{body}: {message}");
    }
    let (status, _) = server.get("/v1/contacts/a").await;
    assert_eq!(status, 404, "nothing was stored");
}

#[tokio::test]
async fn a_second_registration_with_the_same_email_updates_the_same_contact() {
    let server = server().await;
    let (status, first) = server
        .post(
            "/v1/contacts",
            json!({"attributes": {"email": "Li.Wei@example.com", "source": "landing-page"}}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = server.post("/v1/contacts", json!({"attributes": {"email": "li.wei@example.com", "company_size": 600}, "tags": ["webinar"]})).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["id"], first["id"]);
    let (status, read) = server
        .get(&format!("/v1/contacts/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(read["attributes"]["source"], "landing-page");
    assert_eq!(read["attributes"]["company_size"], 600);
    assert_eq!(read["tags"], json!(["webinar"]));
}

#[tokio::test]
async fn bad_input_gets_a_stable_error_code_and_changes_nothing() {
    let server = server().await;
    server
        .post(
            "/v1/contacts",
            json!({"id": "a", "attributes": {"email": "a@example.com"}}),
        )
        .await;
    server
        .post(
            "/v1/contacts",
            json!({"id": "b", "attributes": {"email": "b@example.com"}}),
        )
        .await;
    let cases = [
        (
            server
                .raw("/v1/contacts", "application/json", b"{\"id\": ".to_vec())
                .await,
            400,
            "malformed_json",
        ),
        (
            server
                .raw("/v1/contacts", "text/plain", b"{}".to_vec())
                .await,
            415,
            "unsupported_media_type",
        ),
        (
            server
                .post("/v1/contacts", json!({"id": "c", "atributes": {}}))
                .await,
            422,
            "invalid_request",
        ),
        (
            server
                .post(
                    "/v1/contacts",
                    json!({"id": "c", "attributes": {"nested": {"x": 1}}}),
                )
                .await,
            422,
            "invalid_request",
        ),
        (
            server
                .post(
                    "/v1/contacts",
                    json!({"id": "b", "attributes": {"email": "a@example.com"}}),
                )
                .await,
            409,
            "contact_identity_conflict",
        ),
        (
            server
                .post(
                    "/v1/contacts",
                    json!({"attributes": {"email": "not-an-email"}}),
                )
                .await,
            422,
            "invalid_contact",
        ),
        (
            server.get("/v1/contacts/nobody").await,
            404,
            "contact_not_found",
        ),
        (
            server
                .raw("/v1/events", "application/json", vec![b' '; 2 << 20])
                .await,
            413,
            "payload_too_large",
        ),
        (
            server.post("/v1/events", json!([])).await,
            422,
            "invalid_batch",
        ),
    ];
    for ((status, body), expected_status, code) in cases {
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap_or_default()),
            (expected_status, code),
            "{body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, b) = server.get("/v1/contacts/b").await;
    assert_eq!(b["attributes"]["email"], "b@example.com");
}

#[tokio::test]
async fn an_event_sent_twice_is_recorded_once() {
    let server = server().await;
    let event = json!({"id": "evt-1", "contact_id": "visitor-9", "name": "registered", "properties": {"source": "web"}, "timestamp": "2026-11-22T10:00:00Z"});
    let (status, body) = server.post("/v1/events", event.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["results"],
        json!([{"id": "evt-1", "status": "accepted"}])
    );
    let second = json!({"id": "evt-2", "contact_id": "visitor-9", "name": "email_opened", "timestamp": "2026-11-22T11:00:00Z"});
    let (status, body) = server.post("/v1/events", json!([event, second])).await;
    assert_eq!(status, 202);
    assert_eq!(
        body["results"],
        json!([{"id": "evt-1", "status": "duplicate"}, {"id": "evt-2", "status": "accepted"}])
    );
    // The contact the events named now exists.
    assert_eq!(server.get("/v1/contacts/visitor-9").await.0, 200);
}

#[tokio::test]
async fn segment_identify_track_and_batch_land_as_contacts_and_events() {
    let server = server().await;
    let identify = json!({"type": "identify", "userId": "u-42", "messageId": "m-1", "traits": {"email": "li.wei@example.com", "plan": "trial", "address": {"city": "Shenzhen"}, "nickname": null}});
    let (status, body) = server.segment("/v1/identify", WRITE_KEY, identify).await;
    assert_eq!((status, &body), (200, &json!({"success": true})));
    let (_, contact) = server.get("/v1/contacts/u-42").await;
    assert_eq!(contact["attributes"]["address.city"], "Shenzhen");
    assert_eq!(contact["attributes"]["plan"], "trial");
    assert!(contact["attributes"].get("nickname").is_none());

    let batch = json!({"batch": [
        {"type": "identify", "userId": "u-42", "messageId": "m-2", "traits": {"plan": "pro"}},
        {"type": "track", "userId": "u-42", "event": "Whitepaper Downloaded", "messageId": "m-3", "properties": {"title": "Nurture 101"}, "timestamp": "2026-11-22T09:00:00Z"},
        {"type": "page", "anonymousId": "anon-7", "name": "Pricing", "messageId": "m-4"}
    ]});
    assert_eq!(server.segment("/v1/batch", WRITE_KEY, batch).await.0, 200);
    assert_eq!(
        server.get("/v1/contacts/u-42").await.1["attributes"]["plan"],
        "pro"
    );
    assert_eq!(server.get("/v1/contacts/anon-7").await.0, 200);
    // The messageId is the event id: the same message sent again is a duplicate.
    let resent = json!({"id": "m-3", "contact_id": "u-42", "name": "Whitepaper Downloaded", "timestamp": "2026-11-22T09:00:00Z"});
    assert_eq!(
        server.post("/v1/events", resent).await.1["results"][0]["status"],
        "duplicate"
    );
}

#[tokio::test]
async fn segment_ingest_needs_the_write_key_and_well_formed_messages() {
    let server = server().await;
    let track = json!({"userId": "u-1", "event": "Signed Up", "messageId": "m-9"});
    assert_eq!(
        server
            .segment("/v1/track", "wrong-key-000000000", track.clone())
            .await
            .0,
        401
    );
    // The write key is not an API token (a token that may ingest is taken by Segment routes,
    // which the role tests show).
    let with_write_key_as_bearer = server
        .client
        .get(format!("{}/v1/contacts/u-1", server.base))
        .bearer_auth(WRITE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(with_write_key_as_bearer.status(), 401);
    let (status, body) = server
        .segment(
            "/v1/track",
            WRITE_KEY,
            json!({"userId": "u-1", "event": "Signed Up"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_message")),
        "{body}"
    );
    let (status, body) = server
        .segment(
            "/v1/track",
            WRITE_KEY,
            json!({"event": "Signed Up", "messageId": "m-10"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_message")),
        "{body}"
    );
    assert_eq!(server.segment("/v1/track", WRITE_KEY, track).await.0, 200);
}

/// Every request is served within bounds: one that takes too long is answered 503 `timeout`,
/// and past the requests it serves at once the server answers 503 `overloaded` at once rather
/// than queue without end. (Here with a 300 ms timeout and one request at a time; a simulation
/// of a loop takes seconds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_times_out_and_too_many_at_once_are_shed() {
    let server = Server::start_within(wayline::api::HttpEdges {
        timeout: std::time::Duration::from_millis(300),
        max_concurrent: 1,
        ..Default::default()
    })
    .await;
    server
        .put(
            "/v1/journeys/every-minute",
            json!({
                "name": "Every minute",
                "nodes": [
                    {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "registered"}},
                    {"id": "nudge", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["nudged"]}},
                    {"id": "pause", "type": "wait", "delay": "1m"}
                ],
                "edges": [{"from": "in", "to": "nudge"}, {"from": "nudge", "to": "pause"}, {"from": "pause", "to": "nudge"}]
            }),
        )
        .await;
    let slow = json!({"script": [{"event": "registered"}, {"wait": "365d"}]});
    let (timed_out, shed) = tokio::join!(
        server.post("/v1/journeys/every-minute/simulate", slow.clone()),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            server.get("/v1/journeys/every-minute").await
        }
    );
    assert_eq!(
        (timed_out.0, timed_out.1["error"]["code"].as_str()),
        (503, Some("timeout")),
        "{}",
        timed_out.1
    );
    assert_eq!(
        (shed.0, shed.1["error"]["code"].as_str()),
        (503, Some("overloaded")),
        "{}",
        shed.1
    );
    assert_eq!(
        server.get("/v1/journeys/every-minute").await.0,
        200,
        "served again once free"
    );
}
