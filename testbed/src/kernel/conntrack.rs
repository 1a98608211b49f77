//! Connection tracking over ctnetlink (`NETLINK_NETFILTER`), in-process:
//! deleting the UDP flows whose replies come from given addresses, as
//! kube-proxy does when a UDP endpoint leaves a service. Only what that
//! needs: one dump of the namespace's IPv4 table, then one delete per
//! matching entry, keyed by its original tuple as the kernel reported it.

use super::netns::{Netns, NetnsError};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The attributes in `buf`, as (type without flags, payload, the whole
/// attribute).
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len], &buf[..len]));
        let padded = (len + 3) & !3;
        buf = &buf[padded.min(buf.len())..];
    }
    out
}

fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf)
        .into_iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, v, _)| v)
}

/// The source address, protocol and source port of a tuple attribute.
fn tuple_source(tuple: &[u8]) -> Option<(Ipv4Addr, u8, u16)> {
    let ip = find(find(tuple, CTA_TUPLE_IP)?, CTA_IP_V4_SRC)?;
    let proto = find(tuple, CTA_TUPLE_PROTO)?;
    let num = *find(proto, CTA_PROTO_NUM)?.first()?;
    let port = find(proto, CTA_PROTO_SRC_PORT)?;
    Some((
        Ipv4Addr::new(*ip.first()?, *ip.get(1)?, *ip.get(2)?, *ip.get(3)?),
        num,
        u16::from_be_bytes([*port.first()?, *port.get(1)?]),
    ))
}

/// A ctnetlink request: netlink header, nfgenmsg (IPv4), attributes.
fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    m.extend_from_slice(body);
    m
}

struct Socket {
    fd: OwnedFd,
    netns: String,
}

impl Socket {
    fn err(&self, what: &'static str) -> ConntrackError {
        ConntrackError::Socket {
            netns: self.netns.clone(),
            what,
            source: std::io::Error::last_os_error(),
        }
    }

    fn send(&self, msg: &[u8]) -> Result<(), ConntrackError> {
        // SAFETY: the buffer is valid for its length; the fd is ours.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(self.err("sending a request"));
        }
        Ok(())
    }

    /// Reads messages until the answer to `seq` ends (a done message, or an
    /// error/ack), handing each data message to `each`. Returns the error
    /// code of an error message (0 for an ack).
    fn answer(&self, seq: u32, mut each: impl FnMut(&[u8])) -> Result<i32, ConntrackError> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: the buffer is valid for its length; the fd is ours.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(self.err("reading the answer"));
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let got = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < 16 || len > rest.len() {
                    break;
                }
                let msg = &rest[..len];
                rest = &rest[((len + 3) & !3).min(rest.len())..];
                if got != seq {
                    continue;
                }
                match kind {
                    // Both carry an errno (negative, 0 for success): an
                    // ack, the end of a dump, or why either failed.
                    NLMSG_DONE | NLMSG_ERROR => {
                        let code = msg
                            .get(16..20)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        return Ok(-code);
                    }
                    _ => each(msg.get(20..).unwrap_or_default()),
                }
            }
        }
    }
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
    let ns = Netns::open(netns)?;
    // The socket belongs to the namespace it is made in.
    let made = ns.run_in(|| {
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: fd is a fresh descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    })?;
    let sock = Socket {
        fd: made.map_err(|source| ConntrackError::Socket {
            netns: netns.to_string(),
            what: "opening a netlink socket",
            source,
        })?,
        netns: netns.to_string(),
    };
    // The kernel answers at once; never hang the caller on a lost answer.
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: the option value is a valid timeval of the size given.
    let set = unsafe {
        libc::setsockopt(
            sock.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(sock.err("setting a receive timeout"));
    }
    let dump = libc::NLM_F_REQUEST as u16 | libc::NLM_F_DUMP as u16;
    sock.send(&request(IPCTNL_MSG_CT_GET, dump, 1, &[]))?;
    // Each flow's delete request body: its original tuple and its id.
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    let code = sock.answer(1, |body| {
        let (Some(orig), Some(reply)) = (
            attrs(body)
                .into_iter()
                .find(|(k, _, _)| *k == CTA_TUPLE_ORIG),
            find(body, CTA_TUPLE_REPLY),
        ) else {
            return;
        };
        if let Some((ip, proto, port)) = tuple_source(reply) {
            if proto == libc::IPPROTO_UDP as u8 && sources.contains(&(ip, port)) {
                // The original tuple names the flow; its id makes sure a
                // newer flow with the same tuple is not the one deleted.
                let mut key = orig.2.to_vec();
                if let Some((_, _, id)) = attrs(body).into_iter().find(|(k, _, _)| *k == CTA_ID) {
                    key.extend_from_slice(id);
                }
                doomed.push(key);
            }
        }
    })?;
    if code != 0 {
        return Err(ConntrackError::Socket {
            netns: netns.to_string(),
            what: "listing the flows",
            source: std::io::Error::from_raw_os_error(code),
        });
    }
    let ack = libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16;
    let mut deleted = 0;
    for (i, key) in doomed.iter().enumerate() {
        let seq = 2 + i as u32;
        sock.send(&request(IPCTNL_MSG_CT_DELETE, ack, seq, key))?;
        match sock.answer(seq, |_| {})? {
            0 => deleted += 1,
            // Gone already (it expired meanwhile).
            libc::ENOENT => {}
            code => {
                return Err(ConntrackError::Socket {
                    netns: netns.to_string(),
                    what: "deleting a flow",
                    source: std::io::Error::from_raw_os_error(code),
                })
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn reads_a_tuple_as_the_kernel_nests_it() {
        let ip = attr(
            0x8000 | CTA_TUPLE_IP,
            &attr(CTA_IP_V4_SRC, &[10, 244, 1, 3]),
        );
        let proto = attr(
            0x8000 | CTA_TUPLE_PROTO,
            &[
                attr(CTA_PROTO_NUM, &[17]),
                attr(CTA_PROTO_SRC_PORT, &9000u16.to_be_bytes()),
            ]
            .concat(),
        );
        let tuple = [ip, proto].concat();
        assert_eq!(
            tuple_source(&tuple),
            Some((Ipv4Addr::new(10, 244, 1, 3), 17, 9000))
        );
        assert_eq!(tuple_source(&tuple[..6]), None, "truncated");
    }
}
