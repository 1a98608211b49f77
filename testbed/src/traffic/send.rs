//! One send of the `http`, `tcpConnect` and `udpEcho` generators, each on
//! a socket of its own (so that every send is a new flow a service may
//! balance), bounded by the workload's timeout, and what came back as a
//! [`Measured`]. The bytes are built and read by `wire`.

use super::wire;
use super::{Measured, SampleOutcome};
use crate::check::probe::{http, io_outcome};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout_at;

/// The longest a `tcpConnect` send waits for a greeting after connecting.
pub const GREETING_WAIT: Duration = Duration::from_millis(100);
/// The most of a greeting that is read.
const MAX_GREETING: usize = 512;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// The outcome of a socket error.
pub fn outcome_of(e: &io::Error) -> SampleOutcome {
    SampleOutcome::from(&io_outcome(e))
}

/// A TCP connection to `to` before `deadline`.
async fn connect(to: SocketAddrV4, deadline: Instant) -> Result<TcpStream, SampleOutcome> {
    match timeout_at(deadline.into(), TcpStream::connect(SocketAddr::V4(to))).await {
        Err(_) => Err(SampleOutcome::Timeout),
        Ok(Err(e)) => Err(outcome_of(&e)),
        Ok(Ok(s)) => Ok(s),
    }
}

/// `GET path` on a new connection to `to`, read until the server closes,
/// [`http::MAX_ANSWER`] bytes or the timeout (after the headers, the answer
/// so far is judged; before, it is a timeout).
pub async fn http_get(to: SocketAddrV4, path: &str, timeout: Duration) -> Measured {
    let start = Instant::now();
    let deadline = start + timeout;
    let Some(request) = http::request(path, *to.ip(), to.port()) else {
        return Measured::failed(SampleOutcome::Error, start);
    };
    let mut stream = match connect(to, deadline).await {
        Ok(s) => s,
        Err(o) => return Measured::failed(o, start),
    };
    let mut buf = Vec::with_capacity(1024);
    let read = timeout_at(deadline.into(), async {
        stream.write_all(request.as_bytes()).await?;
        let mut chunk = [0u8; 4096];
        while buf.len() < http::MAX_ANSWER {
            let n = match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => n,
                // A reset after the answer still leaves the answer to judge.
                Err(e) if !buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            };
            let room = http::MAX_ANSWER - buf.len();
            buf.extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
        }
        Ok(())
    })
    .await;
    let latency = start.elapsed();
    match read {
        Err(_) if http::headers_end(&buf).is_none() => {
            Measured::failed(SampleOutcome::Timeout, start)
        }
        Ok(Err(e)) => Measured::failed(outcome_of(&e), start),
        _ => {
            let (outcome, bytes, backend) = wire::http_answer(&buf);
            Measured {
                outcome,
                latency,
                bytes,
                backend,
            }
        }
    }
}

/// A connection to `to`, opened and closed: ok once connected (the latency
/// is the connect's). A greeting (`pod NAME`) sent by the server within
/// [`GREETING_WAIT`] names the backend.
pub async fn tcp_connect(to: SocketAddrV4, timeout: Duration) -> Measured {
    let start = Instant::now();
    let mut stream = match connect(to, start + timeout).await {
        Ok(s) => s,
        Err(o) => return Measured::failed(o, start),
    };
    let latency = start.elapsed();
    let mut buf = Vec::new();
    let wait = (start + timeout).min(Instant::now() + GREETING_WAIT);
    let _ = timeout_at(wait.into(), async {
        let mut chunk = [0u8; MAX_GREETING];
        while buf.len() < MAX_GREETING && !buf.contains(&b'\n') {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
    })
    .await;
    Measured {
        outcome: SampleOutcome::Ok,
        latency,
        bytes: buf.len() as u64,
        backend: wire::read_pod_line(&buf).map(|(name, _)| name),
    }
}

/// Datagram `seq` to `to` from a socket of its own, ok when its echo (the
/// reply starting with the same datagram) comes back; an ICMP unreachable
/// is `refused`.
pub async fn udp_echo(to: SocketAddrV4, seq: u64, timeout: Duration) -> Measured {
    let start = Instant::now();
    let answer = timeout_at((start + timeout).into(), async {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        sock.connect(SocketAddr::V4(to)).await?;
        sock.send(&wire::udp_request(seq)).await?;
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let n = sock.recv(&mut buf).await?;
            let reply = buf.get(..n).unwrap_or_default();
            if let Some(backend) = wire::udp_answer(reply, seq) {
                return Ok::<_, io::Error>((n, backend));
            }
        }
    })
    .await;
    match answer {
        Err(_) => Measured::failed(SampleOutcome::Timeout, start),
        Ok(Err(e)) => Measured::failed(outcome_of(&e), start),
        Ok(Ok((n, backend))) => Measured {
            outcome: SampleOutcome::Ok,
            latency: start.elapsed(),
            bytes: n as u64,
            backend,
        },
    }
}
