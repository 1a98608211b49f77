//! The flannel-style overlay: IPv4 prefix arithmetic, the overlay network
//! configuration and the deterministic per-node subnet leases that every
//! backend (udp, vxlan, host-gw) routes between.
//!
//! The data-path daemon arrives with the UDP backend; this crate already owns
//! the facts every other part of the testbed relies on: which subnet each node
//! holds, and in which layout a registry stores it.

pub mod cidr;
pub mod network;

pub use cidr::{CidrError, Ipv4Net};
pub use network::{Backend, Lease, NetworkConfig, NetworkError};
