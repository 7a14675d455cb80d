//! Plugin runtime benchmark: what one scorer call costs, and what loading plugins costs.
//!
//! Run with `cargo xtask plugins && cargo bench -p wayline --bench runtime`. Prints a Markdown
//! section for BENCHMARKS.md: the machine, the command, the date, and the numbers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wayline::clock::SystemClock;
use wayline::model::{Contact, Event, Value};
use wayline::runtime::{MemoryKv, PluginSettings, Runtime, RuntimeConfig, to_wit};

const PLUGINS: [&str; 5] = [
    "event-trigger",
    "attribute-condition",
    "update-contact",
    "rule-scorer",
    "webhook-channel",
];
const CALLS: usize = 20_000;
const ROUNDS: usize = 10;

/// The two lead-scoring tables of ../shared/DOMAIN.md §2 as one rule-scorer config.
const SCORING_CONFIG: &str = r#"{"rules": [
    {"event": "form_submitted", "points": 10, "reason": "filled a form"},
    {"event": "whitepaper_downloaded", "points": 20, "reason": "downloaded a white paper"},
    {"event": "page_viewed", "where": [{"property": "page_type", "op": "eq", "value": "product"}], "points": 5},
    {"event": "email_opened", "points": 3},
    {"attribute": "company_size", "op": "gte", "value": 500, "points": 15},
    {"event": "whitepaper_downloaded", "points": 5, "weight": 0.2},
    {"event": "webinar_attended", "points": 10, "weight": 0.3},
    {"event": "email_clicked", "where": [{"property": "link", "op": "eq", "value": "pricing"}], "points": 8, "weight": 0.25},
    {"event": "sales_contacted", "points": 15, "weight": 0.25}
]}"#;

