//! The overlay daemon: flannel's UDP backend, wire-compatible.
//!
//! Each IP packet the kernel routes to the TUN device goes, unchanged but for
//! its TTL, as the payload of one UDP datagram to port 8285 (the daemon's own
//! port) of the node whose lease covers its destination; each datagram
//! received from a current lease holder whose payload is a valid IPv4 packet
//! for this node's subnet is written to the TUN.
//!
//! # Data path
//!
//! Per worker (one per TUN queue, [`DaemonConfig::workers`]) two threads:
//!
//! - **tun → udp**: reads a burst of packets from its queue (non-blocking
//!   reads until the queue is empty or the batch of 64 is full, `poll` when
//!   idle), and per packet: validates the header; drops a TTL of 0 or 1 (with
//!   an ICMP time exceeded); writes packets for the node's own subnet back to
//!   the TUN; looks the destination up in the longest-prefix-match table
//!   (no lease: ICMP destination unreachable, code 0, written back to the
//!   TUN, rate limited); decrements the TTL (incremental checksum); then sends
//!   the whole burst with one `sendmmsg`.
//! - **udp → tun**: `recvmmsg` of up to 64 datagrams per call on its
//!   `SO_REUSEPORT` socket (the kernel keeps one peer on one socket, so a
//!   flow is never reordered), checks each datagram's source against the
//!   current lease holders, the payload's header and its destination, and
//!   writes it to the TUN.
//!
//! # Offloads
//!
//! By default ([`RunOptions::offload`]) the queues carry virtio-net headers
//! and the TUN has checksum and TCP segmentation offload: a read returns a
//! TCP super-packet of up to 64 KiB, which is cut in userspace into
//! MSS-sized packets with their own headers and checksums ([`crate::gso`];
//! only the headers are written, each segment's payload is gathered from the
//! read buffer, uncopied) and sent with one UDP GSO `sendmmsg` message per
//! up to 64 datagrams (the
//! kernel cuts it into one datagram per inner packet: the wire format is
//! flannel's). The sockets have `UDP_GRO`: a receive returns many datagrams
//! at once, and consecutive in-order TCP segments of a flow are merged back
//! into one super-packet per TUN write. Single-syscall-per-packet costs are
//! what limit the plain path (about 2 Gbit/s on 2 cores); the offloads
//! remove them (about 8 to 10 Gbit/s). When the kernel refuses them the
//! daemon falls back to plain packets.
//!
//! Buffers are allocated once per thread; the per-packet path allocates
//! nothing. The route table is swapped whole when leases change: a worker
//! checks a generation counter once per burst and clones the new table's
//! `Arc` only when it changed.
//!
//! # Impairments
//!
//! Each direction has a [`crate::impair::Impairer`] when configured. Its
//! packets are admitted in the order they are processed (under a lock, so two
//! workers share one deterministic sequence); a packet due now is sent in the
//! burst, a later one waits in the direction's delay queue (a binary heap by
//! due time), served by a thread that sleeps until the earliest is due. With
//! no impairment (or a no-op one) the fast path does not touch the engine:
//! one relaxed atomic load per burst.
//!
//! # Failure
//!
//! A daemon never stays half-alive. Every thread (the workers, the delay
//! threads and the control thread that follows the leases, the impairment
//! file and writes the stats) runs under a guard (`guard`): when one
//! panics or fails, the failure is recorded, every other thread ends within
//! 100 ms, and [`run`] returns the failure ([`DaemonError::Panicked`] for a
//! panic), so the process exits non-zero and its supervisor starts it again.
//! Locks never spread a panic (poisoning is ignored: the daemon is quitting
//! anyway). The daemon binaries add [`install_panic_backstop`] for threads
//! outside the data path.
//!
//! # Module layout
//!
//! `control` (leases, impairment file, stats file), `tx` (tun → udp),
//! `rx` (udp → tun), `delay` (the delay queues), `batch` (`sendmmsg`
//! batches), `sys` (the other system calls), `shared` (what the threads
//! share) and `guard` (failure handling).
//!
//! # ICMP source address
//!
//! The ICMP errors the daemon originates come from the overlay network's own
//! address ([`DaemonConfig::network`]'s first address, e.g. `10.244.0.0`,
//! which flannel never leases): an address the node routes via the TUN, so
//! that the kernel accepts them (an error from one of the node's own
//! addresses would be a martian source).

