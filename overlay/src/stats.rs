//! The daemon's counters: packets and bytes each way, drops by reason, ICMP
//! errors sent, impairment effects and system calls.
//!
//! Counting must not slow the data path: each thread adds to its own shard
//! (one cache-line-aligned array of atomics, so two threads never write the
//! same line), and [`Stats::snapshot`] sums the shards. The snapshot is what
//! the daemon writes as JSON to its stats file.

use crate::registry::BadLease;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// One counter of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// IP packets read from the TUN and sent in UDP.
    TunToUdpPackets,
    /// Their bytes (the inner packets, as on the TUN).
    TunToUdpBytes,
    /// Packets received in UDP and written to the TUN.
    UdpToTunPackets,
    /// Their bytes.
    UdpToTunBytes,
    /// From the TUN, to an address no lease covers.
    NoRoute,
    /// Datagrams from an address that holds no current lease.
    ForeignSource,
    /// Datagrams whose payload is not a valid IPv4 packet.
    Malformed,
    /// Datagrams whose inner destination is not in this node's subnet.
    WrongDestination,
    /// Invalid IPv4 packets read from the TUN.
    TunMalformed,
    /// Non-IPv4 packets (IPv6 router solicitations and the like) read from the TUN.
    TunNotIpv4,
    /// From the TUN with a TTL of 1 or 0.
    TtlExpired,
    /// Lost by the impairment engine.
    ImpairedLoss,
    /// UDP sends that failed.
    SendError,
    /// TUN writes that failed.
    TunWriteError,
    /// Delayed packets dropped because the delay queue was full.
    DelayOverflow,
    /// ICMP destination-unreachable messages sent.
    IcmpUnreachableSent,
    /// ICMP time-exceeded messages sent.
    IcmpTimeExceededSent,
    /// ICMP errors not sent because of the rate limit.
    IcmpRateLimited,
    /// Extra copies sent by the duplication impairment.
    DuplicatesSent,
    /// Packets held back by delay, jitter or rate.
    Delayed,
    /// Packets for this node's own subnet written back to the TUN.
    LoopedBack,
    /// `sendmmsg` calls.
    UdpSendCalls,
    /// `recvmmsg` calls that returned datagrams.
    UdpRecvCalls,
    /// `read`s on the TUN that returned a packet.
    TunReads,
    /// TCP super-packets read from the TUN and cut into packets (offload mode).
    GsoSegmented,
    /// Super-packets of merged TCP segments written to the TUN (offload mode).
    GroMerged,
}

const COUNTERS: usize = Counter::GroMerged as usize + 1;

/// One thread's counters, on their own cache lines.
#[repr(align(128))]
pub struct Shard {
    c: [AtomicU64; COUNTERS],
}

