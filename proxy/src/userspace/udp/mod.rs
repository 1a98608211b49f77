//! UDP ports: one session per client address, each with a connected socket
//! to its backend; replies leave from the local address the client's
//! datagram arrived at (`IP_PKTINFO`, `sys`), so the reverse NAT of a
//! `REDIRECT` matches them. A session ends after the idle timeout, when its
//! backend refuses or leaves, or, when the port holds its maximum and a new
//! client arrives, as the least recently used one (`table`).

mod sys;
mod table;
#[cfg(test)]
mod tests;

use super::PortState;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
pub(super) use sys::bind;
use sys::{connect, recv_from, send_now, send_to, with_buffer};
use table::Table;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// Datagrams handled per wake-up before yielding to other tasks. Also the
/// most sessions one wake-up can evict, whose sockets close once their
/// tasks have been cancelled: the descriptor budget keeps room for them.
pub(super) const BATCH: usize = 64;
const _: () = assert!(BATCH as u64 + 1 == super::bounds::FDS_PER_UDP_PORT);

/// What every UDP port is served with.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    /// A session without a datagram either way for this long ends.
    pub(super) idle: Duration,
    /// A new client beyond this many sessions evicts the oldest.
    pub(super) max_sessions: usize,
}

/// One client's session. Dropping it (removed from the table) ends its
/// reply task, and with it the socket to the backend.
struct Session {
    /// Tells this session from a later one of the same client.
    generation: u64,
    backend: SocketAddrV4,
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    task: AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the listener and a session's reply task both update.
struct Shared {
    /// The port's clock (ms) at the last datagram either way.
    last_ms: AtomicU64,
    /// The local address the client last sent to (the replies' source).
    local: AtomicU32,
}

/// What a port's tasks share.
struct Port {
    state: Arc<PortState>,
    listener: UdpSocket,
    sessions: Mutex<Table<Session>>,
    settings: Settings,
}

impl Port {
    fn sessions(&self) -> MutexGuard<'_, Table<Session>> {
        // The table stays consistent across a panic elsewhere (each change
        // completes before anything can panic), so a poisoned lock is
        // still usable.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the session of `client` if it is still `generation`.
    fn end(&self, client: SocketAddrV4, generation: u64) {
        let mut sessions = self.sessions();
        if sessions.get(&client).map(|s| s.generation) == Some(generation) {
            sessions.remove(&client);
        }
    }

    /// The session of `client`, marked used at `now` (its replies now from
    /// `local`); `None` when there is none or its backend left (which ends
    /// it: the next pick decides anew).
    fn current(
        &self,
        client: SocketAddrV4,
        local: Ipv4Addr,
        now: u64,
    ) -> Option<(u64, SocketAddrV4, Arc<UdpSocket>)> {
        let mut sessions = self.sessions();
        let s = sessions.get(&client)?;
        if !self.state.contains(s.backend) {
            tracing::debug!(port = %self.state.id, %client, backend = %s.backend, "session's backend left");
            sessions.remove(&client);
            return None;
        }
        s.shared.last_ms.store(now, Ordering::Relaxed);
        s.shared.local.store(u32::from(local), Ordering::Relaxed);
        let found = (s.generation, s.backend, s.socket.clone());
        sessions.touch(client, now);
        Some(found)
    }

    /// Makes room for one more session: at the bound, the least recently
    /// used sessions go (counted, and logged at most once per interval).
    /// Returns how many were evicted.
    fn make_room(&self) -> usize {
        let bound = self.settings.max_sessions.max(1);
        let mut evicted = 0;
        let mut sessions = self.sessions();
        while sessions.len() >= bound {
            let Some((client, old)) =
                sessions.pop_oldest(|s| s.shared.last_ms.load(Ordering::Relaxed))
            else {
                break;
            };
            evicted += 1;
            let id = &self.state.id;
            match self.state.udp_evicted.hit(self.state.now_ms()) {
                Some((evicted, total)) => tracing::warn!(
                    port = %id,
                    bound,
                    evicted,
                    total,
                    "UDP session bound reached: least recently used sessions evicted"
                ),
                None => {
                    tracing::debug!(port = %id, %client, backend = %old.backend, "session evicted")
                }
            }
        }
        evicted
    }
}

/// Serves one UDP port until `stop` fires (then ends every session before
/// returning) or the task is aborted (which ends them too).
pub(super) async fn serve(
    listener: UdpSocket,
    state: Arc<PortState>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let port = Arc::new(Port {
        state,
        listener,
        sessions: Mutex::new(Table::default()),
        settings,
    });
    let mut tasks = JoinSet::new();
    let mut generation = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                tasks.shutdown().await;
                return;
            }
            ready = port.listener.readable() => {
                if let Err(e) = ready {
                    tracing::warn!(port = %port.state.id, error = %e, "UDP listener failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                if receive_batch(&port, &mut tasks, &mut generation) > 0 {
                    // Let the evicted sessions' tasks end (closing their
                    // sockets) before more datagrams make more sessions.
                    tokio::task::yield_now().await;
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(port = %port.state.id, error = %e, "UDP session panicked");
                    }
                }
            }
        }
    }
}