mod batch;
mod control;
mod delay;
mod guard;
mod rx;
mod shared;
mod sys;
mod tx;

pub use control::{read_impair_file, ImpairFileError};
pub use guard::{install_panic_backstop, panicked};

use crate::cidr::Ipv4Net;
use crate::impair::Impairment;
use crate::registry::LeaseSet;
use crate::stats::Stats;
use crate::tun;
use control::Control;
use delay::Sink;
use guard::{guarded, spawn_guarded};
use serde::{Deserialize, Serialize};
use shared::Shared;
use std::fs::File;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// flannel's UDP backend port.
pub const DEFAULT_PORT: u16 = 8285;

/// Packets per burst (TUN reads per wake-up, datagrams per `sendmmsg` and
/// `recvmmsg`).
pub const BATCH: usize = 64;

/// Bytes per packet buffer: the largest IP packet.
const SLOT: usize = 65536;
/// How long a blocked worker waits before it looks at the quit flag.
const IDLE_MS: i32 = 100;

/// Where a daemon gets the current leases, `(subnet, public IP)` pairs, and
/// the lease files it could not read (see
/// [`crate::registry::udp_leases`] for a registry directory).
pub type LeaseSource = Box<dyn FnMut() -> LeaseSet + Send>;

/// An impairment with the seed and stream of its engine.
pub type ImpairSetting = (Impairment, u64, u64);

/// What a daemon serves.
pub struct DaemonConfig {
    /// The persistent multi-queue TUN device (see [`crate::tun`]); it must
    /// exist in the calling thread's network namespace.
    pub tun: String,
    /// The node's public (underlay) address and the port (8285), which is
    /// also the port datagrams are sent to on every other node.
    pub bind: SocketAddrV4,
    /// The whole overlay network (the podCIDR).
    pub network: Ipv4Net,
    /// This node's subnet (its own lease).
    pub own_subnet: Ipv4Net,
    /// Called every 200 ms, from the daemon's control thread, for the
    /// current leases; a lease that appears, changes or goes takes effect
    /// within that time. The lease files it reports as unreadable appear in
    /// the stats ([`crate::stats::StatsSnapshot::bad_leases`]). A panic in
    /// it ends the daemon like any other.
    pub leases: LeaseSource,
    /// Impairment of packets leaving the node (tun → udp): the setting, the
    /// seed and the stream of its engine. Give `Some` with a default
    /// [`Impairment`] to fix the seed and stream for later changes through
    /// `impair_file` (a direction first enabled there otherwise gets seed 0,
    /// stream 0 for egress and 1 for ingress).
    pub impair_egress: Option<ImpairSetting>,
    /// Impairment of packets arriving (udp → tun), likewise.
    pub impair_ingress: Option<ImpairSetting>,
    /// A JSON file `{"egress": Impairment, "ingress": Impairment}` (either may
    /// be left out: no impairment), re-read when it changes. Removing the
    /// file clears both.
    pub impair_file: Option<PathBuf>,
    /// Where to write the counters as JSON ([`crate::stats::StatsSnapshot`]),
    /// every 500 ms, atomically. It is first written once the daemon is ready
    /// (queues attached, sockets bound, leases read).
    pub stats_file: Option<PathBuf>,
    /// Worker count (TUN queues); 0 means one per CPU.
    pub workers: usize,
}

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A TUN queue could not be attached or used.
    #[error("TUN device `{name}`: {source}")]
    Tun {
        /// The device.
        name: String,
        /// The cause.
        source: io::Error,
    },
    /// The UDP socket could not be set up.
    #[error("UDP socket {addr}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddrV4,
        /// The cause.
        source: io::Error,
    },
    /// A thread could not be started.
    #[error("starting a thread: {0}")]
    Thread(io::Error),
    /// A thread of the daemon panicked (a bug); the daemon stopped so that
    /// its supervisor starts it again.
    #[error("thread `{thread}` panicked: {message}")]
    Panicked {
        /// The thread's name (`ovl-rx0`, `ovl-control`, ...).
        thread: String,
        /// The panic's message.
        message: String,
    },
}

