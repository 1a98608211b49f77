//! TCP ports: accept, connect to a backend (skipping refusals), relay with
//! `splice(2)` through a pipe per direction.

use super::{PortState, ProxyError};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The listen backlog of every TCP port.
const BACKLOG: u32 = 1024;
/// The pipe size asked for (the kernel may refuse; the default is kept then).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Binds the listening socket of port `id` on 0.0.0.0:`port`.
pub(super) fn bind(id: &str, port: u16) -> Result<TcpListener, ProxyError> {
    let step = |what: &'static str| {
        move |source| ProxyError::Socket {
            id: id.to_string(),
            what,
            source,
        }
    };
    let socket = TcpSocket::new_v4().map_err(step("creating the TCP socket"))?;
    socket
        .set_reuseaddr(true)
        .map_err(step("setting SO_REUSEADDR"))?;
    socket
        .bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        .map_err(|source| ProxyError::Bind {
            id: id.to_string(),
            port,
            source,
        })?;
    socket.listen(BACKLOG).map_err(step("listening"))
}

/// Serves one TCP port until `stop` fires (then closes every connection
/// before returning) or the task is aborted (which aborts them too).
pub(super) async fn serve(
    listener: TcpListener,
    port: Arc<PortState>,
    connect_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                drop(listener);
                conns.shutdown().await;
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(handle(stream, peer, port.clone(), connect_timeout));
                }
                Err(e) => {
                    tracing::warn!(port = %port.id, error = %e, "accept failed");
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) {
                        // Out of descriptors or memory: give it a moment.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(port = %port.id, error = %e, "connection task panicked");
                    }
                }
            }
        }
    }
}

/// One client connection, from backend choice to close.
async fn handle(client: TcpStream, peer: SocketAddr, port: Arc<PortState>, timeout: Duration) {
    let Some((backend, upstream)) = connect_backend(&port, peer, timeout).await else {
        tracing::debug!(port = %port.id, client = %peer, "no backend accepted: resetting");
        reset(client);
        return;
    };
    // Best effort: a failure only costs latency.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    match relay(client, upstream, true).await {
        Ok((up, down)) => tracing::debug!(
            port = %port.id, client = %peer, %backend, up, down, "connection closed"
        ),
        Err(e) => tracing::debug!(
            port = %port.id, client = %peer, %backend, error = %e, "connection aborted"
        ),
    }
}

/// Tries backends in the balancer's order until one accepts, at most as many
/// as there are endpoints.
async fn connect_backend(
    port: &PortState,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<(SocketAddrV4, TcpStream)> {
    let attempts = port.len();
    let mut tried = Vec::with_capacity(attempts);
    for _ in 0..attempts {
        let backend = port.pick(peer)?;
        if tried.contains(&backend) {
            continue;
        }
        tried.push(backend);
        match tokio::time::timeout(timeout, TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => return Some((backend, stream)),
            Ok(Err(e)) if local_shortage(&e) => {
                // Out of descriptors or memory here: no backend is to blame.
                tracing::warn!(port = %port.id, client = %peer, error = %e, "cannot connect to a backend");
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!(port = %port.id, client = %peer, %backend, error = %e, "backend failed");
                port.failed(backend);
            }
            Err(_) => {
                tracing::debug!(port = %port.id, client = %peer, %backend, "backend connect timed out");
                port.failed(backend);
            }
        }
    }
    None
}

/// Whether a failed connect is this process's or machine's shortage rather
/// than the backend's answer.
fn local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Closes `stream` with a RST rather than a FIN.
fn reset(stream: TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(error = %e, "SO_LINGER 0 failed; closing normally");
    }
    drop(stream);
}

/// Relays between `client` and `backend` until both directions ended (or
/// one failed), returning the bytes moved client→backend and backend→client.
/// Uses splice when `zero_copy` and the kernel supports it, else copies.
pub(super) async fn relay(
    mut client: TcpStream,
    mut backend: TcpStream,
    zero_copy: bool,
) -> io::Result<(u64, u64)> {
    if zero_copy {
        match splice_relay(&client, &backend).await {
            Ok(moved) => return Ok(moved),
            Err(RelayError::Io(e)) => return Err(e),
            Err(RelayError::Fallback(why)) => {
                tracing::debug!(reason = %why, "splice unavailable: copying instead");
            }
        }
    }
    tokio::io::copy_bidirectional(&mut client, &mut backend).await
}

enum RelayError {
    /// splice cannot be used and no byte has moved yet.
    Fallback(io::Error),
    Io(io::Error),
}

