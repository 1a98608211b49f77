//! UDP ports: one session per client address, each with a connected socket
//! to its backend; replies leave from the local address the client's
//! datagram arrived at (`IP_PKTINFO`), so the reverse NAT of a `REDIRECT`
//! matches them.

use super::{PortState, ProxyError};
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, SockaddrIn,
};
use std::collections::BTreeMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// Large enough for any IPv4 UDP payload.
const MAX_DATAGRAM: usize = 65536;
/// Datagrams handled per wake-up before yielding to other tasks.
const BATCH: usize = 64;

/// Binds the listening socket of port `id` on 0.0.0.0:`port`, with
/// SO_REUSEADDR and IP_PKTINFO.
pub(super) fn bind(id: &str, port: u16) -> Result<UdpSocket, ProxyError> {
    let step = |what: &'static str| {
        move |source: io::Error| ProxyError::Socket {
            id: id.to_string(),
            what,
            source,
        }
    };
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| step("creating the UDP socket")(e.into()))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .map_err(|e| step("setting SO_REUSEADDR")(e.into()))?;
    socket::setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)
        .map_err(|e| step("enabling IP_PKTINFO")(e.into()))?;
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| ProxyError::Bind {
        id: id.to_string(),
        port,
        source: e.into(),
    })?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd)).map_err(step("registering the UDP socket"))
}

/// One client's session.
struct Session {
    /// Tells this session from a later one of the same client.
    generation: u64,
    backend: SocketAddrV4,
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    task: AbortHandle,
}

/// What the listener and a session's reply task both update.
struct Shared {
    /// Milliseconds since the port's clock base of the last datagram either way.
    last_ms: AtomicU64,
    /// The local address the client last sent to (the replies' source).
    local: AtomicU32,
}

type Sessions = Arc<Mutex<BTreeMap<SocketAddrV4, Session>>>;

/// What a port's tasks share.
struct Port {
    state: Arc<PortState>,
    listener: UdpSocket,
    sessions: Sessions,
    idle: Duration,
    base: Instant,
}

impl Port {
    fn sessions(&self) -> MutexGuard<'_, BTreeMap<SocketAddrV4, Session>> {
        // The map stays consistent across a panic elsewhere (single inserts
        // and removes), so a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Removes the session of `client` if it is still `generation`.
    fn end(&self, client: SocketAddrV4, generation: u64) {
        let mut sessions = self.sessions();
        if sessions.get(&client).map(|s| s.generation) == Some(generation) {
            sessions.remove(&client);
        }
    }
}

