//! Segment-spec ingest as Segment clients use it: every message type, batches where one
//! message is bad, anonymous visitors who log in, clocks that are wrong, gzip, and the real
//! `segment-analytics-python` client from PyPI.

use std::io::Write;

use serde_json::{Value as Json, json};

use crate::server::{Server, WRITE_KEY};

async fn tagging(server: &Server, id: &str, event: &str, tag: &str) {
    let journey = json!({
        "name": format!("Tag on {event}"),
        "reentry": "concurrent",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": event}},
            {"id": "tag", "type": "action", "plugin": "update-contact", "config": {"add_tags": [tag]}}
        ],
        "edges": [{"from": "in", "to": "tag"}]
    });
    server.put(&format!("/v1/journeys/{id}"), journey).await;
    let (status, body) = server.act(&format!("/v1/journeys/{id}/publish")).await;
    assert_eq!(status, 201, "{body}");
}

async fn contact(server: &Server, id: &str) -> Json {
    let (status, body) = server.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(status, 200, "{id}: {body}");
    body
}

fn tags(contact: &Json) -> Vec<String> {
    let mut tags: Vec<String> = contact["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags
}

/// All six message types are taken; a batch with a message of an unknown type, one without an
/// id and one whose email belongs to someone else takes all the others and names the three.
#[tokio::test]
async fn every_message_type_is_taken_and_a_bad_message_costs_only_itself() {
    let server = Server::start(true).await;
    tagging(&server, "screens", "screen_viewed", "app-user").await;
    tagging(&server, "pages", "page_viewed", "reader").await;
    server
        .post(
            "/v1/contacts",
            json!({"id": "someone", "attributes": {"email": "taken@example.com"}}),
        )
        .await;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "u1", "messageId": "m1", "traits": {"plan": "pro"}},
        {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m2"},
        {"type": "page", "userId": "u1", "name": "Pricing", "messageId": "m3"},
        {"type": "screen", "userId": "u1", "name": "Home", "messageId": "m4"},
        {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}, "messageId": "m5"},
        {"type": "alias", "userId": "u1", "previousId": "old-u1", "messageId": "m6"},
        {"type": "teleport", "userId": "u1", "messageId": "m7"},
        {"type": "track", "userId": "u1", "event": "No id"},
        {"type": "identify", "userId": "u2", "messageId": "m9", "traits": {"email": "taken@example.com"}}
    ]});
    let (status, body) = server.segment("/v1/batch", WRITE_KEY, batch).await;
    assert_eq!(status, 200, "{body}");
    let refused: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        refused,
        [
            (6, "invalid_message"),
            (7, "invalid_message"),
            (8, "contact_identity_conflict")
        ],
        "{body}"
    );
    server.settle().await;
    let u1 = contact(&server, "u1").await;
    assert_eq!(u1["attributes"]["plan"], "pro");
    assert_eq!(u1["attributes"]["group_id"], "acme");
    assert_eq!(u1["attributes"]["group.name"], "Acme");
    assert_eq!(tags(&u1), ["app-user", "reader"], "{u1}");
    // The single calls take the same messages, and refuse a bad one with a 4xx.
    for path in [
        "/v1/identify",
        "/v1/track",
        "/v1/page",
        "/v1/screen",
        "/v1/group",
        "/v1/alias",
    ] {
        let message = json!({"userId": "u3", "previousId": "p3", "groupId": "g", "event": "E", "messageId": format!("one-{path}")});
        let (status, body) = server.segment(path, WRITE_KEY, message).await;
        assert_eq!((status, &body), (200, &json!({"success": true})), "{path}");
    }
    let (status, body) = server
        .segment(
            "/v1/track",
            WRITE_KEY,
            json!({"userId": "u3", "messageId": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_message")),
        "{body}"
    );
}

/// A visitor browses anonymously, enters the welcome journey, then logs in: one contact, with
/// the visitor's attributes, tags, journey and outbox, and the anonymous id now finds it. A
/// visitor who left an email on a form and then logs in with it is one contact too.
#[tokio::test]
async fn an_anonymous_visitor_who_logs_in_becomes_one_contact_with_their_journeys() {
    let server = Server::start(true).await;
    let welcome: Json =
        serde_json::from_str(include_str!("../../examples/journeys/welcome.json")).unwrap();
    server.put("/v1/journeys/welcome", welcome).await;
    server.act("/v1/journeys/welcome/publish").await;
    let now = wayline::model::format_timestamp(wayline::clock::Clock::now(&server.clock));
    let batch = json!({"batch": [
        {"type": "identify", "anonymousId": "visitor-1", "messageId": "a1", "traits": {"first_name": "Li", "source": "ad"}},
        {"type": "track", "anonymousId": "visitor-1", "event": "registered", "messageId": "a2", "timestamp": now}
    ]});
    assert_eq!(server.segment("/v1/batch", WRITE_KEY, batch).await.0, 200);
    server.settle().await;
    assert_eq!(tags(&contact(&server, "visitor-1").await), ["welcomed"]);

    let login = json!({"type": "identify", "userId": "li-1", "anonymousId": "visitor-1", "messageId": "a3", "traits": {"plan": "pro"}});
    assert_eq!(
        server
            .segment("/v1/identify", WRITE_KEY, login.clone())
            .await
            .0,
        200
    );
    server.settle().await;
    let li = contact(&server, "li-1").await;
    assert_eq!(
        (
            li["attributes"]["first_name"].as_str(),
            li["attributes"]["plan"].as_str()
        ),
        (Some("Li"), Some("pro")),
        "{li}"
    );
    assert_eq!(tags(&li), ["welcomed"]);
    assert_eq!(li["enrollments"][0]["state"], "waiting", "{li}");
    assert_eq!(
        contact(&server, "visitor-1").await["id"],
        "li-1",
        "the anonymous id finds the user"
    );
    // Sent again (a client's retry): merged once.
    assert_eq!(
        server.segment("/v1/identify", WRITE_KEY, login).await.0,
        200
    );
    server.settle().await;
    // The visitor's device still sends as the visitor: it reaches the user, and the journey goes on.
    let opened = json!({"type": "track", "anonymousId": "visitor-1", "event": "email_opened", "messageId": "a4", "timestamp": now});
    assert_eq!(server.segment("/v1/track", WRITE_KEY, opened).await.0, 200);
    server.settle().await;
    let (_, messages) = server.get("/v1/contacts/li-1/messages").await;
    let templates: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["template"].as_str().unwrap())
        .collect();
    assert_eq!(templates, ["welcome", "product-guide"], "{messages}");
    assert_eq!(contact(&server, "li-1").await["score"], 0.0);

    // A form, then a login with the same email: no conflict, one contact.
    let form = json!({"type": "identify", "anonymousId": "visitor-2", "messageId": "b1", "traits": {"email": "Wang@Example.com", "interest": "crm"}});
    assert_eq!(server.segment("/v1/identify", WRITE_KEY, form).await.0, 200);
    let login = json!({"type": "identify", "userId": "wang-1", "messageId": "b2", "traits": {"email": "wang@example.com"}});
    let (status, body) = server.segment("/v1/identify", WRITE_KEY, login).await;
    assert_eq!(status, 200, "{body}");
    server.settle().await;
    let wang = contact(&server, "wang-1").await;
    assert_eq!(wang["attributes"]["interest"], "crm", "{wang}");
    assert_eq!(wang["attributes"]["email"], "Wang@Example.com");
    assert_eq!(contact(&server, "visitor-2").await["id"], "wang-1");
    let (status, found) = server
        .post(
            "/v1/contacts",
            json!({"attributes": {"email": "wang@example.com"}}),
        )
        .await;
    assert_eq!(
        (status, found["id"].as_str()),
        (200, Some("wang-1")),
        "the email is the user's now"
    );
}