async fn splice_relay(client: &TcpStream, backend: &TcpStream) -> Result<(u64, u64), RelayError> {
    let mut up_pipe = Pipe::new().map_err(RelayError::Fallback)?;
    let mut down_pipe = Pipe::new().map_err(RelayError::Fallback)?;
    let up_moved = AtomicU64::new(0);
    let down_moved = AtomicU64::new(0);
    let up = one_way(client, backend, &mut up_pipe, &up_moved);
    let down = one_way(backend, client, &mut down_pipe, &down_moved);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let nothing_moved =
        || up_moved.load(Ordering::Relaxed) == 0 && down_moved.load(Ordering::Relaxed) == 0;
    while !(up_done && down_done) {
        let (result, dst) = tokio::select! {
            r = &mut up, if !up_done => { up_done = true; (r, backend) }
            r = &mut down, if !down_done => { down_done = true; (r, client) }
        };
        match result {
            // EOF: pass the half-close on, keep relaying the other way.
            Ok(()) => shutdown_write(dst),
            Err(RelayError::Fallback(e)) if nothing_moved() => {
                return Err(RelayError::Fallback(e));
            }
            Err(RelayError::Fallback(e)) | Err(RelayError::Io(e)) => {
                return Err(RelayError::Io(e));
            }
        }
    }
    Ok((
        up_moved.load(Ordering::Relaxed),
        down_moved.load(Ordering::Relaxed),
    ))
}

/// Moves bytes from `src` to `dst` through `pipe` until EOF on `src`.
/// The pipe is always drained before reading more, so EAGAIN on the read
/// side can only mean "socket not readable".
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &mut Pipe,
    moved: &AtomicU64,
) -> Result<(), RelayError> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        let n = loop {
            src.readable().await.map_err(RelayError::Io)?;
            match src.try_io(Interest::READABLE, || {
                splice(src_fd, pipe.w.as_raw_fd(), pipe.size)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if moved.load(Ordering::Relaxed) == 0 && is_unsupported(&e) => {
                    return Err(RelayError::Fallback(e));
                }
                Err(e) => return Err(RelayError::Io(e)),
            }
        };
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await.map_err(RelayError::Io)?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.r.as_raw_fd(), dst_fd, left)
            }) {
                Ok(0) => {
                    return Err(RelayError::Io(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "splice to socket wrote nothing",
                    )))
                }
                Ok(m) => {
                    left -= m;
                    moved.fetch_add(m as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(RelayError::Io(e)),
            }
        }
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

/// `shutdown(SHUT_WR)`; a socket the peer already reset is not an error here.
fn shutdown_write(stream: &TcpStream) {
    // SAFETY: the descriptor is owned by `stream`, alive for the call.
    if unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) } < 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "shutdown(SHUT_WR) failed");
    }
}