impl Shard {
    fn new() -> Shard {
        Shard {
            c: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(&self, counter: Counter, n: u64) {
        self.c[counter as usize].fetch_add(n, Relaxed);
    }

    /// Adds 1 to `counter`.
    #[inline]
    pub fn inc(&self, counter: Counter) {
        self.add(counter, 1);
    }

    fn get(&self, counter: Counter) -> u64 {
        self.c[counter as usize].load(Relaxed)
    }
}

/// The counters of one daemon: a shard per thread, and a few gauges.
pub struct Stats {
    shards: Box<[Shard]>,
    leases: AtomicU64,
    delay_queued: AtomicU64,
    workers: AtomicU64,
    offload: std::sync::atomic::AtomicBool,
    bad_leases: Mutex<Vec<BadLease>>,
    started: std::time::Instant,
}

impl Stats {
    /// Counters for `shards` threads (at least one).
    pub fn new(shards: usize) -> Stats {
        Stats {
            shards: (0..shards.max(1)).map(|_| Shard::new()).collect(),
            leases: AtomicU64::new(0),
            delay_queued: AtomicU64::new(0),
            workers: AtomicU64::new(0),
            offload: std::sync::atomic::AtomicBool::new(false),
            bad_leases: Mutex::new(Vec::new()),
            started: std::time::Instant::now(),
        }
    }

    /// Thread `i`'s shard (shards are reused modulo their number).
    pub fn shard(&self, i: usize) -> &Shard {
        &self.shards[i % self.shards.len()]
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Sets the number of current leases.
    pub fn set_leases(&self, n: u64) {
        self.leases.store(n, Relaxed);
    }

    /// Sets the number of packets waiting in the delay queues.
    pub fn set_delay_queued(&self, n: u64) {
        self.delay_queued.store(n, Relaxed);
    }

    /// Sets the number of data-path workers.
    pub fn set_workers(&self, n: u64) {
        self.workers.store(n, Relaxed);
    }

    /// Records whether the offloads are in use.
    pub fn set_offload(&self, on: bool) {
        self.offload.store(on, Relaxed);
    }

    /// Records the lease files that could not be read.
    pub fn set_bad_leases(&self, bad: Vec<BadLease>) {
        *crate::lock(&self.bad_leases) = bad;
    }

    /// The sum of `counter` over every shard.
    pub fn total(&self, counter: Counter) -> u64 {
        self.shards.iter().map(|s| s.get(counter)).sum()
    }

    /// Every counter, summed.
    pub fn snapshot(&self) -> StatsSnapshot {
        use Counter::*;
        let t = |c| self.total(c);
        StatsSnapshot {
            tun_to_udp: Traffic {
                packets: t(TunToUdpPackets),
                bytes: t(TunToUdpBytes),
            },
            udp_to_tun: Traffic {
                packets: t(UdpToTunPackets),
                bytes: t(UdpToTunBytes),
            },
            drops: Drops {
                no_route: t(NoRoute),
                foreign_source: t(ForeignSource),
                malformed: t(Malformed),
                wrong_destination: t(WrongDestination),
                tun_malformed: t(TunMalformed),
                tun_not_ipv4: t(TunNotIpv4),
                ttl_expired: t(TtlExpired),
                impaired_loss: t(ImpairedLoss),
                send_error: t(SendError),
                tun_write_error: t(TunWriteError),
                delay_overflow: t(DelayOverflow),
            },
            icmp_unreachable_sent: t(IcmpUnreachableSent),
            icmp_time_exceeded_sent: t(IcmpTimeExceededSent),
            icmp_rate_limited: t(IcmpRateLimited),
            duplicates_sent: t(DuplicatesSent),
            delayed: t(Delayed),
            looped_back: t(LoopedBack),
            udp_send_calls: t(UdpSendCalls),
            udp_recv_calls: t(UdpRecvCalls),
            tun_reads: t(TunReads),
            gso_segmented: t(GsoSegmented),
            gro_merged: t(GroMerged),
            offload: self.offload.load(Relaxed),
            leases: self.leases.load(Relaxed),
            bad_leases: crate::lock(&self.bad_leases).clone(),
            delay_queued: self.delay_queued.load(Relaxed),
            workers: self.workers.load(Relaxed),
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// Packets and bytes one way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Packets.
    pub packets: u64,
    /// Bytes of the inner IP packets.
    pub bytes: u64,
}

/// Packets dropped, by reason (see [`Counter`] for each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Drops {
    pub no_route: u64,
    pub foreign_source: u64,
    pub malformed: u64,
    pub wrong_destination: u64,
    pub tun_malformed: u64,
    pub tun_not_ipv4: u64,
    pub ttl_expired: u64,
    pub impaired_loss: u64,
    pub send_error: u64,
    pub tun_write_error: u64,
    pub delay_overflow: u64,
}

impl Drops {
    /// Every drop, whatever the reason.
    pub fn total(&self) -> u64 {
        self.no_route
            + self.foreign_source
            + self.malformed
            + self.wrong_destination
            + self.tun_malformed
            + self.tun_not_ipv4
            + self.ttl_expired
            + self.impaired_loss
            + self.send_error
            + self.tun_write_error
            + self.delay_overflow
    }
}

/// A daemon's counters at one moment, as written to its stats file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    /// From the TUN into UDP.
    pub tun_to_udp: Traffic,
    /// From UDP into the TUN.
    pub udp_to_tun: Traffic,
    /// Drops by reason.
    pub drops: Drops,
    /// ICMP destination-unreachable messages sent for addresses without a lease.
    pub icmp_unreachable_sent: u64,
    /// ICMP time-exceeded messages sent.
    pub icmp_time_exceeded_sent: u64,
    /// ICMP errors suppressed by the rate limit.
    pub icmp_rate_limited: u64,
    /// Extra copies sent by the duplication impairment.
    pub duplicates_sent: u64,
    /// Packets held back by delay, jitter or rate.
    pub delayed: u64,
    /// Packets for the node's own subnet written back to the TUN.
    pub looped_back: u64,
    /// `sendmmsg` calls (tun_to_udp.packets / this = datagrams per call).
    pub udp_send_calls: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub udp_recv_calls: u64,
    /// TUN reads that returned a packet.
    pub tun_reads: u64,
    /// TCP super-packets read from the TUN and cut into packets.
    pub gso_segmented: u64,
    /// Super-packets of merged TCP segments written to the TUN.
    pub gro_merged: u64,
    /// Whether the kernel offloads are in use (virtio-net headers on the TUN).
    pub offload: bool,
    /// Current leases (routes) known.
    pub leases: u64,
    /// Lease files that could not be read at the last look, each with the
    /// reason; the lease such a file last held stays in force until the file
    /// is readable again or removed.
    #[serde(default)]
    pub bad_leases: Vec<BadLease>,
    /// Packets waiting in the delay queues now.
    pub delay_queued: u64,
    /// Data-path workers (TUN queues).
    pub workers: u64,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
}

/// Writes `snapshot` as JSON to `path` atomically
/// ([`crate::atomic_file::write_atomic`]): a reader never sees a partial
/// file.
pub fn write_snapshot(path: &Path, snapshot: &StatsSnapshot) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(snapshot).map_err(std::io::Error::other)?;
    text.push(b'\n');
    crate::atomic_file::write_atomic(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_sum_and_serialise() {
        let s = Stats::new(3);
        s.shard(0).add(Counter::TunToUdpPackets, 2);
        s.shard(1).add(Counter::TunToUdpPackets, 3);
        s.shard(4).inc(Counter::ForeignSource);
        s.shard(2).add(Counter::Malformed, 7);
        s.set_leases(4);
        s.set_bad_leases(vec![BadLease {
            file: "subnets/10.244.3.0-24".into(),
            error: "expected value at line 1 column 1".into(),
        }]);
        let snap = s.snapshot();
        assert_eq!(snap.tun_to_udp.packets, 5);
        assert_eq!(snap.drops.foreign_source, 1);
        assert_eq!(snap.drops.total(), 8);
        assert_eq!(snap.leases, 4);
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["tunToUdp"]["packets"], 5);
        assert_eq!(json["drops"]["foreignSource"], 1);
        assert_eq!(json["icmpUnreachableSent"], 0);
        assert_eq!(json["badLeases"][0]["file"], "subnets/10.244.3.0-24");
        assert!(json["badLeases"][0]["error"].is_string());
        let back: StatsSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snap);
        // A file written before the field existed still reads.
        let mut old = serde_json::to_value(&snap).unwrap();
        old.as_object_mut().unwrap().remove("badLeases");
        let back: StatsSnapshot = serde_json::from_value(old).unwrap();
        assert!(back.bad_leases.is_empty());
        assert_eq!(std::mem::align_of::<Shard>(), 128);
    }

    #[test]
    fn snapshot_file_is_replaced_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("node.stats.json");
        let s = Stats::new(1);
        write_snapshot(&path, &s.snapshot()).unwrap();
        s.shard(0).inc(Counter::NoRoute);
        write_snapshot(&path, &s.snapshot()).unwrap();
        let back: StatsSnapshot =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.drops.no_route, 1);
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
