use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Standard error for the log, whose failures are dropped: a log sink that went away (a closed
/// pipe, a full disk) must not fail the request that logged, nor anything else.
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WAYLINE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(|| LogSink)
        .init();
    wayline::cli::run(wayline::cli::Cli::parse()).await
}
