//! Requests that race: changes to one journey at once, events for one contact at once. Nothing
//! is lost or undone, and one contact's steps follow the order its events were acknowledged.

use serde_json::{Value as Json, json};

use crate::server::Server;

fn welcome(description: &str) -> Json {
    let mut journey: Json =
        serde_json::from_str(include_str!("../../examples/journeys/welcome.json")).unwrap();
    journey["description"] = json!(description);
    journey
}

/// Publishing reads the journey, checks it with its plugins and writes it: a pause or a draft
/// that comes in meanwhile is kept, not overwritten by what the publish read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_or_a_draft_saved_while_a_journey_publishes_is_never_lost() {
    let server = Server::start(true).await;
    server.put("/v1/journeys/welcome", welcome("first")).await;
    let (status, body) = server.act("/v1/journeys/welcome/publish").await;
    assert_eq!(status, 201, "{body}");
    for round in 0..12 {
        let draft = welcome(&format!("round {round}"));
        let (published, paused, saved) = tokio::join!(
            server.act("/v1/journeys/welcome/publish"),
            server.act("/v1/journeys/welcome/pause"),
            server.put("/v1/journeys/welcome", draft.clone()),
        );
        assert_eq!(
            (published.0, paused.0, saved.0),
            (201, 200, 200),
            "round {round}"
        );
        let (_, journey) = server.get("/v1/journeys/welcome").await;
        assert_eq!(
            journey["status"], "paused",
            "round {round}: the pause was undone"
        );
        assert_eq!(
            journey["draft"], draft,
            "round {round}: the saved draft was lost"
        );
        server.act("/v1/journeys/welcome/resume").await;
    }
}

/// Three clients send events for one contact at once, each its own events one after the other.
/// Every event is applied once, and each client's events in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_contacts_events_sent_at_once_are_applied_once_in_the_order_each_was_acknowledged() {
    let server = Server::start(true).await;
    let journey = json!({
        "name": "Every step",
        "reentry": "concurrent",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "step"}},
            {"id": "count", "type": "action", "plugin": "update-contact", "config": {"score": {"delta": 1}}}
        ],
        "edges": [{"from": "in", "to": "count"}]
    });
    server.put("/v1/journeys/steps", journey).await;
    let (status, body) = server.act("/v1/journeys/steps/publish").await;
    assert_eq!(status, 201, "{body}");
    server.post("/v1/contacts", json!({"id": "he"})).await;
    let client = |c: usize| {
        let server = &server;
        async move {
            for n in 0..3 {
                let event = json!({"id": format!("s{c}-{n}"), "contact_id": "he", "name": "step", "timestamp": "2026-11-22T10:00:00Z"});
                let (status, body) = server.post("/v1/events", event).await;
                assert_eq!(status, 202, "{body}");
            }
        }
    };
    tokio::join!(client(0), client(1), client(2));
    server.settle().await;
    let (_, he) = server.get("/v1/contacts/he").await;
    assert_eq!(he["score"], 9.0, "each event once: {he}");
    // Enrollments are listed newest first: their events, oldest first, are the order applied.
    let mut applied = Vec::new();
    for summary in he["enrollments"].as_array().unwrap().iter().rev() {
        let (_, enrollment) = server
            .get(&format!(
                "/v1/enrollments/{}",
                summary["id"].as_str().unwrap()
            ))
            .await;
        applied.push(enrollment["event_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(applied.len(), 9, "{applied:?}");
    for c in 0..3 {
        let mine: Vec<&String> = applied
            .iter()
            .filter(|id| id.starts_with(&format!("s{c}-")))
            .collect();
        assert_eq!(
            mine,
            [&format!("s{c}-0"), &format!("s{c}-1"), &format!("s{c}-2")],
            "{applied:?}"
        );
    }
}
