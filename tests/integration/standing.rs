//! What models and segments say of a contact reaches people as it stands at that moment — the
//! contact, a search, a template's render and both exports show each score decayed to now,
//! the segments it is in and the tags rules gave it — and the bookkeeping behind segments
//! (window times, generations, the count of moves) does not.

use serde_json::{Value as Json, json};
use wayline::clock::Clock;

use crate::delivery::template;
use crate::scoring::{contact, example, put_model, white_papers};
use crate::server::Server;
use crate::transfer::export;

const DAY: i64 = 86_400_000;

/// No trace of the audience bookkeeping in what a person or an export sees.
fn assert_no_bookkeeping(shown: &Json) {
    let text = shown.to_string();
    assert!(
        shown.get("audience").is_none() && !text.contains("windows") && !text.contains("moves"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_and_segments_show_as_they_stand_in_the_contact_templates_and_exports() {
    let server = Server::start(true).await;
    // `lead` halves every 30 days; `engagement` does not decay.
    put_model(&server, "lead", example("scoring/lead.json")).await;
    put_model(&server, "engagement", example("scoring/engagement.json")).await;
    let readers = json!({"condition": {"event": "whitepaper_downloaded", "within": "365d"}});
    let (status, body) = server.put("/v1/segments/readers", readers.clone()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.put("/v1/tag-rules/reader", readers).await;
    assert_eq!(status, 201, "{body}");
    contact(&server, "li", json!({"company_size": 20})).await;
    contact(&server, "mo", json!({})).await;
    // Two white papers: 40 points in `lead`, 2 in `engagement` (5 at 20 %, twice).
    white_papers(&server, "li", 0..2).await;
    server.settle().await;
    server.advance(30 * DAY).await;

    let (status, li) = server.get("/v1/contacts/li").await;
    assert_eq!(status, 200, "{li}");
    assert_eq!(li["scores"]["lead"]["points"], json!(20.0), "{li}");
    assert_eq!(li["scores"]["engagement"]["points"], json!(2.0), "{li}");
    assert_eq!(li["segments"], json!(["readers"]), "{li}");
    assert_eq!(li["rule_tags"], json!(["reader"]), "{li}");
    assert_no_bookkeeping(&li);

    let (status, found) = server.get("/v1/contacts?tag=reader").await;
    assert_eq!(status, 200, "{found}");
    let found = &found["contacts"];
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found[0]["scores"]["lead"]["points"], json!(20.0), "{found}");
    assert_eq!(found[0]["segments"], json!(["readers"]), "{found}");
    assert_no_bookkeeping(&found[0]);

    // A template prints a model's points (0 where the contact has none) and asks about
    // segments; printing a defined model's score needs no fallback, so no warning says it does.
    let text = "Lead {{ contact.scores.lead }}, engagement {{ contact.scores.engagement }}\
                {% if 'readers' in contact.segments %}, a reader{% endif %}.";
    let body = template(
        &server,
        "standing",
        json!({"channel": "email", "text": text}),
    )
    .await;
    assert_eq!(body["warnings"], json!([]), "{body}");
    // A model that does not exist is no score every contact has: a misspelling is named.
    let misspelt = json!({"channel": "email", "text": "Lead {{ contact.scores.leed }}."});
    let body = template(&server, "misspelt", misspelt).await;
    let warnings = body["warnings"].to_string();
    assert!(warnings.contains("contact.scores.leed"), "{body}");
    for (who, expected) in [
        ("li", "Lead 20.0, engagement 2.0, a reader."),
        ("mo", "Lead 0.0, engagement 0.0."),
    ] {
        let (status, rendered) = server
            .post("/v1/templates/standing/preview", json!({"contact_id": who}))
            .await;
        assert_eq!(status, 200, "{rendered}");
        assert_eq!(rendered["text"], json!(expected), "{who}: {rendered}");
    }

    let ndjson = export(&server, "ndjson").await;
    let exported: Vec<Json> = ndjson
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let li = exported
        .iter()
        .find(|c| c["id"] == "li")
        .expect("li exported");
    assert_eq!(li["scores"]["lead"]["points"], json!(20.0), "{li}");
    assert_eq!(li["segments"], json!(["readers"]), "{li}");
    for contact in &exported {
        assert_no_bookkeeping(contact);
    }

    let csv = export(&server, "csv").await;
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header = rows.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (scores, segments) = (column("scores"), column("segments"));
    let li = rows
        .records()
        .map(Result::unwrap)
        .find(|row| &row[0] == "li")
        .expect("li exported");
    let li_scores: Json = serde_json::from_str(&li[scores]).unwrap();
    assert_eq!(li_scores, json!({"engagement": 2.0, "lead": 20.0}));
    assert_eq!(&li[segments], "readers");
}

/// A journey branches on a model's points as they stand (decay included) and on the segments
/// a contact is in: the condition plugin names `scores.lead` and `segment`, and the host shows
/// it the contact's standing under those names. Naming a model that does not exist is warned
/// of at publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_branches_on_a_models_score_and_segments_as_they_stand() {
    let server = Server::start(true).await;
    put_model(&server, "lead", example("scoring/lead.json")).await;
    let readers = json!({"condition": {"event": "whitepaper_downloaded", "within": "365d"}});
    let (status, body) = server.put("/v1/segments/readers", readers).await;
    assert_eq!(status, 201, "{body}");
    let tier = |label: &str, when: Json| json!({"label": label, "when": when});
    let tag = |id: &str| json!({"id": id, "type": "action", "plugin": "update-contact", "config": {"add_tags": [id]}});
    let journey = json!({
        "name": "Nurture tiers",
        "nodes": [
            {"id": "asked", "type": "entry", "plugin": "event-trigger", "config": {"event": "nurture_check"}},
            {"id": "tier", "type": "condition", "plugin": "attribute-condition", "config": {
                "branches": [
                    tier("hot", json!([{"field": "scores.lead", "op": "gte", "value": 30},
                                       {"field": "segment", "op": "has", "value": "readers"}])),
                    {"label": "warm", "any": [{"field": "scores.lead", "op": "gte", "value": 10},
                                              {"field": "scores.leed", "op": "gte", "value": 10}]}
                ],
                "default": "cold"}},
            tag("hot"), tag("warm"), tag("cold")
        ],
        "edges": [
            {"from": "asked", "to": "tier"},
            {"from": "tier", "to": "hot", "label": "hot"},
            {"from": "tier", "to": "warm", "label": "warm"},
            {"from": "tier", "to": "cold", "label": "cold"}
        ]
    });
    let body = crate::journeys::publish(&server, "nurture", journey).await;
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains("scores.leed") && !warnings.contains("`scores.lead`"),
        "{body}"
    );

    contact(&server, "li", json!({})).await;
    contact(&server, "ana", json!({})).await;
    // Mo's stored attribute of the name a score is read by is not what the plugin reads.
    contact(&server, "mo", json!({"scores.leed": 50})).await;
    // Li's two white papers (40 points) halve to 20 in 30 days; Ana's are fresh.
    white_papers(&server, "li", 0..2).await;
    server.settle().await;
    server.advance(30 * DAY).await;
    white_papers(&server, "ana", 0..2).await;
    server.settle().await;
    for id in ["li", "ana", "mo"] {
        let check = json!({"id": format!("{id}-check"), "contact_id": id, "name": "nurture_check",
                           "timestamp": wayline::model::format_timestamp(server.clock.now())});
        let (status, body) = server.post("/v1/events", check).await;
        assert_eq!(status, 202, "{body}");
    }
    server.settle().await;

    for (id, expected, attributes) in [
        ("li", "warm", json!({})),
        ("ana", "hot", json!({})),
        ("mo", "cold", json!({"scores.leed": 50})),
    ] {
        let (status, shown) = server.get(&format!("/v1/contacts/{id}")).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown["tags"], json!([expected]), "{id}: {shown}");
        // What the plugin was shown is not stored as attributes.
        assert_eq!(shown["attributes"], attributes, "{id}: {shown}");
    }
}