/// Handles up to [`BATCH`] datagrams waiting on the listener; returns how
/// many sessions were evicted for them.
fn receive_batch(port: &Arc<Port>, tasks: &mut JoinSet<()>, generation: &mut u64) -> usize {
    let fd = port.listener.as_raw_fd();
    let mut evicted = 0;
    for _ in 0..BATCH {
        let received = with_buffer(|buf| {
            let d = port
                .listener
                .try_io(Interest::READABLE, || recv_from(fd, buf))?;
            let data = buf.get(..d.len).unwrap_or_default();
            evicted += datagram(port, tasks, generation, d.client, d.local, data);
            Ok::<_, io::Error>(())
        });
        match received {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::debug!(port = %port.state.id, error = %e, "UDP receive failed");
                break;
            }
        }
    }
    evicted
}

/// One datagram from `client` to the local address `local`; returns how
/// many sessions were evicted to make room for a new one.
fn datagram(
    port: &Arc<Port>,
    tasks: &mut JoinSet<()>,
    generation: &mut u64,
    client: SocketAddrV4,
    local: Ipv4Addr,
    data: &[u8],
) -> usize {
    let now = port.state.now_ms();
    if let Some((gen, backend, socket)) = port.current(client, local, now) {
        match send_now(&socket, data) {
            Ok(_) => return 0,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::debug!(port = %port.state.id, %client, %backend, "backend refused");
                port.end(client, gen);
                port.state.failed(backend);
            }
            Err(e) => {
                tracing::debug!(port = %port.state.id, %client, %backend, error = %e, "datagram dropped");
                return 0;
            }
        }
    }
    let Some(backend) = port.state.pick(SocketAddr::V4(client)) else {
        return 0;
    };
    let evicted = port.make_room();
    let socket = match connect(backend) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::warn!(port = %port.state.id, %client, %backend, error = %e, "no socket to backend");
            return evicted;
        }
    };
    if let Err(e) = send_now(&socket, data) {
        tracing::debug!(port = %port.state.id, %client, %backend, error = %e, "datagram dropped");
    }
    *generation += 1;
    let shared = Arc::new(Shared {
        last_ms: AtomicU64::new(now),
        local: AtomicU32::new(u32::from(local)),
    });
    let task = tasks.spawn(replies(
        port.clone(),
        client,
        *generation,
        backend,
        socket.clone(),
        shared.clone(),
    ));
    let session = Session {
        generation: *generation,
        backend,
        socket,
        shared,
        task,
    };
    // A session of the same client (raced in since) is replaced, and ends.
    port.sessions().insert(client, session, now);
    evicted
}

/// Forwards the backend's replies to the client until the session is idle
/// for the port's `idle`, the backend refuses, or the session is removed.
async fn replies(
    port: Arc<Port>,
    client: SocketAddrV4,
    generation: u64,
    backend: SocketAddrV4,
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
) {
    let idle = port.settings.idle;
    loop {
        let last = shared.last_ms.load(Ordering::Relaxed);
        let deadline = port.state.instant(last) + idle;
        let ready = tokio::time::timeout_at(deadline.into(), socket.readable()).await;
        let failed = match ready {
            Ok(Ok(())) => match forward(&port, &socket, client, &shared) {
                Ok(()) => continue,
                Err(e) => e,
            },
            Ok(Err(e)) => e,
            Err(_) => {
                // Decide under the lock the listener updates `last_ms` under,
                // so a datagram racing the timeout keeps the session alive.
                let mut sessions = port.sessions();
                if sessions.get(&client).map(|s| s.generation) != Some(generation) {
                    return;
                }
                let last = shared.last_ms.load(Ordering::Relaxed);
                if port.state.now_ms().saturating_sub(last) >= idle.as_millis() as u64 {
                    tracing::debug!(port = %port.state.id, %client, %backend, "session idle: ended");
                    sessions.remove(&client);
                    return;
                }
                continue;
            }
        };
        if failed.kind() == io::ErrorKind::ConnectionRefused {
            tracing::debug!(port = %port.state.id, %client, %backend, "backend refused");
            port.state.failed(backend);
        } else {
            tracing::debug!(port = %port.state.id, %client, %backend, error = %failed, "session failed");
        }
        port.end(client, generation);
        return;
    }
}

/// Sends the replies waiting on `socket` (up to [`BATCH`]) to `client`,
/// from the local address it last sent to. A reply that finds the
/// listener's buffer full is dropped, as the network would.
fn forward(
    port: &Port,
    socket: &UdpSocket,
    client: SocketAddrV4,
    shared: &Shared,
) -> io::Result<()> {
    for _ in 0..BATCH {
        let sent = with_buffer(|buf| {
            let n = socket.try_recv(buf)?;
            shared.last_ms.store(port.state.now_ms(), Ordering::Relaxed);
            let local = Ipv4Addr::from(shared.local.load(Ordering::Relaxed));
            let data = buf.get(..n).unwrap_or_default();
            if let Err(e) = send_to(port.listener.as_raw_fd(), client, local, data) {
                tracing::debug!(port = %port.state.id, %client, error = %e, "reply dropped");
            }
            Ok::<_, io::Error>(())
        });
        match sent {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
