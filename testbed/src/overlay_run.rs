//! Running the udp overlay of a testbed: the subnet registry under the state
//! directory (flannel's layout), one overlay daemon per node (a detached
//! `testbed overlay-daemon NAME NODE` inside the node's namespace), the
//! impairments each daemon applies, and the counters each reports.

use crate::kernel::netns::Netns;
use crate::plan::types::{LinkPlan, NodePlan};
use crate::plan::Plan;
use overlay::impair::Impairment;
use overlay::registry::{FileStore, SubnetStore};
use overlay::Backend;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the overlay could not be started or run.
#[derive(Debug, thiserror::Error)]
pub enum OverlayRunError {
    /// The registry could not be written.
    #[error(transparent)]
    Registry(#[from] overlay::registry::RegistryError),
    /// A daemon could not start, or did not report in time.
    #[error("overlay daemon of node `{node}`: {message}")]
    Daemon {
        /// The node.
        node: String,
        /// What went wrong.
        message: String,
    },
    /// The node is not in the plan.
    #[error("testbed `{0}` has no node `{1}`")]
    NoNode(String, String),
    /// The node's namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] crate::kernel::netns::NetnsError),
    /// The data path failed.
    #[error("the overlay data path failed: {0}")]
    Run(String),
    /// A state file could not be written.
    #[error(transparent)]
    File(#[from] crate::state::files::FileError),
}

/// Where the registry lives.
pub fn registry_dir(plan: &Plan) -> PathBuf {
    crate::state::layout::registry(Path::new(&plan.state_dir))
}

/// A node daemon's log.
pub fn log_path(plan: &Plan, node: &str) -> PathBuf {
    crate::layout::overlay_log(Path::new(&plan.state_dir), node)
}

/// A node daemon's counters file.
pub fn stats_path(plan: &Plan, node: &str) -> PathBuf {
    crate::layout::overlay_stats(Path::new(&plan.state_dir), node)
}

/// A node daemon's impairments file, re-read when it changes.
pub fn impair_path(plan: &Plan, node: &str) -> PathBuf {
    crate::layout::overlay_impairments(Path::new(&plan.state_dir), node)
}

/// The engine's settings for a link's impairments (the same both ways).
pub fn impairment(link: &Option<LinkPlan>) -> Impairment {
    let Some(l) = link else {
        return Impairment::default();
    };
    Impairment {
        delay_us: l.delay.map_or(0, |d| d.0),
        jitter_us: l.jitter.map_or(0, |d| d.0),
        loss_ppm: l.loss.map_or(0, |p| p.0),
        duplicate_ppm: l.duplicate.map_or(0, |p| p.0),
        reorder_ppm: l.reorder.map_or(0, |p| p.0),
        rate_bps: l.rate.map_or(0, |r| r.0),
    }
}

/// Writes a node's impairments for its daemon: `{"egress": .., "ingress": ..}`.
pub fn write_impairment(plan: &Plan, node: &NodePlan) -> Result<(), OverlayRunError> {
    let imp = impairment(&node.link);
    let file = overlay::daemon::ImpairFile {
        egress: imp.clone(),
        ingress: imp,
    };
    crate::state::files::impairments(Path::new(&plan.state_dir), &node.name).write(&file)?;
    Ok(())
}

/// Writes the network configuration and every node's lease, as flannel's
/// subnet manager would, into the file registry. A testbed whose registry
/// is etcd writes only the configuration there (`store`); each machine's
/// nodes hold their leases themselves (the udp daemons, or the agent).
pub fn write_registry(
    plan: &Plan,
    store: Option<&overlay::etcd::EtcdStore>,
) -> Result<(), OverlayRunError> {
    if let Some(etcd) = store {
        etcd.set_network_config(&plan.cluster.network_config)?;
        return Ok(());
    }
    let store = FileStore::new(registry_dir(plan));
    store.set_network_config(&plan.cluster.network_config)?;
    for n in &plan.nodes {
        store.put_lease(n.lease.subnet, &crate::cluster::agent::lease_attrs(plan, n))?;
    }
    Ok(())
}

/// Starts the overlay daemons of a udp testbed and waits until each reports.
pub fn start(plan: &Plan, deadline: Instant) -> Result<(), OverlayRunError> {
    if plan.cluster.overlay != Backend::Udp {
        return Ok(());
    }
    let name = crate::state::TestbedName::new(&plan.name)
        .map_err(|e| OverlayRunError::Run(e.to_string()))?;
    for n in &plan.nodes {
        write_impairment(plan, n)?;
        crate::daemons::spawn(
            crate::daemons::DaemonKind::Overlay,
            &name,
            Some(&n.name),
            &n.netns,
            &log_path(plan, &n.name),
        )
        .map_err(|e| OverlayRunError::Daemon {
            node: n.name.clone(),
            message: e.to_string(),
        })?;
    }
    for n in &plan.nodes {
        let path = stats_path(plan, &n.name);
        while !path.exists() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(log_path(plan, &n.name)).unwrap_or_default();
                return Err(OverlayRunError::Daemon {
                    node: n.name.clone(),
                    message: format!("did not start; its log says: {}", log.trim()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Runs node `node`'s daemon of testbed `plan` in the foreground, inside the
/// node's namespace, until SIGTERM or SIGINT.
pub fn run_daemon(plan: &Plan, node: &str) -> Result<(), OverlayRunError> {
    let (index, n) = plan
        .nodes
        .iter()
        .enumerate()
        .find(|(_, x)| x.name == node)
        .ok_or_else(|| OverlayRunError::NoNode(plan.name.clone(), node.to_string()))?;
    let dev = n
        .overlay
        .as_ref()
        .ok_or_else(|| OverlayRunError::Run(format!("node {node} has no overlay device")))?;
    // One daemon per node: the pid file is held for as long as this runs.
    let pid_path = crate::state::pids::pid_path(
        Path::new(&plan.state_dir),
        crate::state::pids::DaemonKind::Overlay,
        node,
    );
    let _pid_file = crate::state::pids::PidFile::claim(&pid_path)
        .map_err(|e| OverlayRunError::Run(e.to_string()))?;
    // Enter the node's namespace for good (`up` starts the daemon inside
    // it already): every thread started after this is inside it too.
    let ns = Netns::open(&n.netns)?;
    nix::sched::setns(&ns.file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| OverlayRunError::Run(format!("entering {}: {e}", n.netns)))?;
    let leases = lease_source(plan, n)?;
    let imp = impairment(&n.link);
    let stream = index as u64 * 2;
    let cfg = overlay::daemon::DaemonConfig {
        tun: dev.iface.name.clone(),
        bind: std::net::SocketAddrV4::new(n.ip, dev.port),
        network: plan.cluster.pod_cidr,
        own_subnet: n.lease.subnet,
        leases,
        impair_egress: Some((imp.clone(), plan.seed, stream)),
        impair_ingress: Some((imp, plan.seed, stream + 1)),
        impair_file: Some(impair_path(plan, node)),
        stats_file: Some(stats_path(plan, node)),
        workers: 2,
    };
    let stop = crate::signals::stop_flag();
    overlay::daemon::install_panic_backstop(stop);
    let stop = crate::signals::stop_on_signals()
        .map_err(|(sig, e)| OverlayRunError::Run(format!("handling {sig}: {e}")))?;
    overlay::daemon::run(cfg, stop).map_err(|e| OverlayRunError::Run(e.to_string()))?;
    if overlay::daemon::panicked() {
        return Err(OverlayRunError::Run("a thread panicked (see above)".into()));
    }
    Ok(())
}

/// Where node `n`'s daemon learns the leases, and how its own is kept: the
/// file registry looked at every 200 ms (renewing its lease when due, as
/// flanneld does), or etcd, connected from the machine's namespace, its
/// lease held by the store and put again every third of the TTL by a
/// thread of its own (after an outage longer than the TTL it is created
/// again), the others followed by a watch.
fn lease_source(
    plan: &Plan,
    n: &NodePlan,
) -> Result<overlay::daemon::LeaseSource, OverlayRunError> {
    let (subnet, attrs) = (n.lease.subnet, crate::cluster::agent::lease_attrs(plan, n));
    if let Some(store) = crate::cluster::agent::connect(plan) {
        let store = std::sync::Arc::new(store.map_err(|e| OverlayRunError::Run(e.to_string()))?);
        store.put_lease(subnet, &attrs)?;
        let watch = store.watch(4096);
        let keeper = store.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(crate::cluster::TTL / 3);
            if let Err(e) = keeper.put_lease(subnet, &attrs) {
                tracing::warn!(error = %e, "renewing the lease");
            }
        });
        return Ok(Box::new(overlay::registry::udp_leases(watch.into_source())));
    }
    let store = FileStore::new(registry_dir(plan));
    let renew_every = overlay::registry::DEFAULT_TTL / 4;
    let mut next_renewal = Instant::now() + renew_every;
    Ok(Box::new(overlay::registry::udp_leases(move || {
        if Instant::now() >= next_renewal {
            if let Err(e) = store.put_lease(subnet, &attrs) {
                tracing::warn!(error = %e, "renewing the lease");
            }
            next_renewal = Instant::now() + renew_every;
        }
        store.scan()
    })))
}

/// The counters every node's daemon last reported, by node (nodes without
/// a readable stats file are left out).
pub fn stats(plan: &Plan) -> std::collections::BTreeMap<String, overlay::stats::StatsSnapshot> {
    plan.nodes
        .iter()
        .filter_map(|n| {
            let stats = crate::state::files::stats(Path::new(&plan.state_dir), &n.name);
            Some((n.name.clone(), stats.read().ok()?))
        })
        .collect()
}
