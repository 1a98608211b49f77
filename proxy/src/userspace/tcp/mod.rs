//! TCP ports: accept (resetting connections beyond the port's bound),
//! connect to a backend (skipping refusals), and hand the pair to the relay
//! (`relay`: `splice(2)` through a pipe per direction, with the idle
//! timeout).

mod relay;
#[cfg(test)]
mod tests;

use super::{PortState, ProxyError};
pub(super) use relay::relay;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

/// The listen backlog of every TCP port.
const BACKLOG: u32 = 1024;

/// What every TCP port is served with.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    /// How long a connect to one backend may take.
    pub(super) connect_timeout: Duration,
    /// A connection without a byte either way for this long is closed.
    pub(super) idle: Duration,
    /// Concurrent connections beyond this are reset.
    pub(super) max_connections: usize,
}

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
    settings: Settings,
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
                    // Count only connections still open.
                    while let Some(done) = conns.try_join_next() {
                        joined(&port, done);
                    }
                    if conns.len() >= settings.max_connections {
                        refuse(&port, stream, peer, settings.max_connections);
                    } else {
                        conns.spawn(handle(stream, peer, port.clone(), settings));
                    }
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
            Some(done) = conns.join_next(), if !conns.is_empty() => joined(&port, done),
        }
    }
}

/// Reports a connection task that panicked.
fn joined(port: &PortState, done: Result<(), JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(port = %port.id, error = %e, "connection task panicked");
        }
    }
}

/// Resets a connection beyond the port's bound, counted and logged at most
/// once per [`super::bounds::LOG_INTERVAL_MS`].
fn refuse(port: &PortState, stream: TcpStream, peer: SocketAddr, bound: usize) {
    reset(stream);
    match port.tcp_refused.hit(port.now_ms()) {
        Some((refused, total)) => tracing::warn!(
            port = %port.id,
            bound,
            refused,
            total,
            "TCP connection bound reached: new connections are reset"
        ),
        None => {
            tracing::debug!(port = %port.id, client = %peer, "connection refused: bound reached")
        }
    }
}

/// One client connection, from backend choice to close.
async fn handle(client: TcpStream, peer: SocketAddr, port: Arc<PortState>, settings: Settings) {
    let Some((backend, upstream)) = connect_backend(&port, peer, settings.connect_timeout).await
    else {
        tracing::debug!(port = %port.id, client = %peer, "no backend accepted: resetting");
        reset(client);
        return;
    };
    // Best effort: a failure only costs latency.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    match relay(&client, &upstream, true, settings.idle).await {
        Ok((up, down)) => tracing::debug!(
            port = %port.id, client = %peer, %backend, up, down, "connection closed"
        ),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            reset(client);
            reset(upstream);
            match port.tcp_idle_closed.hit(port.now_ms()) {
                Some((closed, total)) => tracing::info!(
                    port = %port.id,
                    idle = ?settings.idle,
                    closed,
                    total,
                    "idle TCP connections closed"
                ),
                None => tracing::debug!(port = %port.id, client = %peer, %backend, "idle: closed"),
            }
        }
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
