//! Moving a running journey to a new version of its plugin and back (activation and rollback)
//! through `POST /v1/journeys/{id}/plugins`: no step fails while events flow, the steps after
//! each move — of contacts who entered before it too — run the version moved to, and a move the
//! new version's config check refuses changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::server::Server;
use crate::support;

const HOUR: i64 = 3_600_000;

/// The `stamp-action` fixture at `version` (`1.0.0` as built; `2.0.0` rewritten): it writes
/// the version it is into the attribute its config names.
pub(crate) fn stamp_at(version: &str) -> Vec<u8> {
    let mut bytes = support::fixture_bytes("stamp-action");
    let marker = b"wayline-fixture-version:1.0.0";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the fixture carries its version marker");
    assert_eq!(version.len(), 5, "versions of the marker's length");
    bytes[at + 24..at + 29].copy_from_slice(version.as_bytes());
    bytes
}

async fn upload(server: &Server, binary: Vec<u8>) {
    let response = server
        .client
        .put(format!("{}/v1/admin/plugins/stamp-action", server.base))
        .bearer_auth(crate::server::TOKEN)
        .header("content-type", "application/wasm")
        .body(binary)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

/// A ping stamps the contact (`first`), an hour later again (`second`).
fn stamped_journey(legacy: bool) -> Json {
    json!({
        "name": "Stamped",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "ping"}},
            {"id": "first", "type": "action", "plugin": "stamp-action@1.0.0",
             "config": {"attribute": "first", "legacy": legacy}},
            {"id": "hold", "type": "wait", "delay": "1h"},
            {"id": "second", "type": "action", "plugin": "stamp-action@1.0.0",
             "config": {"attribute": "second"}}
        ],
        "edges": [{"from": "in", "to": "first"}, {"from": "first", "to": "hold"},
                  {"from": "hold", "to": "second"}]
    })
}

async fn ping(server: &Server, contacts: &[String]) {
    let now = wayline::clock::Clock::now(&server.clock);
    let events: Vec<Json> = contacts
        .iter()
        .map(|c| {
            json!({"id": format!("ping-{c}"), "contact_id": c, "name": "ping",
                        "timestamp": now})
        })
        .collect();
    let (status, body) = server.post("/v1/events", json!(events)).await;
    assert!(status == 200 || status == 202, "{status} {body}");
}

fn named(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}-{n}")).collect()
}

