//! The `wayline` command line: run the server, the tools plugin authors use without one, and
//! the commands operators send to a running server.

mod backup;
mod config;
mod contacts;
mod plugin;
mod remote;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Wayline: marketing automation whose every journey step is a sandboxed Wasm plugin.
#[derive(Debug, Parser)]
#[command(name = "wayline", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Inspect and try out plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Import and export a running server's contacts.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Publish journeys to a running server.
    #[command(subcommand)]
    Journey(JourneyCommand),
    /// Write a backup of a running server's whole store (`--server`, `--token`, admin).
    Backup(backup::BackupArgs),
    /// Restore a backup into a new data directory (no server running on it).
    Restore(backup::RestoreArgs),
}

#[derive(Debug, Subcommand)]
enum ContactsCommand {
    /// Import a CSV or NDJSON file (checked whole first; bad rows reported by line).
    Import(contacts::ImportArgs),
    /// Export every contact as NDJSON or CSV.
    Export(contacts::ExportArgs),
}

#[derive(Debug, Subcommand)]
enum JourneyCommand {
    /// Save a journey file as the journey's draft and publish it.
    Publish(contacts::PublishArgs),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a plugin's kind, name, version, sha256, size, exports, imports and outbound hosts.
    Inspect {
        /// A plugin binary: a component, or a core module with a component-type section.
        file: PathBuf,
    },
    /// Run one call of a plugin under the real limits and print the result, logs and duration.
    Call(plugin::CallArgs),
    /// Upload a plugin version into a running server (`--server`, `--token`).
    Push(remote::PushArgs),
    /// List the plugins a running server has installed.
    List(remote::ServerArgs),
}

/// Run the command line; the exit code says whether it worked.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Plugin(PluginCommand::Inspect { file }) => plugin::inspect(&file),
        Command::Plugin(PluginCommand::Call(args)) => plugin::call(args).await,
        Command::Plugin(PluginCommand::Push(args)) => remote::push(args).await,
        Command::Plugin(PluginCommand::List(args)) => remote::list(args).await,
        Command::Contacts(ContactsCommand::Import(args)) => contacts::import(args).await,
        Command::Contacts(ContactsCommand::Export(args)) => contacts::export(args).await,
        Command::Journey(JourneyCommand::Publish(args)) => contacts::publish(args).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args),
    }
}
