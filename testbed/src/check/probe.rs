//! One probe of a check, sent from inside the source's network namespace by
//! the testbed's own code (no ping, curl or nc): a TCP connection, a UDP
//! datagram that must be answered, an HTTP GET, or an ICMP echo on a raw
//! socket, and what came back as an [`Outcome`]. The bytes of HTTP and ICMP
//! are built and read by the pure `http` and `icmp` modules.

pub mod http;
pub mod icmp;

#[cfg(test)]
pub(crate) mod fuzz;
#[cfg(test)]
pub(crate) mod testnet;
#[cfg(test)]
mod tests;

use super::{Outcome, Port, Probe};
use crate::kernel::netns::Netns;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The shortest timeout a probe is given (a zero one is an error to the
/// socket calls).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// What a UDP probe sends.
const UDP_PAYLOAD: &[u8] = b"testbed check\n";

/// Sends probe `p` from inside its namespace and waits up to `timeout` for
/// what comes back; `body` (HTTP only) is text the response body must
/// contain. The calling thread's namespace never changes (a thread of its
/// own enters `p.netns`). A namespace that cannot be entered is an
/// [`Outcome::Error`].
pub fn probe(p: &Probe, timeout: Duration, body: Option<&str>) -> Outcome {
    let ns = match Netns::open(&p.netns) {
        Ok(ns) => ns,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let (addr, port) = (p.addr, p.port.clone());
    let body = body.map(str::to_string);
    let timeout = timeout.max(MIN_TIMEOUT);
    ns.run_in(move || probe_here(addr, &port, timeout, body.as_deref()))
        .unwrap_or_else(|e| Outcome::Error(e.to_string()))
}

/// [`probe`] from the calling thread's namespace.
fn probe_here(addr: Ipv4Addr, port: &Port, timeout: Duration, body: Option<&str>) -> Outcome {
    let deadline = Instant::now() + timeout;
    let result = match port {
        Port::Tcp(n) => connect(SocketAddrV4::new(addr, *n), timeout).map(|_| Outcome::Ok),
        Port::Udp(n) => udp(SocketAddrV4::new(addr, *n), timeout),
        Port::Http { port, path } => get(SocketAddrV4::new(addr, *port), path, deadline, body),
        Port::Icmp => echo(addr, deadline),
    };
    result.unwrap_or_else(|e| io_outcome(&e))
}

/// What a socket error means: refused (a reset or an ICMP unreachable, or
/// no route), a timeout, or something else.
pub(crate) fn io_outcome(e: &io::Error) -> Outcome {
    let refused = [libc::ECONNREFUSED, libc::EHOSTUNREACH, libc::ENETUNREACH];
    match e.raw_os_error() {
        Some(code) if refused.contains(&code) => Outcome::Refused,
        Some(code) if code == libc::ETIMEDOUT || code == libc::EAGAIN => Outcome::Timeout,
        _ if matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) =>
        {
            Outcome::Timeout
        }
        _ => Outcome::Error(e.to_string()),
    }
}

/// The time left until `deadline` (at least [`MIN_TIMEOUT`]), or a timeout
/// error once it has passed.
fn left(deadline: Instant) -> io::Result<Duration> {
    let now = Instant::now();
    if now >= deadline {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok((deadline - now).max(MIN_TIMEOUT))
}

/// A TCP connection to `to`.
fn connect(to: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)
}

/// A datagram to `to` on a connected socket, answered by anything.
fn udp(to: SocketAddrV4, timeout: Duration) -> io::Result<Outcome> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect(to)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(UDP_PAYLOAD)?;
    let mut buf = [0u8; 2048];
    sock.recv(&mut buf)?;
    Ok(Outcome::Ok)
}

/// `GET path` on `to`, read until the server closes, [`http::MAX_ANSWER`]
/// bytes, or `deadline` (a deadline before the headers ended is a timeout;
/// after, the body read so far is judged).
fn get(to: SocketAddrV4, path: &str, deadline: Instant, body: Option<&str>) -> io::Result<Outcome> {
    let Some(request) = http::request(path, *to.ip(), to.port()) else {
        return Ok(Outcome::Error(format!(
            "HTTP: {path:?} is not a request path"
        )));
    };
    let mut stream = connect(to, left(deadline)?)?;
    stream.set_write_timeout(Some(left(deadline)?))?;
    stream.write_all(request.as_bytes())?;
    let mut buf = vec![0u8; http::MAX_ANSWER];
    let mut len = 0;
    while len < buf.len() {
        let read = left(deadline).and_then(|t| {
            stream.set_read_timeout(Some(t))?;
            stream.read(buf.get_mut(len..).unwrap_or_default())
        });
        match read {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(io_outcome(&e), Outcome::Timeout) => {
                if http::headers_end(buf.get(..len).unwrap_or_default()).is_none() {
                    return Ok(Outcome::Timeout);
                }
                break;
            }
            // A reset after the answer (the server closed with unread
            // bytes) still leaves the answer to judge.
            Err(e) if len > 0 && e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(http::outcome(buf.get(..len).unwrap_or_default(), body))
}

/// An ICMP echo to `to` on a raw socket, waiting for its reply or an
/// unreachable quoting it until `deadline`. Every ICMP packet of the
/// namespace reaches a raw socket: the identifier, sequence number and token
/// pick out this probe's (other probes run in parallel).
fn echo(to: Ipv4Addr, deadline: Instant) -> io::Result<Outcome> {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )?;
    let e = next_echo();
    let dst = socket::SockaddrIn::from(SocketAddrV4::new(to, 0));
    socket::sendto(fd.as_raw_fd(), &icmp::request(&e), &dst, MsgFlags::empty())?;
    let mut buf = [0u8; 1500];
    loop {
        let t = left(deadline)?;
        let tv = nix::sys::time::TimeVal::new(
            i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            i64::from(t.subsec_micros()).max(1),
        );
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &tv)?;
        match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => match icmp::answer(buf.get(..n).unwrap_or_default(), &e) {
                Some(icmp::Answer::Reply) => return Ok(Outcome::Ok),
                Some(icmp::Answer::Unreachable(_)) => return Ok(Outcome::Refused),
                None => {}
            },
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(Outcome::Timeout),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A fresh identifier, sequence number and token for an echo request: the
/// identifier differs between the probes of this process (up to 65,536 at a
/// time), the token between processes.
fn next_echo() -> icmp::Echo {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut token = [0u8; icmp::TOKEN_LEN];
    token[..4].copy_from_slice(&pid.to_be_bytes());
    token[4..].copy_from_slice(&(nanos ^ n.rotate_left(16)).to_be_bytes());
    icmp::Echo {
        id: (pid as u16).wrapping_mul(0x9e37).wrapping_add(n as u16),
        seq: (n >> 16) as u16,
        token,
    }
}
