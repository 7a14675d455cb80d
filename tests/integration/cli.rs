//! `wayline plugin call` and `wayline serve`, run as a user runs them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support;

fn write_json(dir: &std::path::Path, name: &str, value: serde_json::Value) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path
}

fn wayline(args: &[&std::ffi::OsStr]) -> (i32, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "printed JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (output.status.code().unwrap(), json)
}

#[test]
fn plugin_call_scores_a_contact_and_reports_logs_and_duration() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_json(
        dir.path(),
        "input.json",
        serde_json::json!({
            "contact": support::contact(),
            "event": support::event("whitepaper_downloaded", serde_json::json!({"title": "Nurture 101"})),
        }),
    );
    let config = write_json(
        dir.path(),
        "config.json",
        serde_json::json!({
            "rules": [{"event": "whitepaper_downloaded", "points": 20, "reason": "downloaded a white paper"}]
        }),
    );
    let plugin = support::plugin_dir().join("rule-scorer.wasm");
    let (exit, json) = wayline(&[
        "plugin".as_ref(),
        "call".as_ref(),
        plugin.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(exit, 0, "{json}");
    assert_eq!(json["function"], "score");
    assert_eq!(json["kind"], "scorer");
    assert_eq!(
        json["ok"],
        serde_json::json!([{"delta": 20.0, "reason": "downloaded a white paper"}])
    );
    assert!(json["elapsed_us"].as_u64().is_some());
    assert!(json["logs"].is_array());
}

#[test]
fn plugin_call_reports_a_limit_as_a_json_error_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_json(
        dir.path(),
        "input.json",
        serde_json::json!({"contact": support::contact(), "event": support::event("x", serde_json::json!({}))}),
    );
    let config = write_json(
        dir.path(),
        "config.json",
        serde_json::json!({"mode": "spin"}),
    );
    let settings = write_json(
        dir.path(),
        "settings.json",
        serde_json::json!({"limits": {"cpu_ms": 20}}),
    );
    let fixture = dir.path().join("hostile.wasm");
    std::fs::write(&fixture, support::fixture_bytes("hostile-scorer")).unwrap();
    let (exit, json) = wayline(&[
        "plugin".as_ref(),
        "call".as_ref(),
        fixture.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "--settings".as_ref(),
        settings.as_os_str(),
    ]);
    assert_eq!(exit, 1, "{json}");
    assert_eq!(json["error"]["code"], "plugin_cpu_limit");
    assert!(
        json["error"]["message"].as_str().unwrap().contains("20 ms"),
        "{json}"
    );
}

#[test]
fn plugin_call_says_what_input_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_json(
        dir.path(),
        "input.json",
        serde_json::json!({"contact": support::contact()}),
    );
    let plugin = support::plugin_dir().join("rule-scorer.wasm");
    let (exit, json) = wayline(&[
        "plugin".as_ref(),
        "call".as_ref(),
        plugin.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
    ]);
    assert_eq!(exit, 2);
    assert_eq!(json["error"]["code"], "invalid_input");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs `event`"),
        "{json}"
    );
}

/// A rule-scorer config with a mistake at `rules[0].points`.
fn points_as_words(dir: &std::path::Path) -> std::path::PathBuf {
    write_json(
        dir,
        "config.json",
        serde_json::json!({"rules": [{"event": "form_submitted", "points": "ten"}]}),
    )
}

/// `wayline plugin call rule-scorer.wasm --function validate-config --config CONFIG`.
fn validate_scorer_config(config: &std::path::Path) -> (i32, serde_json::Value) {
    let plugin = support::plugin_dir().join("rule-scorer.wasm");
    wayline(&[
        "plugin".as_ref(),
        "call".as_ref(),
        plugin.as_os_str(),
        "--function".as_ref(),
        "validate-config".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
}

#[test]
fn plugin_call_can_validate_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = points_as_words(dir.path());
    let (exit, json) = validate_scorer_config(&config);
    assert_eq!(exit, 0, "{json}");
    assert_eq!(json["ok"]["valid"], false, "{json}");
    let problems = json["ok"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["path"].as_str().unwrap().starts_with("rules[0]")),
        "{json}"
    );
}

