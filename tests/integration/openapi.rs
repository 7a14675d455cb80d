//! The served API document: valid OpenAPI, and the live server keeps to it. schemathesis
//! (tests/clients/requirements.txt) generates requests from the document, well-formed and
//! not, for every operation, and checks each answer: no 5xx, only documented statuses and
//! media types, bodies in the documented shape (every error in the one error shape), and no
//! route that answers without its token.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

const TOKEN: &str = "openapi-test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_valid_and_the_live_server_keeps_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("wayline.toml");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    // The example journeys, channel and templates, so generated requests meet real records;
    // admin calls unthrottled, so that every one reaches its route.
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata = \"data\"\ntoken = \"{TOKEN}\"\nplugins = {:?}\njourneys = {:?}\n[limits]\nadmin_rate = 100000\nadmin_burst = 100000\n",
            support::plugin_dir(),
            examples.join("journeys"),
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut server = Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("WAYLINE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let document = loop {
        if let Ok(response) = client.get(format!("{base}/openapi.json")).send().await {
            break response.text().await.unwrap();
        }
        if server.try_wait().unwrap().is_some() || Instant::now() > deadline {
            panic!(
                "the server did not come up: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &document).unwrap();

    let validated = Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );

    let operations: usize = serde_json::from_str::<serde_json::Value>(&document).unwrap()["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let report = dir.path().join("report");
    let scratch = dir.path().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            // Where hypothesis keeps its files: not in the source tree.
            .current_dir(scratch)
            .args(["-m", "schemathesis.cli", "run"])
            .arg(format!("{base}/openapi.json"))
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth,unsupported_method",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "25",
                "--workers",
                "2",
                "--seed",
                "20261206",
                "--no-color",
                "--generation-database",
                "none",
                "--report-dir",
            ])
            .arg(report)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{said}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Every operation tested (schemathesis leaves out the document's own route).
    let number = |label: &str| -> usize {
        let at = said
            .find(label)
            .unwrap_or_else(|| panic!("no `{label}` in:\n{said}"));
        said[at + label.len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let tested = number("Tested:");
    assert_eq!(tested, number("Selected:"), "{said}");
    assert!(
        tested + 1 >= operations,
        "{tested} of {operations} tested:\n{said}"
    );
}
