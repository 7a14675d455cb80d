//! `wayline:plugin/signatures`: a provider's webhook signature checked with a channel secret
//! the plugin never reads. The plugin learns only whether the signature matches.

use hmac::Mac;

use super::HostState;
use crate::runtime::bindings::v2::signatures::{self, Digest};

/// Longest input the host signs for one check: a webhook body is bounded by the route anyway.
const MAX_SIGNED_BYTES: usize = 4 << 20;

impl signatures::Host for HostState {
    fn verify_hmac(
        &mut self,
        secret: String,
        digest: Digest,
        data: Vec<u8>,
        signature: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, String>> {
        let Some(grant) = self.http.as_ref() else {
            return Ok(Err("this call has no channel secrets".into()));
        };
        let key = match grant.egress.secrets.webhook_key(&secret) {
            Ok(key) => key,
            Err(why) => return Ok(Err(why)),
        };
        if data.len() > MAX_SIGNED_BYTES {
            return Ok(Err(format!("at most {MAX_SIGNED_BYTES} bytes are checked")));
        }
        let key = key.0.as_bytes();
        // `verify_slice` compares in constant time.
        let matches = match digest {
            Digest::Sha1 => {
                let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key)
                    .expect("HMAC takes a key of any length");
                mac.update(&data);
                mac.verify_slice(&signature).is_ok()
            }
            Digest::Sha256 => {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
                    .expect("HMAC takes a key of any length");
                mac.update(&data);
                mac.verify_slice(&signature).is_ok()
            }
        };
        Ok(Ok(matches))
    }
}
