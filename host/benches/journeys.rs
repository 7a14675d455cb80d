//! Journey engine load generator: events through the real HTTP API into a journey with a
//! trigger, a condition and an action plugin, on real sled; then a million pending waits.
//!
//! Run with `cargo xtask plugins && cargo bench -p wayline --bench journeys`. Prints a Markdown
//! section for BENCHMARKS.md. `WAYLINE_LOAD_EVENTS`, `WAYLINE_LOAD_WAITS` scale it down;
//! `WAYLINE_LOAD_PHASES` (a list of `engine`, `scoring`, `segments`, `delivered`) runs only
//! those throughput phases, to profile one.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wayline::api::AppState;
use wayline::clock::{Clock, SharedClock, SystemClock};
use wayline::plugin_kv::StoredKv;
use wayline::registry::Registry;
use wayline::runtime::{Runtime, RuntimeConfig};
use wayline::store::{
    AudienceKind, Commit, ContactJourney, Enrollment, Outcome, SledStore, State, Store,
};

const TOKEN: &str = "load-generator-token-0123";

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes this process has handed to `write` (sled's log, mostly), from /proc/self/io.
fn written_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A trigger, a condition and an action: the load's journey; with `send`, the action also
/// sends a message through the `hook` channel.
fn load_journey(send: bool) -> serde_json::Value {
    let mut action = json!({"score": {"delta": 5, "reason": "viewed a product page"}});
    if send {
        action["send"] = json!({"channel": "hook", "template": "viewed"});
    }
    json!({
        "name": "Load",
        "reentry": "concurrent",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "page_viewed", "where": [{"property": "page_type", "op": "eq", "value": "product"}]}},
            {"id": "tier", "type": "condition", "plugin": "attribute-condition", "config": {"branches": [{"label": "big", "when": [{"field": "attribute.company_size", "op": "gte", "value": 500}]}], "default": "small"}},
            {"id": "score", "type": "action", "plugin": "update-contact", "config": action}
        ],
        "edges": [{"from": "in", "to": "tier"}, {"from": "tier", "to": "score"}]
    })
}

struct Server {
    base: String,
    state: AppState,
    _data: tempfile::TempDir,
}

/// A server with the load journey published; with `sink`, its action sends each contact a
/// message through the webhook channel to that HTTP sink (no caps: every message goes).
/// Two scoring models that both score the load's events: the DOMAIN table (examples/scoring)
/// and a weighted one with decay, each with thresholds the contacts cross.
fn define_scoring(state: &AppState) {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scoring");
    let lead = std::fs::read(examples.join("lead.json")).unwrap();
    let engagement = json!({"plugin": "rule-scorer", "events": ["page_viewed"], "half_life": "7d",
        "thresholds": [10, 50],
        "config": {"rules": [{"event": "page_viewed", "points": 4, "weight": 0.5},
                             {"attribute": "company_size", "op": "gte", "value": 500, "points": 1}]}});
    for (name, model) in [
        ("lead", serde_json::from_slice(&lead).unwrap()),
        ("engagement", serde_json::from_value(engagement).unwrap()),
    ] {
        state.journeys.scoring.put(name, model, "bench").unwrap();
    }
}

