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

/// The DOMAIN's tag rules and segments over every kind of clause the brute force knows.
async fn define_all(server: &Server) {
    define(server, "tag-rules", "high-intent", json!({"all": [
        {"event": "email_opened", "where": [{"property": "category", "op": "eq", "value": "marketing"}], "within": "7d"},
        {"event": "link_clicked", "where": [{"property": "link_type", "op": "eq", "value": "product"}], "within": "7d"}
    ]})).await;
    define(
        server,
        "tag-rules",
        "south-china-tech",
        json!({"all": [
            {"attribute": "region", "op": "eq", "value": "South China"},
            {"attribute": "industry", "op": "eq", "value": "tech", "type": "text"}
        ]}),
    )
    .await;
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
