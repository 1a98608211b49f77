//! Deterministic, seeded fuzzing of every function of the overlay that
//! parses or rewrites packet bytes, run by `cargo test` in a few seconds:
//! the decoder, the TTL rewrite, ICMP error generation, the virtio-net header
//! and partial checksums, segmentation (and the split of its segments into
//! UDP GSO messages), the coalescer and the impairment engine.
//!
//! Inputs are random buffers and mutations of valid packets: flipped bits,
//! hostile header fields (IHL, total length, TCP data offset, flags) with the
//! IP checksum made right again so that the deeper code runs, truncated
//! valid packets (the IP header fixed up to the shorter length, as the
//! 33-byte TCP packet of issue 9), extensions, and super-packets whose
//! virtio-net header lies. Each target asserts that nothing panics and what
//! the function promises: lengths within the buffers, valid checksums where
//! it produces them, the bytes it must keep.

use overlay::gso::{self, Coalescer, Segments, VnetHdr, Write};
use overlay::impair::{Fate, Impairer, Impairment, SplitMix64, PPM};
use overlay::packet::{self, IPV4_MIN_HEADER, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use std::net::Ipv4Addr;
use std::time::Instant;

/// Iterations per target: enough to reach every branch, few enough for CI
/// (about a second per target in a debug build).
const ROUNDS: usize = 20_000;

struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const DST: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 3);

/// Recomputes the IP header checksum (if the header length allows).
fn fix_ip_checksum(p: &mut [u8]) {
    let ihl = usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4;
    if p.len() < IPV4_MIN_HEADER || ihl < IPV4_MIN_HEADER || ihl > p.len() {
        return;
    }
    p[10..12].fill(0);
    let c = packet::checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Sets the total length field to the buffer's length, and the checksum.
fn fix_lengths(p: &mut [u8]) {
    if p.len() >= IPV4_MIN_HEADER {
        let n = p.len().min(65535) as u16;
        p[2..4].copy_from_slice(&n.to_be_bytes());
        fix_ip_checksum(p);
    }
}

/// The TCP checksum over the pseudo-header is right.
fn tcp_valid(p: &[u8]) -> bool {
    let h = packet::parse(p).unwrap();
    let t = &p[h.header_len..h.total_len];
    gso::fold(gso::sum(
        t,
        gso::pseudo_sum(&p[12..16], &p[16..20], PROTO_TCP, t.len()),
    )) == 0xffff
}

/// A valid TCP/IPv4 packet: IP options, TCP options and payload of random
/// lengths, random flags, a correct TCP checksum.
fn tcp_packet(rng: &mut Rng, payload_max: usize) -> Vec<u8> {
    let ip_opts = if rng.chance(4) { 4 * rng.below(3) } else { 0 };
    let tcp_opts = 4 * rng.below(4);
    let payload = rng.below(payload_max + 1);
    let ihl = 20 + ip_opts;
    let doff = 20 + tcp_opts;
    let mut p = vec![0u8; ihl + doff + payload];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[6] = if rng.chance(2) { 0x40 } else { 0 };
    p[8] = 1 + rng.byte() % 255;
    p[9] = PROTO_TCP;
    p[12..16].copy_from_slice(&SRC.octets());
    p[16..20].copy_from_slice(&DST.octets());
    for b in &mut p[20..ihl] {
        *b = 1; // NOP options
    }
    let t = &mut p[ihl..];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5001u16.to_be_bytes());
    let seq = rng.next() as u32;
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = ((doff / 4) as u8) << 4;
    t[13] = if rng.chance(2) { 0x10 } else { rng.byte() };
    for b in &mut t[doff..] {
        *b = rng.byte();
    }
    let c = !gso::fold(gso::sum(
        t,
        gso::pseudo_sum(&SRC.octets(), &DST.octets(), PROTO_TCP, t.len()),
    ));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    fix_lengths(&mut p);
    p
}

/// A valid UDP or ICMP packet.
fn other_packet(rng: &mut Rng) -> Vec<u8> {
    let proto = if rng.chance(2) { PROTO_UDP } else { PROTO_ICMP };
    let mut payload: Vec<u8> = (0..rng.below(100)).map(|_| rng.byte()).collect();
    if proto == PROTO_ICMP && !payload.is_empty() {
        payload[0] = [0, 3, 8, 11, 13][rng.below(5)];
    }
    let mut out = vec![0u8; 20 + payload.len()];
    packet::build_ipv4(&mut out, SRC, DST, proto, 1 + rng.byte() % 255, &payload).unwrap();
    out
}

