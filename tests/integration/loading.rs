//! Binaries that are not plugins get a clear error, from the runtime and from `wayline plugin
//! inspect`; core modules carrying a component-type section are accepted.

use std::process::Command;

use wayline::runtime::{LoadError, PluginKind, PluginSettings};

use crate::support;

fn load_error(bytes: &[u8]) -> LoadError {
    let (runtime, _clock) = support::runtime();
    match runtime.load(bytes, &PluginSettings::default()) {
        Ok(plugin) => panic!("{} loaded but should not have", plugin.id()),
        Err(error) => error,
    }
}

/// Run `wayline plugin inspect` on `bytes`; returns the exit code and the JSON it printed.
fn inspect(bytes: &[u8]) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, bytes).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(["plugin", "inspect"])
        .arg(&path)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect printed JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (output.status.code().unwrap(), json)
}

fn assert_refused(bytes: &[u8], code: &str, message_part: &str) {
    let error = load_error(bytes);
    assert_eq!(error.code(), code, "{error}");
    assert!(
        error.to_string().contains(message_part),
        "`{error}` should mention `{message_part}`"
    );
    let (exit, json) = inspect(bytes);
    assert_eq!(exit, 1);
    assert_eq!(json["error"]["code"], code);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains(message_part),
        "{json}"
    );
}

#[test]
fn a_component_of_another_world_is_refused_naming_the_expected_exports() {
    assert_refused(
        &support::fixture_bytes("wrong-world"),
        "plugin_wrong_world",
        "wayline:plugin/scorer@0.2.0",
    );
    assert_refused(
        &support::fixture_bytes("wrong-world"),
        "plugin_wrong_world",
        "(or the same at 0.1.0)",
    );
}

#[test]
fn a_mistyped_export_names_the_closest_world() {
    assert_refused(
        &support::fixture_bytes("mistyped-scorer"),
        "plugin_wrong_world",
        "closest to the `wayline:plugin/scorer-plugin@0.1.0` world",
    );
}

#[test]
fn a_channel_whose_deliver_is_mistyped_is_refused_at_load() {
    assert_refused(
        &support::fixture_bytes("mistyped-channel"),
        "plugin_wrong_world",
        "does not have the `wayline:plugin/channel-plugin@0.2.0` world's signature",
    );
}

#[test]
fn a_scorer_that_imports_http_is_refused() {
    assert_refused(
        &support::fixture_bytes("sneaky-scorer"),
        "plugin_wrong_world",
        "only channel plugins may use",
    );
}

#[test]
fn a_truncated_file_is_refused() {
    let bytes = support::plugin_bytes("rule-scorer");
    assert_refused(
        &bytes[..bytes.len() / 2],
        "plugin_invalid_wasm",
        "invalid WebAssembly",
    );
}

#[test]
fn random_bytes_are_refused() {
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_refused(&bytes, "plugin_not_wasm", "not a WebAssembly binary");
}

#[test]
fn a_50_mb_file_is_refused_before_parsing() {
    let mut bytes = support::plugin_bytes("rule-scorer");
    bytes.resize(50 << 20, 0);
    assert_refused(&bytes, "plugin_too_large", "52428800 bytes");
}

#[test]
fn a_core_module_with_a_component_type_section_is_componentized() {
    let (runtime, _clock) = support::runtime();
    let plugin = support::load(&runtime, &support::core_module_bytes("rule-scorer"));
    assert!(plugin.componentized);
    assert_eq!(plugin.kind, PluginKind::Scorer);
    assert_eq!(plugin.info.name, "rule-scorer");
}

#[test]
fn inspect_describes_a_plugin() {
    let bytes = support::plugin_bytes("webhook-channel");
    let (exit, json) = inspect(&bytes);
    assert_eq!(exit, 0, "{json}");
    assert_eq!(json["kind"], "channel");
    assert_eq!(json["name"], "webhook-channel");
    assert_eq!(
        json["id"],
        format!("webhook-channel@{}", json["version"].as_str().unwrap())
    );
    assert_eq!(json["size"], bytes.len());
    assert_eq!(json["sha256"], wayline::runtime::sha256_hex(&bytes));
    let imports: Vec<&str> = json["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        imports.contains(&"wayline:plugin/http@0.2.0"),
        "{imports:?}"
    );
    assert_eq!(
        json["exports"],
        serde_json::json!(["wayline:plugin/channel@0.2.0"])
    );
    assert_eq!(json["contract"], "0.2.0");
    assert_eq!(json["world"], "wayline:plugin/channel-plugin@0.2.0");
}

#[test]
fn non_channel_plugins_import_no_http() {
    let (runtime, _clock) = support::runtime();
    for name in [
        "event-trigger",
        "attribute-condition",
        "update-contact",
        "rule-scorer",
    ] {
        let plugin = support::load(&runtime, &support::plugin_bytes(name));
        assert!(
            plugin.imports.iter().all(|i| !i.contains("http")),
            "{name} imports {:?}",
            plugin.imports
        );
    }
}
