//! Plugins uploaded through the admin API into a running server: checked, stored with who and
//! when, installed at once, and refused with a stable code (and nothing stored) when they are
//! not a plugin this host can run under the name they were uploaded as.

use serde_json::{Value as Json, json};

use crate::server::Server;
use crate::support;

/// `PUT /v1/admin/plugins/{name}` with the binary, as `token`.
async fn upload_as(server: &Server, token: &str, path: &str, binary: Vec<u8>) -> (u16, Json) {
    let response = server
        .client
        .put(format!("{}/v1/admin/plugins/{path}", server.base))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(binary)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Json::Null))
}

async fn upload(server: &Server, path: &str, binary: Vec<u8>) -> (u16, Json) {
    upload_as(server, crate::server::TOKEN, path, binary).await
}

/// Send the head of an upload that says `length` bytes follow, and the first 64 KB of them;
/// what the server answers (a client that waits for the answer before sending the rest).
async fn announce_a_body_of(server: &Server, name: &str, length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PUT /v1/admin/plugins/{name} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/wasm\r\nContent-Length: {length}\r\n\r\n",
        crate::server::TOKEN
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![0u8; 64 << 10]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = stream.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

/// A journey on the uploaded trigger and action: each `ping` scores 5.
fn ping_journey() -> Json {
    json!({
        "name": "Ping",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "ping"}},
            {"id": "score", "type": "action", "plugin": "update-contact", "config": {"score": {"delta": 5, "reason": "ping"}}}
        ],
        "edges": [{"from": "in", "to": "score"}]
    })
}

fn code(body: &Json) -> Option<&str> {
    body["error"]["code"].as_str()
}

/// A server started with no plugin at all gets one of each kind by upload, and a journey
/// published on them runs, all without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_uploads_a_plugin_of_each_kind_and_a_journey_runs_on_them_at_once() {
    let server = Server::start(false).await;
    assert_eq!(server.get("/v1/plugins").await.1, json!([]));
    let me = server.get("/v1/whoami").await.1;
    for (name, kind) in [
        ("event-trigger", "trigger"),
        ("attribute-condition", "condition"),
        ("update-contact", "action"),
        ("rule-scorer", "scorer"),
        ("webhook-channel", "channel"),
    ] {
        let (status, body) = upload(&server, name, support::plugin_bytes(name)).await;
        assert_eq!(status, 201, "{name}: {body}");
        assert_eq!((&body["name"], &body["kind"]), (&json!(name), &json!(kind)));
        assert_eq!(body["uploaded_by"], me["id"], "{body}");
        assert_eq!(body["sha256"].as_str().unwrap().len(), 64, "{body}");
    }
    // A core module with wit-bindgen's component-type section is made a component on upload.
    let (status, body) = upload(
        &server,
        "pricing-clicks",
        support::core_module_bytes("pricing-clicks"),
    )
    .await;
    assert_eq!((status, &body["kind"]), (201, &json!("scorer")), "{body}");
    // The same bytes again change nothing.
    let (status, body) = upload(
        &server,
        "event-trigger",
        support::plugin_bytes("event-trigger"),
    )
    .await;
    assert_eq!((status, &body["installed"]), (200, &json!(false)), "{body}");

    let journey = ping_journey();
    let (status, body) = server.put("/v1/journeys/ping", journey).await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, body) = server.act("/v1/journeys/ping/publish").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server
        .post(
            "/v1/events",
            json!({"id": "e-1", "contact_id": "u-1", "name": "ping", "timestamp": "2026-11-22T09:00:00Z"}),
        )
        .await;
    assert!(status == 200 || status == 202, "{body}");
    server.settle().await;
    let contact = server.get("/v1/contacts/u-1").await.1;
    assert_eq!(contact["score"], 5.0, "{contact}");
    // The action's version counts its calls: the config check at publish and the step.
    let plugins = server.get("/v1/plugins").await.1;
    let action = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "update-contact@0.1.0")
        .unwrap();
    assert_eq!(action["calls"]["calls"], 2, "{action}");
    assert_eq!(action["calls"]["errors"], json!({}), "{action}");

    let uploads = server.get("/v1/admin/plugins").await.1;
    assert_eq!(uploads["uploads"].as_array().unwrap().len(), 6, "{uploads}");
    let audit = server.get("/v1/audit").await.1;
    let uploaded = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "plugin.upload" && e["actor"] == me["id"])
        .count();
    assert_eq!(uploaded, 6, "{audit}");
}

