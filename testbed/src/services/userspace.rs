//! The userspace mode's proxy processes: `up` starts one per node
//! (`testbed proxy-daemon NAME NODE`, detached, in its own session), each
//! enters its node's namespace, listens on the ports the portal rules
//! redirect to (`proxy::portals::listen_ports`) and relays connections with
//! `proxy::userspace`. Each proxy follows the pods' readiness by itself,
//! updates its own node's portal rules when a port gains its first or loses
//! its last endpoint, and records what it serves so that `up` can wait for
//! it. Teardown ends it with the rest of the node's processes.

use super::endpoints::{
    all_pods, programmed_file, ready_pods, with_ready_endpoints, write_programmed, PodSet, POLL,
};
use super::{rules, ServicesError};
use crate::kernel::netns::Netns;
use crate::plan::types::NodePlan;
use crate::plan::Plan;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn dir(plan: &Plan) -> PathBuf {
    crate::layout::proxy(Path::new(&plan.state_dir))
}

/// A node's proxy log.
pub fn log_path(plan: &Plan, node: &str) -> PathBuf {
    crate::layout::proxy_log(Path::new(&plan.state_dir), node)
}

/// The file a node's proxy writes once it listens on every port.
fn listening_path(plan: &Plan, node: &str) -> PathBuf {
    crate::layout::proxy_listening(Path::new(&plan.state_dir), node)
}