/// One `splice(2)` call, retried on EINTR.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: plain syscall on descriptors the caller keeps alive; null
        // offsets are valid for pipes and sockets.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A non-blocking pipe and its capacity.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on our own descriptor; failure is harmless.
        let size = unsafe {
            libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(65536);
        Ok(Pipe { r, w, size })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Balancer, Config, PortSpec, Proxy};
    use super::*;
    use crate::{Protocol, SessionAffinity};
    use std::collections::BTreeMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ID: &str = "default/web:80/TCP";

    /// A backend that answers every connection with its name and closes.
    async fn name_server(name: &'static str) -> (SocketAddrV4, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = v4(l.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        (addr, task)
    }

    /// A backend that reads until EOF, then echoes everything and closes.
    async fn echo_after_eof_server() -> SocketAddrV4 {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = v4(l.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    if s.read_to_end(&mut all).await.is_ok() {
                        let _ = s.write_all(&all).await;
                    }
                });
            }
        });
        addr
    }

    /// A backend that echoes as it reads, prefixed by nothing.
    async fn live_echo_server() -> SocketAddrV4 {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = v4(l.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    fn v4(a: SocketAddr) -> SocketAddrV4 {
        match a {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => panic!("not IPv4"),
        }
    }

    /// A port on 127.0.0.1 that refuses connections.
    fn refusing_port() -> SocketAddrV4 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        v4(l.local_addr().expect("addr"))
    }

    fn spec(endpoints: Vec<SocketAddrV4>) -> PortSpec {
        PortSpec {
            id: ID.to_string(),
            protocol: Protocol::TCP,
            listen: 0,
            affinity: SessionAffinity::None,
            endpoints,
        }
    }

    fn config(seed: u64) -> Config {
        Config {
            seed,
            ..Config::default()
        }
    }

    async fn start(seed: u64, endpoints: Vec<SocketAddrV4>) -> (Proxy, SocketAddrV4) {
        let proxy = Proxy::start(config(seed), vec![spec(endpoints)])
            .await
            .expect("proxy starts");
        let port = proxy.local_port(ID).expect("port");
        (proxy, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    async fn fetch(addr: SocketAddrV4) -> io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
        Ok(out)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_robin_in_balancer_order_and_reproducible() {
        let mut names = BTreeMap::new();
        let mut endpoints = Vec::new();
        for name in ["a", "b", "c"] {
            let (addr, _) = name_server(name).await;
            names.insert(addr, name.to_string());
            endpoints.push(addr);
        }
        let seed = 77;
        let expected_order: Vec<String> = Balancer::new(
            ID,
            seed,
            endpoints.clone(),
            SessionAffinity::None,
            Duration::ZERO,
        )
        .order()
        .iter()
        .map(|a| names[a].clone())
        .collect();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (proxy, addr) = start(seed, endpoints.clone()).await;
            let mut seen = Vec::new();
            for _ in 0..30 {
                seen.push(fetch(addr).await.expect("answer through the proxy"));
            }
            proxy.shutdown().await;
            runs.push(seen);
        }
        assert_eq!(runs[0], runs[1], "same seed, same sequence");
        for (i, name) in runs[0].iter().enumerate() {
            assert_eq!(*name, expected_order[i % 3], "connection {i}");
        }
        for n in ["a", "b", "c"] {
            assert_eq!(runs[0].iter().filter(|s| *s == n).count(), 10);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusing_backend_is_skipped() {
        let (a, _) = name_server("a").await;
        let (b, _) = name_server("b").await;
        let dead = refusing_port();
        // A seed where the dead backend comes first, so the skip is exercised.
        let seed = (0..1000)
            .find(|&s| {
                Balancer::new(
                    ID,
                    s,
                    vec![a, b, dead],
                    SessionAffinity::None,
                    Duration::ZERO,
                )
                .order()[0]
                    == dead
            })
            .expect("some seed puts it first");
        let (proxy, addr) = start(seed, vec![a, b, dead]).await;
        let mut counts = BTreeMap::new();
        for _ in 0..12 {
            let name = fetch(addr).await.expect("no client-visible error");
            *counts.entry(name).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.values().all(|&c| c >= 4), "{counts:?}");
        drop(proxy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_endpoints_resets_quickly() {
        for endpoints in [vec![], vec![refusing_port(), refusing_port()]] {
            let (proxy, addr) = start(1, endpoints).await;
            // The kernel completes the handshake; the reset may then beat
            // tokio's check of the connect result.
            let mut s = match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) => panic!("connect: {e}"),
            };
            let mut buf = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
                .await
                .expect("closed within 1 s");
            match r {
                Ok(0) => {}
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
                Ok(n) => panic!("unexpected {n} bytes"),
            }
            drop(proxy);
        }
    }

    async fn half_close_roundtrip(addr: SocketAddrV4) {
        let data: Vec<u8> = (0..8 << 20)
            .map(|i: u32| (i * 7 + i / 4096) as u8)
            .collect();
        let s = TcpStream::connect(addr).await.expect("connect");
        let (mut r, mut w) = s.into_split();
        let to_send = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&to_send).await.expect("send all");
            w.shutdown().await.expect("shutdown(Write)");
            w
        });
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut back))
            .await
            .expect("done in time")
            .expect("read all");
        let _w = writer.await.expect("writer");
        assert_eq!(back.len(), data.len());
        assert!(back == data, "bytes differ");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_close_passes_all_bytes_through_proxy() {
        let backend = echo_after_eof_server().await;
        let (proxy, addr) = start(3, vec![backend]).await;
        half_close_roundtrip(addr).await;
        drop(proxy);
    }

    /// The relay itself, with splice and with the copy fallback.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_both_ways_half_close() {
        for zero_copy in [true, false] {
            let backend = echo_after_eof_server().await;
            let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = v4(front.local_addr().expect("addr"));
            let relayer = tokio::spawn(async move {
                let (c, _) = front.accept().await.expect("accept");
                let b = TcpStream::connect(backend).await.expect("connect");
                relay(c, b, zero_copy).await
            });
            half_close_roundtrip(addr).await;
            let (up, down) = relayer.await.expect("task").expect("relay ok");
            assert_eq!((up, down), (8 << 20, 8 << 20), "zero_copy {zero_copy}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_endpoint_swap() {
        let echo = live_echo_server().await;
        let (other, _) = name_server("other").await;
        let (proxy, addr) = start(5, vec![echo]).await;
        // An open connection through the old endpoint…
        let mut open = TcpStream::connect(addr).await.expect("connect");
        open.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");
        assert!(proxy.set_endpoints(ID, vec![other]));
        assert!(!proxy.set_endpoints("nope", vec![]));
        // …new connections go to the new one…
        for _ in 0..3 {
            assert_eq!(fetch(addr).await.expect("answer"), "other");
        }
        // …and the old connection still works.
        open.write_all(b"pong").await.expect("write");
        open.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"pong");
        drop(proxy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_listener_and_connections() {
        let echo = live_echo_server().await;
        let (proxy, addr) = start(5, vec![echo]).await;
        let mut open = TcpStream::connect(addr).await.expect("connect");
        open.write_all(b"x").await.expect("write");
        let mut buf = [0u8; 1];
        open.read_exact(&mut buf).await.expect("echo");
        proxy.shutdown().await;
        let r = tokio::time::timeout(Duration::from_secs(1), open.read(&mut buf))
            .await
            .expect("closed within 1 s");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert!(TcpStream::connect(addr).await.is_err(), "listener gone");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bind_error_names_port() {
        let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let mut s = spec(vec![]);
        s.listen = port;
        let err = match Proxy::start(Config::default(), vec![s]).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("bound a taken port"),
        };
        assert!(
            err.starts_with(&format!("binding 0.0.0.0:{port} for {ID}: ")),
            "{err}"
        );
        let dup = Proxy::start(Config::default(), vec![spec(vec![]), spec(vec![])]).await;
        assert!(matches!(dup, Err(ProxyError::DuplicateId(_))));
    }
}
