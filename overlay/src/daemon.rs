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
//! # ICMP source address
//!
//! The ICMP errors the daemon originates come from the overlay network's own
//! address ([`DaemonConfig::network`]'s first address, e.g. `10.244.0.0`,
//! which flannel never leases): an address the node routes via the TUN, so
//! that the kernel accepts them (an error from one of the node's own
//! addresses would be a martian source).

use crate::cidr::Ipv4Net;
use crate::gso::{self, Coalescer, VnetHdr, Write};
use crate::impair::{Fate, Impairer, Impairment};
use crate::packet::{self, Malformed};
use crate::routes::RouteTable;
use crate::stats::{self, Counter, Shard, Stats};
use crate::tun;
use serde::Deserialize;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// flannel's UDP backend port.
pub const DEFAULT_PORT: u16 = 8285;

/// Packets per burst (TUN reads per wake-up, datagrams per `sendmmsg` and
/// `recvmmsg`).
pub const BATCH: usize = 64;

/// Bytes per packet buffer: the largest IP packet.
const SLOT: usize = 65536;
/// Socket buffers asked for (root may exceed `rmem_max`).
const SOCKET_BUFFER: libc::c_int = 8 << 20;
/// How long a blocked worker waits before it looks at the stop flag.
const IDLE_MS: i32 = 100;
const LEASE_PERIOD: Duration = Duration::from_millis(200);
const IMPAIR_PERIOD: Duration = Duration::from_millis(200);
const STATS_PERIOD: Duration = Duration::from_millis(500);
/// Bounds of one direction's delay queue.
const DELAY_MAX_PACKETS: usize = 100_000;
const DELAY_MAX_BYTES: usize = 128 << 20;
/// ICMP errors: a burst of 50, then 200 per second per worker.
const ICMP_BURST: u32 = 50;
const ICMP_INTERVAL_US: u64 = 5_000;

/// Where a daemon gets the current leases: `(subnet, public IP)` pairs.
pub type LeaseSource = Box<dyn Fn() -> Vec<(Ipv4Net, Ipv4Addr)> + Send>;

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
    /// Called every 200 ms for the current leases; a lease that appears,
    /// changes or goes takes effect within that time.
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
}

/// The impairment file's content.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ImpairFile {
    /// Packets leaving the node.
    pub egress: Impairment,
    /// Packets arriving.
    pub ingress: Impairment,
}

/// Runs the daemon until `stop` becomes true (checked at least every 100 ms).
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
    tun::set_offload(&queues[0], tun::OFFLOADS)?;
    Ok(queues)
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
    let tun_err = |source| DaemonError::Tun {
        name: cfg.tun.clone(),
        source,
    };
    let mut queues = Vec::new();
    let mut vnet = false;
    if opts.offload {
        match open_vnet_queues(&cfg.tun, workers) {
            Ok(q) => {
                queues = q;
                vnet = true;
            }
            Err(e) => tracing::warn!("{}: offloads unavailable ({e}); plain packets", cfg.tun),
        }
    }
    if !vnet {
        for _ in 0..workers {
            let q = tun::open_queue(&cfg.tun).map_err(tun_err)?;
            tun::set_nonblocking(&q).map_err(tun_err)?;
            queues.push(q);
        }
        tun::set_offload(&queues[0], 0).map_err(tun_err)?;
    }
    stats.set_offload(vnet);
    let sockets = udp_sockets(cfg.bind, workers, vnet).map_err(|source| DaemonError::Socket {
        addr: cfg.bind,
        source,
    })?;

    let (egress_seed, egress_stream) = cfg.impair_egress.as_ref().map_or((0, 0), |s| (s.1, s.2));
    let (ingress_seed, ingress_stream) = cfg.impair_ingress.as_ref().map_or((0, 1), |s| (s.1, s.2));
    let shared = Shared {
        stop,
        quit: AtomicBool::new(false),
        failure: Mutex::new(None),
        routes: RouteCell::new(),
        stats: stats.clone(),
        egress: ImpairSlot::new(egress_seed, egress_stream),
        ingress: ImpairSlot::new(ingress_seed, ingress_stream),
        own_addr: u32::from(cfg.own_subnet.network()),
        own_mask: prefix_mask(cfg.own_subnet.prefix_len()),
        icmp_src: cfg.network.network(),
        port: cfg.bind.port(),
        clock: Instant::now(),
        tun_name: cfg.tun.clone(),
        vnet,
    };
    if let Some((imp, _, _)) = &cfg.impair_egress {
        shared.egress.apply(imp.clone());
    }
    if let Some((imp, _, _)) = &cfg.impair_ingress {
        shared.ingress.apply(imp.clone());
    }
    let mut control = Control {
        leases: cfg.leases,
        last_leases: None,
        impair_file: cfg.impair_file,
        impair_seen: None,
        stats_file: cfg.stats_file,
        stats_warned: false,
    };
    control.refresh_leases(&shared);
    control.check_impair_file(&shared);

    let shared = &shared;
    let result = std::thread::scope(|s| -> Result<(), DaemonError> {
        let mut started = Ok(());
        for (i, (q, sock)) in queues.iter().zip(&sockets).enumerate() {
            let (tun_fd, sock_fd) = (q.as_raw_fd(), sock.as_raw_fd());
            started = spawn_in(s, format!("ovl-tx{i}"), move || {
                tx_loop(shared, tun_fd, sock_fd, shared.stats.shard(2 * i))
            })
            .and_then(|()| {
                spawn_in(s, format!("ovl-rx{i}"), move || {
                    rx_loop(shared, tun_fd, sock_fd, shared.stats.shard(2 * i + 1))
                })
            });
            if started.is_err() {
                break;
            }
        }
        if started.is_ok() {
            let (tun_fd, sock_fd) = (queues[0].as_raw_fd(), sockets[0].as_raw_fd());
            let shard_e = shared.stats.shard(2 * workers);
            let shard_i = shared.stats.shard(2 * workers + 1);
            started = spawn_in(s, "ovl-delay-out".into(), move || {
                delay_loop(shared, &shared.egress, Sink::Udp(sock_fd), shard_e)
            })
            .and_then(|()| {
                spawn_in(s, "ovl-delay-in".into(), move || {
                    delay_loop(shared, &shared.ingress, Sink::Tun(tun_fd), shard_i)
                })
            });
        }
        if started.is_ok() {
            control.write_stats(shared);
            control.run(shared);
        }
        shared.quit.store(true, Ordering::SeqCst);
        shared.egress.line.cv.notify_all();
        shared.ingress.line.cv.notify_all();
        started
    });
    control.write_stats(shared);
    result?;
    let failure = shared.failure.lock().unwrap().take();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn spawn_in<'scope, F: FnOnce() + Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: String,
    f: F,
) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name)
        .spawn_scoped(s, f)
        .map(|_| ())
        .map_err(DaemonError::Thread)
}

fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

// ---------------------------------------------------------------------------
// Shared state

struct Shared<'a> {
    stop: &'a AtomicBool,
    /// Set when the workers must end (stop, or a fatal error in one of them).
    quit: AtomicBool,
    failure: Mutex<Option<DaemonError>>,
    routes: RouteCell,
    stats: Arc<Stats>,
    egress: ImpairSlot,
    ingress: ImpairSlot,
    own_addr: u32,
    own_mask: u32,
    icmp_src: Ipv4Addr,
    port: u16,
    clock: Instant,
    tun_name: String,
    /// The TUN queues carry virtio-net headers (offload mode).
    vnet: bool,
}

impl Shared<'_> {
    fn now_us(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }

    fn is_own(&self, dst: u32) -> bool {
        dst & self.own_mask == self.own_addr
    }

    fn quitting(&self) -> bool {
        self.quit.load(Ordering::Relaxed)
    }

    fn fail(&self, e: DaemonError) {
        tracing::error!("overlay data path: {e}");
        self.failure.lock().unwrap().get_or_insert(e);
        self.quit.store(true, Ordering::SeqCst);
    }
}

/// The routes and the set of lease holders, replaced whole on a change.
#[derive(Default)]
struct Routes {
    table: RouteTable,
    /// Public addresses of the current lease holders, sorted.
    holders: Vec<u32>,
}

impl Routes {
    #[inline]
    fn is_holder(&self, ip: u32) -> bool {
        self.holders.binary_search(&ip).is_ok()
    }
}

struct RouteCell {
    generation: AtomicU64,
    current: Mutex<Arc<Routes>>,
}

impl RouteCell {
    fn new() -> RouteCell {
        RouteCell {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(Routes::default())),
        }
    }

    fn publish(&self, routes: Routes) {
        *self.current.lock().unwrap() = Arc::new(routes);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn view(&self) -> RouteView {
        RouteView {
            generation: self.generation.load(Ordering::Acquire),
            routes: self.current.lock().unwrap().clone(),
        }
    }
}

/// A worker's copy of the current routes.
struct RouteView {
    generation: u64,
    routes: Arc<Routes>,
}

impl RouteView {
    #[inline]
    fn refresh(&mut self, cell: &RouteCell) {
        let g = cell.generation.load(Ordering::Acquire);
        if g != self.generation {
            *self = cell.view();
        }
    }
}

/// One direction's impairment: the engine, whether it does anything, and the
/// queue of packets it delayed.
struct ImpairSlot {
    active: AtomicBool,
    engine: Mutex<Option<Impairer>>,
    seed: u64,
    stream: u64,
    line: DelayLine,
}

impl ImpairSlot {
    fn new(seed: u64, stream: u64) -> ImpairSlot {
        ImpairSlot {
            active: AtomicBool::new(false),
            engine: Mutex::new(None),
            seed,
            stream,
            line: DelayLine::default(),
        }
    }

    fn apply(&self, cfg: Impairment) {
        if let Err(e) = cfg.validate() {
            tracing::warn!("impairment: {e}; treated as 100%");
        }
        let mut engine = self.engine.lock().unwrap();
        let e = match engine.as_mut() {
            Some(e) => {
                e.set(cfg);
                e
            }
            None => engine.insert(Impairer::new(cfg, self.seed, self.stream)),
        };
        self.active.store(!e.is_noop(), Ordering::SeqCst);
    }

    /// The engine, locked, when it does something.
    #[inline]
    fn engaged(&self) -> Option<MutexGuard<'_, Option<Impairer>>> {
        if self.active.load(Ordering::Relaxed) {
            Some(self.engine.lock().unwrap())
        } else {
            None
        }
    }
}

/// A packet waiting for its time.
struct Held {
    at_us: u64,
    seq: u64,
    to: SocketAddrV4,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    /// Reversed, so that the heap's top is the earliest (then the first held).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at_us, o.seq).cmp(&(self.at_us, self.seq))
    }
}

#[derive(Default)]
struct DelayState {
    heap: BinaryHeap<Held>,
    /// Buffers of packets already sent, for reuse.
    pool: Vec<Vec<u8>>,
    bytes: usize,
    seq: u64,
}

#[derive(Default)]
struct DelayLine {
    state: Mutex<DelayState>,
    cv: Condvar,
}

impl DelayLine {
    /// Holds `copies` copies of `data` until `at_us`.
    fn hold(&self, at_us: u64, copies: u8, to: SocketAddrV4, data: &[u8], shard: &Shard) {
        let mut st = self.state.lock().unwrap();
        let mut earliest = false;
        for _ in 0..copies {
            if st.heap.len() >= DELAY_MAX_PACKETS || st.bytes + data.len() > DELAY_MAX_BYTES {
                shard.inc(Counter::DelayOverflow);
                continue;
            }
            let mut buf = st.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(data);
            st.bytes += data.len();
            st.seq += 1;
            let seq = st.seq;
            earliest |= st.heap.peek().is_none_or(|h| h.at_us > at_us);
            st.heap.push(Held {
                at_us,
                seq,
                to,
                data: buf,
            });
            shard.inc(Counter::Delayed);
        }
        drop(st);
        if earliest {
            self.cv.notify_one();
        }
    }
}