/// Twenty segments of every kind over the load's contacts and events: attributes, decayed
/// scores, event counts in sliding windows (with and without a property filter), stage,
/// consent, tags, and combinations.
fn define_segments(state: &AppState) {
    let segments = [
        json!({"attribute": "region", "op": "eq", "value": "South China"}),
        json!({"attribute": "industry", "op": "in", "value": ["tech", "retail"]}),
        json!({"attribute": "company_size", "op": "gte", "value": 500}),
        json!({"attribute": "company_size", "op": "lt", "value": 100}),
        json!({"all": [{"attribute": "region", "op": "eq", "value": "South China"}, {"attribute": "industry", "op": "eq", "value": "tech"}]}),
        json!({"score": "lead", "op": "gte", "value": 40}),
        json!({"score": "lead", "op": "gte", "value": 70}),
        json!({"score": "lead", "op": "gte", "value": 80}),
        json!({"score": "engagement", "op": "gte", "value": 10}),
        json!({"score": "engagement", "op": "gte", "value": 50}),
        json!({"event": "page_viewed", "within": "1d"}),
        json!({"event": "page_viewed", "within": "1d", "at_least": 3}),
        json!({"event": "page_viewed", "within": "1d", "at_least": 10}),
        json!({"event": "page_viewed", "where": [{"property": "page_type", "op": "eq", "value": "product"}], "within": "7d", "at_least": 5}),
        json!({"event": "page_viewed", "within": "30d", "at_most": 2}),
        json!({"stage": "new"}),
        json!({"consent": "hook"}),
        json!({"not": {"tag": "vip"}}),
        json!({"all": [{"score": "lead", "op": "gte", "value": 80}, {"event": "page_viewed", "within": "7d", "at_least": 3}]}),
        json!({"any": [{"tag": "vip"}, {"attribute": "company_size", "op": "gte", "value": 500}]}),
    ];
    for (n, condition) in segments.into_iter().enumerate() {
        let request = serde_json::from_value(json!({ "condition": condition })).unwrap();
        (state.journeys.audiences)
            .put(AudienceKind::Segment, &format!("s{n}"), request, "bench")
            .unwrap();
    }
}

async fn server(
    runtime: &Arc<Runtime>,
    registry: &Arc<Registry>,
    sink: Option<&str>,
    scoring: bool,
    segments: bool,
) -> Server {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.path().join("store")).unwrap());
    let clock: SharedClock = Arc::new(SystemClock);
    let runtime = Arc::new(runtime.with_env(clock.clone(), Arc::new(StoredKv(store.clone()))));
    let state = AppState::start(
        runtime,
        registry.clone(),
        store,
        clock,
        TOKEN,
        "write-key-0123456789",
        common::env_number("WAYLINE_LOAD_WORKERS", 2),
        wayline::messaging::MessagingConfig {
            sealing_key: wayline::messaging::SealingKey::from_hex(&"00".repeat(32)).unwrap(),
            public_url: "http://127.0.0.1:8080".into(),
            delivery: Default::default(),
        },
    )
    .unwrap();
    if let Some(base) = sink {
        let binding = json!({"plugin": "webhook-channel", "config": {"url": format!("{base}/hook")},
                             "recipient": "email", "approved_hosts": [base], "caps": []});
        state
            .messaging
            .put_channel("hook", serde_json::from_value(binding).unwrap(), "bench")
            .unwrap();
        let template = json!({"channel": "hook", "subject": "Still looking?",
                              "text": "The product you viewed is waiting, {{ first_name | default(\"there\") }}."});
        state
            .messaging
            .put_template("viewed", serde_json::from_value(template).unwrap(), "bench")
            .unwrap();
    }
    if scoring {
        define_scoring(&state);
    }
    if segments {
        define_segments(&state);
    }
    state
        .journeys
        .create(Some("load".into()), load_journey(sink.is_some()), "bench")
        .unwrap();
    state.journeys.publish("load", "bench").unwrap();
    let base = common::serve(&state).await;
    Server {
        base,
        state,
        _data: data,
    }
}

fn entered(state: &AppState) -> i64 {
    state
        .store
        .counters("load")
        .unwrap()
        .iter()
        .find(|(k, _)| k.node == "score" && k.metric == "entered")
        .map_or(0, |(_, n)| *n)
}

/// Steps of the load journey that failed (a plugin error or limit: retried, or parked): a
/// normal plugin must never hit its limits at full load.
fn failed(state: &AppState) -> i64 {
    state
        .store
        .counters("load")
        .unwrap()
        .iter()
        .filter(|(k, _)| k.metric == "retried" || k.metric == "failed")
        .map(|(_, n)| *n)
        .sum()
}

