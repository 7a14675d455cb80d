//! Journeys as a marketer uses them, through the HTTP API of a real server: real plugins, real
//! sled, and a virtual clock the tests move forward to let waits pass.

use serde_json::{Value as Json, json};

use wayline::clock::Clock;

use crate::server::Server;

const HOUR: i64 = 3_600_000;

fn welcome_journey() -> Json {
    serde_json::from_str(include_str!("../../examples/journeys/welcome.json")).unwrap()
}

/// Save `definition` as journey `id` and publish it; what publishing answered.
pub(crate) async fn publish(server: &Server, id: &str, definition: Json) -> Json {
    let (status, body) = server.put(&format!("/v1/journeys/{id}"), definition).await;
    assert!(status == 201 || status == 200, "{status} {body}");
    let (status, body) = server.act(&format!("/v1/journeys/{id}/publish")).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Publishing checks that what a journey sends exists: bind `channel` (to the webhook plugin,
/// aimed at nothing this test reads) and give it `template`.
async fn sendable(server: &Server, channel: &str, template: &str) {
    let (status, body) = server
        .put(
            &format!("/v1/channels/{channel}"),
            json!({"plugin": "webhook-channel", "config": {"url": "http://127.0.0.1:9/none"},
                   "approved_hosts": ["http://127.0.0.1:9"]}),
        )
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    let (status, body) = server
        .put(
            &format!("/v1/templates/{template}"),
            json!({"channel": channel, "text": "hello"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn contact(server: &Server, body: Json) {
    let (status, body) = server.post("/v1/contacts", body).await;
    assert!(status == 201 || status == 200, "{status} {body}");
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

async fn templates_sent(server: &Server, contact_id: &str) -> Vec<String> {
    let (status, messages) = server
        .get(&format!("/v1/contacts/{contact_id}/messages"))
        .await;
    assert_eq!(status, 200, "{messages}");
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["template"].as_str().unwrap().to_owned())
        .collect()
}

async fn read_contact(server: &Server, id: &str) -> Json {
    let (status, body) = server.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn node_counts(server: &Server, journey: &str, node: &str) -> Json {
    let (status, stats) = server.get(&format!("/v1/journeys/{journey}/stats")).await;
    assert_eq!(status, 200, "{stats}");
    stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .map(|n| n["counts"].clone())
        .unwrap_or(Json::Null)
}

#[tokio::test]
async fn who_opens_the_welcome_email_gets_the_product_guide_and_who_does_not_gets_the_simplified_email_after_24_hours()
 {
    let server = Server::start(true).await;
    publish(&server, "welcome", welcome_journey()).await;
    for (id, name) in [("li", "Li"), ("wang", "Wang")] {
        contact(&server, json!({"id": id, "attributes": {"email": format!("{id}@example.com"), "first_name": name}})).await;
        event(&server, &format!("reg-{id}"), id, "registered", json!({})).await;
    }
    server.settle().await;
    assert_eq!(templates_sent(&server, "li").await, ["welcome"]);
    let (_, messages) = server.get("/v1/contacts/li/messages").await;
    assert_eq!(
        messages[0]["variables"]["name"], "Li",
        "personalised: {messages}"
    );
    assert_eq!(messages[0]["channel"], "email");
    let li = read_contact(&server, "li").await;
    assert_eq!(li["enrollments"][0]["state"], "waiting", "{li}");
    assert_eq!(li["enrollments"][0]["node"], "opened-welcome");
    assert!(li["tags"].as_array().unwrap().contains(&json!("welcomed")));

    server.advance(2 * HOUR).await;
    event(&server, "open-li", "li", "email_opened", json!({})).await;
    server.settle().await;
    assert_eq!(
        templates_sent(&server, "li").await,
        ["welcome", "product-guide"]
    );

    server.advance(21 * HOUR).await;
    assert_eq!(
        templates_sent(&server, "wang").await,
        ["welcome"],
        "23 h: still waiting"
    );
    server.advance(HOUR).await;
    assert_eq!(
        templates_sent(&server, "wang").await,
        ["welcome", "welcome-simplified"]
    );
    assert_eq!(
        templates_sent(&server, "li").await,
        ["welcome", "product-guide"],
        "nothing twice"
    );

    let wang = read_contact(&server, "wang").await;
    assert_eq!(wang["enrollments"][0]["state"], "completed", "{wang}");
    let (_, enrollment) = server
        .get(&format!(
            "/v1/enrollments/{}",
            wang["enrollments"][0]["id"].as_str().unwrap()
        ))
        .await;
    let path: Vec<_> = enrollment["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["node"].as_str().unwrap(), p["label"].as_str()))
        .collect();
    assert_eq!(
        path,
        [
            ("registered", None),
            ("welcome-email", None),
            ("opened-welcome", Some("timeout")),
            ("simplified-email", None)
        ]
    );
    let wait = node_counts(&server, "welcome", "opened-welcome").await;
    assert_eq!(wait["entered"], 2, "{wait}");
    assert_eq!(wait["passed:event"], 1);
    assert_eq!(wait["passed:timeout"], 1);
    assert_eq!(wait["waiting"], 0);
    assert_eq!(
        node_counts(&server, "welcome", "registered").await["entered"],
        2
    );
}

/// entry → condition on score (three ways) → an action per branch.
fn scoring_journey() -> Json {
    json!({
        "name": "Nurture by score",
        "reentry": "concurrent",
        "nodes": [
            {"id": "scored", "type": "entry", "plugin": "event-trigger", "config": {"event": "scored"}},
            {"id": "tier", "type": "condition", "plugin": "attribute-condition", "config": {
                "branches": [
                    {"label": "high", "when": [{"field": "score", "op": "gte", "value": 70}]},
                    {"label": "watching", "when": [{"field": "score", "op": "gte", "value": 40}]}],
                "default": "low"}},
            {"id": "deep-dive", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["high-potential"], "score": {"delta": 5, "reason": "nurture"}}},
            {"id": "watch", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["watching"]}},
            {"id": "low", "type": "action", "plugin": "update-contact", "config": {"set": {"tier": "low"}}}
        ],
        "edges": [
            {"from": "scored", "to": "tier"},
            {"from": "tier", "to": "deep-dive", "label": "high"},
            {"from": "tier", "to": "watch", "label": "watching"},
            {"from": "tier", "to": "low", "label": "low"}
        ]
    })
}

#[tokio::test]
async fn a_condition_branches_three_ways_and_actions_change_the_contact() {
    let server = Server::start(true).await;
    publish(&server, "nurture", scoring_journey()).await;
    for (id, score) in [("a", 85.0), ("b", 50.0), ("c", 10.0)] {
        contact(&server, json!({"id": id})).await;
        // Scores are the journeys' to change; set one up through a journey-free path.
        server
            .state
            .store
            .commit(wayline::store::Commit {
                contact_effects: vec![(
                    id.into(),
                    vec![wayline::model::Effect::AdjustScore {
                        delta: score,
                        reason: "seed".into(),
                    }],
                )],
                ..Default::default()
            })
            .unwrap();
        event(&server, &format!("s-{id}"), id, "scored", json!({})).await;
    }
    server.settle().await;
    let a = read_contact(&server, "a").await;
    assert!(
        a["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("high-potential")),
        "{a}"
    );
    assert_eq!(a["score"], 90.0);
    let b = read_contact(&server, "b").await;
    assert_eq!(b["tags"], json!(["watching"]));
    let c = read_contact(&server, "c").await;
    assert_eq!(c["attributes"]["tier"], "low");
    let tier = node_counts(&server, "nurture", "tier").await;
    assert_eq!(
        (
            tier["passed:high"].clone(),
            tier["passed:watching"].clone(),
            tier["passed:low"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
}

#[tokio::test]
async fn a_split_sends_each_contact_down_the_same_path_every_time() {
    let server = Server::start(true).await;
    publish(
        &server,
        "pilot",
        json!({
            "name": "10% pilot",
            "reentry": "concurrent",
            "nodes": [
                {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "go"}},
                {"id": "ab", "type": "split", "paths": [{"label": "pilot", "percent": 10}, {"label": "rest", "percent": 90}]},
                {"id": "p", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["pilot"]}},
                {"id": "r", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["rest"]}}
            ],
            "edges": [
                {"from": "in", "to": "ab"},
                {"from": "ab", "to": "p", "label": "pilot"},
                {"from": "ab", "to": "r", "label": "rest"}
            ]
        }),
    )
    .await;
    let contacts = 200;
    let batch: Vec<Json> = (0..contacts)
        .flat_map(|i| {
            (0..2).map(move |round| {
                json!({"id": format!("go-{i}-{round}"), "contact_id": format!("c{i}"), "name": "go", "timestamp": "2026-11-22T10:00:00Z"})
            })
        })
        .collect();
    let (status, body) = server.post("/v1/events", json!(batch)).await;
    assert_eq!(status, 202, "{body}");
    server.settle().await;
    let mut pilots = 0;
    for i in 0..contacts {
        let tags = read_contact(&server, &format!("c{i}")).await["tags"].clone();
        assert_eq!(
            tags.as_array().unwrap().len(),
            1,
            "two entries, one path: {tags}"
        );
        if tags[0] == "pilot" {
            pilots += 1;
        }
    }
    assert!(
        (8..=40).contains(&pilots),
        "about 10% of 200 in the pilot: {pilots}"
    );
}

#[test]
fn split_proportions_hold_over_ten_thousand_contacts_and_replay_identically() {
    use wayline::journeys::definition::SplitPath;
    let paths = [
        SplitPath {
            label: "a".into(),
            percent: 50.0,
        },
        SplitPath {
            label: "b".into(),
            percent: 30.0,
        },
        SplitPath {
            label: "pilot".into(),
            percent: 20.0,
        },
    ];
    let assign = || -> Vec<String> {
        (0..10_000)
            .map(|i| {
                wayline::journeys::split_path("journey", "ab", &format!("contact-{i}"), &paths)
            })
            .collect()
    };
    let first = assign();
    assert_eq!(first, assign(), "a replay takes the same paths");
    for (label, share) in [("a", 0.5_f64), ("b", 0.3), ("pilot", 0.2)] {
        let n = first.iter().filter(|l| *l == label).count() as f64;
        // Four standard deviations of a binomial with n = 10,000.
        let tolerance = 4.0 * (10_000.0 * share * (1.0 - share)).sqrt();
        assert!((n - 10_000.0 * share).abs() < tolerance, "{label}: {n}");
    }
}

#[tokio::test]
async fn waits_hold_for_a_delay_and_until_weekdays_at_ten_in_the_contacts_time_zone() {
    let server = Server::start(true).await;
    sendable(&server, "email", "follow-up").await;
    publish(
        &server,
        "timing",
        json!({
            "name": "Timing",
            "nodes": [
                {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "downloaded"}},
                {"id": "three-days", "type": "wait", "delay": "3d"},
                {"id": "ten-am", "type": "wait", "until": {"days": ["weekdays"], "times": ["10:00", "15:00"]}},
                {"id": "follow-up", "type": "action", "plugin": "update-contact", "config": {"send": {"channel": "email", "template": "follow-up"}}},
                {"id": "bye", "type": "exit"}
            ],
            "edges": [
                {"from": "in", "to": "three-days"}, {"from": "three-days", "to": "ten-am"},
                {"from": "ten-am", "to": "follow-up"}, {"from": "follow-up", "to": "bye"}
            ]
        }),
    )
    .await;
    // The clock starts Sunday 2026-11-22 10:00Z; three days later is Wednesday 10:00Z, which
    // is 18:00 in Shanghai: the next slot is Thursday 10:00 Shanghai = Thursday 02:00Z.
    contact(&server, json!({"id": "zhao", "timezone": "Asia/Shanghai"})).await;
    event(&server, "d-1", "zhao", "downloaded", json!({})).await;
    server.settle().await;
    server.advance(72 * HOUR - 1).await;
    assert_eq!(
        read_contact(&server, "zhao").await["enrollments"][0]["node"],
        "three-days"
    );
    server.advance(1).await;
    let zhao = read_contact(&server, "zhao").await;
    assert_eq!(zhao["enrollments"][0]["node"], "ten-am", "{zhao}");
    assert_eq!(
        zhao["enrollments"][0]["waiting_until"],
        "2026-11-26T02:00:00Z"
    );
    server.advance(16 * HOUR - 1).await;
    assert!(templates_sent(&server, "zhao").await.is_empty());
    server.advance(1).await;
    assert_eq!(templates_sent(&server, "zhao").await, ["follow-up"]);
    let zhao = read_contact(&server, "zhao").await;
    assert_eq!(zhao["enrollments"][0]["state"], "completed");
    assert_eq!(zhao["enrollments"][0]["exit_reason"], "exit node");
}

#[tokio::test]
async fn a_goal_event_converts_the_contact_wherever_they_are() {
    let server = Server::start(true).await;
    publish(&server, "welcome", welcome_journey()).await;
    contact(&server, json!({"id": "zhou"})).await;
    event(&server, "r", "zhou", "registered", json!({})).await;
    server.settle().await;
    server.advance(HOUR).await;
    event(&server, "p", "zhou", "purchased", json!({})).await;
    server.settle().await;
    let zhou = read_contact(&server, "zhou").await;
    assert_eq!(zhou["enrollments"][0]["state"], "converted", "{zhou}");
    assert_eq!(zhou["enrollments"][0]["exit_reason"], "goal: purchased");
    server.advance(30 * HOUR).await;
    assert_eq!(
        templates_sent(&server, "zhou").await,
        ["welcome"],
        "no simplified email after converting"
    );
    let wait = node_counts(&server, "welcome", "opened-welcome").await;
    assert_eq!(wait["converted"], 1, "{wait}");
    assert_eq!(wait["waiting"], 0);
}

fn tagging_journey(reentry: Json) -> Json {
    json!({
        "name": "Tag on visit",
        "reentry": reentry,
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "visited"}},
            {"id": "score", "type": "action", "plugin": "update-contact", "config": {"score": {"delta": 1, "reason": "visit"}}},
            {"id": "hold", "type": "wait", "delay": "1h"}
        ],
        "edges": [{"from": "in", "to": "score"}, {"from": "score", "to": "hold"}]
    })
}

#[tokio::test]
async fn reentry_once_after_a_cooldown_or_concurrently_and_never_twice_for_one_event() {
    let server = Server::start(true).await;
    publish(&server, "once", tagging_journey(json!("once"))).await;
    publish(&server, "daily", tagging_journey(json!({"after": "1d"}))).await;
    publish(&server, "always", tagging_journey(json!("concurrent"))).await;
    contact(&server, json!({"id": "qian"})).await;
    for n in 0..3 {
        event(&server, &format!("v{n}"), "qian", "visited", json!({})).await;
        event(&server, &format!("v{n}"), "qian", "visited", json!({})).await; // a retried send
        server.advance(2 * HOUR).await;
    }
    server.advance(20 * HOUR).await; // 26 h after the first visit
    event(&server, "v3", "qian", "visited", json!({})).await;
    server.settle().await;
    let entered = |journey: &'static str| {
        let server = &server;
        async move { node_counts(server, journey, "in").await["entered"].clone() }
    };
    assert_eq!(entered("once").await, 1);
    assert_eq!(
        entered("daily").await,
        2,
        "the first visit, then the one a day later"
    );
    assert_eq!(entered("always").await, 4, "each distinct event once");
    assert_eq!(read_contact(&server, "qian").await["score"], 7.0);
}

/// A trigger that cannot answer holds a place for the contact until it can; its answer decides.
/// A "no" after a failure must not use up a journey the contact may enter only once.
#[tokio::test]
async fn a_trigger_that_fails_and_then_says_no_leaves_a_once_only_journey_open() {
    let server = Server::start(true).await;
    publish(
        &server,
        "once",
        json!({
            "name": "Once, by a flaky trigger",
            "reentry": "once",
            "nodes": [
                {"id": "in", "type": "entry", "plugin": "flaky-trigger"},
                {"id": "tag", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["entered"]}}
            ],
            "edges": [{"from": "in", "to": "tag"}]
        }),
    )
    .await;
    contact(&server, json!({"id": "wu"})).await;
    event(&server, "e1", "wu", "visited", json!({"flaky": true})).await;
    server.settle().await;
    let wu = read_contact(&server, "wu").await;
    let pending = &wu["enrollments"][0];
    assert_eq!(pending["state"], "pending", "{wu}");
    assert!(pending["error"].as_str().unwrap().contains("503"), "{wu}");
    assert_eq!(
        node_counts(&server, "once", "in").await["entered"],
        Json::Null,
        "not yet an entry"
    );

    server.advance(1_000).await; // asked again: no
    let wu = read_contact(&server, "wu").await;
    assert_eq!(wu["enrollments"][0]["state"], "exited", "{wu}");
    assert_eq!(wu["enrollments"][0]["exit_reason"], "trigger did not match");
    assert!(wu["tags"].as_array().unwrap().is_empty());

    event(&server, "e2", "wu", "visited", json!({})).await;
    event(&server, "e3", "wu", "visited", json!({})).await;
    server.settle().await;
    let wu = read_contact(&server, "wu").await;
    assert_eq!(wu["tags"], json!(["entered"]), "{wu}");
    assert_eq!(
        node_counts(&server, "once", "in").await["entered"],
        1,
        "once, and only once"
    );
}

#[tokio::test]
async fn enroll_by_api_call_once_per_request_id_and_not_into_paused_or_archived_journeys() {
    let server = Server::start(true).await;
    publish(&server, "welcome", welcome_journey()).await;
    contact(&server, json!({"id": "sun"})).await;
    let request = json!({"contact_id": "sun", "request_id": "crm-sync-1"});
    let (status, body) = server
        .post("/v1/journeys/welcome/enrollments", request.clone())
        .await;
    assert_eq!((status, body["status"].clone()), (202, json!("queued")));
    let (status, body) = server
        .post("/v1/journeys/welcome/enrollments", request)
        .await;
    assert_eq!((status, body["status"].clone()), (202, json!("duplicate")));
    server.settle().await;
    assert_eq!(templates_sent(&server, "sun").await, ["welcome"]);

    let (status, _) = server.act("/v1/journeys/welcome/pause").await;
    assert_eq!(status, 200);
    let (status, body) = server
        .post(
            "/v1/journeys/welcome/enrollments",
            json!({"contact_id": "sun"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("journey_not_active"))
    );
    contact(&server, json!({"id": "late"})).await;
    event(&server, "r-late", "late", "registered", json!({})).await;
    server.settle().await;
    assert!(
        templates_sent(&server, "late").await.is_empty(),
        "a paused journey enrolls no one"
    );
    server.advance(25 * HOUR).await;
    assert_eq!(
        templates_sent(&server, "sun").await,
        ["welcome", "welcome-simplified"],
        "contacts already in a paused journey carry on"
    );

    let (status, _) = server.act("/v1/journeys/welcome/resume").await;
    assert_eq!(status, 200);
    contact(&server, json!({"id": "zheng"})).await;
    event(&server, "r-zheng", "zheng", "registered", json!({})).await;
    server.settle().await;
    let (status, _) = server.act("/v1/journeys/welcome/archive").await;
    assert_eq!(status, 200);
    server.advance(25 * HOUR).await;
    let zheng = read_contact(&server, "zheng").await;
    assert_eq!(zheng["enrollments"][0]["state"], "exited", "{zheng}");
    assert_eq!(zheng["enrollments"][0]["exit_reason"], "journey archived");
    assert_eq!(templates_sent(&server, "zheng").await, ["welcome"]);
    let (status, body) = server.put("/v1/journeys/welcome", welcome_journey()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("journey_archived"))
    );
}

#[tokio::test]
async fn an_event_an_action_emits_starts_another_journey() {
    let server = Server::start(true).await;
    sendable(&server, "sales-task", "call-now").await;
    publish(
        &server,
        "qualify",
        json!({
            "name": "Qualify",
            "nodes": [
                {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "demo_requested"}},
                {"id": "mql", "type": "action", "plugin": "update-contact", "config": {"stage": "mql", "emit": {"name": "became_mql", "properties": {"source": "demo"}}}}
            ],
            "edges": [{"from": "in", "to": "mql"}]
        }),
    )
    .await;
    publish(
        &server,
        "alert-sales",
        json!({
            "name": "Alert sales",
            "nodes": [
                {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "became_mql", "where": [{"property": "source", "op": "eq", "value": "demo"}]}},
                {"id": "task", "type": "action", "plugin": "update-contact", "config": {"send": {"channel": "sales-task", "template": "call-now"}}}
            ],
            "edges": [{"from": "in", "to": "task"}]
        }),
    )
    .await;
    contact(&server, json!({"id": "liu"})).await;
    event(&server, "demo-1", "liu", "demo_requested", json!({})).await;
    server.settle().await;
    let liu = read_contact(&server, "liu").await;
    assert_eq!(liu["lifecycle_stage"], "mql");
    assert_eq!(templates_sent(&server, "liu").await, ["call-now"]);
}

