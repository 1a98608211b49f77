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

async fn serve(plan: &Plan, n: &NodePlan, fd_budget: Option<u64>) -> Result<(), ServicesError> {
    let fail = |message: String| ServicesError::Proxy {
        node: n.name.clone(),
        message,
    };
    let mode = proxy::Mode::Userspace;
    let mut watch = crate::state::plan_watch::PlanWatch::new(crate::state::layout::plan(
        std::path::Path::new(&plan.state_dir),
    ));
    watch.changed();
    let listen = proxy::portals::listen_ports(&plan.services);
    let first = ready_pods(plan);
    // Whether `current` is what the supervisor reported: until it has, what
    // the proxy serves (every pod) is not acknowledged, so that `up` never
    // takes that guess for the ready pods' endpoints.
    let mut reported = first.is_some();
    let mut current = first.unwrap_or_else(|| all_pods(plan));
    let active = with_ready_endpoints(plan, &current);
    // What the node's portal rules hold; `None`: unknown, load them all.
    // `up` loaded the portals of every pod, but a proxy started again after
    // a crash finds whatever its predecessor left, so start from scratch.
    let mut programmed: Option<PodSet> = None;
    let specs = plan
        .services
        .iter()
        .flat_map(|s| s.ports.iter().map(move |p| (s, p)))
        .zip(&listen)
        .zip(endpoints_by_port(&active))
        .map(
            |(((s, p), (id, port)), (_, endpoints))| proxy::userspace::PortSpec {
                id: id.clone(),
                protocol: p.protocol,
                listen: *port,
                affinity: s.session_affinity,
                endpoints,
            },
        )
        .collect();
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
    let ack = programmed_file(plan, Some(&n.name));
    // After a failed load, the rules are tried again later (back-off); the
    // endpoints in memory and the stop signal are looked at every `POLL`.
    let mut retry_at = Instant::now();
    let mut backoff = overlay::backoff::Backoff::new(POLL, super::endpoints::MAX_RETRY);
    let mut acked: Option<PodSet> = None;
    loop {
        if programmed.as_ref() != Some(&current) && Instant::now() >= retry_at {
            let after = with_ready_endpoints(plan, &current);
            let text = match &programmed {
                Some(before) => rules::update(mode, &with_ready_endpoints(plan, before), &after),
                None => rules::resync(mode, &after),
            };
            let loaded = text.is_empty()
                || tokio::task::block_in_place(|| rules::load(mode, n, &text))
                    .map_err(|e| tracing::warn!(error = %e, "loading the portal rules"))
                    .is_ok();
            // After a failure, load everything next time.
            (programmed, retry_at) = if loaded {
                backoff.succeeded();
                (Some(current.clone()), Instant::now())
            } else {
                (None, Instant::now() + backoff.failed())
            };
        }
        if reported && programmed.as_ref() == Some(&current) && acked.as_ref() != Some(&current) {
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
            let before = endpoints_by_port(&with_ready_endpoints(plan, &current));
            let after = endpoints_by_port(&with_ready_endpoints(plan, &ready));
            for ((id, b), (_, a)) in before.iter().zip(after) {
                if *b != a {
                    tracing::info!(port = %id, endpoints = a.len(), "endpoints changed");
                    proxy.set_endpoints(id, a);
                }
            }
            current = ready;
        }
    }
}
