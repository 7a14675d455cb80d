//! A manager's view of journeys: the listing with each one's status and counts, and what
//! changed between two published versions.

use serde_json::{Value as Json, json};

use crate::journeys::publish;
use crate::server::Server;

fn tagging(tag: &str, wait: &str) -> Json {
    json!({
        "name": "Tagging",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "signed_up"}},
            {"id": "tag", "type": "action", "plugin": "update-contact", "config": {"add_tags": [tag]}},
            {"id": "hold", "type": "wait", "delay": wait}
        ],
        "edges": [{"from": "in", "to": "tag"}, {"from": "tag", "to": "hold"}]
    })
}

async fn sign_up(server: &Server, contact: &str) {
    let (status, body) = server
        .post(
            "/v1/events",
            json!({"id": format!("e-{contact}"), "contact_id": contact, "name": "signed_up", "timestamp": "2026-11-22T09:00:00Z"}),
        )
        .await;
    assert!(status < 300, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_counts_each_journey_and_a_diff_shows_what_a_new_version_changed() {
    let server = Server::start(true).await;
    publish(&server, "tagging", tagging("new", "1h")).await;
    sign_up(&server, "a").await;
    sign_up(&server, "b").await;
    server.settle().await;
    // Version 2 tags differently and waits longer, and adds a node.
    let mut second = tagging("fresh", "2h");
    second["nodes"].as_array_mut().unwrap().push(
        json!({"id": "done", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["held"]}}),
    );
    second["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "hold", "to": "done"}));
    second["name"] = json!("Tagging v2");
    publish(&server, "tagging", second).await;
    sign_up(&server, "c").await;
    server.advance(60 * 60_000).await;

    let (status, list) = server.get("/v1/journeys").await;
    assert_eq!(status, 200, "{list}");
    let tagging = list
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "tagging")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(tagging["status"], "active");
    // Three entered; a and b left v1's one-hour wait and completed, c waits in v2's.
    assert_eq!(
        tagging["counts"],
        json!({"enrolled": 3, "waiting": 1, "converted": 0, "completed": 2, "exited": 0, "failed": 0}),
        "{tagging}"
    );

    let (status, diff) = server.get("/v1/journeys/tagging/diff?from=1&to=2").await;
    assert_eq!(status, 200, "{diff}");
    let ids = |list: &Json| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(ids(&diff["nodes"]["added"]), ["done"], "{diff}");
    assert!(
        diff["nodes"]["removed"].as_array().unwrap().is_empty(),
        "{diff}"
    );
    assert_eq!(ids(&diff["nodes"]["changed"]), ["hold", "tag"], "{diff}");
    let tag = &diff["nodes"]["changed"][1];
    assert_eq!(tag["before"]["config"]["add_tags"], json!(["new"]));
    assert_eq!(tag["after"]["config"]["add_tags"], json!(["fresh"]));
    assert_eq!(
        diff["edges"]["added"],
        json!([{"from": "hold", "to": "done"}]),
        "{diff}"
    );
    assert_eq!(
        diff["fields"]["name"],
        json!({"before": "Tagging", "after": "Tagging v2"})
    );

    let (status, body) = server.get("/v1/journeys/tagging/diff?from=1&to=7").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("journey_version_not_found")),
        "{body}"
    );
    let (status, body) = server.get("/v1/journeys/tagging/diff?from=1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "{body}"
    );
}