/// Where a delay queue's packets go.
#[derive(Clone, Copy)]
enum Sink {
    Udp(RawFd),
    Tun(RawFd),
}

// ---------------------------------------------------------------------------
// The control thread: leases, impairment file, stats file.

struct Control {
    leases: LeaseSource,
    last_leases: Option<Vec<(Ipv4Net, Ipv4Addr)>>,
    impair_file: Option<PathBuf>,
    impair_seen: Option<(SystemTime, u64)>,
    stats_file: Option<PathBuf>,
    stats_warned: bool,
}

impl Control {
    fn run(&mut self, sh: &Shared) {
        let start = Instant::now();
        let (mut next_lease, mut next_impair, mut next_stats) = (
            start + LEASE_PERIOD,
            start + IMPAIR_PERIOD,
            start + STATS_PERIOD,
        );
        while !sh.stop.load(Ordering::Relaxed) && !sh.quitting() {
            let now = Instant::now();
            if now >= next_lease {
                self.refresh_leases(sh);
                next_lease = now + LEASE_PERIOD;
            }
            if now >= next_impair {
                self.check_impair_file(sh);
                next_impair = now + IMPAIR_PERIOD;
            }
            if now >= next_stats {
                self.write_stats(sh);
                next_stats = now + STATS_PERIOD;
            }
            let next = next_lease.min(next_impair).min(next_stats);
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
    }

    fn refresh_leases(&mut self, sh: &Shared) {
        let mut leases = (self.leases)();
        leases.sort();
        leases.dedup();
        if self.last_leases.as_ref() == Some(&leases) {
            return;
        }
        let own = Ipv4Net::new(Ipv4Addr::from(sh.own_addr), sh.own_mask.count_ones() as u8);
        let table = RouteTable::from_routes(leases.iter().filter(|(net, _)| *net != own).copied());
        let mut holders: Vec<u32> = leases.iter().map(|(_, ip)| u32::from(*ip)).collect();
        holders.sort_unstable();
        holders.dedup();
        tracing::debug!(leases = leases.len(), "overlay routes updated");
        sh.stats.set_leases(leases.len() as u64);
        sh.routes.publish(Routes { table, holders });
        self.last_leases = Some(leases);
    }

    fn check_impair_file(&mut self, sh: &Shared) {
        let Some(path) = &self.impair_file else {
            return;
        };
        let seen = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if seen == self.impair_seen {
            return;
        }
        let had = self.impair_seen.is_some();
        self.impair_seen = seen;
        let file = match seen {
            None if had => ImpairFile::default(),
            None => return,
            Some(_) => match read_impair_file(path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("{}: {e}; impairments unchanged", path.display());
                    return;
                }
            },
        };
        tracing::info!(egress = ?file.egress, ingress = ?file.ingress, "impairments set");
        sh.egress.apply(file.egress);
        sh.ingress.apply(file.ingress);
    }

    fn write_stats(&mut self, sh: &Shared) {
        let queued = [&sh.egress, &sh.ingress]
            .iter()
            .map(|s| s.line.state.lock().unwrap().heap.len() as u64)
            .sum();
        sh.stats.set_delay_queued(queued);
        let Some(path) = &self.stats_file else {
            return;
        };
        if let Err(e) = stats::write_snapshot(path, &sh.stats.snapshot()) {
            if !self.stats_warned {
                tracing::warn!("{}: {e}", path.display());
                self.stats_warned = true;
            }
        }
    }
}

/// Reads an impairment file.
pub fn read_impair_file(path: &Path) -> Result<ImpairFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// System calls

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_timeout(fd: RawFd, name: i32, ms: i32) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::from(ms / 1000),
        tv_usec: libc::suseconds_t::from((ms % 1000) * 1000),
    };
    // SAFETY: a timeval option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    sa
}

fn udp_socket(bind: SocketAddrV4, reuseport: bool) -> io::Result<OwnedFd> {
    // SAFETY: socket() returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if reuseport {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER)?;
        }
    }
    set_timeout(fd, libc::SO_RCVTIMEO, IDLE_MS)?;
    set_timeout(fd, libc::SO_SNDTIMEO, IDLE_MS)?;
    let sa = sockaddr(bind);
    // SAFETY: a sockaddr_in of the size given.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// One socket per worker, all bound to `bind` with `SO_REUSEPORT`. A probe
/// without `SO_REUSEPORT` first makes sure that no other program holds the
/// port (it would otherwise silently share the datagrams).
fn udp_sockets(bind: SocketAddrV4, n: usize, gro: bool) -> io::Result<Vec<OwnedFd>> {
    drop(udp_socket(bind, false)?);
    let socks = (0..n)
        .map(|_| udp_socket(bind, true))
        .collect::<io::Result<Vec<_>>>()?;
    if gro {
        for s in &socks {
            if let Err(e) = setsockopt_int(s.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1) {
                tracing::debug!("UDP_GRO: {e}");
            }
        }
    }
    Ok(socks)
}

/// A zeroed virtio-net header: a plain packet whose checksums the kernel checks.
const PLAIN: [u8; gso::VNET_HDR_LEN] = [0; gso::VNET_HDR_LEN];

/// Packets read per burst in offload mode (each up to 64 KiB).
const GSO_BURST: usize = 16;
/// Room for the segments of one super-packet.
const OUT_SLOT: usize = 2 * SLOT;
/// The most UDP payload one GSO send carries (the kernel's limit is 65507).
const GSO_MAX_BYTES: usize = 65_000;
/// Control buffer per message, in u64 units (aligned for `cmsghdr`).
const CTRL_WORDS: usize = 4;
/// Pieces (headers and payloads) of gathered messages per batch: a burst's
/// super-packets, two pieces per segment.
const PARTS: usize = 2 * GSO_BURST * 48;

