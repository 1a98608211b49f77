//! The userspace proxy mode: kube-proxy's original design, where every
//! service port is a real socket on the node (iptables `REDIRECT`s the
//! service address to it) and a process relays each connection to a backend.
//!
//! - [`Balancer`]: the backend choice of one port (deterministic shuffle,
//!   round robin, client-IP affinity), pure and synchronous.
//! - TCP: each accepted connection goes to the first backend that accepts
//!   within [`Config::connect_timeout`] (refusals are skipped); bytes are
//!   relayed zero-copy with `splice(2)`, half-closes are passed on. With no
//!   working backend the client gets a reset. At most
//!   [`Config::tcp_max_connections`] per port (more are reset); a connection
//!   idle for [`Config::tcp_idle`] is closed.
//! - UDP: one session per client address, with its own socket to the
//!   backend; replies leave from the exact local address the client's
//!   datagram was redirected to (`IP_PKTINFO`); sessions end after
//!   [`Config::udp_idle`], and at [`Config::udp_max_sessions`] per port the
//!   least recently used one makes room for a new client.
//! - [`bounds`]: the per-port bounds, scaled to fit [`Config::fd_budget`],
//!   and their counters and rate-limited log lines.
//!
//! [`Proxy::start`] binds every port and spawns the serving tasks on the
//! current tokio runtime. Sockets live in the network namespace of the
//! thread that creates them: listeners on the thread polling `start`,
//! backend sockets on whichever worker runs a connection. So every thread
//! of the runtime must be in the node's namespace, e.g. `setns` on a thread
//! and build the runtime there (its threads inherit the namespace).
//! The process must ignore `SIGPIPE` (Rust binaries do by default), since
//! `splice` to a reset socket may raise it.

mod balancer;
pub mod bounds;
mod tcp;
mod udp;

pub use balancer::{Balancer, SplitMix64};
pub use bounds::BoundCounts;

use crate::{Protocol, SessionAffinity};
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One proxied service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// A unique name for logs and updates, e.g. `default/web:80/TCP`.
    pub id: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port to bind on 0.0.0.0 (0: any free port, see [`Proxy::local_port`]).
    pub listen: u16,
    /// Client-IP affinity or none.
    pub affinity: SessionAffinity,
    /// The backends.
    pub endpoints: Vec<SocketAddrV4>,
}

