//! A split node: a stable share of contacts down each path.

use super::super::super::definition::SplitPath;

/// The split path of a contact: a stable hash of journey, node and contact picks a point in
/// 0–100, and the paths take consecutive shares of it. The same contact always lands on the
/// same path, on replay and on every host.
pub fn split_path(
    journey_id: &str,
    node_id: &str,
    contact_id: &str,
    paths: &[SplitPath],
) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(journey_id)
        .chain_update([0])
        .chain_update(node_id)
        .chain_update([0])
        .chain_update(contact_id)
        .finalize();
    let point = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) as f64
        / u64::MAX as f64
        * 100.0;
    let mut upper = 0.0;
    for path in paths {
        upper += path.percent;
        if point < upper {
            return path.label.clone();
        }
    }
    paths.last().map(|p| p.label.clone()).unwrap_or_default()
}
