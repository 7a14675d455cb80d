//! Shipping a plugin version into a running server: upload → first call for a 1 MiB plugin,
//! and what the upload and the move of a journey onto it do to a paced load of events.
//!
//! Run with `cargo xtask plugins && cargo bench -p wayline --bench activation`. Prints a
//! Markdown section for BENCHMARKS.md. `WAYLINE_LOAD_RATE` (events/s, default 10,000),
//! `WAYLINE_LOAD_SECONDS` (default 12) and `WAYLINE_ACTIVATION_RUNS` (default 3) scale it.
//!
//! The load is the real HTTP API and real sled: batches every 10 ms through a journey of the
//! event trigger and the `stamp-action` fixture at 1.0.0. At a third of the run version 2.0.0,
//! padded with a custom section to 1 MiB, is uploaded (read, hashed, compiled, stored,
//! flushed); at two thirds the journey is moved onto it. The committed-steps counter is
//! sampled every 100 ms; the table gives the rate in the windows around each change against
//! the median of the windows before the upload.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wayline::clock::{Clock, SystemClock};
use wayline::registry::Registry;
use wayline::runtime::{Runtime, RuntimeConfig};

const TOKEN: &str = "activation-bench-token-01";
const WINDOW: Duration = Duration::from_millis(100);
const MIB: usize = 1 << 20;

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("WAYLINE_FIXTURE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures"));
    std::fs::read(dir.join(format!("{name}.wasm"))).expect("run `cargo xtask plugins` first")
}

/// `stamp-action` at `version` (its marker rewritten), padded to `size` bytes with a custom
/// section of random bytes, so every run uploads a binary the compile cache has not seen.
fn stamp(version: &str, size: usize) -> Vec<u8> {
    let mut bytes = fixture("stamp-action");
    let marker = b"wayline-fixture-version:1.0.0";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the fixture carries its version marker");
    bytes[at + 24..at + 29].copy_from_slice(version.as_bytes());
    let name = b"bench-padding";
    // Section id, a 3-byte length (right for 16 KiB to 2 MiB), the name's length and name.
    let mut payload = vec![0u8; size.saturating_sub(bytes.len() + 1 + 3 + 1 + name.len())];
    getrandom::fill(&mut payload).unwrap();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    bytes.push(0); // custom section
    let mut length = section.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    bytes.extend_from_slice(&section);
    bytes
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: reqwest::Body,
    content_type: &str,
) -> Duration {
    let started = Instant::now();
    let response = client
        .request(method, url)
        .bearer_auth(TOKEN)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status} {text}");
    started.elapsed()
}

/// Rate per window, in events/s, from counter samples taken every [`WINDOW`].
fn rates(samples: &[u64]) -> Vec<f64> {
    samples
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / WINDOW.as_secs_f64())
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What one change did to the load: the lowest window from the change to a second after it
/// ended, and how long the windows stayed below 90 % of `baseline`, counted from the change.
fn dip(rates: &[f64], from: usize, to: usize, baseline: f64) -> (f64, Duration) {
    let end = (to + 10).min(rates.len());
    let lowest = rates[from..end].iter().copied().fold(f64::MAX, f64::min);
    let last_low = (from..end)
        .rev()
        .find(|&w| rates[w] < 0.9 * baseline)
        .map_or(0, |w| w + 1 - from);
    (lowest, WINDOW * last_low as u32)
}

struct Run {
    achieved: f64,
    baseline: f64,
    upload: Duration,
    upload_dip: (f64, Duration),
    moved: Duration,
    first_call: Duration,
    move_dip: (f64, Duration),
    failed: u64,
}

