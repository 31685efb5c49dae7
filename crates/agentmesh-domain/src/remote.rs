//! Where a request came from, as the carrier that brought it knows it: an address for TCP (HTTP
//! today), the public key of its endpoint for carriers that name peers by key (an iroh endpoint
//! id, a relay's sender key). Rate limits, connection shares for contacts and the pending-request
//! share of a network are keyed by it, whatever the carrier.

use std::net::IpAddr;

/// The sender of a request at the carrier's level (not the agent it claims to be).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Remote {
    /// A TCP peer's address (an IPv4 client of a dual-stack listener as its IPv4 address).
    Ip(IpAddr),
    /// A peer known by the 32-byte public key of its transport endpoint.
    Key([u8; 32]),
}

impl Remote {
    /// The address, for a TCP peer.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Remote::Ip(ip) => Some(ip),
            Remote::Key(_) => None,
        }
    }

    /// The network whose pending contact requests it counts against: an address's /24 (IPv4) or
    /// /48 (IPv6); a key is a network of its own (keys cost nothing to make, so the global cap and
    /// the per-agent rate limits are what bound them).
    pub fn network(self) -> String {
        match self {
            Remote::Ip(ip) => agentmesh_store::source_net(ip),
            Remote::Key(key) => format!("key:{}", hex::encode(key)),
        }
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Ip(ip) => ip.fmt(f),
            Remote::Key(key) => write!(f, "key:{}", hex::encode(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_of_addresses_and_keys() {
        assert_eq!(Remote::Ip("203.0.113.7".parse().expect("ip")).network(), "203.0.113.0/24");
        assert_eq!(Remote::Ip("2001:db8:1:2::9".parse().expect("ip")).network(), "2001:db8:1::/48");
        assert_eq!(Remote::Key([0xab; 32]).network(), format!("key:{}", "ab".repeat(32)));
        assert_eq!(Remote::Key([1; 32]).ip(), None);
    }
}
