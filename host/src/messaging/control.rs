//! The global control group: a stable share of contacts that no marketing message reaches, in
//! any journey, so that what the journeys achieve can be measured against them. A contact's
//! place is a hash of its id into 10,000 buckets: the same in every journey and after every
//! restart, and growing the share keeps everyone already held out.

use sha2::{Digest, Sha256};

/// Most of the contacts a workspace may hold out.
pub const MAX_PERCENT: f64 = 50.0;

/// The contact's bucket, 0 to 9,999.
fn bucket(contact_id: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(b"wayline-control-group\0")
        .chain_update(contact_id.as_bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 10_000
}

/// Whether the contact is held out when `percent` of contacts are.
pub fn holds_out(contact_id: &str, percent: f64) -> bool {
    percent > 0.0 && f64::from(bucket(contact_id)) < percent * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_held_out_is_the_one_asked_for_and_grows_without_reshuffling() {
        let ids: Vec<String> = (0..20_000).map(|n| format!("contact-{n}")).collect();
        let held = |percent: f64| -> Vec<&String> {
            ids.iter().filter(|id| holds_out(id, percent)).collect()
        };
        let five = held(5.0);
        let share = five.len() as f64 / ids.len() as f64;
        assert!((0.045..0.055).contains(&share), "{share}");
        let ten = held(10.0);
        assert!(
            five.iter().all(|id| ten.contains(id)),
            "growing the group keeps its members"
        );
        assert!(held(0.0).is_empty());
    }
}
