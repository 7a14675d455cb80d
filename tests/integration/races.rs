//! Requests that race: changes to one journey at once, events for one contact at once. Nothing
//! is lost or undone, and one contact's steps follow the order its events were acknowledged.

use serde_json::{Value as Json, json};

use wayline::store::{
    ContactUpsert, DeliveryStatus, DeliveryStep, DeliveryUpdate, MessageStore, OutboxMessage,
    SledStore, Store, StoreError, SuppressionKind,
};

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

/// A provider's report can land between the delivery worker reading a due message (a retry
/// whose first attempt timed out but got through) and its claim of it: the claim is refused,
/// so the message is not sent again, and the worker's later steps never undo the report.
#[test]
fn a_message_the_provider_settled_is_not_claimed_for_sending_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, &["lin"]);
    store.queue_message(&waiting("m1", "lin")).unwrap();
    store
        .record_delivery(&DeliveryUpdate::new(
            "m1",
            DeliveryStatus::Delivered,
            20_000,
        ))
        .unwrap();
    let claim = DeliveryUpdate::new("m1", DeliveryStatus::Sending, 30_000);
    assert!(matches!(
        store.record_delivery(&claim),
        Err(StoreError::Conflict(_))
    ));
    let message = store.message("m1").unwrap().unwrap();
    assert_eq!(message.status, DeliveryStatus::Delivered);
    assert_eq!(message.due_at, None);
    assert!(store.due_messages(i64::MAX / 2, 10).unwrap().is_empty());
}

/// The worker records a batch of steps in one write: each step is taken or refused on its own
/// (a claim on a settled message, an unknown id), and steps on one message or one address in
/// the same batch see each other, as if written one after another.
#[test]
fn steps_recorded_together_are_each_taken_or_refused_as_if_written_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, &["lin", "wang"]);
    for (id, contact) in [("settled", "lin"), ("fresh", "lin"), ("bounced", "wang")] {
        store.queue_message(&waiting(id, contact)).unwrap();
    }
    store
        .record_delivery(&DeliveryUpdate::new(
            "settled",
            DeliveryStatus::Delivered,
            20_000,
        ))
        .unwrap();
    let mut bounce = DeliveryUpdate::new("bounced", DeliveryStatus::Bounced, 31_000);
    bounce.suppress = Some(SuppressionKind::Bounced);
    // A provider's long answer: the step is kept, cut, and does not fail the batch.
    bounce.detail = format!("mailbox gone {}", "x".repeat(200_000));
    let mut complaint = DeliveryUpdate::new("bounced", DeliveryStatus::Delivered, 32_000);
    complaint.suppress = Some(SuppressionKind::Complaint);
    complaint.note_only = true;
    let mut sent = DeliveryUpdate::new("fresh", DeliveryStatus::Sent, 31_000);
    sent.event = Some("email_sent".into());
    let steps = [
        DeliveryUpdate::new("settled", DeliveryStatus::Sending, 30_000),
        DeliveryUpdate::new("nobody", DeliveryStatus::Sending, 30_000),
        DeliveryUpdate::new("fresh", DeliveryStatus::Sending, 30_000),
        sent,
        bounce,
        complaint,
    ];
    let recorded = store.record_deliveries(&steps).unwrap();
    let outcomes: Vec<&str> = recorded
        .steps
        .iter()
        .map(|step| step.as_ref().map_or_else(|e| e.code(), |()| "ok"))
        .collect();
    assert_eq!(outcomes, ["conflict", "not_found", "ok", "ok", "ok", "ok"]);
    // The refused claim changed nothing: no `sending` step, not back on the queue.
    let settled = store.message("settled").unwrap().unwrap();
    let statuses: Vec<_> = settled.history.iter().map(|step| step.status).collect();
    assert_eq!(
        statuses,
        [DeliveryStatus::Deferred, DeliveryStatus::Delivered]
    );
    assert_eq!(settled.due_at, None);
    // Both steps of `fresh` were made, in order, and it left the queue.
    let fresh = store.message("fresh").unwrap().unwrap();
    assert_eq!(fresh.status, DeliveryStatus::Sent);
    let statuses: Vec<_> = fresh.history.iter().map(|step| step.status).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Deferred,
            DeliveryStatus::Sending,
            DeliveryStatus::Sent
        ]
    );
    assert!(store.due_messages(i64::MAX / 2, 10).unwrap().is_empty());
    assert_eq!(
        recorded.partitions.len(),
        1,
        "the `email_sent` event was queued"
    );
    // The complaint after the bounce in the same batch did not reopen the address.
    let suppression = store
        .suppression("email", "wang@example.com")
        .unwrap()
        .unwrap();
    assert_eq!(suppression.kind, SuppressionKind::Bounced);
    assert!(suppression.reason.starts_with("mailbox gone"));
    assert!(
        suppression.reason.len() <= 512,
        "cut as the history's detail is"
    );
}

fn store_with(dir: &tempfile::TempDir, contacts: &[&str]) -> SledStore {
    let store = SledStore::open(&dir.path().join("store")).unwrap();
    for id in contacts {
        let upsert = ContactUpsert {
            id: Some((*id).into()),
            ..Default::default()
        };
        store.upsert_contact(upsert, 0).unwrap();
    }
    store
}

/// A message of `contact` to `<contact>@example.com` whose first attempt timed out, due again
/// at 30 s.
fn waiting(id: &str, contact: &str) -> OutboxMessage {
    let queued = DeliveryStep {
        at: 0,
        status: DeliveryStatus::Deferred,
        detail: "timed out".into(),
    };
    OutboxMessage {
        id: id.into(),
        contact_id: contact.into(),
        channel: "email".into(),
        template: "welcome".into(),
        variables: Default::default(),
        journey_id: "welcome".into(),
        version: 1,
        node: "send".into(),
        enrollment_id: format!("e-{id}"),
        created_at: 0,
        status: DeliveryStatus::Deferred,
        template_version: Some(1),
        attempts: 1,
        due_at: Some(30_000),
        recipient: Some(format!("{contact}@example.com")),
        provider_id: None,
        history: vec![queued],
        test: false,
    }
}
