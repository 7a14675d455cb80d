//! Secrets a plugin names but never reads: the host writes them into a request from
//! `{{secret:NAME}}` placeholders, only for the targets each secret is bound to, and redacts
//! their verbatim bytes from what comes back.
//!
//! Redaction cannot be complete: a host that reflects input can send back an encoded copy (or
//! one byte per request) that no byte match finds. The defence is the binding: a secret goes
//! only to its provider's API, and a request that would carry it anywhere else is refused.

use std::collections::BTreeMap;

use super::target::{Approval, Target};
use crate::runtime::bindings::http::HttpError;

const PLACEHOLDER_OPEN: &[u8] = b"{{secret:";
const PLACEHOLDER_CLOSE: &[u8] = b"}}";
const REDACTED: &[u8] = b"[redacted]";

/// A secret's value: whatever holds one can be printed for debugging without showing it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One secret and the targets it may be sent to.
#[derive(Debug, Clone)]
pub struct Secret {
    pub value: SecretValue,
    pub bound_to: Vec<Approval>,
}

/// A plugin's secrets by name.
#[derive(Debug, Clone, Default)]
pub struct Secrets(pub BTreeMap<String, Secret>);

impl Secrets {
    /// `input` with every `{{secret:NAME}}` replaced by the secret's value, if each named secret
    /// exists and is bound to `target`.
    pub fn substitute(&self, input: &[u8], target: &Target) -> Result<Vec<u8>, HttpError> {
        let mut output = Vec::with_capacity(input.len());
        let mut rest = input;
        while let Some(start) = find(rest, PLACEHOLDER_OPEN) {
            output.extend_from_slice(&rest[..start]);
            let after_open = &rest[start + PLACEHOLDER_OPEN.len()..];
            let Some(end) = find(after_open, PLACEHOLDER_CLOSE) else {
                return Err(HttpError::Denied(
                    "unterminated `{{secret:` placeholder".into(),
                ));
            };
            let name = String::from_utf8_lossy(&after_open[..end]).into_owned();
            let Some(secret) = self.0.get(&name) else {
                return Err(HttpError::UnknownSecret(name));
            };
            if !secret.bound_to.iter().any(|a| a.covers(target)) {
                return Err(HttpError::Denied(format!(
                    "secret `{name}` is not bound to {target}, so it is not sent there"
                )));
            }
            output.extend_from_slice(secret.value.0.as_bytes());
            rest = &after_open[end + PLACEHOLDER_CLOSE.len()..];
        }
        output.extend_from_slice(rest);
        Ok(output)
    }

    /// `bytes` with every occurrence of every secret value replaced by `[redacted]`.
    pub fn redact(&self, bytes: Vec<u8>) -> Vec<u8> {
        self.0
            .values()
            .map(|s| s.value.0.as_bytes())
            .filter(|s| !s.is_empty())
            .fold(bytes, |bytes, secret| {
                if find(&bytes, secret).is_none() {
                    return bytes;
                }
                let mut output = Vec::with_capacity(bytes.len());
                let mut rest = bytes.as_slice();
                while let Some(at) = find(rest, secret) {
                    output.extend_from_slice(&rest[..at]);
                    output.extend_from_slice(REDACTED);
                    rest = &rest[at + secret.len()..];
                }
                output.extend_from_slice(rest);
                output
            })
    }

    pub fn redact_text(&self, text: String) -> String {
        String::from_utf8_lossy(&self.redact(text.into_bytes())).into_owned()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets(BTreeMap::from([(
            "token".to_owned(),
            Secret {
                value: SecretValue("s3cr3t-value".into()),
                bound_to: vec![Approval::parse("https://api.example.com").unwrap()],
            },
        )]))
    }

    fn target(url: &str) -> Target {
        Target::of(&url::Url::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn a_secret_is_written_in_only_for_the_targets_it_is_bound_to() {
        let secrets = secrets();
        let bound = target("https://api.example.com/v1");
        assert_eq!(
            secrets
                .substitute(b"Bearer {{secret:token}}", &bound)
                .unwrap(),
            b"Bearer s3cr3t-value"
        );
        let other = target("https://echo.example.com/");
        let refused = secrets.substitute(b"Bearer {{secret:token}}", &other);
        assert!(
            matches!(&refused, Err(HttpError::Denied(m)) if m.contains("not bound to https://echo.example.com:443")),
            "{refused:?}"
        );
        assert!(matches!(
            secrets.substitute(b"{{secret:nope}}", &bound),
            Err(HttpError::UnknownSecret(n)) if n == "nope"
        ));
        assert!(secrets.substitute(b"{{secret:token", &bound).is_err());
        assert_eq!(
            secrets.substitute(b"no placeholder", &other).unwrap(),
            b"no placeholder"
        );
    }

    #[test]
    fn verbatim_copies_are_redacted_and_debug_never_shows_a_value() {
        let secrets = secrets();
        assert_eq!(
            secrets.redact(b"you sent s3cr3t-value twice: s3cr3t-value".to_vec()),
            b"you sent [redacted] twice: [redacted]"
        );
        assert!(!format!("{secrets:?}").contains("s3cr3t"));
    }
}
