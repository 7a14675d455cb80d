//! What guards and records the admin's work: the audit log as an operator asks it (who
//! changed what, when), and each token's rate on the admin and ingest routes.

use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::roles::{code, token};
use crate::server::Server;

/// The audit log answers who changed what and when: by time range, actor, action and object,
/// newest first, a page at a time.
#[tokio::test]
async fn the_audit_log_is_queried_by_time_actor_action_and_object_a_page_at_a_time() {
    let server = Server::start(false).await;
    let start = wayline::clock::Clock::now(&server.clock);
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        server.clock.advance(3_600_000);
        ids.push(token(&server, name, "analyst", &[]).await.1);
    }
    let (second_admin, second_id) = token(&server, "second admin", "admin", &[]).await;
    let path = format!("/v1/admin/tokens/{}", ids[0]);
    let (status, _) = server
        .send_as(&second_admin, Method::DELETE, &path, None)
        .await;
    assert_eq!(status, 200);
    let server = &server;
    let query = |q: &str| {
        let path = format!("/v1/audit?{q}");
        async move { server.get(&path).await }
    };
    let objects = |page: &Json| -> Vec<String> {
        page["audit"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["action"].as_str().unwrap(),
                    e["object"].as_str().unwrap()
                )
            })
            .collect()
    };

    let (_, by_second) = query(&format!("actor={second_id}")).await;
    assert_eq!(objects(&by_second), [format!("token.revoke {}", ids[0])]);
    let (_, about_first) = query(&format!("object={}", ids[0])).await;
    assert_eq!(
        objects(&about_first),
        [
            format!("token.revoke {}", ids[0]),
            format!("token.create {}", ids[0])
        ]
    );

    // Five creations (the bootstrap token's included), two a page, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for pages in 1.. {
        let (status, page) = query(&format!("action=token.create&limit=2{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(objects(&page));
        match page["next"].as_str() {
            Some(next) => cursor = format!("&before={next}"),
            None => {
                assert_eq!(pages, 3, "{page}");
                break;
            }
        }
    }
    let created: Vec<String> = [
        second_id.clone(),
        ids[2].clone(),
        ids[1].clone(),
        ids[0].clone(),
    ]
    .into_iter()
    .map(|id| format!("token.create {id}"))
    .collect();
    assert_eq!(seen[..4], created[..], "{seen:?}");
    assert_eq!(seen.len(), 5, "{seen:?}");

    // The first hour only: the bootstrap token and the first analyst's.
    let until = wayline::model::format_timestamp(start + 3_600_000);
    let (_, early) = query(&format!("action=token.create&until={until}")).await;
    assert_eq!(objects(&early).len(), 2, "{early}");
    let since = wayline::model::format_timestamp(start + 2 * 3_600_000);
    let (_, late) = query(&format!("action=token.create&since={since}")).await;
    assert_eq!(objects(&late).len(), 3, "{late}");

    for bad in ["since=yesterday", "before=zz", "limit=many", "who=me"] {
        let (status, body) = query(bad).await;
        assert_eq!(
            (status, code(&body)),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }
}

/// Each token has its own rate on the admin routes and on ingest: past its burst it gets
/// `429 rate_limited` with `Retry-After`, while another token, and the other kind of route,
/// carry on. (Bursts of 3 here, refilled too slowly to matter within the test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_its_rate_is_refused_and_no_other_is() {
    let slow = wayline::api::Rate {
        per_second: 0.001,
        burst: 3.0,
    };
    let server = Server::start_within(wayline::api::HttpEdges {
        admin_rate: slow,
        ingest_rate: slow,
        ..Default::default()
    })
    .await;
    let (first, _) = token(&server, "first", "ingest", &[]).await;
    let (second, _) = token(&server, "second", "ingest", &[]).await;
    let event = |n: usize| json!({"id": format!("e-{n}"), "contact_id": "u-1", "name": "ping", "timestamp": "2026-11-22T09:00:00Z"});
    for n in 0..3 {
        let (status, body) = server
            .send_as(&first, Method::POST, "/v1/events", Some(event(n)))
            .await;
        assert!(status < 300, "{status} {body}");
    }
    let response = server
        .client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&first)
        .json(&event(3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let body: Json = response.json().await.unwrap();
    assert_eq!(code(&body), Some("rate_limited"), "{body}");
    // The refused event was not recorded; the other token and reading are unaffected.
    let (status, body) = server
        .send_as(&second, Method::POST, "/v1/events", Some(event(3)))
        .await;
    assert!(status < 300, "{status} {body}");
    let (status, body) = server
        .send_as(&second, Method::POST, "/v1/events", Some(event(3)))
        .await;
    assert_eq!(body["results"][0]["status"], "duplicate", "{status} {body}");
    // Segment ingest with the same token counts against the same rate.
    let track = json!({"userId": "u-1", "event": "ping", "messageId": "m-1"});
    assert_eq!(server.segment("/v1/track", &first, track).await.0, 429);
    for _ in 0..5 {
        assert_eq!(server.get("/v1/journeys").await.0, 200);
    }
    // The admin's own rate: two tokens made above, one more, then refused.
    assert_eq!(token(&server, "third", "analyst", &[]).await.1.len(), 20);
    let (status, body) = server
        .post(
            "/v1/admin/tokens",
            json!({"name": "fourth", "role": "analyst"}),
        )
        .await;
    assert_eq!((status, code(&body)), (429, Some("rate_limited")), "{body}");
}

/// Every change to a journey — created, draft saved, published, paused, resumed, archived — is
/// in the audit log, named by the token that made it, with what it was before and after.
#[tokio::test]
async fn every_journey_change_is_in_the_audit_log_with_who_did_it() {
    let server = Server::start(true).await;
    let (manager, manager_id) = token(&server, "mia", "manager", &["delete_journeys"]).await;
    let draft = |name: &str| {
        json!({"name": name, "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "ping"}},
            {"id": "out", "type": "exit"}],
            "edges": [{"from": "in", "to": "out"}]})
    };
    let steps = [
        (Method::PUT, "/v1/journeys/watched", Some(draft("First"))),
        (Method::PUT, "/v1/journeys/watched", Some(draft("Second"))),
        (Method::POST, "/v1/journeys/watched/publish", None),
        (Method::POST, "/v1/journeys/watched/pause", None),
        (Method::POST, "/v1/journeys/watched/resume", None),
        (Method::POST, "/v1/journeys/watched/archive", None),
    ];
    for (method, path, body) in steps {
        let (status, answer) = server.send_as(&manager, method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
    }
    let audit = server.get("/v1/audit?object=watched").await.1;
    let entries: Vec<&Json> = audit["audit"].as_array().unwrap().iter().rev().collect();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "journey.create",
            "journey.draft",
            "journey.publish",
            "journey.pause",
            "journey.resume",
            "journey.archive"
        ],
        "{audit}"
    );
    assert!(
        entries.iter().all(|e| e["actor"] == manager_id.as_str()),
        "{audit}"
    );
    let saved = &entries[1]["detail"];
    assert_eq!(
        (
            &saved["before"]["draft"]["name"],
            &saved["after"]["draft"]["name"]
        ),
        (&json!("First"), &json!("Second")),
        "{saved}"
    );
    let paused = &entries[3]["detail"];
    assert_eq!(
        (&paused["before"]["status"], &paused["after"]["status"]),
        (&json!("active"), &json!("paused")),
        "{paused}"
    );
    assert_eq!(entries[2]["detail"]["version"], 1, "{audit}");
}

