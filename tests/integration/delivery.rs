//! Messages leave: a journey's send goes through the channel it names, bound by the operator to
//! a channel plugin, rendered from a versioned template, delivered to a real HTTP provider on
//! 127.0.0.1 once (its idempotency key the message id), each step recorded, and only to people
//! who agreed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value as Json, json};

use wayline::clock::Clock;

use crate::server::Server;

pub(crate) const SECRET: &str = "crm-token-8c1e55a0b2";
pub(crate) const MINUTE: i64 = 60_000;

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub path: String,
    pub key: String,
    pub authorization: String,
    pub body: Json,
}

#[derive(Default)]
pub(crate) struct Provider {
    pub requests: Vec<Request>,
    /// Tries seen per idempotency key on `/flaky`.
    pub tries: BTreeMap<String, u32>,
    /// Messages accepted, once per idempotency key, as a provider that honours keys keeps them.
    pub accepted: BTreeMap<String, Json>,
}

pub(crate) type Shared = Arc<Mutex<Provider>>;

/// A provider that fails the first two tries of each message on `/flaky` (a 500, then a 429
/// asking for two minutes), accepts everything on `/ok` (and on `/slow`, after 300 ms), and
/// knows no recipient on `/gone`. Like a provider that honours idempotency keys, it accepts
/// each key once.
pub(crate) async fn provider() -> (String, Shared) {
    let shared: Shared = Arc::default();
    async fn record(shared: &Shared, path: &str, headers: &HeaderMap, body: &Bytes) -> String {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let key = header("idempotency-key");
        shared.lock().unwrap().requests.push(Request {
            path: path.into(),
            key: key.clone(),
            authorization: header("authorization"),
            body: serde_json::from_slice(body).unwrap_or(Json::Null),
        });
        key
    }
    fn accept(shared: &Shared, key: &str, body: &Bytes) -> axum::response::Response {
        let mut provider = shared.lock().unwrap();
        let body = serde_json::from_slice(body).unwrap_or(Json::Null);
        provider.accepted.entry(key.to_owned()).or_insert(body);
        (
            StatusCode::CREATED,
            axum::Json(json!({"id": format!("p-{key}")})),
        )
            .into_response()
    }
    let app = Router::new()
        .route(
            "/flaky",
            post(
                |State(shared): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                    let key = record(&shared, "/flaky", &headers, &body).await;
                    let tries = {
                        let mut provider = shared.lock().unwrap();
                        let tries = provider.tries.entry(key.clone()).or_default();
                        *tries += 1;
                        *tries
                    };
                    match tries {
                        1 => (StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response(),
                        2 => (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "120")],
                            "slow down",
                        )
                            .into_response(),
                        _ => accept(&shared, &key, &body),
                    }
                },
            ),
        )
        .route(
            "/ok",
            post(
                |State(shared): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                    let key = record(&shared, "/ok", &headers, &body).await;
                    accept(&shared, &key, &body)
                },
            ),
        )
        // A provider that takes its time: a kill lands while messages are in flight.
        .route(
            "/slow",
            post(
                |State(shared): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                    let key = record(&shared, "/slow", &headers, &body).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    accept(&shared, &key, &body)
                },
            ),
        )
        .route(
            "/gone",
            post(
                |State(shared): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                    record(&shared, "/gone", &headers, &body).await;
                    (StatusCode::NOT_FOUND, "no such recipient")
                },
            ),
        )
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), shared)
}

/// Bind channel `name` to the webhook plugin posting to `base` + `path`.
pub(crate) async fn bind(server: &Server, name: &str, base: &str, path: &str, extra: Json) -> Json {
    let mut binding = json!({
        "plugin": "webhook-channel",
        "config": {"url": format!("{base}{path}"), "headers": {"Authorization": "Bearer {{secret:token}}"}},
        "recipient": "email",
        "approved_hosts": [base],
        "secrets": {"token": {"value": SECRET, "hosts": [base]}},
    });
    for (key, value) in extra.as_object().unwrap() {
        binding[key] = value.clone();
    }
    let (status, body) = server.put(&format!("/v1/channels/{name}"), binding).await;
    assert!(status == 201 || status == 200, "{status} {body}");
    body
}

