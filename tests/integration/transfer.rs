//! Contacts in bulk: an import of 100,000 CSV rows with duplicates and bad rows counted exactly,
//! a file that cannot be read importing nothing, a dry run writing nothing, and an export that
//! imports into another server as the same contacts.

use serde_json::{Value as Json, json};

use crate::server::{Server, TOKEN};

async fn import(server: &Server, content_type: &str, query: &str, body: Vec<u8>) -> (u16, Json) {
    let path = format!("/v1/imports/contacts{query}");
    server.raw(&path, content_type, body).await
}

pub(crate) async fn export(server: &Server, format: &str) -> String {
    let response = server
        .client
        .get(format!(
            "{}/v1/exports/contacts?format={format}",
            server.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Every contact the server holds, by id, from its NDJSON export.
async fn contacts(server: &Server) -> Vec<Json> {
    export(server, "ndjson")
        .await
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// 100,000 rows: 90,000 people, 6,000 rows repeating one of them (the address written in
/// capitals, a new plan), 4,000 bad rows (an address that is not one, a consent that is not
/// a state). The counts come back exact, the bad rows by line, and the duplicates updated the
/// contact their address names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_of_100000_rows_counts_duplicates_and_bad_rows_exactly() {
    let server = Server::start(false).await;
    let mut csv = String::from("email,first_name,plan,seats,tags,consent.email\n");
    let mut bad_lines = Vec::new();
    for n in 0..100_000u32 {
        let line = n + 2;
        match n % 50 {
            // 2 in 50 are bad.
            7 => {
                csv.push_str(&format!("not-an-address-{n},Bad,free,1,,granted\n"));
                bad_lines.push(line);
            }
            8 => {
                csv.push_str(&format!("bad{n}@example.com,Bad,free,1,,maybe\n"));
                bad_lines.push(line);
            }
            // 3 in 50 repeat the person 10 rows before them, in capitals, now on `pro`.
            20..=22 => {
                csv.push_str(&format!(
                    "P{}@EXAMPLE.COM,Again,pro,9,repeat,revoked\n",
                    n - 10
                ));
            }
            _ => csv.push_str(&format!(
                "p{n}@example.com,Person {n},free,{},lead;web,granted\n",
                n % 900
            )),
        }
    }
    let (status, report) = import(&server, "text/csv", "", csv.into_bytes()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            &report["rows"],
            &report["created"],
            &report["updated"],
            &report["duplicates"],
            &report["bad_rows"]
        ),
        (
            &json!(100_000),
            &json!(90_000),
            &json!(6_000),
            &json!(6_000),
            &json!(4_000)
        ),
        "{}",
        serde_json::to_string(&report)
            .unwrap()
            .chars()
            .take(600)
            .collect::<String>()
    );
    let lines: Vec<u64> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = bad_lines.iter().take(100).map(|&l| l as u64).collect();
    assert_eq!(lines, expected);
    assert!(
        report["errors"][1]["message"]
            .as_str()
            .unwrap()
            .contains("maybe"),
        "{}",
        report["errors"][1]
    );

    // A repeated row updated the person it names.
    let found = server.get("/v1/contacts?email=p10@example.com").await.1;
    let person = &found["contacts"][0];
    assert_eq!(person["attributes"]["plan"], "pro", "{found}");
    assert_eq!(
        person["attributes"]["seats"], 9,
        "read as a number: {found}"
    );
    assert_eq!(
        person["consents"]["email"], "revoked",
        "the later row's: {found}"
    );
    let audit = server.get("/v1/audit?action=contacts.import").await.1;
    assert_eq!(audit["audit"][0]["detail"]["created"], 90_000, "{audit}");
}

/// A file with a ragged row, an unterminated quote or bytes that are not UTF-8 is refused
/// with the line and imports nothing, not even the rows before it; a dry run counts and
/// writes nothing; the format comes from the Content-Type or `?format=`.
#[tokio::test]
async fn a_file_that_cannot_be_read_imports_nothing_and_a_dry_run_writes_nothing() {
    let server = Server::start(false).await;
    // Line 4 has a field too many.
    let ragged = "id,email\nc1,c1@example.com\nc2,c2@example.com\nc3,c3@example.com,extra\n";
    let (status, body) = import(&server, "text/csv", "", ragged.into()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("import_malformed")),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["line"], 4, "{body}");
    // An unterminated quote runs to the end of the file.
    let quoted = "id,first_name\nc1,\"Ann\nc2,Bo\n";
    let (status, body) = import(&server, "text/csv", "", quoted.into()).await;
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            &body["error"]["details"]["line"]
        ),
        (422, Some("import_malformed"), &json!(2)),
        "{body}"
    );
    // Bytes that are not UTF-8 on line 2.
    let mut ndjson = b"{\"id\": \"n1\"}\n{\"id\": \"n2\", \"attributes\": {\"name\": \"".to_vec();
    ndjson.extend_from_slice(&[0xff, 0xfe]);
    ndjson.extend_from_slice(b"\"}}\n");
    let (status, body) = import(&server, "application/x-ndjson", "", ndjson).await;
    assert_eq!(
        (status, &body["error"]["details"]["line"]),
        (422, &json!(2)),
        "{body}"
    );
    assert_eq!(
        contacts(&server).await,
        Vec::<Json>::new(),
        "nothing was imported"
    );

    let good = "{\"id\": \"d1\", \"tags\": [\"x\"]}\n\n{\"id\": \"d2\"}\n{\"id\": 3}\n";
    let (status, report) = import(
        &server,
        "application/x-ndjson",
        "?dry_run=true",
        good.into(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["rows"], &report["bad_rows"], &report["dry_run"]),
        (&json!(3), &json!(1), &json!(true))
    );
    assert_eq!(report["errors"][0]["line"], 4, "{report}");
    assert_eq!(
        contacts(&server).await,
        Vec::<Json>::new(),
        "a dry run writes nothing"
    );

    let (status, body) = import(&server, "text/plain", "", good.into()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, report) = import(&server, "text/plain", "?format=ndjson", good.into()).await;
    assert_eq!((status, &report["created"]), (200, &json!(2)), "{report}");
}

