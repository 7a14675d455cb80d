//! What operators send a running server from a shell besides plugins: `wayline contacts
//! import FILE`, `wayline contacts export` and `wayline journey publish FILE`. Long transfers
//! show a progress bar on stderr (none when stderr is not a terminal); the server's JSON
//! answer goes to stdout, as for `plugin push`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::plugin::fail;
use super::remote::{ServerArgs, send, url};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A CSV (`.csv`) or NDJSON (`.ndjson`, `.jsonl`) file of contacts.
    file: PathBuf,
    /// Check and count only; nothing is written.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// `ndjson` or `csv`.
    #[arg(long, default_value = "ndjson")]
    format: String,
    /// Where to write it; stdout when absent.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// A journey definition (JSON), as in `examples/journeys/`.
    file: PathBuf,
    /// The journey's id; default: the file's name before `.json`.
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

pub(super) fn bar(length: Option<u64>, message: &'static str) -> ProgressBar {
    let bar = match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec})")
                .expect("a valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
                .expect("a valid template"),
        ),
    };
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `wayline contacts import FILE`: upload it with a progress bar; print the server's counts.
pub async fn import(args: ImportArgs) -> ExitCode {
    let content_type = match args.file.extension().and_then(|e| e.to_str()) {
        Some("csv") => "text/csv",
        Some("ndjson" | "jsonl") => "application/x-ndjson",
        _ => {
            return fail(
                "invalid_arguments",
                "the file's name ends in .csv, .ndjson or .jsonl",
                2,
            );
        }
    };
    let bytes = match std::fs::read(&args.file) {
        Ok(bytes) => bytes,
        Err(e) => {
            return fail(
                "file_unreadable",
                format!("{}: {e}", args.file.display()),
                2,
            );
        }
    };
    let progress = bar(Some(bytes.len() as u64), "sending");
    let chunks: Vec<Vec<u8>> = bytes.chunks(256 << 10).map(<[u8]>::to_vec).collect();
    let counted = progress.clone();
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
        counted.inc(chunk.len() as u64);
        Ok::<_, std::io::Error>(chunk)
    }));
    let request = reqwest::Client::new()
        .post(url(&args.server, "/v1/imports/contacts"))
        .query(&[("dry_run", args.dry_run)])
        .bearer_auth(&args.server.token)
        .header("content-type", content_type)
        .header("content-length", bytes.len())
        .body(reqwest::Body::wrap_stream(stream));
    let answered = send(request).await;
    progress.finish_and_clear();
    answered
}

/// `wayline contacts export`: stream every contact to a file or stdout, with a progress count.
pub async fn export(args: ExportArgs) -> ExitCode {
    let request = reqwest::Client::new()
        .get(url(&args.server, "/v1/exports/contacts"))
        .query(&[("format", &args.format)])
        .bearer_auth(&args.server.token);
    let mut response = match streamed(request).await {
        Ok(response) => response,
        Err(exit) => return exit,
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Box::new(std::io::BufWriter::new(file)),
            Err(e) => return fail("file_unwritable", format!("{}: {e}", path.display()), 2),
        },
        None => Box::new(std::io::stdout().lock()),
    };
    let progress = bar(None, "receiving");
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                progress.inc(chunk.len() as u64);
                if let Err(e) = out.write_all(&chunk) {
                    progress.abandon();
                    return fail("file_unwritable", e, 2);
                }
            }
            Ok(None) => break,
            Err(error) => {
                progress.abandon();
                return fail("export_interrupted", error, 1);
            }
        }
    }
    progress.finish_and_clear();
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("file_unwritable", e, 2),
    }
}

/// Send a request whose answer is streamed: the response once the server said yes, else the
/// exit code after printing why not.
pub(super) async fn streamed(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ExitCode> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Err(fail("server_unreachable", error, 2)),
    };
    if !response.status().is_success() {
        return Err(send_failed(response).await);
    }
    Ok(response)
}

pub(super) async fn send_failed(response: reqwest::Response) -> ExitCode {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let value = serde_json::from_str(&body).unwrap_or_else(|_| {
        serde_json::json!({"error": {"code": "unexpected_answer", "message": format!("{status}: {body}")}})
    });
    super::plugin::print(&value);
    ExitCode::from(1)
}

/// `wayline journey publish FILE`: save the file as the journey's draft, then publish it;
/// prints the new version (with warnings) or why it was refused.
pub async fn publish(args: PublishArgs) -> ExitCode {
    let Some(id) = args
        .id
        .clone()
        .or_else(|| Some(args.file.file_stem()?.to_str()?.to_owned()))
    else {
        return fail("invalid_arguments", "say the journey's id with --id", 2);
    };
    let draft = match std::fs::read(&args.file) {
        Ok(bytes) => bytes,
        Err(e) => {
            return fail(
                "file_unreadable",
                format!("{}: {e}", args.file.display()),
                2,
            );
        }
    };
    let client = reqwest::Client::new();
    let saved = client
        .put(url(&args.server, &format!("/v1/journeys/{id}")))
        .bearer_auth(&args.server.token)
        .header("content-type", "application/json")
        .body(draft)
        .send()
        .await;
    match saved {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => return send_failed(response).await,
        Err(error) => return fail("server_unreachable", error, 2),
    }
    let request = client
        .post(url(&args.server, &format!("/v1/journeys/{id}/publish")))
        .bearer_auth(&args.server.token);
    send(request).await
}
