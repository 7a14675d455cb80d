//! Contact import and export rates: a 1,000,000-row CSV imported through
//! `POST /v1/imports/contacts` into real sled, then every contact exported as CSV and as NDJSON
//! through `GET /v1/exports/contacts`, read to the end by the client.
//!
//! Run with `cargo bench -p wayline --bench transfer`. Prints a Markdown section for
//! BENCHMARKS.md. `WAYLINE_TRANSFER_ROWS` (default 1,000,000) and `WAYLINE_TRANSFER_RUNS`
//! (default 3) scale it.

mod common;

use std::sync::Arc;
use std::time::Instant;

use wayline::registry::Registry;
use wayline::runtime::{Runtime, RuntimeConfig};

const TOKEN: &str = "transfer-bench-token-0123";

/// `rows` contacts as a marketer's CSV: address, name, plan, seats, tags, email consent.
fn csv(rows: usize) -> Vec<u8> {
    let mut csv = String::with_capacity(rows * 80);
    csv.push_str("email,first_name,plan,seats,tags,consent.email\n");
    for n in 0..rows {
        let plan = ["free", "pro", "team"][n % 3];
        csv.push_str(&format!(
            "person.{n}@example.com,Person {n},{plan},{},lead;web,granted\n",
            n % 900
        ));
    }
    csv.into_bytes()
}

async fn export(client: &reqwest::Client, base: &str, format: &str) -> (usize, f64) {
    let started = Instant::now();
    let mut response = client
        .get(format!("{base}/v1/exports/contacts?format={format}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let (mut bytes, mut lines) = (0, 0);
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let _ = bytes;
    (lines, started.elapsed().as_secs_f64())
}

fn main() {
    let rows = common::env_number("WAYLINE_TRANSFER_ROWS", 1_000_000);
    let runs = common::env_number("WAYLINE_TRANSFER_RUNS", 3);
    println!(
        "## Contact import and export ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    );
    println!(
        "Machine: {}, 2 cores; server, client and sled in one process. Command: `cargo bench -p wayline --bench transfer`. {rows} CSV rows, each a new contact.\n",
        common::machine()
    );
    println!(
        "| run | file | import (POST → counts) | CPU per contact | export CSV | export NDJSON |"
    );
    println!("|---|---|---|---|---|---|");
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let file = csv(rows);
    for run in 1..=runs {
        let server = tokio.block_on(common::server(
            Arc::new(Registry::default()),
            runtime.clone(),
            TOKEN,
        ));
        let client = reqwest::Client::new();
        let (started, cpu) = (Instant::now(), common::cpu_seconds());
        let report: serde_json::Value = tokio.block_on(async {
            let response = client
                .post(format!("{}/v1/imports/contacts", server.base))
                .bearer_auth(TOKEN)
                .header("content-type", "text/csv")
                .body(file.clone())
                .send()
                .await
                .unwrap();
            let status = response.status();
            let report: serde_json::Value = response.json().await.unwrap();
            assert!(status.is_success(), "{status}: {report}");
            report
        });
        let (seconds, cpu) = (started.elapsed().as_secs_f64(), common::cpu_seconds() - cpu);
        assert_eq!(report["created"], rows as u64, "{report}");
        let (csv_lines, csv_seconds) = tokio.block_on(export(&client, &server.base, "csv"));
        let (json_lines, json_seconds) = tokio.block_on(export(&client, &server.base, "ndjson"));
        assert_eq!((csv_lines, json_lines), (rows + 1, rows));
        println!(
            "| {run} | {:.0} MB | {:.0} contacts/s ({seconds:.1} s) | {:.1} µs | {:.0} contacts/s | {:.0} contacts/s |",
            file.len() as f64 / 1e6,
            rows as f64 / seconds,
            cpu * 1e6 / rows as f64,
            rows as f64 / csv_seconds,
            rows as f64 / json_seconds,
        );
        server.state.scheduler.stop();
        server.state.messaging.stop();
    }
}