/// What one server exports (CSV, then NDJSON) another imports as the same contacts: ids,
/// attributes with their types, tags, stages, consents and time zones.
#[tokio::test]
async fn an_export_imports_into_another_server_as_the_same_contacts() {
    let source = Server::start(false).await;
    let people = [
        json!({"id": "a", "attributes": {"email": "a@example.com", "seats": 500, "ratio": 0.5,
               "zip": "01234", "vip": true, "note": "line one, \"quoted\"\nline two"},
               "tags": ["lead", "web"], "consents": {"email": "granted", "sms": "revoked"},
               "timezone": "Asia/Shanghai", "lifecycle_stage": "mql"}),
        json!({"id": "b", "attributes": {"phone": "+86 138 0013 8000"}}),
        json!({"id": "c,with comma"}),
        json!({"id": "=HYPERLINK(\"http://evil.example\")", "tags": ["-x"]}),
    ];
    for person in people {
        let (status, body) = source.post("/v1/contacts", person).await;
        assert!(status == 200 || status == 201, "{body}");
    }
    let strip = |mut contacts: Vec<Json>| {
        for contact in &mut contacts {
            let object = contact.as_object_mut().unwrap();
            object.remove("created_at");
            object.remove("updated_at");
        }
        contacts
    };
    let exported = strip(contacts(&source).await);
    assert_eq!(exported.len(), 4);
    let csv = export(&source, "csv").await;
    assert!(
        csv.contains("\"'=HYPERLINK(") && !csv.contains(",=HYPERLINK") && csv.contains(",'-x,"),
        "cells a spreadsheet would run are guarded: {csv}"
    );
    for format in ["csv", "ndjson"] {
        let file = export(&source, format).await;
        let target = Server::start(false).await;
        let content_type = if format == "csv" {
            "text/csv"
        } else {
            "application/x-ndjson"
        };
        let (status, report) = import(&target, content_type, "", file.into_bytes()).await;
        assert_eq!(
            (status, &report["created"], &report["bad_rows"]),
            (200, &json!(4), &json!(0)),
            "{format}: {report}"
        );
        assert_eq!(strip(contacts(&target).await), exported, "{format}");
    }
}

/// Rows written together resolve as rows written one by one: a contact that moves to a new
/// address frees its old one for the row after it, which is then someone new.
#[tokio::test]
async fn an_address_a_row_gives_up_is_free_for_the_rows_after_it() {
    let server = Server::start(false).await;
    let (status, body) = server
        .post(
            "/v1/contacts",
            json!({"id": "amy", "attributes": {"email": "old@example.com"}}),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    let file = "id,email,first_name\namy,new@example.com,Amy\n,old@example.com,Bob\n";
    let (status, report) = import(&server, "text/csv", "", file.into()).await;
    assert_eq!(
        (
            status,
            &report["created"],
            &report["updated"],
            &report["bad_rows"]
        ),
        (200, &json!(1), &json!(1), &json!(0)),
        "{report}"
    );
    let amy = server.get("/v1/contacts/amy").await.1;
    assert_eq!(
        (
            &amy["attributes"]["email"],
            &amy["attributes"]["first_name"]
        ),
        (&json!("new@example.com"), &json!("Amy")),
        "{amy}"
    );
    let bob = server.get("/v1/contacts?email=old@example.com").await.1;
    let bob = &bob["contacts"][0];
    assert!(
        bob["id"] != "amy" && bob["attributes"]["first_name"] == "Bob",
        "{bob}"
    );
}

/// A contact's state the store derives — its model scores, its lifecycle activity, its
/// segments — is in the export and left out by an import (the importing store keeps its own):
/// the line imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_contact_with_scores_and_activity_imports_again() {
    let source = Server::start(true).await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let read = |path: &str| -> Json {
        serde_json::from_slice(&std::fs::read(examples.join(path)).unwrap()).unwrap()
    };
    let (status, body) = source
        .put("/v1/scoring/models/lead", read("scoring/lead.json"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = source
        .put("/v1/lifecycle", read("lifecycle/stages.json"))
        .await;
    assert_eq!(status, 200, "{body}");
    let segment = json!({"condition": {"event": "whitepaper_downloaded", "within": "365d"}});
    let (status, body) = source.put("/v1/segments/readers", segment).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = source.post("/v1/contacts", json!({"id": "li"})).await;
    assert!(status == 200 || status == 201, "{body}");
    let event = json!({"id": "wp", "contact_id": "li", "name": "whitepaper_downloaded",
                       "timestamp": "2026-11-22T09:00:00Z"});
    let (status, body) = source.post("/v1/events", event).await;
    assert_eq!(status, 202, "{body}");
    source.settle().await;
    let file = export(&source, "ndjson").await;
    assert!(
        file.contains("\"scores\"")
            && file.contains("\"activity\"")
            && file.contains("\"segments\":[\"readers\"]"),
        "{file}"
    );
    let target = Server::start(false).await;
    let (status, report) = import(&target, "application/x-ndjson", "", file.into_bytes()).await;
    assert_eq!(
        (status, &report["created"], &report["bad_rows"]),
        (200, &json!(1), &json!(0)),
        "{report}"
    );
}
