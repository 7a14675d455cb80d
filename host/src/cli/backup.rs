//! `wayline backup` (from a running server, over its admin API) and `wayline restore` (into a
//! new data directory, with no server running on it). A backup file is kept only once it has
//! been read back whole and its checksum holds; a restore builds the store beside its place
//! and moves it there only once the whole backup has been read (see `store::backup`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::contacts::{bar, streamed};
use super::plugin::{fail, print};
use super::remote::{ServerArgs, url};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write. It appears only once the backup is whole and checked.
    #[arg(long, short)]
    output: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file `wayline backup` wrote.
    file: PathBuf,
    /// The data directory to restore into: new, or without a store (`DATA/store`). Start the
    /// server on it with the secret key the backed-up server had (`--secret-key-file`), or
    /// channel secrets cannot be opened.
    #[arg(long, env = "WAYLINE_DATA")]
    data: PathBuf,
}

/// `wayline backup --output FILE`: the running server's whole store, consistent at one moment.
pub async fn backup(args: BackupArgs) -> ExitCode {
    let request = reqwest::Client::new()
        .get(url(&args.server, "/v1/admin/backup"))
        .bearer_auth(&args.server.token);
    let mut response = match streamed(request).await {
        Ok(response) => response,
        Err(exit) => return exit,
    };
    let partial = args.output.with_extension("partial");
    let file = match std::fs::File::create(&partial) {
        Ok(file) => file,
        Err(e) => return fail("file_unwritable", format!("{}: {e}", partial.display()), 2),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let progress = bar(None, "receiving");
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                progress.inc(chunk.len() as u64);
                if let Err(e) = out.write_all(&chunk) {
                    break Err(("file_unwritable", e.to_string(), 2));
                }
            }
            Ok(None) => break Ok(()),
            Err(error) => break Err(("backup_interrupted", error.to_string(), 1)),
        }
    };
    progress.finish_and_clear();
    let kept = outcome
        .and_then(|()| {
            let file = out
                .into_inner()
                .map_err(|e| ("file_unwritable", e.to_string(), 2))?;
            file.sync_all()
                .map_err(|e| ("file_unwritable", e.to_string(), 2))?;
            Ok(())
        })
        .and_then(|()| {
            let mut file =
                std::fs::File::open(&partial).map_err(|e| ("file_unreadable", e.to_string(), 2))?;
            crate::store::verify(&mut file).map_err(|e| ("backup_damaged", e.to_string(), 1))
        })
        .and_then(|summary| {
            std::fs::rename(&partial, &args.output)
                .map_err(|e| ("file_unwritable", e.to_string(), 2))?;
            Ok(summary)
        });
    match kept {
        Ok(summary) => {
            let bytes = std::fs::metadata(&args.output).map_or(0, |m| m.len());
            print(&json!({
                "file": args.output,
                "records": summary.records,
                "bytes": bytes,
                "sha256": summary.sha256,
            }));
            ExitCode::SUCCESS
        }
        Err((code, message, exit)) => {
            let _ = std::fs::remove_file(&partial);
            fail(code, message, exit)
        }
    }
}

/// `wayline restore FILE --data DIR`: the backup's store in `DIR/store`.
pub fn restore(args: RestoreArgs) -> ExitCode {
    let mut file = match std::fs::File::open(&args.file) {
        Ok(file) => file,
        Err(e) => {
            return fail(
                "file_unreadable",
                format!("{}: {e}", args.file.display()),
                2,
            );
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.data) {
        return fail(
            "file_unwritable",
            format!("{}: {e}", args.data.display()),
            2,
        );
    }
    match crate::store::restore(&mut file, &args.data.join("store")) {
        Ok(summary) => {
            print(&json!({
                "data": args.data,
                "records": summary.records,
                "sha256": summary.sha256,
                "next": "start the server on this data directory with the secret key the backed-up server had; its write key and first token are not in the backup",
            }));
            ExitCode::SUCCESS
        }
        Err(crate::store::StoreError::Conflict(message)) => fail("data_not_empty", message, 1),
        Err(crate::store::StoreError::Invalid(message)) => fail("backup_unusable", message, 1),
        Err(error) => fail("restore_failed", error, 1),
    }
}
