//! Content approval (DOMAIN §6): where the workspace turns it on, a journey is published only
//! when every template version it sends was approved by a manager who did not write it.

use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::roles::{code, token};
use crate::server::Server;

fn promo_journey() -> Json {
    json!({
        "name": "Promo",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "registered"}},
            {"id": "promo", "type": "action", "plugin": "update-contact",
             "config": {"send": {"channel": "email", "template": "promo"}}}
        ],
        "edges": [{"from": "in", "to": "promo"}]
    })
}

fn template(subject: &str) -> Json {
    json!({"channel": "email", "subject": subject,
           "text": "20% off this week.\n\nUnsubscribe: {{ message.unsubscribe_url }}"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_approval_on_only_content_a_manager_approved_can_be_published() {
    let server = Server::start(true).await;
    let (operator, _) = token(&server, "editor", "operator", &[]).await;
    let (author, _) = token(&server, "manager a", "manager", &[]).await;
    let (reviewer, reviewer_id) = token(&server, "manager b", "manager", &[]).await;
    let server = &server;
    let as_ = |token: &str, method: Method, path: &str, body: Option<Json>| {
        let (token, path) = (token.to_owned(), path.to_owned());
        async move { server.send_as(&token, method, &path, body).await }
    };

    // Off by default: a journey on an unapproved template publishes.
    assert_eq!(
        server.get("/v1/settings").await.1["content_approval"],
        false
    );
    let (status, body) = as_(
        &operator,
        Method::PUT,
        "/v1/templates/promo",
        Some(template("Sale")),
    )
    .await;
    assert!(status < 300, "{body}");
    as_(
        &operator,
        Method::PUT,
        "/v1/journeys/promo",
        Some(promo_journey()),
    )
    .await;
    let (status, body) = as_(&operator, Method::POST, "/v1/journeys/promo/publish", None).await;
    assert_eq!(status, 201, "{body}");

    // Only an admin turns it on.
    let on = json!({"content_approval": true});
    let (status, _) = as_(&author, Method::PUT, "/v1/settings", Some(on.clone())).await;
    assert_eq!(status, 403);
    let (status, settings) = server.put("/v1/settings", on).await;
    assert_eq!(
        (status, settings),
        (
            200,
            json!({"content_approval": true, "control_group_percent": 0.0})
        )
    );
    let (status, body) = server.put("/v1/settings", json!({"approval": true})).await;
    assert_eq!(
        (status, code(&body)),
        (422, Some("invalid_request")),
        "{body}"
    );

    // Now the same journey is refused, naming the template version.
    let (status, body) = as_(&operator, Method::POST, "/v1/journeys/promo/publish", None).await;
    assert_eq!(
        (status, code(&body)),
        (422, Some("content_not_approved")),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["templates"], json!(["promo v1"]));

    // The author cannot approve their own version; an operator cannot approve at all.
    let (_, v2) = as_(
        &author,
        Method::PUT,
        "/v1/templates/promo",
        Some(template("Sale ends Friday")),
    )
    .await;
    assert_eq!(v2["template"]["version"], 2, "{v2}");
    let approve = "/v1/templates/promo/versions/2/approve";
    let (status, body) = as_(&author, Method::POST, approve, None).await;
    assert_eq!(
        (status, code(&body)),
        (422, Some("approval_by_author")),
        "{body}"
    );
    let (status, body) = as_(&operator, Method::POST, approve, None).await;
    assert_eq!((status, code(&body)), (403, Some("forbidden")), "{body}");
    let (status, body) = as_(
        &reviewer,
        Method::POST,
        "/v1/templates/promo/versions/9/approve",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (404, Some("template_not_found")),
        "{body}"
    );

    // Another manager approves it, and the journey publishes pinned to that version.
    let (status, approved) = as_(&reviewer, Method::POST, approve, None).await;
    assert_eq!(
        (status, &approved["approved_by"]),
        (200, &json!(reviewer_id)),
        "{approved}"
    );
    let (status, version) = as_(&operator, Method::POST, "/v1/journeys/promo/publish", None).await;
    assert_eq!(status, 201, "{version}");
    assert_eq!(version["templates"], json!({"promo": 2}));

    // A newer version waits for its own approval; what was approved stays approved.
    as_(
        &operator,
        Method::PUT,
        "/v1/templates/promo",
        Some(template("Last day")),
    )
    .await;
    let (status, body) = as_(&operator, Method::POST, "/v1/journeys/promo/publish", None).await;
    assert_eq!(
        body["error"]["details"]["templates"],
        json!(["promo v3"]),
        "{status} {body}"
    );
    let (_, v2) = server.get("/v1/templates/promo?version=2").await;
    assert_eq!(v2["template"]["approved_by"], json!(reviewer_id), "{v2}");

    let audit = server.get("/v1/audit?action=template.approve").await.1;
    let entries = audit["audit"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        (&entries[0]["actor"], &entries[0]["object"]),
        (&json!(reviewer_id), &json!("promo@2"))
    );
    let settings = server.get("/v1/audit?action=settings.update").await.1;
    assert_eq!(settings["audit"].as_array().unwrap().len(), 1, "{settings}");
}

/// A template the journey did not pin at publish (a plugin chose it at run time) is sent only
/// at its newest approved version: held while none is approved, then sent at that one, not
/// at a newer unapproved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_not_pinned_at_publish_is_sent_only_at_an_approved_version() {
    use crate::delivery::{MINUTE, bind, last_detail, message_when, provider};
    let server = Server::start(true).await;
    let (base, provider) = provider().await;
    bind(&server, "crm", &base, "/ok", json!({})).await;
    for text in ["first draft", "second draft"] {
        let (status, body) = server
            .put(
                "/v1/templates/note",
                json!({"channel": "crm", "text": text}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    server
        .put("/v1/settings", json!({"content_approval": true}))
        .await;
    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "u-1", "attributes": {"email": "u1@example.com"}, "consents": {"crm": "granted"}}),
        )
        .await;
    assert!(status < 300, "{body}");
    let now = wayline::clock::Clock::now(&server.clock);
    let message = wayline::store::OutboxMessage {
        id: "m-chosen".into(),
        contact_id: "u-1".into(),
        channel: "crm".into(),
        template: "note".into(),
        variables: Default::default(),
        journey_id: "chosen".into(),
        version: 1,
        node: "send".into(),
        enrollment_id: "en-1".into(),
        created_at: now,
        status: wayline::store::DeliveryStatus::Queued,
        template_version: None,
        attempts: 0,
        due_at: Some(now),
        recipient: None,
        provider_id: None,
        history: Vec::new(),
        test: false,
    };
    server.state.store.queue_message(&message).unwrap();
    let held = message_when(&server, "u-1", "deferred").await;
    assert!(last_detail(&held).contains("no approved version"), "{held}");
    assert!(provider.lock().unwrap().requests.is_empty());

    let (reviewer, _) = token(&server, "reviewer", "manager", &[]).await;
    let (status, body) = server
        .send_as(
            &reviewer,
            Method::POST,
            "/v1/templates/note/versions/1/approve",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.advance(30 * MINUTE).await;
    let sent = message_when(&server, "u-1", "sent").await;
    assert_eq!(sent["template_version"], 1, "{sent}");
    let requests = &provider.lock().unwrap().requests;
    assert_eq!(requests.len(), 1);
    let body = requests[0].body.to_string();
    assert!(
        body.contains("first draft") && !body.contains("second draft"),
        "{body}"
    );
}