#[inline]
fn iov(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

fn writev(fd: RawFd, iovs: &[libc::iovec]) -> bool {
    loop {
        // SAFETY: every iovec points to a live buffer of its length.
        let r = unsafe { libc::writev(fd, iovs.as_ptr(), iovs.len() as libc::c_int) };
        if r >= 0 {
            return true;
        }
        if errno() != libc::EINTR {
            return false;
        }
    }
}

/// Writes one plain packet to the TUN (after a zeroed virtio-net header when
/// the queue has them).
fn tun_write(fd: RawFd, vnet: bool, pkt: &[u8]) -> bool {
    if vnet {
        return writev(fd, &[iov(&PLAIN), iov(pkt)]);
    }
    loop {
        // SAFETY: pkt is a valid buffer of its length.
        let r = unsafe { libc::write(fd, pkt.as_ptr().cast(), pkt.len()) };
        if r >= 0 {
            return true;
        }
        if errno() != libc::EINTR {
            return false;
        }
    }
}

fn wait_readable(fd: RawFd, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Datagrams queued for one `sendmmsg`: plain ones, and UDP GSO ones (one
/// message carrying several equal-sized datagrams, cut by the kernel). The
/// headers point into the struct's own arrays (allocated once, never moved)
/// and at packet bytes that the caller keeps alive and unchanged until
/// [`SendBatch::flush`].
struct SendBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrl: Vec<u64>,
    /// Inner packets in each message, and their length (GSO messages).
    segs: Vec<(usize, usize)>,
    n: usize,
    /// The pieces of gathered messages ([`SendBatch::push_gso_parts`]), and
    /// how many are used.
    parts: Vec<libc::iovec>,
    np: usize,
    /// Whether UDP GSO sends work (cleared at the first refusal).
    gso_ok: bool,
}

impl SendBatch {
    fn new(cap: usize) -> SendBatch {
        // SAFETY: these C structs are plain data; zero is valid for each.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut b = SendBatch {
            hdrs: vec![zero_hdr; cap],
            iovs: vec![iov(&[]); cap],
            addrs: vec![zero_sa; cap],
            ctrl: vec![0; cap * CTRL_WORDS],
            segs: vec![(1, 0); cap],
            n: 0,
            parts: vec![iov(&[]); PARTS],
            np: 0,
            gso_ok: true,
        };
        for i in 0..cap {
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
        }
        b
    }

    #[inline]
    fn is_full(&self) -> bool {
        self.n == self.hdrs.len()
    }

    /// Whether a message of `parts` pieces fits.
    #[inline]
    fn has_room(&self, parts: usize) -> bool {
        self.n < self.hdrs.len() && self.np + parts <= self.parts.len()
    }

    #[inline]
    fn push(&mut self, data: &[u8], to: SocketAddrV4) {
        let i = self.n;
        self.iovs[i] = iov(data);
        self.addrs[i] = sockaddr(to);
        self.segs[i] = (1, data.len());
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_iov = &mut self.iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        self.n += 1;
    }

    /// Queues `count` datagrams, each a header from `hdrs` (`hl` bytes each,
    /// back to back) followed by its payload from `payload` (`seg_len - hl`
    /// bytes each, the last may be shorter), gathered from where they are:
    /// one UDP GSO message when `count > 1`. The caller checks
    /// [`SendBatch::has_room`] for `2 * count` pieces first.
    fn push_gso_parts(
        &mut self,
        hdrs: &[u8],
        hl: usize,
        payload: &[u8],
        to: SocketAddrV4,
        seg_len: usize,
        count: usize,
    ) {
        let i = self.n;
        let first = self.np;
        let m = seg_len - hl;
        for j in 0..count {
            let p = if count == 1 {
                payload
            } else {
                &payload[(j * m).min(payload.len())..((j + 1) * m).min(payload.len())]
            };
            self.parts[self.np] = iov(&hdrs[j * hl..(j + 1) * hl]);
            self.parts[self.np + 1] = iov(p);
            self.np += 2;
        }
        if count > 1 {
            self.push_gso(&[], to, seg_len, count);
        } else {
            self.push(&[], to);
        }
        // The message's own iovec only records its length.
        self.iovs[i].iov_len = hl * count + payload.len();
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_iov = self.parts[first..].as_mut_ptr();
        h.msg_iovlen = (self.np - first) as _;
    }

    /// Queues `count` datagrams of `seg_len` bytes (the last may be shorter)
    /// lying back to back in `data`, as one UDP GSO message.
    fn push_gso(&mut self, data: &[u8], to: SocketAddrV4, seg_len: usize, count: usize) {
        let i = self.n;
        self.push(data, to);
        self.segs[i] = (count, seg_len);
        let ctrl = self.ctrl[i * CTRL_WORDS..]
            .as_mut_ptr()
            .cast::<libc::cmsghdr>();
        // SAFETY: the control buffer is 32 aligned bytes, room for one
        // cmsghdr and a u16 (CMSG_SPACE(2) = 24 on 64-bit Linux).
        unsafe {
            (*ctrl).cmsg_level = libc::SOL_UDP;
            (*ctrl).cmsg_type = libc::UDP_SEGMENT;
            (*ctrl).cmsg_len = libc::CMSG_LEN(2) as _;
            libc::CMSG_DATA(ctrl)
                .cast::<u16>()
                .write_unaligned(seg_len as u16);
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_control = ctrl.cast();
            h.msg_controllen = libc::CMSG_SPACE(2) as _;
        }
    }

    /// Sends every queued datagram; counts what was sent and what failed.
    fn flush(&mut self, fd: RawFd, shard: &Shard) {
        let mut off = 0;
        let (mut packets, mut bytes) = (0u64, 0u64);
        while off < self.n {
            // SAFETY: headers off..n point to live iovecs, addresses, control
            // buffers and packet bytes (see the type's contract).
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(off),
                    (self.n - off) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                // The message at `off` failed.
                let (count, seg_len) = self.segs[off];
                if count > 1
                    && matches!(
                        e,
                        libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT
                    )
                {
                    if self.gso_ok {
                        tracing::warn!(
                            "UDP GSO refused ({}); sending datagrams one by one",
                            io::Error::from_raw_os_error(e)
                        );
                        self.gso_ok = false;
                    }
                    let (p, b) = self.send_split(fd, off, seg_len, shard);
                    packets += p;
                    bytes += b;
                } else {
                    shard.add(Counter::SendError, count as u64);
                }
                off += 1;
                continue;
            }
            shard.inc(Counter::UdpSendCalls);
            let r = r as usize;
            for i in off..off + r {
                packets += self.segs[i].0 as u64;
                bytes += self.iovs[i].iov_len as u64;
            }
            off += r;
        }
        shard.add(Counter::TunToUdpPackets, packets);
        shard.add(Counter::TunToUdpBytes, bytes);
        self.n = 0;
        self.np = 0;
    }

    /// Sends GSO message `i`'s datagrams one by one.
    fn send_split(&mut self, fd: RawFd, i: usize, seg_len: usize, shard: &Shard) -> (u64, u64) {
        let h = self.hdrs[i].msg_hdr;
        if h.msg_iovlen > 1 {
            return self.send_split_parts(fd, i, shard);
        }
        let (base, len) = (self.iovs[i].iov_base as *const u8, self.iovs[i].iov_len);
        // SAFETY: the message's bytes are live (see the type's contract).
        let data = unsafe { std::slice::from_raw_parts(base, len) };
        let (mut packets, mut bytes) = (0, 0);
        for seg in data.chunks(seg_len.max(1)) {
            // SAFETY: a live buffer and the message's own address.
            let r = unsafe {
                libc::sendto(
                    fd,
                    seg.as_ptr().cast(),
                    seg.len(),
                    0,
                    (&self.addrs[i] as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r < 0 {
                shard.inc(Counter::SendError);
            } else {
                packets += 1;
                bytes += seg.len() as u64;
            }
        }
        (packets, bytes)
    }
}

impl SendBatch {
    /// Sends gathered message `i`'s datagrams (header and payload pieces)
    /// one by one.
    fn send_split_parts(&mut self, fd: RawFd, i: usize, shard: &Shard) -> (u64, u64) {
        let h = self.hdrs[i].msg_hdr;
        let (mut packets, mut bytes) = (0, 0);
        // `msg_iovlen` is a `size_t` with glibc, an `int` with musl.
        #[allow(clippy::unnecessary_cast)]
        let pieces = h.msg_iovlen as usize;
        for k in (0..pieces).step_by(2) {
            // SAFETY: the message's pieces are live (see the type's
            // contract); each datagram is two of them.
            let r = unsafe {
                let mut m: libc::msghdr = std::mem::zeroed();
                m.msg_name = h.msg_name;
                m.msg_namelen = h.msg_namelen;
                m.msg_iov = h.msg_iov.add(k);
                m.msg_iovlen = 2;
                libc::sendmsg(fd, &m, 0)
            };
            if r < 0 {
                shard.inc(Counter::SendError);
            } else {
                packets += 1;
                bytes += r as u64;
            }
        }
        (packets, bytes)
    }
}

/// A token bucket for the ICMP errors a worker originates.
struct IcmpLimit {
    tokens: u32,
    last_us: u64,
}

impl IcmpLimit {
    fn new() -> IcmpLimit {
        IcmpLimit {
            tokens: ICMP_BURST,
            last_us: 0,
        }
    }

    fn take(&mut self, now_us: u64) -> bool {
        let earned =
            (now_us.saturating_sub(self.last_us) / ICMP_INTERVAL_US).min(u64::from(ICMP_BURST));
        if earned > 0 {
            self.tokens = (self.tokens + earned as u32).min(ICMP_BURST);
            self.last_us = now_us;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

// ---------------------------------------------------------------------------
// tun → udp

/// The per-packet decision of the sending side.
enum Verdict {
    /// Send `len` bytes to this next hop.
    Send(usize, Ipv4Addr),
    /// For this node's own subnet: write `len` bytes back to the TUN.
    Loop(usize),
    /// Done with (dropped or answered), already counted.
    Done,
}

struct TxCtx<'s, 'a> {
    sh: &'s Shared<'a>,
    shard: &'s Shard,
    tun: RawFd,
    icmp: [u8; packet::ICMP_ERROR_MAX],
    limit: IcmpLimit,
}

impl TxCtx<'_, '_> {
    #[inline]
    fn classify(&mut self, buf: &mut [u8], routes: &Routes) -> Verdict {
        let h = match packet::parse(buf) {
            Ok(h) => h,
            Err(Malformed::NotIpv4(_)) => {
                self.shard.inc(Counter::TunNotIpv4);
                return Verdict::Done;
            }
            Err(_) => {
                self.shard.inc(Counter::TunMalformed);
                return Verdict::Done;
            }
        };
        let pkt = &mut buf[..h.total_len];
        if h.ttl <= 1 {
            self.shard.inc(Counter::TtlExpired);
            self.icmp_error(
                pkt,
                packet::ICMP_TIME_EXCEEDED,
                Counter::IcmpTimeExceededSent,
            );
            return Verdict::Done;
        }
        let dst = h.dst_u32();
        if self.sh.is_own(dst) {
            packet::decrement_ttl(pkt);
            return Verdict::Loop(h.total_len);
        }
        let Some(hop) = routes.table.lookup_u32(dst) else {
            self.shard.inc(Counter::NoRoute);
            self.icmp_error(pkt, packet::ICMP_DEST_UNREACH, Counter::IcmpUnreachableSent);
            return Verdict::Done;
        };
        packet::decrement_ttl(pkt);
        Verdict::Send(h.total_len, hop)
    }

    fn icmp_error(&mut self, orig: &[u8], icmp_type: u8, sent: Counter) {
        let n = packet::icmp_error(orig, self.sh.icmp_src, icmp_type, 0, &mut self.icmp);
        let Some(n) = n else {
            return;
        };
        if !self.limit.take(self.sh.now_us()) {
            self.shard.inc(Counter::IcmpRateLimited);
            return;
        }
        if tun_write(self.tun, self.sh.vnet, &self.icmp[..n]) {
            self.shard.inc(sent);
        } else {
            self.shard.inc(Counter::TunWriteError);
        }
    }
}

/// Queues one packet for sending, through the impairment engine when it is
/// engaged: dropped, held for later, or queued (twice when duplicated).
#[allow(clippy::too_many_arguments)]
#[inline]
fn admit_and_queue(
    engine: Option<&mut Impairer>,
    now: u64,
    pkt: &[u8],
    to: SocketAddrV4,
    batch: &mut SendBatch,
    sock: RawFd,
    line: &DelayLine,
    shard: &Shard,
) {
    let copies = match engine {
        None => 1,
        Some(e) => match e.admit(now, pkt.len()) {
            Fate::Drop => {
                shard.inc(Counter::ImpairedLoss);
                return;
            }
            Fate::Deliver { at_us, copies } => {
                shard.add(Counter::DuplicatesSent, u64::from(copies.saturating_sub(1)));
                if at_us > now {
                    line.hold(at_us, copies, to, pkt, shard);
                    return;
                }
                copies
            }
        },
    };
    for _ in 0..copies {
        if batch.is_full() {
            batch.flush(sock, shard);
        }
        batch.push(pkt, to);
    }
}

fn tx_loop(sh: &Shared, tun: RawFd, sock: RawFd, shard: &Shard) {
    let vnet = sh.vnet;
    let hdr = if vnet { gso::VNET_HDR_LEN } else { 0 };
    let burst = if vnet { GSO_BURST } else { BATCH };
    let islot = hdr + SLOT;
    let mut bufs = vec![0u8; burst * islot];
    let mut out = vec![0u8; if vnet { burst * OUT_SLOT } else { 0 }];
    let mut lens = [0usize; BATCH];
    let mut batch = SendBatch::new(2 * BATCH);
    let mut view = sh.routes.view();
    let mut ctx = TxCtx {
        sh,
        shard,
        tun,
        icmp: [0; packet::ICMP_ERROR_MAX],
        limit: IcmpLimit::new(),
    };
    while !sh.quitting() {
        // A burst of reads, until the queue is empty or the batch full.
        let mut n = 0;
        while n < burst {
            let slot = &mut bufs[n * islot..(n + 1) * islot];
            // SAFETY: slot is a valid buffer of its length.
            let r = unsafe { libc::read(tun, slot.as_mut_ptr().cast(), slot.len()) };
            if r < 0 {
                match errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => break,
                    e => {
                        sh.fail(DaemonError::Tun {
                            name: sh.tun_name.clone(),
                            source: io::Error::from_raw_os_error(e),
                        });
                        return;
                    }
                }
            }
            lens[n] = r as usize;
            n += 1;
        }
        if n == 0 {
            wait_readable(tun, IDLE_MS);
            continue;
        }
        shard.add(Counter::TunReads, n as u64);
        view.refresh(&sh.routes);
        let routes = &*view.routes;
        let mut engine = sh.egress.engaged();
        let now = if engine.is_some() { sh.now_us() } else { 0 };
        for (i, &len) in lens.iter().enumerate().take(n) {
            let slot = &mut bufs[i * islot..i * islot + len];
            let (vh, buf) = if vnet {
                let Some(vh) = VnetHdr::parse(slot) else {
                    shard.inc(Counter::TunMalformed);
                    continue;
                };
                (vh, &mut slot[gso::VNET_HDR_LEN..])
            } else {
                (VnetHdr::default(), slot)
            };
            let gso_type = vh.gso_type & !gso::GSO_ECN;
            if gso_type == gso::GSO_NONE
                && vh.flags & gso::F_NEEDS_CSUM != 0
                && !gso::complete_partial_csum(buf, vh.csum_start.into(), vh.csum_offset.into())
            {
                shard.inc(Counter::TunMalformed);
                continue;
            }
            if gso_type != gso::GSO_NONE && gso_type != gso::GSO_TCPV4 {
                shard.inc(Counter::TunMalformed);
                continue;
            }
            let (len, hop) = match ctx.classify(buf, routes) {
                Verdict::Send(len, hop) => (len, hop),
                Verdict::Loop(len) => {
                    // Back into the kernel as it came (with its virtio header).
                    let slot = &bufs[i * islot..i * islot + hdr + len];
                    let ok = if vnet {
                        writev(tun, &[iov(&slot[..hdr]), iov(&slot[hdr..])])
                    } else {
                        tun_write(tun, false, slot)
                    };
                    shard.inc(if ok {
                        Counter::LoopedBack
                    } else {
                        Counter::TunWriteError
                    });
                    continue;
                }
                Verdict::Done => continue,
            };
            let to = SocketAddrV4::new(hop, sh.port);
            let line = &sh.egress.line;
            if gso_type == gso::GSO_NONE {
                let e = engine.as_mut().and_then(|g| g.as_mut());
                admit_and_queue(e, now, &buf[..len], to, &mut batch, sock, line, shard);
                continue;
            }
            // A TCP super-packet: cut it into MSS-sized packets.
            let o = &mut out[i * OUT_SLOT..(i + 1) * OUT_SLOT];
            if engine.is_none() && batch.gso_ok {
                // Only the headers are written; the payloads are sent from
                // the read buffer.
                let pkt = &buf[..len];
                let Some((segs, hl)) = gso::segment_tcp4_headers(pkt, vh.gso_size.into(), o) else {
                    shard.inc(Counter::TunMalformed);
                    continue;
                };
                shard.inc(Counter::GsoSegmented);
                let payload = &pkt[hl..];
                let mss = segs.seg_len - hl;
                let per = (GSO_MAX_BYTES / segs.seg_len).clamp(1, gso::MAX_SEGMENTS);
                let mut k = 0;
                while k < segs.count {
                    let c = per.min(segs.count - k);
                    if !batch.has_room(2 * c) {
                        batch.flush(sock, shard);
                    }
                    let p_end = ((k + c) * mss).min(payload.len());
                    batch.push_gso_parts(
                        &o[k * hl..(k + c) * hl],
                        hl,
                        &payload[k * mss..p_end],
                        to,
                        segs.seg_len,
                        c,
                    );
                    k += c;
                }
                continue;
            }
            let Some(segs) = gso::segment_tcp4(&buf[..len], vh.gso_size.into(), o) else {
                shard.inc(Counter::TunMalformed);
                continue;
            };
            shard.inc(Counter::GsoSegmented);
            let o = &o[..segs.total];
            if engine.is_none() && batch.gso_ok && segs.count > 1 {
                let per = (GSO_MAX_BYTES / segs.seg_len).clamp(1, gso::MAX_SEGMENTS);
                for group in o.chunks(per * segs.seg_len) {
                    if batch.is_full() {
                        batch.flush(sock, shard);
                    }
                    batch.push_gso(group, to, segs.seg_len, group.len().div_ceil(segs.seg_len));
                }
            } else {
                // One by one, each through the impairment engine.
                for seg in o.chunks(segs.seg_len) {
                    let e = engine.as_mut().and_then(|g| g.as_mut());
                    admit_and_queue(e, now, seg, to, &mut batch, sock, line, shard);
                }
            }
        }
        drop(engine);
        batch.flush(sock, shard);
    }
}

// ---------------------------------------------------------------------------
// udp → tun

/// The `UDP_GRO` segment size of a received message, if any.
fn gro_size(h: &libc::msghdr) -> usize {
    if h.msg_controllen == 0 || h.msg_control.is_null() {
        return 0;
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsgs; the CMSG_* helpers walk them within those bounds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = libc::CMSG_DATA(c).cast::<libc::c_int>().read_unaligned();
                return usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

/// Writes the coalescer's burst to the TUN; returns (packets, bytes) written.
fn write_coalesced(
    tun: RawFd,
    c: &Coalescer,
    bufs: &[u8],
    hdrbuf: &mut [u8],
    iovs: &mut Vec<libc::iovec>,
    shard: &Shard,
) -> (u64, u64) {
    let (mut packets, mut bytes) = (0u64, 0u64);
    for w in c.writes() {
        let single = match *w {
            Write::Single(p) => Some(c.packet(p)),
            Write::Merged { run } if c.run_len(run) == 1 => c.run_packets(run).next(),
            Write::Merged { run } => {
                let n = c.render(run, bufs, hdrbuf);
                let hl = c.run_hdrs(run);
                iovs.clear();
                iovs.push(iov(&hdrbuf[..n]));
                let mut b = 0;
                for (off, len) in c.run_packets(run) {
                    iovs.push(iov(&bufs[off + hl..off + len]));
                    b += len as u64;
                }
                if writev(tun, iovs) {
                    packets += c.run_len(run) as u64;
                    bytes += b;
                    shard.inc(Counter::GroMerged);
                } else {
                    shard.add(Counter::TunWriteError, c.run_len(run) as u64);
                }
                None
            }
        };
        if let Some((off, len)) = single {
            if tun_write(tun, true, &bufs[off..off + len]) {
                packets += 1;
                bytes += len as u64;
            } else {
                shard.inc(Counter::TunWriteError);
            }
        }
    }
    (packets, bytes)
}

fn rx_loop(sh: &Shared, tun: RawFd, sock: RawFd, shard: &Shard) {
    let vnet = sh.vnet;
    let mut bufs = vec![0u8; BATCH * SLOT];
    // SAFETY: plain C structs; zero is valid for each.
    let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = (0..BATCH)
        .map(|i| libc::iovec {
            iov_base: bufs[i * SLOT..].as_mut_ptr().cast(),
            iov_len: SLOT,
        })
        .collect();
    let mut ctrl = vec![0u64; BATCH * CTRL_WORDS];
    // SAFETY: as above.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    for i in 0..BATCH {
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        if vnet {
            hdrs[i].msg_hdr.msg_control = ctrl[i * CTRL_WORDS..].as_mut_ptr().cast();
        }
    }
    let mut coalescer = Coalescer::new();
    let mut hdrbuf = [0u8; gso::VNET_HDR_LEN + 120];
    let mut wiovs: Vec<libc::iovec> = Vec::with_capacity(gso::MAX_SEGMENTS + 1);
    let mut view = sh.routes.view();
    let mut last_error = None;
    while !sh.quitting() {
        for h in hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            if vnet {
                h.msg_hdr.msg_controllen = CTRL_WORDS * 8;
            }
        }
        // SAFETY: every header points to a live buffer, iovec, address and
        // control buffer.
        let r = unsafe {
            libc::recvmmsg(
                sock,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            let e = errno();
            if r < 0 && !matches!(e, libc::EAGAIN | libc::EINTR) && last_error != Some(e) {
                tracing::warn!("recvmmsg: {}", io::Error::from_raw_os_error(e));
                last_error = Some(e);
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        shard.inc(Counter::UdpRecvCalls);
        view.refresh(&sh.routes);
        let routes = &*view.routes;
        let mut engine = sh.ingress.engaged();
        let now = if engine.is_some() { sh.now_us() } else { 0 };
        let (mut packets, mut bytes) = (0u64, 0u64);
        for i in 0..r as usize {
            let len = hdrs[i].msg_len as usize;
            let gro = if vnet { gro_size(&hdrs[i].msg_hdr) } else { 0 };
            let step = if gro > 0 { gro } else { len.max(1) };
            let datagrams = len.div_ceil(step).max(1) as u64;
            let src = u32::from_be(addrs[i].sin_addr.s_addr);
            if !routes.is_holder(src) {
                shard.add(Counter::ForeignSource, datagrams);
                continue;
            }
            if hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                shard.add(Counter::Malformed, datagrams);
                continue;
            }
            let base = i * SLOT;
            let mut at = 0;
            for _ in 0..datagrams {
                let off = base + at;
                let dlen = step.min(len - at);
                at += dlen;
                let data = &bufs[off..off + dlen];
                let Ok(h) = packet::parse(data) else {
                    shard.inc(Counter::Malformed);
                    continue;
                };
                if !sh.is_own(h.dst_u32()) {
                    shard.inc(Counter::WrongDestination);
                    continue;
                }
                let pkt = &data[..h.total_len];
                let copies = match engine.as_mut().and_then(|g| g.as_mut()) {
                    None => 1,
                    Some(e) => match e.admit(now, pkt.len()) {
                        Fate::Drop => {
                            shard.inc(Counter::ImpairedLoss);
                            continue;
                        }
                        Fate::Deliver { at_us, copies } => {
                            shard.add(Counter::DuplicatesSent, u64::from(copies.saturating_sub(1)));
                            if at_us > now {
                                let from = SocketAddrV4::new(Ipv4Addr::from(src), 0);
                                sh.ingress.line.hold(at_us, copies, from, pkt, shard);
                                continue;
                            }
                            copies
                        }
                    },
                };
                for _ in 0..copies {
                    if vnet {
                        coalescer.push(&bufs, off, &h);
                    } else if tun_write(tun, false, pkt) {
                        packets += 1;
                        bytes += pkt.len() as u64;
                    } else {
                        shard.inc(Counter::TunWriteError);
                    }
                }
            }
        }
        drop(engine);
        if vnet {
            let (p, b) = write_coalesced(tun, &coalescer, &bufs, &mut hdrbuf, &mut wiovs, shard);
            packets += p;
            bytes += b;
            coalescer.clear();
        }
        shard.add(Counter::UdpToTunPackets, packets);
        shard.add(Counter::UdpToTunBytes, bytes);
    }
}

// ---------------------------------------------------------------------------
// delay queues

fn delay_loop(sh: &Shared, slot: &ImpairSlot, sink: Sink, shard: &Shard) {
    let line = &slot.line;
    let mut due: Vec<Held> = Vec::with_capacity(BATCH);
    let mut batch = SendBatch::new(BATCH);
    loop {
        {
            let mut st = line.state.lock().unwrap();
            loop {
                if sh.quitting() {
                    return;
                }
                let now = sh.now_us();
                let wait_us = match st.heap.peek() {
                    Some(h) if h.at_us <= now => break,
                    Some(h) => (h.at_us - now).min(IDLE_MS as u64 * 1000),
                    None => IDLE_MS as u64 * 1000,
                };
                st = line
                    .cv
                    .wait_timeout(st, Duration::from_micros(wait_us))
                    .unwrap()
                    .0;
            }
            let now = sh.now_us();
            while due.len() < BATCH && st.heap.peek().is_some_and(|h| h.at_us <= now) {
                let h = st.heap.pop().expect("peeked");
                st.bytes -= h.data.len();
                due.push(h);
            }
        }
        match sink {
            Sink::Udp(fd) => {
                for h in &due {
                    batch.push(&h.data, h.to);
                }
                batch.flush(fd, shard);
            }
            Sink::Tun(fd) => {
                let (mut packets, mut bytes) = (0u64, 0u64);
                for h in &due {
                    if tun_write(fd, sh.vnet, &h.data) {
                        packets += 1;
                        bytes += h.data.len() as u64;
                    } else {
                        shard.inc(Counter::TunWriteError);
                    }
                }
                shard.add(Counter::UdpToTunPackets, packets);
                shard.add(Counter::UdpToTunBytes, bytes);
            }
        }
        let mut st = line.state.lock().unwrap();
        for h in due.drain(..) {
            if st.pool.len() < 4096 {
                st.pool.push(h.data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_packets_come_out_earliest_first_then_in_order() {
        let mut heap = BinaryHeap::new();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        for (at_us, seq) in [(30, 1), (10, 2), (10, 3), (20, 4)] {
            heap.push(Held {
                at_us,
                seq,
                to,
                data: Vec::new(),
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|h| h.seq)).collect();
        assert_eq!(order, vec![2, 3, 4, 1]);
    }

    /// Gathered GSO messages arrive as one datagram per segment, header then
    /// payload, whether the kernel cuts them or they are sent one by one.
    #[test]
    fn gathered_messages_arrive_one_datagram_per_segment() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let tx = udp_socket(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), false).unwrap();
        let hdrs: Vec<u8> = (0..5u8).flat_map(|i| [b'h', i, i, i]).collect();
        let payload: Vec<u8> = (0..43u32).map(|i| i as u8).collect();
        let stats = Stats::new(1);
        let shard = stats.shard(0);
        let expect: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                let mut d = hdrs[i * 4..i * 4 + 4].to_vec();
                d.extend_from_slice(&payload[i * 10..(i * 10 + 10).min(43)]);
                d
            })
            .collect();
        let mut b = SendBatch::new(4);
        for split in [false, true] {
            assert!(b.has_room(10));
            b.push_gso_parts(&hdrs, 4, &payload, to, 14, 5);
            // And a lone segment, without GSO.
            b.push_gso_parts(&hdrs[..4], 4, &payload[..7], to, 11, 1);
            if split {
                let (p, n) = b.send_split(tx.as_raw_fd(), 0, 14, shard);
                assert_eq!((p, n), (5, 63));
                let (p, n) = b.send_split(tx.as_raw_fd(), 1, 11, shard);
                assert_eq!((p, n), (1, 11));
                b.n = 0;
                b.np = 0;
            } else {
                b.flush(tx.as_raw_fd(), shard);
                assert_eq!((b.n, b.np), (0, 0));
            }
            let mut buf = [0u8; 100];
            for e in &expect {
                let n = rx.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &e[..], "split {split}");
            }
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[b'h', 0, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
        }
    }

    #[test]
    fn icmp_limit_allows_a_burst_then_a_rate() {
        let mut l = IcmpLimit::new();
        let sent = (0..100).filter(|_| l.take(0)).count();
        assert_eq!(sent as u32, ICMP_BURST);
        assert!(!l.take(ICMP_INTERVAL_US - 1));
        assert!(l.take(ICMP_INTERVAL_US));
        assert!(!l.take(ICMP_INTERVAL_US));
        assert!(l.take(10 * ICMP_INTERVAL_US));
    }

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
            leases: Box::new(Vec::new),
            impair_egress: None,
            impair_ingress: None,
            impair_file: None,
            stats_file: None,
            workers: 1,
        };
        assert!(matches!(run(cfg, &stop), Err(DaemonError::Config(_))));
    }
}
