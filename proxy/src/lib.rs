//! Services, as the proxy sees them: a virtual IP with ports, and for each
//! port the endpoints (pod IP and target port) traffic is spread over.
//!
//! These are the shapes the planner fills in and the three proxy modes
//! program: `iptables` (kube-proxy's chains), `nftables` (one table with
//! verdict maps) and `userspace` (`portals` rules that hand service traffic
//! to a proxy per node, `userspace`).
//!
//! `unsafe` is denied here but in the TCP relay (`splice(2)` and pipes).
#![deny(unsafe_code)]

#[cfg(test)]
mod fixtures;
pub mod iptables;
pub mod nftables;
pub mod portals;
pub mod userspace;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// How service virtual IPs are implemented on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// kube-proxy's iptables chains: DNAT with random backend choice.
    Iptables,
    /// One nftables table per node with verdict maps and `numgen`.
    Nftables,
    /// A userspace proxy per node that splices connections.
    Userspace,
}

/// How a service is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    /// A virtual IP inside the cluster only.
    ClusterIP,
    /// Also a port on every node's underlay address.
    NodePort,
    /// Also an external IP on the underlay LAN.
    LoadBalancer,
}

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    TCP,
    /// UDP.
    UDP,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
        })
    }
}

/// Whether one client sticks to one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionAffinity {
    /// Every new connection picks a backend afresh.
    None,
    /// Connections from one client IP go to the same backend.
    ClientIP,
}

/// A service, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// The service name.
    pub name: String,
    /// Its Kubernetes-style namespace.
    pub namespace: String,
    /// How it is exposed.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// The virtual IP.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    /// The external IP of a LoadBalancer service.
    #[serde(
        rename = "loadBalancerIP",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub load_balancer_ip: Option<Ipv4Addr>,
    /// The node that answers ARP for the external IP.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub announced_by: Option<String>,
    /// Client affinity.
    pub session_affinity: SessionAffinity,
    /// The label selector.
    pub selector: std::collections::BTreeMap<String, String>,
    /// The ports, each with its endpoints.
    pub ports: Vec<ServicePort>,
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port's name (may be empty for a single-port service).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port on the virtual IP.
    pub port: u16,
    /// The port on each endpoint.
    pub target_port: u16,
    /// The port opened on every node (NodePort and LoadBalancer).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub node_port: Option<u16>,
    /// Where the traffic goes.
    pub endpoints: Vec<Endpoint>,
}

/// One backend of a service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The pod that serves it.
    pub pod: String,
    /// The node the pod runs on.
    pub node: String,
    /// The pod's IP.
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
}

/// The stable 64-bit FNV-1a hash of `bytes`: what every name and choice the
/// testbed derives from text (chain names, backend orders, MACs, interface
/// names) is hashed with, so that they are the same on every run and build.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
