//! A store whose disk log stops making writes durable (as sled 0.34.7 does when it loses a log
//! buffer: every flush then waits for ever) stops the real `wayline serve` with exit status 75
//! and a message saying why, instead of hanging it; started again, it serves what it had
//! acknowledged before.

use std::time::Duration;

use serde_json::json;

use crate::crash::{call, free_port, start, start_stopping_at, wait_healthy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_store_log_stops_the_server_and_a_restart_serves_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (data, journeys) = (dir.path().join("data"), dir.path().join("journeys"));
    let log = dir.path().join("server.log");
    std::fs::create_dir_all(&journeys).unwrap();
    let port = free_port(7);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut server = start(&data, &journeys, port, &log);
    wait_healthy(&client, &base, &mut server, &log).await;
    let made = call(
        &client,
        reqwest::Method::POST,
        &format!("{base}/v1/contacts"),
        json!({"attributes": {"email": "kept@example.com"}}),
    )
    .await;
    server.kill().unwrap();
    server.wait().unwrap();

    // The log watch's first flush never returns; the watch allows one second.
    let mut wedged = start_stopping_at(
        &data,
        &journeys,
        port,
        &log,
        Some("store.log_wedged:1"),
        &["--store-stall-secs", "1"],
    );
    let pid = wedged.id();
    let exited = tokio::task::spawn_blocking(move || wedged.wait().unwrap());
    let Ok(status) = tokio::time::timeout(Duration::from_secs(60), exited).await else {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        panic!("the server still ran 60 s after its store's log stopped making writes durable");
    };
    let status = status.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(75), "{logged}");
    assert!(
        logged.contains("has made no write durable for 1 s"),
        "the server says why it stopped: {logged}"
    );

    let mut server = start(&data, &journeys, port, &log);
    wait_healthy(&client, &base, &mut server, &log).await;
    let id = made["id"].as_str().unwrap();
    let found = call(
        &client,
        reqwest::Method::GET,
        &format!("{base}/v1/contacts/{id}"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(found["attributes"]["email"], "kept@example.com");
    server.kill().unwrap();
    server.wait().unwrap();
}
