//! Wayline: marketing automation whose every journey step is a sandboxed Wasm plugin.

pub mod api;
pub mod audiences;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod ids;
pub mod journeys;
pub mod lifecycle;
pub mod messaging;
pub mod model;
pub mod plugin_kv;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod scoring;
pub mod standing;
pub mod store;
pub mod transfer;
pub mod uploads;

/// mimalloc for every binary built on this crate: the server, its tests and benches. glibc's
/// allocator spent a fifth of the journey load's CPU in malloc and free, much of it waiting on
/// its arena locks while ingest, workers and plugin calls allocate from several threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