pub(crate) async fn template(server: &Server, name: &str, body: Json) -> Json {
    let (status, body) = server.put(&format!("/v1/templates/{name}"), body).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// A journey that sends `template` on `channel` when a contact has event `on`, then waits a
/// day for the `<channel>_sent` event: tagged `confirmed` if it comes, `unconfirmed` if not.
pub(crate) async fn journey(server: &Server, id: &str, on: &str, channel: &str, template: &str) {
    let definition = json!({
        "name": id, "reentry": "once",
        "nodes": [
            {"id": "registered", "type": "entry", "plugin": "event-trigger", "config": {"event": on}},
            {"id": "send", "type": "action", "plugin": "update-contact",
             "config": {"send": {"channel": channel, "template": template, "variables": {"plan": "{{event.plan}}"}}}},
            {"id": "sent?", "type": "wait", "until_event": format!("{channel}_sent"), "timeout": "1d"},
            {"id": "confirmed", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["confirmed"]}},
            {"id": "unconfirmed", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["unconfirmed"]}}
        ],
        "edges": [
            {"from": "registered", "to": "send"},
            {"from": "send", "to": "sent?"},
            {"from": "sent?", "to": "confirmed", "label": "event"},
            {"from": "sent?", "to": "unconfirmed", "label": "timeout"}
        ]
    });
    let (status, body) = server.put(&format!("/v1/journeys/{id}"), definition).await;
    assert!(status == 201 || status == 200, "{status} {body}");
    let (status, body) = server.act(&format!("/v1/journeys/{id}/publish")).await;
    assert_eq!(status, 201, "{body}");
}

/// Create (or update) a contact and send it event `event`.
pub(crate) async fn register(server: &Server, contact: Json, event: &str, plan: &str) {
    let id = contact["id"].as_str().unwrap().to_owned();
    let (status, body) = server.post("/v1/contacts", contact).await;
    assert!(status == 201 || status == 200, "{status} {body}");
    happen(server, &id, event, plan).await;
}

