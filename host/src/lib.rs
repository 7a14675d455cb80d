//! Wayline: marketing automation whose every journey step is a sandboxed Wasm plugin.

pub mod clock;
pub mod model;
pub mod runtime;
pub mod api;
pub mod cli;
pub mod registry;