#[test]
fn plugin_call_shows_which_attributes_a_valid_config_reads() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_json(
        dir.path(),
        "config.json",
        serde_json::json!({"rules": [
            {"event": "form_submitted", "points": 10},
            {"attribute": "company_size", "op": "gte", "value": 500, "points": 15}]}),
    );
    let (exit, json) = validate_scorer_config(&config);
    assert_eq!(exit, 0, "{json}");
    assert_eq!(json["ok"]["valid"], true, "{json}");
    assert_eq!(
        json["ok"]["attributes"],
        serde_json::json!(["company_size"]),
        "{json}"
    );
}

#[test]
fn plugin_call_validates_the_config_before_calling() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_json(
        dir.path(),
        "input.json",
        serde_json::json!({
            "contact": support::contact(),
            "event": support::event("form_submitted", serde_json::json!({})),
        }),
    );
    let config = points_as_words(dir.path());
    let plugin = support::plugin_dir().join("rule-scorer.wasm");
    let (exit, json) = wayline(&[
        "plugin".as_ref(),
        "call".as_ref(),
        plugin.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(exit, 1, "{json}");
    assert_eq!(json["error"]["code"], "config_invalid", "{json}");
    assert_eq!(json["function"], "validate-config", "{json}");
    assert_eq!(
        json["error"]["problems"][0]["path"], "rules[0].points",
        "{json}"
    );
}

#[test]
fn serve_loads_the_first_party_plugins_and_lists_them() {
    let data = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut server = Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(["serve", "--listen", &address.to_string(), "--data"])
        .arg(data.path())
        .arg("--plugins")
        .arg(support::plugin_dir())
        .env("WAYLINE_TOKEN", "cli-test-token-0123456789")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the server to say it is listening, reading its log as an operator would.
    let stderr = BufReader::new(server.stderr.take().unwrap());
    let mut log = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let ready = line.contains("listening");
        log.push(line);
        if ready {
            break;
        }
    }
    let response = http_get(address, "/v1/plugins");
    server.kill().unwrap();
    server.wait().unwrap();
    let log = log.join("\n");
    assert!(log.contains("plugin loaded"), "{log}");
    let plugins: serde_json::Value =
        serde_json::from_str(&response).unwrap_or_else(|e| panic!("{e}: {response}"));
    let kinds: std::collections::BTreeSet<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["action", "channel", "condition", "scorer", "trigger"]
            .into_iter()
            .collect()
    );
}

/// A minimal HTTP/1.1 GET, so this test depends on nothing but the server.
fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer cli-test-token-0123456789\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// An operator's approval must say scheme and port: a bare host is refused at load, saying what
/// to write, before the plugin can send anything.
#[test]
fn plugin_call_refuses_an_approval_without_a_scheme_and_says_the_form() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_json(
        dir.path(),
        "input.json",
        serde_json::json!({"message": {"id": "m-1", "contact_id": "c-1", "recipient": "a@example.com",
            "text": "hi", "metadata": {}}}),
    );
    let config = write_json(
        dir.path(),
        "config.json",
        serde_json::json!({"url": "https://crm.example.com/hooks"}),
    );
    let settings = write_json(
        dir.path(),
        "settings.json",
        serde_json::json!({"approved_hosts": ["crm.example.com"]}),
    );
    let plugin = support::plugin_dir().join("webhook-channel.wasm");
    let (exit, json) = wayline(&[
        "plugin".as_ref(),
        "call".as_ref(),
        plugin.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "--settings".as_ref(),
        settings.as_os_str(),
    ]);
    assert_eq!(exit, 1, "{json}");
    assert_eq!(json["error"]["code"], "plugin_settings_invalid");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("needs a scheme") && message.contains("https://crm.example.com"),
        "{json}"
    );
}

/// `--tls-roots` names a file of CA certificates; a file that holds none stops the server at
/// start with what is wrong, rather than leaving it to fail each TLS connection later.
#[test]
fn serve_refuses_tls_roots_that_hold_no_certificate() {
    let data = tempfile::tempdir().unwrap();
    let roots = data.path().join("roots.pem");
    std::fs::write(&roots, "not a certificate\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path().join("data"))
        .arg("--tls-roots")
        .arg(&roots)
        .env("WAYLINE_TOKEN", "cli-test-token-0123456789")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("--tls-roots") && log.contains("no PEM certificate"),
        "{log}"
    );
}

