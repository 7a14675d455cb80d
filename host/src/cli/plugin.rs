//! `wayline plugin inspect` and `wayline plugin call`: JSON on stdout, so scripts can read it.
//! Exit codes: 0 it worked, 1 the plugin failed or was refused, 2 bad arguments or input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::Deserialize;
use serde_json::json;

use crate::model::{Contact, Event, Message, PreparedConfig};
use crate::runtime::{
    CallReport, LoadError, Plugin, PluginKind, PluginSettings, Runtime, RuntimeConfig,
};

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The plugin binary.
    file: PathBuf,
    /// JSON with the call's input: `contact`, `event` and/or `message`, as the kind needs.
    #[arg(long)]
    input: Option<PathBuf>,
    /// The plugin's config document (JSON); `{}` when omitted.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Operator settings (JSON): `limits`, `approved_hosts`, `secrets`.
    #[arg(long)]
    settings: Option<PathBuf>,
    /// Which export to call: `describe`, `validate-config`, or the kind's own function (default).
    #[arg(long)]
    function: Option<String>,
}

/// The input document of `plugin call`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallInput {
    contact: Option<Contact>,
    event: Option<Event>,
    message: Option<Message>,
}

pub(super) fn print(value: &serde_json::Value) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

pub(super) fn fail(code: &str, message: impl std::fmt::Display, exit: u8) -> ExitCode {
    print(&json!({"error": {"code": code, "message": message.to_string()}}));
    ExitCode::from(exit)
}

fn load(path: &Path, settings: &PluginSettings) -> Result<(Runtime, Plugin), ExitCode> {
    let bytes = std::fs::read(path)
        .map_err(|e| fail("file_unreadable", format!("{}: {e}", path.display()), 2))?;
    let runtime =
        Runtime::new(RuntimeConfig::default()).map_err(|e| fail("runtime_unavailable", e, 1))?;
    let plugin = runtime
        .load(&bytes, settings)
        .map_err(|e: LoadError| fail(e.code(), e, 1))?;
    Ok((runtime, plugin))
}

pub fn inspect(path: &Path) -> ExitCode {
    let (_runtime, plugin) = match load(path, &PluginSettings::default()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    print(&json!({
        "id": plugin.id(),
        "kind": plugin.kind,
        "world": plugin.kind.world(plugin.wit_version),
        "contract": plugin.wit_version,
        "name": plugin.info.name,
        "version": plugin.info.version,
        "description": plugin.info.description,
        "sha256": plugin.sha256,
        "size": plugin.size,
        "componentized": plugin.componentized,
        "exports": plugin.exports,
        "imports": plugin.imports,
        "outbound_hosts": plugin.info.outbound_hosts,
        "config_schema": plugin.info.config_schema,
    }));
    ExitCode::SUCCESS
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, ExitCode> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail("file_unreadable", format!("{}: {e}", path.display()), 2))?;
    serde_json::from_str(&text).map_err(|e| {
        fail(
            "invalid_input",
            format!("{what} {}: {e}", path.display()),
            2,
        )
    })
}

pub async fn call(args: CallArgs) -> ExitCode {
    match try_call(args).await {
        Ok(code) | Err(code) => code,
    }
}

