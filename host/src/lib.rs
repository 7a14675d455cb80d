//! Wayline: marketing automation whose every journey step is a sandboxed Wasm plugin.

pub mod api;
pub mod cli;
pub mod clock;
pub mod journeys;
pub mod model;
pub mod plugin_kv;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod store;
