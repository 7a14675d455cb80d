//! Crash safety: the real `wayline serve` process is killed with SIGKILL while it ingests and
//! processes a load, and in the first second of a fresh store, restarted on the same data
//! directory, and every acknowledged event has then been applied exactly once and every pending
//! wait has fired; the server says what it repaired.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::support;

pub(crate) const TOKEN: &str = "crash-test-token-0123456789";
const CONTACTS: usize = 20;
const EVENTS_PER_CONTACT: usize = 30;

/// Each ping scores 1 at once and 1000 after a wait, so a contact's score counts both halves
/// of every step: any step lost or applied twice shows.
fn tally_journey(wait: &str) -> Json {
    json!({
        "name": "Tally",
        "reentry": "concurrent",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "ping"}},
            {"id": "now", "type": "action", "plugin": "update-contact", "config": {"score": {"delta": 1, "reason": "ping"}}},
            {"id": "hold", "type": "wait", "delay": wait},
            {"id": "later", "type": "action", "plugin": "update-contact", "config": {"score": {"delta": 1000, "reason": "ping, later"}}}
        ],
        "edges": [
            {"from": "in", "to": "now"}, {"from": "now", "to": "hold"}, {"from": "hold", "to": "later"}
        ]
    })
}

/// A port for a server across its restarts. Taken below the kernel's ephemeral range, so
/// that while the server is down no other test's outgoing connection can be given it; servers
/// started at once pass different `slot`s.
pub(crate) fn free_port(slot: u16) -> u16 {
    let offset = (std::process::id() as u16)
        .wrapping_mul(16)
        .wrapping_add(slot * 97)
        % 4_000;
    (0..4_000)
        .map(|n| 20_000 + (offset + n) % 4_000)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port between 20000 and 24000")
}

/// Start `wayline serve` on the data directory; what it logs goes to `log`.
pub(crate) fn start(data: &Path, journeys: &Path, port: u16, log: &Path) -> Child {
    start_stopping_at(data, journeys, port, log, None, &[])
}

