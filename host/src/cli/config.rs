//! `wayline serve`'s settings, in three layers: a TOML file (`--config FILE` or
//! `WAYLINE_CONFIG`), then the environment (`WAYLINE_*`), then the command line's flags, each
//! overriding the one before; what none of them gives takes its default. A key the file does
//! not know is refused with its name (and line), so a misspelt setting never passes silently.
//! Paths in the file are relative to the file's directory, as a service manager expects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::{HttpEdges, Rate};

/// The settings a config file may hold: the same names as the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub plugins: Option<PathBuf>,
    pub journeys: Option<PathBuf>,
    pub channels: Option<PathBuf>,
    pub templates: Option<PathBuf>,
    pub scoring: Option<PathBuf>,
    pub audiences: Option<PathBuf>,
    pub lifecycle: Option<PathBuf>,
    pub workers: Option<usize>,
    pub token: Option<String>,
    pub write_key: Option<String>,
    pub secret_key: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    pub public_url: Option<String>,
    pub tls_roots: Option<PathBuf>,
    #[serde(default)]
    pub limits: LimitSettings,
}

/// The bounds the server keeps, each optional in every layer.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Longest a request may take before it is answered 503 `timeout`, in seconds.
    #[arg(long, env = "WAYLINE_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Most requests served at once; more are answered 503 `overloaded`.
    #[arg(long, env = "WAYLINE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// Requests per second one token may make on the admin routes.
    #[arg(long, env = "WAYLINE_ADMIN_RATE")]
    pub admin_rate: Option<f64>,
    /// How many admin requests one token may make at once after a pause.
    #[arg(long, env = "WAYLINE_ADMIN_BURST")]
    pub admin_burst: Option<f64>,
    /// Contacts and events per second one token (or the write key) may send in.
    #[arg(long, env = "WAYLINE_INGEST_RATE")]
    pub ingest_rate: Option<f64>,
    /// How many ingest requests one caller may make at once after a pause.
    #[arg(long, env = "WAYLINE_INGEST_BURST")]
    pub ingest_burst: Option<f64>,
    /// Largest plugin binary loaded or uploaded, in bytes.
    #[arg(long, env = "WAYLINE_MAX_PLUGIN_BYTES")]
    pub max_plugin_bytes: Option<usize>,
    /// Longest the store's disk log may go without making a write durable before the server
    /// stops itself (exit status 75) so that a restart recovers the store, in seconds.
    #[arg(long, env = "WAYLINE_STORE_STALL_SECS")]
    pub store_stall_secs: Option<u64>,
}

/// A config file that cannot be used, said so that the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{setting}: {message}")]
    Bad {
        setting: &'static str,
        message: String,
    },
}