#[tokio::test]
async fn a_failing_plugin_is_retried_then_parked_with_its_error_and_nobody_else_waits() {
    let server = Server::start(true).await;
    publish(
        &server,
        "crm-sync",
        json!({
            "name": "CRM sync",
            "reentry": "concurrent",
            "nodes": [
                {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "signed_up"}},
                {"id": "sync", "type": "action", "plugin": "flaky-action"}
            ],
            "edges": [{"from": "in", "to": "sync"}]
        }),
    )
    .await;
    contact(&server, json!({"id": "down", "tags": ["crm-down"]})).await;
    contact(&server, json!({"id": "spinner", "tags": ["spin"]})).await;
    contact(&server, json!({"id": "fine"})).await;
    for id in ["down", "spinner", "fine"] {
        event(&server, &format!("su-{id}"), id, "signed_up", json!({})).await;
    }
    server.settle().await;
    assert!(
        read_contact(&server, "fine").await["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("synced"))
    );
    let down = read_contact(&server, "down").await;
    assert_eq!(down["enrollments"][0]["state"], "retrying", "{down}");
    assert!(
        down["enrollments"][0]["error"]
            .as_str()
            .unwrap()
            .contains("CRM answered 503")
    );
    let spinner = read_contact(&server, "spinner").await;
    assert!(
        spinner["enrollments"][0]["error"]
            .as_str()
            .unwrap()
            .contains("CPU"),
        "the CPU limit is named: {spinner}"
    );
    // Backoff 1 s, 10 s, 1 min, 10 min: the fifth failure parks it.
    for wait in [1_000, 10_000, 60_000, 600_000] {
        server.advance(wait).await;
    }
    let down = read_contact(&server, "down").await;
    assert_eq!(down["enrollments"][0]["state"], "parked", "{down}");
    assert!(
        down["enrollments"][0]["error"]
            .as_str()
            .unwrap()
            .contains("CRM answered 503")
    );
    assert_eq!(node_counts(&server, "crm-sync", "sync").await["failed"], 2);
    // Tags unchanged for the failed contacts: a failed step applies nothing.
    assert_eq!(
        read_contact(&server, "down").await["tags"],
        json!(["crm-down"])
    );

    // The CRM is back: an operator retries the parked enrollment and it goes through.
    server
        .state
        .store
        .commit(wayline::store::Commit {
            contact_effects: vec![(
                "down".into(),
                vec![wayline::model::Effect::RemoveTag {
                    tag: "crm-down".into(),
                }],
            )],
            ..Default::default()
        })
        .unwrap();
    let parked = down["enrollments"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = server.act(&format!("/v1/enrollments/{parked}/retry")).await;
    assert_eq!(status, 202, "{body}");
    server.settle().await;
    let down = read_contact(&server, "down").await;
    assert_eq!(down["enrollments"][0]["state"], "completed", "{down}");
    assert_eq!(down["tags"], json!(["synced"]));
    let (status, body) = server.act(&format!("/v1/enrollments/{parked}/retry")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("enrollment_not_parked")),
        "{body}"
    );
    let (status, body) = server.act("/v1/enrollments/nope/retry").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("enrollment_not_found"))
    );
}

