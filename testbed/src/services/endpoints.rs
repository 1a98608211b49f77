//! Endpoints follow the pods: which pods are ready (from the supervisor's
//! status), the services with only those pods' endpoints, the supervisor's
//! loop that re-programs the nodes' rules on a change (iptables and
//! nftables modes; in userspace mode each node's proxy follows by itself),
//! and `up`'s wait until what is programmed matches what is ready.

use super::rules;
use crate::plan::Plan;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Pods by (namespace, name).
pub type PodSet = BTreeSet<(String, String)>;

/// How often the followers look at the pods' status.
pub const POLL: Duration = Duration::from_millis(100);

/// The services with only the endpoints of ready pods.
pub fn with_ready_endpoints(plan: &Plan, ready: &PodSet) -> Vec<proxy::Service> {
    let mut services = plan.services.clone();
    for s in &mut services {
        for p in &mut s.ports {
            p.endpoints
                .retain(|e| ready.contains(&(s.namespace.clone(), e.pod.clone())));
        }
    }
    services
}

/// Every pod of the plan.
pub fn all_pods(plan: &Plan) -> PodSet {
    plan.pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect()
}

/// The pods whose every container runs and is ready; `None` while the
/// supervisor has not written its status.
pub fn ready_pods(plan: &Plan) -> Option<PodSet> {
    use crate::runtime::status::State;
    use crate::runtime::OwnerKind;
    let status = crate::runtime::status::read(Path::new(&plan.state_dir)).ok()?;
    let mut not_ready = BTreeSet::new();
    for c in status
        .containers
        .iter()
        .filter(|c| c.kind == OwnerKind::Pod)
    {
        let ok = match c.state {
            State::Running => c.ready,
            State::Exited => true,
            State::Waiting | State::Failed => false,
        };
        if !ok {
            not_ready.insert((c.namespace.clone().unwrap_or_default(), c.owner.clone()));
        }
    }
    Some(
        all_pods(plan)
            .into_iter()
            .filter(|k| !not_ready.contains(k))
            .collect(),
    )
}

/// Keeps every node's rules following the pods (iptables and nftables
/// modes): when a pod stops being ready (its container died, is restarting
/// or failed) its endpoints leave the rotation, and come back when it is
/// ready again. Runs for as long as the supervisor does, looking every
/// `POLL`; on a change it loads only the changed ports' rules.
pub fn follow_endpoints(plan: &Plan) {
    if plan.cluster.proxy == proxy::Mode::Userspace || plan.services.is_empty() {
        return;
    }
    // `up` loaded every pod's endpoints.
    let mut current = all_pods(plan);
    write_programmed(&programmed_path(plan, None), &current);
    let mode = plan.cluster.proxy;
    let load_all = |text: &str| {
        plan.nodes
            .iter()
            .try_for_each(|n| rules::load(mode, n, text))
    };
    loop {
        std::thread::sleep(POLL);
        let Some(ready) = ready_pods(plan) else {
            continue;
        };
        if ready == current {
            continue;
        }
        let started = Instant::now();
        let after = with_ready_endpoints(plan, &ready);
        let text = rules::update(mode, &with_ready_endpoints(plan, &current), &after);
        let loaded = if text.is_empty() {
            Ok(())
        } else {
            load_all(&text)
        };
        // After a failed update the nodes may differ: load everything.
        let loaded = loaded.or_else(|e| {
            tracing::warn!(error = %e, "updating service endpoints; resynchronising");
            load_all(&rules::resync(mode, &after))
        });
        match loaded {
            Ok(()) => {
                tracing::info!(ready = ready.len(), took = ?started.elapsed(), "service endpoints updated");
                write_programmed(&programmed_path(plan, None), &ready);
                current = ready;
            }
            Err(e) => tracing::warn!(error = %e, "resynchronising the service rules"),
        }
    }
}

/// The file where the follower records which pods' endpoints the rules
/// hold: one for the supervisor (`node` None), one per node's proxy.
pub fn programmed_path(plan: &Plan, node: Option<&str>) -> PathBuf {
    let dir = Path::new(&plan.state_dir);
    match node {
        None => dir.join("endpoints.json"),
        Some(n) => dir.join("proxy").join(format!("{n}.endpoints.json")),
    }
}

/// Records `ready` at `path` atomically.
pub fn write_programmed(path: &Path, ready: &PodSet) {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string(ready).unwrap_or_default();
    if std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::warn!(path = %path.display(), "cannot record the programmed endpoints");
    }
}

fn read_programmed(path: &Path) -> Option<PodSet> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// Waits until the nodes' rules (or proxies) hold the endpoints of every
/// pod that is ready now, so that `up` returns with services that answer.
/// Gives up quietly at `deadline` (they follow within a poll anyway).
pub fn wait_programmed(plan: &Plan, deadline: Instant) {
    if plan.services.is_empty() {
        return;
    }
    let paths: Vec<PathBuf> = if plan.cluster.proxy == proxy::Mode::Userspace {
        plan.nodes
            .iter()
            .map(|n| programmed_path(plan, Some(&n.name)))
            .collect()
    } else {
        vec![programmed_path(plan, None)]
    };
    while Instant::now() < deadline {
        let want = ready_pods(plan);
        if want.is_some() && paths.iter().all(|p| read_programmed(p) == want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