impl FileConfig {
    /// Read `path`; paths inside it are made relative to its directory.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let mut config: FileConfig =
            toml::from_str(&text).map_err(|error| ConfigError::Invalid {
                path: path.to_owned(),
                message: described(&text, &error),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for dir in [
            &mut config.data,
            &mut config.plugins,
            &mut config.journeys,
            &mut config.channels,
            &mut config.templates,
            &mut config.scoring,
            &mut config.audiences,
            &mut config.lifecycle,
            &mut config.secret_key_file,
            &mut config.tls_roots,
        ]
        .into_iter()
        .flatten()
        {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(config)
    }
}

/// What is wrong with the file, where, without quoting it: the line may hold a secret.
fn described(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return error.message().to_owned();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default().trim_start();
    let secret = ["token", "write_key", "secret_key"]
        .iter()
        .any(|key| line_text.starts_with(key) && !line_text.starts_with("secret_key_file"));
    let message = match secret {
        true => "this setting's value is not valid (not shown: it is a secret)",
        false => error.message(),
    };
    format!("line {line}, column {column}: {message}")
}

impl LimitSettings {
    /// These limits over `lower`: each one given here wins.
    pub fn over(self, lower: LimitSettings) -> LimitSettings {
        LimitSettings {
            request_timeout_secs: self.request_timeout_secs.or(lower.request_timeout_secs),
            max_concurrent_requests: self
                .max_concurrent_requests
                .or(lower.max_concurrent_requests),
            admin_rate: self.admin_rate.or(lower.admin_rate),
            admin_burst: self.admin_burst.or(lower.admin_burst),
            ingest_rate: self.ingest_rate.or(lower.ingest_rate),
            ingest_burst: self.ingest_burst.or(lower.ingest_burst),
            max_plugin_bytes: self.max_plugin_bytes.or(lower.max_plugin_bytes),
            store_stall_secs: self.store_stall_secs.or(lower.store_stall_secs),
        }
    }

    /// The HTTP bounds these limits give, the defaults where they say nothing.
    pub fn edges(&self) -> Result<HttpEdges, ConfigError> {
        let defaults = HttpEdges::default();
        let timeout = match self.request_timeout_secs {
            Some(0) => return Err(bad("request_timeout_secs", "must be at least 1")),
            Some(seconds) => Duration::from_secs(seconds),
            None => defaults.timeout,
        };
        let max_concurrent = match self.max_concurrent_requests {
            Some(0) => return Err(bad("max_concurrent_requests", "must be at least 1")),
            Some(n) => n,
            None => defaults.max_concurrent,
        };
        Ok(HttpEdges {
            timeout,
            max_concurrent,
            admin_rate: rate(
                ("admin_rate", self.admin_rate),
                ("admin_burst", self.admin_burst),
                defaults.admin_rate,
            )?,
            ingest_rate: rate(
                ("ingest_rate", self.ingest_rate),
                ("ingest_burst", self.ingest_burst),
                defaults.ingest_rate,
            )?,
        })
    }

    /// How long a flush of the store's log may take, `default` when not set.
    pub fn store_stall(&self, default: Duration) -> Result<Duration, ConfigError> {
        match self.store_stall_secs {
            Some(0) => Err(bad("store_stall_secs", "must be at least 1")),
            Some(seconds) => Ok(Duration::from_secs(seconds)),
            None => Ok(default),
        }
    }

    /// The largest plugin binary, `default` when not set.
    pub fn max_plugin_bytes(&self, default: usize) -> Result<usize, ConfigError> {
        match self.max_plugin_bytes {
            Some(0) => Err(bad("max_plugin_bytes", "must be at least 1")),
            Some(bytes) => Ok(bytes),
            None => Ok(default),
        }
    }
}

fn rate(
    (rate_name, per_second): (&'static str, Option<f64>),
    (burst_name, burst): (&'static str, Option<f64>),
    default: Rate,
) -> Result<Rate, ConfigError> {
    let per_second = per_second.unwrap_or(default.per_second);
    let burst = burst.unwrap_or(default.burst);
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err(bad(rate_name, "must be a number above 0"));
    }
    if !(burst.is_finite() && burst >= 1.0) {
        return Err(bad(burst_name, "must be a number of at least 1"));
    }
    Ok(Rate { per_second, burst })
}

fn bad(setting: &'static str, message: &str) -> ConfigError {
    ConfigError::Bad {
        setting,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wayline.toml");
        std::fs::write(&path, text).unwrap();
        FileConfig::read(&path)
    }

    #[test]
    fn an_unknown_key_is_refused_by_its_name() {
        let error = parse("listen = \"127.0.0.1:9000\"\nworkrs = 2\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `workrs`"), "{error}");
        let error = parse("[limits]\nadmin_rat = 5\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `admin_rat`"), "{error}");
    }

    #[test]
    fn an_error_on_a_secret_line_does_not_show_the_secret() {
        let error = parse("listen = \"127.0.0.1:9000\"\nsecret_key = 0123456789\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("0123456789"), "{error}");
    }

    #[test]
    fn paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wayline.toml");
        std::fs::write(&path, "data = \"state\"\ntls_roots = \"/etc/ca.pem\"\n").unwrap();
        let config = FileConfig::read(&path).unwrap();
        assert_eq!(config.data, Some(dir.path().join("state")));
        assert_eq!(config.tls_roots, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn a_higher_layer_wins_limit_by_limit() {
        let file = LimitSettings {
            admin_rate: Some(2.0),
            ingest_rate: Some(50.0),
            ..LimitSettings::default()
        };
        let flags = LimitSettings {
            admin_rate: Some(3.0),
            ..LimitSettings::default()
        };
        let edges = flags.over(file).edges().unwrap();
        assert_eq!(edges.admin_rate.per_second, 3.0);
        assert_eq!(edges.ingest_rate.per_second, 50.0);
        assert_eq!(edges.timeout, HttpEdges::default().timeout);
    }

    #[test]
    fn a_limit_that_cannot_hold_is_named() {
        let limits = LimitSettings {
            ingest_burst: Some(0.0),
            ..LimitSettings::default()
        };
        let error = limits.edges().unwrap_err().to_string();
        assert!(error.starts_with("ingest_burst:"), "{error}");
    }
}