/// 1 to 4 mutations of a packet; about half keep its IP header valid.
fn mutate(rng: &mut Rng, p: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if p.is_empty() {
            return;
        }
        match rng.below(8) {
            0 => {
                let j = rng.below(p.len());
                p[j] ^= 1 << rng.below(8);
            }
            // A hostile header field, checksum made right.
            1 => {
                let field = [0usize, 2, 3, 6, 9, 32, 33, 46][rng.below(8)];
                if let Some(b) = p.get_mut(field) {
                    *b = rng.byte();
                }
                fix_ip_checksum(p);
            }
            // The IP header length alone, made consistent.
            2 => {
                p[0] = 0x40 | (rng.byte() & 0x0f);
                fix_ip_checksum(p);
            }
            // A truncated valid packet: the header says the shorter length.
            3 => {
                let n = IPV4_MIN_HEADER.min(p.len()) + rng.below(p.len() + 1);
                p.truncate(n.min(p.len()));
                fix_lengths(p);
            }
            // Truncated bytes, header unchanged (it now lies).
            4 => {
                let n = rng.below(p.len() + 1);
                p.truncate(n);
            }
            5 => {
                for _ in 0..rng.below(16) {
                    p.push(rng.byte());
                }
            }
            // The TCP data offset, anything.
            6 => {
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if let Some(b) = p.get_mut(ihl + 12) {
                    *b = rng.byte();
                }
            }
            _ => {
                let j = rng.below(p.len());
                p[j] = rng.byte();
                fix_ip_checksum(p);
            }
        }
    }
}

/// A random input: garbage, or a valid packet, mutated or not.
fn input(rng: &mut Rng, payload_max: usize) -> Vec<u8> {
    match rng.below(6) {
        0 => {
            let mut p: Vec<u8> = (0..rng.below(120)).map(|_| rng.byte()).collect();
            if let Some(b) = p.first_mut() {
                *b = 0x40 | (*b & 0x0f);
            }
            p
        }
        1 => other_packet(rng),
        2 => tcp_packet(rng, payload_max),
        _ => {
            let mut p = if rng.chance(3) {
                other_packet(rng)
            } else {
                tcp_packet(rng, payload_max)
            };
            mutate(rng, &mut p);
            p
        }
    }
}

/// The packet that stopped the overlay (issue 9): a valid 20-byte IPv4
/// header with total length 33 and 13 bytes of TCP header.
fn the_33_byte_packet() -> Vec<u8> {
    let mut p = vec![0u8; 33];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&33u16.to_be_bytes());
    p[8] = 64;
    p[9] = PROTO_TCP;
    p[12..16].copy_from_slice(&SRC.octets());
    p[16..20].copy_from_slice(&DST.octets());
    p[32] = 0x50; // data offset 5, and no byte 13 for the flags
    fix_ip_checksum(&mut p);
    p
}

fn report(target: &str, rounds: usize, started: Instant) {
    eprintln!("fuzz {target}: {rounds} inputs in {:?}", started.elapsed());
}

#[test]
fn the_33_byte_tcp_packet_goes_through_every_function() {
    let p = the_33_byte_packet();
    let h = packet::parse(&p).expect("a valid IPv4 header");
    assert_eq!((h.total_len, h.protocol), (33, PROTO_TCP));
    let mut c = Coalescer::new();
    assert!(c.push(&p, 0, &h));
    assert_eq!(c.writes(), &[Write::Single(0)]);
    let mut out = vec![0u8; 4096];
    assert_eq!(gso::segment_tcp4(&p, 1400, &mut out), None);
    assert_eq!(gso::segment_tcp4_headers(&p, 1400, &mut out), None);
    let mut icmp = [0u8; packet::ICMP_ERROR_MAX];
    let n = packet::icmp_net_unreachable(&p, Ipv4Addr::new(10, 244, 0, 0), &mut icmp).unwrap();
    assert_eq!(&icmp[28..n], &p[..28]);
    let mut q = p.clone();
    assert_eq!(packet::decrement_ttl(&mut q), Some(63));
    assert!(packet::parse(&q).is_ok());
    // Every shorter TCP header too.
    for len in 20..60 {
        let mut p = the_33_byte_packet();
        p.resize(len, 0x50);
        fix_lengths(&mut p);
        let h = packet::parse(&p).unwrap();
        let mut c = Coalescer::new();
        assert!(c.push(&p, 0, &h));
        let _ = gso::segment_tcp4(&p, 1, &mut out);
    }
}

