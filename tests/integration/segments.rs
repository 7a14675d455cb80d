//! Segments and tag rules through the API: membership kept incrementally as events, updates
//! and the virtual clock move stays equal to a brute-force recomputation; the DOMAIN's tag
//! rules add and remove their tags; entering a segment starts a journey; definitions are
//! refused clause by clause.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value as Json, json};
use wayline::clock::Clock;

use crate::server::Server;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// A small, seeded random source: the same run every time.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// What the test itself knows of a contact, to decide membership by brute force.
#[derive(Default, Clone)]
struct Known {
    attributes: BTreeMap<String, Json>,
    tags: BTreeSet<String>,
    email_consent: bool,
    /// `(name, properties, time)`.
    events: Vec<(String, Json, i64)>,
}

impl Known {
    /// How many events named `name` whose properties pass `filter` happened in the last
    /// `within` before `now`.
    fn count(&self, name: &str, filter: impl Fn(&Json) -> bool, within: i64, now: i64) -> usize {
        (self.events.iter())
            .filter(|(n, p, at)| n == name && filter(p) && *at > now - within && *at <= now)
            .count()
    }

    fn high_intent(&self, now: i64) -> bool {
        self.count(
            "email_opened",
            |p| p["category"] == "marketing",
            7 * DAY,
            now,
        ) >= 1
            && self.count(
                "link_clicked",
                |p| p["link_type"] == "product",
                7 * DAY,
                now,
            ) >= 1
    }

    /// The segments this test defines, decided from scratch.
    fn segments(&self, now: i64) -> BTreeSet<&'static str> {
        let attribute = |name: &str| self.attributes.get(name).cloned().unwrap_or(Json::Null);
        let mut holds = BTreeSet::new();
        if self.count("page_viewed", |p| p["page"] == "product", 7 * DAY, now) >= 3 {
            holds.insert("product-viewers");
        }
        if attribute("region") == "South China" && attribute("industry") == "tech" {
            holds.insert("south-china-tech");
        }
        if attribute("size").as_i64().is_some_and(|s| s >= 500) || self.tags.contains("vip") {
            holds.insert("big-or-vip");
        }
        if self.count("email_opened", |_| true, 2 * DAY, now) >= 1
            && self.count("link_clicked", |_| true, DAY, now) == 0
        {
            holds.insert("opened-not-clicked");
        }
        let purchases = self.count("purchased", |_| true, 30 * DAY, now);
        if (1..=2).contains(&purchases) && self.email_consent {
            holds.insert("reachable-occasional-buyers");
        }
        if self.high_intent(now) {
            holds.insert("high-intent");
        }
        holds
    }
}

async fn define(server: &Server, kind: &str, name: &str, condition: Json) {
    let (status, body) = server
        .put(
            &format!("/v1/{kind}/{name}"),
            json!({"condition": condition}),
        )
        .await;
    assert!(status == 201 || status == 200, "{name}: {status} {body}");
}

/// The DOMAIN's rule "region = South China and industry = tech".
fn south_china_tech() -> Json {
    json!({"all": [
        {"attribute": "region", "op": "eq", "value": "South China"},
        {"attribute": "industry", "op": "eq", "value": "tech", "type": "text"}
    ]})
}