async fn run(registry: Arc<Registry>, runtime: Arc<Runtime>, rate: usize, seconds: usize) -> Run {
    let server = common::server(registry.clone(), runtime, TOKEN).await;
    let client = reqwest::Client::new();
    let upload_url = format!("{}/v1/admin/plugins/stamp-action", server.base);
    let wasm = "application/wasm";
    let put = reqwest::Method::PUT;
    send(
        &client,
        put.clone(),
        upload_url.clone(),
        stamp("1.0.0", 0).into(),
        wasm,
    )
    .await;
    let journey = json!({"name": "Stamped", "reentry": "concurrent", "nodes": [
        {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "ping"}},
        {"id": "stamp", "type": "action", "plugin": "stamp-action@1.0.0", "config": {"attribute": "stamp"}}],
        "edges": [{"from": "in", "to": "stamp"}]});
    let json_type = "application/json";
    let journey_url = format!("{}/v1/journeys/stamped", server.base);
    let body = serde_json::to_vec(&journey).unwrap();
    send(&client, put, journey_url.clone(), body.into(), json_type).await;
    let post = reqwest::Method::POST;
    let publish = format!("{journey_url}/publish");
    send(&client, post.clone(), publish, "".into(), json_type).await;
    let padded = stamp("2.0.0", MIB);
    assert_eq!(padded.len(), MIB);

    let journeys = server.state.journeys.clone();
    let before = journeys.items_committed();
    let windows = seconds * 10;
    let sampler = std::thread::spawn(move || {
        let started = Instant::now();
        let mut samples = Vec::with_capacity(windows + 1);
        for n in 0..=windows {
            let due = started + WINDOW * n as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            samples.push(journeys.items_committed() - before);
        }
        samples
    });
    let per_tick = rate / 100;
    let ticks = seconds * 100;
    let events = format!("{}/v1/events", server.base);
    let load = {
        let (client, events) = (client.clone(), events.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut requests = Vec::with_capacity(ticks);
            let started = Instant::now();
            for n in 0..ticks {
                tick.tick().await;
                let now = SystemClock.now();
                let batch: Vec<_> = (n * per_tick..(n + 1) * per_tick)
                    .map(|e| {
                        json!({"id": format!("e{e}"), "contact_id": format!("c{}", e % 5_000),
                                    "name": "ping", "timestamp": now})
                    })
                    .collect();
                let body = serde_json::to_vec(&batch).unwrap();
                let (client, events) = (client.clone(), events.clone());
                requests.push(tokio::spawn(async move {
                    send(
                        &client,
                        reqwest::Method::POST,
                        events,
                        body.into(),
                        "application/json",
                    )
                    .await
                }));
            }
            for request in requests {
                request.await.unwrap();
            }
            (ticks * per_tick) as f64 / started.elapsed().as_secs_f64()
        })
    };

    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds as u64 / 3)).await;
    let upload_at = started.elapsed();
    let upload = send(
        &client,
        reqwest::Method::PUT,
        upload_url,
        padded.into(),
        wasm,
    )
    .await;
    tokio::time::sleep(
        Duration::from_secs(2 * seconds as u64 / 3).saturating_sub(started.elapsed()),
    )
    .await;
    let move_at = started.elapsed();
    let target = registry.get("stamp-action@2.0.0").unwrap();
    let calls_before_move = target.stats.view().calls;
    let moved = send(
        &client,
        post,
        format!("{journey_url}/plugins"),
        serde_json::to_vec(&json!({"plugin": "stamp-action@2.0.0"}))
            .unwrap()
            .into(),
        json_type,
    )
    .await;
    // The move's own calls are the config checks (one per node on it); a step is the next.
    let checks = target.stats.view().calls - calls_before_move;
    let first_call = loop {
        if target.stats.view().calls > calls_before_move + checks {
            break started.elapsed() - move_at;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let achieved = load.await.unwrap();
    let samples = tokio::task::spawn_blocking(move || sampler.join().unwrap())
        .await
        .unwrap();
    let rates = rates(&samples);
    let window = |at: Duration| (at.as_millis() / WINDOW.as_millis()) as usize;
    let (upload_from, move_from) = (window(upload_at), window(move_at));
    // The first second is the load warming up.
    let baseline = median(&mut rates[10..upload_from].to_vec());
    let upload_dip = dip(&rates, upload_from, window(upload_at + upload), baseline);
    let move_dip = dip(&rates, move_from, window(move_at + moved), baseline);
    let failed = server
        .state
        .store
        .counters("stamped")
        .unwrap()
        .iter()
        .filter(|(k, _)| k.metric == "retried" || k.metric == "failed")
        .map(|(_, n)| *n as u64)
        .sum();
    server.state.scheduler.stop();
    Run {
        achieved,
        baseline,
        upload,
        upload_dip,
        moved,
        first_call: upload + moved + first_call,
        move_dip,
        failed,
    }
}

fn main() {
    let machine = common::machine();
    let rate = common::env_number("WAYLINE_LOAD_RATE", 10_000);
    let seconds = common::env_number("WAYLINE_LOAD_SECONDS", 12).max(6);
    let runs = common::env_number("WAYLINE_ACTIVATION_RUNS", 3);
    println!(
        "## Plugin activation ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    );
    println!(
        "Machine: {machine}, 2 workers; server, load generator and sled in one process. Command: `cargo xtask plugins && cargo bench -p wayline --bench activation`. Load: {rate} events/s paced (a batch every 10 ms) for {seconds} s; a 1 MiB upload at {} s, the move onto it at {} s.\n",
        seconds / 3,
        2 * seconds / 3
    );
    println!(
        "| run | load achieved | steps/s before (median of 100 ms windows) | upload 1 MiB: answered in | during the upload: lowest window, below 90 % for | move: answered in | upload → first step on it | after the move: lowest window, below 90 % for | failed steps |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for n in 1..=runs {
        let registry = Arc::new(Registry::default());
        registry.load_dir(&runtime, &common::plugin_dir()).unwrap();
        let run = tokio.block_on(run(registry, runtime.clone(), rate, seconds));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {n} | {:.0}/s | {:.0}/s | {:.0} ms | {:.0}/s, {:.0} ms | {:.0} ms | {:.0} ms | {:.0}/s, {:.0} ms | {} |",
            run.achieved,
            run.baseline,
            ms(run.upload),
            run.upload_dip.0,
            ms(run.upload_dip.1),
            ms(run.moved),
            ms(run.first_call),
            run.move_dip.0,
            ms(run.move_dip.1),
            run.failed,
        );
    }
}