/// The decoder accepts only what satisfies its promises; the TTL rewrite
/// keeps a valid packet valid; ICMP errors are valid and quote the packet.
#[test]
fn decoder_ttl_and_icmp_errors() {
    let started = Instant::now();
    let mut rng = Rng::new(0x0de_c0de);
    let mut out = [0u8; packet::ICMP_ERROR_MAX + 16];
    let (mut accepted, mut errors) = (0, 0);
    for _ in 0..5 * ROUNDS {
        let mut p = input(&mut rng, 300);
        let parsed = packet::parse(&p);
        let src = Ipv4Addr::new(10, 244, 0, 0);
        let (icmp_type, code) = [(3, 0), (11, 0), (rng.byte(), rng.byte())][rng.below(3)];
        let out_len = [out.len(), packet::ICMP_ERROR_MAX, rng.below(out.len())][rng.below(3)];
        let icmp = packet::icmp_error(&p, src, icmp_type, code, &mut out[..out_len]);
        let Ok(h) = parsed else {
            assert_eq!(icmp, None, "no error about an invalid packet");
            continue;
        };
        accepted += 1;
        assert!(h.header_len >= 20 && h.header_len <= h.total_len && h.total_len <= p.len());
        assert_eq!(packet::checksum(&p[..h.header_len]), 0);
        if let Some(n) = icmp {
            errors += 1;
            assert!(n <= packet::ICMP_ERROR_MAX && n <= out_len);
            let e = packet::parse(&out[..n]).expect("the error is a valid packet");
            assert_eq!((e.total_len, e.protocol, e.dst), (n, PROTO_ICMP, h.src));
            assert_eq!(packet::checksum(&out[20..n]), 0, "ICMP checksum");
            assert_eq!(&out[20..22], &[icmp_type, code]);
            let quoted = h.header_len + (h.total_len - h.header_len).min(8);
            assert_eq!(&out[28..n], &p[..quoted]);
            if h.protocol == PROTO_ICMP {
                assert!(
                    matches!(p[h.header_len], 0 | 8 | 13..=18),
                    "an error about an error"
                );
            }
        }
        let ttl = h.ttl;
        match packet::decrement_ttl(&mut p) {
            Some(t) => {
                assert_eq!(t, ttl - 1);
                assert_eq!(packet::parse(&p).unwrap().ttl, t);
            }
            None => assert!(ttl <= 1),
        }
    }
    assert!(
        accepted > ROUNDS / 4 && errors > ROUNDS / 20,
        "{accepted} {errors}"
    );
    report("decoder/ttl/icmp", 5 * ROUNDS, started);
}

/// Virtio-net headers and partial checksums with hostile offsets.
#[test]
fn vnet_headers_and_partial_checksums() {
    let started = Instant::now();
    let mut rng = Rng::new(0x7e7);
    for _ in 0..ROUNDS {
        let raw: Vec<u8> = (0..rng.below(14)).map(|_| rng.byte()).collect();
        match VnetHdr::parse(&raw) {
            Some(v) => {
                assert!(raw.len() >= gso::VNET_HDR_LEN);
                assert_eq!(&v.to_bytes()[..], &raw[..gso::VNET_HDR_LEN]);
            }
            None => assert!(raw.len() < gso::VNET_HDR_LEN),
        }
        let mut p = input(&mut rng, 200);
        let before = p.clone();
        let (start, offset) = match rng.below(3) {
            0 => (20, 16),
            1 => (rng.below(p.len() + 4), rng.below(40)),
            _ => (rng.next() as u16 as usize, rng.next() as u16 as usize),
        };
        if gso::complete_partial_csum(&mut p, start, offset) {
            assert!(start + offset + 2 <= p.len());
            assert_eq!(p.len(), before.len());
            // Only the field changed, and the covered bytes now sum right.
            assert_eq!(&p[..start + offset], &before[..start + offset]);
            assert_eq!(&p[start + offset + 2..], &before[start + offset + 2..]);
        } else {
            assert_eq!(p, before);
        }
    }
    report("vnet/csum", ROUNDS, started);
}

