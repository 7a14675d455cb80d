//! What providers report back: a provider's signed event webhook, posted to
//! `POST /v1/webhooks/{channel}` and read by the channel plugin (email-http), becomes steps in
//! the message's history and events on its contact that journeys branch on. An unsigned or
//! forged request changes nothing, and a report can speak only for its own channel's messages.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use hmac::Mac;
use serde_json::{Value as Json, json};

use crate::delivery::{happen, journey, last_detail, message_when, register, statuses, template};
use crate::server::Server;

const HOOK_KEY: &str = "whsec-2f9a41";

/// A Postmark-like email API on 127.0.0.1: it keeps each request's JSON body and answers with
/// its own id.
async fn email_api() -> (String, Arc<Mutex<Vec<Json>>>) {
    let sent: Arc<Mutex<Vec<Json>>> = Arc::default();
    let app = Router::new()
        .route(
            "/email",
            post(
                |State(sent): State<Arc<Mutex<Vec<Json>>>>, body: Bytes| async move {
                    let mut sent = sent.lock().unwrap();
                    sent.push(serde_json::from_slice(&body).unwrap());
                    axum::Json(json!({"MessageID": format!("pm-{}", sent.len())}))
                },
            ),
        )
        .with_state(sent.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, sent)
}

async fn bind(server: &Server, base: &str) {
    let (status, body) = server
        .put(
            "/v1/channels/email",
            json!({
                "plugin": "email-http",
                "config": {
                    "url": format!("{base}/email"),
                    "headers": {"X-Postmark-Server-Token": "{{secret:token}}"},
                    "from": "Shop <news@shop.example>",
                    "body": {"From": "$from", "To": "$recipient", "Subject": "$subject",
                             "TextBody": "$text", "HtmlBody": "$html", "Headers": "$header_list",
                             "Metadata": {"wayline_id": "$id"}},
                    "webhook": {"signature": {"header": "X-Signature", "secret": "hook"},
                                "events": "", "kind": "/RecordType",
                                "message_id": "/Metadata/wayline_id", "provider_id": "/MessageID",
                                "reason": "/Description",
                                "kinds": {"Delivery": "delivered", "Bounce": "bounced",
                                          "SpamComplaint": "complaint", "Open": "opened"}}
                },
                "recipient": "email",
                "approved_hosts": [base],
                "secrets": {"token": {"value": "pm-token-77", "hosts": [base]},
                            "hook": {"value": HOOK_KEY, "verifies_webhooks": true}},
            }),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

fn sign(body: &[u8], key: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// POST `events` to the channel's webhook, signed with `key` (unsigned if `None`).
async fn report(server: &Server, channel: &str, events: Json, key: Option<&str>) -> (u16, Json) {
    let body = events.to_string().into_bytes();
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/{channel}", server.base))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("X-Signature", sign(&body, key));
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Json::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_provider_reports_move_messages_and_journeys() {
    let (base, sent) = email_api().await;
    let server = Server::start(true).await;
    bind(&server, &base).await;
    let welcome: Json = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/journeys/welcome.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let (status, body) = server.put("/v1/journeys/welcome", welcome).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.act("/v1/journeys/welcome/publish").await;
    assert_eq!(status, 201, "{body}");
    for id in ["lin", "mo"] {
        register(
            &server,
            json!({"id": id, "attributes": {"email": format!("{id}@example.com"), "first_name": id},
                   "consents": {"email": "granted"}}),
            "registered",
            "free",
        )
        .await;
    }
    let lin = message_when(&server, "lin", "sent").await;
    let mo = message_when(&server, "mo", "sent").await;
    let (lin_id, mo_id) = (lin["id"].as_str().unwrap(), mo["id"].as_str().unwrap());
    {
        let sent = sent.lock().unwrap();
        let to_lin = sent.iter().find(|b| b["To"] == "lin@example.com").unwrap();
        assert_eq!(to_lin["Metadata"]["wayline_id"], lin_id);
        assert_eq!(to_lin["Headers"][0]["Name"], "List-Unsubscribe");
    }

    // Unsigned, forged or signed with another key: refused, nothing changes.
    let delivered = json!([{"RecordType": "Delivery", "MessageID": "pm-1", "Metadata": {"wayline_id": lin_id}}]);
    let (status, body) = report(&server, "email", delivered.clone(), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("webhook_unauthenticated")),
        "{body}"
    );
    let (status, _) = report(&server, "email", delivered.clone(), Some("guessed-key")).await;
    assert_eq!(status, 401);
    assert_eq!(message_when(&server, "lin", "sent").await["status"], "sent");

    // Signed: the message is delivered, once however often the provider repeats it.
    for _ in 0..2 {
        let (status, body) = report(&server, "email", delivered.clone(), Some(HOOK_KEY)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"accepted": 1, "ignored": 0}));
    }
    let lin = message_when(&server, "lin", "delivered").await;
    assert_eq!(statuses(&lin), ["queued", "sending", "sent", "delivered"]);

    // An open reported by the provider takes the journey's "opened" branch: the product guide.
    let opened = json!({"RecordType": "Open", "Metadata": {"wayline_id": lin_id}});
    let (status, body) = report(&server, "email", opened, Some(HOOK_KEY)).await;
    assert_eq!(status, 200, "{body}");
    server.settle().await;
    let guide = message_when(&server, "lin", "sent").await;
    assert_eq!(guide["template"], "product-guide", "{guide:#}");

    // A hard bounce bounces the message and suppresses the address; a report about a message
    // that is not this channel's, or no message at all, is ignored.
    let mixed = json!([
        {"RecordType": "Bounce", "Description": "mailbox does not exist", "Metadata": {"wayline_id": mo_id}},
        {"RecordType": "Bounce", "Metadata": {"wayline_id": "no-such-message"}},
        {"RecordType": "Bounce", "Metadata": {}},
        {"RecordType": "Subscription", "Metadata": {"wayline_id": mo_id}}
    ]);
    let (status, body) = report(&server, "email", mixed, Some(HOOK_KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"accepted": 1, "ignored": 2}));
    let mo = message_when(&server, "mo", "bounced").await;
    assert!(
        crate::delivery::last_detail(&mo).contains("mailbox does not exist"),
        "{mo:#}"
    );
    // A day on, Mo's simplified email is not sent to the address that bounced.
    server
        .advance(24 * 60 * crate::delivery::MINUTE + crate::delivery::MINUTE)
        .await;
    let simplified = message_when(&server, "mo", "suppressed").await;
    assert_eq!(simplified["template"], "welcome-simplified");
    assert!(
        crate::delivery::last_detail(&simplified).contains("suppressed"),
        "{simplified:#}"
    );

    // A spam complaint about Lin's welcome email leaves it delivered and stops marketing to
    // her address; a receipt she is owed still goes.
    let complaint = json!({"RecordType": "SpamComplaint", "Metadata": {"wayline_id": lin_id}});
    let (status, body) = report(&server, "email", complaint, Some(HOOK_KEY)).await;
    assert_eq!(status, 200, "{body}");
    let (_, welcome) = server.get(&format!("/v1/messages/{lin_id}")).await;
    assert_eq!(welcome["status"], "delivered", "{welcome:#}");
    let promo = json!({"channel": "email", "subject": "Sale", "text": "Everything half off"});
    template(&server, "promo", promo).await;
    let receipt =
        json!({"channel": "email", "subject": "Receipt", "text": "Thanks", "transactional": true});
    template(&server, "receipt", receipt).await;
    journey(&server, "promos", "browsed", "email", "promo").await;
    journey(&server, "receipts", "paid", "email", "receipt").await;
    happen(&server, "lin", "browsed", "pro").await;
    let promo = message_when(&server, "lin", "suppressed").await;
    assert_eq!(promo["template"], "promo");
    assert!(
        last_detail(&promo).contains("reported it as spam"),
        "{promo:#}"
    );
    happen(&server, "lin", "paid", "pro").await;
    let receipt = message_when(&server, "lin", "sent").await;
    assert_eq!(receipt["template"], "receipt", "{receipt:#}");

    // No such channel; a body that is not JSON once signed.
    let (status, body) = report(&server, "sms", json!([]), Some(HOOK_KEY)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("channel_not_found"))
    );
    let garbage = b"not json".to_vec();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/email", server.base))
        .header("X-Signature", sign(&garbage, HOOK_KEY))
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Json = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "webhook_malformed");
}