pub(crate) async fn happen(server: &Server, id: &str, event: &str, plan: &str) {
    let timestamp = wayline::model::format_timestamp(server.clock.now());
    let (status, body) = server
        .post(
            "/v1/events",
            json!({"id": format!("{event}-{id}"), "contact_id": id, "name": event,
                   "properties": {"plan": plan}, "timestamp": timestamp}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    server.settle().await;
}

/// The contact's newest message, once its status is `status` (the delivery worker runs on its
/// own; this waits for it, up to 20 s).
pub(crate) async fn message_when(server: &Server, contact_id: &str, status: &str) -> Json {
    for _ in 0..400 {
        let (code, messages) = server
            .get(&format!("/v1/contacts/{contact_id}/messages"))
            .await;
        assert_eq!(code, 200, "{messages}");
        if let Some(message) = messages.as_array().and_then(|m| m.last())
            && message["status"] == status
        {
            let (code, by_id) = server
                .get(&format!("/v1/messages/{}", message["id"].as_str().unwrap()))
                .await;
            assert_eq!(code, 200, "{by_id}");
            return by_id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, messages) = server
        .get(&format!("/v1/contacts/{contact_id}/messages"))
        .await;
    panic!("{contact_id}'s message never became `{status}`: {messages:#}");
}

/// Why the message is where it is: its latest step's detail.
pub(crate) fn last_detail(message: &Json) -> &str {
    message["history"].as_array().unwrap().last().unwrap()["detail"]
        .as_str()
        .unwrap_or_default()
}

pub(crate) fn statuses(message: &Json) -> Vec<String> {
    message["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_rendered_retried_and_accepted_once_and_the_journey_waits_for_it() {
    let server = Server::start(true).await;
    let (base, provider) = provider().await;
    bind(&server, "crm", &base, "/flaky", json!({})).await;
    template(
        &server,
        "greeting",
        json!({"channel": "crm", "subject": "Welcome, {{ first_name | default(\"there\") }}",
               "text": "Hi {{ first_name | default(\"customer\") }}, your plan is {{ plan }}."}),
    )
    .await;
    journey(&server, "greeting", "registered", "crm", "greeting").await;
    register(
        &server,
        json!({"id": "li", "attributes": {"email": "li@example.com", "first_name": "Li"},
               "consents": {"crm": "granted"}}),
        "registered",
        "pro",
    )
    .await;

    // The first try meets a 500: deferred with backoff, not failed.
    let message = message_when(&server, "li", "deferred").await;
    let id = message["id"].as_str().unwrap().to_owned();
    assert_eq!(message["attempts"], 1, "{message:#}");
    assert_eq!(
        message["template_version"], 1,
        "pinned at publish: {message:#}"
    );
    // Retries wait: nothing more is tried before the backoff has passed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(provider.lock().unwrap().requests.len(), 1);
    server.clock.advance(5 * MINUTE);
    // The second meets a 429 asking for two minutes, which the retry honours.
    for _ in 0..400 {
        if provider.lock().unwrap().requests.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = message_when(&server, "li", "deferred").await;
    assert_eq!(message["attempts"], 2, "{message:#}");
    let due = wayline::model::parse_timestamp(message["due_at"].as_str().unwrap()).unwrap();
    assert!(
        due >= server.clock.now() + 2 * MINUTE - 1_000,
        "retry-after honoured: {message:#}"
    );
    server.clock.advance(3 * MINUTE);
    let message = message_when(&server, "li", "sent").await;
    assert_eq!(message["provider_id"], format!("p-{id}"));
    assert_eq!(message["recipient"], "li@example.com");
    assert_eq!(
        statuses(&message),
        [
            "queued", "sending", "deferred", "sending", "deferred", "sending", "sent"
        ],
        "{message:#}"
    );

    {
        let provider = provider.lock().unwrap();
        assert_eq!(provider.requests.len(), 3);
        assert!(
            provider.requests.iter().all(|r| r.key == id),
            "one idempotency key, the message id"
        );
        assert!(
            provider
                .requests
                .iter()
                .all(|r| r.authorization == format!("Bearer {SECRET}"))
        );
        assert_eq!(provider.accepted.len(), 1, "accepted once");
        let body = &provider.accepted[&id];
        let text = body["text"].as_str().unwrap();
        assert!(
            text.starts_with("Hi Li, your plan is pro.\n\nUnsubscribe: http://"),
            "{text}"
        );
        assert_eq!(body["subject"], "Welcome, Li");
        assert_eq!(body["recipient"], "li@example.com");
        assert_eq!(body["class"], "marketing");
    }

    // The delivery is an event on the contact: the journey that waited for it goes on.
    server.settle().await;
    let (_, contact) = server.get("/v1/contacts/li").await;
    let tags: Vec<_> = contact["tags"].as_array().unwrap().iter().collect();
    assert!(tags.contains(&&json!("confirmed")), "{contact:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_people_who_agreed_get_marketing_and_a_bounced_address_gets_nothing_more() {
    let server = Server::start(true).await;
    let (base, provider) = provider().await;
    bind(&server, "crm", &base, "/ok", json!({})).await;
    bind(&server, "bouncy", &base, "/gone", json!({})).await;
    let text = json!({"channel": "crm", "text": "News for {{ first_name | default(\"you\") }}"});
    template(&server, "news", text).await;
    let mut receipt = json!({"channel": "crm", "text": "Your receipt", "transactional": true});
    template(&server, "receipt", receipt.clone()).await;
    receipt["channel"] = json!("bouncy");
    template(&server, "bounce-me", receipt.clone()).await;
    journey(&server, "news", "registered", "crm", "news").await;

    let person = |id: &str, consent: Json| json!({"id": id, "attributes": {"email": format!("{id}@example.com")}, "consents": consent});
    register(&server, person("unasked", json!({})), "registered", "free").await;
    register(
        &server,
        person("declined", json!({"crm": "revoked"})),
        "registered",
        "free",
    )
    .await;
    register(
        &server,
        json!({"id": "noemail", "consents": {"crm": "granted"}}),
        "registered",
        "free",
    )
    .await;
    let unasked = message_when(&server, "unasked", "suppressed").await;
    let reason = last_detail(&unasked);
    assert!(reason.contains("has not consented to `crm`"), "{reason}");
    let declined = message_when(&server, "declined", "suppressed").await;
    let reason = last_detail(&declined);
    assert!(reason.contains("opted out of `crm`"), "{reason}");
    let noemail = message_when(&server, "noemail", "suppressed").await;
    let reason = last_detail(&noemail);
    assert!(reason.contains("no `email`"), "{reason}");
    assert!(
        provider.lock().unwrap().requests.is_empty(),
        "nothing left for them"
    );

    // A transactional message needs no marketing consent: a test send of it arrives, marked
    // as a test, at the test address only.
    let (status, sent) = server
        .post(
            "/v1/templates/receipt/test-send",
            json!({"contact_id": "unasked", "to": "qa@internal.example"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["test"], true);
    let (status, body) = server
        .post(
            "/v1/templates/receipt/test-send",
            json!({"contact_id": "unasked", "to": ""}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_test_send"))
    );
    for _ in 0..400 {
        if !provider.lock().unwrap().accepted.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let provider = provider.lock().unwrap();
        let body = provider
            .accepted
            .values()
            .next()
            .expect("the test send arrived");
        assert_eq!(body["recipient"], "qa@internal.example");
        assert_eq!(body["test"], true);
    }

    // An address the provider does not know bounces, and is suppressed from then on.
    journey(&server, "bounce", "signed-up", "bouncy", "bounce-me").await;
    journey(&server, "bounce-again", "upgraded", "bouncy", "bounce-me").await;
    register(
        &server,
        person("ghost", json!({"bouncy": "granted"})),
        "signed-up",
        "free",
    )
    .await;
    let bounced = message_when(&server, "ghost", "bounced").await;
    assert_eq!(
        statuses(&bounced),
        ["queued", "sending", "bounced"],
        "{bounced:#}"
    );
    happen(&server, "ghost", "upgraded", "pro").await;
    let again = message_when(&server, "ghost", "suppressed").await;
    let reason = last_detail(&again);
    assert!(
        reason.contains("`ghost@example.com` is suppressed on `bouncy`"),
        "{reason}"
    );
    let tries = provider
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.path == "/gone")
        .count();
    assert_eq!(tries, 1, "the bounced address is not tried again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_is_checked_by_its_plugin_and_its_secrets_never_come_back_or_rest_in_clear() {
    let server = Server::start(true).await;
    let (base, _provider) = provider().await;
    let refused = |body: &Json| -> Vec<String> {
        body["error"]["details"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, body) = server
        .put("/v1/channels/email", json!({"plugin": "no-such-plugin"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_channel");
    assert_eq!(refused(&body), ["plugin"]);
    let (status, body) = server
        .put("/v1/channels/email", json!({"plugin": "update-contact"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(refused(&body), ["plugin"], "an action plugin is no channel");
    let (status, body) = server
        .put(
            "/v1/channels/email",
            json!({"plugin": "webhook-channel", "config": {"url": "ftp://x"},
                   "secrets": {"token": {"hosts": [base]}}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        refused(&body),
        ["secrets.token.value", "config.url"],
        "{body}"
    );
    let (status, body) = server
        .put(
            "/v1/channels/email",
            json!({"plugin": "webhook-channel", "config": {"url": format!("{base}/ok")},
                   "approved_hosts": [base], "secrets": {"token": {"value": SECRET, "hosts": ["crm.example.com"]}}}),
        )
        .await;
    assert_eq!(
        status, 422,
        "a secret bound to a target without a scheme: {body}"
    );

    let created = bind(
        &server,
        "sales-crm",
        &base,
        "/ok",
        json!({"rate": {"messages": 20, "per": "1m"}}),
    )
    .await;
    assert_eq!(created["revision"], 1);
    assert_eq!(created["plugin"], "webhook-channel@0.1.0");
    assert_eq!(created["status"], "ok");
    // Changing the binding without sending the secret again keeps it.
    let (status, changed) = server
        .put(
            "/v1/channels/sales-crm",
            json!({"plugin": "webhook-channel", "config": {"url": format!("{base}/ok")},
                   "recipient": "email", "approved_hosts": [base],
                   "secrets": {"token": {"hosts": [base]}}}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["revision"], 2);
    assert_eq!(changed["secrets"]["token"]["set"], true);
    // But sending the stored secret to other hosts takes its value again: whoever may change
    // a binding cannot point a secret they do not know somewhere new.
    let (status, body) = server
        .put(
            "/v1/channels/sales-crm",
            json!({"plugin": "webhook-channel", "config": {"url": format!("{base}/ok")},
                   "approved_hosts": [base, "https://evil.example.com"],
                   "secrets": {"token": {"hosts": [base, "https://evil.example.com"]}}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(refused(&body), ["secrets.token.value"], "{body}");
    for path in ["/v1/channels/sales-crm", "/v1/channels", "/v1/audit"] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.to_string().contains(SECRET),
            "{path} shows the secret: {body}"
        );
    }
    let (status, body) = server.get("/v1/channels/nope").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("channel_not_found"))
    );

    // At rest the secret is sealed: its bytes are nowhere in the store's files.
    server.assert_stored_nowhere(SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_is_versioned_warns_of_missing_fallbacks_and_a_render_that_meets_one_fails() {
    let server = Server::start(true).await;
    let (base, provider) = provider().await;
    bind(&server, "crm", &base, "/ok", json!({})).await;
    let (status, body) = server
        .put(
            "/v1/templates/hello",
            json!({"channel": "crm", "text": "{% if %}"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_template");
    let first = template(
        &server,
        "hello",
        json!({"channel": "crm", "text": "Hello {{ first_name }}"}),
    )
    .await;
    assert_eq!(first["template"]["version"], 1);
    let warnings = first["warnings"].as_array().unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].as_str().unwrap().contains("first_name"),
        "{first}"
    );
    journey(&server, "hello", "registered", "crm", "hello").await;
    let second = template(
        &server,
        "hello",
        json!({"channel": "crm", "text": "Hello {{ first_name | default(\"friend\") }}"}),
    )
    .await;
    assert_eq!(second["template"]["version"], 2);
    assert_eq!(second["warnings"], json!([]));

    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "anon", "attributes": {"email": "a@example.com"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .post("/v1/templates/hello/preview", json!({"contact_id": "anon"}))
        .await;
    assert_eq!(
        (status, body["text"].as_str()),
        (200, Some("Hello friend")),
        "{body}"
    );
    let (status, body) = server
        .post(
            "/v1/templates/hello/preview",
            json!({"contact_id": "anon", "version": 1}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "render_failed");

    // The journey was published with version 1, so its message renders version 1, meets the
    // missing name and fails with why: never "Hello " in an inbox.
    register(
        &server,
        json!({"id": "anon2", "attributes": {"email": "b@example.com"}, "consents": {"crm": "granted"}}),
        "registered",
        "free",
    )
    .await;
    let failed = message_when(&server, "anon2", "failed").await;
    let reason = last_detail(&failed);
    assert!(
        reason.contains("template `hello` v1") && reason.contains("missing"),
        "{reason}"
    );
    assert!(provider.lock().unwrap().requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_never_sends_faster_than_its_rate_and_keeps_the_order() {
    let server = Server::start(true).await;
    let (base, provider) = provider().await;
    bind(
        &server,
        "crm",
        &base,
        "/ok",
        json!({"rate": {"messages": 2, "per": "1m"}}),
    )
    .await;
    template(&server, "news", json!({"channel": "crm", "text": "news"})).await;
    journey(&server, "news", "registered", "crm", "news").await;
    for i in 0..5 {
        register(
            &server,
            json!({"id": format!("r{i}"), "attributes": {"email": format!("r{i}@example.com")},
                   "consents": {"crm": "granted"}}),
            "registered",
            "free",
        )
        .await;
        // A second apart, each step run before the clock moves, so the queue's order is theirs
        // (a step run late would queue its message at a later time).
        server.settle().await;
        server.clock.advance(1_000);
    }
    let sent_count = || provider.lock().unwrap().accepted.len();
    let wait_for = async |n: usize| {
        for _ in 0..400 {
            if sent_count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent_count(), 2, "two in the first minute");
    // Held ones are due a minute after the sends they wait for (a millisecond apart, in order).
    server.clock.advance(MINUTE + 1_000);
    wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent_count(), 4, "two more in the next");
    server.clock.advance(MINUTE + 1_000);
    wait_for(5).await;
    let order: Vec<String> = provider
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|r| r.body["recipient"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order.len(), 5);
    assert_eq!(order, sorted, "in the order they were sent");
}

/// The rate window is kept in the store: binding the channel again (as a restart binds it
/// anew) does not forget the sends of the window, so a provider's limit holds across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_bound_again_remembers_the_sends_of_its_rate_window() {
    let server = Server::start(true).await;
    let (base, provider) = provider().await;
    let rate = json!({"rate": {"messages": 2, "per": "1m"}});
    bind(&server, "crm", &base, "/ok", rate.clone()).await;
    template(&server, "news", json!({"channel": "crm", "text": "news"})).await;
    journey(&server, "news", "registered", "crm", "news").await;
    let contact = |i: usize| {
        json!({"id": format!("w{i}"), "attributes": {"email": format!("w{i}@example.com")},
               "consents": {"crm": "granted"}})
    };
    for i in 0..2 {
        register(&server, contact(i), "registered", "free").await;
        message_when(&server, &format!("w{i}"), "sent").await;
    }
    // Bound again, with the same rate: a new binding, made from what is stored.
    bind(&server, "crm", &base, "/ok", rate).await;
    register(&server, contact(2), "registered", "free").await;
    let held = message_when(&server, "w2", "deferred").await;
    assert!(last_detail(&held).contains("rate"), "{held:#}");
    assert_eq!(
        provider.lock().unwrap().accepted.len(),
        2,
        "two in the minute"
    );
    server.clock.advance(MINUTE + 1_000);
    message_when(&server, "w2", "sent").await;
    assert_eq!(provider.lock().unwrap().accepted.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_that_sends_through_an_unbound_channel_or_a_missing_template_is_not_published() {
    let server = Server::start(true).await;
    let definition = |channel: &str, template: &str| {
        json!({"name": "n", "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "go"}},
            {"id": "tell", "type": "action", "plugin": "update-contact",
             "config": {"send": [{"channel": channel, "template": template}]}}],
            "edges": [{"from": "in", "to": "tell"}]})
    };
    for (channel, template, says) in [
        ("sms", "welcome", "channel `sms`, which is not bound"),
        (
            "email",
            "no-such",
            "template `no-such`, which does not exist",
        ),
    ] {
        let (status, body) = server
            .put("/v1/journeys/n", definition(channel, template))
            .await;
        assert!(status == 201 || status == 200, "{body}");
        let (status, body) = server.act("/v1/journeys/n/publish").await;
        assert_eq!(status, 422, "{body}");
        let problems = body["error"]["details"]["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{body}");
        assert_eq!(problems[0]["node"], "tell");
        assert!(
            problems[0]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    // Both exist (the example `email` channel and `welcome` template): published, pinned.
    server
        .put("/v1/journeys/n", definition("email", "welcome"))
        .await;
    let (status, body) = server.act("/v1/journeys/n/publish").await;
    assert_eq!(status, 201, "{body}");
    let (_, version) = server.get("/v1/journeys/n/versions/1").await;
    assert_eq!(version["templates"]["welcome"], 1, "{version}");
}

/// A message never carries a host placeholder: a contact whose name is `{{secret:token}}`, or a
/// journey node named so, would otherwise get the provider's key into what the plugin sends.
/// The message fails with the reason, and the provider receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_in_a_message_fails_it_and_no_secret_leaves() {
    let (base, provider) = provider().await;
    let server = Server::start(true).await;
    bind(&server, "crm", &base, "/ok", json!({})).await;
    template(
        &server,
        "hello",
        json!({"channel": "crm", "subject": "Hi", "text": "Hi {{ first_name | default('you') }}",
               "transactional": true}),
    )
    .await;
    journey(&server, "hello", "signed-up", "crm", "hello").await;
    register(
        &server,
        json!({"id": "eve", "attributes": {"email": "eve@example.com", "first_name": "{{secret:token}}"}}),
        "signed-up",
        "free",
    )
    .await;
    let failed = message_when(&server, "eve", "failed").await;
    assert!(last_detail(&failed).contains("{{secret:"), "{failed:#}");

    // Not only content: whoever may edit a journey could name a node so, and the node's name
    // travels in the message's metadata, which a plugin may put in what it sends.
    let definition = json!({
        "name": "sneaky", "reentry": "once",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "upgraded"}},
            {"id": "{{secret:token}}", "type": "action", "plugin": "update-contact",
             "config": {"send": {"channel": "crm", "template": "hello"}}}],
        "edges": [{"from": "in", "to": "{{secret:token}}"}]
    });
    let (status, body) = server.put("/v1/journeys/sneaky", definition).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.act("/v1/journeys/sneaky/publish").await;
    assert_eq!(status, 201, "{body}");
    register(
        &server,
        json!({"id": "mallory", "attributes": {"email": "mallory@example.com", "first_name": "Mal"}}),
        "upgraded",
        "pro",
    )
    .await;
    let failed = message_when(&server, "mallory", "failed").await;
    assert!(last_detail(&failed).contains("{{secret:"), "{failed:#}");
    let provider = provider.lock().unwrap();
    assert!(provider.requests.is_empty(), "nothing reached the provider");
}