/// The impairment file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ImpairFile {
    /// Packets leaving the node.
    pub egress: Impairment,
    /// Packets arriving.
    pub ingress: Impairment,
}

/// Runs the daemon until `stop` becomes true (checked at least every 100 ms)
/// or one of its threads fails.
pub fn run(cfg: DaemonConfig, stop: &AtomicBool) -> Result<(), DaemonError> {
    let workers = worker_count(cfg.workers);
    run_with_stats(cfg, stop, Arc::new(Stats::new(2 * workers + 3)))
}

fn worker_count(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
    .min(64)
}

/// [`run`], counting into `stats` (which the caller may read meanwhile).
pub fn run_with_stats(
    cfg: DaemonConfig,
    stop: &AtomicBool,
    stats: Arc<Stats>,
) -> Result<(), DaemonError> {
    run_with_options(cfg, stop, stats, RunOptions::default())
}

/// How the data path runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Use the kernel's offloads: TUN segmentation (TSO) and checksum
    /// offload through virtio-net headers, UDP GSO and GRO, and coalescing of
    /// received TCP segments (see [`crate::gso`]). The wire format does not
    /// change. When the kernel refuses them the daemon falls back to plain
    /// packets. Default: on, unless the environment variable
    /// `OVERLAY_OFFLOAD` is `0` or `off`.
    pub offload: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        let off = std::env::var("OVERLAY_OFFLOAD")
            .is_ok_and(|v| matches!(v.as_str(), "0" | "off" | "false" | "no"));
        RunOptions { offload: !off }
    }
}

/// Attaches `n` queues with virtio-net headers and enables the offloads.
fn open_vnet_queues(name: &str, n: usize) -> io::Result<Vec<File>> {
    let mut queues = Vec::with_capacity(n);
    for _ in 0..n {
        let (q, vnet) = tun::open_queue_vnet(name)?;
        if !vnet {
            return Err(io::Error::other(
                "another program holds a queue of the device without virtio-net headers",
            ));
        }
        tun::set_nonblocking(&q)?;
        queues.push(q);
    }
    if let Some(q) = queues.first() {
        tun::set_offload(q, tun::OFFLOADS)?;
    }
    Ok(queues)
}

/// Attaches `n` queues, with the offloads when `offload` and the kernel
/// allows them: the queues and whether they carry virtio-net headers.
fn open_queues(name: &str, n: usize, offload: bool) -> Result<(Vec<File>, bool), DaemonError> {
    if offload {
        match open_vnet_queues(name, n) {
            Ok(q) => return Ok((q, true)),
            Err(e) => tracing::warn!("{name}: offloads unavailable ({e}); plain packets"),
        }
    }
    let tun_err = |source| DaemonError::Tun {
        name: name.to_string(),
        source,
    };
    let mut queues = Vec::with_capacity(n);
    for _ in 0..n {
        let q = tun::open_queue(name).map_err(tun_err)?;
        tun::set_nonblocking(&q).map_err(tun_err)?;
        queues.push(q);
    }
    if let Some(q) = queues.first() {
        tun::set_offload(q, 0).map_err(tun_err)?;
    }
    Ok((queues, false))
}

