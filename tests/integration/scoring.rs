//! Lead scoring through the API: scoring models run on events in the journeys' own commit,
//! every change is kept with its reason, thresholds start journeys once per crossing, decay
//! takes scores back down on the clock, and a scorer swapped for a new version scores the
//! events after the switch.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value as Json, json};

use wayline::clock::Clock;

use crate::server::{Server, TOKEN};
use crate::support;

const DAY: i64 = 86_400_000;

pub(crate) fn example(path: &str) -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub(crate) async fn put_model(server: &Server, name: &str, model: Json) -> Json {
    let (status, body) = server
        .put(&format!("/v1/scoring/models/{name}"), model)
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    body
}

pub(crate) async fn contact(server: &Server, id: &str, attributes: Json) {
    let (status, body) = server
        .post("/v1/contacts", json!({"id": id, "attributes": attributes}))
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

async fn event(server: &Server, id: &str, contact_id: &str, name: &str, properties: Json) {
    let timestamp = wayline::model::format_timestamp(server.clock.now());
    let (status, body) = server
        .post(
            "/v1/events",
            json!({"id": id, "contact_id": contact_id, "name": name, "properties": properties, "timestamp": timestamp}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// White papers numbered `numbers` downloaded by the contact: 20 points each in `lead`.
pub(crate) async fn white_papers(
    server: &Server,
    contact_id: &str,
    numbers: std::ops::Range<usize>,
) {
    for n in numbers {
        let id = format!("{contact_id}-wp{n}");
        event(server, &id, contact_id, "whitepaper_downloaded", json!({})).await;
    }
}

/// The contact's score in `model` as the API shows it now.
async fn score(server: &Server, contact_id: &str, model: &str) -> f64 {
    let (status, body) = server.get(&format!("/v1/contacts/{contact_id}")).await;
    assert_eq!(status, 200, "{body}");
    body["scores"][model]["points"].as_f64().unwrap_or(0.0)
}

async fn history(server: &Server, contact_id: &str) -> Vec<Json> {
    let (status, body) = server
        .get(&format!(
            "/v1/contacts/{contact_id}/score-history?limit=1000"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    body["changes"].as_array().unwrap().clone()
}

/// The contact's `score_threshold_crossed` events, oldest first, as `(threshold, direction)`.
async fn crossings(server: &Server, contact_id: &str) -> Vec<(f64, String)> {
    let (status, body) = server
        .get(&format!("/v1/contacts/{contact_id}/events?limit=1000"))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut found: Vec<(f64, String)> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "score_threshold_crossed")
        .map(|e| {
            (
                e["properties"]["threshold"].as_f64().unwrap(),
                e["properties"]["direction"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.reverse();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_domain_tables_give_their_points_with_reasons() {
    let server = Server::start(true).await;
    put_model(&server, "lead", example("scoring/lead.json")).await;
    put_model(&server, "engagement", example("scoring/engagement.json")).await;
    contact(&server, "li", json!({"company_size": 600})).await;
    contact(&server, "mo", json!({"company_size": 20})).await;
    for (n, (name, properties)) in [
        ("form_submitted", json!({})),
        ("whitepaper_downloaded", json!({})),
        ("page_viewed", json!({"page_type": "product"})),
        ("page_viewed", json!({"page_type": "blog"})),
        ("email_opened", json!({})),
        ("webinar_attended", json!({})),
        ("email_clicked", json!({"link": "pricing"})),
        ("email_clicked", json!({"link": "unsubscribe"})),
        ("contact_sales_requested", json!({})),
        ("email_opened", json!({})),
    ]
    .into_iter()
    .enumerate()
    {
        for who in ["li", "mo"] {
            event(
                &server,
                &format!("{who}-{n}"),
                who,
                name,
                properties.clone(),
            )
            .await;
        }
    }
    server.settle().await;

    // Table one: 10 + 20 + 5 + 3 + 3, and 15 once for a company of 500 or more.
    assert_eq!(score(&server, "li", "lead").await, 56.0);
    assert_eq!(score(&server, "mo", "lead").await, 41.0);
    // Table two, weighted: 5×20% + 10×30% + 8×25% + 15×25%.
    assert_eq!(score(&server, "li", "engagement").await, 9.75);

    let changes = history(&server, "li").await;
    let lead: Vec<(f64, &str)> = changes
        .iter()
        .rev()
        .filter(|c| c["model"] == "lead")
        .map(|c| (c["delta"].as_f64().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lead,
        [
            (10.0, "filled a form"),
            (15.0, "company of 500 or more"),
            (20.0, "downloaded a white paper"),
            (5.0, "viewed a product page"),
            (3.0, "opened an email"),
            (3.0, "opened an email"),
        ]
    );
    let first = changes.last().unwrap();
    assert_eq!(first["event"], "form_submitted");
    assert_eq!(first["event_id"], "li-0");
    assert_eq!(first["score"], 10.0, "the score after the change");
    assert!(
        first["plugin"]
            .as_str()
            .unwrap()
            .starts_with("rule-scorer@"),
        "{first}"
    );
    let pricing = changes
        .iter()
        .find(|c| c["model"] == "engagement" && c["event"] == "email_clicked")
        .unwrap();
    assert_eq!(pricing["delta"], 2.0);
    assert_eq!(pricing["reason"], "email_clicked: 8 × 25%");

    // Newest first, a page at a time.
    let (_, page) = server.get("/v1/contacts/li/score-history?limit=3").await;
    assert_eq!(page["changes"].as_array().unwrap().len(), 3);
    assert_eq!(page["changes"][0]["reason"], "opened an email");
    let next = page["next"].as_str().unwrap();
    let (_, older) = server
        .get(&format!(
            "/v1/contacts/li/score-history?limit=100&before={next}"
        ))
        .await;
    assert_eq!(
        older["changes"].as_array().unwrap().len(),
        changes.len() - 3
    );
    assert!(older.get("next").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actions_score_change_keeps_its_reason_journey_and_node() {
    let server = Server::start(true).await;
    let journey = json!({
        "name": "Webinar points",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "webinar_attended"}},
            {"id": "points", "type": "action", "plugin": "update-contact",
             "config": {"score": {"delta": 10, "reason": "attended webinar"}}}
        ],
        "edges": [{"from": "in", "to": "points"}]
    });
    let (status, body) = server.put("/v1/journeys/webinar", journey).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.act("/v1/journeys/webinar/publish").await;
    assert_eq!(status, 201, "{body}");
    contact(&server, "li", json!({})).await;
    event(&server, "w1", "li", "webinar_attended", json!({})).await;
    server.settle().await;

    let changes = history(&server, "li").await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    let change = &changes[0];
    assert_eq!(change["reason"], "attended webinar");
    assert_eq!(change["delta"], 10.0);
    assert_eq!(change["score"], 10.0);
    assert_eq!(change["journey_id"], "webinar");
    assert_eq!(change["node"], "points");
    assert_eq!(change["event_id"], "w1");
    assert!(change.get("model").is_none(), "{change}");
    assert!(
        change["plugin"]
            .as_str()
            .unwrap()
            .starts_with("update-contact@"),
        "{change}"
    );
}

/// A CRM on 127.0.0.1 that keeps every webhook it is sent.
async fn crm() -> (String, Arc<Mutex<Vec<Json>>>) {
    let log: Arc<Mutex<Vec<Json>>> = Arc::default();
    let app = Router::new()
        .route(
            "/crm",
            post(
                |State(log): State<Arc<Mutex<Vec<Json>>>>, body: Bytes| async move {
                    log.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    axum::Json(json!({"id": "crm-1"}))
                },
            ),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, log)
}

/// The texts the CRM received.
async fn received(server: &Server, log: &Arc<Mutex<Vec<Json>>>, count: usize) -> Vec<String> {
    for _ in 0..500 {
        server.settle().await;
        if log.lock().unwrap().len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    (log.lock().unwrap().iter())
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn publish_example(server: &Server, id: &str) {
    let (status, body) = server
        .put(
            &format!("/v1/journeys/{id}"),
            example(&format!("journeys/{id}.json")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.act(&format!("/v1/journeys/{id}/publish")).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_80_makes_an_mql_once_per_crossing_and_decay_brings_it_back_under() {
    let (crm, log) = crm().await;
    let server = Server::start(true).await;
    let (status, body) = server
        .put(
            "/v1/channels/crm",
            json!({"plugin": "webhook-channel", "config": {"url": format!("{crm}/crm")},
                   "approved_hosts": [crm]}),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    put_model(&server, "lead", example("scoring/lead.json")).await;
    publish_example(&server, "mql").await;
    publish_example(&server, "sales-alert").await;
    contact(
        &server,
        "li",
        json!({"first_name": "Li", "company": "Acme"}),
    )
    .await;

    // Four white papers: 80 points, crossing 40, 70 and 80 in one go.
    white_papers(&server, "li", 0..4).await;
    let texts = received(&server, &log, 1).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].contains("Li (no email) became a marketing-qualified lead: lead score 80"),
        "{texts:?}"
    );
    let (_, li) = server.get("/v1/contacts/li").await;
    assert_eq!(li["lifecycle_stage"], "mql");
    assert!(li["tags"].as_array().unwrap().contains(&json!("mql")));
    let up = |t: f64| (t, "up".to_owned());
    let down = |t: f64| (t, "down".to_owned());
    assert_eq!(
        crossings(&server, "li").await,
        [up(40.0), up(70.0), up(80.0)]
    );

    // Still above 80: no new crossing, no second MQL.
    event(&server, "open1", "li", "email_opened", json!({})).await;
    server.settle().await;
    assert_eq!(score(&server, "li", "lead").await, 83.0);
    assert_eq!(crossings(&server, "li").await.len(), 3);

    // Thirty days on, the points have halved: decay took the score back under 80 and 70, on
    // the scheduler's timers, with no event.
    server.advance(30 * DAY).await;
    server.settle().await;
    assert_eq!(score(&server, "li", "lead").await, 41.5);
    assert_eq!(
        crossings(&server, "li").await,
        [up(40.0), up(70.0), up(80.0), down(80.0), down(70.0)]
    );
    assert_eq!(received(&server, &log, 1).await.len(), 1);

    // Back over 80 is a new crossing: a second MQL; over 90 alerts sales.
    server.advance(60_000).await;
    white_papers(&server, "li", 4..6).await;
    let texts = received(&server, &log, 2).await;
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].contains("lead score 81.5"), "{texts:?}");
    server.advance(60_000).await;
    event(&server, "form", "li", "form_submitted", json!({})).await;
    let texts = received(&server, &log, 3).await;
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(
        texts[2].starts_with("Hot lead: Li (Acme) reached 91.5 points in lead"),
        "{texts:?}"
    );
    assert_eq!(
        crossings(&server, "li").await[5..],
        [up(70.0), up(80.0), up(90.0)]
    );
}

/// The `stamp-scorer` fixture at `version` (`1.0.0` as built; `2.0.0` rewritten).
fn stamp_scorer_at(version: &str) -> Vec<u8> {
    let mut bytes = support::fixture_bytes("stamp-scorer");
    let marker = b"wayline-fixture-version:1.0.0";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the fixture carries its version marker");
    bytes[at + 24..at + 29].copy_from_slice(version.as_bytes());
    bytes
}

/// A server with the `hostile-scorer` fixture uploaded.
async fn with_hostile_scorer() -> Server {
    let server = Server::start(true).await;
    let binary = support::fixture_bytes("hostile-scorer");
    upload(&server, "hostile-scorer", binary).await;
    server
}

/// Upload `binary` as plugin `name` through the admin API.
async fn upload(server: &Server, name: &str, binary: Vec<u8>) {
    let response = server
        .client
        .put(format!("{}/v1/admin/plugins/{name}", server.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/wasm")
        .body(binary)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scorer_swapped_for_a_new_version_scores_what_comes_after_and_history_names_it() {
    let server = Server::start(true).await;
    upload(&server, "stamp-scorer", stamp_scorer_at("1.0.0")).await;
    upload(&server, "stamp-scorer", stamp_scorer_at("2.0.0")).await;
    let model = |plugin: &str| json!({"plugin": plugin, "events": ["ping"]});
    put_model(&server, "stamp", model("stamp-scorer@1.0.0")).await;
    contact(&server, "li", json!({})).await;
    event(&server, "p1", "li", "ping", json!({})).await;
    server.settle().await;
    let (status, body) = server
        .put("/v1/scoring/models/stamp", model("stamp-scorer@2.0.0"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revision"], 2);
    event(&server, "p2", "li", "ping", json!({})).await;
    server.settle().await;

    let changes = history(&server, "li").await;
    let seen: Vec<(&str, &str, f64)> = changes
        .iter()
        .rev()
        .map(|c| {
            (
                c["event_id"].as_str().unwrap(),
                c["plugin"].as_str().unwrap(),
                c["delta"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("p1", "stamp-scorer@1.0.0", 1.0),
            ("p2", "stamp-scorer@2.0.0", 2.0)
        ]
    );
    assert_eq!(score(&server, "li", "stamp").await, 3.0);
    // The version a model runs cannot be deleted from under it; the one it left can.
    let (status, body) = server
        .send(
            reqwest::Method::DELETE,
            "/v1/admin/plugins/stamp-scorer/2.0.0",
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["details"]["used_by"][0]
            .as_str()
            .unwrap()
            .contains("scoring model stamp")
    );
    let (status, body) = server
        .send(
            reqwest::Method::DELETE,
            "/v1/admin/plugins/stamp-scorer/1.0.0",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_checked_field_by_field_and_nothing_is_stored_on_refusal() {
    let server = Server::start(true).await;
    let (status, body) = server
        .put(
            "/v1/scoring/models/Bad Name",
            json!({"plugin": "update-contact", "events": [], "half_life": "5m",
                   "thresholds": [90, 80, null]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = server
        .put(
            "/v1/scoring/models/bad",
            json!({"plugin": "update-contact", "events": ["score_threshold_crossed", ""],
                   "half_life": "5m", "thresholds": [90, 80]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_scoring_model");
    let paths: Vec<&str> = body["error"]["details"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "events.0",
            "events.1",
            "half_life",
            "thresholds.1",
            "plugin"
        ],
        "{body}"
    );
    let (status, body) = server
        .put(
            "/v1/scoring/models/bad",
            json!({"plugin": "rule-scorer", "events": ["x"], "config": {"rules": [{"points": 1}]}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["details"]["problems"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("config"),
        "{body}"
    );
    let (_, models) = server.get("/v1/scoring/models").await;
    assert_eq!(models["models"], json!([]));
    let (status, body) = server.get("/v1/scoring/models/bad").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "scoring_model_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_scorer_fails_only_its_own_model() {
    let server = with_hostile_scorer().await;
    for mode in ["spin", "panic", "huge-output"] {
        let model = json!({"plugin": "hostile-scorer", "config": {"mode": mode}, "events": ["form_submitted"]});
        put_model(&server, mode, model).await;
    }
    put_model(&server, "lead", example("scoring/lead.json")).await;
    let journey = json!({
        "name": "Tag on form",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "form_submitted"}},
            {"id": "tag", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["asked"]}}
        ],
        "edges": [{"from": "in", "to": "tag"}]
    });
    crate::journeys::publish(&server, "tag", journey).await;
    contact(&server, "li", json!({})).await;
    event(&server, "f1", "li", "form_submitted", json!({})).await;
    server.settle().await;

    // The good model scored and the journey ran; the others changed nothing.
    let (_, li) = server.get("/v1/contacts/li").await;
    assert_eq!(li["tags"], json!(["asked"]), "{li}");
    let scores: Vec<&String> = li["scores"].as_object().unwrap().keys().collect();
    assert_eq!(scores, ["lead"], "{li}");
    let changes = history(&server, "li").await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    let (_, models) = server.get("/v1/scoring/models").await;
    for model in models["models"].as_array().unwrap() {
        let failed = model["stats"]["failed_calls"].as_u64().unwrap();
        let expected = u64::from(model["name"] != "lead");
        assert_eq!(failed, expected, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_whose_decay_falls_due_together_each_hear_of_their_own_crossing() {
    let server = Server::start(true).await;
    put_model(&server, "lead", example("scoring/lead.json")).await;
    let ids = ["ann", "ben", "cat"];
    for id in ids {
        contact(&server, id, json!({})).await;
    }
    // The same points at the same moment: the same decay, the same timer due time.
    for n in 0..4 {
        for id in ids {
            event(
                &server,
                &format!("{id}-wp{n}"),
                id,
                "whitepaper_downloaded",
                json!({}),
            )
            .await;
        }
    }
    server.settle().await;
    // 80 halves to 40.9 in 29 days: under 80 and 70, not yet under 40.
    server.advance(29 * DAY).await;
    for id in ids {
        let down: Vec<f64> = (crossings(&server, id).await.into_iter())
            .filter(|(_, direction)| direction == "down")
            .map(|(threshold, _)| threshold)
            .collect();
        assert_eq!(down, [80.0, 70.0], "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_thresholds_count_from_where_the_score_stands_announcing_nothing_it_did_not_cross() {
    let server = Server::start(true).await;
    put_model(&server, "lead", example("scoring/lead.json")).await;
    contact(&server, "li", json!({})).await;
    white_papers(&server, "li", 0..5).await;
    server.settle().await;
    assert_eq!(crossings(&server, "li").await.len(), 4, "40, 70, 80, 90 up");
    // Fewer thresholds than the score had reached, one of them below it and one above.
    let mut model = example("scoring/lead.json");
    model["thresholds"] = json!([50, 105]);
    put_model(&server, "lead", model).await;
    server.advance(60_000).await;
    event(&server, "open1", "li", "email_opened", json!({})).await;
    server.settle().await;
    assert_eq!(
        score(&server, "li", "lead").await,
        103.0,
        "100 a minute ago, +3"
    );
    assert_eq!(
        crossings(&server, "li").await.len(),
        4,
        "nothing new was crossed"
    );
    server.advance(60_000).await;
    event(&server, "open2", "li", "email_opened", json!({})).await;
    server.settle().await;
    assert_eq!(
        crossings(&server, "li").await[4..],
        [(105.0, "up".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verbose_scorer_within_its_bounds_never_fails_the_event() {
    let server = Server::start(true).await;
    // Three models, 40 changes each with a 1,000-byte reason: more than one stored record
    // holds, all for one event.
    let rules: Vec<Json> = (0..40)
        .map(|n| json!({"event": "ping", "points": 1, "reason": format!("{n:03}{}", "r".repeat(997))}))
        .collect();
    for name in ["a", "b", "c"] {
        let model =
            json!({"plugin": "rule-scorer", "config": {"rules": rules}, "events": ["ping"]});
        put_model(&server, name, model).await;
    }
    contact(&server, "li", json!({})).await;
    event(&server, "p1", "li", "ping", json!({})).await;
    server.settle().await;
    for name in ["a", "b", "c"] {
        assert_eq!(score(&server, "li", name).await, 40.0, "{name}");
    }
    let changes = history(&server, "li").await;
    assert_eq!(changes.len(), 120);
    // Newest first: the last change of the last model first.
    assert_eq!(changes[0]["model"], "c");
    assert!(changes[0]["reason"].as_str().unwrap().starts_with("039"));
    assert!(changes[119]["reason"].as_str().unwrap().starts_with("000"));
}

/// A visitor scored, went quiet, and turns out to be a known lead (a Segment `alias`): the
/// person's score is the sum of the two as they stand at the merge, decay included, and the
/// thresholds that sum crossed are announced at once; the visitor's history is the lead's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_adds_scores_as_they_stand_and_announces_what_the_sum_crossed() {
    let server = Server::start(true).await;
    put_model(&server, "lead", example("scoring/lead.json")).await;
    contact(&server, "visitor", json!({})).await;
    white_papers(&server, "visitor", 0..2).await;
    server.settle().await;
    // Thirty days on the visitor's 40 points are 20.
    server.advance(30 * DAY).await;
    contact(&server, "known", json!({})).await;
    white_papers(&server, "known", 0..3).await;
    event(&server, "known-open", "known", "email_opened", json!({})).await;
    server.settle().await;
    assert_eq!(score(&server, "known", "lead").await, 63.0);
    server.advance(60_000).await;

    let alias = json!({"previousId": "visitor", "userId": "known", "messageId": "alias-1"});
    let (status, body) = server
        .segment("/v1/alias", crate::server::WRITE_KEY, alias)
        .await;
    assert_eq!(status, 200, "{body}");
    server.settle().await;
    server.advance(1).await;

    // 63 + 20, not 63 + 40: a merge does not bring back points that decayed.
    assert_eq!(score(&server, "known", "lead").await, 83.0);
    // The visitor's own crossings (40 up, then down by decay) came along with its events; the
    // merge's are the last, and 90 was never crossed.
    let all = crossings(&server, "known").await;
    assert_eq!(
        all[all.len() - 2..],
        [(70.0, "up".to_owned()), (80.0, "up".to_owned())],
        "{all:?}"
    );
    assert!(
        all.iter().all(|(threshold, _)| *threshold < 90.0),
        "{all:?}"
    );
    let changes = history(&server, "known").await;
    let from_visitor = (changes.iter())
        .filter(|c| c["event_id"].as_str().unwrap().starts_with("visitor-"))
        .count();
    assert_eq!(from_visitor, 2, "{changes:?}");
}

/// A scorer that fails every call is suspended after 20 in a row, so it stops costing the
/// events it selects; putting the model again resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scorer_failing_every_call_is_suspended_until_put_again() {
    let server = with_hostile_scorer().await;
    let model =
        json!({"plugin": "hostile-scorer", "config": {"mode": "panic"}, "events": ["ping"]});
    put_model(&server, "broken", model.clone()).await;
    contact(&server, "li", json!({})).await;
    for n in 0..25 {
        event(&server, &format!("p{n}"), "li", "ping", json!({})).await;
    }
    server.settle().await;
    let (_, broken) = server.get("/v1/scoring/models/broken").await;
    assert_eq!(broken["stats"]["failed_calls"], 20, "{broken}");
    assert_eq!(broken["status"], "unavailable", "{broken}");
    assert!(
        broken["problem"]
            .as_str()
            .unwrap()
            .starts_with("suspended after 20 failed calls"),
        "{broken}"
    );
    let (status, body) = server.put("/v1/scoring/models/broken", model).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    event(&server, "p-again", "li", "ping", json!({})).await;
    server.settle().await;
    let (_, broken) = server.get("/v1/scoring/models/broken").await;
    assert_eq!(
        broken["stats"]["failed_calls"], 21,
        "it is called again: {broken}"
    );
}
