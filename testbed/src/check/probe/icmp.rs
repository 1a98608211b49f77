//! The bytes of an `icmp` probe: the echo request it sends and the
//! recognition of what answers it (its echo reply, or a destination
//! unreachable quoting it) among every ICMP packet a raw socket sees in the
//! namespace. Pure, with checked access, since any host can send anything.

use overlay::packet::{bytes, checksum, PROTO_ICMP};

/// ICMP echo reply.
pub const ECHO_REPLY: u8 = 0;
/// ICMP destination unreachable.
pub const DEST_UNREACH: u8 = 3;
/// ICMP echo request.
pub const ECHO_REQUEST: u8 = 8;
/// The bytes of the token a request carries (and its reply echoes).
pub const TOKEN_LEN: usize = 8;
/// The length of a request: the 8-byte header and the token.
pub const REQUEST_LEN: usize = 8 + TOKEN_LEN;

/// Who an echo request is: what its answers must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    /// The identifier.
    pub id: u16,
    /// The sequence number.
    pub seq: u16,
    /// The payload, echoed by a reply.
    pub token: [u8; TOKEN_LEN],
}

/// What answered an echo request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Its echo reply.
    Reply,
    /// A destination unreachable (this code) quoting it.
    Unreachable(u8),
}

/// The echo request, checksum included.
pub fn request(e: &Echo) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0] = ECHO_REQUEST;
    b[4..6].copy_from_slice(&e.id.to_be_bytes());
    b[6..8].copy_from_slice(&e.seq.to_be_bytes());
    b[8..].copy_from_slice(&e.token);
    let sum = checksum(&b).to_be_bytes();
    b[2..4].copy_from_slice(&sum);
    b
}

/// What `packet` (an IPv4 packet as a raw ICMP socket reads it, header
/// included) says about echo request `e`, or `None` when it is about
/// something else or malformed.
pub fn answer(packet: &[u8], e: &Echo) -> Option<Answer> {
    let seen = identify(packet)?;
    let same = seen.id == e.id && seen.seq == e.seq;
    match seen.answer {
        Answer::Reply => (same && seen.token == Some(e.token)).then_some(Answer::Reply),
        unreachable => same.then_some(unreachable),
    }
}

/// Which echo request an answer is about: its identifier, sequence number
/// and (for a reply) the token it echoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identified {
    /// A reply or an unreachable.
    pub answer: Answer,
    /// The request's identifier.
    pub id: u16,
    /// The request's sequence number.
    pub seq: u16,
    /// The token a reply echoes (an unreachable's quote may cut it off).
    pub token: Option<[u8; TOKEN_LEN]>,
}

/// Which echo request `packet` (as for [`answer`]) answers, for senders
/// with many requests in flight; `None` for anything else or malformed.
pub fn identify(packet: &[u8]) -> Option<Identified> {
    let ip = overlay::packet::parse(packet).ok()?;
    if ip.protocol != PROTO_ICMP || ip.fragment_offset != 0 {
        return None;
    }
    let icmp = packet.get(ip.header_len..ip.total_len)?;
    if checksum(icmp) != 0 {
        return None;
    }
    let head = *bytes::<8>(icmp, 0)?;
    let (answer, ids, token) = match head[0] {
        ECHO_REPLY => (Answer::Reply, head, Some(*bytes::<TOKEN_LEN>(icmp, 8)?)),
        DEST_UNREACH => (Answer::Unreachable(head[1]), quoted(icmp.get(8..)?)?, None),
        _ => return None,
    };
    Some(Identified {
        answer,
        id: u16::from_be_bytes([ids[4], ids[5]]),
        seq: u16::from_be_bytes([ids[6], ids[7]]),
        token,
    })
}