fn events(from: usize, count: usize, contacts: usize, timestamp: i64) -> Vec<serde_json::Value> {
    (from..from + count)
        .map(|n| {
            json!({"id": format!("e{n}"), "contact_id": format!("c{}", n % contacts), "name": "page_viewed",
                   "properties": {"page_type": "product"}, "timestamp": timestamp})
        })
        .collect()
}

async fn post_events(client: &reqwest::Client, base: &str, events: &[serde_json::Value]) {
    post_body(client, base, serde_json::to_vec(events).unwrap()).await;
}

async fn post_body(client: &reqwest::Client, base: &str, body: Vec<u8>) {
    let response = client
        .post(format!("{base}/v1/events"))
        .bearer_auth(TOKEN)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

/// Contacts `c0…`; with `reachable`, each with an email address and consent to the `hook`
/// channel.
async fn create_contacts(client: &reqwest::Client, base: &str, contacts: usize, reachable: bool) {
    for c in 0..contacts {
        let size = if c % 3 == 0 { 800 } else { 50 };
        let mut contact = json!({"id": format!("c{c}"), "attributes": {"company_size": size, "industry": "tech", "region": "South China"}});
        if reachable {
            contact["attributes"]["email"] = json!(format!("c{c}@example.com"));
            contact["consents"] = json!({"hook": "granted"});
        }
        client
            .post(format!("{base}/v1/contacts"))
            .bearer_auth(TOKEN)
            .json(&contact)
            .send()
            .await
            .unwrap();
    }
}

/// Batched ingest as fast as two clients can send; the time until every step has committed
/// and, with `deliver`, until each event's message has reached the sink.
async fn throughput(
    runtime: &Arc<Runtime>,
    registry: &Arc<Registry>,
    total: usize,
    deliver: bool,
    scoring: bool,
    segments: bool,
) {
    let sink = match deliver {
        true => Some(common::http_sink().await),
        false => None,
    };
    let server = server(
        runtime,
        registry,
        sink.as_ref().map(|(base, _)| base.as_str()),
        scoring,
        segments,
    )
    .await;
    let client = reqwest::Client::new();
    let contacts = 10_000.min(total);
    create_contacts(&client, &server.base, contacts, deliver).await;
    // What creating them queued (a look at each by the segments) is done before the clock
    // starts.
    while server.state.store.has_pending_work().unwrap() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let batch = 1_000;
    // The request bodies are written before the clock starts: building JSON is the load
    // generator's work, not the server's, and both share the machine's two cores.
    let bodies: Vec<Vec<Vec<u8>>> = (0..2)
        .map(|sender| {
            (sender * batch..total)
                .step_by(2 * batch)
                .map(|from| {
                    serde_json::to_vec(&events(from, batch.min(total - from), contacts, 0)).unwrap()
                })
                .collect()
        })
        .collect();
    let (started, cpu, written) = (Instant::now(), common::cpu_seconds(), written_bytes());
    let senders: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            let (client, base) = (client.clone(), server.base.clone());
            tokio::spawn(async move {
                for body in bodies {
                    post_body(&client, &base, body).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let ingested = started.elapsed();
    // Every step, and every event the scores' crossings emitted.
    while entered(&server.state) < total as i64 || server.state.store.has_pending_work().unwrap() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let processed = started.elapsed();
    if let Some((_, delivered)) = &sink {
        while delivered.load(std::sync::atomic::Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = started.elapsed();
        let (cpu, written) = (common::cpu_seconds() - cpu, written_bytes() - written);
        println!(
            "| the same, each event's step also sending a message (webhook-channel → local HTTP sink, every delivery step durable) | {:.0} events/s fully processed by the journeys | {:.0} events/s end to end (message delivered); per event {:.0} µs CPU and {:.1} KiB written |",
            total as f64 / processed.as_secs_f64(),
            total as f64 / done.as_secs_f64(),
            cpu * 1e6 / total as f64,
            written / 1024.0 / total as f64,
        );
        server.state.scheduler.stop();
        server.state.messaging.stop();
        return;
    }
    let (cpu, written) = (common::cpu_seconds() - cpu, written_bytes() - written);
    let failures = failed(&server.state);
    if segments {
        let members: u64 = (0..20)
            .map(|n| server.state.store.segment_size(&format!("s{n}")).unwrap())
            .sum();
        println!(
            "| the same with the two scoring models and 20 segments defined (attributes, decayed scores, event counts in sliding windows, stage, consent, tags, combinations; {members} memberships at the end) | {:.0} events/s acknowledged (durable) | {:.0} events/s fully processed, threshold and segment events included ({failures} plugin calls failed); per event {:.0} µs CPU and {:.1} KiB written |",
            total as f64 / ingested.as_secs_f64(),
            total as f64 / processed.as_secs_f64(),
            cpu * 1e6 / total as f64,
            written / 1024.0 / total as f64,
        );
        server.state.scheduler.stop();
        return;
    }
    if scoring {
        let history: usize = (0..contacts)
            .map(|n| {
                let page = server
                    .state
                    .store
                    .score_history(&format!("c{n}"), None, 1_000);
                page.unwrap().changes.len()
            })
            .sum();
        println!(
            "| the same with two scoring models defined (rule-scorer: the DOMAIN table with 30-day decay, and a weighted table with 7-day decay; both score every event, with thresholds; {history} score changes kept) | {:.0} events/s acknowledged (durable) | {:.0} events/s fully processed, threshold events included ({failures} plugin calls failed); per event {:.0} µs CPU and {:.1} KiB written |",
            total as f64 / ingested.as_secs_f64(),
            total as f64 / processed.as_secs_f64(),
            cpu * 1e6 / total as f64,
            written / 1024.0 / total as f64,
        );
        server.state.scheduler.stop();
        return;
    }
    println!(
        "| batched ingest (2 clients × batches of {batch}), {total} events, {contacts} contacts | {:.0} events/s acknowledged (durable) | {:.0} events/s fully processed ({failures} plugin calls failed); per event {:.0} µs CPU (server and load generator, {:.2} of {} cores busy) and {:.1} KiB written |",
        total as f64 / ingested.as_secs_f64(),
        total as f64 / processed.as_secs_f64(),
        cpu * 1e6 / total as f64,
        cpu / processed.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        written / 1024.0 / total as f64,
    );
    server.state.scheduler.stop();
}

/// A paced load; the latency from sending an event to its step committing, estimated from the
/// time the count of committed inbox items passes the event's position (events are processed
/// in arrival order per partition, so this is close, not exact). The count is an atomic the
/// workers bump after each commit: polling it does not wait on the store's locks.
async fn latency(runtime: &Arc<Runtime>, registry: &Arc<Registry>, rate: usize, seconds: usize) {
    let server = server(runtime, registry, None, false, false).await;
    let client = reqwest::Client::new();
    let contacts = 5_000;
    create_contacts(&client, &server.base, contacts, false).await;
    let per_tick = rate / 100; // a batch every 10 ms
    let total = per_tick * 100 * seconds;
    let journeys = server.state.journeys.clone();
    let before = journeys.items_committed();
    let watcher = std::thread::spawn(move || {
        let mut seen = Vec::with_capacity(total);
        let started = Instant::now();
        while seen.len() < total && started.elapsed() < Duration::from_secs(120) {
            let count = (journeys.items_committed() - before) as usize;
            while seen.len() < count.min(total) {
                seen.push(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        seen
    });
    // Each batch goes out on its own task, so a slow response does not hold back the pace.
    let mut sent = Vec::with_capacity(total);
    let mut requests = Vec::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..(total / per_tick) {
        tick.tick().await;
        let body = events(
            n * per_tick,
            per_tick,
            contacts,
            wayline::clock::SystemClock.now(),
        );
        let at = Instant::now();
        sent.extend(std::iter::repeat_n(at, per_tick));
        let (client, base) = (client.clone(), server.base.clone());
        requests.push(tokio::spawn(async move {
            post_events(&client, &base, &body).await;
            at.elapsed()
        }));
    }
    let mut acknowledged = Vec::with_capacity(requests.len());
    for request in requests {
        acknowledged.push(request.await.unwrap());
    }
    acknowledged.sort();
    let ack =
        |q: f64| acknowledged[((acknowledged.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let seen = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .zip(&seen)
        .map(|(sent, done)| done.saturating_duration_since(*sent))
        .collect();
    latencies.sort();
    let q = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "| paced {rate} events/s for {seconds} s (achieved {achieved:.0}/s), batches every 10 ms | event → step committed: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | batch acknowledged (durable): p50 {:.1} ms, p99 {:.1} ms |",
        q(0.5),
        q(0.99),
        q(1.0),
        ack(0.5),
        ack(0.99),
    );
    server.state.scheduler.stop();
}

/// The ceiling: sled inserting records the size of an enrollment, flushed.
fn raw_sled(records: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let tree = db.open_tree("bench").unwrap();
    let value = vec![b'x'; 400];
    let started = Instant::now();
    for n in 0..records {
        tree.insert(format!("key-{n:010}"), value.as_slice())
            .unwrap();
    }
    db.flush().unwrap();
    let single = records as f64 / started.elapsed().as_secs_f64();
    // Two writers, as the journey workers are; not `apply_batch`, whose first use would switch
    // on sled's process-wide lock for everything after it in this process.
    let started = Instant::now();
    std::thread::scope(|scope| {
        for writer in 0..2 {
            let (tree, value) = (&tree, &value);
            scope.spawn(move || {
                for n in (writer..records).step_by(2) {
                    tree.insert(format!("pair-{n:010}"), value.as_slice())
                        .unwrap();
                }
            });
        }
    });
    db.flush().unwrap();
    let concurrent = records as f64 / started.elapsed().as_secs_f64();
    println!(
        "| raw sled, {records} inserts of 400 B then a flush (the ceiling) | {single:.0} inserts/s from one thread | {concurrent:.0} inserts/s from two |"
    );
}

/// A million waits held in the store; those falling due during the run fire, and how late.
fn pending_waits(runtime: &Arc<Runtime>, registry: &Arc<Registry>, waits: usize) {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.path().join("store")).unwrap());
    let clock: SharedClock = Arc::new(SystemClock);
    let journeys = Arc::new(
        wayline::journeys::Journeys::new(
            store.clone(),
            runtime.clone(),
            registry.clone(),
            clock.clone(),
        )
        .unwrap(),
    );
    journeys
        .create(
            Some("hold".into()),
            json!({"name": "Hold", "reentry": "concurrent", "nodes": [
                {"id": "in", "type": "entry"}, {"id": "wait", "type": "wait", "delay": "1h"}],
                "edges": [{"from": "in", "to": "wait"}]}),
            "bench",
        )
        .unwrap();
    journeys.publish("hold", "bench").unwrap();
    let rss_before = rss_mib();
    let now = clock.now();
    // The last tenth of the waits falls due over 20 s starting 10 s after they are written;
    // the rest an hour later.
    let due_window = 20_000;
    let firing = waits / 10;
    let mut expected = Vec::with_capacity(firing);
    let mut first_due = None;
    // Each wait is a contact's: the contacts exist, and each holds its record of the journey.
    let contacts_started = Instant::now();
    std::thread::scope(|scope| {
        for half in 0..2 {
            let store = &store;
            scope.spawn(move || {
                for n in (half..waits).step_by(2) {
                    let upsert = wayline::store::ContactUpsert {
                        id: Some(format!("c{n}")),
                        ..Default::default()
                    };
                    store.upsert_contact(upsert, now).unwrap();
                }
            });
        }
    });
    let contacts_created = contacts_started.elapsed();
    let started = Instant::now();
    for chunk in (0..waits).collect::<Vec<_>>().chunks(2_000) {
        let mut commit = Commit {
            now,
            ..Commit::default()
        };
        for n in chunk {
            let id = format!("en_{n:08}");
            let contact = format!("c{n}");
            let due_at = match n.checked_sub(waits - firing) {
                Some(k) => {
                    let base = *first_due.get_or_insert_with(|| clock.now() + 10_000);
                    let due = base + (k as i64 * due_window / firing as i64);
                    expected.push((id.clone(), due));
                    due
                }
                None => now + 3_600_000,
            };
            commit.enrollments.push(Enrollment {
                id: id.clone(),
                contact_id: contact.clone(),
                journey_id: "hold".into(),
                version: 1,
                state: State::Waiting {
                    due_at,
                    event: None,
                },
                node: "wait".into(),
                entered_at: now,
                updated_at: now,
                event_id: None,
                history: Vec::new(),
                history_dropped: 0,
            });
            commit.contact_journeys.push(ContactJourney {
                contact_id: contact.clone(),
                journey_id: "hold".into(),
                active: vec![id.clone()],
                recent: vec![id.clone()],
                entries: 1,
                last_entered_at: now,
            });
            commit.timers_set.push((due_at, id, contact));
        }
        store.commit(commit).unwrap();
    }
    store.flush().unwrap();
    let loaded = started.elapsed();
    let pending = store.pending_timers().unwrap();
    let rss_loaded = rss_mib();
    let scheduler = wayline::scheduler::Scheduler::start(journeys.clone(), 2);
    let last_due = expected.last().map_or(clock.now(), |(_, due)| *due);
    while clock.now() < last_due + 3_000 {
        std::thread::sleep(Duration::from_millis(200));
    }
    scheduler.settle(Duration::from_secs(120));
    scheduler.stop();
    let mut lateness: Vec<i64> = expected
        .iter()
        .filter_map(|(id, due)| {
            let e = store.enrollment(id).ok().flatten()?;
            matches!(
                e.state,
                State::Done {
                    outcome: Outcome::Completed,
                    ..
                }
            )
            .then(|| e.updated_at - due)
        })
        .collect();
    lateness.sort();
    let fired = lateness.len();
    let q = |q: f64| {
        lateness
            .get(((fired.max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "| {pending} contacts created in {:.1} s, each with a pending wait, loaded in {:.1} s; RSS {:.0} MiB before, {:.0} MiB held, {:.0} MiB after firing | {fired} of {firing} due over 20 s fired; fired after their due time by; p50 {} ms, p99 {} ms, max {} ms | |",
        contacts_created.as_secs_f64(),
        loaded.as_secs_f64(),
        rss_before,
        rss_loaded,
        rss_mib(),
        q(0.5),
        q(0.99),
        q(1.0),
    );
}

fn main() {
    let machine = common::machine();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## Journey engine ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    );
    println!(
        "Machine: {machine}, {cores} cores; server, load generator and sled on the same machine. Command: `cargo xtask plugins && cargo bench -p wayline --bench journeys`.\n"
    );
    println!("| load | result | |");
    println!("|---|---|---|");
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let registry = Arc::new(Registry::default());
    registry.load_dir(&runtime, &common::plugin_dir()).unwrap();
    raw_sled(200_000);
    let events = common::env_number("WAYLINE_LOAD_EVENTS", 100_000);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let phases =
        std::env::var("WAYLINE_LOAD_PHASES").unwrap_or("engine,scoring,segments,delivered".into());
    for (phase, scoring, segments) in [
        ("engine", false, false),
        ("scoring", true, false),
        ("segments", true, true),
    ] {
        if phases.split(',').any(|p| p == phase) {
            tokio.block_on(throughput(
                &runtime, &registry, events, false, scoring, segments,
            ));
        }
    }
    if phases.split(',').any(|p| p == "delivered") {
        tokio.block_on(throughput(
            &runtime,
            &registry,
            common::env_number("WAYLINE_LOAD_DELIVERED", 20_000),
            true,
            false,
            false,
        ));
    }
    if std::env::var_os("WAYLINE_LOAD_THROUGHPUT_ONLY").is_some() {
        return;
    }
    tokio.block_on(latency(&runtime, &registry, 5_000, 10));
    pending_waits(
        &runtime,
        &registry,
        common::env_number("WAYLINE_LOAD_WAITS", 1_000_000),
    );
}
