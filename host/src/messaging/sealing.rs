//! Channel secrets at rest: sealed with XChaCha20-Poly1305 under a key the server is given
//! (a file or an environment variable, never the store), bound to the channel and secret name
//! they belong to, so a sealed value copied to another secret does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::runtime::egress::SecretValue;

const NONCE_BYTES: usize = 24;

/// The key secrets are sealed with, and from which the key that signs links is derived.
#[derive(Clone)]
pub struct SealingKey(XChaCha20Poly1305, [u8; 32]);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// A key from 64 hex digits (what `openssl rand -hex 32` prints).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or("a secret key is 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`")?;
        let mut links = <Hmac<Sha256> as Mac>::new_from_slice(&bytes).expect("any key length");
        links.update(b"wayline-links");
        let links: [u8; 32] = links.finalize().into_bytes().into();
        Ok(SealingKey(
            XChaCha20Poly1305::new(bytes.as_slice().into()),
            links,
        ))
    }

    /// The key links (tracking, unsubscribe) are signed with: derived from this one, so one
    /// key is all an operator keeps, and never the same bytes for two purposes.
    pub fn link_key(&self) -> [u8; 32] {
        self.1
    }

    /// A new random key, as 64 hex digits.
    pub fn generate_hex() -> Result<String, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a key: {e}"))?;
        Ok(hex::encode(bytes))
    }

    /// `value` sealed for the secret `name` of channel `channel`, going to `hosts`.
    pub fn seal(
        &self,
        channel: &str,
        name: &str,
        hosts: &[String],
        value: &SecretValue,
    ) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let aad = associated(channel, name, hosts);
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.0.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| "sealing failed".to_owned())?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(STANDARD.encode(bytes))
    }

    /// The value sealed for `channel`'s secret `name`; an error when the key is not the one it
    /// was sealed with or the bytes were changed.
    pub fn open(
        &self,
        channel: &str,
        name: &str,
        hosts: &[String],
        sealed: &str,
    ) -> Result<SecretValue, String> {
        let unreadable = || {
            format!(
                "secret `{name}` of channel `{channel}` does not open with this server's key: the key changed since it was set, or the stored value or its hosts were altered; set the secret again"
            )
        };
        let bytes = STANDARD.decode(sealed).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_BYTES {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let aad = associated(channel, name, hosts);
        let plain = self
            .0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| unreadable())?;
        String::from_utf8(plain)
            .map(SecretValue)
            .map_err(|_| unreadable())
    }
}

/// What a sealed value is bound to: its channel, its name and the hosts it may go to, so a
/// value moved to another secret, or a stored host list edited, does not open.
fn associated(channel: &str, name: &str, hosts: &[String]) -> Vec<u8> {
    format!(
        "wayline-channel-secret\0{channel}\0{name}\0{}",
        hosts.join("\0")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_channel_and_name_with_the_same_key() {
        let value = SecretValue("s3cret-token".to_owned());
        let hosts = vec!["https://api.provider.com".to_owned()];
        let sealed = key().seal("email", "api_key", &hosts, &value).unwrap();
        assert!(!sealed.contains("s3cret"));
        let opened = key().open("email", "api_key", &hosts, &sealed).unwrap();
        assert_eq!(opened.0, "s3cret-token");
        assert!(key().open("sms", "api_key", &hosts, &sealed).is_err());
        assert!(key().open("email", "other", &hosts, &sealed).is_err());
        let elsewhere = vec!["https://evil.example.com".to_owned()];
        assert!(key().open("email", "api_key", &elsewhere, &sealed).is_err());
        let other = SealingKey::from_hex(&"cd".repeat(32)).unwrap();
        assert!(other.open("email", "api_key", &hosts, &sealed).is_err());
    }

    #[test]
    fn a_key_must_be_64_hex_digits() {
        assert!(SealingKey::from_hex("abcd").is_err());
        assert!(SealingKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(SealingKey::from_hex(&SealingKey::generate_hex().unwrap()).is_ok());
    }
}
