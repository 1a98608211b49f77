//! udp → tun: receives batches of datagrams (`recvmmsg`, with `UDP_GRO`
//! several per message), checks each one's source against the current
//! lease holders, its payload's IPv4 header and destination, passes it
//! through the ingress impairment engine when it is engaged, and writes it
//! to the TUN: merged with the in-order TCP segments of its flow in offload
//! mode ([`crate::gso::Coalescer`]), as it came otherwise.

use super::shared::{Routes, Shared};
use super::sys::{self, Received, RecvBatch};
use super::DaemonError;
use crate::gso::{self, Coalescer, Write};
use crate::impair::{Fate, Impairer};
use crate::packet;
use crate::stats::{Counter, Shard};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::time::Duration;

/// Writes the coalescer's burst to the TUN; returns (packets, bytes) written.
fn write_coalesced(
    tun: RawFd,
    c: &Coalescer,
    bufs: &[u8],
    hdrbuf: &mut [u8],
    shard: &Shard,
) -> (u64, u64) {
    let (mut packets, mut bytes) = (0u64, 0u64);
    for w in c.writes() {
        let single = match *w {
            Write::Single(p) => c.packet(p),
            Write::Merged { run } if c.run_len(run) == 1 => c.run_packets(run).next(),
            Write::Merged { run } => {
                let (p, b) = write_run(tun, c, run, bufs, hdrbuf);
                if p > 0 {
                    packets += p;
                    bytes += b;
                    shard.inc(Counter::GroMerged);
                } else {
                    shard.add(Counter::TunWriteError, c.run_len(run) as u64);
                }
                None
            }
        };
        if let Some((off, len)) = single {
            let pkt = off.checked_add(len).and_then(|end| bufs.get(off..end));
            if pkt.is_some_and(|p| sys::tun_write(tun, true, p)) {
                packets += 1;
                bytes += len as u64;
            } else {
                shard.inc(Counter::TunWriteError);
            }
        }
    }
    (packets, bytes)
}

/// Writes run `run` as one super-packet: (packets, bytes) written, (0, 0)
/// when the write failed.
fn write_run(tun: RawFd, c: &Coalescer, run: usize, bufs: &[u8], hdrbuf: &mut [u8]) -> (u64, u64) {
    let Some(n) = c.render(run, bufs, hdrbuf) else {
        return (0, 0);
    };
    let hl = c.run_hdrs(run);
    let mut parts: [&[u8]; gso::MAX_SEGMENTS + 1] = [&[]; gso::MAX_SEGMENTS + 1];
    parts[0] = hdrbuf.get(..n).unwrap_or_default();
    let mut used = 1;
    let mut b = 0;
    for ((off, len), part) in c.run_packets(run).zip(parts.iter_mut().skip(1)) {
        let Some(payload) = bufs.get(off.saturating_add(hl)..off.saturating_add(len)) else {
            return (0, 0);
        };
        *part = payload;
        used += 1;
        b += len as u64;
    }
    match parts.get(..used) {
        Some(p) if sys::writev(tun, p) => (used as u64 - 1, b),
        _ => (0, 0),
    }
}

/// One burst of received messages being handled.
struct Burst<'r, 's, 'a> {
    sh: &'s Shared<'a>,
    shard: &'s Shard,
    tun: RawFd,
    routes: &'r Routes,
    coalescer: &'r mut Coalescer,
    packets: u64,
    bytes: u64,
}

impl Burst<'_, '_, '_> {
    /// Handles one message (one datagram, or several of `gro` bytes each).
    fn message(&mut self, bufs: &[u8], m: Received, mut engine: Option<&mut Impairer>, now: u64) {
        let step = if m.gro > 0 { m.gro } else { m.len.max(1) };
        let datagrams = m.len.div_ceil(step).max(1) as u64;
        if !self.routes.is_holder(m.src) {
            self.shard.add(Counter::ForeignSource, datagrams);
            return;
        }
        if m.truncated {
            self.shard.add(Counter::Malformed, datagrams);
            return;
        }
        let mut at = 0;
        for _ in 0..datagrams {
            let off = m.offset + at;
            let dlen = step.min(m.len - at);
            at += dlen;
            self.datagram(bufs, off, dlen, m.src, engine.as_deref_mut(), now);
        }
    }

    /// Handles the datagram `bufs[off..off + len]` from `src`.
    fn datagram(
        &mut self,
        bufs: &[u8],
        off: usize,
        len: usize,
        src: u32,
        engine: Option<&mut Impairer>,
        now: u64,
    ) {
        let shard = self.shard;
        let Some(data) = bufs.get(off..off + len) else {
            shard.inc(Counter::Malformed);
            return;
        };
        let Ok(h) = packet::parse(data) else {
            shard.inc(Counter::Malformed);
            return;
        };
        if !self.sh.is_own(h.dst_u32()) {
            shard.inc(Counter::WrongDestination);
            return;
        }
        let Some(pkt) = data.get(..h.total_len) else {
            shard.inc(Counter::Malformed);
            return;
        };
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
                        let from = SocketAddrV4::new(Ipv4Addr::from(src), 0);
                        self.sh.ingress.line.hold(at_us, copies, from, pkt, shard);
                        return;
                    }
                    copies
                }
            },
        };
        for _ in 0..copies {
            if self.sh.vnet {
                if !self.coalescer.push(bufs, off, &h) {
                    shard.inc(Counter::Malformed);
                }
            } else if sys::tun_write(self.tun, false, pkt) {
                self.packets += 1;
                self.bytes += pkt.len() as u64;
            } else {
                shard.inc(Counter::TunWriteError);
            }
        }
    }
}

/// The receiving side of one worker, until the daemon quits.
pub(super) fn rx_loop(
    sh: &Shared,
    tun: RawFd,
    sock: RawFd,
    shard: &Shard,
) -> Result<(), DaemonError> {
    let mut rb = RecvBatch::new(sh.vnet);
    let mut coalescer = Coalescer::new();
    let mut hdrbuf = [0u8; gso::VNET_HDR_LEN + gso::MAX_HEADERS];
    let mut view = sh.routes.view();
    let mut last_error = None;
    while !sh.quitting() {
        let r = match rb.recv(sock) {
            Ok(0) => continue,
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, libc::EAGAIN | libc::EINTR) && last_error != Some(e) {
                    tracing::warn!("recvmmsg: {}", io::Error::from_raw_os_error(e));
                    last_error = Some(e);
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        shard.inc(Counter::UdpRecvCalls);
        view.refresh(&sh.routes);
        let mut engine = sh.ingress.engaged();
        let now = if engine.is_some() { sh.now_us() } else { 0 };
        let mut burst = Burst {
            sh,
            shard,
            tun,
            routes: &view.routes,
            coalescer: &mut coalescer,
            packets: 0,
            bytes: 0,
        };
        for m in (0..r).filter_map(|i| rb.message(i)) {
            let e = engine.as_deref_mut().and_then(Option::as_mut);
            burst.message(rb.bufs(), m, e, now);
        }
        drop(engine);
        let (mut packets, mut bytes) = (burst.packets, burst.bytes);
        if sh.vnet {
            let (p, b) = write_coalesced(tun, &coalescer, rb.bufs(), &mut hdrbuf, shard);
            packets += p;
            bytes += b;
            coalescer.clear();
        }
        shard.add(Counter::UdpToTunPackets, packets);
        shard.add(Counter::UdpToTunBytes, bytes);
    }
    Ok(())
}