/// The DOMAIN's tag rules and segments over every kind of clause the brute force knows.
async fn define_all(server: &Server) {
    define(server, "tag-rules", "high-intent", json!({"all": [
        {"event": "email_opened", "where": [{"property": "category", "op": "eq", "value": "marketing"}], "within": "7d"},
        {"event": "link_clicked", "where": [{"property": "link_type", "op": "eq", "value": "product"}], "within": "7d"}
    ]})).await;
    define(server, "tag-rules", "south-china-tech", south_china_tech()).await;
    define(server, "segments", "product-viewers", json!(
        {"event": "page_viewed", "where": [{"property": "page", "op": "eq", "value": "product"}], "within": "7d", "at_least": 3}
    )).await;
    define(
        server,
        "segments",
        "south-china-tech",
        json!({"tag": "south-china-tech"}),
    )
    .await;
    define(
        server,
        "segments",
        "big-or-vip",
        json!({"any": [
            {"attribute": "size", "op": "gte", "value": 500, "type": "number"},
            {"tag": "vip"}
        ]}),
    )
    .await;
    define(
        server,
        "segments",
        "opened-not-clicked",
        json!({"all": [
            {"event": "email_opened", "within": "2d"},
            {"not": {"event": "link_clicked", "within": "1d"}}
        ]}),
    )
    .await;
    define(
        server,
        "segments",
        "reachable-occasional-buyers",
        json!({"all": [
            {"event": "purchased", "within": "30d", "at_least": 1, "at_most": 2},
            {"consent": "email"}
        ]}),
    )
    .await;
    define(
        server,
        "segments",
        "high-intent",
        json!({"tag": "high-intent"}),
    )
    .await;
}

const SEGMENTS: [&str; 6] = [
    "product-viewers",
    "south-china-tech",
    "big-or-vip",
    "opened-not-clicked",
    "reachable-occasional-buyers",
    "high-intent",
];

/// Every member of a segment, page by page.
async fn members(server: &Server, segment: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut after = String::new();
    loop {
        let (status, page) = server
            .get(&format!("/v1/segments/{segment}/members?limit=97{after}"))
            .await;
        assert_eq!(status, 200, "{page}");
        for id in page["members"].as_array().unwrap() {
            assert!(
                found.insert(id.as_str().unwrap().to_owned()),
                "listed twice"
            );
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return found,
        }
    }
}

/// Check every segment against the brute force; the sizes found.
async fn compare(server: &Server, known: &BTreeMap<String, Known>, when: &str) -> Vec<usize> {
    let now = server.clock.now();
    let mut sizes = Vec::new();
    for segment in SEGMENTS {
        let expected: BTreeSet<String> = (known.iter())
            .filter(|(_, k)| k.segments(now).contains(segment))
            .map(|(id, _)| id.clone())
            .collect();
        let found = members(server, segment).await;
        let missing: Vec<_> = expected.difference(&found).take(5).collect();
        let extra: Vec<_> = found.difference(&expected).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{when}: segment {segment}: {} expected, {} found; missing {missing:?}, extra {extra:?}",
            expected.len(),
            found.len()
        );
        let (_, view) = server.get(&format!("/v1/segments/{segment}")).await;
        assert_eq!(view["size"], expected.len(), "{when}: size of {segment}");
        sizes.push(expected.len());
    }
    sizes
}

