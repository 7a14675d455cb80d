//! Untrusted plugins that misbehave fail their own call, with an error naming the limit, and
//! the very next call of the same plugin works.

use wayline::model::PreparedConfig;
use wayline::runtime::{CallError, Limits, PluginSettings};

use crate::support::{self, contact, event};

fn hostile() -> (wayline::runtime::Runtime, wayline::runtime::Plugin) {
    let (runtime, _clock) = support::runtime();
    let plugin = support::load(&runtime, &support::fixture_bytes("hostile-scorer"));
    (runtime, plugin)
}

/// The hostile plugin loaded with these limits instead of the defaults.
fn hostile_with(limits: Limits) -> (wayline::runtime::Runtime, wayline::runtime::Plugin) {
    let (runtime, _clock) = support::runtime();
    let settings = PluginSettings {
        limits,
        ..PluginSettings::default()
    };
    let plugin = runtime
        .load(&support::fixture_bytes("hostile-scorer"), &settings)
        .unwrap();
    (runtime, plugin)
}

fn call(
    runtime: &wayline::runtime::Runtime,
    plugin: &wayline::runtime::Plugin,
    mode: &str,
) -> Result<Vec<wayline::model::ScoreChange>, CallError> {
    let config = serde_json::json!({ "mode": mode }).to_string();
    runtime
        .score(
            plugin,
            &support::prepare(runtime, plugin, &config),
            &contact(),
            &event("page_viewed", serde_json::json!({})),
        )
        .result
}

fn assert_next_call_succeeds(
    runtime: &wayline::runtime::Runtime,
    plugin: &wayline::runtime::Plugin,
) {
    let changes = call(runtime, plugin, "ok").expect("a normal call after a failure succeeds");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].reason, "ok");
}

#[test]
fn an_infinite_loop_stops_at_its_cpu_deadline() {
    let (runtime, plugin) = hostile();
    let started = std::time::Instant::now();
    let error = call(&runtime, &plugin, "spin").unwrap_err();
    assert_eq!(
        error,
        CallError::CpuLimit {
            cpu_ms: Limits::default().cpu_ms
        }
    );
    assert_eq!(error.code(), "plugin_cpu_limit");
    // Generous bound: only guards against "never stopped", not a performance target.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stopped after {:?}",
        started.elapsed()
    );
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn unbounded_memory_growth_stops_at_the_memory_cap() {
    // The default memory cap, with time to reach it: filling 32 MiB on a busy 2-core machine
    // (the suite runs tests in parallel) can take longer than the default 100 ms CPU deadline,
    // and then the call stops at that limit instead of the one this test is about.
    let (runtime, plugin) = hostile_with(Limits {
        cpu_ms: 10_000,
        ..Limits::default()
    });
    let error = call(&runtime, &plugin, "grow").unwrap_err();
    assert!(
        matches!(&error, CallError::MemoryLimit(m) if m.contains(&Limits::default().memory_bytes.to_string())),
        "{error:?}"
    );
    assert_eq!(error.code(), "plugin_memory_limit");
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn a_per_plugin_memory_limit_is_enforced() {
    let (runtime, plugin) = hostile_with(Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    });
    let error = call(&runtime, &plugin, "grow").unwrap_err();
    assert!(
        matches!(&error, CallError::MemoryLimit(m) if m.contains("4194304")),
        "{error:?}"
    );
}

