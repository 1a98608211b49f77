//! tun → udp: reads bursts of packets from a TUN queue, validates and routes
//! each (ICMP errors for expired TTLs and unleased destinations, packets for
//! the node's own subnet written back), cuts TCP super-packets into
//! segments, passes each packet through the egress impairment engine when it
//! is engaged, and sends the burst with `sendmmsg`.

use super::batch::{SendBatch, GSO_BURST};
use super::delay::DelayLine;
use super::shared::{RouteView, Routes, Shared};
use super::sys;
use super::{DaemonError, BATCH, IDLE_MS, SLOT};
use crate::gso::{self, VnetHdr};
use crate::impair::{Fate, Impairer};
use crate::packet::{self, Malformed};
use crate::stats::{Counter, Shard};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// ICMP errors: a burst of 50, then 200 per second per worker.
const ICMP_BURST: u32 = 50;
const ICMP_INTERVAL_US: u64 = 5_000;
/// Room for the segments of one super-packet.
const OUT_SLOT: usize = 2 * SLOT;
/// The most UDP payload one GSO send carries (the kernel's limit is 65507).
const GSO_MAX_BYTES: usize = 65_000;

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
        let Some(pkt) = buf.get_mut(..h.total_len) else {
            self.shard.inc(Counter::TunMalformed);
            return Verdict::Done;
        };
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
        let Some(msg) = n.and_then(|n| self.icmp.get(..n)) else {
            return;
        };
        if !self.limit.take(self.sh.now_us()) {
            self.shard.inc(Counter::IcmpRateLimited);
            return;
        }
        if sys::tun_write(self.tun, self.sh.vnet, msg) {
            self.shard.inc(sent);
        } else {
            self.shard.inc(Counter::TunWriteError);
        }
    }
}

/// Where a burst's packets go: the batch, its socket, the delay queue.
struct Out<'b> {
    batch: &'b mut SendBatch,
    sock: RawFd,
    line: &'b DelayLine,
    shard: &'b Shard,
}

impl Out<'_> {
    /// Queues one packet, through the impairment engine when it is engaged:
    /// dropped, held for later, or queued (twice when duplicated).
    #[inline]
    fn admit(&mut self, engine: Option<&mut Impairer>, now: u64, pkt: &[u8], to: SocketAddrV4) {
        let copies = match engine {
            None => 1,
            Some(e) => match e.admit(now, pkt.len()) {
                Fate::Drop => {
                    self.shard.inc(Counter::ImpairedLoss);
                    return;
                }
                Fate::Deliver { at_us, copies } => {
                    self.shard
                        .add(Counter::DuplicatesSent, u64::from(copies.saturating_sub(1)));
                    if at_us > now {
                        self.line.hold(at_us, copies, to, pkt, self.shard);
                        return;
                    }
                    copies
                }
            },
        };
        for _ in 0..copies {
            if self.batch.is_full() {
                self.batch.flush(self.sock, self.shard);
            }
            self.batch.push(pkt, to);
        }
    }

    /// Sends a TCP super-packet cut into `mss`-sized segments: without an
    /// impairment, as UDP GSO messages whose payloads are gathered from
    /// `pkt` (only the headers are written, into `out`); otherwise segment
    /// by segment through the engine.
    fn super_packet(
        &mut self,
        mut engine: Option<&mut Impairer>,
        now: u64,
        pkt: &[u8],
        mss: usize,
        out: &mut [u8],
        to: SocketAddrV4,
    ) {
        if engine.is_none() && self.batch.gso_ok {
            let Some((segs, hl)) = gso::segment_tcp4_headers(pkt, mss, out) else {
                self.shard.inc(Counter::TunMalformed);
                return;
            };
            self.shard.inc(Counter::GsoSegmented);
            let payload = pkt.get(hl..).unwrap_or_default();
            for g in gso::gso_groups(segs, hl, payload.len(), GSO_MAX_BYTES) {
                let (Some(h), Some(p)) = (out.get(g.headers), payload.get(g.payload)) else {
                    break;
                };
                if !self.batch.has_room(2 * g.count) {
                    self.batch.flush(self.sock, self.shard);
                }
                if !self
                    .batch
                    .push_gso_parts(h, hl, p, to, segs.seg_len, g.count)
                {
                    self.shard.add(Counter::SendError, g.count as u64);
                }
            }
            return;
        }
        let Some(segs) = gso::segment_tcp4(pkt, mss, out) else {
            self.shard.inc(Counter::TunMalformed);
            return;
        };
        self.shard.inc(Counter::GsoSegmented);
        for r in segs.ranges() {
            if let Some(seg) = out.get(r) {
                self.admit(engine.as_deref_mut(), now, seg, to);
            }
        }
    }
}

/// One worker's sending side: its buffers and its view of the routes.
struct Tx<'s, 'a> {
    ctx: TxCtx<'s, 'a>,
    sock: RawFd,
    /// Bytes of virtio-net header before each packet (0 or 10).
    hdr: usize,
    /// Packets per burst, and the size of each read slot.
    burst: usize,
    islot: usize,
    bufs: Vec<u8>,
    out: Vec<u8>,
    lens: [usize; BATCH],
    batch: SendBatch,
    view: RouteView,
}