/// A device whose clock is an hour fast: the spec's correction (received − (sent − happened))
/// puts its event at the right time; gzip bodies, as clients send them, are read.
#[tokio::test]
async fn a_device_clock_an_hour_fast_is_corrected_and_gzip_bodies_are_read() {
    let server = Server::start(true).await;
    let now = wayline::clock::Clock::now(&server.clock);
    let at = |ms: i64| wayline::model::format_timestamp(ms);
    let hour = 3_600_000;
    let body = json!({
        "batch": [{"type": "track", "userId": "fast", "event": "Clicked", "messageId": "skew-1",
                   "timestamp": at(now + hour - 60_000)}],
        "sentAt": at(now + hour)
    });
    let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzipped.write_all(body.to_string().as_bytes()).unwrap();
    let response = server
        .client
        .post(format!("{}/v1/batch", server.base))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzipped.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let recorded = server.state.store.event("skew-1").unwrap().unwrap();
    assert_eq!(
        recorded.timestamp,
        now - 60_000,
        "a minute before it was sent, by the server's clock"
    );
}

/// The real client from PyPI (`segment-analytics-python`, gzip on) sends one of each call; the
/// server takes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_segment_python_client_sends_every_call() {
    let server = Server::start(true).await;
    tagging(&server, "signed-up", "Signed Up", "signed-up").await;
    tagging(&server, "pages", "page_viewed", "reader").await;
    tagging(&server, "screens", "screen_viewed", "app-user").await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/clients/segment_client.py"
    );
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(base)
            .arg(WRITE_KEY)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    assert!(
        output.status.success(),
        "the client failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.settle().await;
    let user = contact(&server, "py-user").await;
    assert_eq!(user["attributes"]["plan"], "pro", "{user}");
    assert_eq!(user["attributes"]["company.size"], 600);
    assert_eq!(user["attributes"]["group.name"], "Acme Ltd");
    assert_eq!(tags(&user), ["app-user", "reader", "signed-up"], "{user}");
}
