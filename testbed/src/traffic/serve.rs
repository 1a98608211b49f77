//! `testbed serve`: small servers for the other side of the generators,
//! run inside a container command so that an experiment needs nothing but
//! Linux and the testbed. Each answer names the pod (`wire`): an HTTP
//! responder (header `X-Testbed-Pod` and body `pod NAME`), a TCP acceptor
//! that greets with `pod NAME`, a UDP echo that appends `pod NAME`, and a
//! stream source (`pod NAME`, then [`STREAM_CHUNK`] bytes every
//! [`STREAM_EVERY`]). Bounded: at most [`MAX_CONNECTIONS`] connections at
//! once (more are closed at once), requests of at most [`MAX_REQUEST`]
//! bytes, and a client silent (or not reading) for [`IDLE_TIMEOUT`] is
//! dropped. A server that fails ends them all.

use super::wire;
use crate::check::probe::http;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// The most connections served at once (over all servers).
pub const MAX_CONNECTIONS: usize = 1024;
/// The longest HTTP request read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may stay silent (or not read what is sent to it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// What a stream sends at a time.
pub const STREAM_CHUNK: usize = 1024;
/// How often a stream sends a chunk.
pub const STREAM_EVERY: Duration = Duration::from_millis(10);
/// How often the stop flag is looked at.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    /// The name every answer gives (see [`default_name`]).
    pub name: String,
    /// The address listened on.
    pub bind: Ipv4Addr,
    /// The HTTP responder's port.
    pub http: Option<u16>,
    /// The TCP acceptor's port.
    pub tcp: Option<u16>,
    /// The UDP echo's port.
    pub udp: Option<u16>,
    /// The stream source's port.
    pub stream: Option<u16>,
}

/// Why the servers cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The name is not one answers can carry.
    #[error("--name {0:?}: a name is 1 to 253 letters, digits or `.-_:/`")]
    Name(String),
    /// No port was given.
    #[error("nothing to serve: give at least one of --http, --tcp, --udp, --stream")]
    NoPorts,
    /// A port cannot be bound.
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A server failed.
    #[error("{what} server: {source}")]
    Failed {
        /// Which server.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// The name a server gives by default: `TESTBED_POD` (set for every
/// container: `NAMESPACE/NAME` of its pod, `host:NAME` of a host), else
/// `HOSTNAME`, else the hostname.
pub fn default_name() -> String {
    let env = |k| std::env::var(k).ok().filter(|v| wire::valid_name(v));
    env("TESTBED_POD")
        .or_else(|| env("HOSTNAME"))
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| wire::valid_name(h))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The servers' sockets, bound in the namespace of the thread that bound
/// them (they stay there wherever they are served from).
#[derive(Debug)]
pub struct Server {
    name: Arc<str>,
    http: Option<TcpListener>,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    stream: Option<TcpListener>,
}

/// A listener on `bind:port`.
fn listen(
    what: &'static str,
    bind: Ipv4Addr,
    port: Option<u16>,
) -> Result<Option<TcpListener>, ServeError> {
    port.map(|port| {
        let addr = SocketAddr::from((bind, port));
        TcpListener::bind(addr).map_err(|source| ServeError::Bind { what, addr, source })
    })
    .transpose()
}

impl Server {
    /// Checks `config` and binds its ports.
    pub fn bind(config: &ServeConfig) -> Result<Server, ServeError> {
        if !wire::valid_name(&config.name) {
            return Err(ServeError::Name(config.name.clone()));
        }
        let c = config;
        if c.http.is_none() && c.tcp.is_none() && c.udp.is_none() && c.stream.is_none() {
            return Err(ServeError::NoPorts);
        }
        let udp = c
            .udp
            .map(|port| {
                let addr = SocketAddr::from((c.bind, port));
                UdpSocket::bind(addr).map_err(|source| ServeError::Bind {
                    what: "udp",
                    addr,
                    source,
                })
            })
            .transpose()?;
        Ok(Server {
            name: Arc::from(c.name.as_str()),
            http: listen("http", c.bind, c.http)?,
            tcp: listen("tcp", c.bind, c.tcp)?,
            udp,
            stream: listen("stream", c.bind, c.stream)?,
        })
    }

    /// What is served where, one `KIND ADDRESS` a line.
    pub fn describe(&self) -> String {
        let tcp = [
            ("http", &self.http),
            ("tcp", &self.tcp),
            ("stream", &self.stream),
        ];
        let mut out = String::new();
        for (what, l) in tcp {
            if let Some(addr) = l.as_ref().and_then(|l| l.local_addr().ok()) {
                out.push_str(&format!("{what} {addr}\n"));
            }
        }
        if let Some(addr) = self.udp.as_ref().and_then(|u| u.local_addr().ok()) {
            out.push_str(&format!("udp {addr}\n"));
        }
        out
    }

    /// Serves until `stop` is set or a server fails.
    pub fn run(self, stop: &AtomicBool) -> Result<(), ServeError> {
        let failed = |what| move |source| ServeError::Failed { what, source };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed("serve"))?;
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let name = self.name;
        rt.block_on(async {
            let http = accept_loop(self.http, &limit, &name, answer_http);
            let tcp = accept_loop(self.tcp, &limit, &name, greet);
            let stream = accept_loop(self.stream, &limit, &name, send_stream);
            let udp = echo_loop(self.udp, &name);
            let stopped = async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(STOP_POLL).await;
                }
            };
            tokio::select! {
                r = http => r.map_err(failed("http")),
                r = tcp => r.map_err(failed("tcp")),
                r = stream => r.map_err(failed("stream")),
                r = udp => r.map_err(failed("udp")),
                () = stopped => Ok(()),
            }
        })
    }
}