/// `wayline plugin push` and `plugin list` against a running server, with the server and
/// token from the environment as an operator's shell has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_push_uploads_into_a_running_server_and_plugin_list_shows_it() {
    let server = crate::server::Server::start(false).await;
    let base = server.base.clone();
    let run = move |args: Vec<std::ffi::OsString>, token: &'static str| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let output = Command::new(env!("CARGO_BIN_EXE_wayline"))
                .args(&args)
                .env("WAYLINE_SERVER", &base)
                .env("WAYLINE_TOKEN", token)
                .output()
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
            (output.status.code().unwrap(), json)
        })
    };
    let push =
        |file: std::path::PathBuf| vec!["plugin".into(), "push".into(), file.into_os_string()];
    let file = support::plugin_dir().join("rule-scorer.wasm");
    let (code, body) = run(push(file.clone()), crate::server::TOKEN).await.unwrap();
    assert_eq!(
        (code, &body["id"]),
        (0, &serde_json::json!("rule-scorer@0.1.0")),
        "{body}"
    );

    // Refused by the server: its error, exit code 1. A wrong token: the same.
    let wrong = support::fixture_dir().join("wrong-world.wasm");
    let (code, body) = run(push(wrong), crate::server::TOKEN).await.unwrap();
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (1, Some("plugin_wrong_world")),
        "{body}"
    );
    let (code, body) = run(push(file), "not-the-token-0123456789").await.unwrap();
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (1, Some("unauthorized")),
        "{body}"
    );

    // Limits as the operator asks for them.
    let mut args = push(support::plugin_dir().join("update-contact.wasm"));
    args.extend(["--limits".into(), r#"{"cpu_ms": 250}"#.into()]);
    let (code, body) = run(args, crate::server::TOKEN).await.unwrap();
    assert_eq!(
        (code, &body["limits"]["cpu_ms"]),
        (0, &serde_json::json!(250)),
        "{body}"
    );

    let (code, list) = run(vec!["plugin".into(), "list".into()], crate::server::TOKEN)
        .await
        .unwrap();
    assert_eq!(code, 0, "{list}");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["rule-scorer@0.1.0", "update-contact@0.1.0"]);
}

/// `wayline contacts import`, `contacts export` and `journey publish` against a running
/// server: the import's counts on stdout, the export in a file that holds every contact, a
/// journey published from its file (and its problems when it cannot be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_import_export_and_journey_publish_speak_to_a_running_server() {
    let server = crate::server::Server::start(true).await;
    let base = server.base.clone();
    let run = move |args: Vec<String>| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let output = Command::new(env!("CARGO_BIN_EXE_wayline"))
                .args(&args)
                .env("WAYLINE_SERVER", &base)
                .env("WAYLINE_TOKEN", crate::server::TOKEN)
                .output()
                .unwrap();
            (output.status.code().unwrap(), output.stdout)
        })
    };
    let files = tempfile::tempdir().unwrap();
    let csv = files.path().join("people.csv");
    std::fs::write(
        &csv,
        "id,email,plan\nann,ann@example.com,pro\nbo,bo@example.com,free\ncy,not-an-address,free\n",
    )
    .unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (code, out) = run(vec!["contacts".into(), "import".into(), path(&csv)])
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (
            code,
            &report["created"],
            &report["bad_rows"],
            &report["errors"][0]["line"]
        ),
        (
            0,
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(4)
        ),
        "{report}"
    );

    let exported = files.path().join("out.csv");
    let args = [
        "contacts",
        "export",
        "--format",
        "csv",
        "--output",
        exported.to_str().unwrap(),
    ];
    let (code, _) = run(args.map(str::to_owned).to_vec()).await.unwrap();
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(&exported).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[0].starts_with("id,email,phone") && rows[1].starts_with("ann,ann@example.com"),
        "{text}"
    );

    let journey = files.path().join("welcome-again.json");
    let definition =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/journeys/welcome.json");
    std::fs::copy(definition, &journey).unwrap();
    let (code, out) = run(vec!["journey".into(), "publish".into(), path(&journey)])
        .await
        .unwrap();
    let published: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (code, &published["journey_id"], &published["version"]),
        (
            0,
            &serde_json::json!("welcome-again"),
            &serde_json::json!(1)
        ),
        "{published}"
    );
    std::fs::write(&journey, r#"{"name": "Broken", "nodes": [], "edges": []}"#).unwrap();
    let (code, out) = run(vec!["journey".into(), "publish".into(), path(&journey)])
        .await
        .unwrap();
    let refused: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (code, refused["error"]["code"].as_str()),
        (1, Some("invalid_journey")),
        "{refused}"
    );
}
