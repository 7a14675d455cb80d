//! Crash safety: the real `wayline serve` process is killed with SIGKILL while it ingests and
//! processes a load, three times, restarted on the same data directory, and every event has
//! then been applied exactly once and every pending wait has fired.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::support;

const TOKEN: &str = "crash-test-token-0123456789";
const CONTACTS: usize = 20;
const EVENTS_PER_CONTACT: usize = 30;

/// Each ping scores 1 at once and 1000 after a wait, so a contact's score counts both halves
/// of every step: any step lost or applied twice shows.
fn tally_journey() -> Json {
    json!({
        "name": "Tally",
        "reentry": "concurrent",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "ping"}},
            {"id": "now", "type": "action", "plugin": "update-contact", "config": {"score": {"delta": 1, "reason": "ping"}}},
            {"id": "hold", "type": "wait", "delay": "2s"},
            {"id": "later", "type": "action", "plugin": "update-contact", "config": {"score": {"delta": 1000, "reason": "ping, later"}}}
        ],
        "edges": [
            {"from": "in", "to": "now"}, {"from": "now", "to": "hold"}, {"from": "hold", "to": "later"}
        ]
    })
}

/// A port for the server across its restarts. Taken below the kernel's ephemeral range, so
/// that while the server is down no other test's outgoing connection can be given it.
fn free_port() -> u16 {
    let offset = std::process::id() as u16 % 4_000;
    (0..4_000)
        .map(|n| 20_000 + (offset + n) % 4_000)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port between 20000 and 24000")
}

/// Start `wayline serve` on the data directory; what it logs goes to `log`.
fn start(data: &Path, journeys: &Path, port: u16, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token",
            TOKEN,
        ])
        .arg("--data")
        .arg(data)
        .arg("--plugins")
        .arg(support::plugin_dir())
        .arg("--journeys")
        .arg(journeys)
        .env("WAYLINE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("wayline serve starts")
}

/// Wait for the server to answer; if it exits or does not come up, fail with what it logged.
async fn wait_healthy(client: &reqwest::Client, base: &str, server: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let failure = loop {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        if let Some(status) = server.try_wait().unwrap() {
            break format!("the server exited ({status})");
        }
        if Instant::now() > deadline {
            break "the server did not come up within 60 s".to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let logged = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{failure}; it logged:\n{logged}");
}

fn batches() -> Vec<Json> {
    let mut events = Vec::new();
    for n in 0..EVENTS_PER_CONTACT {
        for c in 0..CONTACTS {
            events.push(json!({"id": format!("ping-{c}-{n}"), "contact_id": format!("c{c}"), "name": "ping", "timestamp": "2026-11-23T10:00:00Z"}));
        }
    }
    events.chunks(10).map(|chunk| json!(chunk)).collect()
}

/// Send every batch once; `acknowledged` counts the 202s as they come, for whoever waits on it.
async fn send_all(
    client: &reqwest::Client,
    base: &str,
    batches: &[Json],
    acknowledged: &tokio::sync::watch::Sender<usize>,
) -> usize {
    for batch in batches {
        let sent = client
            .post(format!("{base}/v1/events"))
            .bearer_auth(TOKEN)
            .json(batch)
            .send()
            .await;
        if sent.is_ok_and(|r| r.status() == 202) {
            acknowledged.send_modify(|count| *count += 1);
        }
    }
    *acknowledged.borrow()
}

async fn get(client: &reqwest::Client, url: &str) -> Json {
    let response = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
    response.json().await.unwrap()
}

async fn scores(client: &reqwest::Client, base: &str) -> Vec<f64> {
    let mut scores = Vec::new();
    for c in 0..CONTACTS {
        let contact = get(client, &format!("{base}/v1/contacts/c{c}")).await;
        scores.push(contact["score"].as_f64().unwrap_or(-1.0));
    }
    scores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_a_restart_every_event_is_applied_exactly_once_and_every_wait_fires() {
    let dir = tempfile::tempdir().unwrap();
    let (data, journeys) = (dir.path().join("data"), dir.path().join("journeys"));
    std::fs::create_dir_all(&journeys).unwrap();
    std::fs::write(journeys.join("tally.json"), tally_journey().to_string()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("server.log");
    let batches = batches();

    // Three times: start, send from a task, and kill the server part-way through, while events
    // are being ingested, steps processed, waits pending, and (after the first) interrupted
    // writes being finished.
    for round in 0..3 {
        let mut server = start(&data, &journeys, port, &log);
        wait_healthy(&client, &base, &mut server, &log).await;
        let (acknowledged, mut progress) = tokio::sync::watch::channel(0);
        let sender = {
            let (client, base, batches) = (client.clone(), base.clone(), batches.clone());
            tokio::spawn(async move { send_all(&client, &base, &batches, &acknowledged).await })
        };
        // First half the load, so steps are running on what came first; then a quarter and
        // three quarters of the resent load, most of it duplicates by now.
        let kill_after = batches.len() * [2, 1, 3][round] / 4;
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            progress.wait_for(|count| *count >= kill_after),
        )
        .await;
        server.kill().expect("SIGKILL");
        server.wait().unwrap();
        let acknowledged_before_kill = sender.await.unwrap();
        if round == 0 {
            assert!(
                acknowledged_before_kill < batches.len(),
                "the kill came while the load was still arriving ({acknowledged_before_kill} batches acknowledged)"
            );
        }
    }

    let mut server = start(&data, &journeys, port, &log);
    wait_healthy(&client, &base, &mut server, &log).await;
    // A client whose requests failed sends them again; what was already recorded is a
    // duplicate and is not applied a second time.
    let (acknowledged, _) = tokio::sync::watch::channel(0);
    assert_eq!(
        send_all(&client, &base, &batches, &acknowledged).await,
        batches.len()
    );
    // Wait until the journey has nothing left to do: every event entered, every wait fired
    // and the step after it passed. Then nothing more can be applied, twice or otherwise.
    let total = json!(CONTACTS * EVENTS_PER_CONTACT);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stats = Json::Null;
    while Instant::now() < deadline {
        stats = get(&client, &format!("{base}/v1/journeys/tally/stats")).await;
        let count = |node: &str, metric: &str| {
            stats["nodes"]
                .as_array()
                .and_then(|nodes| nodes.iter().find(|n| n["node"] == node))
                .map(|n| n["counts"][metric].clone())
                .unwrap_or(Json::Null)
        };
        if count("later", "passed") == total && count("hold", "waiting") == json!(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entered = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "in")
        .map(|n| n["counts"]["entered"].clone());
    assert_eq!(entered, Some(total), "{stats}");
    let expected = (EVENTS_PER_CONTACT * 1001) as f64;
    assert_eq!(
        scores(&client, &base).await,
        vec![expected; CONTACTS],
        "every event once, now and after its wait: {stats}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