async fn try_call(args: CallArgs) -> Result<ExitCode, ExitCode> {
    let settings: PluginSettings = args
        .settings
        .as_deref()
        .map(|p| read_json(p, "settings"))
        .transpose()?
        .unwrap_or_default();
    let input: CallInput = args
        .input
        .as_deref()
        .map(|p| read_json(p, "input"))
        .transpose()?
        .unwrap_or_default();
    let config = match &args.config {
        Some(path) => {
            let value: serde_json::Value = read_json(path, "config")?;
            value.to_string()
        }
        None => "{}".to_owned(),
    };
    let (runtime, plugin) = load(&args.file, &settings)?;
    let function = args
        .function
        .clone()
        .unwrap_or_else(|| main_function(plugin.kind).to_owned());
    let kind = plugin.kind;
    let need = |field: &str| {
        fail(
            "invalid_input",
            format!(
                "`{function}` of a {} plugin needs `{field}` in --input",
                kind.as_str()
            ),
            2,
        )
    };
    let contact = || input.contact.as_ref().ok_or_else(|| need("contact"));
    let event = || input.event.as_ref().ok_or_else(|| need("event"));
    // Every call but `describe` starts as a journey step does: the plugin checks the JSON config
    // and prepares it, and the call takes the prepared bytes.
    let prepared = || -> Result<PreparedConfig, ExitCode> {
        let report = runtime.validate_config(&plugin, &config);
        match report.result {
            Ok(Ok(prepared)) => Ok(prepared),
            Ok(Err(problems)) => {
                print(&json!({
                    "error": {
                        "code": "config_invalid",
                        "message": "the plugin refused its config",
                        "problems": problems,
                    },
                    "logs": report.logs,
                    "plugin": plugin.id(),
                    "kind": kind,
                    "function": "validate-config",
                }));
                Err(ExitCode::from(1))
            }
            Err(error) => {
                let mut output = serde_json::to_value(&CallReport::<()> {
                    result: Err(error),
                    logs: report.logs,
                    elapsed: report.elapsed,
                    waited: report.waited,
                })
                .expect("reports serialize");
                output["plugin"] = json!(plugin.id());
                output["kind"] = json!(kind);
                output["function"] = json!("validate-config");
                print(&output);
                Err(ExitCode::from(1))
            }
        }
    };
    let report: CallReport<serde_json::Value> = match (function.as_str(), kind) {
        ("describe", _) => to_json(runtime.describe(&plugin)),
        ("validate-config", _) => to_json(runtime.validate_config(&plugin, &config).map(
            |verdict| match verdict {
                Ok(prepared) => json!({
                    "valid": true,
                    "problems": [],
                    "prepared_bytes": prepared.bytes.len(),
                    "attributes": prepared.attributes,
                }),
                Err(problems) => json!({"valid": false, "problems": problems}),
            },
        )),
        ("matches", PluginKind::Trigger) => {
            let (event, contact) = (event()?, contact()?);
            to_json(runtime.matches(&plugin, &prepared()?, event, contact))
        }
        ("evaluate", PluginKind::Condition) => {
            let contact = contact()?;
            to_json(runtime.evaluate(&plugin, &prepared()?, contact, input.event.as_ref()))
        }
        ("run", PluginKind::Action) => {
            let contact = contact()?;
            to_json(runtime.run_action(&plugin, &prepared()?, contact, input.event.as_ref()))
        }
        ("score", PluginKind::Scorer) => {
            let (contact, event) = (contact()?, event()?);
            to_json(runtime.score(&plugin, &prepared()?, contact, event))
        }
        ("deliver", PluginKind::Channel) => {
            let message = input.message.as_ref().ok_or_else(|| need("message"))?;
            let prepared = prepared()?;
            to_json(runtime.deliver(&plugin, &prepared, message).await)
        }
        (other, kind) => {
            return Err(fail(
                "invalid_input",
                format!(
                    "a {} plugin has no function `{other}`; use describe, validate-config or {}",
                    kind.as_str(),
                    main_function(kind)
                ),
                2,
            ));
        }
    };
    let failed = report.result.is_err();
    let mut output = serde_json::to_value(&report).expect("reports serialize");
    output["plugin"] = json!(plugin.id());
    output["kind"] = json!(plugin.kind);
    output["function"] = json!(function);
    print(&output);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn main_function(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Trigger => "matches",
        PluginKind::Condition => "evaluate",
        PluginKind::Action => "run",
        PluginKind::Scorer => "score",
        PluginKind::Channel => "deliver",
    }
}

fn to_json<T: serde::Serialize>(report: CallReport<T>) -> CallReport<serde_json::Value> {
    report.map(|value| serde_json::to_value(value).expect("plugin results serialize"))
}