/// Each contact's `attribute`, once every one of them has it (the flow of other events keeps
/// the scheduler from ever settling, so this waits for the contacts themselves).
async fn stamps(server: &Server, contacts: &[String], attribute: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = Vec::new();
    for contact in contacts {
        loop {
            let (status, body) = server.get(&format!("/v1/contacts/{contact}")).await;
            if status == 200
                && let Some(stamp) = body["attributes"][attribute].as_str()
            {
                found.push(stamp.to_owned());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{contact} has no `{attribute}`: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    found
}

async fn move_to(server: &Server, journey: &str, plugin: &str) -> (u16, Json) {
    server
        .post(
            &format!("/v1/journeys/{journey}/plugins"),
            json!({ "plugin": plugin }),
        )
        .await
}

fn all(stamps: &[String], version: &str) -> bool {
    !stamps.is_empty() && stamps.iter().all(|s| s == version)
}

/// While a stream of events runs through a journey, its action moves to 2.0.0 and back to
/// 1.0.0. No step fails; contacts who come after a move are stamped by the version moved to,
/// and so is the next step of contacts who entered before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_activated_and_rolled_back_while_events_flow() {
    let server = Arc::new(Server::start(true).await);
    upload(&server, stamp_at("1.0.0")).await;
    upload(&server, stamp_at("2.0.0")).await;
    crate::journeys::publish(&server, "stamped", stamped_journey(false)).await;

    // The flow: batches of new contacts, all the while.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    // How many the flow has sent, told after each batch.
    let (progress, mut sent_so_far) = tokio::sync::watch::channel(0usize);
    let flow = {
        let (server, stop, sent) = (server.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let first = sent.load(Ordering::Relaxed);
                let batch: Vec<String> = (first..first + 10).map(|n| format!("flow-{n}")).collect();
                ping(&server, &batch).await;
                let total = sent.fetch_add(batch.len(), Ordering::Relaxed) + batch.len();
                progress.send_replace(total);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };

    let early = named("early", 20);
    ping(&server, &early).await;
    assert!(all(&stamps(&server, &early, "first").await, "1.0.0"));

    let (status, moved) = move_to(&server, "stamped", "stamp-action@2.0.0").await;
    // Flow contacts from this one on were sent after the move answered (a batch of 10 may
    // have been on its way).
    let after_move = sent.load(Ordering::Relaxed) + 10;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (
            &moved["from"],
            &moved["to"],
            &moved["versions"],
            &moved["changed"]
        ),
        (
            &json!("stamp-action@1.0.0"),
            &json!("stamp-action@2.0.0"),
            &json!([1]),
            &json!(true)
        ),
        "{moved}"
    );
    let middle = named("middle", 20);
    ping(&server, &middle).await;
    let stamped = stamps(&server, &middle, "first").await;
    assert!(all(&stamped, "2.0.0"), "after the move: {stamped:?}");
    // Those who entered on 1.0.0 take their next step on 2.0.0.
    server.clock.advance(HOUR);
    let stamped = stamps(&server, &early, "second").await;
    assert!(
        all(&stamped, "2.0.0"),
        "the step after the move: {stamped:?}"
    );
    assert!(all(&stamps(&server, &middle, "second").await, "2.0.0"));
    // These enter on 2.0.0 and wait through the rollback.
    let waiting = named("waiting", 20);
    ping(&server, &waiting).await;
    assert!(all(&stamps(&server, &waiting, "first").await, "2.0.0"));

    // Every flow contact sent after the move answered ran the new version (waited for before
    // the rollback, so none of them can have run after it). On a busy machine the flow may
    // not have sent a whole batch since the move yet: wait for one.
    let flowed = sent_so_far.wait_for(|total| *total >= after_move + 10);
    tokio::time::timeout(Duration::from_secs(60), flowed)
        .await
        .expect("the flow sends a batch within a minute")
        .expect("the flow runs until stopped");
    let between: Vec<String> = (after_move..sent.load(Ordering::Relaxed))
        .map(|n| format!("flow-{n}"))
        .collect();
    assert!(!between.is_empty(), "the flow ran between the moves");
    let stamped = stamps(&server, &between, "first").await;
    assert!(all(&stamped, "2.0.0"), "flow after the move: {stamped:?}");
    let (status, back) = move_to(&server, "stamped", "stamp-action@1.0.0").await;
    assert_eq!(
        (status, &back["from"]),
        (200, &json!("stamp-action@2.0.0")),
        "{back}"
    );
    let late = named("late", 20);
    ping(&server, &late).await;
    let stamped = stamps(&server, &late, "first").await;
    assert!(all(&stamped, "1.0.0"), "after the rollback: {stamped:?}");
    server.clock.advance(HOUR);
    let stamped = stamps(&server, &waiting, "second").await;
    assert!(
        all(&stamped, "1.0.0"),
        "the step after the rollback: {stamped:?}"
    );
    assert!(all(&stamps(&server, &late, "second").await, "1.0.0"));

    stop.store(true, Ordering::Relaxed);
    flow.await.unwrap();
    server.advance(HOUR).await;
    let flowed = named("flow", sent.load(Ordering::Relaxed));
    assert!(
        flowed.len() >= 30,
        "the flow ran through the moves: {}",
        flowed.len()
    );
    for attribute in ["first", "second"] {
        let stamped = stamps(&server, &flowed, attribute).await;
        assert!(
            stamped.iter().all(|s| s == "1.0.0" || s == "2.0.0"),
            "{attribute}: {stamped:?}"
        );
    }
    let journeys = server.get("/v1/journeys").await.1;
    let counts = &journeys
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "stamped")
        .unwrap()["counts"];
    let stats = server.get("/v1/journeys/stamped/stats").await.1;
    let retried: i64 = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["counts"]["retried"].as_i64())
        .sum();
    assert_eq!(retried, 0, "no step was retried: {stats}");
    let letters = server.get("/v1/dead-letters").await.1;
    assert_eq!(letters["dead_letters"], json!([]), "{letters}");
    let everyone = (flowed.len() + early.len() + middle.len() + waiting.len() + late.len()) as i64;
    assert_eq!(
        (&counts["failed"], &counts["completed"]),
        (&json!(0), &json!(everyone)),
        "{counts}"
    );

    // Both moves are in the audit log with who, before and after.
    let (_, record) = server.get("/v1/journeys/stamped").await;
    assert_eq!(
        record["plugin_versions"]["stamp-action"]["id"], "stamp-action@1.0.0",
        "{record}"
    );
    let audit = server
        .get("/v1/audit?action=journey.plugin_move&object=stamped")
        .await
        .1;
    let moves: Vec<(&Json, &Json)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                &e["detail"]["before"]["plugin"],
                &e["detail"]["after"]["plugin"],
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            (&json!("stamp-action@2.0.0"), &json!("stamp-action@1.0.0")),
            (&json!("stamp-action@1.0.0"), &json!("stamp-action@2.0.0")),
        ],
        "{audit}"
    );
}

