//! The flannel-style overlay: IPv4 prefix arithmetic, the overlay network
//! configuration and the deterministic per-node subnet leases that every
//! backend (udp, vxlan, host-gw) routes between, the subnet registry, and
//! the udp backend's data-path daemon with its packet code (checked access
//! only, fuzzed by `tests/fuzz.rs`).
//!
//! `unsafe` is denied here but in the modules that make system calls
//! (`daemon::sys`, `daemon::batch`, [`tun`]).
#![deny(unsafe_code)]

pub mod atomic_file;
pub mod backoff;
pub mod checksum;
pub mod cidr;
pub mod daemon;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod gso;
pub mod impair;
pub mod network;
pub mod packet;
pub mod registry;
pub mod rng;
pub mod routes;
pub mod stats;
pub mod tun;

pub use cidr::{CidrError, Ipv4Net};
pub use network::{Backend, Lease, NetworkConfig, NetworkError};

/// Locks `m`, ignoring poisoning: in the daemon a thread that panicked has
/// already made every thread quit (see [`daemon`]), and the others must get
/// to their quit check rather than panic in turn.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// For tests that need root: true when running as root. Otherwise the test
/// cannot run: under `CI` (set and not `0` or `false`) that is a failure (it
/// panics, naming `test`), elsewhere it prints that it skipped and returns
/// false.
#[doc(hidden)]
pub fn require_root(test: &str) -> bool {
    if tun::is_root() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!ci, "{test} needs root, and CI must not skip it");
    eprintln!("skipped {test}: needs root");
    false
}
