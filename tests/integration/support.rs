//! Shared helpers: where the built plugins are, a runtime on a virtual clock, sample data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wayline::clock::VirtualClock;
use wayline::model::{Contact, Event, PreparedConfig};
use wayline::runtime::egress::TlsRoots;
use wayline::runtime::{MemoryKv, Plugin, PluginSettings, Runtime, RuntimeConfig};

/// Write `records` (tree, key, value) into a server's store as it lies on disk (layout 3, in
/// `v3/`) before the server opens it: damage no request could make.
pub fn write_on_disk(store: &Path, records: &[(&str, &[u8], &[u8])]) {
    let db = sled::Config::new()
        .path(store.join("v3"))
        .segment_size(8 << 20)
        .open()
        .unwrap();
    for (tree, key, value) in records {
        db.open_tree(tree).unwrap().insert(key, *value).unwrap();
    }
    db.flush().unwrap();
}

/// 2026-11-22T10:00:00Z, the virtual clock's start.
pub const NOW: i64 = 1_795_341_600_000;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

fn built_dir(env_var: &str, default: &str) -> PathBuf {
    std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default))
}

fn read_built(dir: PathBuf, name: &str) -> Vec<u8> {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build guests first with `cargo xtask plugins` (or run `cargo xtask test`)",
            path.display()
        )
    })
}

/// A first-party plugin component, as `cargo xtask plugins` built it.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    read_built(plugin_dir(), name)
}

pub fn plugin_dir() -> PathBuf {
    built_dir("WAYLINE_PLUGIN_DIR", "target/plugins")
}

/// An example plugin component (`examples/plugins`).
pub fn example_bytes(name: &str) -> Vec<u8> {
    read_built(built_dir("WAYLINE_EXAMPLE_DIR", "target/examples"), name)
}

/// A test fixture component.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    read_built(fixture_dir(), name)
}

pub fn fixture_dir() -> PathBuf {
    built_dir("WAYLINE_FIXTURE_DIR", "target/fixtures")
}

/// A guest's raw core module, before componentization.
pub fn core_module_bytes(name: &str) -> Vec<u8> {
    read_built(
        built_dir("WAYLINE_CORE_MODULE_DIR", "target/core-modules"),
        name,
    )
}

/// A runtime on a virtual clock with in-memory plugin key-value spaces.
pub fn runtime() -> (Runtime, VirtualClock) {
    runtime_trusting(TlsRoots::default())
}

/// Like [`runtime`], its plugins' outbound TLS trusting `roots` besides the public ones.
pub fn runtime_trusting(roots: TlsRoots) -> (Runtime, VirtualClock) {
    let clock = VirtualClock::at(NOW);
    let runtime = Runtime::new(RuntimeConfig {
        clock: Arc::new(clock.clone()),
        kv: Arc::new(MemoryKv::default()),
        tls_roots: roots,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    (runtime, clock)
}

pub fn load(runtime: &Runtime, bytes: &[u8]) -> Plugin {
    runtime
        .load(bytes, &PluginSettings::default())
        .unwrap_or_else(|e| panic!("plugin loads: {e}"))
}

/// `config` (JSON) as the plugin's `validate-config` prepares it for its calls.
pub fn prepare(runtime: &Runtime, plugin: &Plugin, config: &str) -> PreparedConfig {
    runtime
        .validate_config(plugin, config)
        .result
        .expect("validate-config runs")
        .unwrap_or_else(|problems| panic!("the plugin refused {config}: {problems:?}"))
}

/// A contact with 20 attributes, like a real CRM import (shared with the benchmark).
pub fn contact() -> Contact {
    serde_json::from_str(include_str!("../data/contact-20-attributes.json"))
        .expect("sample contact parses")
}

/// An event for `contact()`.
pub fn event(name: &str, properties: serde_json::Value) -> Event {
    serde_json::from_value(serde_json::json!({
        "id": format!("e-{name}"),
        "contact_id": "c-1001",
        "name": name,
        "properties": properties,
        "timestamp": "2026-11-22T10:00:00Z"
    }))
    .expect("sample event parses")
}
