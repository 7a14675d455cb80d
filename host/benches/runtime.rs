//! Plugin runtime benchmark: what one scorer call costs, and what loading plugins costs.
//!
//! Run with `cargo xtask plugins && cargo bench -p wayline --bench runtime`. Prints a Markdown
//! section for BENCHMARKS.md: the machine, the command, the date, and the numbers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wayline::clock::SystemClock;
use wayline::model::{Contact, Event};
use wayline::runtime::{MemoryKv, PluginSettings, Runtime, RuntimeConfig, to_wit};

const PLUGINS: [&str; 5] = [
    "event-trigger",
    "attribute-condition",
    "update-contact",
    "rule-scorer",
    "webhook-channel",
];
const CALLS: usize = 20_000;

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

fn plugin_dir() -> PathBuf {
    std::env::var_os("WAYLINE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

fn read_plugin(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(format!("{name}.wasm"));
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

fn contact() -> Contact {
    serde_json::from_value(serde_json::json!({
        "id": "c-1001",
        "attributes": {
            "email": "li.wei@example.com", "phone": "+8613800138000", "first_name": "Wei", "last_name": "Li",
            "company": "Example Tech", "industry": "tech", "company_size": 600, "region": "South China",
            "city": "Shenzhen", "country": "CN", "job_title": "CTO", "source": "webinar",
            "registered_at": "2026-11-01T10:00:00Z", "last_login_at": "2026-11-20T08:00:00Z",
            "purchases": 2, "lifetime_value": 1299.5, "newsletter": true, "language": "zh-CN",
            "interests": ["crm", "automation"], "plan": "trial"
        },
        "tags": ["south-china-tech"], "score": 42.0, "lifecycle_stage": "growth",
        "consents": {"email": "granted"}, "timezone": "Asia/Shanghai"
    }))
    .expect("contact parses")
}

fn event() -> Event {
    serde_json::from_value(serde_json::json!({
        "id": "e-1", "contact_id": "c-1001", "name": "whitepaper_downloaded",
        "properties": {"title": "Nurture 101", "page_type": "resource"}, "timestamp": "2026-11-22T10:00:00Z"
    }))
    .expect("event parses")
}

/// Per-call durations of `calls` runs of `f`, after a warm-up, sorted.
fn sample(calls: usize, mut f: impl FnMut()) -> Vec<Duration> {
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
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
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
    let expected = runtime
        .score(&scorer, SCORING_CONFIG, &contact, &event)
        .result
        .expect("scorer scores");
    assert!(!expected.is_empty(), "the benchmark event matches rules");

    let fresh = sample(CALLS, || {
        let changes = runtime
            .score(&scorer, SCORING_CONFIG, &contact, &event)
            .result
            .expect("scores");
        std::hint::black_box(changes);
    });
    let mut warm = runtime.warm_scorer(&scorer).expect("a scorer");
    let (wit_contact, wit_event) = to_wit(&contact, &event);
    let direct = sample(CALLS, || {
        std::hint::black_box(
            warm.score(SCORING_CONFIG, &wit_contact, &wit_event)
                .expect("scores"),
        );
    });
    let native = sample(CALLS, || {
        std::hint::black_box(native_score(SCORING_CONFIG, &contact, &event));
    });

    println!(
        "\nRule-table scorer, DOMAIN.md §2 tables (9 rules), contact with 20 attributes, {CALLS} calls each:\n"
    );
    println!("| path | median | p90 | p99 | median vs native |");
    println!("|---|---|---|---|---|");
    let native_median = quantile(&native, 0.5).as_secs_f64();
    for (label, samples) in [
        (
            "instantiate + call (fresh store per call, production path)",
            &fresh,
        ),
        ("direct call of an already-instantiated component", &direct),
        (
            "native Rust, same rules (config parse + evaluation)",
            &native,
        ),
    ] {
        let median = quantile(samples, 0.5);
        println!(
            "| {label} | {} | {} | {} | {:.1}× |",
            micros(median),
            micros(quantile(samples, 0.9)),
            micros(quantile(samples, 0.99)),
            median.as_secs_f64() / native_median
        );
    }
}

/// The rule-scorer's logic written natively, for the ratio: parse the same config, evaluate the
/// same rules on the same contact and event.
fn native_score(config: &str, contact: &Contact, event: &Event) -> Vec<(f64, String)> {
    use wayline::model::Value;
    #[derive(serde::Deserialize)]
    struct Config {
        rules: Vec<Rule>,
    }
    #[derive(serde::Deserialize)]
    struct Rule {
        event: Option<String>,
        attribute: Option<String>,
        op: Option<String>,
        value: Option<serde_json::Value>,
        #[serde(default, rename = "where")]
        filters: Vec<Filter>,
        points: f64,
        #[serde(default = "one")]
        weight: f64,
        reason: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Filter {
        property: String,
        op: String,
        value: serde_json::Value,
    }
    fn one() -> f64 {
        1.0
    }
    fn holds(value: Option<&Value>, op: &str, expected: &serde_json::Value) -> bool {
        match (value, op) {
            (Some(Value::Text(text)), "eq") => expected.as_str() == Some(text),
            (Some(Value::Integer(i)), "gte") => expected.as_f64().is_some_and(|e| *i as f64 >= e),
            (Some(Value::Number(n)), "gte") => expected.as_f64().is_some_and(|e| *n >= e),
            _ => false,
        }
    }
    let config: Config = serde_json::from_str(config).expect("config parses");
    config
        .rules
        .iter()
        .filter(|rule| match (&rule.event, &rule.attribute) {
            (Some(name), _) => {
                *name == event.name
                    && rule
                        .filters
                        .iter()
                        .all(|f| holds(event.properties.get(&f.property), &f.op, &f.value))
            }
            (None, Some(attribute)) => holds(
                contact.attributes.get(attribute),
                rule.op.as_deref().unwrap_or("eq"),
                rule.value.as_ref().unwrap_or(&serde_json::Value::Null),
            ),
            (None, None) => false,
        })
        .map(|rule| {
            (
                rule.points * rule.weight,
                rule.reason
                    .clone()
                    .unwrap_or_else(|| format!("{} × {}", rule.points, rule.weight)),
            )
        })
        .collect()
}