#[tokio::test]
async fn publishing_refuses_a_broken_journey_and_names_each_node_at_fault() {
    let server = Server::start(true).await;
    let broken = json!({
        "name": "Broken",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "registered"}},
            {"id": "typo", "type": "action", "plugin": "update-contactz", "config": {}},
            {"id": "wrong-kind", "type": "condition", "plugin": "update-contact", "config": {}},
            {"id": "bad-config", "type": "action", "plugin": "update-contact", "config": {"score": {"delta": "ten"}}},
            {"id": "no-timeout", "type": "wait", "until_event": "email_opened"},
            {"id": "orphan", "type": "exit"},
            {"id": "loop-a", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["a"]}},
            {"id": "loop-b", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["b"]}}
        ],
        "edges": [
            {"from": "in", "to": "typo"}, {"from": "typo", "to": "wrong-kind"},
            {"from": "wrong-kind", "to": "bad-config"}, {"from": "bad-config", "to": "no-timeout"},
            {"from": "no-timeout", "to": "loop-a"}, {"from": "loop-a", "to": "loop-b"}, {"from": "loop-b", "to": "loop-a"}
        ]
    });
    let (status, _) = server.put("/v1/journeys/broken", broken).await;
    assert_eq!(status, 201);
    let (status, body) = server.act("/v1/journeys/broken/publish").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_journey");
    let problems = body["error"]["details"]["problems"].as_array().unwrap();
    let about = |node: &str| -> Vec<String> {
        problems
            .iter()
            .filter(|p| p["node"] == node)
            .map(|p| p["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        about("typo")[0].contains("`update-contactz` is not loaded"),
        "{problems:?}"
    );
    assert!(
        about("wrong-kind")[0].contains("is a action plugin; this node needs a condition"),
        "{problems:?}"
    );
    assert!(
        about("bad-config")[0].contains("refused its config"),
        "{problems:?}"
    );
    assert!(
        about("no-timeout")
            .iter()
            .any(|m| m.contains("needs a `timeout`")),
        "{problems:?}"
    );
    assert!(
        about("orphan")[0].contains("no entry node leads here"),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p["message"]
            .as_str()
            .unwrap()
            .contains("loop that does not hold a contact for 1m")),
        "{problems:?}"
    );
    let (_, journey) = server.get("/v1/journeys/broken").await;
    assert_eq!(journey["status"], "draft", "nothing was published");
    assert_eq!(journey["published_version"], 0);
}

