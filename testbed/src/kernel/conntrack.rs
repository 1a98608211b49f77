//! Connection tracking over ctnetlink (`NETLINK_NETFILTER`), in-process:
//! deleting the UDP flows whose replies come from given addresses, as
//! kube-proxy does when a UDP endpoint leaves a service. Only what that
//! needs: one dump of the namespace's IPv4 table, then one delete per
//! matching entry, keyed by its original tuple (and id) as the kernel
//! reported it. The messages are built and read by
//! `netlink-packet-netfilter` (the rtnetlink family's crate) and sent on a
//! `netlink-sys` socket; what is chosen from a dump is a pure function.

use super::netns::{Netns, NetnsError};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Why the table could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The netlink socket failed.
    #[error("connection tracking in {netns}: {what}: {source}")]
    Socket {
        /// The namespace.
        netns: String,
        /// The step.
        what: &'static str,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// The kernel answers at once; a lost answer must not hang the caller.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// A ctnetlink request as bytes.
fn request(seq: u32, flags: u16, msg: ConntrackMessage) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            msg,
        )),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// The source address, protocol and source port of a tuple.
fn tuple_source(tuple: &[Tuple]) -> Option<(Ipv4Addr, u8, u16)> {
    let mut ip = None;
    let (mut proto, mut port) = (None, None);
    for t in tuple {
        match t {
            Tuple::Ip(parts) => {
                for p in parts {
                    if let IPTuple::SourceAddress(IpAddr::V4(a)) = p {
                        ip = Some(*a);
                    }
                }
            }
            Tuple::Proto(parts) => {
                for p in parts {
                    match p {
                        ProtoTuple::Protocol(Protocol::Udp) => proto = Some(17),
                        ProtoTuple::Protocol(Protocol::Tcp) => proto = Some(6),
                        ProtoTuple::Protocol(Protocol::Other(n)) => proto = Some(*n),
                        ProtoTuple::Protocol(_) => proto = Some(0),
                        ProtoTuple::SourcePort(n) => port = Some(*n),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((ip?, proto?, port?))
}

/// The key that deletes flow `attrs` (its original tuple, and its id so
/// that a newer flow with the same tuple is not the one deleted) when it
/// is a UDP flow whose replies come from one of `sources`.
fn doomed(
    attrs: &[ConntrackAttribute],
    sources: &[(Ipv4Addr, u16)],
) -> Option<Vec<ConntrackAttribute>> {
    let reply = attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleReply(t) => Some(t),
        _ => None,
    })?;
    let (ip, proto, port) = tuple_source(reply)?;
    if proto != 17 || !sources.contains(&(ip, port)) {
        return None;
    }
    let orig = attrs
        .iter()
        .find(|a| matches!(a, ConntrackAttribute::CtaTupleOrig(_)))?
        .clone();
    let mut key = vec![orig];
    // CTA_ID (12) is not a typed attribute of the crate: kept as read.
    key.extend(
        attrs
            .iter()
            .filter(|a| matches!(a, ConntrackAttribute::Other(nla) if nla.kind() & 0x3fff == 12))
            .cloned(),
    );
    Some(key)
}

/// What one message of an answer says.
enum Answer {
    /// A flow of a dump, with its attributes.
    Flow(Vec<ConntrackAttribute>),
    /// The end of the answer: an errno (0: done or acknowledged).
    End(i32),
    /// Anything else (another sequence number, another message).
    Other,
}

/// Reads the messages of one datagram (checked: a malformed one ends it).
fn answers(mut buf: &[u8], seq: u32) -> Vec<Answer> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(buf) else {
            break;
        };
        let len = msg.header.length as usize;
        if msg.header.sequence_number == seq {
            out.push(match msg.payload {
                NetlinkPayload::Done(_) => Answer::End(0),
                NetlinkPayload::Error(e) => Answer::End(e.code.map_or(0, |c| -c.get())),
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                    ..
                }) => Answer::Flow(attrs),
                _ => Answer::Other,
            });
        }
        if len == 0 || len > buf.len() {
            break;
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

struct Conn {
    socket: Socket,
    netns: String,
}

impl Conn {
    fn err(&self, what: &'static str, source: std::io::Error) -> ConntrackError {
        ConntrackError::Socket {
            netns: self.netns.clone(),
            what,
            source,
        }
    }

    /// Sends `req` and hands each flow of the answer to `each`; returns
    /// the answer's errno (0 for done or an acknowledgement).
    fn exchange(
        &self,
        req: &[u8],
        seq: u32,
        mut each: impl FnMut(Vec<ConntrackAttribute>),
    ) -> Result<i32, ConntrackError> {
        self.socket
            .send(req, 0)
            .map_err(|e| self.err("sending a request", e))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self
                .socket
                .recv(&mut &mut buf[..], 0)
                .map_err(|e| self.err("reading the answer", e))?;
            for a in answers(&buf[..n], seq) {
                match a {
                    Answer::Flow(attrs) => each(attrs),
                    Answer::End(code) => return Ok(code),
                    Answer::Other => {}
                }
            }
        }
    }
}

/// A ctnetlink socket made inside namespace `netns`.
fn open(netns: &str) -> Result<Conn, ConntrackError> {
    let ns = Netns::open(netns)?;
    // The socket belongs to the namespace it is made in.
    let made = ns.run_in(|| -> std::io::Result<Socket> {
        let mut s = Socket::new(NETLINK_NETFILTER)?;
        s.bind_auto()?;
        s.connect(&SocketAddr::new(0, 0))?;
        let tv = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
        Ok(s)
    })?;
    let socket = made.map_err(|source| ConntrackError::Socket {
        netns: netns.to_string(),
        what: "opening a netlink socket",
        source,
    })?;
    Ok(Conn {
        socket,
        netns: netns.to_string(),
    })
}

/// Deletes, in namespace `netns`, every UDP flow whose replies come from
/// one of `sources` (address and port): the flows DNATed to an endpoint
/// that left. Returns how many were deleted.
pub fn delete_udp_replying_from(
    netns: &str,
    sources: &[(Ipv4Addr, u16)],
) -> Result<usize, ConntrackError> {
    if sources.is_empty() {
        return Ok(0);
    }
    let conn = open(netns)?;
    let dump = request(1, NLM_F_REQUEST | NLM_F_DUMP, ConntrackMessage::Get(vec![]));
    let mut keys = Vec::new();
    let code = conn.exchange(&dump, 1, |attrs| keys.extend(doomed(&attrs, sources)))?;
    if code != 0 {
        return Err(conn.err("listing the flows", std::io::Error::from_raw_os_error(code)));
    }
    let mut deleted = 0;
    for (i, key) in keys.into_iter().enumerate() {
        let seq = 2 + i as u32;
        let req = request(
            seq,
            NLM_F_REQUEST | NLM_F_ACK,
            ConntrackMessage::Delete(key),
        );
        match conn.exchange(&req, seq, |_| {})? {
            0 => deleted += 1,
            // Gone already (it expired meanwhile).
            libc::ENOENT => {}
            code => {
                return Err(conn.err("deleting a flow", std::io::Error::from_raw_os_error(code)))
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: [u8; 4], proto: Protocol, sport: u16) -> Vec<Tuple> {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(IpAddr::V4(Ipv4Addr::from(src))),
                IPTuple::DestinationAddress(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(proto),
                ProtoTuple::SourcePort(sport),
                ProtoTuple::DestinationPort(53),
            ]),
        ]
    }

    fn flow(reply_src: [u8; 4], proto: Protocol, port: u16) -> Vec<ConntrackAttribute> {
        vec![
            ConntrackAttribute::CtaTupleOrig(tuple([10, 244, 0, 5], proto, 40000)),
            ConntrackAttribute::CtaTupleReply(tuple(reply_src, proto, port)),
        ]
    }

    #[test]
    fn only_udp_flows_replying_from_a_source_are_doomed_by_their_original_tuple() {
        let gone = [(Ipv4Addr::new(10, 244, 1, 3), 9000)];
        let key = doomed(&flow([10, 244, 1, 3], Protocol::Udp, 9000), &gone).expect("doomed");
        assert_eq!(key.len(), 1);
        assert!(
            matches!(&key[0], ConntrackAttribute::CtaTupleOrig(t) if tuple_source(t) == Some((Ipv4Addr::new(10, 244, 0, 5), 17, 40000)))
        );
        assert!(
            doomed(&flow([10, 244, 1, 3], Protocol::Tcp, 9000), &gone).is_none(),
            "tcp"
        );
        assert!(
            doomed(&flow([10, 244, 1, 4], Protocol::Udp, 9000), &gone).is_none(),
            "other pod"
        );
        assert!(
            doomed(&flow([10, 244, 1, 3], Protocol::Udp, 9001), &gone).is_none(),
            "other port"
        );
        assert!(doomed(&[], &gone).is_none(), "no tuples");
    }

    #[test]
    fn a_request_reads_back_and_garbage_is_no_answer() {
        let del = request(
            7,
            NLM_F_REQUEST | NLM_F_ACK,
            ConntrackMessage::Delete(flow([1, 2, 3, 4], Protocol::Udp, 9)),
        );
        let back = NetlinkMessage::<NetfilterMessage>::deserialize(&del).expect("parses");
        assert_eq!(back.header.sequence_number, 7);
        match back.payload {
            NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attrs)),
                ..
            }) => assert_eq!(attrs, flow([1, 2, 3, 4], Protocol::Udp, 9)),
            other => panic!("{other:?}"),
        }
        // Truncations and flipped bytes never panic, and say nothing.
        for cut in 0..del.len() {
            let _ = answers(&del[..cut], 7);
        }
        let mut bad = del.clone();
        for i in 0..bad.len() {
            bad[i] ^= 0xa5;
            let _ = answers(&bad, 7);
        }
        assert!(answers(&[], 1).is_empty());
    }
}