/// [`run_with_stats`] with explicit [`RunOptions`].
pub fn run_with_options(
    cfg: DaemonConfig,
    stop: &AtomicBool,
    stats: Arc<Stats>,
    opts: RunOptions,
) -> Result<(), DaemonError> {
    if !cfg.network.covers(&cfg.own_subnet) {
        return Err(DaemonError::Config(format!(
            "the node's subnet {} is not inside the network {}",
            cfg.own_subnet, cfg.network
        )));
    }
    let workers = worker_count(cfg.workers);
    stats.set_workers(workers as u64);
    let (queues, vnet) = open_queues(&cfg.tun, workers, opts.offload)?;
    stats.set_offload(vnet);
    let sockets =
        sys::udp_sockets(cfg.bind, workers, vnet).map_err(|source| DaemonError::Socket {
            addr: cfg.bind,
            source,
        })?;
    let shared = Shared::new(&cfg, stop, stats, vnet);
    let mut control = Control::new(cfg.leases, cfg.impair_file, cfg.stats_file);
    let sh = &shared;
    std::thread::scope(|s| {
        // The routes are known before the first packet.
        let ready = guarded(sh, "ovl-control", || {
            control.refresh_leases(sh);
            control.check_impair_file(sh);
            Ok(())
        });
        let started = ready && start_threads(s, sh, &queues, &sockets);
        if started {
            guarded(sh, "ovl-control", || {
                control.write_stats(sh);
                control.run(sh);
                Ok(())
            });
        }
        sh.quit_all();
    });
    // The last counters, whatever happened (a panic here is only logged).
    guarded(sh, "ovl-control", || {
        control.write_stats(sh);
        Ok(())
    });
    match shared.take_failure() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Starts every worker and the delay threads in scope `s`; false (the
/// failure recorded) when one could not be started.
fn start_threads<'scope, 'a: 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    sh: &'scope Shared<'a>,
    queues: &'scope [File],
    sockets: &'scope [OwnedFd],
) -> bool {
    let workers = queues.len().min(sockets.len());
    let mut started = Ok(());
    for (i, (q, sock)) in queues.iter().zip(sockets).enumerate() {
        let (tun_fd, sock_fd) = (q.as_raw_fd(), sock.as_raw_fd());
        let (tx_shard, rx_shard) = (sh.stats.shard(2 * i), sh.stats.shard(2 * i + 1));
        started = started
            .and_then(|()| {
                spawn_guarded(s, sh, format!("ovl-tx{i}"), move || {
                    tx::tx_loop(sh, tun_fd, sock_fd, tx_shard)
                })
            })
            .and_then(|()| {
                spawn_guarded(s, sh, format!("ovl-rx{i}"), move || {
                    rx::rx_loop(sh, tun_fd, sock_fd, rx_shard)
                })
            });
    }
    if let (Some(q), Some(sock)) = (queues.first(), sockets.first()) {
        let (tun_fd, sock_fd) = (q.as_raw_fd(), sock.as_raw_fd());
        let shard_e = sh.stats.shard(2 * workers);
        let shard_i = sh.stats.shard(2 * workers + 1);
        started = started
            .and_then(|()| {
                spawn_guarded(s, sh, "ovl-delay-out".into(), move || {
                    delay::delay_loop(sh, &sh.egress, Sink::Udp(sock_fd), shard_e)
                })
            })
            .and_then(|()| {
                spawn_guarded(s, sh, "ovl-delay-in".into(), move || {
                    delay::delay_loop(sh, &sh.ingress, Sink::Tun(tun_fd), shard_i)
                })
            });
    }
    match started {
        Ok(()) => true,
        Err(e) => {
            sh.fail(e);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn impair_file_fields_are_optional() {
        let f: ImpairFile = serde_json::from_str(r#"{"egress": {"lossPpm": 100000}}"#).unwrap();
        assert_eq!(f.egress.loss_ppm, 100_000);
        assert!(f.ingress.is_noop());
    }

    #[test]
    fn own_subnet_outside_network_is_refused() {
        let stop = AtomicBool::new(true);
        let cfg = DaemonConfig {
            tun: "none0".into(),
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            network: "10.244.0.0/16".parse().unwrap(),
            own_subnet: "10.245.1.0/24".parse().unwrap(),
            leases: Box::new(LeaseSet::default),
            impair_egress: None,
            impair_ingress: None,
            impair_file: None,
            stats_file: None,
            workers: 1,
        };
        assert!(matches!(run(cfg, &stop), Err(DaemonError::Config(_))));
    }
}
