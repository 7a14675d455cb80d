//! Secrets a plugin names but never reads: the host writes them into a request from
//! `{{secret:NAME}}` placeholders, only for the targets each secret is bound to, and redacts
//! their verbatim bytes from what comes back.
//!
//! Redaction cannot be complete: a host that reflects input can send back an encoded copy (or
//! one byte per request) that no byte match finds. The defence is the binding: a secret goes
//! only to its provider's API, and a request that would carry it anywhere else is refused.

use std::collections::BTreeMap;

use hmac::Mac;

use super::target::{Approval, Target};
use crate::runtime::bindings::http::HttpError;

const PLACEHOLDER_OPEN: &[u8] = b"{{secret:";
const SIGNATURE_OPEN: &str = "{{hmac-sha256:";
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
    /// Usable as the key of `signatures.verify-hmac`.
    pub verifies_webhooks: bool,
}

/// Why a secret could not be written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// No secret of that name is set for the channel.
    Unknown(String),
    /// It exists but may not go there, or the placeholder is malformed.
    Denied(String),
}

impl From<SecretError> for HttpError {
    fn from(error: SecretError) -> Self {
        match error {
            SecretError::Unknown(name) => HttpError::UnknownSecret(name),
            SecretError::Denied(why) => HttpError::Denied(why),
        }
    }
}

/// A plugin's secrets by name.
#[derive(Debug, Clone, Default)]
pub struct Secrets(pub BTreeMap<String, Secret>);

impl Secrets {
    /// The secret `name`, if it may be sent to `target`.
    fn bound(&self, name: &str, target: &Target) -> Result<&Secret, SecretError> {
        let Some(secret) = self.0.get(name) else {
            return Err(SecretError::Unknown(name.to_owned()));
        };
        if !secret.bound_to.iter().any(|a| a.covers(target)) {
            return Err(SecretError::Denied(format!(
                "secret `{name}` is not bound to {target}, so it is not sent there"
            )));
        }
        Ok(secret)
    }

    /// The key to check a provider's webhook signature with (for the host's own use, never
    /// for a plugin to read): secret `name`, if the operator set it for that.
    pub fn webhook_key(&self, name: &str) -> Result<&SecretValue, String> {
        match self.0.get(name) {
            None => Err(format!("no secret `{name}` is set for this channel")),
            Some(secret) if !secret.verifies_webhooks => Err(format!(
                "secret `{name}` is not set with `verifies_webhooks`, so signatures are not checked with it"
            )),
            Some(secret) => Ok(&secret.value),
        }
    }

    /// A header value with `{{hmac-sha256:NAME}}` replaced by the hex HMAC-SHA256 of `body`
    /// keyed with secret NAME, if NAME is bound to `target`: the plugin signs what it sends
    /// without holding the key.
    pub fn sign(&self, value: &str, body: &[u8], target: &Target) -> Result<String, SecretError> {
        let Some(start) = value.find(SIGNATURE_OPEN) else {
            return Ok(value.to_owned());
        };
        let after = &value[start + SIGNATURE_OPEN.len()..];
        let Some(end) = after.find("}}") else {
            return Err(SecretError::Denied(
                "unterminated `{{hmac-sha256:` placeholder".into(),
            ));
        };
        let secret = self.bound(&after[..end], target)?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.value.0.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(body);
        let signed = format!(
            "{}{}{}",
            &value[..start],
            hex::encode(mac.finalize().into_bytes()),
            &after[end + 2..]
        );
        // One signature per header value: a second placeholder is refused, not left raw.
        if signed.contains(SIGNATURE_OPEN) {
            return Err(SecretError::Denied(
                "one `{{hmac-sha256:…}}` per header value".into(),
            ));
        }
        Ok(signed)
    }

    /// `input` with every `{{secret:NAME}}` replaced by the secret's value, if each named secret
    /// exists and is bound to `target`.
    pub fn substitute(&self, input: &[u8], target: &Target) -> Result<Vec<u8>, SecretError> {
        let mut output = Vec::with_capacity(input.len());
        let mut rest = input;
        while let Some(start) = find(rest, PLACEHOLDER_OPEN) {
            output.extend_from_slice(&rest[..start]);
            let after_open = &rest[start + PLACEHOLDER_OPEN.len()..];
            let Some(end) = find(after_open, PLACEHOLDER_CLOSE) else {
                return Err(SecretError::Denied(
                    "unterminated `{{secret:` placeholder".into(),
                ));
            };
            let name = String::from_utf8_lossy(&after_open[..end]).into_owned();
            let secret = self.bound(&name, target)?;
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
                verifies_webhooks: false,
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
            matches!(&refused, Err(SecretError::Denied(m)) if m.contains("not bound to https://echo.example.com:443")),
            "{refused:?}"
        );
        assert!(matches!(
            secrets.substitute(b"{{secret:nope}}", &bound),
            Err(SecretError::Unknown(n)) if n == "nope"
        ));
        assert!(secrets.substitute(b"{{secret:token", &bound).is_err());
        assert_eq!(
            secrets.substitute(b"no placeholder", &other).unwrap(),
            b"no placeholder"
        );
    }

    #[test]
    fn a_signature_is_made_with_a_bound_secret_and_only_for_its_targets() {
        let secrets = secrets();
        let bound = target("https://api.example.com/v1");
        let signed = secrets
            .sign("sha256={{hmac-sha256:token}}", b"{\"a\":1}", &bound)
            .unwrap();
        // HMAC-SHA256("s3cr3t-value", "{"a":1}"), computed independently with openssl.
        assert_eq!(
            signed,
            "sha256=7c0db2d4a84e4e6d72a65c7a93bf720b95f4b98c43cad9be9df4aa4cdcf845da"
        );
        let other = target("https://echo.example.com/");
        assert!(matches!(
            secrets.sign("{{hmac-sha256:token}}", b"x", &other),
            Err(SecretError::Denied(_))
        ));
        assert!(matches!(
            secrets.sign("{{hmac-sha256:nope}}", b"x", &bound),
            Err(SecretError::Unknown(_))
        ));
        assert_eq!(secrets.sign("plain", b"x", &other).unwrap(), "plain");
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
