//! Commands that speak to a running server for what operators do daily: `wayline plugin push`
//! and `wayline plugin list`. They print the server's JSON answer; the exit code is 0 when the
//! server did it, 1 when it refused (its error is printed), 2 when it could not be asked.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::plugin::{fail, print};

/// Where the server is and the token to call it with.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "WAYLINE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub(super) server: String,
    /// An API token with the role the command needs (admin to push plugins).
    #[arg(long, env = "WAYLINE_TOKEN", hide_env_values = true)]
    pub(super) token: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The plugin binary: a component, or a core module with a component-type section.
    file: PathBuf,
    /// The name to install it under: the plugin's own name. Default: the file's name before
    /// `.wasm` or `@`, as in a plugin directory (`rule-scorer.wasm`, `rule-scorer@1.2.0.wasm`).
    #[arg(long)]
    name: Option<String>,
    /// Limits the plugin runs under, as JSON (`{"cpu_ms": 200, "memory_bytes": 67108864}`);
    /// the rest keep their defaults.
    #[arg(long)]
    limits: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Send a request and print what the server answered.
pub(super) async fn send(request: reqwest::RequestBuilder) -> ExitCode {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return fail("server_unreachable", error, 2),
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let value = serde_json::from_str(&body).unwrap_or_else(
        |_| json!({"error": {"code": "unexpected_answer", "message": format!("{status}: {body}")}}),
    );
    print(&value);
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(super) fn url(server: &ServerArgs, path: &str) -> String {
    format!("{}{path}", server.server.trim_end_matches('/'))
}

/// `wayline plugin push FILE`: upload a plugin version into the running server.
pub async fn push(args: PushArgs) -> ExitCode {
    let binary = match std::fs::read(&args.file) {
        Ok(binary) => binary,
        Err(e) => {
            return fail(
                "file_unreadable",
                format!("{}: {e}", args.file.display()),
                2,
            );
        }
    };
    let name = args.name.clone().or_else(|| {
        let stem = args.file.file_stem()?.to_str()?;
        Some(stem.split('@').next().unwrap_or(stem).to_owned())
    });
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return fail("invalid_arguments", "say the plugin's name with --name", 2);
    };
    let mut query = Vec::new();
    if let Some(limits) = &args.limits {
        let limits: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(limits)
        {
            Ok(limits) => limits,
            Err(e) => return fail("invalid_arguments", format!("--limits: {e}"), 2),
        };
        for (key, value) in limits {
            query.push((key, value.to_string()));
        }
    }
    let request = reqwest::Client::new()
        .put(url(&args.server, &format!("/v1/admin/plugins/{name}")))
        .query(&query)
        .bearer_auth(&args.server.token)
        .header("content-type", "application/wasm")
        .body(binary);
    send(request).await
}

/// `wayline plugin list`: the plugins the running server has installed.
pub async fn list(server: ServerArgs) -> ExitCode {
    let request = reqwest::Client::new()
        .get(url(&server, "/v1/plugins"))
        .bearer_auth(&server.token);
    send(request).await
}
