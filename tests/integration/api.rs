//! The HTTP API as a client sees it: a real server on 127.0.0.1, real sled on a temp dir.

use serde_json::{Value as Json, json};

use crate::server::{Server, TOKEN, WRITE_KEY};

async fn server() -> Server {
    Server::start(false).await
}

#[tokio::test]
async fn every_v1_endpoint_needs_the_token_but_health_does_not() {
    let server = server().await;
    let health = server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    for token in [None, Some("wrong-token-0123456789")] {
        let mut request = server
            .client
            .get(format!("{}/v1/contacts/anyone", server.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
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
    // The API token is not a write key, and the write key is not an API token.
    assert_eq!(
        server.segment("/v1/track", TOKEN, track.clone()).await.0,
        401
    );
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
