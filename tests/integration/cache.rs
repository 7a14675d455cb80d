//! The compile cache: a restart loads plugins without recompiling, and a corrupted entry is
//! detected and rebuilt rather than trusted.

use std::sync::Arc;

use wayline::clock::SystemClock;
use wayline::runtime::{CacheCounts, MemoryKv, PluginSettings, Runtime, RuntimeConfig};

use crate::support::{self, contact, event};

const PLUGINS: [&str; 5] = [
    "event-trigger",
    "attribute-condition",
    "update-contact",
    "rule-scorer",
    "webhook-channel",
];

fn runtime_with_cache(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_owned()),
        clock: Arc::new(SystemClock),
        kv: Arc::new(MemoryKv::default()),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn load_all(runtime: &Runtime) {
    for name in PLUGINS {
        runtime
            .load(&support::plugin_bytes(name), &PluginSettings::default())
            .unwrap();
    }
}

#[test]
fn a_restart_loads_every_plugin_from_the_cache_without_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime_with_cache(dir.path());
    load_all(&first);
    assert_eq!(
        first.cache_counts(),
        CacheCounts {
            compiled: 5,
            hits: 0,
            rejected: 0
        }
    );
    drop(first);

    let restarted = runtime_with_cache(dir.path());
    load_all(&restarted);
    assert_eq!(
        restarted.cache_counts(),
        CacheCounts {
            compiled: 0,
            hits: 5,
            rejected: 0
        }
    );
    // And what came out of the cache works.
    let scorer = restarted
        .load(
            &support::plugin_bytes("rule-scorer"),
            &PluginSettings::default(),
        )
        .unwrap();
    let config = r#"{"rules": [{"event": "form_submitted", "points": 10}]}"#;
    let changes = restarted
        .score(
            &scorer,
            &support::prepare(&restarted, &scorer, config),
            &contact(),
            &event("form_submitted", serde_json::json!({})),
        )
        .result
        .unwrap();
    assert_eq!(changes.iter().map(|c| c.delta).sum::<f64>(), 10.0);
}

/// A runtime on the cache in `dir` that has just loaded the rule scorer.
fn with_scorer_loaded(dir: &std::path::Path) -> (Runtime, wayline::runtime::Plugin) {
    let runtime = runtime_with_cache(dir);
    let plugin = runtime
        .load(
            &support::plugin_bytes("rule-scorer"),
            &PluginSettings::default(),
        )
        .unwrap();
    (runtime, plugin)
}

#[test]
fn a_corrupted_cache_entry_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = with_scorer_loaded(dir.path());
    drop(first);

    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cache entry was written");
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();

    let (restarted, plugin) = with_scorer_loaded(dir.path());
    assert_eq!(
        restarted.cache_counts(),
        CacheCounts {
            compiled: 1,
            hits: 0,
            rejected: 1
        }
    );
    assert!(restarted.describe(&plugin).result.is_ok());

    // The rebuilt entry is good again.
    let (again, _) = with_scorer_loaded(dir.path());
    assert_eq!(
        again.cache_counts(),
        CacheCounts {
            compiled: 0,
            hits: 1,
            rejected: 0
        }
    );
}

#[test]
fn a_cache_entry_sealed_under_another_key_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = with_scorer_loaded(dir.path());
    drop(first);
    // Someone replaces the key: every existing entry must now fail its check.
    std::fs::write(dir.path().join("cache.key"), [7u8; 32]).unwrap();
    let (restarted, _) = with_scorer_loaded(dir.path());
    assert_eq!(
        restarted.cache_counts(),
        CacheCounts {
            compiled: 1,
            hits: 0,
            rejected: 1
        }
    );
}

#[test]
fn a_cache_entry_copied_under_another_binarys_name_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime_with_cache(dir.path());
    let scorer = support::load(&runtime, &support::plugin_bytes("rule-scorer"));
    let trigger = support::load(&runtime, &support::plugin_bytes("event-trigger"));
    drop(runtime);
    // Someone with write access to the cache puts the scorer's compiled code under the
    // trigger's name: it is sealed for another binary and must not be run as the trigger.
    let entry = |sha256: &str| {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(sha256))
            .unwrap()
    };
    std::fs::copy(entry(&scorer.sha256), entry(&trigger.sha256)).unwrap();
    let restarted = runtime_with_cache(dir.path());
    let trigger = support::load(&restarted, &support::plugin_bytes("event-trigger"));
    assert_eq!(trigger.kind, wayline::runtime::PluginKind::Trigger);
    assert_eq!(
        restarted.cache_counts(),
        CacheCounts {
            compiled: 1,
            hits: 0,
            rejected: 1
        }
    );
}
