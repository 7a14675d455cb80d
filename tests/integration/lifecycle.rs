//! Lifecycle stages by rules through the API (DOMAIN.md §1): purchases move a contact from new
//! to growth and stable, 90 quiet days make them dormant on the scheduler's timer (no event,
//! no scan) and start the recall journey; a stage a journey set outside the rules is left
//! alone; every change is a `lifecycle_stage_changed` event with its cause.

use serde_json::{Value as Json, json};
use wayline::clock::Clock;

use crate::server::Server;

const DAY: i64 = 86_400_000;

fn example(path: &str) -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

async fn event(server: &Server, id: &str, contact_id: &str, name: &str) {
    let timestamp = wayline::model::format_timestamp(server.clock.now());
    let (status, body) = server
        .post(
            "/v1/events",
            json!({"id": id, "contact_id": contact_id, "name": name, "timestamp": timestamp}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

async fn stage(server: &Server, id: &str) -> String {
    let (status, body) = server.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["lifecycle_stage"].as_str().unwrap().to_owned()
}

/// The contact's stage changes, oldest first, as `(from, to, cause)`.
async fn changes(server: &Server, id: &str) -> Vec<(String, String, String)> {
    let (_, body) = server
        .get(&format!("/v1/contacts/{id}/events?limit=1000"))
        .await;
    let text = |e: &Json, name: &str| e["properties"][name].as_str().unwrap().to_owned();
    let mut found: Vec<_> = (body["events"].as_array().unwrap().iter())
        .filter(|e| e["name"] == "lifecycle_stage_changed")
        .map(|e| (text(e, "from"), text(e, "to"), text(e, "cause")))
        .collect();
    found.reverse();
    found
}

async fn templates_sent(server: &Server, id: &str) -> Vec<String> {
    let (_, messages) = server.get(&format!("/v1/contacts/{id}/messages")).await;
    (messages.as_array().unwrap().iter())
        .map(|m| m["template"].as_str().unwrap().to_owned())
        .collect()
}

fn change(from: &str, to: &str, cause: &str) -> (String, String, String) {
    (from.into(), to.into(), cause.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_move_stages_and_ninety_quiet_days_start_the_recall_journey() {
    let server = Server::start(true).await;
    let (status, body) = server
        .put("/v1/lifecycle", example("lifecycle/stages.json"))
        .await;
    assert_eq!(status, 200, "{body}");
    crate::journeys::publish(&server, "recall", example("journeys/recall.json")).await;
    for (id, stage) in [
        ("ana", None),
        ("bo", None),
        ("cy", Some("mql")),
        ("dee", None),
    ] {
        let mut contact = json!({"id": id, "attributes": {"email": format!("{id}@example.com"), "first_name": id},
                                 "consents": {"email": "granted"}});
        if let Some(stage) = stage {
            contact["lifecycle_stage"] = json!(stage);
        }
        let (status, body) = server.post("/v1/contacts", contact).await;
        assert!(status == 200 || status == 201, "{body}");
    }
    for id in ["ana", "bo", "cy", "dee"] {
        event(&server, &format!("reg-{id}"), id, "registered").await;
    }
    server.settle().await;
    assert_eq!(stage(&server, "ana").await, "new");
    assert!(changes(&server, "ana").await.is_empty());

    server.advance(DAY).await;
    event(&server, "ana-p1", "ana", "purchased").await;
    for n in 1..=3 {
        event(&server, &format!("bo-p{n}"), "bo", "purchased").await;
    }
    event(&server, "cy-p1", "cy", "purchased").await;
    server.settle().await;
    assert_eq!(stage(&server, "ana").await, "growth");
    assert_eq!(
        changes(&server, "ana").await,
        [change("new", "growth", "purchased")]
    );
    assert_eq!(stage(&server, "bo").await, "stable");
    assert_eq!(
        changes(&server, "bo").await,
        [
            change("new", "growth", "purchased"),
            change("growth", "stable", "purchased")
        ]
    );
    // A stage a journey or an import set outside the rules is theirs to keep.
    assert_eq!(stage(&server, "cy").await, "mql");

    // Bo keeps coming back; Ana goes quiet. 89 days after her purchase she is not dormant.
    for day in (10..=80).step_by(10) {
        server.advance(10 * DAY).await;
        event(&server, &format!("bo-visit-{day}"), "bo", "page_viewed").await;
    }
    server.advance(9 * DAY).await;
    assert_eq!(stage(&server, "ana").await, "growth");
    assert!(templates_sent(&server, "ana").await.is_empty());

    // Day 91: dormant by her timer, and the recall journey sends the coupon, the survey 3
    // days later; Bo, active, stays stable.
    server.advance(DAY + 60_000).await;
    assert_eq!(stage(&server, "ana").await, "dormant");
    assert_eq!(
        changes(&server, "ana").await,
        [
            change("new", "growth", "purchased"),
            change("growth", "dormant", "time")
        ]
    );
    assert_eq!(templates_sent(&server, "ana").await, ["recall-coupon"]);
    assert_eq!(stage(&server, "bo").await, "stable");
    server.advance(3 * DAY).await;
    assert_eq!(
        templates_sent(&server, "ana").await,
        ["recall-coupon", "recall-survey"]
    );

    // She buys again: growth (two purchases), and the recall journey counts its goal.
    event(&server, "ana-p2", "ana", "purchased").await;
    server.settle().await;
    assert_eq!(stage(&server, "ana").await, "growth");
    let (_, ana) = server.get("/v1/contacts/ana").await;
    assert_eq!(ana["activity"]["counts"]["purchased"], 2, "{ana}");

    // Dee never buys: no longer new after 30 days, dormant after 90 quiet ones, and back
    // among the active when she visits again.
    event(&server, "dee-visit", "dee", "page_viewed").await;
    server.settle().await;
    assert_eq!(
        changes(&server, "dee").await,
        [
            change("new", "active", "time"),
            change("active", "dormant", "time"),
            change("dormant", "active", "page_viewed")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_checked_with_the_clause_named_and_nothing_changes_on_refusal() {
    let server = Server::start(true).await;
    let (status, body) = server
        .put(
            "/v1/lifecycle",
            json!({"stages": [{"stage": "dormant", "inactive_for": "90 days"},
                              {"stage": "vip", "count": {"event": "purchased", "at_least": 0}}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_lifecycle");
    let paths: Vec<&str> = (body["error"]["details"]["problems"]
        .as_array()
        .unwrap()
        .iter())
    .map(|p| p["path"].as_str().unwrap())
    .collect();
    assert_eq!(paths, ["stages.0.inactive_for", "stages.1.count.at_least"]);
    let (_, rules) = server.get("/v1/lifecycle").await;
    assert_eq!(rules, json!({"stages": []}));
}

/// The B2B funnel (DOMAIN.md §2) as rules: lead, MQL by score, SQL when sales accept, customer
/// on a purchase; forward only, so an MQL whose score decays stays an MQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_b2b_funnel_moves_forward_by_score_acceptance_and_purchase_never_back() {
    let server = Server::start(true).await;
    let (status, body) = server
        .put("/v1/scoring/models/lead", example("scoring/lead.json"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .put("/v1/lifecycle", example("lifecycle/b2b-funnel.json"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "kai", "attributes": {"company_size": 800}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    event(&server, "kai-reg", "kai", "registered").await;
    server.settle().await;
    assert_eq!(stage(&server, "kai").await, "lead");
    server.advance(60_000).await;
    // 15 for the company, 20 per white paper: 75, then 95.
    for n in 0..3 {
        event(
            &server,
            &format!("kai-wp{n}"),
            "kai",
            "whitepaper_downloaded",
        )
        .await;
    }
    server.settle().await;
    assert_eq!(stage(&server, "kai").await, "lead");
    server.advance(60_000).await;
    event(&server, "kai-wp3", "kai", "whitepaper_downloaded").await;
    server.settle().await;
    assert_eq!(stage(&server, "kai").await, "mql");
    // A month later the score has halved; an MQL stays one.
    server.advance(30 * DAY).await;
    event(&server, "kai-visit", "kai", "page_viewed").await;
    server.settle().await;
    assert_eq!(stage(&server, "kai").await, "mql");
    // Sales accept the lead in the CRM: the update alone moves the funnel, no event needed.
    let (status, _) = server
        .post(
            "/v1/contacts",
            json!({"id": "kai", "attributes": {"sales_accepted": true}}),
        )
        .await;
    assert_eq!(status, 200);
    server.settle().await;
    assert_eq!(stage(&server, "kai").await, "sql");
    server.advance(60_000).await;
    event(&server, "kai-buy", "kai", "purchased").await;
    server.settle().await;
    assert_eq!(
        changes(&server, "kai").await,
        [
            change("new", "lead", "update"),
            change("lead", "mql", "whitepaper_downloaded"),
            change("mql", "sql", "update"),
            change("sql", "customer", "purchased")
        ]
    );
    // A condition counting events in a window is a segment's, not a stage rule's.
    let (status, body) = server
        .put(
            "/v1/lifecycle",
            json!({"stages": [{"stage": "hot", "condition": {"event": "page_viewed", "within": "7d"}}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["details"]["problems"][0]["path"],
        "stages.0.condition"
    );
}

/// Rules put after contacts exist reach every one of them, events or not: an imported contact
/// who never comes back is no longer new after 30 days and dormant after 90, by the timer the
/// rules' sweep gave it; with rules that read the contact, an update moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reach_contacts_who_never_sent_an_event() {
    let server = Server::start(true).await;
    for id in ["eve", "fay"] {
        let (status, body) = server.post("/v1/contacts", json!({"id": id})).await;
        assert_eq!(status, 201, "{body}");
    }
    server.settle().await;
    let (status, body) = server
        .put("/v1/lifecycle", example("lifecycle/stages.json"))
        .await;
    assert_eq!(status, 200, "{body}");
    server.settle().await;
    let (_, eve) = server.get("/v1/contacts/eve").await;
    assert!(eve["activity"]["timer_at"].is_string(), "{eve}");
    server.advance(31 * DAY).await;
    assert_eq!(stage(&server, "eve").await, "active");
    server.advance(60 * DAY).await;
    assert_eq!(stage(&server, "eve").await, "dormant");
    assert_eq!(
        changes(&server, "eve").await,
        [
            change("new", "active", "time"),
            change("active", "dormant", "time")
        ]
    );
    // Rules that read tags: tagging a contact is enough to move her, with no event.
    let rules = json!({"stages": [{"stage": "vip", "condition": {"tag": "vip"}},
                                  {"stage": "dormant", "inactive_for": "90d"},
                                  {"stage": "active", "otherwise": true}]});
    let (status, body) = server.put("/v1/lifecycle", rules).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post("/v1/contacts", json!({"id": "fay", "tags": ["vip"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    server.settle().await;
    assert_eq!(stage(&server, "fay").await, "vip");
    assert_eq!(
        changes(&server, "fay").await.last(),
        Some(&change("dormant", "vip", "update"))
    );
    assert_eq!(stage(&server, "eve").await, "dormant");
}
