//! The userspace proxy mode: kube-proxy's original design, where every
//! service port is a real socket on the node (iptables `REDIRECT`s the
//! service address to it) and a process relays each connection to a backend.
//!
//! - [`Balancer`]: the backend choice of one port (deterministic shuffle,
//!   round robin, client-IP affinity), pure and synchronous.
//! - TCP: each accepted connection goes to the first backend that accepts
//!   within [`Config::connect_timeout`] (refusals are skipped); bytes are
//!   relayed zero-copy with `splice(2)`, half-closes are passed on. With no
//!   working backend the client gets a reset.
//! - UDP: one session per client address, with its own socket to the
//!   backend; replies leave from the exact local address the client's
//!   datagram was redirected to (`IP_PKTINFO`); sessions end after
//!   [`Config::udp_idle`].
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
mod tcp;
mod udp;

pub use balancer::{Balancer, SplitMix64};

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

/// Settings shared by all ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seeds the backend shuffle of every port (mixed with the port id).
    pub seed: u64,
    /// How long a TCP connect to one backend may take before the next is tried.
    pub connect_timeout: Duration,
    /// A UDP session ends after this long without traffic either way.
    pub udp_idle: Duration,
    /// How long an unused client-IP affinity entry lasts.
    pub affinity_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            connect_timeout: Duration::from_secs(1),
            udp_idle: Duration::from_secs(30),
            affinity_timeout: Duration::from_secs(10800),
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
}

impl PortState {
    fn balancer(&self) -> MutexGuard<'_, Balancer> {
        // The balancer has no invariant a panic elsewhere could break.
        self.balancer.lock().unwrap_or_else(|e| e.into_inner())
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
            });
            tracing::debug!(port = %spec.id, local_port, protocol = %spec.protocol, "listening");
            bound.push((socket, state.clone()));
            entries.insert(spec.id, PortEntry { state, local_port });
        }
        let (stop, stopped) = watch::channel(false);
        let tasks = bound
            .into_iter()
            .map(|(socket, state)| match socket {
                Bound::Tcp(l) => tokio::spawn(tcp::serve(
                    l,
                    state,
                    config.connect_timeout,
                    stopped.clone(),
                )),
                Bound::Udp(s) => {
                    tokio::spawn(udp::serve(s, state, config.udp_idle, stopped.clone()))
                }
            })
            .collect();
        Ok(Proxy {
            ports: entries,
            tasks,
            stop,
        })
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