/// A move is checked before anything changes: a version that refuses a config the journey
/// gives it, a version not loaded, a plugin the journey does not run, a name without a version.
/// Each has its code, and the journey keeps running what it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_the_new_version_cannot_take_is_refused_and_changes_nothing() {
    let server = Server::start(true).await;
    upload(&server, stamp_at("1.0.0")).await;
    upload(&server, stamp_at("2.0.0")).await;
    crate::journeys::publish(&server, "legacy", stamped_journey(true)).await;

    let (status, body) = move_to(&server, "legacy", "stamp-action@2.0.0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("plugin_refused_config")),
        "{body}"
    );
    let problem = &body["error"]["details"]["problems"][0];
    assert_eq!(problem["version"], 1, "{body}");
    let message = problem["message"].as_str().unwrap();
    assert!(
        message.contains("first") && message.contains("legacy stamps are gone"),
        "{message}"
    );
    for (plugin, status, code) in [
        ("stamp-action@9.9.9", 422, "plugin_not_loaded"),
        ("attribute-condition@0.1.0", 422, "plugin_not_used"),
        ("stamp-action", 422, "invalid_journey"),
    ] {
        let (got, body) = move_to(&server, "legacy", plugin).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{plugin}: {body}"
        );
    }
    let (status, body) = move_to(&server, "nowhere", "stamp-action@2.0.0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("journey_not_found"))
    );
    let (status, body) = server
        .post(
            "/v1/journeys/legacy/plugins",
            json!({"plugin": "stamp-action@2.0.0", "force": true}),
        )
        .await;
    assert_eq!(status, 422, "an unknown field is refused: {body}");

    let (_, record) = server.get("/v1/journeys/legacy").await;
    assert!(record.get("plugin_versions").is_none(), "{record}");
    let audit = server.get("/v1/audit?action=journey.plugin_move").await.1;
    assert_eq!(audit["audit"], json!([]), "{audit}");
    ping(&server, &["still".to_owned()]).await;
    server.settle().await;
    assert_eq!(
        stamps(&server, &["still".to_owned()], "first").await,
        ["1.0.0"]
    );
}

/// A version no journey runs any more, once they all moved off it, can be deleted, though
/// their versions still pin it; moving back to it is then refused, as it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_every_journey_moved_off_can_be_deleted() {
    let server = Server::start(true).await;
    upload(&server, stamp_at("1.0.0")).await;
    upload(&server, stamp_at("2.0.0")).await;
    crate::journeys::publish(&server, "stamped", stamped_journey(false)).await;
    let delete = |version: &'static str| {
        let server = &server;
        async move {
            server
                .send(
                    reqwest::Method::DELETE,
                    &format!("/v1/admin/plugins/stamp-action/{version}"),
                    None,
                )
                .await
        }
    };
    let (status, body) = delete("1.0.0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("plugin_in_use")),
        "{body}"
    );
    let (status, body) = delete("2.0.0").await;
    assert_eq!(status, 200, "2.0.0 is not used yet: {body}");
    upload(&server, stamp_at("2.0.0")).await;

    let (status, body) = move_to(&server, "stamped", "stamp-action@2.0.0").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = delete("2.0.0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("plugin_in_use")),
        "{body}"
    );
    let (status, body) = delete("1.0.0").await;
    assert_eq!(status, 200, "no journey runs 1.0.0 now: {body}");
    let (status, body) = move_to(&server, "stamped", "stamp-action@1.0.0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("plugin_not_loaded"))
    );
    ping(&server, &["after".to_owned()]).await;
    server.settle().await;
    assert_eq!(
        stamps(&server, &["after".to_owned()], "first").await,
        ["2.0.0"]
    );
}
