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

/// The pods that can serve: at least one container running, and every
/// container running and ready or finished successfully (a sidecar that
/// ran to completion). `None` while the supervisor has not written its
/// status.
pub fn ready_pods(plan: &Plan) -> Option<PodSet> {
    use crate::runtime::status::State;
    use crate::runtime::OwnerKind;
    use std::collections::BTreeMap;
    let status = crate::runtime::status::read(Path::new(&plan.state_dir)).ok()?;
    // (namespace, pod) -> (any container running, all fine)
    let mut pods: BTreeMap<(String, String), (bool, bool)> = BTreeMap::new();
    for c in status
        .containers
        .iter()
        .filter(|c| c.kind == OwnerKind::Pod)
    {
        let e = pods
            .entry((c.namespace.clone().unwrap_or_default(), c.owner.clone()))
            .or_insert((false, true));
        match c.state {
            State::Running => {
                e.0 = true;
                e.1 &= c.ready;
            }
            State::Exited => {}
            State::Waiting | State::Failed => e.1 = false,
        }
    }
    Some(
        pods.into_iter()
            .filter(|(_, (running, fine))| *running && *fine)
            .map(|(k, _)| k)
            .collect(),
    )
}

/// Keeps every node's rules following the pods (iptables and nftables
/// modes): when a pod stops being ready (its container died, is restarting
/// or failed) its endpoints leave the rotation, and come back when it is
/// ready again. Runs for as long as the supervisor does, looking every
/// `POLL`; on a change it loads into each node only the changed ports'
/// rules. A node whose update fails gets the whole rule set instead, and
/// while any node fails the follower backs off (up to 5 s) and tries again.
pub fn follow_endpoints(plan: &Plan) {
    if plan.cluster.proxy == proxy::Mode::Userspace || plan.services.is_empty() {
        return;
    }
    let mode = plan.cluster.proxy;
    // What each node's rules hold (`up` loaded every pod's endpoints);
    // `None`: unknown after a failure, so load everything.
    let mut have: Vec<Option<PodSet>> = vec![Some(all_pods(plan)); plan.nodes.len()];
    let mut recorded: Option<PodSet> = None;
    let mut pause = POLL;
    loop {
        std::thread::sleep(pause);
        let Some(ready) = ready_pods(plan) else {
            continue;
        };
        let after = with_ready_endpoints(plan, &ready);
        let mut failed = false;
        for (n, held) in plan.nodes.iter().zip(&mut have) {
            if held.as_ref() == Some(&ready) {
                continue;
            }
            let started = Instant::now();
            let full = || rules::load(mode, n, &rules::resync(mode, &after));
            let result = match held {
                Some(before) => {
                    let text = rules::update(mode, &with_ready_endpoints(plan, before), &after);
                    if text.is_empty() {
                        Ok(())
                    } else {
                        rules::load(mode, n, &text)
                    }
                    .or_else(|e| {
                        tracing::warn!(node = %n.name, error = %e, "updating service endpoints; loading all rules");
                        full()
                    })
                }
                None => full(),
            };
            match result {
                Ok(()) => {
                    tracing::info!(node = %n.name, ready = ready.len(), took = ?started.elapsed(), "service endpoints updated");
                    // Flows already DNATed to endpoints that left go too.
                    let gone = match held {
                        Some(before) => {
                            rules::udp_endpoints_gone(&with_ready_endpoints(plan, before), &after)
                        }
                        None => rules::udp_endpoints_gone(&plan.services, &after),
                    };
                    match rules::forget_udp_flows(n, &gone) {
                        Ok(0) => {}
                        Ok(flows) => {
                            tracing::info!(node = %n.name, flows, "UDP flows of endpoints that left deleted")
                        }
                        Err(e) => {
                            tracing::warn!(node = %n.name, error = %e, "deleting the UDP flows of endpoints that left")
                        }
                    }
                    *held = Some(ready.clone());
                }
                Err(e) => {
                    tracing::warn!(node = %n.name, error = %e, "loading the service rules");
                    *held = None;
                    failed = true;
                }
            }
        }
        if have.iter().all(|h| h.as_ref() == Some(&ready)) && recorded.as_ref() != Some(&ready) {
            write_programmed(&programmed_path(plan, None), &ready);
            recorded = Some(ready);
        }
        pause = if failed {
            (pause * 2).min(Duration::from_secs(5))
        } else {
            POLL
        };
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
/// At `deadline`, says which do not.
pub fn wait_programmed(plan: &Plan, deadline: Instant) -> Result<(), String> {
    if plan.services.is_empty() {
        return Ok(());
    }
    let paths: Vec<(String, PathBuf)> = if plan.cluster.proxy == proxy::Mode::Userspace {
        plan.nodes
            .iter()
            .map(|n| {
                (
                    format!("the userspace proxy of node {}", n.name),
                    programmed_path(plan, Some(&n.name)),
                )
            })
            .collect()
    } else {
        vec![(
            "the nodes' service rules".to_string(),
            programmed_path(plan, None),
        )]
    };
    loop {
        let want = ready_pods(plan);
        let lagging: Vec<&str> = paths
            .iter()
            .filter(|(_, p)| want.is_none() || read_programmed(p) != want)
            .map(|(what, _)| what.as_str())
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} do not hold the endpoints of the ready pods yet (the logs in {} say why)",
                lagging.join(", "),
                plan.state_dir
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
