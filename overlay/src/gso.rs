//! Segmentation and coalescing offloads done in userspace, as the fastest
//! userspace tunnels do, while keeping one inner IP packet per UDP datagram
//! on the wire.
//!
//! With `IFF_VNET_HDR` every packet read from or written to the TUN is
//! preceded by a `struct virtio_net_hdr`. Reading, the kernel hands over TCP
//! super-packets of up to 64 KiB (TSO, `gso_type` TCPV4) and packets whose
//! checksum is only partial (`NEEDS_CSUM`): [`segment_tcp4`] cuts a
//! super-packet into MSS-sized IPv4/TCP packets with their own headers and
//! checksums (what the NIC would do), and [`complete_partial_csum`] finishes
//! a partial checksum. Writing, [`Coalescer`] merges consecutive in-order TCP
//! segments of one flow back into one super-packet, so that the kernel
//! processes one packet where it would have processed up to 45 (what GRO
//! does on a NIC).

use crate::packet::{self, bytes, bytes_mut, IPV4_MIN_HEADER, PROTO_TCP, PROTO_UDP};
use std::ops::Range;

/// The size of `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN` (a flag on `gso_type`).
pub const GSO_ECN: u8 = 0x80;

/// The most segments one UDP GSO send carries (the kernel's limit), and the
/// most packets merged into one super-packet.
pub const MAX_SEGMENTS: usize = 64;

/// The longest IPv4 and TCP headers together (60 bytes each at most).
pub const MAX_HEADERS: usize = 120;