/// The webhook route is public. A request that sends the channel plugin into a loop costs a
/// bounded moment and gets 503 with none of the plugin's error; a flood of them is turned away
/// with 429 beyond what the channel reads at once, and the channel reads the next request
/// normally; a 0.1.0 channel plugin reads no webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_loops_its_plugin_is_bounded_and_a_flood_is_turned_away() {
    let server = Server::start(true).await;
    for fixture in ["probe-channel", "legacy-channel"] {
        let plugin = crate::support::load(
            &server.state.runtime,
            &crate::support::fixture_bytes(fixture),
        );
        server.state.registry.insert(plugin).unwrap();
    }
    let target = "http://127.0.0.1:9";
    for (name, plugin, config) in [
        (
            "probe",
            "probe-channel",
            json!({"url": format!("{target}/x")}),
        ),
        ("legacy", "legacy-channel", json!(format!("{target}/x"))),
    ] {
        let binding = json!({"plugin": plugin, "config": config, "approved_hosts": [target]});
        let (status, body) = server.put(&format!("/v1/channels/{name}"), binding).await;
        assert_eq!(status, 201, "{body}");
    }
    let post = |channel: &'static str, body: &'static str| {
        let url = format!("{}/v1/webhooks/{channel}", server.base);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            let body: Json = response.json().await.unwrap();
            (status, retry_after, body)
        }
    };

    let (status, retry_after, body) = post("probe", "spin").await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after);
    assert_eq!(
        body["error"],
        json!({"code": "webhook_failed", "message": "the channel could not read this request now; retry later"})
    );

    let requests: Vec<_> = (0..16)
        .map(|_| tokio::spawn(post("probe", "spin")))
        .collect();
    let mut flood = Vec::new();
    for request in requests {
        flood.push(request.await.unwrap());
    }
    let busy = flood.iter().filter(|(status, _, _)| *status == 429).count();
    assert!(busy > 0, "some of 16 at once are turned away");
    for (status, retry_after, body) in &flood {
        assert!(*retry_after);
        match status {
            429 => assert_eq!(body["error"]["code"], "webhook_busy"),
            503 => assert_eq!(body["error"]["code"], "webhook_failed"),
            other => panic!("{other} {body}"),
        }
    }
    // The probe reads an ordinary request as malformed (it reports what it tried).
    let (status, _, body) = post("probe", "{}").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("webhook_malformed")),
        "{body}"
    );

    let (status, _, body) = post("legacy", "{}").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("webhooks_not_supported")),
        "{body}"
    );
}