/// Checks that `segs` are the segments of `pkt` cut at `mss`: each a valid
/// packet with a valid TCP checksum, payloads in order and complete.
fn check_segments(pkt: &[u8], mss: usize, out: &[u8], s: Segments) {
    let h = packet::parse(pkt).unwrap();
    let ihl = h.header_len;
    let doff = usize::from(pkt[ihl + 12] >> 4) * 4;
    let hdrs = ihl + doff;
    let payload = &pkt[hdrs..h.total_len];
    assert_eq!(s.total, s.count * hdrs + payload.len());
    assert!(s.total <= out.len());
    let mut got = Vec::new();
    let mut end = 0;
    for (i, r) in s.ranges().enumerate() {
        end = r.end;
        let seg = &out[r];
        let sh = packet::parse(seg).expect("a valid segment");
        assert_eq!(sh.total_len, seg.len());
        assert!(tcp_valid(seg), "segment {i}");
        assert!(seg.len() - hdrs <= mss);
        got.extend_from_slice(&seg[hdrs..]);
    }
    assert_eq!(end, s.total);
    assert_eq!(got, payload);
}

/// Segmentation (copying and headers-only) and the split into UDP GSO
/// messages, on super-packets whose gso_size lies and on hostile packets.
#[test]
fn segmentation_and_gso_messages() {
    let started = Instant::now();
    let mut rng = Rng::new(0x5e9);
    let mut out = vec![0u8; 1 << 17];
    let mut hout = vec![0u8; 1 << 17];
    let mut cut = 0;
    for _ in 0..ROUNDS {
        let pkt = input(&mut rng, 9000);
        // gso_size as the kernel would give it, or lying.
        let mss = match rng.below(4) {
            0 => 1 + rng.below(1500),
            1 => rng.below(4),
            2 => rng.next() as u16 as usize,
            _ => 536 + rng.below(9000),
        };
        let room = if rng.chance(4) {
            rng.below(out.len())
        } else {
            out.len()
        };
        let copied = gso::segment_tcp4(&pkt, mss, &mut out[..room]);
        let headers = gso::segment_tcp4_headers(&pkt, mss, &mut hout[..room]);
        if let Some(s) = copied {
            cut += 1;
            check_segments(&pkt, mss, &out[..room], s);
            let (hs, hl) = headers.expect("headers fit where the segments did");
            assert_eq!(hs, s);
            for i in 0..s.count {
                let at = i * s.seg_len;
                assert_eq!(&hout[i * hl..(i + 1) * hl], &out[at..at + hl]);
            }
        }
        if let Some((s, hl)) = headers {
            assert!(s.count * hl <= room);
            let payload_len = s.total - s.count * hl;
            let max = [65_000, 1, 1500, rng.below(70_000)][rng.below(4)];
            let mut covered = 0;
            let mut heads = 0;
            for g in gso::gso_groups(s, hl, payload_len, max) {
                assert!(g.count >= 1 && g.count <= gso::MAX_SEGMENTS);
                assert_eq!(g.headers, heads..heads + g.count * hl);
                assert_eq!(g.payload.start, covered);
                assert!(g.payload.end <= payload_len);
                heads = g.headers.end;
                covered = g.payload.end;
            }
            assert_eq!((heads, covered), (s.count * hl, payload_len));
        }
        // Lying segment descriptions never give ranges outside the buffers.
        let liar = Segments {
            count: rng.below(100),
            seg_len: rng.below(3000),
            total: rng.below(100_000),
        };
        let (hl, pl) = (rng.below(100), rng.below(100_000));
        for g in gso::gso_groups(liar, hl, pl, 65_000) {
            assert!(g.headers.end <= liar.count * hl && g.payload.end <= pl);
            assert!(g.payload.start <= g.payload.end);
        }
    }
    assert!(cut > ROUNDS / 10, "only {cut} packets segmented");
    report("segmentation", ROUNDS, started);
}