/// A loop through a wait that does not hold (a `0s` delay, a time window the contact is
/// already in) would spin within one step: refused, like a duration that is not one or is
/// longer than any journey runs — each naming its node.
#[tokio::test]
async fn waits_that_do_not_hold_on_a_loop_and_bad_durations_are_refused_naming_the_node() {
    let server = Server::start(true).await;
    let looping = |wait: Json| {
        json!({
            "name": "Loop",
            "nodes": [
                {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "registered"}},
                {"id": "nudge", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["nudged"]}},
                {"id": "pause", "type": "wait"}
            ],
            "edges": [{"from": "in", "to": "nudge"}, {"from": "nudge", "to": "pause"}, {"from": "pause", "to": "nudge"}]
        })
        .to_string()
        .replace(r#""type":"wait""#, &format!(r#""type":"wait",{}"#, &wait.to_string()[1..wait.to_string().len() - 1]))
    };
    let problems = |body: &Json| body["error"]["details"]["problems"].clone();
    for (wait, refused) in [
        (json!({"delay": "0s"}), true),
        (json!({"delay": "59s"}), true),
        (json!({"until": {"times": ["10:00"]}}), true),
        (json!({"delay": "1m"}), false),
        (json!({"until_event": "opened", "timeout": "1h"}), false),
    ] {
        let draft: Json = serde_json::from_str(&looping(wait.clone())).unwrap();
        let wait = wait.to_string();
        let (status, _) = server.put("/v1/journeys/loop", draft).await;
        assert_eq!(status / 100, 2, "{wait}");
        let (status, body) = server.act("/v1/journeys/loop/publish").await;
        if refused {
            assert_eq!(status, 422, "{wait}: {body}");
            assert!(
                problems(&body)
                    .to_string()
                    .contains("does not hold a contact"),
                "{wait}: {body}"
            );
        } else {
            assert_eq!(status, 201, "{wait}: {body}");
        }
    }
    for (delay, says) in [
        (json!("soon"), "`soon` is not a duration"),
        (json!("106751991167d"), "longer than the longest duration"),
        (json!(u64::MAX), "longer than the longest duration"),
    ] {
        let mut draft: Json = serde_json::from_str(&looping(json!({"delay": "1h"}))).unwrap();
        draft["nodes"][2]["delay"] = delay.clone();
        let (status, body) = server.put("/v1/journeys/bad-delay", draft).await;
        assert_eq!(status, 422, "{delay}: {body}");
        assert_eq!(body["error"]["code"], "invalid_journey");
        let problem = &problems(&body)[0];
        assert_eq!(problem["node"], "pause", "{delay}: {body}");
        assert!(
            problem["message"].as_str().unwrap().contains(says),
            "{delay}: {body}"
        );
    }
}

