//! `wayline:plugin/log`: structured logs, kept with the call and forwarded to tracing.

use super::{HostState, LogRecord};
use crate::runtime::bindings::log::{self, Level};

/// Longest log line kept; longer ones are cut so a plugin cannot fill memory through logs.
const MAX_LINE_BYTES: usize = 4096;

impl log::Host for HostState {
    fn log(&mut self, level: Level, mut message: String) -> wasmtime::Result<()> {
        if self.logs.len() >= self.max_log_lines {
            self.dropped_logs += 1;
            return Ok(());
        }
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.plugin_id;
        let level = match level {
            Level::Trace => {
                tracing::trace!(plugin, "{message}");
                "trace"
            }
            Level::Debug => {
                tracing::debug!(plugin, "{message}");
                "debug"
            }
            Level::Info => {
                tracing::info!(plugin, "{message}");
                "info"
            }
            Level::Warn => {
                tracing::warn!(plugin, "{message}");
                "warn"
            }
            Level::Error => {
                tracing::error!(plugin, "{message}");
                "error"
            }
        };
        self.logs.push(LogRecord {
            level,
            message,
            at: self.clock.now(),
        });
        Ok(())
    }
}
