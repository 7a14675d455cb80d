//! `wayline:plugin/log`: structured logs, kept with the call and forwarded to tracing.

use super::{HostState, LogRecord};
use crate::runtime::bindings::log::{self, Level};

/// Longest log line kept; longer ones are cut so a plugin cannot fill memory through logs.
const MAX_LINE_BYTES: usize = 4096;

/// A line as the host keeps it: control characters (a newline, an escape sequence) written as
/// escapes, so a plugin cannot forge a log line of its own or the host's, and cut to
/// [`MAX_LINE_BYTES`].
fn clean(message: &str) -> String {
    let mut line = String::with_capacity(message.len().min(MAX_LINE_BYTES));
    for c in message.chars() {
        if line.len() >= MAX_LINE_BYTES {
            line.push('…');
            break;
        }
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if self.logs.len() >= self.limits.log_lines
            || self.log_bytes + message.len().min(MAX_LINE_BYTES) > self.limits.log_bytes
        {
            self.dropped_logs += 1;
            return Ok(());
        }
        let message = clean(&message);
        self.log_bytes += message.len();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cannot_break_into_lines_of_its_own_or_carry_terminal_escapes() {
        let forged = "ok\n2026-12-01T00:00:00Z ERROR wayline: admin token leaked\r\u{1b}[2J";
        let line = clean(forged);
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\u{1b}'));
        assert!(
            line.contains("\\n2026") && line.contains("\\u{1b}"),
            "{line}"
        );
        assert!(clean(&"é".repeat(10_000)).len() <= MAX_LINE_BYTES + 4);
        assert_eq!(clean("plain 文字"), "plain 文字");
    }
}