/// Bursts of packets for the coalescer: segments of a few flows, in order or
/// not, mutated, with lying parsed headers and offsets.
#[test]
fn coalescer() {
    let started = Instant::now();
    let mut rng = Rng::new(0xc0a1);
    let (mut merged_runs, mut packets) = (0, 0);
    for _ in 0..ROUNDS / 10 {
        let mut buf = Vec::new();
        let mut c = Coalescer::new();
        let mut pushed = 0;
        let base = tcp_packet(&mut rng, 1400);
        let mut seq = u32::from_be_bytes(base[24..28].try_into().unwrap_or([0; 4]));
        for _ in 0..rng.below(80) {
            let mut p = if rng.chance(3) {
                input(&mut rng, 1400)
            } else {
                // The next in-order segment of one flow, often mergeable.
                let mut p = base.clone();
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if let Some(s) = p.get_mut(ihl + 4..ihl + 8) {
                    s.copy_from_slice(&seq.to_be_bytes());
                }
                if let Some(f) = p.get_mut(ihl + 13) {
                    *f = [0x10, 0x18, 0x10, 0x10][rng.below(4)];
                }
                fix_ip_checksum(&mut p);
                if rng.chance(8) {
                    mutate(&mut rng, &mut p);
                }
                seq = seq.wrapping_add(p.len().saturating_sub(ihl + 20) as u32);
                p
            };
            if rng.chance(20) {
                p.truncate(rng.below(p.len() + 1));
            }
            let off = buf.len();
            buf.extend_from_slice(&p);
            let Ok(h) = packet::parse(&p) else {
                // A header that lies about the packet: refused or handled.
                let fake = packet::parse(&base).unwrap();
                if c.push(&buf, off + rng.below(8), &fake) {
                    pushed += 1;
                }
                continue;
            };
            assert!(c.push(&buf, off, &h));
            pushed += 1;
        }
        // Every packet pushed comes out exactly once.
        let mut seen = Vec::new();
        let mut hdr = [0u8; gso::VNET_HDR_LEN + gso::MAX_HEADERS];
        for w in c.writes() {
            match *w {
                Write::Single(i) => seen.push(c.packet(i).unwrap()),
                Write::Merged { run } => {
                    let pkts: Vec<_> = c.run_packets(run).collect();
                    assert_eq!(pkts.len(), c.run_len(run));
                    seen.extend(&pkts);
                    if pkts.len() < 2 {
                        continue;
                    }
                    merged_runs += 1;
                    let n = c.render(run, &buf, &mut hdr).expect("renders");
                    let hl = c.run_hdrs(run);
                    let mut sp = hdr[gso::VNET_HDR_LEN..n].to_vec();
                    for (off, len) in &pkts {
                        sp.extend_from_slice(&buf[off + hl..off + len]);
                    }
                    assert!(sp.len() <= 65535);
                    assert!(gso::complete_partial_csum(&mut sp, 20, 16));
                    let h = packet::parse(&sp).expect("the super-packet is valid");
                    assert_eq!(h.total_len, sp.len());
                    assert!(tcp_valid(&sp));
                    let v = VnetHdr::parse(&hdr).unwrap();
                    assert_eq!(usize::from(v.hdr_len), hl);
                    // Rendering from another buffer is refused or harmless.
                    let _ = c.render(run, &buf[..buf.len() / 2], &mut hdr);
                    let _ = c.render(run, &buf, &mut hdr[..n - 1]);
                }
            }
        }
        assert_eq!(seen.len(), pushed);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), pushed, "a packet written twice");
        packets += pushed;
    }
    assert!(merged_runs > 100, "only {merged_runs} runs merged");
    report("coalescer (packets in 2,000 bursts)", packets, started);
}

/// The impairment engine, with any settings and times: a fate for every
/// packet, never before it arrived, one or two copies, the loss share's
/// extremes exact.
#[test]
fn impairment_engine() {
    let started = Instant::now();
    let mut rng = Rng::new(0x1a9);
    for _ in 0..ROUNDS / 10 {
        let any = |rng: &mut Rng| match rng.below(3) {
            0 => 0,
            1 => rng.next() % 100_000,
            _ => rng.next(),
        };
        let ppm = |rng: &mut Rng| [0, PPM / 10, PPM, u32::MAX][rng.below(4)];
        let cfg = Impairment {
            delay_us: any(&mut rng),
            jitter_us: any(&mut rng),
            loss_ppm: ppm(&mut rng),
            duplicate_ppm: ppm(&mut rng),
            reorder_ppm: ppm(&mut rng),
            rate_bps: any(&mut rng),
        };
        let mut e = Impairer::new(cfg.clone(), rng.next(), rng.next());
        let mut now = rng.next() >> rng.below(64);
        for k in 0..100 {
            if rng.chance(20) {
                let mut c = cfg.clone();
                c.rate_bps = any(&mut rng);
                e.set(c);
            }
            now = now.saturating_add(rng.next() >> rng.below(64).max(40));
            let len = [0, 1, 1500, 65535, usize::MAX][rng.below(5)];
            match e.admit(now, len) {
                Fate::Drop => assert!(e.config().loss_ppm > 0, "packet {k}"),
                Fate::Deliver { at_us, copies } => {
                    assert!(at_us >= now);
                    assert!(copies == 1 || copies == 2);
                    assert!(e.config().loss_ppm < PPM);
                }
            }
        }
        assert_eq!(e.packets(), 100);
    }
    report("impairment", ROUNDS * 10, started);
}