/// Serves one UDP port until `stop` fires (then ends every session before
/// returning) or the task is aborted (which ends them too).
pub(super) async fn serve(
    listener: UdpSocket,
    state: Arc<PortState>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let port = Arc::new(Port {
        state,
        listener,
        sessions: Arc::default(),
        idle,
        base: Instant::now(),
    });
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
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
                for _ in 0..BATCH {
                    let fd = port.listener.as_raw_fd();
                    match port.listener.try_io(Interest::READABLE, || recv_from(fd, &mut buf)) {
                        Ok(d) => {
                            let data = &buf[..d.len];
                            datagram(&port, &mut tasks, &mut generation, d.client, d.local, data);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(port = %port.state.id, error = %e, "UDP receive failed");
                            break;
                        }
                    }
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

/// One datagram from `client` to the local address `local`.
fn datagram(
    port: &Arc<Port>,
    tasks: &mut JoinSet<()>,
    generation: &mut u64,
    client: SocketAddrV4,
    local: Ipv4Addr,
    data: &[u8],
) {
    let now = port.now_ms();
    let existing = {
        let mut sessions = port.sessions();
        match sessions.get(&client) {
            Some(s) if port.state.contains(s.backend) => {
                s.shared.last_ms.store(now, Ordering::Relaxed);
                s.shared.local.store(u32::from(local), Ordering::Relaxed);
                Some((s.generation, s.backend, s.socket.clone()))
            }
            Some(_) => {
                // Its backend left: the next pick decides anew.
                if let Some(s) = sessions.remove(&client) {
                    tracing::debug!(port = %port.state.id, %client, backend = %s.backend, "session's backend left");
                    s.task.abort();
                }
                None
            }
            None => None,
        }
    };
    if let Some((gen, backend, socket)) = existing {
        match send_now(&socket, data) {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::debug!(port = %port.state.id, %client, %backend, "backend refused");
                end_session(port, client, gen);
                port.state.failed(backend);
            }
            Err(e) => {
                tracing::debug!(port = %port.state.id, %client, %backend, error = %e, "datagram dropped");
                return;
            }
        }
    }
    let Some(backend) = port.state.pick(SocketAddr::V4(client)) else {
        return;
    };
    let socket = match connect(backend) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::warn!(port = %port.state.id, %client, %backend, error = %e, "no socket to backend");
            return;
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
    if let Some(old) = port.sessions().insert(client, session) {
        old.task.abort();
    }
}

/// Removes a session and stops its reply task.
fn end_session(port: &Port, client: SocketAddrV4, generation: u64) {
    let mut sessions = port.sessions();
    if sessions.get(&client).map(|s| s.generation) == Some(generation) {
        if let Some(s) = sessions.remove(&client) {
            s.task.abort();
        }
    }
}

/// Sends on a connected socket without waiting: tokio only learns a new
/// socket is writable after a reactor turn, and a datagram that finds the
/// buffer full is dropped anyway, as the network would.
fn send_now(socket: &UdpSocket, data: &[u8]) -> io::Result<usize> {
    loop {
        match socket::send(socket.as_raw_fd(), data, MsgFlags::MSG_DONTWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// A socket connected to `backend`.
fn connect(backend: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(backend)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// Forwards the backend's replies to the client until the session is idle
/// for the port's `idle` or the backend refuses.
async fn replies(
    port: Arc<Port>,
    client: SocketAddrV4,
    generation: u64,
    backend: SocketAddrV4,
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let last = shared.last_ms.load(Ordering::Relaxed);
        let deadline = port.base + Duration::from_millis(last) + port.idle;
        let received = tokio::time::timeout_at(deadline.into(), socket.recv(&mut buf)).await;
        match received {
            Ok(Ok(n)) => {
                shared.last_ms.store(port.now_ms(), Ordering::Relaxed);
                let local = Ipv4Addr::from(shared.local.load(Ordering::Relaxed));
                send_reply(&port, client, local, &buf[..n]).await;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::debug!(port = %port.state.id, %client, %backend, "backend refused");
                port.end(client, generation);
                port.state.failed(backend);
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(port = %port.state.id, %client, %backend, error = %e, "session failed");
                port.end(client, generation);
                return;
            }
            Err(_) => {
                // Decide under the lock the listener updates `last_ms` under,
                // so a datagram racing the timeout keeps the session alive.
                let mut sessions = port.sessions();
                if sessions.get(&client).map(|s| s.generation) != Some(generation) {
                    return;
                }
                let last = shared.last_ms.load(Ordering::Relaxed);
                if port.now_ms().saturating_sub(last) >= port.idle.as_millis() as u64 {
                    tracing::debug!(port = %port.state.id, %client, %backend, "session idle: ended");
                    sessions.remove(&client);
                    return;
                }
            }
        }
    }
}

/// Sends `data` to `client` from the local address `local`.
async fn send_reply(port: &Port, client: SocketAddrV4, local: Ipv4Addr, data: &[u8]) {
    let fd = port.listener.as_raw_fd();
    loop {
        if let Err(e) = port.listener.writable().await {
            tracing::debug!(port = %port.state.id, %client, error = %e, "reply dropped");
            return;
        }
        match port
            .listener
            .try_io(Interest::WRITABLE, || send_to(fd, client, local, data))
        {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(port = %port.state.id, %client, error = %e, "reply dropped");
                return;
            }
        }
    }
}

/// A received datagram: its length, sender and local destination address.
struct Received {
    len: usize,
    client: SocketAddrV4,
    local: Ipv4Addr,
}

/// `recvmsg` with the IP_PKTINFO control message.
fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match socket::recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let client = msg
        .address
        .map(SocketAddrV4::from)
        .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
    let mut local = Ipv4Addr::UNSPECIFIED;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
            // The kernel's "address to reply from"; the header destination
            // when that is missing.
            let spec = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
            let dst = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
            local = if spec.is_unspecified() { dst } else { spec };
        }
    }
    Ok(Received {
        len: msg.bytes,
        client,
        local,
    })
}