/// Accepts connections on `listener` (forever when there is none) and
/// serves each with `serve`, within the connection limit.
async fn accept_loop<F, Fut>(
    listener: Option<TcpListener>,
    limit: &Arc<Semaphore>,
    name: &Arc<str>,
    serve: F,
) -> io::Result<()>
where
    F: Fn(TcpStream, Arc<str>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(c) => c,
            // A connection reset before it was accepted, or out of files:
            // the listener itself is fine.
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(permit) = Arc::clone(limit).try_acquire_owned() else {
            continue; // over the limit: closed at once
        };
        let work = serve(conn, Arc::clone(name));
        tokio::spawn(async move {
            work.await;
            drop(permit);
        });
    }
}

/// Whether an accept error leaves the listener usable.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EINTR
        )
    )
}

/// Reads one request (up to its empty line, [`MAX_REQUEST`] bytes or
/// [`IDLE_TIMEOUT`]) and answers it.
async fn answer_http(mut conn: TcpStream, name: Arc<str>) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let read = timeout(IDLE_TIMEOUT, async {
        while http::headers_end(&buf).is_none() && buf.len() < MAX_REQUEST {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let answer = if http::headers_end(&buf).is_none() {
        "HTTP/1.0 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n".to_string()
    } else {
        wire::http_response(&buf, &name)
    };
    let _ = timeout(IDLE_TIMEOUT, async {
        conn.write_all(answer.as_bytes()).await?;
        conn.shutdown().await
    })
    .await;
}

/// Greets with `pod NAME`, then reads (and drops) what the client sends
/// until it closes or is silent for [`IDLE_TIMEOUT`].
async fn greet(mut conn: TcpStream, name: Arc<str>) {
    if conn
        .write_all(wire::pod_line(&name).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut sink = [0u8; 4096];
    while let Ok(Ok(n)) = timeout(IDLE_TIMEOUT, conn.read(&mut sink)).await {
        if n == 0 {
            return;
        }
    }
}

/// Sends `pod NAME`, then a chunk every [`STREAM_EVERY`] until the client
/// goes away or stops reading for [`IDLE_TIMEOUT`].
async fn send_stream(mut conn: TcpStream, name: Arc<str>) {
    let chunk = vec![b's'; STREAM_CHUNK];
    if conn
        .write_all(wire::pod_line(&name).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut every = tokio::time::interval(STREAM_EVERY);
    loop {
        every.tick().await;
        if !matches!(
            timeout(IDLE_TIMEOUT, conn.write_all(&chunk)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// Echoes every datagram with `pod NAME` appended (forever when there is
/// no socket).
async fn echo_loop(sock: Option<UdpSocket>, name: &str) -> io::Result<()> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UdpSocket::from_std(sock)?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
            Err(e) => return Err(e),
        };
        let reply = wire::udp_reply(buf.get(..n).unwrap_or_default(), name);
        let _ = sock.send_to(&reply, from).await;
    }
}
