//! What an operator reads about one contact: the events that arrived for it, newest first, a
//! page at a time.

use serde_json::{Value as Json, json};

use crate::server::Server;

fn ids(page: &Json) -> Vec<&str> {
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {page}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect()
}

/// Events sent out of order come back newest first by their time, in pages that follow each
/// other without a gap or a repeat; another contact's events are not among them.
#[tokio::test]
async fn a_contacts_events_are_listed_newest_first_a_page_at_a_time() {
    let server = Server::start(true).await;
    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "ana", "attributes": {"email": "ana@example.com"}}),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    // Times out of order; one event for someone else.
    let events: Vec<Json> = [3, 1, 4, 5, 9, 2, 6]
        .iter()
        .map(|minute| {
            json!({"id": format!("ev-{minute}"), "contact_id": "ana", "name": "page_viewed",
                   "properties": {"minute": minute},
                   "timestamp": format!("2026-11-22T09:0{minute}:00Z")})
        })
        .chain([
            json!({"id": "other", "contact_id": "ben", "name": "page_viewed",
                       "timestamp": "2026-11-22T09:07:00Z"}),
        ])
        .collect();
    let (status, body) = server.post("/v1/events", json!(events)).await;
    assert!(status == 200 || status == 202, "{body}");
    server.settle().await;

    let (status, first) = server.get("/v1/contacts/ana/events?limit=3").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids(&first), ["ev-9", "ev-6", "ev-5"], "{first}");
    assert_eq!(first["events"][0]["properties"]["minute"], 9, "{first}");
    let next = first["next"].as_str().unwrap();
    let second = server
        .get(&format!("/v1/contacts/ana/events?limit=3&before={next}"))
        .await
        .1;
    assert_eq!(ids(&second), ["ev-4", "ev-3", "ev-2"], "{second}");
    let next = second["next"].as_str().unwrap();
    let last = server
        .get(&format!("/v1/contacts/ana/events?limit=3&before={next}"))
        .await
        .1;
    assert_eq!(ids(&last), ["ev-1"], "{last}");
    assert!(
        last.get("next").is_none(),
        "the last page has no next: {last}"
    );
    let all = server.get("/v1/contacts/ana/events").await.1;
    assert_eq!(ids(&all).len(), 7, "{all}");

    let (status, body) = server.get("/v1/contacts/nobody/events").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("contact_not_found"))
    );
    for bad in ["before=zz", "before=00", "limit=ten", "since=yesterday"] {
        let (status, body) = server.get(&format!("/v1/contacts/ana/events?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

/// Every page of a search by tag, followed by its `next`, together holds exactly the tagged
/// contacts, each once; email and phone find a contact however they are written; filters
/// combine; an analyst's results are masked.
#[tokio::test]
async fn contacts_are_found_by_email_phone_tag_and_attribute_a_page_at_a_time() {
    let server = Server::start(false).await;
    for n in 0..30 {
        let mut tags = vec![];
        if n % 3 == 0 {
            tags.push("vip");
        }
        let plan = if n % 2 == 0 { "pro" } else { "free" };
        let contact = json!({"id": format!("c{n:02}"), "tags": tags,
            "attributes": {"email": format!("Person.{n}@Example.com"), "plan": plan,
                           "phone": format!("+86 138-0000-{n:04}"), "seats": n}});
        let (status, body) = server.post("/v1/contacts", contact).await;
        assert!(status == 200 || status == 201, "{body}");
    }
    let ids = |page: &Json| -> Vec<String> {
        page["contacts"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut found = Vec::new();
    let mut path = "/v1/contacts?tag=vip&limit=3".to_owned();
    loop {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        found.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/contacts?tag=vip&limit=3&after={next}"),
            None => break,
        }
    }
    let vips: Vec<String> = (0..30).step_by(3).map(|n| format!("c{n:02}")).collect();
    assert_eq!(found, vips);

    let page = server
        .get("/v1/contacts?email=person.7@example.COM")
        .await
        .1;
    assert_eq!(ids(&page), ["c07"], "{page}");
    let page = server.get("/v1/contacts?phone=%2B8613800000012").await.1;
    assert_eq!(ids(&page), ["c12"], "{page}");
    let page = server
        .get("/v1/contacts?tag=vip&attribute=plan&value=pro")
        .await
        .1;
    assert_eq!(ids(&page), ["c00", "c06", "c12", "c18", "c24"], "{page}");
    let page = server.get("/v1/contacts?attribute=seats&value=29").await.1;
    assert_eq!(ids(&page), ["c29"], "{page}");
    let page = server.get("/v1/contacts?email=nobody@example.com").await.1;
    assert_eq!(ids(&page), Vec::<String>::new(), "{page}");
    let page = server
        .get("/v1/contacts?email=person.7@example.com&tag=vip")
        .await
        .1;
    assert_eq!(ids(&page), Vec::<String>::new(), "c07 is not a vip: {page}");
    for bad in ["attribute=plan", "value=pro", "limit=-1", "colour=red"] {
        let (status, body) = server.get(&format!("/v1/contacts?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let (analyst, _) = crate::roles::token(&server, "ada", "analyst", &[]).await;
    let (status, page) = server
        .send_as(
            &analyst,
            reqwest::Method::GET,
            "/v1/contacts?tag=vip&limit=1",
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let email = page["contacts"][0]["attributes"]["email"].as_str().unwrap();
    // Finding a contact by its address would unmask it.
    for by_identity in [
        "email=person.7@example.com",
        "phone=%2B8613800000012",
        "attribute=email&value=person.7@example.com",
    ] {
        let (status, body) = server
            .send_as(
                &analyst,
                reqwest::Method::GET,
                &format!("/v1/contacts?{by_identity}"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{by_identity}: {body}"
        );
    }
    assert!(
        email.contains("***") && !email.to_lowercase().contains("person.0"),
        "{email}"
    );
}

fn welcome_journey() -> Json {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/journeys/welcome.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A contact who registered, got the welcome email and waits in the journey is erased: no tree
/// of the store holds its id, address, phone or any attribute value any more; its message is
/// kept anonymised and will not be sent; someone else's data is untouched; the erasure is in
/// the audit log under a random reference, not the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_contact_leaves_no_trace_in_any_tree() {
    let server = Server::start(true).await;
    crate::journeys::publish(&server, "welcome", welcome_journey()).await;
    // A decaying score above a threshold: a history entry and a decay timer name the contact.
    let model = json!({"plugin": "rule-scorer", "config": {"rules": [{"event": "registered", "points": 50}]},
                       "events": ["registered"], "half_life": "30d", "thresholds": [40]});
    let (status, body) = server.put("/v1/scoring/models/lead", model).await;
    assert_eq!(status, 201, "{body}");
    // A segment with a sliding window: a member key, window times and a timer name the contact.
    let segment = json!({"condition": {"event": "registered", "within": "30d"}});
    let (status, body) = server.put("/v1/segments/registered", segment).await;
    assert_eq!(status, 201, "{body}");
    let secrets = [
        "zelda-x1",
        "zelda.erasable@example.com",
        "+86 139 1234 5678",
        "+8613912345678",
        "Zeldanna",
        "ZX-SPECTRUM-9931",
    ];
    for (id, email, phone, name, code) in [
        ("zelda-x1", secrets[1], secrets[2], secrets[4], secrets[5]),
        (
            "kept-k2",
            "kept@example.com",
            "+86 139 0000 0002",
            "Keeper",
            "KEEP-0002",
        ),
    ] {
        let contact = json!({"id": id, "attributes": {"email": email, "phone": phone,
            "first_name": name, "code": code}, "consents": {"email": "granted"}});
        let (status, body) = server.post("/v1/contacts", contact).await;
        assert!(status == 200 || status == 201, "{body}");
        let event = json!({"id": format!("reg-{id}"), "contact_id": id, "name": "registered",
                           "properties": {"code": code}, "timestamp": "2026-11-22T09:00:00Z"});
        let (status, body) = server.post("/v1/events", event).await;
        assert!(status == 200 || status == 202, "{body}");
    }
    server.settle().await;
    let messages = server.get("/v1/contacts/zelda-x1/messages").await.1;
    assert_eq!(messages.as_array().map(Vec::len), Some(1), "{messages}");
    let stored: Vec<&'static str> = server
        .state
        .store
        .trees_holding(b"ZX-SPECTRUM-9931")
        .unwrap();
    assert!(
        stored.contains(&"contacts") && stored.contains(&"events"),
        "{stored:?}"
    );
    let named = server.state.store.trees_holding(b"zelda-x1").unwrap();
    assert!(
        named.contains(&"score_history")
            && named.contains(&"timers")
            && named.contains(&"segment_members"),
        "{named:?}"
    );

    let (status, erased) = server
        .send(reqwest::Method::DELETE, "/v1/contacts/zelda-x1", None)
        .await;
    assert_eq!(
        (status, &erased["status"]),
        (200, &json!("erased")),
        "{erased}"
    );
    for secret in secrets {
        let holding = server.state.store.trees_holding(secret.as_bytes()).unwrap();
        assert!(holding.is_empty(), "`{secret}` is still in {holding:?}");
    }
    let (status, _) = server.get("/v1/contacts/zelda-x1").await;
    assert_eq!(status, 404);
    let found = server
        .get("/v1/contacts?email=zelda.erasable@example.com")
        .await
        .1;
    assert_eq!(found["contacts"], json!([]), "{found}");
    let (status, body) = server
        .send(reqwest::Method::DELETE, "/v1/contacts/zelda-x1", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("contact_not_found"))
    );

    // The other contact is whole.
    let kept = server.get("/v1/contacts/kept-k2").await.1;
    assert_eq!(kept["attributes"]["code"], "KEEP-0002", "{kept}");
    let events = server.get("/v1/contacts/kept-k2/events").await.1;
    let listed: Vec<&str> = (events["events"].as_array().unwrap().iter())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "reg-kept-k2:lead:crossed:0",
            "kept-k2:segment:1",
            "reg-kept-k2"
        ]
    );
    assert_eq!(
        server
            .get("/v1/contacts/kept-k2/messages")
            .await
            .1
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // The journey's numbers still count the erased contact's entry.
    let stats = server.get("/v1/journeys/welcome/stats").await.1;
    let counts = |node: &str| {
        stats["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .map(|n| n["counts"].clone())
            .unwrap_or_default()
    };
    assert_eq!(counts("registered")["entered"], 2, "{stats}");
    // It no longer waits: it left the journey where it was.
    let waiting = counts("opened-welcome");
    assert_eq!(
        (&waiting["waiting"], &waiting["exited"]),
        (&json!(1), &json!(1)),
        "{stats}"
    );
    // A day on, the wait of the erased contact does not fire (nothing of it is left to run).
    server.advance(25 * 3_600_000).await;
    assert!(
        server
            .state
            .store
            .trees_holding(b"zelda-x1")
            .unwrap()
            .is_empty()
    );

    let audit = server.get("/v1/audit?action=contact.erase").await.1;
    let entry = &audit["audit"][0];
    assert_eq!(entry["object"], erased["audit_object"], "{audit}");
    assert!(
        entry["object"].as_str().unwrap().starts_with("erasure:"),
        "{audit}"
    );
    assert_eq!(entry["detail"]["enrollments"], 1, "{audit}");
    assert_eq!(
        entry["detail"]["queued_work"], 0,
        "the erasure's own item is not counted: {audit}"
    );
    assert_eq!(entry["detail"]["messages_anonymised"], 1, "{audit}");
    assert_eq!(entry["detail"]["score_history_records"], 1, "{audit}");
    assert!(entry["detail"]["events"].as_u64() >= Some(1), "{audit}");
}

/// An erasure asked for right behind a contact's events (no waiting for them to be processed:
/// they may share the worker's batch with it) leaves nothing of the contact either, and the
/// journey's gauges end where they should: no one waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_right_behind_the_contacts_events_leaves_nothing_either() {
    let server = Server::start(true).await;
    crate::journeys::publish(&server, "welcome", welcome_journey()).await;
    for n in 0..6 {
        let (id, code) = (format!("rush-{n}"), format!("RUSH-CODE-{n}"));
        let contact = json!({"id": id, "attributes": {"email": format!("rush{n}@example.com"),
            "first_name": "Rush", "code": code}, "consents": {"email": "granted"}});
        let (status, body) = server.post("/v1/contacts", contact).await;
        assert!(status == 200 || status == 201, "{body}");
        let events: Vec<Json> = ["registered", "page_viewed", "page_viewed"]
            .iter()
            .enumerate()
            .map(|(k, name)| {
                json!({"id": format!("rush-{n}-{k}"), "contact_id": id, "name": name,
                       "properties": {"code": code}, "timestamp": "2026-11-22T09:00:00Z"})
            })
            .collect();
        let (status, body) = server.post("/v1/events", json!(events)).await;
        assert!(status == 200 || status == 202, "{body}");
        let (status, body) = server
            .send(reqwest::Method::DELETE, &format!("/v1/contacts/{id}"), None)
            .await;
        assert!(status == 200 || status == 202, "{body}");
    }
    server.settle().await;
    for n in 0..6 {
        for needle in [
            format!("RUSH-CODE-{n}"),
            format!("rush-{n}"),
            format!("rush{n}@"),
        ] {
            let holding = server.state.store.trees_holding(needle.as_bytes()).unwrap();
            assert!(holding.is_empty(), "`{needle}` is still in {holding:?}");
        }
    }
    let stats = server.get("/v1/journeys/welcome/stats").await.1;
    let waiting = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "opened-welcome")
        .map(|n| n["counts"]["waiting"].clone());
    assert!(
        matches!(&waiting, None | Some(Json::Null)) || waiting == Some(json!(0)),
        "no one waits: {stats}"
    );
}

/// Queue a merge as an identify call does, and let it run.
async fn merge_now(server: &Server, from: &str, into: &str) {
    server
        .state
        .store
        .enqueue(&wayline::store::WorkItem::Merge {
            contact_id: from.into(),
            into: into.into(),
        })
        .unwrap();
    server.state.scheduler.notify_all();
    server.settle().await;
}

/// A visitor identified as a known contact: their merge is queued, and the known contact asks
/// to be erased before it runs. The merge must not bring the erased contact back (not its id,
/// not a new record under it); the visitor stays as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_queued_before_an_erasure_does_not_bring_the_contact_back() {
    let server = Server::start(false).await;
    for contact in [
        json!({"id": "known-9", "attributes": {"email": "known.nine@example.com", "plan": "pro"}}),
        json!({"id": "visitor-3", "attributes": {"utm_source": "ads"}}),
    ] {
        let (status, body) = server.post("/v1/contacts", contact).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = server
        .send(reqwest::Method::DELETE, "/v1/contacts/known-9", None)
        .await;
    assert_eq!(status, 200, "{body}");
    // As if queued by an identify call just before the erasure, in the visitor's partition,
    // behind one of the visitor's events: the same batch takes both.
    let event: wayline::model::Event = serde_json::from_value(json!({"id": "visit-1",
        "contact_id": "visitor-3", "name": "page_viewed", "timestamp": "2026-11-22T09:00:00Z"}))
    .unwrap();
    server.state.store.record_events(&[event]).unwrap();
    merge_now(&server, "visitor-3", "known-9").await;

    let (status, body) = server.get("/v1/contacts/known-9").await;
    assert_eq!(status, 404, "the erased contact came back: {body}");
    let (status, visitor) = server.get("/v1/contacts/visitor-3").await;
    assert_eq!(status, 200, "{visitor}");
    assert_eq!(visitor["id"], "visitor-3", "{visitor}");
    assert_eq!(visitor["attributes"]["utm_source"], "ads");
    // The visitor's event is listed under the visitor, not under the erased id.
    let events = server.get("/v1/contacts/visitor-3/events").await.1;
    assert_eq!(events["events"][0]["id"], "visit-1", "{events}");
    let holding = server.state.store.trees_holding(b"known-9").unwrap();
    assert!(holding.is_empty(), "{holding:?}");

    // Made again under that id (a new sign-up), it is a contact like any: merges go ahead.
    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "known-9", "attributes": {"plan": "team"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    merge_now(&server, "visitor-3", "known-9").await;
    let (status, merged) = server.get("/v1/contacts/visitor-3").await;
    assert_eq!(
        (status, &merged["id"]),
        (200, &json!("known-9")),
        "{merged}"
    );
    assert_eq!(merged["attributes"]["utm_source"], "ads", "{merged}");
}