/// Like [`start`], with the server stopping by itself (as if killed) the Nth time its store
/// reaches a point (`NAME:N`, see `store::failpoint`), and `flags` added.
pub(crate) fn start_stopping_at(
    data: &Path,
    journeys: &Path,
    port: u16,
    log: &Path,
    failpoint: Option<&str>,
    flags: &[&str],
) -> Child {
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
        .args(flags)
        .env("WAYLINE_LOG", "warn")
        .env("WAYLINE_FAILPOINT", failpoint.unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("wayline serve starts")
}

/// Wait for the server to answer; if it exits or does not come up, fail with what it logged.
/// What `/healthz` says the store repaired when it opened.
pub(crate) async fn wait_healthy(
    client: &reqwest::Client,
    base: &str,
    server: &mut Child,
    log: &Path,
) -> Json {
    let deadline = Instant::now() + Duration::from_secs(60);
    let failure = loop {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await {
            let health: Json = response.json().await.unwrap_or_default();
            assert_eq!(health["status"], "ok", "{health}");
            return health["store"]["recovery"].clone();
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

fn batches(contacts: usize, events_per_contact: usize) -> Vec<Json> {
    let mut events = Vec::new();
    for n in 0..events_per_contact {
        for c in 0..contacts {
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

async fn scores(client: &reqwest::Client, base: &str, contacts: usize) -> Vec<f64> {
    let mut scores = Vec::new();
    for c in 0..contacts {
        let contact = get(client, &format!("{base}/v1/contacts/c{c}")).await;
        scores.push(contact["score"].as_f64().unwrap_or(-1.0));
    }
    scores
}

/// The journey's counters once everything has run: every event entered, every wait fired
/// and the step after it passed. Then nothing more can be applied, twice or otherwise.
async fn finished_stats(client: &reqwest::Client, base: &str, total: usize) -> Json {
    let total = json!(total);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stats = Json::Null;
    while Instant::now() < deadline {
        stats = get(client, &format!("{base}/v1/journeys/tally/stats")).await;
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stats
}

fn entered(stats: &Json) -> Option<Json> {
    stats["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == "in")
        .map(|n| n["counts"]["entered"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_a_restart_every_event_is_applied_exactly_once_and_every_wait_fires() {
    let dir = tempfile::tempdir().unwrap();
    let (data, journeys) = (dir.path().join("data"), dir.path().join("journeys"));
    std::fs::create_dir_all(&journeys).unwrap();
    std::fs::write(journeys.join("tally.json"), tally_journey("2s").to_string()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let port = free_port(0);
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("server.log");
    let batches = batches(CONTACTS, EVENTS_PER_CONTACT);

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
    let total = CONTACTS * EVENTS_PER_CONTACT;
    let stats = finished_stats(&client, &base, total).await;
    assert_eq!(entered(&stats), Some(json!(total)), "{stats}");
    let expected = (EVENTS_PER_CONTACT * 1001) as f64;
    assert_eq!(
        scores(&client, &base, CONTACTS).await,
        vec![expected; CONTACTS],
        "every event once, now and after its wait: {stats}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// When, in a fresh store's first second, a round kills the server.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// This long after it was started, listening or not.
    AfterStart(u64),
    /// Once this many batches are acknowledged.
    AfterAcknowledged(usize),
    /// This long after it first answered, while batches arrive.
    AfterHealthy(u64),
    /// The server stops by itself, as if killed, the Nth time its store reaches a point:
    /// in the middle of a write set, or between queueing an event and recording it.
    AtFailpoint(&'static str),
}

/// One round: a fresh store, killed at `moment`, started again; every event the client then
/// sends (again) is applied exactly once.
async fn kill_a_fresh_store(slot: u16, moment: Moment) -> Json {
    const CONTACTS: usize = 10;
    const EVENTS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let (data, journeys) = (dir.path().join("data"), dir.path().join("journeys"));
    std::fs::create_dir_all(&journeys).unwrap();
    std::fs::write(journeys.join("tally.json"), tally_journey("1s").to_string()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let port = free_port(slot);
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("server.log");
    let batches = batches(CONTACTS, EVENTS);

    let failpoint = match moment {
        Moment::AtFailpoint(point) => Some(point),
        _ => None,
    };
    let mut server = start_stopping_at(&data, &journeys, port, &log, failpoint, &[]);
    let started = Instant::now();
    let (acknowledged, mut progress) = tokio::sync::watch::channel(0);
    let sender = {
        let (client, base, batches) = (client.clone(), base.clone(), batches.clone());
        tokio::spawn(async move {
            // Batches go as soon as the server answers, each as soon as the last is answered.
            while client.get(format!("{base}/healthz")).send().await.is_err() {
                if started.elapsed() > Duration::from_secs(30) {
                    return 0;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            send_all(&client, &base, &batches, &acknowledged).await
        })
    };
    match moment {
        Moment::AfterStart(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Moment::AfterAcknowledged(count) => {
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                progress.wait_for(|acked| *acked >= count),
            )
            .await;
        }
        Moment::AfterHealthy(ms) => {
            wait_healthy(&client, &base, &mut server, &log).await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Moment::AtFailpoint(point) => {
            let deadline = Instant::now() + Duration::from_secs(30);
            while server.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "the server never reached {point}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let _ = server.kill();
    server.wait().unwrap();
    sender.abort();

    let mut server = start(&data, &journeys, port, &log);
    let recovery = wait_healthy(&client, &base, &mut server, &log).await;
    let (acknowledged, _) = tokio::sync::watch::channel(0);
    assert_eq!(
        send_all(&client, &base, &batches, &acknowledged).await,
        batches.len(),
        "{moment:?}: the restarted server takes every batch"
    );
    let stats = finished_stats(&client, &base, CONTACTS * EVENTS).await;
    assert_eq!(
        entered(&stats),
        Some(json!(CONTACTS * EVENTS)),
        "{moment:?}: {stats}"
    );
    assert_eq!(
        scores(&client, &base, CONTACTS).await,
        vec![(EVENTS * 1001) as f64; CONTACTS],
        "{moment:?}: every event once, now and after its wait: {stats}"
    );
    server.kill().unwrap();
    server.wait().unwrap();
    recovery
}

/// A server killed in the first second of a fresh store — while it creates the store, while it
/// publishes its journeys, right after acknowledging its first batch, a little later — starts
/// again every time and keeps every acknowledged event, applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_store_killed_in_its_first_second_starts_again_every_time() {
    let moments = [
        Moment::AtFailpoint("write_set.part_way:4"),
        Moment::AtFailpoint("ingest.queued:15"),
        Moment::AfterStart(60),
        Moment::AfterStart(250),
        Moment::AfterStart(500),
        Moment::AfterAcknowledged(1),
        Moment::AfterHealthy(0),
        Moment::AfterHealthy(40),
        Moment::AfterHealthy(150),
        Moment::AfterHealthy(400),
    ];
    // Five at a time, each on a store of its own.
    let mut recoveries = Vec::new();
    for group in moments.chunks(5) {
        let rounds: Vec<_> = group
            .iter()
            .enumerate()
            .map(|(n, moment)| tokio::spawn(kill_a_fresh_store(10 + n as u16, *moment)))
            .collect();
        for round in rounds {
            recoveries.push(round.await.expect("the round passes"));
        }
    }
    // The stops in the middle of a write showed the repair at the next start.
    let count = |round: usize, field: &str| recoveries[round][field].as_u64().unwrap_or(0);
    assert!(
        count(0, "intents_replayed") >= 1,
        "a write set stopped part-way was finished: {}",
        recoveries[0]
    );
    assert!(
        count(1, "events_recorded") >= 1,
        "an event queued but not recorded was recorded: {}",
        recoveries[1]
    );
}

/// A request that must succeed; `Json::Null` sends no body.
pub(crate) async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Json,
) -> Json {
    let mut request = client.request(method, url).bearer_auth(TOKEN);
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Json = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

/// What a run of [`kills_during_delivery`] left: each contact's message as the server shows it.
struct AfterKills {
    statuses: Vec<String>,
    server: Child,
    _data: tempfile::TempDir,
}

/// Start `wayline serve`, bind channel `crm` as `binding`, send a message to each of `PEOPLE`
/// contacts (addresses from `address`), and three times kill the server with SIGKILL while the
/// provider is still taking messages (`arrived` counts what it has seen), then start it again
/// on the same data; wait until every message is sent (up to 60 s).
async fn kills_during_delivery(
    slot: u16,
    binding: Json,
    address: impl Fn(usize) -> String,
    arrived: impl Fn() -> usize,
) -> AfterKills {
    let dir = tempfile::tempdir().unwrap();
    let (data, journeys) = (dir.path().join("data"), dir.path().join("journeys"));
    std::fs::create_dir_all(&journeys).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let port = free_port(slot);
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("server.log");

    let mut server = start(&data, &journeys, port, &log);
    wait_healthy(&client, &base, &mut server, &log).await;
    use reqwest::Method;
    call(
        &client,
        Method::PUT,
        &format!("{base}/v1/channels/crm"),
        binding,
    )
    .await;
    call(
        &client,
        Method::PUT,
        &format!("{base}/v1/templates/hello"),
        json!({"channel": "crm", "subject": "Hello", "text": "hello", "transactional": true}),
    )
    .await;
    call(
        &client,
        Method::PUT,
        &format!("{base}/v1/journeys/hello"),
        json!({
        "name": "hello", "reentry": "once",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "joined"}},
            {"id": "send", "type": "action", "plugin": "update-contact",
             "config": {"send": {"channel": "crm", "template": "hello"}}}],
        "edges": [{"from": "in", "to": "send"}]}),
    )
    .await;
    call(
        &client,
        Method::POST,
        &format!("{base}/v1/journeys/hello/publish"),
        Json::Null,
    )
    .await;
    let events: Vec<Json> = (0..PEOPLE)
        .map(|i| {
            json!({"id": format!("joined-{i}"), "contact_id": format!("p{i}"), "name": "joined",
                        "properties": {}, "timestamp": "2026-11-23T10:00:00Z"})
        })
        .collect();
    for i in 0..PEOPLE {
        call(
            &client,
            Method::POST,
            &format!("{base}/v1/contacts"),
            json!({"id": format!("p{i}"), "attributes": {"email": address(i)}}),
        )
        .await;
    }
    call(
        &client,
        Method::POST,
        &format!("{base}/v1/events"),
        json!(events),
    )
    .await;

    // Three times: kill the server while the provider holds messages it has not answered,
    // then start it again on the same data.
    let mut seen = 0;
    for round in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while arrived() == seen && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(arrived() > seen, "round {round}: nothing was sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.kill().expect("SIGKILL");
        server.wait().unwrap();
        seen = arrived();
        server = start(&data, &journeys, port, &log);
        wait_healthy(&client, &base, &mut server, &log).await;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut statuses = Vec::new();
    while Instant::now() < deadline {
        statuses.clear();
        for i in 0..PEOPLE {
            let messages = get(&client, &format!("{base}/v1/contacts/p{i}/messages")).await;
            statuses.push(messages[0]["status"].as_str().unwrap_or("none").to_owned());
        }
        if statuses.iter().all(|s| s == "sent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    AfterKills {
        statuses,
        server,
        _data: dir,
    }
}

const PEOPLE: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_delivery_resends_with_the_same_key_and_every_message_is_accepted_once() {
    let (provider_base, provider) = crate::delivery::provider().await;
    let binding = json!({
        "plugin": "webhook-channel", "config": {"url": format!("{provider_base}/slow")},
        "recipient": "email", "approved_hosts": [provider_base]});
    let counted = provider.clone();
    let mut after = kills_during_delivery(
        1,
        binding,
        |i| format!("p{i}@example.com"),
        move || counted.lock().unwrap().requests.len(),
    )
    .await;
    assert!(
        after.statuses.iter().all(|s| s == "sent"),
        "{:?}",
        after.statuses
    );
    let provider = provider.lock().unwrap();
    let ids: std::collections::BTreeSet<&str> =
        provider.requests.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        provider.accepted.len(),
        PEOPLE,
        "each message accepted once"
    );
    assert_eq!(
        ids.len(),
        PEOPLE,
        "every request carried its message's id as its key"
    );
    assert!(
        provider.requests.len() > PEOPLE,
        "the kills came mid-delivery, so some messages were sent again ({} requests)",
        provider.requests.len()
    );
    drop(provider);
    after.server.kill().unwrap();
    after.server.wait().unwrap();
}

/// SMTP has no idempotency key: what a kill -9 can cost is one more copy of a message that was
/// on the wire when the server died, carrying the same `Message-ID` (so a mail system can drop
/// it). Never a message lost, never one sent again under another id, never more copies than
/// kills it lived through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_smtp_delivery_loses_nothing_and_repeats_only_what_was_in_flight() {
    let sink = std::sync::Arc::new(crate::email::SmtpSink::start());
    let binding = json!({
        "plugin": "email-smtp",
        "config": {"relay": sink.relay(), "from": "Shop <news@shop.example>"},
        "recipient": "email", "approved_hosts": [sink.relay()]});
    let counted = sink.clone();
    let mut after = kills_during_delivery(
        2,
        binding,
        // The sink takes `slow…` recipients one at a time, a tenth of a second each.
        |i| format!("slow{i}@example.com"),
        move || counted.received().len(),
    )
    .await;
    assert!(
        after.statuses.iter().all(|s| s == "sent"),
        "{:?}",
        after.statuses
    );
    let received = sink.received();
    let mut copies = std::collections::BTreeMap::<String, usize>::new();
    for email in &received {
        let id = email["headers"]["Message-ID"].as_str().unwrap().to_owned();
        *copies.entry(id).or_default() += 1;
    }
    assert_eq!(
        copies.len(),
        PEOPLE,
        "each message under its own Message-ID: {copies:#?}"
    );
    assert!(
        copies.values().all(|n| *n <= 4),
        "at most one more copy per kill: {copies:#?}"
    );
    after.server.kill().unwrap();
    after.server.wait().unwrap();
}

/// An upload acknowledged is durable: the server killed with SIGKILL right after its `201`
/// installs the plugin again when it starts, with the same sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_acknowledged_just_before_a_kill_9_is_installed_again_at_restart() {
    let data = tempfile::tempdir().unwrap();
    let journeys = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let port = free_port(30);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start(&data.path().join("data"), journeys.path(), port, &log);
    wait_healthy(&client, &base, &mut server, &log).await;
    let response = client
        .put(format!("{base}/v1/admin/plugins/pricing-clicks"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/wasm")
        .body(support::example_bytes("pricing-clicks"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let uploaded: Json = response.json().await.unwrap();
    server.kill().unwrap();
    server.wait().unwrap();

    let mut server = start(&data.path().join("data"), journeys.path(), port, &log);
    wait_healthy(&client, &base, &mut server, &log).await;
    let plugins = get(&client, &format!("{base}/v1/plugins")).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let again = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "pricing-clicks@1.0.0")
        .unwrap_or_else(|| panic!("not installed again: {plugins}"));
    assert_eq!(again["sha256"], uploaded["sha256"]);
}

/// A plugin move acknowledged is durable: killed with SIGKILL right after it, the server starts
/// on the version the journey was moved to, and runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_move_acknowledged_just_before_a_kill_9_holds_after_restart() {
    use crate::activation::stamp_at;
    let data = tempfile::tempdir().unwrap();
    let journeys = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let port = free_port(31);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start(&data.path().join("data"), journeys.path(), port, &log);
    wait_healthy(&client, &base, &mut server, &log).await;
    for version in ["1.0.0", "2.0.0"] {
        let response = client
            .put(format!("{base}/v1/admin/plugins/stamp-action"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(stamp_at(version))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let journey = json!({
        "name": "Stamped",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "ping"}},
            {"id": "first", "type": "action", "plugin": "stamp-action@1.0.0",
             "config": {"attribute": "first"}}
        ],
        "edges": [{"from": "in", "to": "first"}]
    });
    let put = reqwest::Method::PUT;
    call(
        &client,
        put,
        &format!("{base}/v1/journeys/stamped"),
        journey,
    )
    .await;
    let post = reqwest::Method::POST;
    let url = format!("{base}/v1/journeys/stamped/publish");
    call(&client, post.clone(), &url, Json::Null).await;
    let url = format!("{base}/v1/journeys/stamped/plugins");
    let moved = json!({"plugin": "stamp-action@2.0.0"});
    call(&client, post.clone(), &url, moved).await;
    server.kill().unwrap();
    server.wait().unwrap();

    let mut server = start(&data.path().join("data"), journeys.path(), port, &log);
    wait_healthy(&client, &base, &mut server, &log).await;
    let event = json!({"id": "e-1", "contact_id": "c-1", "name": "ping",
                       "timestamp": "2026-11-22T09:00:00Z"});
    call(&client, post, &format!("{base}/v1/events"), event).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stamp = loop {
        let contact = client
            .get(format!("{base}/v1/contacts/c-1"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let contact: Json = contact.json().await.unwrap_or_default();
        if let Some(stamp) = contact["attributes"]["first"].as_str() {
            break stamp.to_owned();
        }
        assert!(Instant::now() < deadline, "never stamped: {contact}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(stamp, "2.0.0");
}