/// The ICMP header of the echo request an ICMP error quotes (an IP header
/// and at least the first 8 bytes of what it carried). The quoted packet is
/// cut short, so only its header length and protocol are read.
fn quoted(quoted: &[u8]) -> Option<[u8; 8]> {
    let first = quoted.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || quoted.get(9) != Some(&PROTO_ICMP) {
        return None;
    }
    bytes::<8>(quoted, header_len)
        .copied()
        .filter(|h| h[0] == ECHO_REQUEST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay::packet::build_ipv4;
    use std::net::Ipv4Addr;

    const E: Echo = Echo {
        id: 0x1234,
        seq: 7,
        token: *b"tbcheck!",
    };

    /// `icmp` in an IPv4 packet from 10.0.0.2 to 10.0.0.1.
    fn ip(icmp: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 20 + icmp.len()];
        let n = build_ipv4(
            &mut out,
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 1),
            PROTO_ICMP,
            64,
            icmp,
        )
        .unwrap();
        out.truncate(n);
        out
    }

    /// The request turned into its reply, as a host answers it.
    fn reply_of(req: &[u8]) -> Vec<u8> {
        let mut r = req.to_vec();
        r[0] = ECHO_REPLY;
        r[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&r).to_be_bytes();
        r[2..4].copy_from_slice(&sum);
        r
    }

    /// A destination unreachable (code 3) quoting `req` sent in a packet.
    fn unreachable_of(req: &[u8], quote: usize) -> Vec<u8> {
        let sent = ip(req);
        let mut m = vec![DEST_UNREACH, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&sent[..quote.min(sent.len())]);
        let sum = checksum(&m).to_be_bytes();
        m[2..4].copy_from_slice(&sum);
        m
    }

    #[test]
    fn the_request_is_an_echo_request_with_a_correct_checksum() {
        let r = request(&E);
        assert_eq!(&r[..2], &[ECHO_REQUEST, 0]);
        assert_eq!(&r[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(&r[8..], b"tbcheck!");
        assert_eq!(checksum(&r), 0);
    }

    #[test]
    fn its_reply_and_an_unreachable_quoting_it_are_recognised() {
        let req = request(&E);
        assert_eq!(answer(&ip(&reply_of(&req)), &E), Some(Answer::Reply));
        assert_eq!(
            answer(&ip(&unreachable_of(&req, 28)), &E),
            Some(Answer::Unreachable(3))
        );
        assert_eq!(
            answer(&ip(&unreachable_of(&req, 36)), &E),
            Some(Answer::Unreachable(3))
        );
    }

    #[test]
    fn answers_are_identified_by_identifier_sequence_and_token() {
        let req = request(&E);
        let reply = identify(&ip(&reply_of(&req))).unwrap();
        assert_eq!(
            reply,
            Identified {
                answer: Answer::Reply,
                id: 0x1234,
                seq: 7,
                token: Some(*b"tbcheck!"),
            }
        );
        let unreachable = identify(&ip(&unreachable_of(&req, 28))).unwrap();
        assert_eq!(unreachable.answer, Answer::Unreachable(3));
        assert_eq!(
            (unreachable.id, unreachable.seq, unreachable.token),
            (0x1234, 7, None)
        );
        assert_eq!(identify(&ip(&req)), None, "a request is no answer");
    }

    #[test]
    fn answers_to_other_requests_and_bad_packets_are_ignored() {
        let req = request(&E);
        for other in [
            Echo { id: 0x1235, ..E },
            Echo { seq: 8, ..E },
            Echo {
                token: *b"tbcheck?",
                ..E
            },
        ] {
            let theirs = request(&other);
            assert_eq!(answer(&ip(&reply_of(&theirs)), &E), None, "{other:?}");
        }
        // A quote of another request (the token is not quoted: id and seq).
        let theirs = request(&Echo { seq: 9, ..E });
        assert_eq!(answer(&ip(&unreachable_of(&theirs, 28)), &E), None);
        // A quote cut before the ICMP header.
        assert_eq!(answer(&ip(&unreachable_of(&req, 27)), &E), None);
        // The request itself (as seen when probing a local address).
        assert_eq!(answer(&ip(&req), &E), None);
        // A broken ICMP checksum.
        let mut bad = reply_of(&req);
        bad[9] ^= 1;
        assert_eq!(answer(&ip(&bad), &E), None);
        // Not ICMP, short, empty.
        let mut udp = ip(&reply_of(&req));
        udp[9] = 17;
        assert_eq!(answer(&udp, &E), None);
        assert_eq!(answer(&ip(&reply_of(&req))[..30], &E), None);
        assert_eq!(answer(&[], &E), None);
    }

    #[test]
    fn any_bytes_parse_without_panicking() {
        let req = request(&E);
        let seeds = [ip(&reply_of(&req)), ip(&unreachable_of(&req, 28))];
        let mut state = 0x2545_f491_u32;
        for seed in &seeds {
            crate::check::probe::fuzz::variants(seed, 50_000, false, &mut state, |b| {
                let _ = answer(b, &E);
            });
        }
    }
}