/// A journey draft of tens of KiB saved over another: the save succeeds, and the audit log
/// keeps the change's size and SHA-256 where its particulars would not fit in one entry.
#[tokio::test]
async fn a_change_too_large_to_audit_whole_is_saved_and_audited_by_its_size() {
    let server = Server::start(true).await;
    let draft = |words: &str| {
        json!({"name": "Long", "description": words.repeat(4_500), "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "ping"}},
            {"id": "out", "type": "exit"}],
            "edges": [{"from": "in", "to": "out"}]})
    };
    for words in ["first draft ", "second one! "] {
        let (status, answer) = server.put("/v1/journeys/long", draft(words)).await;
        assert!((200..300).contains(&status), "{status} {answer}");
    }
    let saved = server.get("/v1/journeys/long").await.1;
    assert!(
        saved["draft"]["description"]
            .as_str()
            .unwrap()
            .starts_with("second one! "),
        "{saved}"
    );
    let audit = server.get("/v1/audit?object=long").await.1;
    let entries = audit["audit"].as_array().unwrap();
    let changed = entries
        .iter()
        .find(|e| e["action"] == "journey.draft")
        .unwrap_or_else(|| panic!("{audit}"));
    let omitted = changed["detail"]["omitted"].as_str().unwrap_or_default();
    assert!(
        omitted.ends_with("more than an audit entry keeps"),
        "{changed}"
    );
    assert_eq!(
        changed["detail"]["sha256"].as_str().map(str::len),
        Some(64),
        "{changed}"
    );
}
