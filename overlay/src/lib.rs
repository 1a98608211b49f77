//! The flannel-style overlay: IPv4 prefix arithmetic, the overlay network
//! configuration and the deterministic per-node subnet leases that every
//! backend (udp, vxlan, host-gw) routes between.
//!
//! The data-path daemon arrives with the UDP backend; this crate already owns
//! the facts every other part of the testbed relies on: which subnet each node
//! holds, and in which layout a registry stores it.

pub mod cidr;
pub mod daemon;
pub mod gso;
pub mod impair;
pub mod network;
pub mod packet;
pub mod registry;
pub mod routes;
pub mod stats;
pub mod tun;

pub use cidr::{CidrError, Ipv4Net};
pub use network::{Backend, Lease, NetworkConfig, NetworkError};