/// Settings shared by all ports. The bounds are fields rather than
/// constants so that tests (and a caller with other needs) can set them;
/// [`Config::default`] gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seeds the backend shuffle of every port (mixed with the port id).
    pub seed: u64,
    /// How long a TCP connect to one backend may take before the next is
    /// tried. Default 1 s.
    pub connect_timeout: Duration,
    /// A UDP session ends after this long without traffic either way.
    /// Default 30 s.
    pub udp_idle: Duration,
    /// How long an unused client-IP affinity entry lasts. Default 3 h.
    pub affinity_timeout: Duration,
    /// At most this many UDP sessions (client address and port) per port; a
    /// new client beyond it ends the least recently used session. Default
    /// 1024.
    pub udp_max_sessions: usize,
    /// At most this many concurrent TCP connections per port; beyond it a
    /// new connection is reset at once. Default 1024.
    pub tcp_max_connections: usize,
    /// A TCP connection that moves no byte either way for this long is
    /// closed on both sides (with a reset). Default 1 h, the idle timeout
    /// of Envoy's TCP proxy.
    pub tcp_idle: Duration,
    /// Descriptors the whole proxy may hold (its `RLIMIT_NOFILE`): when the
    /// per-port bounds of all ports together could need more, they are
    /// lowered to fit ([`bounds::port_bounds`]). `None`: no such budget.
    pub fd_budget: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            connect_timeout: Duration::from_secs(1),
            udp_idle: Duration::from_secs(30),
            affinity_timeout: Duration::from_secs(10800),
            udp_max_sessions: 1024,
            tcp_max_connections: 1024,
            tcp_idle: Duration::from_secs(3600),
            fd_budget: None,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listening socket could not be bound.
    #[error("binding 0.0.0.0:{port} for {id}: {source}")]
    Bind {
        /// The port id.
        id: String,
        /// The port that was asked for.
        port: u16,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Another step of setting up the listening socket failed.
    #[error("{what} for {id}: {source}")]
    Socket {
        /// The port id.
        id: String,
        /// The step that failed, e.g. "enabling IP_PKTINFO".
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Two ports share one id.
    #[error("port id {0} appears twice")]
    DuplicateId(String),
}

/// The state one port's tasks share with [`Proxy`].
pub(crate) struct PortState {
    pub(crate) id: String,
    balancer: Mutex<Balancer>,
    /// The port's clock: [`PortState::now_ms`] counts from here.
    base: Instant,
    pub(crate) udp_evicted: bounds::Bound,
    pub(crate) tcp_refused: bounds::Bound,
    pub(crate) tcp_idle_closed: bounds::Bound,
}

impl PortState {
    fn balancer(&self) -> MutexGuard<'_, Balancer> {
        // The balancer has no invariant a panic elsewhere could break.
        self.balancer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since the port started.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant `ms` milliseconds after the port started.
    pub(crate) fn instant(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn counts(&self) -> BoundCounts {
        BoundCounts {
            udp_evicted: self.udp_evicted.total(),
            tcp_refused: self.tcp_refused.total(),
            tcp_idle_closed: self.tcp_idle_closed.total(),
        }
    }

    /// Picks a backend for `client` and logs the choice.
    pub(crate) fn pick(&self, client: SocketAddr) -> Option<SocketAddrV4> {
        let ip = client_ip(client);
        let backend = self.balancer().pick(ip, Instant::now());
        match backend {
            Some(b) => tracing::debug!(port = %self.id, %client, backend = %b, "picked backend"),
            None => tracing::debug!(port = %self.id, %client, "no endpoints"),
        }
        backend
    }

    pub(crate) fn failed(&self, backend: SocketAddrV4) {
        self.balancer().failed(backend);
    }

    pub(crate) fn len(&self) -> usize {
        self.balancer().len()
    }

    pub(crate) fn contains(&self, backend: SocketAddrV4) -> bool {
        self.balancer().contains(backend)
    }
}

/// The IPv4 address of a client (IPv4-mapped IPv6 included).
fn client_ip(addr: SocketAddr) -> Ipv4Addr {
    match addr {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

struct PortEntry {
    state: Arc<PortState>,
    local_port: u16,
}

/// A running userspace proxy. Dropping it stops every port and closes every
/// relayed connection (asynchronously; [`Proxy::shutdown`] waits for it).
pub struct Proxy {
    ports: BTreeMap<String, PortEntry>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

enum Bound {
    Tcp(tokio::net::TcpListener),
    Udp(tokio::net::UdpSocket),
}

impl Proxy {
    /// Binds every port on 0.0.0.0 and starts serving them on the current
    /// tokio runtime. Nothing is left running if any port fails.
    pub async fn start(config: Config, ports: Vec<PortSpec>) -> Result<Proxy, ProxyError> {
        let limits = Proxy::bounds(&config, &ports);
        let mut bound = Vec::with_capacity(ports.len());
        let mut entries = BTreeMap::new();
        for spec in ports {
            if entries.contains_key(&spec.id) {
                return Err(ProxyError::DuplicateId(spec.id));
            }
            let (socket, local_port) = match spec.protocol {
                Protocol::TCP => {
                    let l = tcp::bind(&spec.id, spec.listen)?;
                    let port = local_port(&spec.id, l.local_addr())?;
                    (Bound::Tcp(l), port)
                }
                Protocol::UDP => {
                    let s = udp::bind(&spec.id, spec.listen)?;
                    let port = local_port(&spec.id, s.local_addr())?;
                    (Bound::Udp(s), port)
                }
            };
            let state = Arc::new(PortState {
                balancer: Mutex::new(Balancer::new(
                    &spec.id,
                    config.seed,
                    spec.endpoints,
                    spec.affinity,
                    config.affinity_timeout,
                )),
                id: spec.id.clone(),
                base: Instant::now(),
                udp_evicted: Default::default(),
                tcp_refused: Default::default(),
                tcp_idle_closed: Default::default(),
            });
            tracing::debug!(port = %spec.id, local_port, protocol = %spec.protocol, "listening");
            bound.push((socket, state.clone()));
            entries.insert(spec.id, PortEntry { state, local_port });
        }
        let (stop, stopped) = watch::channel(false);
        let tcp = tcp::Settings {
            connect_timeout: config.connect_timeout,
            idle: config.tcp_idle,
            max_connections: limits.tcp_connections,
        };
        let udp = udp::Settings {
            idle: config.udp_idle,
            max_sessions: limits.udp_sessions,
        };
        let tasks = bound
            .into_iter()
            .map(|(socket, state)| match socket {
                Bound::Tcp(l) => tokio::spawn(tcp::serve(l, state, tcp, stopped.clone())),
                Bound::Udp(s) => tokio::spawn(udp::serve(s, state, udp, stopped.clone())),
            })
            .collect();
        Ok(Proxy {
            ports: entries,
            tasks,
            stop,
        })
    }

    /// The per-port bounds for `ports` under `config`, logged.
    fn bounds(config: &Config, ports: &[PortSpec]) -> bounds::PortBounds {
        let tcp_ports = ports.iter().filter(|p| p.protocol == Protocol::TCP).count();
        let b = bounds::port_bounds(
            config.tcp_max_connections,
            config.udp_max_sessions,
            config.fd_budget,
            tcp_ports,
            ports.len() - tcp_ports,
        );
        if b.scaled {
            tracing::warn!(
                fd_budget = config.fd_budget,
                tcp_ports,
                udp_ports = ports.len() - tcp_ports,
                tcp_max_connections = b.tcp_connections,
                udp_max_sessions = b.udp_sessions,
                "per-port bounds lowered to fit the descriptor budget"
            );
        } else {
            tracing::info!(
                tcp_max_connections = b.tcp_connections,
                udp_max_sessions = b.udp_sessions,
                tcp_idle = ?config.tcp_idle,
                udp_idle = ?config.udp_idle,
                "per-port bounds"
            );
        }
        b
    }

    /// Replaces the endpoints of port `id` for new connections; open TCP
    /// connections stay open, UDP sessions to a backend that left move on
    /// with the client's next datagram. Other ports are untouched. Returns
    /// false if there is no such port.
    pub fn set_endpoints(&self, id: &str, endpoints: Vec<SocketAddrV4>) -> bool {
        match self.ports.get(id) {
            Some(p) => {
                tracing::debug!(port = %id, endpoints = ?endpoints, "endpoints updated");
                p.state.balancer().set_endpoints(endpoints);
                true
            }
            None => {
                tracing::warn!(port = %id, "endpoints for an unknown port ignored");
                false
            }
        }
    }

    /// The port bound for `id` (the kernel's choice when `listen` was 0).
    pub fn local_port(&self, id: &str) -> Option<u16> {
        self.ports.get(id).map(|p| p.local_port)
    }

    /// What the bounds of port `id` did so far (evicted UDP sessions,
    /// refused and idle-closed TCP connections).
    pub fn counts(&self, id: &str) -> Option<BoundCounts> {
        self.ports.get(id).map(|p| p.state.counts())
    }

    /// The ids of all ports, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ports.keys().map(String::as_str)
    }

    /// Stops every port and returns once all its sockets (listeners,
    /// relayed connections, UDP sessions) are closed.
    pub async fn shutdown(mut self) {
        // Fails only when no port task is left to hear it.
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            if let Err(e) = t.await {
                if e.is_panic() {
                    tracing::error!(error = %e, "proxy port task panicked");
                }
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn local_port(id: &str, addr: io::Result<SocketAddr>) -> Result<u16, ProxyError> {
    addr.map(|a| a.port()).map_err(|source| ProxyError::Socket {
        id: id.to_string(),
        what: "reading the bound address",
        source,
    })
}
