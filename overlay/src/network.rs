//! The overlay network configuration and per-node subnet leases, in flannel's
//! model: a `Network`, a `SubnetLen`, the range `SubnetMin..=SubnetMax` leases
//! come from, and one lease per node naming its public (underlay) address.

use crate::cidr::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// How packets between node subnets travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// IP packets carried in UDP by the testbed's own daemon through a TUN device.
    Udp,
    /// The kernel's vxlan device, programmed as flannel's vxlan backend does.
    Vxlan,
    /// Plain routes to each node's subnet via its underlay address.
    HostGw,
}

impl Backend {
    /// Every backend, in the order the documentation lists them.
    pub const ALL: [Backend; 3] = [Backend::Udp, Backend::Vxlan, Backend::HostGw];

    /// The name used in topology files and flannel's `Backend.Type`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Udp => "udp",
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }

    /// Bytes of encapsulation each packet carries on the underlay.
    pub fn overhead(&self) -> u32 {
        match self {
            // outer IPv4 (20) + UDP (8)
            Backend::Udp => 28,
            // outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14)
            Backend::Vxlan => 50,
            Backend::HostGw => 0,
        }
    }

    /// The overlay device a node gets, if the backend has one.
    pub fn device(&self) -> Option<&'static str> {
        match self {
            Backend::Udp => Some("flannel0"),
            Backend::Vxlan => Some("flannel.1"),
            Backend::HostGw => None,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a network configuration cannot hold what is asked of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("subnetLen {len} is longer than 30: a node subnet needs room for its bridge and pods")]
    SubnetTooLong { len: u8 },
    #[error("subnetLen {len} must be at least {min} (the network's prefix length {prefix} + 2)")]
    SubnetTooShort { len: u8, min: u8, prefix: u8 },
    #[error(
        "{network} has room for {available} subnets of /{len} but {needed} nodes need one each"
    )]
    Exhausted {
        network: Ipv4Net,
        len: u8,
        available: u64,
        needed: usize,
    },
}

/// flannel's network configuration (`Network`, `SubnetLen`, `SubnetMin`,
/// `SubnetMax`, `Backend`), serialised in flannel's JSON field names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConfig {
    /// The whole overlay network.
    pub network: Ipv4Net,
    /// The prefix length of each node's subnet.
    pub subnet_len: u8,
    /// The first subnet handed out: the second subnet of the network.
    pub subnet_min: Ipv4Addr,
    /// The last subnet handed out: the second to last subnet of the network.
    pub subnet_max: Ipv4Addr,
    /// The backend, as `{"Type": "udp"}`.
    pub backend: BackendConfig,
}

/// flannel's `Backend` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendConfig {
    /// The backend type.
    #[serde(rename = "Type")]
    pub kind: Backend,
}

impl NetworkConfig {
    /// A configuration with flannel's default range: every subnet but the
    /// first and the last of `network`.
    pub fn new(network: Ipv4Net, subnet_len: u8, backend: Backend) -> Result<Self, NetworkError> {
        if subnet_len > 30 {
            return Err(NetworkError::SubnetTooLong { len: subnet_len });
        }
        let min = network.prefix_len() + 2;
        if subnet_len < min {
            return Err(NetworkError::SubnetTooShort {
                len: subnet_len,
                min,
                prefix: network.prefix_len(),
            });
        }
        let count = network.subnet_count(subnet_len);
        let first = network.subnet(subnet_len, 1);
        let last = network.subnet(subnet_len, count - 2);
        match (first, last) {
            (Some(first), Some(last)) => Ok(NetworkConfig {
                network,
                subnet_len,
                subnet_min: first.network(),
                subnet_max: last.network(),
                backend: BackendConfig { kind: backend },
            }),
            _ => Err(NetworkError::SubnetTooShort {
                len: subnet_len,
                min,
                prefix: network.prefix_len(),
            }),
        }
    }

    /// How many node subnets the range holds.
    pub fn capacity(&self) -> u64 {
        self.network.subnet_count(self.subnet_len) - 2
    }

    /// The subnets of `count` nodes, leased in order from `SubnetMin`.
    pub fn lease_subnets(&self, count: usize) -> Result<Vec<Ipv4Net>, NetworkError> {
        if count as u64 > self.capacity() {
            return Err(NetworkError::Exhausted {
                network: self.network,
                len: self.subnet_len,
                available: self.capacity(),
                needed: count,
            });
        }
        Ok((0..count as u64)
            .filter_map(|i| self.network.subnet(self.subnet_len, i + 1))
            .collect())
    }
}

/// One node's lease: its subnet and the attributes flannel stores with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The node's pod subnet.
    pub subnet: Ipv4Net,
    /// The registry key, flannel's `subnets/<net>-<len>` layout.
    pub key: String,
    /// The node's underlay address (flannel's `PublicIP`).
    pub public_ip: Ipv4Addr,
    /// The backend that serves the lease (flannel's `BackendType`).
    pub backend_type: Backend,
}

impl Lease {
    /// A lease of `subnet` held by the node at `public_ip`.
    pub fn new(subnet: Ipv4Net, public_ip: Ipv4Addr, backend_type: Backend) -> Lease {
        Lease {
            key: format!("subnets/{}-{}", subnet.network(), subnet.prefix_len()),
            subnet,
            public_ip,
            backend_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn flannel_default_range() {
        let c = NetworkConfig::new(net("10.244.0.0/16"), 24, Backend::Udp).unwrap();
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 244, 254, 0));
        assert_eq!(c.capacity(), 254);
        let leases = c.lease_subnets(2).unwrap();
        assert_eq!(leases[1], net("10.244.2.0/24"));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.254.0","Backend":{"Type":"udp"}}"#
        );
    }

    #[test]
    fn subnet_len_rules() {
        assert!(matches!(
            NetworkConfig::new(net("10.0.0.0/8"), 31, Backend::Udp),
            Err(NetworkError::SubnetTooLong { .. })
        ));
        assert!(matches!(
            NetworkConfig::new(net("10.244.0.0/16"), 17, Backend::Udp),
            Err(NetworkError::SubnetTooShort { min: 18, .. })
        ));
        let c = NetworkConfig::new(net("10.244.0.0/16"), 18, Backend::Udp).unwrap();
        assert_eq!(c.capacity(), 2);
        assert!(matches!(
            c.lease_subnets(3),
            Err(NetworkError::Exhausted { .. })
        ));
    }

    #[test]
    fn lease_key_layout() {
        let l = Lease::new(
            net("10.244.3.0/24"),
            Ipv4Addr::new(192, 168, 96, 3),
            Backend::Vxlan,
        );
        assert_eq!(l.key, "subnets/10.244.3.0-24");
    }
}