/// An action that emits the event that enrolls contacts in its own journey again, or two such
/// journeys feeding each other, would go round forever. Publishing refuses the loop it can see;
/// one it could not see (here: made by resuming a journey) is cut by the depth of the chain of
/// emitted events, with the error on the enrollment and a counter on the node.
#[tokio::test]
async fn journeys_that_feed_each_other_are_refused_or_cut_and_never_run_away() {
    let server = Server::start(true).await;
    let relay = |on: &str, emit: &str, reentry: Json| {
        json!({
            "name": format!("{on} → {emit}"),
            "reentry": reentry,
            "nodes": [
                {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": on}},
                {"id": "emit", "type": "action", "plugin": "update-contact", "config": {"emit": {"name": emit}, "score": {"delta": 1}}}
            ],
            "edges": [{"from": "in", "to": "emit"}]
        })
    };
    // Itself, at once: refused.
    server
        .put(
            "/v1/journeys/echo",
            relay("ping", "ping", json!("concurrent")),
        )
        .await;
    let (status, body) = server.act("/v1/journeys/echo/publish").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string()
            .contains("feed each other in a loop (`echo` → `echo`)"),
        "{body}"
    );
    // Two journeys, one of them once per contact: published, with a warning.
    publish(&server, "ping", relay("ping", "pong", json!("once"))).await;
    server
        .put(
            "/v1/journeys/pong",
            relay("pong", "ping", json!("concurrent")),
        )
        .await;
    let (status, body) = server.act("/v1/journeys/pong/publish").await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`pong` → `ping` → `pong`"),
        "{body}"
    );
    server.act("/v1/journeys/ping/archive").await;
    server.act("/v1/journeys/pong/archive").await;

    // A loop publishing could not see: `tick` was paused while `tock` was published.
    publish(&server, "tick", relay("tick", "tock", json!("concurrent"))).await;
    server.act("/v1/journeys/tick/pause").await;
    publish(&server, "tock", relay("tock", "tick", json!("concurrent"))).await;
    let (status, _) = server.act("/v1/journeys/tick/resume").await;
    assert_eq!(status, 200);
    contact(&server, json!({"id": "lin"})).await;
    event(&server, "t0", "lin", "tick", json!({})).await;
    server.settle().await;
    let lin = read_contact(&server, "lin").await;
    assert_eq!(
        lin["score"], 10.0,
        "ten steps, then the eleventh emit is refused: {lin}"
    );
    let parked: Vec<&Json> = lin["enrollments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "parked")
        .collect();
    assert_eq!(parked.len(), 1, "{lin}");
    assert!(
        parked[0]["error"]
            .as_str()
            .unwrap()
            .contains("feeding each other in a loop"),
        "{lin}"
    );
    let refused = node_counts(&server, parked[0]["journey_id"].as_str().unwrap(), "emit").await;
    assert_eq!(refused["emit_refused"], 1, "{refused}");
}

