//! Which addresses a plugin's request may connect to. Names are resolved by the host, and the
//! connection is made to exactly the addresses checked here (the resolver below is the HTTP
//! client's only resolver), so there is no window between the check and the connect in which
//! DNS could answer differently.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Whether `ip` is an address on the public internet: not loopback, private, link-local (which
/// holds cloud metadata, 169.254.169.254), shared (CGNAT), unique-local, multicast, reserved or
/// documentation, and not one of those wrapped in IPv6 (mapped, NAT64, 6to4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address inside.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public_v4(embedded(hi, lo)),
        [0x2002, hi, lo, ..] => is_public_v4(embedded(hi, lo)),
        // Unspecified, loopback and the deprecated IPv4-compatible ::/96.
        [0, 0, 0, 0, 0, 0, _, _] => false,
        // Teredo hides an IPv4 address; documentation.
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] => false,
        // Discard-only.
        [0x100, 0, 0, 0, ..] => false,
        [first, ..] => {
            !(ip.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0) // site local (deprecated)
        }
    }
}

/// An address the policy refused; the HTTP client reports it as the connect error's source, so
/// the plugin is told "denied", not "transport".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The addresses a plugin may reach beyond the public internet: exactly those the operator
/// approved by address.
#[derive(Debug, Clone, Default)]
pub struct Reachable {
    pub approved: Arc<BTreeSet<IpAddr>>,
}

impl Reachable {
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.approved.contains(&ip)
    }
}

impl reqwest::dns::Resolve for Reachable {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reachable = self.clone();
        Box::pin(async move {
            let name = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let (kept, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
                .into_iter()
                .partition(|address| reachable.allows(address.ip().to_canonical()));
            if kept.is_empty() {
                let refused: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused(format!(
                    "`{name}` resolves to {}, which is not a public address; an operator may approve an address itself to reach it",
                    if refused.is_empty() {
                        "nothing".to_owned()
                    } else {
                        refused.join(", ")
                    }
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(text: &str) -> bool {
        is_public(text.parse().unwrap())
    }

    #[test]
    fn special_addresses_are_not_public_in_any_wrapping() {
        for special in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(!public(special), "{special} counted as public");
        }
        for open in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(public(open), "{open} counted as special");
        }
    }

    #[test]
    fn an_approved_address_is_reachable_and_no_other_special_one() {
        let reachable = Reachable {
            approved: Arc::new(BTreeSet::from(["127.0.0.1".parse().unwrap()])),
        };
        assert!(reachable.allows("127.0.0.1".parse().unwrap()));
        assert!(!reachable.allows("127.0.0.2".parse().unwrap()));
        assert!(!reachable.allows("169.254.169.254".parse().unwrap()));
    }
}