/// Every kind of bad upload is refused with its own code, and none leaves anything stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_says_why_and_stores_nothing() {
    let server = Server::start(false).await;
    let (status, body) = upload(
        &server,
        "event-trigger",
        support::plugin_bytes("event-trigger"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let trapping = support::fixture_bytes("unruly-describe");
    let looping = {
        let marker = b"wayline-fixture-mode:trap";
        let at = trapping
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("the fixture's mode marker");
        let mut bytes = trapping.clone();
        bytes[at + 21..at + 25].copy_from_slice(b"loop");
        bytes
    };
    // What, the path after `/v1/admin/plugins/`, the binary, and the status, code and a word
    // of the message it gets.
    type Case = (
        &'static str,
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "garbage",
            "garbage",
            b"this is not wasm at all".to_vec(),
            422,
            "plugin_not_wasm",
            "WebAssembly",
        ),
        (
            "wrong-world",
            "wrong-world",
            support::fixture_bytes("wrong-world"),
            422,
            "plugin_wrong_world",
            "wayline:plugin/scorer@0.2.0",
        ),
        (
            "another name",
            "update-contact",
            support::plugin_bytes("event-trigger"),
            422,
            "plugin_name_mismatch",
            "event-trigger",
        ),
        (
            "describe traps",
            "unruly-describe",
            trapping,
            422,
            "plugin_describe_failed",
            "trap",
        ),
        (
            "describe loops",
            "unruly-describe",
            looping,
            422,
            "plugin_describe_failed",
            "CPU",
        ),
        // The host's core-module form of the same plugin is other bytes under the same version.
        (
            "other bytes, same version",
            "event-trigger",
            support::core_module_bytes("event-trigger"),
            409,
            "plugin_version_conflict",
            "event-trigger@",
        ),
        (
            "a limit of zero",
            "rule-scorer?cpu_ms=0",
            support::plugin_bytes("rule-scorer"),
            422,
            "plugin_limits_invalid",
            "cpu_ms",
        ),
        (
            "a limit past the ceiling",
            "rule-scorer?memory_bytes=99999999999",
            support::plugin_bytes("rule-scorer"),
            422,
            "plugin_limits_invalid",
            "memory_bytes",
        ),
        (
            "an unknown limit",
            "rule-scorer?cpu=5",
            support::plugin_bytes("rule-scorer"),
            400,
            "invalid_query",
            "cpu",
        ),
    ];
    for (what, path, binary, status, expected, says) in cases {
        let (got, body) = upload(&server, path, binary).await;
        assert_eq!(
            (got, code(&body)),
            (status, Some(expected)),
            "{what}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{what}: {message}");
    }
    // 50 MB: refused on its Content-Length, before the body is read.
    let answer = announce_a_body_of(&server, "rule-scorer", 50 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("plugin_too_large"), "{answer}");

    // Not a binary, and not an admin.
    let response = server
        .client
        .put(format!("{}/v1/admin/plugins/rule-scorer", server.base))
        .bearer_auth(crate::server::TOKEN)
        .json(&json!({"wasm": "AGFzbQ=="}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let (status, created) = server
        .post(
            "/v1/admin/tokens",
            json!({"name": "ops", "role": "manager"}),
        )
        .await;
    assert_eq!(status, 201);
    let manager = created["token"].as_str().unwrap();
    let (status, body) = upload_as(
        &server,
        manager,
        "rule-scorer",
        support::plugin_bytes("rule-scorer"),
    )
    .await;
    assert_eq!((status, code(&body)), (403, Some("forbidden")), "{body}");

    // Only the one good upload is stored, installed and audited.
    let store = &server.state.store;
    let ids: Vec<String> = store
        .plugin_uploads()
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, ["event-trigger@0.1.0"]);
    for id in [
        "rule-scorer@0.1.0",
        "unruly-describe@0.1.0",
        "wrong-world@0.1.0",
    ] {
        assert_eq!(store.plugin_binary(id).unwrap(), None, "{id}");
    }
    let installed: Vec<Json> = server
        .get("/v1/plugins")
        .await
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(installed, [json!("event-trigger@0.1.0")]);
    let audit = server.get("/v1/audit").await.1;
    let uploads = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "plugin.upload")
        .count();
    assert_eq!(uploads, 1, "{audit}");
}