/// A simulation is bounded: a script that would take the contact round a loop half a million
/// times stops at the step limit and says so, with what happened until then.
#[tokio::test]
async fn a_simulation_stops_at_its_bound_and_says_why() {
    let server = Server::start(true).await;
    server
        .put(
            "/v1/journeys/every-minute",
            json!({
                "name": "Every minute",
                "nodes": [
                    {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "registered"}},
                    {"id": "nudge", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["nudged"]}},
                    {"id": "pause", "type": "wait", "delay": "1m"}
                ],
                "edges": [{"from": "in", "to": "nudge"}, {"from": "nudge", "to": "pause"}, {"from": "pause", "to": "nudge"}]
            }),
        )
        .await;
    let (status, body) = server
        .post(
            "/v1/journeys/every-minute/simulate",
            json!({"script": [{"event": "registered"}, {"wait": "365d"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stopped"]["code"], "step_limit", "{}", body["stopped"]);
    let steps = body["steps"].as_array().unwrap().len();
    assert!((10_000..10_010).contains(&steps), "{steps} steps");
}

#[tokio::test]
async fn journey_endpoints_refuse_bad_input_with_stable_codes() {
    let server = Server::start(true).await;
    let (status, body) = server
        .raw("/v1/journeys", "application/json", b"{not json".to_vec())
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("malformed_json"))
    );
    let (status, body) = server
        .put(
            "/v1/journeys/x",
            json!({"name": "x", "nodes": [{"id": "a", "type": "teleport"}]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_journey"))
    );
    let (status, body) = server
        .put(
            "/v1/journeys/x",
            json!({"name": "x", "nodes": [], "colour": "red"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_journey")),
        "{body}"
    );
    let (status, body) = server
        .put("/v1/journeys/bad%20id", json!({"name": "x", "nodes": []}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_journey"))
    );
    for path in ["/v1/journeys/nope", "/v1/journeys/nope/stats"] {
        let (status, body) = server.get(path).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (404, json!("journey_not_found")),
            "{path}"
        );
    }
    let (status, body) = server.act("/v1/journeys/nope/publish").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("journey_not_found"))
    );
    let (status, body) = server.get("/v1/journeys/nope/versions/1").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/v1/enrollments/nope").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("enrollment_not_found"))
    );
    publish(&server, "welcome", welcome_journey()).await;
    let (status, body) = server
        .post(
            "/v1/journeys/welcome/enrollments",
            json!({"contact_id": "ghost"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("contact_not_found"))
    );
    let (status, body) = server
        .post(
            "/v1/journeys/welcome/enrollments",
            json!({"contact": "ghost"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_request"))
    );
    let (status, body) = server.get("/v1/journeys/welcome/stats?version=abc").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_query"))
    );
    let (status, body) = server
        .post(
            "/v1/journeys",
            json!({"id": "welcome", "name": "again", "nodes": []}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("journey_exists"))
    );
    let (status, body) = server
        .post(
            "/v1/journeys/welcome/simulate",
            json!({"script": [{"wait": "forever"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = server.get("/v1/contacts/ghost/messages").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("contact_not_found"))
    );
    // The published journey is untouched by all of that.
    let (_, journey) = server.get("/v1/journeys/welcome").await;
    assert_eq!(
        (
            journey["status"].clone(),
            journey["published_version"].clone()
        ),
        (json!("active"), json!(1))
    );
}

#[tokio::test]
async fn a_simulation_walks_the_journey_on_a_virtual_clock_and_changes_nothing_real() {
    let server = Server::start(true).await;
    server.put("/v1/journeys/welcome", welcome_journey()).await;
    let (status, run) = server
        .post(
            "/v1/journeys/welcome/simulate",
            json!({
                "contact": {"attributes": {"first_name": "Test"}},
                "start": "2026-11-23T09:00:00Z",
                "script": [{"event": "registered"}, {"wait": "25h"}]
            }),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let path: Vec<_> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        path,
        [
            "registered",
            "welcome-email",
            "opened-welcome",
            "simplified-email"
        ]
    );
    let templates: Vec<_> = run["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["template"].clone())
        .collect();
    assert_eq!(templates, [json!("welcome"), json!("welcome-simplified")]);
    assert_eq!(
        run["messages"][1]["created_at"], "2026-11-24T09:00:00Z",
        "24 h after registering"
    );
    assert_eq!(run["messages"][0]["variables"]["name"], "Test");
    assert_eq!(
        run["steps"][1]["input"]["contact"]["attributes"]["first_name"],
        "Test"
    );
    assert_eq!(run["steps"][2]["output"]["until"], "2026-11-24T09:00:00Z");

    let (_, opened) = server
        .post(
            "/v1/journeys/welcome/simulate",
            json!({"start": "2026-11-23T09:00:00Z", "script": [{"event": "registered"}, {"wait": "3h"}, {"event": "email_opened"}]}),
        )
        .await;
    let templates: Vec<_> = opened["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["template"].clone())
        .collect();
    assert_eq!(templates, [json!("welcome"), json!("product-guide")]);
    // Nothing real happened: no contact, no journey activity, the draft is still a draft.
    let (status, _) = server.get("/v1/contacts/simulated-contact").await;
    assert_eq!(status, 404);
    let (_, journey) = server.get("/v1/journeys/welcome").await;
    assert_eq!(journey["status"], "draft");
}

#[tokio::test]
async fn contacts_stay_on_the_version_they_entered() {
    let server = Server::start(true).await;
    sendable(&server, "email", "welcome-simplified-v2").await;
    publish(&server, "welcome", welcome_journey()).await;
    contact(&server, json!({"id": "early"})).await;
    event(&server, "r-early", "early", "registered", json!({})).await;
    server.settle().await;
    let mut changed = welcome_journey();
    changed["nodes"][4]["config"]["send"]["template"] = json!("welcome-simplified-v2");
    publish(&server, "welcome", changed).await;
    contact(&server, json!({"id": "later"})).await;
    event(&server, "r-later", "later", "registered", json!({})).await;
    server.settle().await;
    server.advance(25 * HOUR).await;
    assert_eq!(
        templates_sent(&server, "early").await,
        ["welcome", "welcome-simplified"]
    );
    assert_eq!(
        templates_sent(&server, "later").await,
        ["welcome", "welcome-simplified-v2"]
    );
    let later = read_contact(&server, "later").await;
    assert_eq!(later["enrollments"][0]["version"], 2);

    // Both versions stay readable, plugins pinned to the version they resolved to.
    let (status, first) = server.get("/v1/journeys/welcome/versions/1").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["definition"]["nodes"][0]["plugin"],
        "event-trigger@0.1.0"
    );
    assert_eq!(
        first["definition"]["nodes"][4]["config"]["send"]["template"],
        "welcome-simplified"
    );
    let (_, second) = server.get("/v1/journeys/welcome/versions/2").await;
    assert_eq!(
        second["definition"]["nodes"][4]["config"]["send"]["template"],
        "welcome-simplified-v2"
    );
}

#[tokio::test]
async fn journeys_are_created_with_an_id_of_their_own_and_listed() {
    let server = Server::start(true).await;
    let (status, created) = server.post("/v1/journeys", welcome_journey()).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("j_"), "{id}");
    assert_eq!(created["status"], "draft");
    let (status, named) = server
        .post("/v1/journeys", {
            let mut body = welcome_journey();
            body["id"] = json!("welcome-b");
            body
        })
        .await;
    assert_eq!((status, named["id"].clone()), (201, json!("welcome-b")));
    let (status, list) = server.get("/v1/journeys").await;
    assert_eq!(status, 200);
    let mut ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected = vec![id, "welcome-b".to_owned()];
    expected.sort();
    assert_eq!(ids, expected);
}

/// A queued item the journeys cannot run (bytes that do not decode; work for a contact whose
/// record on disk is corrupt) is set aside with its error after a few tries, where an operator
/// sees it, and every other contact, in the same partition too, goes on through the journey.
#[tokio::test]
async fn work_that_cannot_run_is_set_aside_and_everyone_else_carries_on() {
    let partition = wayline::store::partition_of("qian");
    let mut first_in_qians_partition = vec![partition];
    first_in_qians_partition.extend_from_slice(&0u64.to_be_bytes());
    let server = Server::start_on(true, |store| {
        crate::support::write_on_disk(
            store,
            &[
                ("inbox", &first_in_qians_partition, b"\xffnot a work item"),
                ("contacts", b"broken", br#"{"id": "broken", "attrib"#),
            ],
        )
    })
    .await;
    publish(&server, "tags", tagging_journey(json!("once"))).await;
    contact(&server, json!({"id": "qian"})).await;
    // Ingest only checks that the contact exists: the event is accepted, and it is the step
    // that cannot read the contact.
    event(&server, "b1", "broken", "visited", json!({})).await;
    event(&server, "q1", "qian", "visited", json!({})).await;
    server.settle().await;

    assert_eq!(node_counts(&server, "tags", "in").await["entered"], 1);
    assert_eq!(read_contact(&server, "qian").await["score"], 1.0);
    let (status, body) = server.get("/v1/dead-letters").await;
    assert_eq!(status, 200, "{body}");
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{body}");
    let garbage = letters.iter().find(|l| l["item"].is_null()).unwrap();
    assert!(
        garbage["raw"].as_str().unwrap().contains("not a work item"),
        "{garbage}"
    );
    assert!(
        garbage["error"]
            .as_str()
            .unwrap()
            .contains("corrupt record"),
        "{garbage}"
    );
    let stuck = letters.iter().find(|l| !l["item"].is_null()).unwrap();
    let item = &stuck["item"];
    assert_eq!(
        (&item["type"], &item["event_id"], &item["event"]["name"]),
        (&json!("event"), &json!("b1"), &json!("visited")),
        "{stuck}"
    );
    let error = stuck["error"].as_str().unwrap();
    assert!(
        error.contains("failed 3 times") && error.contains("corrupt record"),
        "{error}"
    );
}