/// `sendmsg` to `client` with source address `local` (unless unspecified).
fn send_to(fd: RawFd, client: SocketAddrV4, local: Ipv4Addr, data: &[u8]) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(local).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let with_source = [ControlMessage::Ipv4PacketInfo(&info)];
    let cmsgs: &[ControlMessage] = if local.is_unspecified() {
        &[]
    } else {
        &with_source
    };
    let iov = [IoSlice::new(data)];
    let to = SockaddrIn::from(client);
    loop {
        match socket::sendmsg(fd, &iov, cmsgs, MsgFlags::empty(), Some(&to)) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Balancer, Config, PortSpec, Proxy};
    use super::*;
    use crate::{Protocol, SessionAffinity};

    const ID: &str = "kube-system/dns:53/UDP";

    /// A backend that answers every datagram with "name:payload".
    async fn echo(name: &'static str) -> SocketAddrV4 {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = v4(s.local_addr().expect("addr"));
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let mut out = format!("{name}:").into_bytes();
                out.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&out, from).await;
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

    async fn start(
        seed: u64,
        idle: Duration,
        affinity: SessionAffinity,
        endpoints: Vec<SocketAddrV4>,
    ) -> (Proxy, u16) {
        let config = Config {
            seed,
            udp_idle: idle,
            ..Config::default()
        };
        let spec = PortSpec {
            id: ID.to_string(),
            protocol: Protocol::UDP,
            listen: 0,
            affinity,
            endpoints,
        };
        let proxy = Proxy::start(config, vec![spec])
            .await
            .expect("proxy starts");
        let port = proxy.local_port(ID).expect("port");
        (proxy, port)
    }

    /// Sends `msg` to `to` and returns the answer and where it came from.
    async fn ask(client: &UdpSocket, to: SocketAddrV4, msg: &str) -> Option<(String, SocketAddr)> {
        client.send_to(msg.as_bytes(), to).await.expect("send");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        match tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from)),
            _ => None,
        }
    }

    async fn client_on(ip: Ipv4Addr) -> UdpSocket {
        UdpSocket::bind((ip, 0)).await.expect("bind client")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_come_from_the_address_sent_to() {
        let a = echo("a").await;
        let (proxy, port) = start(1, Duration::from_secs(30), SessionAffinity::None, vec![a]).await;
        let client = client_on(Ipv4Addr::LOCALHOST).await;
        // 127.0.0.2 is local too, but not the source the kernel would choose
        // for a reply to 127.0.0.1: only IP_PKTINFO gets this right.
        for dst in [
            Ipv4Addr::new(127, 0, 0, 2),
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(127, 0, 0, 3),
        ] {
            let to = SocketAddrV4::new(dst, port);
            let (answer, from) = ask(&client, to, "hi").await.expect("answer");
            assert_eq!(answer, "a:hi");
            assert_eq!(from, SocketAddr::V4(to));
        }
        drop(proxy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_spread_and_keep_their_backend() {
        let eps = vec![echo("a").await, echo("b").await];
        let names = |addr: SocketAddrV4| if addr == eps[0] { "a" } else { "b" };
        let order = Balancer::new(ID, 4, eps.clone(), SessionAffinity::None, Duration::ZERO)
            .order()
            .to_vec();
        let (proxy, port) = start(
            4,
            Duration::from_secs(30),
            SessionAffinity::None,
            eps.clone(),
        )
        .await;
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let c1 = client_on(Ipv4Addr::LOCALHOST).await;
        let c2 = client_on(Ipv4Addr::LOCALHOST).await;
        for i in 0..5 {
            let (r1, _) = ask(&c1, to, &format!("{i}")).await.expect("answer 1");
            assert_eq!(r1, format!("{}:{i}", names(order[0])));
            let (r2, _) = ask(&c2, to, &format!("{i}")).await.expect("answer 2");
            assert_eq!(r2, format!("{}:{i}", names(order[1])));
        }
        drop(proxy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_ip_affinity_spans_client_ports() {
        let eps = vec![echo("a").await, echo("b").await, echo("c").await];
        let (proxy, port) = start(4, Duration::from_secs(30), SessionAffinity::ClientIP, eps).await;
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let mut first = Vec::new();
        for ip in [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 5)] {
            let mut answers = Vec::new();
            for _ in 0..3 {
                // A new client port each time: a new session, same client IP.
                let c = client_on(ip).await;
                let (r, _) = ask(&c, to, "x").await.expect("answer");
                answers.push(r);
            }
            assert!(
                answers.iter().all(|r| *r == answers[0]),
                "{ip}: {answers:?}"
            );
            first.push(answers[0].clone());
        }
        assert_ne!(first[0], first[1], "two client IPs, two backends");
        drop(proxy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_session_ends() {
        let eps = vec![echo("a").await, echo("b").await];
        let idle = Duration::from_millis(300);
        let (proxy, port) = start(2, idle, SessionAffinity::None, eps).await;
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let c = client_on(Ipv4Addr::LOCALHOST).await;
        let (first, _) = ask(&c, to, "1").await.expect("answer");
        let backend = first.split(':').next().map(str::to_string);
        // Traffic every 150 ms keeps the session (and its backend) for well
        // over `idle`…
        for i in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let (r, _) = ask(&c, to, "k").await.expect("answer");
            assert_eq!(
                r.split(':').next().map(str::to_string),
                backend,
                "round {i}"
            );
        }
        // …silence ends it, and the next datagram is a new round-robin pick.
        tokio::time::sleep(idle * 2).await;
        let (r, _) = ask(&c, to, "2").await.expect("answer");
        assert_ne!(r.split(':').next().map(str::to_string), backend);
        drop(proxy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusing_backend_moves_the_session() {
        let live = echo("live").await;
        let dead = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            v4(s.local_addr().expect("addr"))
        };
        let seed = (0..1000)
            .find(|&s| {
                Balancer::new(
                    ID,
                    s,
                    vec![live, dead],
                    SessionAffinity::None,
                    Duration::ZERO,
                )
                .order()[0]
                    == dead
            })
            .expect("some seed puts it first");
        let (proxy, port) = start(
            seed,
            Duration::from_secs(30),
            SessionAffinity::None,
            vec![live, dead],
        )
        .await;
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let c = client_on(Ipv4Addr::LOCALHOST).await;
        // The first datagram goes to the dead backend and is lost; the
        // refusal ends that session, so a retry reaches the live one.
        assert_eq!(ask(&c, to, "1").await, None);
        let mut answered = None;
        for _ in 0..3 {
            if let Some((r, _)) = ask(&c, to, "2").await {
                answered = Some(r);
                break;
            }
        }
        assert_eq!(answered.as_deref(), Some("live:2"));
        drop(proxy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_follow_endpoint_updates() {
        let a = echo("a").await;
        let b = echo("b").await;
        let (proxy, port) = start(2, Duration::from_secs(30), SessionAffinity::None, vec![a]).await;
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let c = client_on(Ipv4Addr::LOCALHOST).await;
        assert_eq!(ask(&c, to, "1").await.map(|r| r.0).as_deref(), Some("a:1"));
        assert!(proxy.set_endpoints(ID, vec![b]));
        assert_eq!(ask(&c, to, "2").await.map(|r| r.0).as_deref(), Some("b:2"));
        assert!(proxy.set_endpoints(ID, vec![]));
        assert_eq!(ask(&c, to, "3").await, None, "no endpoints: dropped");
        drop(proxy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_listener_and_sessions() {
        let a = echo("a").await;
        let (proxy, port) = start(1, Duration::from_secs(30), SessionAffinity::None, vec![a]).await;
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let c = client_on(Ipv4Addr::LOCALHOST).await;
        assert!(ask(&c, to, "1").await.is_some(), "a live session");
        proxy.shutdown().await;
        // Without SO_REUSEADDR this bind only works once the port is free.
        std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("port released");
    }
}