fn read_plugin(name: &str) -> Vec<u8> {
    let path = common::plugin_dir().join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask plugins` first", path.display()))
}

fn runtime(cache_dir: Option<&std::path::Path>) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: cache_dir.map(Into::into),
        clock: Arc::new(SystemClock),
        kv: Arc::new(MemoryKv::default()),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

/// The integration tests' sample contact: 20 attributes, like a real CRM import.
fn contact() -> Contact {
    serde_json::from_str(include_str!("../../tests/data/contact-20-attributes.json"))
        .expect("sample contact parses")
}

fn event() -> Event {
    serde_json::from_value(serde_json::json!({
        "id": "e-1", "contact_id": "c-1001", "name": "whitepaper_downloaded",
        "properties": {"title": "Nurture 101", "page_type": "resource"}, "timestamp": "2026-11-22T10:00:00Z"
    }))
    .expect("event parses")
}

/// One measured path: a call, repeated.
type Path<'a> = Box<dyn FnMut() + 'a>;

/// Per-call durations of `calls` runs of `f`, after a warm-up, sorted.
fn sample(calls: usize, f: &mut dyn FnMut()) -> Vec<Duration> {
    for _ in 0..calls / 10 {
        f();
    }
    let mut samples: Vec<Duration> = (0..calls)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    samples.sort();
    samples
}

fn quantile(samples: &[Duration], q: f64) -> Duration {
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn micros(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let machine = common::machine();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## Plugin runtime ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    );
    println!(
        "Machine: {machine}, {cores} cores. Command: `cargo xtask plugins && cargo bench -p wayline --bench runtime`.\n"
    );

    let cache = tempfile::tempdir().expect("temp dir");
    let cold = runtime(Some(cache.path()));
    println!("Allocator: {:?}.\n", cold.allocator());
    println!("| plugin | size | compile + load | load from compile cache |");
    println!("|---|---|---|---|");
    let warm_runtime = {
        let mut rows = Vec::new();
        for name in PLUGINS {
            let bytes = read_plugin(name);
            let started = Instant::now();
            cold.load(&bytes, &PluginSettings::default())
                .expect("plugin loads");
            rows.push((name, bytes, started.elapsed()));
        }
        let restarted = runtime(Some(cache.path()));
        for (name, bytes, compile) in rows {
            let started = Instant::now();
            restarted
                .load(&bytes, &PluginSettings::default())
                .expect("plugin loads from cache");
            println!(
                "| {name} | {} KB | {} ms | {} ms |",
                bytes.len() / 1024,
                compile.as_millis(),
                format_args!("{:.2}", started.elapsed().as_secs_f64() * 1e3)
            );
        }
        assert_eq!(
            restarted.cache_counts().compiled,
            0,
            "the restart recompiled nothing"
        );
        restarted
    };

    let runtime = warm_runtime;
    let scorer = runtime
        .load(&read_plugin("rule-scorer"), &PluginSettings::default())
        .expect("scorer loads");
    let (contact, event) = (contact(), event());
    // As a journey step does: validate and prepare the config once, keep the bytes.
    let prepared = runtime
        .validate_config(&scorer, SCORING_CONFIG)
        .result
        .expect("validate-config runs")
        .expect("the config is valid");
    let expected = runtime
        .score(&scorer, &prepared, &contact, &event)
        .result
        .expect("scorer scores");
    assert!(!expected.is_empty(), "the benchmark event matches rules");

    let (sdk_contact, sdk_event) = to_sdk(&contact, &event);
    let (wit_contact, wit_event) = to_wit(&contact, &event);
    let mut warm = runtime.warm_scorer(&scorer).expect("a scorer");
    let mut paths: Vec<(&str, Path<'_>)> = vec![
        (
            "instantiate + call (fresh store per call, production path)",
            Box::new(|| {
                let changes = runtime
                    .score(&scorer, &prepared, &contact, &event)
                    .result
                    .expect("scores");
                std::hint::black_box(changes);
            }),
        ),
        (
            "direct call of an already-instantiated component",
            Box::new(|| {
                std::hint::black_box(
                    warm.score(&prepared.bytes, &wit_contact, &wit_event)
                        .expect("scores"),
                );
            }),
        ),
        (
            "instantiate + `describe` (instantiation, no contact to copy in)",
            Box::new(|| {
                std::hint::black_box(runtime.describe(&scorer).result.expect("describes"));
            }),
        ),
        (
            "native Rust: the plugin's own code (prepared config decode + evaluation)",
            Box::new(|| {
                let config =
                    wayline_sdk::config::load::<rule_scorer::Config>(&prepared.bytes, scorer.id())
                        .expect("prepared config decodes");
                std::hint::black_box(config.score(&sdk_contact, &sdk_event, |_| false));
            }),
        ),
        (
            "native Rust, parsing the JSON config instead (the hot path before prepared configs)",
            Box::new(|| {
                let config: rule_scorer::Config =
                    serde_json::from_str(SCORING_CONFIG).expect("config parses");
                wayline_sdk::PluginConfig::verify(&config).expect("config is valid");
                std::hint::black_box(config.score(&sdk_contact, &sdk_event, |_| false));
            }),
        ),
    ];
    // `WAYLINE_PROFILE=fresh|direct|describe|native`: loop one path for ten seconds under a profiler.
    if let Ok(path) = std::env::var("WAYLINE_PROFILE") {
        let index = ["fresh", "direct", "describe", "native"]
            .iter()
            .position(|p| *p == path)
            .expect("WAYLINE_PROFILE is fresh, direct, describe or native");
        let f = &mut paths[index].1;
        // `WAYLINE_PROFILE_CALLS=N`: exactly N calls instead, for instruction counts (callgrind).
        if let Some(calls) = std::env::var("WAYLINE_PROFILE_CALLS")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            for _ in 0..calls {
                f();
            }
            return;
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            for _ in 0..1000 {
                f();
            }
        }
        return;
    }
    // This VM's neighbours come and go for seconds at a time: measure in rounds, every path
    // once per round, so a noisy spell hits all paths alike, and report the quietest round too.
    let mut rounds: Vec<Vec<Vec<Duration>>> = vec![Vec::new(); paths.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in paths.iter_mut().enumerate() {
            rounds[i].push(sample(CALLS / ROUNDS, f));
        }
    }
    println!(
        "\nRule-table scorer, DOMAIN.md §2 tables (9 rules), contact with 20 attributes, {CALLS} calls each:\n"
    );
    println!(
        "Each path ran in {ROUNDS} rounds of {} calls, interleaved with the others; \"quietest round\" is the lowest of the rounds' medians.\n",
        CALLS / ROUNDS
    );
    println!("| path | median | quietest round | p90 | p99 | median vs native |");
    println!("|---|---|---|---|---|---|");
    let summaries: Vec<(Vec<Duration>, Duration)> = rounds
        .into_iter()
        .map(|per_round| {
            let quietest = per_round
                .iter()
                .map(|samples| quantile(samples, 0.5))
                .min()
                .expect("rounds ran");
            let mut all: Vec<Duration> = per_round.into_iter().flatten().collect();
            all.sort();
            (all, quietest)
        })
        .collect();
    let native_median = quantile(&summaries[3].0, 0.5).as_secs_f64();
    for ((label, _), (samples, quietest)) in paths.iter().zip(&summaries) {
        let median = quantile(samples, 0.5);
        println!(
            "| {label} | {} | {} | {} | {} | {:.1}× |",
            micros(median),
            micros(*quietest),
            micros(quantile(samples, 0.9)),
            micros(quantile(samples, 0.99)),
            median.as_secs_f64() / native_median
        );
    }
}

/// The host's contact and event as the SDK's types, for the rule-scorer's own code run natively.
fn to_sdk(contact: &Contact, event: &Event) -> (wayline_sdk::Contact, wayline_sdk::Event) {
    use wayline_sdk::{Attribute, Value as SdkValue};
    let convert = |attributes: &wayline::model::Attributes| -> Vec<Attribute> {
        attributes
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::Boolean(b) => SdkValue::Boolean(*b),
                    Value::Integer(i) => SdkValue::Integer(*i),
                    Value::Number(n) => SdkValue::Number(*n),
                    Value::Text(s) => SdkValue::Text(s.clone()),
                    Value::Timestamp(t) => SdkValue::Timestamp(*t),
                    Value::TextList(l) => SdkValue::TextList(l.clone()),
                };
                Attribute::new(name.clone(), value)
            })
            .collect()
    };
    let sdk_contact = wayline_sdk::Contact {
        id: contact.id.clone(),
        attributes: convert(&contact.attributes),
        tags: contact.tags.clone(),
        score: contact.score,
        lifecycle_stage: contact.lifecycle_stage.clone(),
        consents: Vec::new(),
        timezone: contact.timezone.clone(),
        created_at: contact.created_at,
        updated_at: contact.updated_at,
    };
    let sdk_event = wayline_sdk::Event {
        id: event.id.clone(),
        contact_id: event.contact_id.clone(),
        name: event.name.clone(),
        properties: convert(&event.properties),
        timestamp: event.timestamp,
    };
    (sdk_contact, sdk_event)
}
