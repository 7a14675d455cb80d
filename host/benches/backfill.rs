//! A journey that starts from a segment of 1,000,000 contacts: how fast a new segment is
//! built over everyone (the refresh sweep and the worker's look at each contact), and how
//! fast publishing the journey backfills its members — enrollments queued by the sweep, and
//! enrollments run by the journey workers (entry, then an action tagging the contact).
//!
//! Run with `cargo xtask plugins && cargo bench -p wayline --bench backfill`. Prints a Markdown
//! section for BENCHMARKS.md. `WAYLINE_BACKFILL_CONTACTS` (default 1,000,000) scales it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wayline::registry::Registry;
use wayline::runtime::{Runtime, RuntimeConfig};
use wayline::store::{AudienceKind, ContactUpsert, Store};

const TOKEN: &str = "backfill-bench-token-0123";

/// Wait until no sweep is queueing and the journeys' inbox is empty.
fn drained(store: &dyn Store) {
    while wayline::audiences::sweeps::unfinished(store).unwrap()
        || store.has_pending_work().unwrap()
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn entered(store: &dyn Store) -> i64 {
    (store.counters("welcome-segment").unwrap().iter())
        .find(|(k, _)| k.node == "entered" && k.metric == "entered")
        .map_or(0, |(_, n)| *n)
}

fn main() {
    let contacts = common::env_number("WAYLINE_BACKFILL_CONTACTS", 1_000_000);
    println!(
        "## Segment backfill ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    );
    println!(
        "Machine: {}, 2 cores; journey workers and sled in one process. Command: `cargo xtask plugins && cargo bench -p wayline --bench backfill`. {contacts} contacts, every one in the segment.\n",
        common::machine()
    );
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let registry = Arc::new(Registry::default());
    registry.load_dir(&runtime, &common::plugin_dir()).unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = tokio.block_on(common::server(registry, runtime, TOKEN));
    let (state, store) = (&server.state, server.state.store.clone());

    let now = jiff::Timestamp::now().as_millisecond();
    for chunk in (0..contacts).collect::<Vec<_>>().chunks(10_000) {
        let upserts = (chunk.iter())
            .map(|n| {
                let plan = ["free", "pro", "team"][n % 3];
                serde_json::from_value::<ContactUpsert>(
                    json!({"id": format!("c{n:07}"), "attributes": {"plan": plan}}),
                )
                .unwrap()
            })
            .collect();
        store.upsert_contacts(upserts, now).unwrap();
    }

    let started = Instant::now();
    let request = serde_json::from_value(
        json!({"condition": {"attribute": "plan", "op": "in", "value": ["free", "pro", "team"]}}),
    )
    .unwrap();
    (state.journeys.audiences)
        .put(AudienceKind::Segment, "everyone", request, "bench")
        .unwrap();
    drained(store.as_ref());
    let built = started.elapsed().as_secs_f64();
    let members = store.segment_size("everyone").unwrap();
    assert_eq!(members, contacts as u64);
    println!("| step | result |\n|---|---|");
    println!(
        "| a new segment looked at for everyone (refresh sweep at its default 20,000/s, each contact evaluated and its membership written) | {members} members in {built:.1} s: {:.0} contacts/s |",
        members as f64 / built
    );

    let journey = json!({
        "name": "Welcome the segment",
        "backfill": {"segment": "everyone", "per_second": 200_000},
        "nodes": [
            {"id": "entered", "type": "entry", "plugin": "event-trigger",
             "config": {"event": "segment_entered", "where": [{"property": "segment", "op": "eq", "value": "everyone"}]}},
            {"id": "tag", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["welcomed"]}}
        ],
        "edges": [{"from": "entered", "to": "tag"}]
    });
    state
        .journeys
        .create(Some("welcome-segment".into()), journey, "bench")
        .unwrap();
    let started = Instant::now();
    let cpu = common::cpu_seconds();
    state.journeys.publish("welcome-segment", "bench").unwrap();
    let mut queued_at = None;
    while entered(store.as_ref()) < contacts as i64 {
        if queued_at.is_none() && !wayline::audiences::sweeps::unfinished(store.as_ref()).unwrap() {
            queued_at = Some(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = started.elapsed().as_secs_f64();
    let queued_at = queued_at.unwrap_or(done);
    let cpu = common::cpu_seconds() - cpu;
    println!(
        "| publish → every member's enrollment queued by the backfill sweep (rate 200,000/s, pages of 2,000, each page — a record per partition — and the sweep's position one write) | {contacts} in {queued_at:.1} s: {:.0} enrollments/s queued |",
        contacts as f64 / queued_at
    );
    println!(
        "| publish → every member enrolled and its first step run (entry, then an action plugin tagging the contact) | {contacts} in {done:.1} s: {:.0} enrollments/s; {:.0} µs CPU per enrollment |",
        contacts as f64 / done,
        cpu * 1e6 / contacts as f64
    );
    state.scheduler.stop();
}