#[test]
fn deep_recursion_traps_as_a_stack_overflow() {
    let (runtime, plugin) = hostile();
    let error = call(&runtime, &plugin, "recurse").unwrap_err();
    assert_eq!(error, CallError::StackOverflow);
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn a_panic_surfaces_with_its_message() {
    let (runtime, plugin) = hostile();
    let error = call(&runtime, &plugin, "panic").unwrap_err();
    match &error {
        CallError::Panicked(message) => assert!(
            message.contains("hostile plugin panicked on purpose"),
            "{message}"
        ),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(error.code(), "plugin_panicked");
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn an_oversized_output_is_refused() {
    // Memory high enough that the guest can build its output; the output limit must catch it.
    let (runtime, plugin) = hostile_with(Limits {
        memory_bytes: 256 << 20,
        ..Limits::default()
    });
    let error = call(&runtime, &plugin, "huge-output").unwrap_err();
    assert!(
        matches!(error, CallError::OutputLimit { limit, size } if limit == Limits::default().output_bytes && size > limit),
        "{error:?}"
    );
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn plugins_read_the_hosts_clock_which_may_be_virtual() {
    let (runtime, clock) = support::runtime();
    let plugin = support::load(&runtime, &support::fixture_bytes("hostile-scorer"));
    let first = call(&runtime, &plugin, "clock").unwrap();
    assert_eq!(first[0].delta, support::NOW as f64);
    clock.advance(25 * 3_600_000);
    let later = call(&runtime, &plugin, "clock").unwrap();
    assert_eq!(later[0].delta, (support::NOW + 25 * 3_600_000) as f64);
}

#[test]
fn key_value_state_persists_across_calls_but_memory_does_not() {
    let (runtime, plugin) = hostile();
    let counts: Vec<f64> = (0..3)
        .map(|_| call(&runtime, &plugin, "kv").unwrap()[0].delta)
        .collect();
    assert_eq!(counts, vec![1.0, 2.0, 3.0]);
}

#[test]
fn logs_are_captured_per_call_and_bounded() {
    let (runtime, plugin) = hostile();
    let report = runtime.score(
        &plugin,
        &support::prepare(&runtime, &plugin, r#"{"mode":"log"}"#),
        &contact(),
        &event("x", serde_json::json!({})),
    );
    report.result.unwrap();
    let levels: Vec<&str> = report.logs.iter().map(|l| l.level).collect();
    assert_eq!(levels, ["trace", "debug", "info", "warn", "error"]);
    // The next call starts with an empty log: nothing leaks between contacts.
    let report = runtime.score(
        &plugin,
        &support::prepare(&runtime, &plugin, r#"{"mode":"ok"}"#),
        &contact(),
        &event("x", serde_json::json!({})),
    );
    assert!(report.logs.is_empty());
}

#[test]
fn a_call_of_the_wrong_kind_is_refused_without_running() {
    let (runtime, plugin) = hostile();
    let error = runtime
        .evaluate(
            &plugin,
            &PreparedConfig::reading_everything(b""),
            &contact(),
            None,
        )
        .result
        .unwrap_err();
    assert_eq!(
        error,
        CallError::WrongKind {
            expected: "condition",
            actual: "scorer"
        }
    );
}

#[test]
fn the_on_demand_fallback_enforces_the_same_limits() {
    use std::sync::Arc;
    use wayline::runtime::{Allocator, MemoryKv, Runtime, RuntimeConfig};
    let runtime = Runtime::new(RuntimeConfig {
        allocator: Allocator::OnDemand,
        kv: Arc::new(MemoryKv::default()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert_eq!(runtime.allocator(), Allocator::OnDemand);
    let plugin = support::load(&runtime, &support::fixture_bytes("hostile-scorer"));
    assert!(matches!(
        call(&runtime, &plugin, "grow").unwrap_err(),
        CallError::MemoryLimit(_)
    ));
    assert!(matches!(
        call(&runtime, &plugin, "spin").unwrap_err(),
        CallError::CpuLimit { .. }
    ));
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn validate_config_runs_under_the_same_cpu_limit() {
    let (runtime, plugin) = hostile();
    let error = runtime
        .validate_config(&plugin, r#"{"mode": "spin-validating"}"#)
        .result
        .unwrap_err();
    assert_eq!(
        error,
        CallError::CpuLimit {
            cpu_ms: Limits::default().cpu_ms
        }
    );
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn an_oversized_prepared_config_is_refused_as_output() {
    // Room to build, encode and read back 8 MiB, so only the output limit can refuse it (the
    // default 100 ms of CPU is too tight for that on a busy machine).
    let (runtime, plugin) = hostile_with(Limits {
        memory_bytes: 256 << 20,
        cpu_ms: 10_000,
        ..Limits::default()
    });
    let error = runtime
        .validate_config(&plugin, r#"{"mode": "huge-prepared"}"#)
        .result
        .unwrap_err();
    assert!(
        matches!(error, CallError::OutputLimit { limit, size } if limit == Limits::default().output_bytes && size > limit),
        "{error:?}"
    );
}

#[test]
fn bytes_the_plugin_did_not_prepare_fail_the_call_cleanly() {
    let (runtime, plugin) = hostile();
    let scorer = support::load(&runtime, &support::plugin_bytes("rule-scorer"));
    let scorer_config = support::prepare(
        &runtime,
        &scorer,
        r#"{"rules": [{"event": "x", "points": 1}]}"#,
    )
    .bytes;
    let mut truncated = support::prepare(&runtime, &plugin, r#"{"mode": "ok"}"#).bytes;
    truncated.truncate(truncated.len() - 1);
    for config in [
        b"".as_slice(),
        br#"{"mode": "ok"}"#,
        &scorer_config,
        &truncated,
    ] {
        let error = runtime
            .score(
                &plugin,
                &PreparedConfig::reading_everything(config),
                &contact(),
                &event("x", serde_json::json!({})),
            )
            .result
            .unwrap_err();
        assert!(
            matches!(&error, CallError::Plugin(m) if m.starts_with("invalid prepared config")),
            "{error:?}"
        );
    }
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn a_call_receives_only_the_attributes_its_config_reads() {
    let (runtime, plugin) = hostile();
    let contact = contact();
    // What the probe saw: the name of every attribute of the contact it received.
    let seen = |config: &str| -> Vec<String> {
        let prepared = support::prepare(&runtime, &plugin, config);
        let event = event("x", serde_json::json!({}));
        let changes = runtime.score(&plugin, &prepared, &contact, &event);
        changes
            .result
            .unwrap()
            .into_iter()
            .map(|c| c.reason)
            .collect()
    };
    assert_eq!(
        seen(r#"{"mode": "attributes", "reads": ["company_size", "nickname", "company_size"]}"#),
        ["company_size"],
        "declared, present attributes only, each once; never the email or phone"
    );
    assert!(seen(r#"{"mode": "attributes", "reads": []}"#).is_empty());
    let everything = seen(r#"{"mode": "attributes"}"#);
    assert_eq!(everything.len(), 20, "no declaration: every attribute");
    assert!(everything.iter().any(|name| name == "email"));
}

#[test]
fn an_enormous_error_is_refused_as_output_and_a_long_one_is_cut() {
    let (runtime, plugin) = hostile();
    let error = call(&runtime, &plugin, "huge-error").unwrap_err();
    assert_eq!(
        error,
        CallError::OutputLimit {
            size: 20 << 20,
            limit: 1 << 20
        }
    );
    let CallError::Plugin(message) = call(&runtime, &plugin, "long-error").unwrap_err() else {
        panic!("a plugin error");
    };
    assert!(message.len() < 3_000, "{} bytes kept", message.len());
    assert!(message.ends_with("(100000 bytes in all)"), "{message}");
    assert_next_call_succeeds(&runtime, &plugin);
}

#[test]
fn one_call_writes_at_most_its_share_of_key_value_bytes_and_a_space_at_most_its_quota() {
    let (runtime, plugin) = hostile();
    let flood = call(&runtime, &plugin, "kv-flood").unwrap();
    assert_eq!(
        flood[0].delta, 17.0,
        "17 values of 60 KB fit in 1 MiB: {}",
        flood[0].reason
    );
    assert!(
        flood[0].reason.contains("a call may write 1048576"),
        "{}",
        flood[0].reason
    );
    // Call after call, the space fills up to its quota, and no further.
    let mut stored = 17.0;
    let refusal = loop {
        let flood = call(&runtime, &plugin, "kv-flood").unwrap();
        stored += flood[0].delta;
        if flood[0].reason.contains("space is full") {
            break flood[0].reason.clone();
        }
        assert!(stored < 400.0, "the space never filled");
    };
    assert!(
        stored * 60_000.0 <= (16 << 20) as f64,
        "{stored} values kept: {refusal}"
    );
    assert!(
        stored * 60_000.0 > (15 << 20) as f64,
        "{stored} values kept: {refusal}"
    );
}

#[test]
fn logs_are_bounded_in_bytes_and_cannot_forge_lines() {
    let (runtime, plugin) = hostile();
    let report = runtime.score(
        &plugin,
        &support::prepare(&runtime, &plugin, r#"{"mode":"log-flood"}"#),
        &contact(),
        &event("x", serde_json::json!({})),
    );
    report.result.unwrap();
    let kept: usize = report.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= (64 << 10) + 200, "{kept} bytes of logs kept");
    let last = report.logs.last().unwrap();
    assert!(
        last.message.contains("more log lines dropped"),
        "{}",
        last.message
    );
    for line in &report.logs {
        assert!(
            !line.message.contains('\n') && !line.message.contains('\u{1b}'),
            "{:?}",
            line.message
        );
    }
    assert!(
        report.logs[0].message.contains("\\n2026-12-01"),
        "{}",
        report.logs[0].message
    );
}

/// A key-value space that takes its time: the call waits on the host, using no CPU.
struct SlowKv(wayline::runtime::MemoryKv);

impl wayline::runtime::KvSpace for SlowKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.0.get(namespace, key)
    }
    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), wayline::runtime::host::kv::KvSetError> {
        self.0.set(namespace, key, value)
    }
    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.0.delete(namespace, key)
    }
}

/// The CPU limit counts CPU: a call that waits three times its CPU budget on a slow host (as
/// a plugin does on a loaded machine, not scheduled) is not stopped; one that computes is.
#[test]
fn the_cpu_limit_counts_cpu_time_not_time_spent_waiting() {
    let runtime = wayline::runtime::Runtime::new(wayline::runtime::RuntimeConfig {
        kv: std::sync::Arc::new(SlowKv(Default::default())),
        ..Default::default()
    })
    .unwrap();
    let plugin = support::load(&runtime, &support::fixture_bytes("hostile-scorer"));
    assert_eq!(plugin.limits.cpu_ms, 100);
    let started = std::time::Instant::now();
    let counted = call(&runtime, &plugin, "kv").expect("waiting is not CPU");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(counted[0].delta, 1.0);
    assert!(matches!(
        call(&runtime, &plugin, "spin"),
        Err(CallError::CpuLimit { cpu_ms: 100 })
    ));
}

#[test]
fn a_plugin_is_known_by_the_name_the_host_installs_it_under_and_keeps_its_binary() {
    let (runtime, _clock) = support::runtime();
    let registry = wayline::registry::Registry::default();
    registry
        .insert(support::load(
            &runtime,
            &support::plugin_bytes("rule-scorer"),
        ))
        .unwrap();
    // Another binary calling itself rule-scorer@0.1.0 does not take its place (or its data).
    let impostor = support::load(&runtime, &support::fixture_bytes("impostor-scorer"));
    assert_eq!(impostor.id(), "rule-scorer@0.1.0");
    let refused = registry.insert(impostor).unwrap_err();
    assert_eq!(refused.code(), "plugin_version_conflict");
    let installed = registry.get("rule-scorer@0.1.0").unwrap();
    assert_eq!(
        installed.sha256,
        wayline::runtime::sha256_hex(&support::plugin_bytes("rule-scorer"))
    );
    // The same binary again is no change.
    registry
        .insert(support::load(
            &runtime,
            &support::plugin_bytes("rule-scorer"),
        ))
        .unwrap();
    // In a plugin directory, a file is installed under its own name only.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lead-scores.wasm"),
        support::fixture_bytes("impostor-scorer"),
    )
    .unwrap();
    let refused = wayline::registry::Registry::default()
        .load_dir(&runtime, dir.path())
        .unwrap_err();
    assert_eq!(refused.code(), "plugin_name_mismatch");
    assert!(
        refused.to_string().contains("holds plugin `rule-scorer`"),
        "{refused}"
    );
    // A name with a NUL (the key-value separator) is no name.
    let error = runtime
        .load(
            &support::fixture_bytes("nul-named-scorer"),
            &PluginSettings::default(),
        )
        .err()
        .unwrap();
    assert_eq!(error.code(), "plugin_bad_name");
}

/// Each plugin version counts its calls: failures by code, limit hits, and the latencies an
/// operator reads in `GET /v1/plugins` (the prepare step of each call is a call too).
#[test]
fn a_plugin_version_counts_its_calls_errors_and_limit_hits() {
    let (runtime, plugin) = hostile();
    assert_eq!(
        wayline::registry::PluginSummary::from(&plugin).calls.calls,
        0
    );
    call(&runtime, &plugin, "spin").unwrap_err();
    call(&runtime, &plugin, "panic").unwrap_err();
    for _ in 0..3 {
        assert_next_call_succeeds(&runtime, &plugin);
    }
    let calls = wayline::registry::PluginSummary::from(&plugin).calls;
    // Five scoring calls, each after the validate-config that prepares its config.
    assert_eq!(calls.calls, 10, "{calls:?}");
    assert_eq!(calls.limit_hits, 1, "{calls:?}");
    assert_eq!(
        calls.errors,
        [("plugin_cpu_limit", 1), ("plugin_panicked", 1)]
            .into_iter()
            .collect(),
        "{calls:?}"
    );
    // The spin ran to its 100 ms CPU budget: the slowest call, the p99.
    assert!(calls.p99_us >= 90_000, "{calls:?}");
    assert!(calls.p50_us < calls.p99_us, "{calls:?}");
}