/// A version a live journey or a channel uses cannot be deleted, and the error names them; an
/// unused one is deleted for good, and its `name@version` never returns as other bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_in_use_cannot_be_deleted_and_a_deleted_one_keeps_its_bytes() {
    let server = Server::start(false).await;
    for name in ["event-trigger", "update-contact"] {
        assert_eq!(
            upload(&server, name, support::plugin_bytes(name)).await.0,
            201
        );
    }
    let pricing = support::example_bytes("pricing-clicks");
    assert_eq!(
        upload(&server, "pricing-clicks", pricing.clone()).await.0,
        201
    );
    let journey = ping_journey();
    server.put("/v1/journeys/ping", journey).await;
    assert_eq!(server.act("/v1/journeys/ping/publish").await.0, 201);
    let delete = |path: &'static str| server.send(reqwest::Method::DELETE, path, None);
    let installed = || async {
        let list = server.get("/v1/plugins").await.1;
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    let (status, body) = delete("/v1/admin/plugins/update-contact/0.1.0").await;
    assert_eq!(
        (status, code(&body)),
        (409, Some("plugin_in_use")),
        "{body}"
    );
    assert_eq!(
        body["error"]["details"]["used_by"],
        json!(["journey ping v1"])
    );
    assert!(
        installed()
            .await
            .contains(&"update-contact@0.1.0".to_owned())
    );

    let (status, body) = delete("/v1/admin/plugins/pricing-clicks/1.0.0").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !installed()
            .await
            .contains(&"pricing-clicks@1.0.0".to_owned())
    );
    assert_eq!(
        server
            .state
            .store
            .plugin_binary("pricing-clicks@1.0.0")
            .unwrap(),
        None
    );
    let (status, body) = delete("/v1/admin/plugins/pricing-clicks/1.0.0").await;
    assert_eq!(
        (status, code(&body)),
        (404, Some("plugin_not_found")),
        "{body}"
    );
    // Other bytes under the deleted version are refused; its own bytes come back.
    let (status, body) = upload(
        &server,
        "pricing-clicks",
        support::core_module_bytes("pricing-clicks"),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (409, Some("plugin_version_conflict")),
        "{body}"
    );
    assert_eq!(upload(&server, "pricing-clicks", pricing).await.0, 201);

    // Once the journey is archived, nothing live uses the action.
    assert_eq!(server.act("/v1/journeys/ping/archive").await.0, 200);
    assert_eq!(
        delete("/v1/admin/plugins/update-contact/0.1.0").await.0,
        200
    );
    let audit = server.get("/v1/audit?action=plugin.delete").await.1;
    assert_eq!(audit["audit"].as_array().unwrap().len(), 2, "{audit}");

    // A plugin from the plugin directory is removed there, not through the API.
    let with_directory = Server::start(true).await;
    let (status, body) = with_directory
        .send(
            reqwest::Method::DELETE,
            "/v1/admin/plugins/rule-scorer/0.1.0",
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (409, Some("plugin_not_uploaded")),
        "{body}"
    );
}
