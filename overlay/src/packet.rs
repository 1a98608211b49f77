//! IPv4 packets as the overlay sees them: validation of the header, the
//! addresses, the TTL decrement a router makes (with the incremental checksum
//! update of RFC 1624) and the ICMP errors the daemon sends back.
//!
//! Everything here works on byte slices, never allocates and never panics,
//! whatever the bytes (a fuzz-style test below feeds it hundreds of thousands
//! of random and mutated buffers).

use crate::checksum::fold;
use std::net::Ipv4Addr;

/// The length of an IPv4 header without options.
pub const IPV4_MIN_HEADER: usize = 20;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// ICMP destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP destination unreachable, code: network unreachable.
pub const ICMP_NET_UNREACH: u8 = 0;
/// ICMP time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP time exceeded, code: TTL exceeded in transit.
pub const ICMP_EXC_TTL: u8 = 0;
/// The TTL of the ICMP errors the daemon originates.
pub const ICMP_TTL: u8 = 64;
/// The most an ICMP error built here takes: IP header + ICMP header + the
/// quoted header (options included) + 8 bytes.
pub const ICMP_ERROR_MAX: usize = IPV4_MIN_HEADER + 8 + 60 + 8;

/// Why bytes are not an acceptable IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Fewer bytes than the smallest IPv4 header (IPv6 or anything else with
    /// a short buffer included).
    #[error("shorter than an IPv4 header ({0} bytes)")]
    Truncated(usize),
    /// The version field is not 4.
    #[error("IP version {0}, not 4")]
    NotIpv4(u8),
    /// The header length field is below 5 words or beyond the buffer.
    #[error("header length {0} bytes is invalid")]
    HeaderLength(usize),
    /// The total length field is shorter than the header or longer than the
    /// bytes at hand.
    #[error("total length {total} does not fit {available} bytes")]
    TotalLength {
        /// The total length field.
        total: usize,
        /// The bytes at hand.
        available: usize,
    },
    /// The header checksum does not verify.
    #[error("bad header checksum")]
    Checksum,
}

/// The facts of a valid IPv4 packet's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// The source address.
    pub src: Ipv4Addr,
    /// The destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// The payload's protocol.
    pub protocol: u8,
    /// The header's length in bytes (20 to 60).
    pub header_len: usize,
    /// The packet's length in bytes per its header (bytes after it in the
    /// buffer are not part of the packet).
    pub total_len: usize,
    /// The fragment offset in 8-byte units (0 for unfragmented packets and
    /// first fragments).
    pub fragment_offset: u16,
}

impl Ipv4Header {
    /// The destination as a host-order integer.
    pub fn dst_u32(&self) -> u32 {
        u32::from(self.dst)
    }
}

