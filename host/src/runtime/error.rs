//! Errors of the plugin runtime, each with a stable machine code.

use thiserror::Error;

/// Why a binary could not become a loaded plugin.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("plugin binary is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a WebAssembly binary: {0}")]
    NotWasm(String),
    #[error("invalid WebAssembly: {0}")]
    Invalid(String),
    #[error("core module cannot be made into a component: {0}")]
    NotComponentizable(String),
    #[error("{0}")]
    WrongWorld(String),
    #[error("plugin failed while describing itself: {0}")]
    Describe(#[source] CallError),
    /// The name or version it gives itself is not one the host can give a plugin.
    #[error("{0}")]
    BadIdentity(String),
    #[error("compile cache: {0}")]
    Cache(String),
    /// The operator's settings for the plugin are not ones the host can apply.
    #[error("plugin settings: {0}")]
    Settings(String),
}

impl LoadError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::TooLarge { .. } => "plugin_too_large",
            LoadError::NotWasm(_) => "plugin_not_wasm",
            LoadError::Invalid(_) => "plugin_invalid_wasm",
            LoadError::NotComponentizable(_) => "plugin_not_componentizable",
            LoadError::WrongWorld(_) => "plugin_wrong_world",
            LoadError::Describe(_) => "plugin_describe_failed",
            LoadError::BadIdentity(_) => "plugin_bad_name",
            LoadError::Cache(_) => "plugin_cache_error",
            LoadError::Settings(_) => "plugin_settings_invalid",
        }
    }
}

/// Why one plugin call failed. The host and other plugins are unaffected.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum CallError {
    #[error("CPU limit: the plugin ran longer than its {cpu_ms} ms budget")]
    CpuLimit { cpu_ms: u64 },
    #[error("memory limit: {0}")]
    MemoryLimit(String),
    #[error("stack overflow: the plugin recursed too deeply")]
    StackOverflow,
    #[error("output limit: the plugin returned {size} bytes; the limit is {limit}")]
    OutputLimit { size: usize, limit: usize },
    #[error("wall-clock limit: the call took longer than {wall_ms} ms")]
    Timeout { wall_ms: u64 },
    #[error("plugin panicked: {0}")]
    Panicked(String),
    #[error("plugin trapped: {0}")]
    Trapped(String),
    /// The plugin ran fine and returned its own error (a WIT `result` error).
    #[error("plugin returned an error: {0}")]
    Plugin(String),
    #[error("this plugin is a {actual} plugin, not a {expected} plugin")]
    WrongKind {
        expected: &'static str,
        actual: &'static str,
    },
    #[error("could not start the plugin: {0}")]
    Instantiate(String),
}

impl CallError {
    /// The same error with any text from the plugin (its message, a trap's backtrace, which
    /// names the guest's functions) cut to a length the host keeps.
    pub fn bounded(self) -> Self {
        use super::output::bounded_error;
        match self {
            CallError::MemoryLimit(text) => CallError::MemoryLimit(bounded_error(&text)),
            CallError::Panicked(text) => CallError::Panicked(bounded_error(&text)),
            CallError::Trapped(text) => CallError::Trapped(bounded_error(&text)),
            CallError::Plugin(text) => CallError::Plugin(bounded_error(&text)),
            CallError::Instantiate(text) => CallError::Instantiate(bounded_error(&text)),
            other => other,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::CpuLimit { .. } => "plugin_cpu_limit",
            CallError::MemoryLimit(_) => "plugin_memory_limit",
            CallError::StackOverflow => "plugin_stack_overflow",
            CallError::OutputLimit { .. } => "plugin_output_limit",
            CallError::Timeout { .. } => "plugin_timeout",
            CallError::Panicked(_) => "plugin_panicked",
            CallError::Trapped(_) => "plugin_trapped",
            CallError::Plugin(_) => "plugin_error",
            CallError::WrongKind { .. } => "plugin_wrong_kind",
            CallError::Instantiate(_) => "plugin_instantiate_failed",
        }
    }
}