impl<'s, 'a> Tx<'s, 'a> {
    fn new(sh: &'s Shared<'a>, tun: RawFd, sock: RawFd, shard: &'s Shard) -> Self {
        let vnet = sh.vnet;
        let hdr = if vnet { gso::VNET_HDR_LEN } else { 0 };
        let burst = if vnet { GSO_BURST } else { BATCH };
        Tx {
            ctx: TxCtx {
                sh,
                shard,
                tun,
                icmp: [0; packet::ICMP_ERROR_MAX],
                limit: IcmpLimit::new(),
            },
            sock,
            hdr,
            burst,
            islot: hdr + SLOT,
            bufs: vec![0u8; burst * (hdr + SLOT)],
            out: vec![0u8; if vnet { burst * OUT_SLOT } else { 0 }],
            lens: [0; BATCH],
            batch: SendBatch::new(2 * BATCH),
            view: sh.routes.view(),
        }
    }

    /// Reads until the queue is empty or the burst full: the packets read.
    fn read_burst(&mut self) -> Result<usize, DaemonError> {
        let mut n = 0;
        for (slot, len) in self
            .bufs
            .chunks_exact_mut(self.islot)
            .zip(self.lens.iter_mut())
            .take(self.burst)
        {
            match sys::read(self.ctx.tun, slot) {
                Ok(Some(r)) => *len = r,
                Ok(None) => break,
                Err(e) => {
                    return Err(DaemonError::Tun {
                        name: self.ctx.sh.tun_name.clone(),
                        source: io::Error::from_raw_os_error(e),
                    })
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// Routes and sends the `n` packets read.
    fn send_burst(&mut self, n: usize) {
        let sh = self.ctx.sh;
        let shard = self.ctx.shard;
        self.view.refresh(&sh.routes);
        let mut engine = sh.egress.engaged();
        let now = if engine.is_some() { sh.now_us() } else { 0 };
        let mut out = Out {
            batch: &mut self.batch,
            sock: self.sock,
            line: &sh.egress.line,
            shard,
        };
        let slots = self.bufs.chunks_exact_mut(self.islot);
        let outs = self.out.chunks_exact_mut(OUT_SLOT.max(1));
        let mut outs = outs.map(Some).chain(std::iter::repeat_with(|| None));
        for (slot, &len) in slots.zip(&self.lens).take(n) {
            let o = outs.next().flatten();
            let Some(slot) = slot.get_mut(..len) else {
                continue;
            };
            let e = engine.as_deref_mut().and_then(Option::as_mut);
            one_packet(
                &mut self.ctx,
                &self.view.routes,
                self.hdr,
                slot,
                o,
                e,
                now,
                &mut out,
            );
        }
        drop(engine);
        self.batch.flush(self.sock, shard);
    }
}

/// Handles one packet read from the TUN (`slot`: its virtio-net header, when
/// `hdr` is not 0, then the packet).
#[allow(clippy::too_many_arguments)]
fn one_packet(
    ctx: &mut TxCtx,
    routes: &Routes,
    hdr: usize,
    slot: &mut [u8],
    seg_out: Option<&mut [u8]>,
    engine: Option<&mut Impairer>,
    now: u64,
    out: &mut Out,
) {
    let shard = ctx.shard;
    let vh = if hdr > 0 {
        VnetHdr::parse(slot)
    } else {
        Some(VnetHdr::default())
    };
    let (Some(vh), Some(buf)) = (vh, slot.get_mut(hdr..)) else {
        shard.inc(Counter::TunMalformed);
        return;
    };
    let gso_type = vh.gso_type & !gso::GSO_ECN;
    if gso_type == gso::GSO_NONE
        && vh.flags & gso::F_NEEDS_CSUM != 0
        && !gso::complete_partial_csum(buf, vh.csum_start.into(), vh.csum_offset.into())
    {
        shard.inc(Counter::TunMalformed);
        return;
    }
    if gso_type != gso::GSO_NONE && gso_type != gso::GSO_TCPV4 {
        shard.inc(Counter::TunMalformed);
        return;
    }
    let (len, hop) = match ctx.classify(buf, routes) {
        Verdict::Send(len, hop) => (len, hop),
        Verdict::Loop(len) => {
            // Back into the kernel as it came (with its virtio header).
            let ok = match slot.get(..hdr + len).and_then(|s| s.split_at_checked(hdr)) {
                Some((v, p)) if hdr > 0 => sys::writev(ctx.tun, &[v, p]),
                Some((_, p)) => sys::tun_write(ctx.tun, false, p),
                None => false,
            };
            shard.inc(if ok {
                Counter::LoopedBack
            } else {
                Counter::TunWriteError
            });
            return;
        }
        Verdict::Done => return,
    };
    let to = SocketAddrV4::new(hop, ctx.sh.port);
    let Some(pkt) = buf.get(..len) else {
        shard.inc(Counter::TunMalformed);
        return;
    };
    match (gso_type == gso::GSO_NONE, seg_out) {
        (true, _) => out.admit(engine, now, pkt, to),
        (false, Some(o)) => out.super_packet(engine, now, pkt, vh.gso_size.into(), o, to),
        (false, None) => shard.inc(Counter::TunMalformed),
    }
}

/// The sending side of one worker, until the daemon quits; a failed TUN read
/// is an error (the daemon ends).
pub(super) fn tx_loop(
    sh: &Shared,
    tun: RawFd,
    sock: RawFd,
    shard: &Shard,
) -> Result<(), DaemonError> {
    let mut tx = Tx::new(sh, tun, sock, shard);
    while !sh.quitting() {
        let n = tx.read_burst()?;
        if n == 0 {
            sys::wait_readable(tun, IDLE_MS);
            continue;
        }
        shard.add(Counter::TunReads, n as u64);
        tx.send_burst(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