/// `N` bytes of `buf` from offset `at`, or `None` when they are not all
/// there: the checked way to read a header (constant indexes into the array
/// it returns cannot fail).
#[inline]
pub fn bytes<const N: usize>(buf: &[u8], at: usize) -> Option<&[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// [`bytes`], writable.
#[inline]
pub fn bytes_mut<const N: usize>(buf: &mut [u8], at: usize) -> Option<&mut [u8; N]> {
    buf.get_mut(at..at.checked_add(N)?)?.try_into().ok()
}

/// The IP version of a packet (the high nibble of its first byte).
#[inline]
pub fn version(buf: &[u8]) -> Option<u8> {
    buf.first().map(|b| b >> 4)
}

/// Validates an IPv4 header: version 4, header length at least 20 bytes and
/// inside the buffer, total length covering the header and not beyond the
/// buffer, and a correct header checksum.
#[inline]
pub fn parse(buf: &[u8]) -> Result<Ipv4Header, Malformed> {
    let Some(first) = buf.first() else {
        return Err(Malformed::Truncated(0));
    };
    let version = first >> 4;
    if version != 4 {
        return Err(Malformed::NotIpv4(version));
    }
    let Some(b) = bytes::<IPV4_MIN_HEADER>(buf, 0) else {
        return Err(Malformed::Truncated(buf.len()));
    };
    let header_len = usize::from(b[0] & 0x0f) * 4;
    let header = match buf.get(..header_len) {
        Some(h) if header_len >= IPV4_MIN_HEADER => h,
        _ => return Err(Malformed::HeaderLength(header_len)),
    };
    let total_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if total_len < header_len || total_len > buf.len() {
        return Err(Malformed::TotalLength {
            total: total_len,
            available: buf.len(),
        });
    }
    if checksum(header) != 0 {
        return Err(Malformed::Checksum);
    }
    Ok(Ipv4Header {
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        ttl: b[8],
        protocol: b[9],
        header_len,
        total_len,
        fragment_offset: u16::from_be_bytes([b[6], b[7]]) & 0x1fff,
    })
}

/// The ones' complement sum of `data` as 16-bit big-endian words (an odd last
/// byte padded with zero), added to `initial`, not yet folded.
#[inline]
fn sum_words(data: &[u8], initial: u32) -> u64 {
    let mut sum = u64::from(initial);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// The Internet checksum (RFC 1071) of `data`: 0 when `data` includes a
/// correct checksum field.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// Decrements the TTL of a packet that [`parse`] accepted, updating the
/// header checksum incrementally (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`
/// over the 16-bit word holding TTL and protocol). Returns the new TTL, or
/// `None` (leaving the packet unchanged) when the TTL is 0 or 1 (a router
/// must then drop the packet) or the buffer is shorter than a header.
#[inline]
pub fn decrement_ttl(buf: &mut [u8]) -> Option<u8> {
    let b = bytes_mut::<IPV4_MIN_HEADER>(buf, 0)?;
    if b[8] <= 1 {
        return None;
    }
    let old_word = u16::from_be_bytes([b[8], b[9]]);
    let new_ttl = b[8] - 1;
    let new_word = u16::from_be_bytes([new_ttl, b[9]]);
    let old_check = u16::from_be_bytes([b[10], b[11]]);
    let sum = u64::from(!old_check) + u64::from(!old_word) + u64::from(new_word);
    let [c0, c1] = (!fold(sum)).to_be_bytes();
    b[8] = new_ttl;
    b[10] = c0;
    b[11] = c1;
    Some(new_ttl)
}

fn never_answered(addr: Ipv4Addr) -> bool {
    addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback()
}

/// A 20-byte IPv4 header without options, its checksum computed.
#[allow(clippy::too_many_arguments)]
fn ipv4_header(
    tos: u8,
    total: u16,
    flags_fragment: u16,
    ttl: u8,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> [u8; IPV4_MIN_HEADER] {
    let mut h = [0u8; IPV4_MIN_HEADER];
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[6..8].copy_from_slice(&flags_fragment.to_be_bytes());
    h[8] = ttl;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// Builds into `out` an ICMP error of `icmp_type`/`code` from `src` to the
/// sender of `orig`, quoting `orig`'s header and the first 8 bytes of its
/// payload (RFC 792). Returns the length written, or `None` when no error may
/// be sent (RFC 1122 3.2.2 and RFC 1812 4.3.2.7): `orig` is not a valid IPv4
/// packet, is a non-first fragment, comes from an unspecified, broadcast,
/// multicast or loopback address, goes to a broadcast or multicast address,
/// is itself an ICMP error (or an ICMP message too short to tell), or `out`
/// is shorter than [`ICMP_ERROR_MAX`].
pub fn icmp_error(
    orig: &[u8],
    src: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    out: &mut [u8],
) -> Option<usize> {
    let h = parse(orig).ok()?;
    if h.fragment_offset != 0
        || never_answered(h.src)
        || h.dst.is_broadcast()
        || h.dst.is_multicast()
    {
        return None;
    }
    if h.protocol == PROTO_ICMP {
        // Only informational messages (echo, timestamp, ...) get errors.
        let t = *orig.get(h.header_len)?;
        if !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) {
            return None;
        }
    }
    if out.len() < ICMP_ERROR_MAX {
        return None;
    }
    let quoted = h.header_len + h.total_len.saturating_sub(h.header_len).min(8);
    let quote = orig.get(..quoted)?;
    let total = IPV4_MIN_HEADER + 8 + quoted;
    let (ip, icmp) = out
        .get_mut(..total)?
        .split_first_chunk_mut::<IPV4_MIN_HEADER>()?;
    // Precedence "internetwork control", as Linux sends errors.
    *ip = ipv4_header(0xc0, total as u16, 0, ICMP_TTL, PROTO_ICMP, src, h.src);
    // The ICMP header and the quote.
    let (head, body) = icmp.split_first_chunk_mut::<8>()?;
    *head = [icmp_type, code, 0, 0, 0, 0, 0, 0];
    body.get_mut(..quote.len())?.copy_from_slice(quote);
    let c = checksum(icmp).to_be_bytes();
    icmp.get_mut(2..4)?.copy_from_slice(&c);
    Some(total)
}

/// [`icmp_error`] with type 3 code 0: destination (network) unreachable.
pub fn icmp_net_unreachable(orig: &[u8], src: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
    icmp_error(orig, src, ICMP_DEST_UNREACH, ICMP_NET_UNREACH, out)
}

/// [`icmp_error`] with type 11 code 0: TTL exceeded in transit.
pub fn icmp_time_exceeded(orig: &[u8], src: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
    icmp_error(orig, src, ICMP_TIME_EXCEEDED, ICMP_EXC_TTL, out)
}

/// Builds a valid IPv4 packet (for tests and tools): a 20-byte header with
/// the given fields and checksum (DF set), followed by `payload`. Returns the
/// length, or `None` if `out` is too short or the packet longer than 65535
/// bytes.
pub fn build_ipv4(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    payload: &[u8],
) -> Option<usize> {
    let total = IPV4_MIN_HEADER + payload.len();
    let total16 = u16::try_from(total).ok()?;
    let (ip, rest) = out
        .get_mut(..total)?
        .split_first_chunk_mut::<IPV4_MIN_HEADER>()?;
    *ip = ipv4_header(0, total16, 0x4000, ttl, protocol, src, dst);
    rest.copy_from_slice(payload);
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz loops' generator.
    use crate::rng::SplitMix64 as Rng;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn udp_packet(len: usize, ttl: u8) -> Vec<u8> {
        let mut out = vec![0; IPV4_MIN_HEADER + len];
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        build_ipv4(
            &mut out,
            a("10.244.1.2"),
            a("10.244.2.3"),
            PROTO_UDP,
            ttl,
            &payload,
        )
        .unwrap();
        out
    }

    #[test]
    fn parses_a_valid_packet() {
        let p = udp_packet(12, 64);
        let h = parse(&p).unwrap();
        assert_eq!(h.src, a("10.244.1.2"));
        assert_eq!(h.dst, a("10.244.2.3"));
        assert_eq!(
            (h.ttl, h.protocol, h.header_len, h.total_len),
            (64, 17, 20, 32)
        );
        assert_eq!(h.fragment_offset, 0);
        assert_eq!(checksum(&p[..20]), 0);
    }

    #[test]
    fn a_known_checksum() {
        // The example header of RFC 1071's common use (Wikipedia's): 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
    }

    #[test]
    fn rejects_each_kind_of_malformed() {
        let p = udp_packet(12, 64);
        assert_eq!(parse(&[]), Err(Malformed::Truncated(0)));
        assert_eq!(parse(&p[..19]), Err(Malformed::Truncated(19)));
        let mut v6 = p.clone();
        v6[0] = 0x60;
        assert_eq!(parse(&v6), Err(Malformed::NotIpv4(6)));
        let mut ihl = p.clone();
        ihl[0] = 0x44;
        assert_eq!(parse(&ihl), Err(Malformed::HeaderLength(16)));
        let mut ihl = p.clone();
        ihl[0] = 0x4f;
        assert_eq!(parse(&ihl), Err(Malformed::HeaderLength(60)));
        assert!(matches!(
            parse(&p[..31]),
            Err(Malformed::TotalLength { .. })
        ));
        let mut bad = p.clone();
        bad[15] ^= 1;
        assert_eq!(parse(&bad), Err(Malformed::Checksum));
        // Bytes after the packet are not part of it.
        let mut long = p.clone();
        long.extend_from_slice(&[0; 10]);
        assert_eq!(parse(&long).unwrap().total_len, 32);
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        for ttl in 0..=255u8 {
            for proto in [0u8, 1, 6, 17, 255] {
                let mut p = udp_packet(4, ttl);
                p[9] = proto;
                p[10..12].fill(0);
                let c = checksum(&p[..20]);
                p[10..12].copy_from_slice(&c.to_be_bytes());
                let r = decrement_ttl(&mut p);
                if ttl <= 1 {
                    assert_eq!(r, None);
                    assert_eq!(p[8], ttl);
                } else {
                    assert_eq!(r, Some(ttl - 1));
                    assert_eq!(checksum(&p[..20]), 0, "ttl {ttl} proto {proto}");
                    // Same as computing it from scratch.
                    let mut q = p.clone();
                    q[10..12].fill(0);
                    let full = checksum(&q[..20]);
                    assert_eq!(u16::from_be_bytes([p[10], p[11]]), full);
                }
            }
        }
    }

    #[test]
    fn icmp_unreachable_quotes_header_and_8_bytes() {
        let p = udp_packet(100, 63);
        let mut out = [0u8; ICMP_ERROR_MAX];
        let n = icmp_net_unreachable(&p, a("10.244.0.0"), &mut out).unwrap();
        assert_eq!(n, 20 + 8 + 20 + 8);
        let h = parse(&out[..n]).unwrap();
        assert_eq!(
            (h.src, h.dst, h.protocol),
            (a("10.244.0.0"), a("10.244.1.2"), 1)
        );
        assert_eq!(&out[20..22], &[3, 0]);
        assert_eq!(checksum(&out[20..n]), 0);
        assert_eq!(&out[28..n], &p[..28]);
        // A short payload is quoted whole.
        let p = udp_packet(3, 63);
        let n = icmp_time_exceeded(&p, a("10.244.0.0"), &mut out).unwrap();
        assert_eq!(n, 20 + 8 + 23);
        assert_eq!(&out[20..22], &[11, 0]);
        assert_eq!(checksum(&out[20..n]), 0);
    }

    #[test]
    fn no_icmp_errors_about_errors_broadcasts_or_fragments() {
        let mut out = [0u8; ICMP_ERROR_MAX];
        let src = a("10.244.0.0");
        // An ICMP error about an ICMP error: no.
        let p = udp_packet(8, 64);
        let n = icmp_net_unreachable(&p, src, &mut out).unwrap();
        let err = out[..n].to_vec();
        assert_eq!(icmp_net_unreachable(&err, src, &mut out), None);
        // About an echo request: yes.
        let mut echo = vec![0u8; 28];
        build_ipv4(
            &mut echo,
            a("10.244.1.2"),
            a("10.244.9.9"),
            PROTO_ICMP,
            64,
            &[8, 0, 0, 0, 0, 0, 0, 0],
        )
        .unwrap();
        assert!(icmp_net_unreachable(&echo, src, &mut out).is_some());
        // Multicast destination, broadcast source, later fragments: no.
        let mut m = vec![0u8; 28];
        build_ipv4(
            &mut m,
            a("10.244.1.2"),
            a("239.1.1.1"),
            PROTO_UDP,
            64,
            &[0; 8],
        )
        .unwrap();
        assert_eq!(icmp_net_unreachable(&m, src, &mut out), None);
        build_ipv4(
            &mut m,
            a("255.255.255.255"),
            a("10.244.9.9"),
            PROTO_UDP,
            64,
            &[0; 8],
        )
        .unwrap();
        assert_eq!(icmp_net_unreachable(&m, src, &mut out), None);
        build_ipv4(
            &mut m,
            a("10.244.1.2"),
            a("10.244.9.9"),
            PROTO_UDP,
            64,
            &[0; 8],
        )
        .unwrap();
        m[6..8].copy_from_slice(&0x2001u16.to_be_bytes());
        m[10..12].fill(0);
        let c = checksum(&m[..20]);
        m[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(icmp_net_unreachable(&m, src, &mut out), None);
        // Too small an output buffer: no.
        assert_eq!(icmp_net_unreachable(&p, src, &mut out[..40]), None);
    }

    /// Fuzz-style property: 200k random buffers and 200k mutations of valid
    /// packets never make the decoder, the TTL decrement or the ICMP builder
    /// panic; whatever is accepted satisfies the invariants, and random bytes
    /// are (almost always) rejected.
    #[test]
    fn decoder_never_panics_and_rejects_garbage() {
        let mut rng = Rng::new(0x005e_ed0f_0e1a_u64);
        let mut buf = vec![0u8; 2048];
        let mut out = [0u8; ICMP_ERROR_MAX];
        let mut accepted_random = 0;
        for _ in 0..200_000 {
            let cap = if rng.below(4) == 0 { 2048 } else { 80 };
            let len = rng.below(cap);
            for b in &mut buf[..len] {
                *b = rng.next_u64() as u8;
            }
            // Bias a quarter of them to look like IPv4 so deeper checks run.
            if len > 0 && rng.below(4) == 0 {
                buf[0] = 0x40 | (buf[0] & 0x0f);
            }
            let pkt = &mut buf[..len];
            if let Ok(h) = parse(pkt) {
                accepted_random += 1;
                assert!(h.header_len >= 20 && h.header_len <= h.total_len && h.total_len <= len);
                assert_eq!(checksum(&pkt[..h.header_len]), 0);
            }
            let _ = icmp_net_unreachable(pkt, Ipv4Addr::new(10, 244, 0, 0), &mut out);
            let _ = decrement_ttl(pkt);
        }
        // A random header passes the checksum about once in 65536 tries.
        assert!(
            accepted_random < 20,
            "{accepted_random} random buffers accepted"
        );

        let mut rejected = 0;
        for i in 0..200_000 {
            let mut p = udp_packet(rng.below(200), 1 + rng.below(255) as u8);
            // 1 to 4 mutations: flipped bits, changed bytes, truncation, extension.
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 => {
                        let j = rng.below(p.len());
                        p[j] ^= 1 << rng.below(8);
                    }
                    1 => {
                        let j = rng.below(24.min(p.len()));
                        p[j] = rng.next_u64() as u8;
                    }
                    2 => {
                        let n = rng.below(p.len() + 1);
                        p.truncate(n);
                    }
                    _ => p.extend((0..rng.below(16)).map(|_| rng.next_u64() as u8)),
                }
                if p.is_empty() {
                    break;
                }
            }
            match parse(&p) {
                Ok(h) => {
                    assert!(h.total_len <= p.len() && h.header_len >= 20);
                    assert_eq!(checksum(&p[..h.header_len]), 0, "case {i}");
                    if let Some(n) =
                        icmp_net_unreachable(&p, Ipv4Addr::new(10, 244, 0, 0), &mut out)
                    {
                        assert!(parse(&out[..n]).is_ok());
                        assert_eq!(checksum(&out[20..n]), 0);
                    }
                    let ttl = h.ttl;
                    if decrement_ttl(&mut p).is_some() {
                        let h2 = parse(&p).expect("still valid after the TTL decrement");
                        assert_eq!(h2.ttl, ttl - 1);
                    }
                }
                Err(_) => rejected += 1,
            }
        }
        assert!(
            rejected > 100_000,
            "only {rejected} mutated packets rejected"
        );
    }
}