/// `struct virtio_net_hdr`, in the host's byte order (the TUN's default for
/// a little-endian host, and legacy virtio's everywhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_NONE`, `GSO_TCPV4`, ...
    pub gso_type: u8,
    /// Length of the headers before the segmented payload.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed part begins.
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field is.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads a header from the first [`VNET_HDR_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = bytes::<VNET_HDR_LEN>(b, 0)?;
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let [h0, h1] = self.hdr_len.to_ne_bytes();
        let [g0, g1] = self.gso_size.to_ne_bytes();
        let [s0, s1] = self.csum_start.to_ne_bytes();
        let [o0, o1] = self.csum_offset.to_ne_bytes();
        [self.flags, self.gso_type, h0, h1, g0, g1, s0, s1, o0, o1]
    }
}

/// Adds `data` as big-endian 16-bit words to a ones' complement sum
/// (unfolded); an odd last byte is padded with zero.
///
/// The data is summed as little-endian 64-bit words (each split into two
/// 32-bit halves, so the accumulator cannot overflow below 2^32 words: a
/// loop the compiler vectorizes, without byte swaps), folded to 16 bits and
/// swapped once at the end: a ones' complement sum does not depend on the
/// byte order it is computed in (RFC 1071, 2.B).
#[inline]
pub fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc = 0u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (v & 0xffff_ffff) + (v >> 32);
    }
    let mut tail = [0u8; 8];
    for (t, r) in tail.iter_mut().zip(chunks.remainder()) {
        *t = *r;
    }
    let v = u64::from_le_bytes(tail);
    acc += (v & 0xffff_ffff) + (v >> 32);
    initial + u64::from(fold(acc).swap_bytes())
}

pub use crate::checksum::fold;

/// The IPv4 pseudo-header's sum for a transport segment of `len` bytes.
#[inline]
pub fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    sum(src, 0) + sum(dst, 0) + u64::from(proto) + len as u64
}

/// Finishes a partial checksum (`NEEDS_CSUM`): the field at
/// `start + offset` holds the pseudo-header's sum; the checksum of
/// everything from `start` replaces it. False (the packet unchanged) if the
/// offsets do not fit.
pub fn complete_partial_csum(pkt: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(field) = start.checked_add(offset) else {
        return false;
    };
    if bytes::<2>(pkt, field).is_none() {
        return false;
    }
    let Some(covered) = pkt.get(start..) else {
        return false;
    };
    let c = !fold(sum(covered, 0));
    // A UDP checksum of 0 means "none"; send 0xffff instead (RFC 768).
    let c = if c == 0 && offset == 6 { 0xffff } else { c };
    match bytes_mut::<2>(pkt, field) {
        Some(f) => {
            *f = c.to_be_bytes();
            true
        }
        None => false,
    }
}

/// Where [`segment_tcp4`] put the segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    /// The number of segments.
    pub count: usize,
    /// The length of every segment but the last.
    pub seg_len: usize,
    /// The bytes written (the segments back to back).
    pub total: usize,
}

impl Segments {
    /// Where each segment lies in the output, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> {
        let (seg_len, total) = (self.seg_len.max(1), self.total);
        (0..self.count).map(move |i| {
            let start = (i * seg_len).min(total);
            start..(start + seg_len).min(total)
        })
    }
}

/// Cuts a TCP/IPv4 super-packet (one that [`packet::parse`] accepted) into
/// segments of `mss` payload bytes, written back to back into `out`, each a
/// complete IPv4 packet: the IP header with its own total length,
/// identification (incremented per segment) and checksum; the TCP header
/// with its sequence number, flags (FIN and PSH only on the last, CWR only
/// on the first) and a full checksum. `None` if the packet is not a valid
/// TCP/IPv4 packet, is fragmented, `mss` is 0, or `out` is too short.
pub fn segment_tcp4(pkt: &[u8], mss: usize, out: &mut [u8]) -> Option<Segments> {
    segment(pkt, mss, out, true).map(|(s, _)| s)
}

/// [`segment_tcp4`] without copying the payload: writes only each segment's
/// IP and TCP headers (checksums included), `hdrs` bytes each, back to back
/// into `out`; segment `i`'s payload is `pkt[hdrs + i * mss..]` (at most
/// `mss` bytes), to be sent from where it is. The returned [`Segments`]
/// describe the segments as [`segment_tcp4`] would lay them out; `hdrs` is
/// `seg_len - mss` when `count > 1`, and `total - payload` in any case.
pub fn segment_tcp4_headers(pkt: &[u8], mss: usize, out: &mut [u8]) -> Option<(Segments, usize)> {
    segment(pkt, mss, out, false)
}

fn segment(pkt: &[u8], mss: usize, out: &mut [u8], copy: bool) -> Option<(Segments, usize)> {
    let h = packet::parse(pkt).ok()?;
    if h.protocol != PROTO_TCP || h.fragment_offset != 0 || mss == 0 {
        return None;
    }
    let pkt = pkt.get(..h.total_len)?;
    let ihl = h.header_len;
    let ip = bytes::<IPV4_MIN_HEADER>(pkt, 0)?;
    let tcp = bytes::<20>(pkt, ihl)?;
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 {
        return None;
    }
    let hdrs = ihl + doff;
    let head = pkt.get(..hdrs)?;
    let payload = pkt.get(hdrs..)?;
    let count = payload.len().div_ceil(mss).max(1);
    let headers = count.checked_mul(hdrs)?;
    let total = headers.checked_add(payload.len())?;
    let out = out.get_mut(..if copy { total } else { headers })?;
    let ip_id = u16::from_be_bytes([ip[4], ip[5]]);
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let flags = tcp[13];
    let (src, dst) = (&ip[12..16], &ip[16..20]);
    let mut at = 0;
    for (i, chunk) in payload
        .chunks(mss)
        .chain(payload.is_empty().then_some(&[][..]))
        .enumerate()
    {
        let len = hdrs + chunk.len();
        let step = if copy { len } else { hdrs };
        let seg = out.get_mut(at..at + step)?;
        let (seg_hdrs, seg_payload) = seg.split_at_mut_checked(hdrs)?;
        seg_hdrs.copy_from_slice(head);
        if copy {
            seg_payload.copy_from_slice(chunk);
        }
        let (seg_ip, seg_tcp) = seg_hdrs.split_at_mut_checked(ihl)?;
        // IP header.
        let sip = bytes_mut::<IPV4_MIN_HEADER>(seg_ip, 0)?;
        sip[2..4].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
        sip[4..6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
        sip[10..12].fill(0);
        let c = packet::checksum(seg_ip);
        bytes_mut::<IPV4_MIN_HEADER>(seg_ip, 0)?[10..12].copy_from_slice(&c.to_be_bytes());
        // TCP header.
        let t = bytes_mut::<20>(seg_tcp, 0)?;
        t[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !0x09; // FIN, PSH
        }
        if i > 0 {
            f &= !0x80; // CWR
        }
        t[13] = f;
        t[16..18].fill(0);
        // The TCP header is a multiple of 4 bytes long: its sum and the
        // payload's add up as one.
        let c = !fold(sum(
            seg_tcp,
            sum(chunk, pseudo_sum(src, dst, PROTO_TCP, len - ihl)),
        ));
        bytes_mut::<20>(seg_tcp, 0)?[16..18].copy_from_slice(&c.to_be_bytes());
        at += step;
    }
    let segs = Segments {
        count,
        seg_len: if count > 1 { hdrs + mss } else { total },
        total,
    };
    Some((segs, hdrs))
}

/// One UDP GSO message of a super-packet cut by [`segment_tcp4_headers`]:
/// its headers in the headers buffer, its payload in the super-packet's
/// payload, and how many datagrams it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GsoGroup {
    /// The segments' headers, `count * hdrs` bytes of the headers buffer.
    pub headers: Range<usize>,
    /// Their payloads, back to back, in the payload (after the headers).
    pub payload: Range<usize>,
    /// Datagrams in the message (at most [`MAX_SEGMENTS`]).
    pub count: usize,
}

/// Splits the segments `s` (with `hdrs` bytes of headers each and
/// `payload_len` bytes of payload in all) into UDP GSO messages of at most
/// `max_bytes` bytes and [`MAX_SEGMENTS`] datagrams (at least one datagram
/// each). The ranges lie within `s.count * hdrs` and `payload_len` bytes and
/// cover them exactly, in order; nothing comes out when `s` and `hdrs` do not
/// describe such segments.
pub fn gso_groups(
    s: Segments,
    hdrs: usize,
    payload_len: usize,
    max_bytes: usize,
) -> impl Iterator<Item = GsoGroup> {
    let mss = s.seg_len.saturating_sub(hdrs);
    let whole = s
        .count
        .checked_mul(hdrs)
        .and_then(|h| h.checked_add(payload_len));
    let consistent = hdrs > 0
        && s.count > 0
        && s.seg_len >= hdrs
        && whole == Some(s.total)
        && if s.count == 1 {
            s.seg_len == s.total
        } else {
            mss > 0
                && (s.count - 1)
                    .checked_mul(mss)
                    .is_some_and(|x| x < payload_len)
                && s.count.checked_mul(mss).is_some_and(|x| x >= payload_len)
        };
    let per = (max_bytes / s.seg_len.max(1)).clamp(1, MAX_SEGMENTS);
    let count = if consistent { s.count } else { 0 };
    (0..count).step_by(per).map(move |k| {
        let c = per.min(count - k);
        let end = if k + c == count {
            payload_len
        } else {
            (k + c) * mss
        };
        GsoGroup {
            headers: k * hdrs..(k + c) * hdrs,
            payload: (k * mss).min(end)..end,
            count: c,
        }
    })
}

/// A TCP segment that may be merged: its flow and what must match.
#[derive(Clone, Copy, Debug)]
struct TcpSeg {
    /// Source and destination addresses and ports.
    flow: [u8; 12],
    seq: u32,
    hdrs: usize,
    payload: usize,
    flags: u8,
}

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// The flow of a TCP or UDP packet: addresses and ports.
fn flow_of(pkt: &[u8], header_len: usize) -> Option<[u8; 12]> {
    let ip = bytes::<IPV4_MIN_HEADER>(pkt, 0)?;
    let ports = bytes::<4>(pkt, header_len)?;
    let mut flow = [0u8; 12];
    flow[..8].copy_from_slice(&ip[12..20]);
    flow[8..].copy_from_slice(ports);
    Some(flow)
}

/// A segment eligible for merging: TCP over IPv4 without IP options or
/// fragmentation, with a whole TCP header and payload, and with no flag but
/// ACK (and PSH).
fn mergeable(pkt: &[u8], h: &packet::Ipv4Header) -> Option<TcpSeg> {
    let ip = bytes::<IPV4_MIN_HEADER>(pkt, 0)?;
    if h.protocol != PROTO_TCP
        || h.header_len != IPV4_MIN_HEADER
        || h.fragment_offset != 0
        || ip[6] & 0x20 != 0
    {
        return None;
    }
    let t = pkt.get(IPV4_MIN_HEADER..h.total_len)?;
    let th = bytes::<20>(t, 0)?;
    let doff = usize::from(th[12] >> 4) * 4;
    let flags = th[13];
    if doff < 20 || doff >= t.len() || flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    Some(TcpSeg {
        flow: flow_of(pkt, IPV4_MIN_HEADER)?,
        seq: u32::from_be_bytes([th[4], th[5], th[6], th[7]]),
        hdrs: IPV4_MIN_HEADER + doff,
        payload: t.len() - doff,
        flags,
    })
}

/// Whether `b`'s headers allow it to follow `a` in one super-packet: the
/// same TOS, DF, TTL and protocol, the same TCP ack, window, urgent pointer
/// and options (`hdrs` bytes of IP and TCP headers, at least 40).
fn same_headers(a: &[u8], b: &[u8], hdrs: usize) -> bool {
    let (Some(x), Some(y)) = (bytes::<40>(a, 0), bytes::<40>(b, 0)) else {
        return false;
    };
    x[1] == y[1]
        && x[6..10] == y[6..10]
        && x[28..33] == y[28..33]
        && x[34..36] == y[34..36]
        && x[38..] == y[38..]
        && matches!((a.get(40..hdrs), b.get(40..hdrs)), (Some(p), Some(q)) if p == q)
}

/// One flow's run of merged segments: where its packets are.
#[derive(Clone, Copy, Debug)]
struct Run {
    seg: TcpSeg,
    /// Index of the first packet in the coalescer's list.
    first: usize,
    /// Index of the last packet so far.
    last: usize,
    count: usize,
    next_seq: u32,
    bytes: usize,
    closed: bool,
    psh: bool,
}

/// What to write to the TUN: a packet as it came, or a run of merged TCP
/// segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// The packet at this index, alone (no offload).
    Single(usize),
    /// A super-packet: its virtio header and IP/TCP headers are in
    /// `header[..header_len]` (as given to [`Coalescer::render`]), followed
    /// by the payloads of the packets `indexes` (in [`Coalescer::run_packets`]).
    Merged {
        /// The run's number (for [`Coalescer::run_packets`]).
        run: usize,
    },
}

/// Merges in-order TCP segments of the same flow, among a burst of packets,
/// into super-packets (a userspace GRO). Packets of a flow keep their order;
/// packets of different flows may be written in another order than they came.
#[derive(Default)]
pub struct Coalescer {
    /// Packets in the burst (offset and length in the caller's buffer).
    packets: Vec<(usize, usize)>,
    /// For each packet, the next packet of its run (usize::MAX: none).
    next: Vec<usize>,
    runs: Vec<Run>,
    /// Open runs (indexes into `runs`), few.
    open: Vec<usize>,
    /// The writes, in order.
    writes: Vec<Write>,
}

/// Open runs kept at once; another flow closes the oldest.
const MAX_OPEN: usize = 8;
/// The most payload one super-packet carries.
const MAX_MERGED: usize = 65535 - 60 - 60;

impl Coalescer {
    /// An empty coalescer (allocates on first use only).
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// Forgets the previous burst.
    pub fn clear(&mut self) {
        self.packets.clear();
        self.next.clear();
        self.runs.clear();
        self.open.clear();
        self.writes.clear();
    }

    /// Adds the IPv4 packet `buf[off..off + h.total_len]` (parsed as `h`).
    /// False, and nothing added, when those bytes are not in `buf`.
    pub fn push(&mut self, buf: &[u8], off: usize, h: &packet::Ipv4Header) -> bool {
        let len = h.total_len;
        let Some(pkt) = off.checked_add(len).and_then(|end| buf.get(off..end)) else {
            return false;
        };
        let idx = self.packets.len();
        self.packets.push((off, len));
        self.next.push(usize::MAX);
        let Some(seg) = mergeable(pkt, h) else {
            // Keep the order of its flow: end any run of the same flow.
            if h.protocol == PROTO_TCP || h.protocol == PROTO_UDP {
                if let Some(flow) = flow_of(pkt, h.header_len) {
                    self.close_flow(&flow);
                }
            }
            self.writes.push(Write::Single(idx));
            return true;
        };
        if let Some(pos) = self
            .open
            .iter()
            .position(|&r| self.runs.get(r).is_some_and(|x| x.seg.flow == seg.flow))
        {
            let r = self.open.remove(pos);
            if self.extend(r, idx, &seg, buf, pkt) {
                self.open.insert(pos, r);
                return true;
            }
        }
        if self.open.len() == MAX_OPEN {
            self.open.remove(0);
        }
        let r = self.runs.len();
        self.runs.push(Run {
            seg,
            first: idx,
            last: idx,
            count: 1,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            bytes: seg.payload,
            closed: seg.flags & TCP_PSH != 0,
            psh: seg.flags & TCP_PSH != 0,
        });
        self.open.push(r);
        self.writes.push(Write::Merged { run: r });
        true
    }

    /// Appends packet `idx` (`pkt`, segment `seg`) to run `r` if it follows
    /// the run's last packet.
    fn extend(&mut self, r: usize, idx: usize, seg: &TcpSeg, buf: &[u8], pkt: &[u8]) -> bool {
        let Some(run) = self.runs.get(r) else {
            return false;
        };
        let first = self
            .packets
            .get(run.first)
            .and_then(|&(fo, fl)| buf.get(fo..fo.saturating_add(fl)))
            .unwrap_or_default();
        if run.closed
            || seg.seq != run.next_seq
            || seg.hdrs != run.seg.hdrs
            || seg.payload > run.seg.payload
            || run.bytes + seg.payload > MAX_MERGED
            || run.count >= MAX_SEGMENTS
            || !same_headers(first, pkt, seg.hdrs)
        {
            return false;
        }
        let last = run.last;
        if let Some(n) = self.next.get_mut(last) {
            *n = idx;
        }
        let Some(run) = self.runs.get_mut(r) else {
            return false;
        };
        run.last = idx;
        run.count += 1;
        run.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        run.bytes += seg.payload;
        run.psh |= seg.flags & TCP_PSH != 0;
        run.closed = seg.payload < run.seg.payload || seg.flags & TCP_PSH != 0;
        true
    }

    fn close_flow(&mut self, flow: &[u8; 12]) {
        let runs = &self.runs;
        self.open
            .retain(|&r| runs.get(r).is_some_and(|x| x.seg.flow != *flow));
    }

    /// The writes, in order, for this burst.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// The `(offset, length)` of packet `i`.
    pub fn packet(&self, i: usize) -> Option<(usize, usize)> {
        self.packets.get(i).copied()
    }

    /// The packets of run `r`, in order: `(offset, length)` each.
    pub fn run_packets(&self, r: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut i = self.runs.get(r).map_or(usize::MAX, |x| x.first);
        std::iter::from_fn(move || {
            let p = self.packets.get(i).copied()?;
            i = self.next.get(i).copied().unwrap_or(usize::MAX);
            Some(p)
        })
    }

    /// The number of packets in run `r`.
    pub fn run_len(&self, r: usize) -> usize {
        self.runs.get(r).map_or(0, |x| x.count)
    }

    /// The header length (IP + TCP) of run `r`'s packets.
    pub fn run_hdrs(&self, r: usize) -> usize {
        self.runs.get(r).map_or(0, |x| x.seg.hdrs)
    }

    /// Writes into `out` the virtio header and the IP and TCP headers of run
    /// `r` as one super-packet (`count` >= 2), whose payload is the payloads
    /// of [`Coalescer::run_packets`] (each after [`Coalescer::run_hdrs`]
    /// bytes). Returns the bytes written to `out` (at most
    /// `VNET_HDR_LEN + MAX_HEADERS`), or `None` when `out` is too short or
    /// `buf` is not the buffer the packets were pushed from.
    pub fn render(&self, r: usize, buf: &[u8], out: &mut [u8]) -> Option<usize> {
        let run = self.runs.get(r)?;
        let hdrs = run.seg.hdrs;
        let (fo, _) = self.packet(run.first)?;
        let first = buf.get(fo..fo.checked_add(hdrs)?)?;
        let total = u16::try_from(hdrs + run.bytes).ok()?;
        let vnet = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: hdrs as u16,
            gso_size: run.seg.payload as u16,
            csum_start: IPV4_MIN_HEADER as u16,
            csum_offset: 16,
        };
        let (v, o) = out
            .get_mut(..VNET_HDR_LEN + hdrs)?
            .split_first_chunk_mut::<VNET_HDR_LEN>()?;
        *v = vnet.to_bytes();
        o.copy_from_slice(first);
        let h = bytes_mut::<40>(o, 0)?;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[10..12].fill(0);
        let c = packet::checksum(&h[..IPV4_MIN_HEADER]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        if run.psh {
            h[33] |= TCP_PSH;
        }
        // CHECKSUM_PARTIAL: the field holds the pseudo-header's sum.
        let tcp_len = usize::from(total) - IPV4_MIN_HEADER;
        let p = fold(pseudo_sum(&h[12..16], &h[16..20], PROTO_TCP, tcp_len));
        h[36..38].copy_from_slice(&p.to_be_bytes());
        Some(VNET_HDR_LEN + hdrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn tcp_packet(seq: u32, flags: u8, payload: &[u8], opts: &[u8]) -> Vec<u8> {
        let doff = 20 + opts.len();
        let mut t = vec![0u8; doff + payload.len()];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5001u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&77u32.to_be_bytes());
        t[12] = ((doff / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..doff].copy_from_slice(opts);
        t[doff..].copy_from_slice(payload);
        let (src, dst) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 3));
        let c = !fold(sum(
            &t,
            pseudo_sum(&src.octets(), &dst.octets(), PROTO_TCP, t.len()),
        ));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        let mut out = vec![0u8; 20 + t.len()];
        packet::build_ipv4(&mut out, src, dst, PROTO_TCP, 64, &t).unwrap();
        out
    }

    fn tcp_valid(p: &[u8]) -> bool {
        let h = packet::parse(p).unwrap();
        let t = &p[h.header_len..h.total_len];
        fold(sum(
            t,
            pseudo_sum(&p[12..16], &p[16..20], PROTO_TCP, t.len()),
        )) == 0xffff
    }

    /// The plain big-endian 16-bit word sum.
    fn sum_words_ref(d: &[u8]) -> u64 {
        d.chunks(2)
            .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    }

    #[test]
    fn sum_matches_the_reference_checksum() {
        let data: Vec<u8> = (0..1004u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in (0..40).chain([1000, 1001]) {
            for start in [0, 1, 3] {
                let d = &data[start..start + n];
                assert_eq!(!fold(sum(d, 0)), packet::checksum(d), "{n} {start}");
                assert_eq!(fold(sum(d, 0xfffe)), fold(sum_words_ref(d) + 0xfffe));
            }
        }
        // All ones: the sum stays 0xffff, never becomes 0.
        assert_eq!(fold(sum(&[0xff; 64], 0)), 0xffff);
        assert_eq!(fold(sum(&[0; 64], 0)), 0);
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1420,
            csum_start: 20,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }

    #[test]
    fn partial_checksum_is_completed() {
        let mut p = tcp_packet(1, TCP_ACK, b"hello world", &[]);
        // Replace the checksum by the pseudo-header's sum, as the kernel does.
        let tl = p.len() - 20;
        let ps = fold(pseudo_sum(&p[12..16], &p[16..20], PROTO_TCP, tl));
        p[36..38].copy_from_slice(&ps.to_be_bytes());
        assert!(!tcp_valid(&p));
        assert!(complete_partial_csum(&mut p, 20, 16));
        assert!(tcp_valid(&p));
        assert!(!complete_partial_csum(&mut p, 20, 100));
    }

    #[test]
    fn segments_then_merges_back() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
        let big = tcp_packet(1000, TCP_ACK | TCP_PSH | 0x80, &payload, &opts);
        let mut out = vec![0u8; 20_000];
        let s = segment_tcp4(&big, 1388, &mut out).unwrap();
        assert_eq!(s.count, 8);
        assert_eq!(s.seg_len, 20 + 32 + 1388);
        assert_eq!(s.total, 8 * 52 + 10_000);
        let mut segs = Vec::new();
        for (i, r) in s.ranges().enumerate() {
            let seg = &out[r];
            let h = packet::parse(seg).unwrap();
            assert_eq!(h.total_len, seg.len());
            assert!(tcp_valid(seg), "segment {i}");
            let seq = u32::from_be_bytes(seg[24..28].try_into().unwrap());
            assert_eq!(seq, 1000 + 1388 * i as u32);
            let flags = seg[33];
            assert_eq!(flags & TCP_PSH != 0, i + 1 == s.count);
            assert_eq!(flags & 0x80 != 0, i == 0);
            segs.push(seg.to_vec());
        }
        // Headers only: the same headers, the payload left where it is.
        let mut hout = vec![0u8; 8 * 52];
        let (hs, hl) = segment_tcp4_headers(&big, 1388, &mut hout).unwrap();
        assert_eq!((hs, hl), (s, 52));
        for (i, seg) in segs.iter().enumerate() {
            assert_eq!(&hout[i * 52..(i + 1) * 52], &seg[..52], "segment {i}");
            let p = &big[52 + i * 1388..(52 + (i + 1) * 1388).min(big.len())];
            assert_eq!(&seg[52..], p);
        }
        assert_eq!(segment_tcp4_headers(&big, 1388, &mut hout[..7 * 52]), None);
        // Merge them back (without the CWR of the first, which is not mergeable).
        let mut buf = Vec::new();
        let mut c = Coalescer::new();
        segs[0][33] &= !0x80;
        for seg in &segs {
            let off = buf.len();
            buf.extend_from_slice(seg);
            let h = packet::parse(seg).unwrap();
            assert!(c.push(&buf, off, &h));
        }
        assert_eq!(c.writes(), &[Write::Merged { run: 0 }]);
        assert_eq!(c.run_len(0), 8);
        let mut hdr = [0u8; 128];
        let n = c.render(0, &buf, &mut hdr).unwrap();
        let v = VnetHdr::parse(&hdr).unwrap();
        assert_eq!((v.gso_type, v.gso_size, v.hdr_len), (GSO_TCPV4, 1388, 52));
        let mut merged = hdr[VNET_HDR_LEN..n].to_vec();
        for (off, len) in c.run_packets(0) {
            merged.extend_from_slice(&buf[off + 52..off + len]);
        }
        // Completing the partial checksum gives the original super-packet
        // (less the CWR flag).
        assert!(complete_partial_csum(&mut merged, 20, 16));
        let expect = tcp_packet(1000, TCP_ACK | TCP_PSH, &payload, &opts);
        assert!(merged == expect, "merged super-packet differs");
        assert!(packet::parse(&merged).is_ok());
    }

    #[test]
    fn runs_break_on_gaps_flags_and_other_flows() {
        let mut buf = Vec::new();
        let mut c = Coalescer::new();
        let mut add = |p: Vec<u8>, c: &mut Coalescer| {
            let off = buf.len();
            buf.extend_from_slice(&p);
            let h = packet::parse(&p).unwrap();
            assert!(c.push(&buf, off, &h));
        };
        add(tcp_packet(0, TCP_ACK, &[1; 100], &[]), &mut c);
        add(tcp_packet(100, TCP_ACK, &[1; 100], &[]), &mut c);
        add(tcp_packet(300, TCP_ACK, &[1; 100], &[]), &mut c); // gap: new run
        add(tcp_packet(400, TCP_ACK | 0x01, &[1; 100], &[]), &mut c); // FIN: single
        add(tcp_packet(500, TCP_ACK, &[1; 50], &[]), &mut c);
        add(tcp_packet(550, TCP_ACK, &[1; 60], &[]), &mut c); // longer than the first: new
        add(tcp_packet(610, TCP_ACK | TCP_PSH, &[1; 60], &[]), &mut c);
        add(tcp_packet(670, TCP_ACK, &[1; 60], &[]), &mut c); // after PSH: new run
        assert_eq!(
            c.writes(),
            &[
                Write::Merged { run: 0 },
                Write::Merged { run: 1 },
                Write::Single(3),
                Write::Merged { run: 2 },
                Write::Merged { run: 3 },
                Write::Merged { run: 4 },
            ]
        );
        assert_eq!(
            (0..5).map(|r| c.run_len(r)).collect::<Vec<_>>(),
            vec![2, 1, 1, 2, 1]
        );
    }

    /// Arbitrary bytes never make segmentation or coalescing panic.
    #[test]
    fn never_panics_on_garbage() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut out = vec![0u8; 1 << 17];
        for i in 0..50_000 {
            let mut p = tcp_packet(
                next() as u32,
                (next() as u8) | TCP_ACK,
                &vec![7; (next() % 3000) as usize],
                &[],
            );
            for _ in 0..(next() % 4) {
                let j = (next() as usize) % p.len();
                p[j] = next() as u8;
            }
            let mss = (next() % 2000) as usize;
            let a = segment_tcp4(&p, mss, &mut out);
            let b = segment_tcp4_headers(&p, mss, &mut out).map(|x| x.0);
            assert_eq!(a, b);
            let _ = complete_partial_csum(&mut p, (next() % 100) as usize, (next() % 40) as usize);
            if let Ok(h) = packet::parse(&p) {
                let mut c = Coalescer::new();
                assert!(c.push(&p, 0, &h));
                assert!(c.push(&p, 0, &h));
                for w in c.writes().to_vec() {
                    if let Write::Merged { run } = w {
                        if c.run_len(run) > 1 {
                            let mut hdr = [0u8; 128];
                            c.render(run, &p, &mut hdr);
                        }
                    }
                }
            }
            let _ = i;
        }
    }

    /// The packet that stopped the overlay (issue 9): a valid IPv4 header
    /// and 13 bytes of TCP header, so the flags byte (13) is missing.
    #[test]
    fn a_33_byte_tcp_packet_is_not_merged_and_does_not_panic() {
        let mut p = tcp_packet(1, TCP_ACK, b"", &[]);
        p.truncate(33);
        p[2..4].copy_from_slice(&33u16.to_be_bytes());
        p[10..12].fill(0);
        let c = packet::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let h = packet::parse(&p).unwrap();
        assert_eq!((h.total_len, h.protocol), (33, PROTO_TCP));
        assert!(mergeable(&p, &h).is_none());
        let mut c = Coalescer::new();
        assert!(c.push(&p, 0, &h));
        assert_eq!(c.writes(), &[Write::Single(0)]);
        assert_eq!(segment_tcp4(&p, 1000, &mut [0u8; 4096]), None);
        // A lying header (its length beyond the buffer) is refused, not read.
        assert!(!c.push(&p[..30], 0, &h));
        assert!(!c.push(&p, usize::MAX, &h));
    }
}