async fn import(server: &Server, lines: &[Json]) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (status, report) = server
        .raw(
            "/v1/imports/contacts",
            "application/x-ndjson",
            body.into_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_stays_equal_to_a_brute_force_recomputation_as_events_updates_and_time_move() {
    let server = Server::start(false).await;
    let mut dice = Dice(0x5eed_cafe);
    let regions = ["South China", "North China", "East China"];
    let industries = ["tech", "retail", "finance"];
    let mut known: BTreeMap<String, Known> = BTreeMap::new();

    // Half the contacts exist before the definitions (the sweep looks at them), half after.
    let contact = |dice: &mut Dice, id: &str, known: &mut BTreeMap<String, Known>| {
        let k = known.entry(id.to_owned()).or_default();
        let region = dice.pick(&regions);
        let industry = dice.pick(&industries);
        let size = dice.below(1_000) as i64;
        k.attributes.insert("region".into(), json!(region));
        k.attributes.insert("industry".into(), json!(industry));
        k.attributes.insert("size".into(), json!(size));
        k.email_consent = dice.below(3) > 0;
        let mut line = json!({"id": id, "attributes": {"region": region, "industry": industry, "size": size},
                              "consents": {"email": if k.email_consent { "granted" } else { "revoked" }}});
        if dice.below(10) == 0 {
            k.tags.insert("vip".into());
            line["tags"] = json!(["vip"]);
        }
        line
    };
    let first: Vec<Json> = (0..250)
        .map(|n| contact(&mut dice, &format!("c{n:04}"), &mut known))
        .collect();
    import(&server, &first).await;
    server.settle().await;
    define_all(&server).await;
    server.settle().await;
    let second: Vec<Json> = (250..500)
        .map(|n| contact(&mut dice, &format!("c{n:04}"), &mut known))
        .collect();
    import(&server, &second).await;
    server.settle().await;
    compare(&server, &known, "after import").await;

    let ids: Vec<String> = known.keys().cloned().collect();
    let mut next_event = 0;
    // How many contacts time alone took out of each segment, over the rounds.
    let mut slid = [0usize; SEGMENTS.len()];
    let mut largest = [0usize; SEGMENTS.len()];
    for round in 0..14 {
        // A burst of events, some stamped up to a day in the past.
        let mut batch = Vec::new();
        for _ in 0..400 {
            let id = &ids[dice.below(ids.len() as u64) as usize];
            let (name, properties) = match dice.below(5) {
                0 => (
                    "page_viewed",
                    json!({"page": dice.pick(&["product", "pricing", "blog"])}),
                ),
                1 => (
                    "email_opened",
                    json!({"category": dice.pick(&["marketing", "service"])}),
                ),
                2 => (
                    "link_clicked",
                    json!({"link_type": dice.pick(&["product", "help"])}),
                ),
                3 => ("purchased", json!({"amount": dice.below(500)})),
                _ => ("page_viewed", json!({"page": "product"})),
            };
            let late = if dice.below(4) == 0 {
                dice.below(DAY as u64) as i64
            } else {
                0
            };
            let at = server.clock.now() - late;
            known
                .get_mut(id)
                .unwrap()
                .events
                .push((name.into(), properties.clone(), at));
            next_event += 1;
            batch.push(json!({"id": format!("e{next_event}"), "contact_id": id, "name": name,
                              "properties": properties, "timestamp": wayline::model::format_timestamp(at)}));
        }
        let (status, body) = server.post("/v1/events", Json::Array(batch)).await;
        assert_eq!(status, 202, "{body}");
        // Some contacts change: a new region or size, a vip tag, consent withdrawn or given.
        let mut updates = Vec::new();
        for _ in 0..20 {
            let id = &ids[dice.below(ids.len() as u64) as usize];
            let k = known.get_mut(id).unwrap();
            let region = dice.pick(&regions);
            let size = dice.below(1_000) as i64;
            k.attributes.insert("region".into(), json!(region));
            k.attributes.insert("size".into(), json!(size));
            k.email_consent = !k.email_consent;
            let mut line = json!({"id": id, "attributes": {"region": region, "size": size},
                                  "consents": {"email": if k.email_consent { "granted" } else { "revoked" }}});
            if dice.below(5) == 0 {
                k.tags.insert("vip".into());
                line["tags"] = json!(["vip"]);
            }
            updates.push(line);
        }
        import(&server, &updates).await;
        server.settle().await;
        let before = compare(&server, &known, &format!("round {round}, after events")).await;
        // Time passes: windows slide on the contacts' timers, with no event.
        server.advance((dice.below(40) as i64 + 1) * HOUR).await;
        let after = compare(
            &server,
            &known,
            &format!("round {round}, after time passed"),
        )
        .await;
        for n in 0..SEGMENTS.len() {
            slid[n] += before[n].saturating_sub(after[n]);
            largest[n] = largest[n].max(before[n]);
        }
    }
    // The run was not a trivial one: every segment had members, and the windowed ones lost
    // some to time alone.
    assert!(largest.iter().all(|n| *n > 5), "sizes {largest:?}");
    for (n, segment) in SEGMENTS.iter().enumerate() {
        // (A 30-day window outlasts the rounds: its segment empties in the quiet spell below.)
        if ![
            "south-china-tech",
            "big-or-vip",
            "reachable-occasional-buyers",
        ]
        .contains(segment)
        {
            assert!(
                slid[n] > 0,
                "{segment}: nobody left by time alone ({slid:?})"
            );
        }
    }
    // A long quiet spell empties every window.
    server.advance(31 * DAY).await;
    let sizes = compare(&server, &known, "after 31 quiet days").await;
    assert_eq!(
        [sizes[0], sizes[3], sizes[4], sizes[5]],
        [0; 4],
        "every windowed segment is empty"
    );

    // A contact's entered and left events agree with where it ends.
    for id in ids.iter().take(40) {
        let (_, body) = server
            .get(&format!("/v1/contacts/{id}/events?limit=1000"))
            .await;
        let mut inside: BTreeMap<String, i64> = BTreeMap::new();
        for event in body["events"].as_array().unwrap().iter().rev() {
            let step = match event["name"].as_str().unwrap() {
                "segment_entered" => 1,
                "segment_left" => -1,
                _ => continue,
            };
            let segment = event["properties"]["segment"].as_str().unwrap().to_owned();
            let now = inside.entry(segment.clone()).or_default();
            *now += step;
            assert!(
                (0..=1).contains(now),
                "{id}: {segment} entered or left twice in a row"
            );
        }
        let now = server.clock.now();
        for segment in SEGMENTS {
            let member = known[id].segments(now).contains(segment);
            assert_eq!(
                inside.get(segment).copied().unwrap_or(0) == 1,
                member,
                "{id} {segment}"
            );
        }
    }
}

fn example(path: &str) -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

async fn contact(server: &Server, id: &str) -> Json {
    let (status, body) = server.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn tags(server: &Server, id: &str) -> Vec<String> {
    let body = contact(server, id).await;
    let mut tags: Vec<String> = serde_json::from_value(body["tags"].clone()).unwrap();
    tags.sort();
    tags
}

async fn templates_sent(server: &Server, id: &str) -> Vec<String> {
    let (_, messages) = server.get(&format!("/v1/contacts/{id}/messages")).await;
    (messages.as_array().unwrap().iter())
        .map(|m| m["template"].as_str().unwrap().to_owned())
        .collect()
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

/// The contact's segment moves, oldest first, as `(event name, segment)`.
async fn moves(server: &Server, id: &str) -> Vec<(String, String)> {
    let (_, body) = server
        .get(&format!("/v1/contacts/{id}/events?limit=1000"))
        .await;
    let mut found: Vec<_> = (body["events"].as_array().unwrap().iter())
        .filter(|e| e["name"].as_str().unwrap().starts_with("segment_"))
        .map(|e| {
            let segment = e["properties"]["segment"].as_str().unwrap().to_owned();
            (e["name"].as_str().unwrap().to_owned(), segment)
        })
        .collect();
    found.reverse();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_domain_tag_rules_follow_behaviour_and_a_segment_journey_backfills_then_enrolls_who_enters()
 {
    let server = Server::start(true).await;
    for (id, region, industry) in [
        ("ana", "South China", "tech"),
        ("bo", "South China", "retail"),
        ("cy", "North China", "tech"),
    ] {
        let (status, body) = server
            .post(
                "/v1/contacts",
                json!({"id": id, "attributes": {"email": format!("{id}@example.com"), "region": region, "industry": industry},
                       "consents": {"email": "granted"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Cy already shows intent before anything is defined.
    event(
        &server,
        "cy-open",
        "cy",
        "email_opened",
        json!({"channel": "email"}),
    )
    .await;
    event(
        &server,
        "cy-click",
        "cy",
        "link_clicked",
        json!({"url": "https://example.com/products/crm"}),
    )
    .await;
    server.settle().await;
    assert!(tags(&server, "cy").await.is_empty());

    for name in ["high-intent", "south-china-tech"] {
        let (status, body) = server
            .put(
                &format!("/v1/tag-rules/{name}"),
                example(&format!("audiences/tag-rules/{name}.json")),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = server
        .put(
            "/v1/segments/high-intent",
            example("audiences/segments/high-intent.json"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    server.settle().await;
    // The sweep looked at everyone: attributes by rule, and Cy's past events counted.
    assert_eq!(tags(&server, "ana").await, ["south-china-tech"]);
    assert!(tags(&server, "bo").await.is_empty());
    assert_eq!(tags(&server, "cy").await, ["high-intent"]);
    let (_, segment) = server.get("/v1/segments/high-intent").await;
    assert_eq!(
        (segment["size"].clone(), segment["sample"].clone()),
        (json!(1), json!(["cy"]))
    );

    // Published now, the journey backfills Cy; the sweep shows it done.
    crate::journeys::publish(&server, "high-intent", example("journeys/high-intent.json")).await;
    server.settle().await;
    assert_eq!(templates_sent(&server, "cy").await, ["high-intent-offer"]);
    let (_, sweeps) = server.get("/v1/sweeps").await;
    let backfill = (sweeps["sweeps"].as_array().unwrap().iter())
        .find(|s| s["id"] == "backfill:high-intent:v1")
        .unwrap();
    assert_eq!(backfill["queued"], 1, "{backfill}");
    assert!(backfill["finished_at"].is_string(), "{backfill}");

    // Ana shows intent a day later: she enters, and the journey's trigger takes her in. An
    // open alone is not enough.
    server.advance(DAY).await;
    event(
        &server,
        "ana-open",
        "ana",
        "email_opened",
        json!({"channel": "email"}),
    )
    .await;
    server.settle().await;
    assert!(templates_sent(&server, "ana").await.is_empty());
    event(
        &server,
        "ana-help",
        "ana",
        "link_clicked",
        json!({"url": "https://example.com/help"}),
    )
    .await;
    event(
        &server,
        "ana-click",
        "ana",
        "link_clicked",
        json!({"url": "https://example.com/products/crm"}),
    )
    .await;
    server.settle().await;
    assert_eq!(
        tags(&server, "ana").await,
        ["high-intent", "south-china-tech"]
    );
    assert_eq!(templates_sent(&server, "ana").await, ["high-intent-offer"]);

    // Bo's industry changes: the update alone makes the rule hold.
    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "bo", "attributes": {"industry": "tech"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.settle().await;
    assert_eq!(tags(&server, "bo").await, ["south-china-tech"]);

    // A week after their clicks, nobody is high-intent any more: the tags go by the contacts'
    // timers, and they leave the segment.
    server.advance(6 * DAY).await;
    assert!(tags(&server, "cy").await.is_empty());
    assert_eq!(
        tags(&server, "ana").await,
        ["high-intent", "south-china-tech"]
    );
    server.advance(DAY).await;
    assert_eq!(tags(&server, "ana").await, ["south-china-tech"]);
    for id in ["ana", "cy"] {
        assert_eq!(
            moves(&server, id).await,
            [
                ("segment_entered".to_owned(), "high-intent".to_owned()),
                ("segment_left".to_owned(), "high-intent".to_owned())
            ],
            "{id}"
        );
    }
    let (_, segment) = server.get("/v1/segments/high-intent").await;
    assert_eq!(segment["size"], 0);

    // Deleted, a segment is gone with its members; a journey cannot backfill from it.
    let (status, _) = server
        .send(reqwest::Method::DELETE, "/v1/segments/high-intent", None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = server.get("/v1/segments/high-intent/members").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("segment_not_found"))
    );
    let (status, body) = server
        .put(
            "/v1/journeys/high-intent",
            example("journeys/high-intent.json"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.act("/v1/journeys/high-intent/publish").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string()
            .contains("segment `high-intent`, which does not exist"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_are_refused_clause_by_clause_and_nothing_is_stored() {
    let server = Server::start(false).await;
    let (status, body) = server
        .put(
            "/v1/segments/bad",
            json!({"condition": {"all": [
                {"attribute": "size", "op": "gte", "value": "big"},
                {"attribute": "region", "op": "eq", "value": "x", "type": "colour"},
                {"event": "page_viewed", "within": "400d"},
                {"event": "page_viewed", "within": "7d", "at_least": 5, "at_most": 2},
                {"score": "lead", "op": "contains", "value": "x"}
            ]}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_definition");
    let paths: Vec<&str> = (body["error"]["details"]["problems"]
        .as_array()
        .unwrap()
        .iter())
    .map(|p| p["path"].as_str().unwrap())
    .collect();
    assert_eq!(
        paths,
        [
            "condition.all.0.value",
            "condition.all.1.type",
            "condition.all.2.within",
            "condition.all.3.at_most",
            "condition.all.4.value"
        ],
        "{body}"
    );
    let (status, body) = server
        .put(
            "/v1/tag-rules/Bad%20Tag",
            json!({"condition": {"tag": "x"}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_definition"))
    );
    let (status, body) = server
        .put(
            "/v1/segments/x",
            json!({"condition": {"tag": "x"}, "colour": 1}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("invalid_request"))
    );
    for path in [
        "/v1/segments/bad",
        "/v1/tag-rules/Bad%20Tag",
        "/v1/segments/x",
    ] {
        let (status, _) = server.get(path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, list) = server.get("/v1/segments").await;
    assert_eq!(list, json!({"segments": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_score_segment_follows_decay_on_the_virtual_clock() {
    let server = Server::start(true).await;
    let (status, body) = server
        .put("/v1/scoring/models/lead", example("scoring/lead.json"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .put(
            "/v1/segments/hot-leads",
            example("audiences/segments/hot-leads.json"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "dan", "attributes": {"email": "dan@example.com"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Four white papers and a form: 90 points.
    for n in 0..4 {
        event(
            &server,
            &format!("wp{n}"),
            "dan",
            "whitepaper_downloaded",
            json!({}),
        )
        .await;
    }
    event(&server, "form", "dan", "form_submitted", json!({})).await;
    server.settle().await;
    let (_, segment) = server.get("/v1/segments/hot-leads").await;
    assert_eq!(segment["sample"], json!(["dan"]), "{segment}");
    // 90 halves to 80 in about 5 days (30-day half-life): out by the contact's timer.
    server.advance(5 * DAY).await;
    assert_eq!(moves(&server, "dan").await.len(), 1);
    server.advance(DAY).await;
    assert_eq!(
        moves(&server, "dan").await,
        [
            ("segment_entered".to_owned(), "hot-leads".to_owned()),
            ("segment_left".to_owned(), "hot-leads".to_owned())
        ]
    );
    // Made a customer, Dan stays out however high the score goes.
    let (status, _) = server
        .post(
            "/v1/contacts",
            json!({"id": "dan", "lifecycle_stage": "customer"}),
        )
        .await;
    assert_eq!(status, 200);
    for n in 4..8 {
        event(
            &server,
            &format!("wp{n}"),
            "dan",
            "whitepaper_downloaded",
            json!({}),
        )
        .await;
    }
    server.settle().await;
    assert_eq!(moves(&server, "dan").await.len(), 2);
}

/// A tag rule takes away only the tags it gave: the same tag set by hand stays when the rule
/// does not hold, a contact merged into another brings the rule's tags as the rule's, and
/// deleting the rule takes its tags from everyone it gave them to.
#[tokio::test]
async fn a_tag_rule_takes_away_only_the_tags_it_gave_and_they_go_with_the_rule() {
    let server = Server::start(true).await;
    define(&server, "tag-rules", "south-china-tech", south_china_tech()).await;
    for (id, region, tags) in [
        ("ana", "South China", json!([])),
        ("dee", "North China", json!(["south-china-tech", "vip"])),
    ] {
        let (status, body) = server
            .post(
                "/v1/contacts",
                json!({"id": id, "attributes": {"region": region, "industry": "tech"}, "tags": tags}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    server.settle().await;
    assert_eq!(tags(&server, "ana").await, ["south-china-tech"]);
    assert_eq!(
        tags(&server, "dee").await,
        ["south-china-tech", "vip"],
        "set by hand, kept though the rule does not hold"
    );

    // The rule stops holding for Ana, and starts again.
    for (industry, expected) in [("retail", json!([])), ("tech", json!(["south-china-tech"]))] {
        let (status, body) = server
            .post(
                "/v1/contacts",
                json!({"id": "ana", "attributes": {"industry": industry}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        server.settle().await;
        assert_eq!(json!(tags(&server, "ana").await), expected, "{industry}");
    }

    // Fay, tagged by the rule, turns out to be Gus, for whom it does not hold (his region
    // wins): her tags join his, and the one the rule gave goes.
    for (id, region) in [("fay", "South China"), ("gus", "North China")] {
        let (status, body) = server
            .post(
                "/v1/contacts",
                json!({"id": id, "attributes": {"region": region, "industry": "tech"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    server.settle().await;
    assert_eq!(tags(&server, "fay").await, ["south-china-tech"]);
    server
        .state
        .store
        .enqueue(&wayline::store::WorkItem::Merge {
            contact_id: "fay".into(),
            into: "gus".into(),
        })
        .unwrap();
    server.state.scheduler.notify_all();
    server.settle().await;
    assert!(tags(&server, "gus").await.is_empty(), "the rule's tag went");

    let (status, _) = server
        .send(
            reqwest::Method::DELETE,
            "/v1/tag-rules/south-china-tech",
            None,
        )
        .await;
    assert_eq!(status, 204);
    server.settle().await;
    assert!(tags(&server, "ana").await.is_empty(), "gone with the rule");
    assert_eq!(tags(&server, "dee").await, ["south-china-tech", "vip"]);
}

/// A sweep queues a page's work in a partition as one record. When one contact's work in it
/// cannot run (its record on disk is corrupt), the other contacts of the page are still looked
/// at, and only that contact's work is set aside, where an operator sees it.
#[tokio::test]
async fn a_contact_a_sweep_cannot_look_at_holds_up_no_other_of_its_page() {
    let partition = wayline::store::partition_of("broken");
    let mates: BTreeSet<String> = (0..)
        .map(|n| format!("mate-{n}"))
        .filter(|id| wayline::store::partition_of(id) == partition)
        .take(5)
        .collect();
    let server = Server::start_on(true, |store| {
        let broken: &[u8] = br#"{"id": "broken", "attrib"#;
        crate::support::write_on_disk(store, &[("contacts", b"broken", broken)])
    })
    .await;
    for id in &mates {
        let contact = json!({"id": id, "attributes": {"plan": "pro"}});
        let (status, body) = server.post("/v1/contacts", contact).await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    server.settle().await;
    define(
        &server,
        "segments",
        "pro",
        json!({"attribute": "plan", "op": "eq", "value": "pro"}),
    )
    .await;
    server.settle().await;

    assert_eq!(members(&server, "pro").await, mates);
    let (status, body) = server.get("/v1/dead-letters").await;
    assert_eq!(status, 200, "{body}");
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{body}");
    assert_eq!(
        letters[0]["item"],
        json!({"type": "refresh", "contact_id": "broken"}),
        "{body}"
    );
    let error = letters[0]["error"].as_str().unwrap();
    assert!(
        error.contains("failed 3 times") && error.contains("corrupt record"),
        "{error}"
    );
}