/// Starts every node's proxy and waits until each listens; a proxy that
/// exits first fails `up` with what its log says.
pub fn start(plan: &Plan, deadline: Instant) -> Result<(), ServicesError> {
    if plan.cluster.proxy != proxy::Mode::Userspace || plan.services.is_empty() {
        return Ok(());
    }
    crate::state::create_private_dir(&dir(plan)).map_err(|e| ServicesError::Proxy {
        node: String::new(),
        message: format!("creating {}: {e}", dir(plan).display()),
    })?;
    let name = crate::state::TestbedName::new(&plan.name).map_err(|e| ServicesError::Proxy {
        node: String::new(),
        message: e.to_string(),
    })?;
    let mut children = Vec::new();
    for n in &plan.nodes {
        let child = crate::daemons::spawn(
            crate::daemons::DaemonKind::Proxy,
            &name,
            Some(&n.name),
            &n.netns,
            &log_path(plan, &n.name),
        )
        .map_err(|e| ServicesError::Proxy {
            node: n.name.clone(),
            message: e.to_string(),
        })?;
        children.push((n, child));
    }
    for (n, child) in &mut children {
        let path = listening_path(plan, &n.name);
        while !path.exists() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(log_path(plan, &n.name)).unwrap_or_default();
                return Err(ServicesError::Proxy {
                    node: n.name.clone(),
                    message: format!("did not start; its log says: {}", log.trim()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The proxies outlive this command; their exit is reaped by init.
    Ok(())
}

/// Runs node `node`'s proxy of testbed `plan` in the foreground, inside the
/// node's namespace, until SIGTERM or SIGINT.
pub fn run_daemon(plan: &Plan, node: &str) -> Result<(), ServicesError> {
    let n = plan
        .nodes
        .iter()
        .find(|x| x.name == node)
        .ok_or_else(|| ServicesError::Proxy {
            node: node.to_string(),
            message: format!("testbed `{}` has no such node", plan.name),
        })?;
    let fail = |message: String| ServicesError::Proxy {
        node: node.to_string(),
        message,
    };
    // One proxy per node: the pid file is held for as long as this runs.
    let pid_path = crate::state::pids::pid_path(
        std::path::Path::new(&plan.state_dir),
        crate::state::pids::DaemonKind::Proxy,
        node,
    );
    let _pid_file =
        crate::state::pids::PidFile::claim(&pid_path).map_err(|e| fail(e.to_string()))?;
    // Enter the node's namespace before any thread starts (`up` starts the
    // proxy inside it already): the runtime's workers, and every socket,
    // are inside it.
    let ns = Netns::open(&n.netns)?;
    nix::sched::setns(&ns.file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| fail(format!("entering {}: {e}", n.netns)))?;
    crate::signals::stop_on_signals().map_err(|(sig, e)| fail(format!("handling {sig}: {e}")))?;
    // Each relayed TCP connection holds six descriptors (two sockets, two
    // pipes): allow as many as the hard limit does, and size the per-port
    // bounds so that all ports together stay within it.
    let fd_budget = raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(serve(plan, n, fd_budget))
}

/// Raises the soft descriptor limit to the hard one; returns the limit in
/// force (None if it cannot be read or is unlimited).
fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let soft = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the descriptor limit");
            soft
        }
    };
    (soft != RLIM_INFINITY).then_some(soft)
}

/// The endpoints of every service port, by the port's identity.
fn endpoints_by_port(services: &[proxy::Service]) -> Vec<(String, Vec<SocketAddrV4>)> {
    services
        .iter()
        .flat_map(|s| {
            s.ports.iter().map(move |p| {
                (
                    proxy::portals::port_id(s, p),
                    p.endpoints
                        .iter()
                        .map(|e| SocketAddrV4::new(e.ip, e.port))
                        .collect(),
                )
            })
        })
        .collect()
}

/// Serves the service ports of `plan` on node `n` until SIGTERM or SIGINT
/// (Ok) or until the controller changes the services (an error): relays to
/// the ready pods' endpoints, keeps the node's portal rules in step with
/// them, and acknowledges what it serves once the supervisor has reported
/// the ready pods.
async fn serve(plan: &Plan, n: &NodePlan, fd_budget: Option<u64>) -> Result<(), ServicesError> {
    let mut watch = crate::state::plan_watch::PlanWatch::new(crate::state::layout::plan(
        std::path::Path::new(&plan.state_dir),
    ));
    watch.changed();
    let first = ready_pods(plan);
    // Whether `current` is what the supervisor reported: until it has, what
    // the proxy serves (every pod) is not acknowledged, so that `up` never
    // takes that guess for the ready pods' endpoints.
    let mut reported = first.is_some();
    let mut current = first.unwrap_or_else(|| all_pods(plan));
    let proxy = start_listening(plan, n, &current, fd_budget).await?;
    let ack = programmed_file(plan, Some(&n.name));
    let mut portals = Portals::new();
    let mut acked: Option<PodSet> = None;
    loop {
        portals.sync(plan, n, &current);
        if reported
            && portals.programmed.as_ref() == Some(&current)
            && acked.as_ref() != Some(&current)
        {
            write_programmed(&ack, &current);
            acked = Some(current.clone());
        }
        tokio::time::sleep(POLL).await;
        if crate::signals::stop_flag().load(Ordering::SeqCst) {
            drop(proxy);
            return Ok(());
        }
        // The controller changed the services (apply, pods moved): this
        // proxy ends, and the watchdog starts it again on the new plan.
        if watch.changed().is_some_and(|p| p.services != plan.services) {
            return Err(ServicesError::Proxy {
                node: n.name.clone(),
                message: "the services changed; starting again with the new plan".into(),
            });
        }
        let Some(ready) = ready_pods(plan) else {
            continue;
        };
        reported = true;
        if ready != current {
            set_endpoints(plan, &proxy, &current, &ready);
            current = ready;
        }
    }
}

/// Starts relaying every service port of `plan` to the endpoints of the
/// pods in `current`, then records that node `n`'s proxy listens.
async fn start_listening(
    plan: &Plan,
    n: &NodePlan,
    current: &PodSet,
    fd_budget: Option<u64>,
) -> Result<proxy::userspace::Proxy, ServicesError> {
    let fail = |message: String| ServicesError::Proxy {
        node: n.name.clone(),
        message,
    };
    let listen = proxy::portals::listen_ports(&plan.services);
    let active = with_ready_endpoints(plan, current);
    let specs = port_specs(plan, &listen, &active);
    let config = proxy::userspace::Config {
        seed: plan.seed,
        fd_budget,
        ..Default::default()
    };
    let proxy = proxy::userspace::Proxy::start(config, specs)
        .await
        .map_err(|e| fail(e.to_string()))?;
    tracing::info!(node = %n.name, ports = listen.len(), "proxy listening");
    crate::state::write_atomic(&listening_path(plan, &n.name), b"")
        .map_err(|e| fail(format!("recording that it listens: {e}")))?;
    Ok(proxy)
}

/// What the proxy serves for each service port of `plan`: the port it
/// listens on (from `listen`) and the endpoints it has in `active`.
fn port_specs(
    plan: &Plan,
    listen: &[(String, u16)],
    active: &[proxy::Service],
) -> Vec<proxy::userspace::PortSpec> {
    plan.services
        .iter()
        .flat_map(|s| s.ports.iter().map(move |p| (s, p)))
        .zip(listen)
        .zip(endpoints_by_port(active))
        .map(
            |(((s, p), (id, port)), (_, endpoints))| proxy::userspace::PortSpec {
                id: id.clone(),
                protocol: p.protocol,
                listen: *port,
                affinity: s.session_affinity,
                endpoints,
            },
        )
        .collect()
}

/// Gives `proxy` the endpoints of every port whose endpoints differ between
/// the pods in `current` and those in `ready`.
fn set_endpoints(plan: &Plan, proxy: &proxy::userspace::Proxy, current: &PodSet, ready: &PodSet) {
    let before = endpoints_by_port(&with_ready_endpoints(plan, current));
    let after = endpoints_by_port(&with_ready_endpoints(plan, ready));
    for ((id, b), (_, a)) in before.iter().zip(after) {
        if *b != a {
            tracing::info!(port = %id, endpoints = a.len(), "endpoints changed");
            proxy.set_endpoints(id, a);
        }
    }
}

/// The node's portal rules, as the proxy keeps them in step with the ready
/// pods' endpoints.
struct Portals {
    /// What the rules hold; `None`: unknown, load them all. `up` loaded the
    /// portals of every pod, but a proxy started again after a crash finds
    /// whatever its predecessor left, so start from scratch.
    programmed: Option<PodSet>,
    /// After a failed load, the rules are tried again later (back-off); the
    /// endpoints in memory and the stop signal are looked at every `POLL`.
    retry_at: Instant,
    /// The back-off between failed loads.
    backoff: overlay::backoff::Backoff,
}

impl Portals {
    /// Rules in an unknown state, to be loaded at once.
    fn new() -> Portals {
        Portals {
            programmed: None,
            retry_at: Instant::now(),
            backoff: overlay::backoff::Backoff::new(POLL, super::endpoints::MAX_RETRY),
        }
    }

    /// Loads into node `n`'s rules the endpoints of the pods in `current`
    /// if the rules hold something else and no back-off is in force: the
    /// change alone if what they hold is known, everything otherwise.
    fn sync(&mut self, plan: &Plan, n: &NodePlan, current: &PodSet) {
        let mode = proxy::Mode::Userspace;
        if self.programmed.as_ref() == Some(current) || Instant::now() < self.retry_at {
            return;
        }
        let after = with_ready_endpoints(plan, current);
        let text = match &self.programmed {
            Some(before) => rules::update(mode, &with_ready_endpoints(plan, before), &after),
            None => rules::resync(mode, &after),
        };
        let loaded = text.is_empty()
            || tokio::task::block_in_place(|| rules::load(mode, n, &text))
                .map_err(|e| tracing::warn!(error = %e, "loading the portal rules"))
                .is_ok();
        // After a failure, load everything next time.
        (self.programmed, self.retry_at) = if loaded {
            self.backoff.succeeded();
            (Some(current.clone()), Instant::now())
        } else {
            (None, Instant::now() + self.backoff.failed())
        };
    }
}
