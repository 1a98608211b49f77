//! Endpoints follow the pods: which pods are ready (from the supervisor's
//! status), the services with only those pods' endpoints, the supervisor's
//! loop that re-programs the nodes' rules on a change (iptables and
//! nftables modes; in userspace mode each node's proxy follows by itself),
//! and `up`'s wait until what is programmed matches what is ready.

use super::rules;
use crate::plan::Plan;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::state::files::JsonFile;
/// Pods by (namespace, name).
pub use crate::state::files::PodSet;
use overlay::backoff::Backoff;

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

/// Every pod of the plan, and every pod a service names (on a machine's
/// share of a testbed spread over several, the other machines' too).
pub fn all_pods(plan: &Plan) -> PodSet {
    let endpoints = plan.services.iter().flat_map(|s| {
        s.ports
            .iter()
            .flat_map(|p| p.endpoints.iter())
            .map(|e| (s.namespace.clone(), e.pod.clone()))
    });
    plan.pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .chain(endpoints)
        .collect()
}

/// The pods that can serve, by the supervisor's status (`None` while it
/// has not written one), and on a machine's share those the other
/// machines last said are ready (`cluster::remote_ready`).
pub fn ready_pods(plan: &Plan) -> Option<PodSet> {
    let status = crate::runtime::status::read(Path::new(&plan.state_dir)).ok()?;
    let mut ready = serving(&status.containers);
    ready.extend(crate::cluster::remote_ready(plan));
    Some(ready)
}

pub use crate::runtime::status::serving;

/// The longest a follower waits before trying a failing node again.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// What the follower knows of one node.
struct NodeState {
    /// The rules installed after its last load (`rules::installed`), to
    /// tell a change behind the testbed's back from its own.
    good: Option<String>,
    /// The pods whose endpoints its rules hold (`up` loaded every pod's);
    /// `None`: unknown after a failure, so load everything.
    held: Option<PodSet>,
    /// UDP endpoints that left whose flows are still to be deleted.
    flows: Vec<(std::net::Ipv4Addr, u16)>,
    /// When to try again after a failure.
    retry_at: Instant,
    /// The pauses between failed tries.
    backoff: Backoff,
}

/// Keeps every node's rules following the pods (iptables and nftables
/// modes): when a pod stops being ready (its container died, is restarting
/// or failed) its endpoints leave the rotation, and come back when it is
/// ready again. Runs for as long as the supervisor does, looking every
/// `POLL`; on a change it loads into each node only the changed ports'
/// rules, then deletes the UDP flows still going to endpoints that left. A
/// node whose update fails gets the whole rule set instead; a node that
/// keeps failing is tried again with a back-off of its own (up to
/// `MAX_RETRY`), without holding up the others.
pub fn follow_endpoints(state_dir: &Path, rules_changed: &std::sync::mpsc::Receiver<String>) {
    let mut watch = crate::state::plan_watch::PlanWatch::new(crate::state::layout::plan(state_dir));
    let mut plan = loop {
        if let Some(p) = watch.changed() {
            break p;
        }
        std::thread::sleep(POLL);
    };
    let mut nodes: Vec<NodeState> = plan
        .nodes
        .iter()
        .map(|_| NodeState {
            good: None,
            held: Some(all_pods(&plan)),
            flows: Vec::new(),
            retry_at: Instant::now(),
            backoff: Backoff::new(POLL, MAX_RETRY),
        })
        .collect();
    let mut recorded: Option<PodSet> = None;
    let mut status_seen =
        crate::state::plan_watch::FileIdentity::new(crate::layout::status(state_dir));
    // The other machines' ready pods (a share of a testbed spread over
    // several), written by the agent.
    let mut cluster_seen =
        crate::state::plan_watch::FileIdentity::new(crate::cluster::view_path(state_dir));
    let mut ready: Option<PodSet> = None;
    let mut events = crate::events::EventLog::open(state_dir).ok();
    // Every node holds what is ready and nothing is pending: nothing to do
    // until the plan or the status changes.
    let mut settled = false;
    loop {
        std::thread::sleep(POLL);
        if let Some(p) = watch.changed() {
            settled = false;
            // The controller changed the plan (pods moved, services came or
            // went): every node gets the whole rule set of the new plan.
            if p.services != plan.services {
                for st in &mut nodes {
                    st.held = None;
                }
                recorded = None;
            }
            plan = p;
        }
        let changed: std::collections::BTreeSet<String> = rules_changed.try_iter().collect();
        if !changed.is_empty() && !plan.services.is_empty() {
            restore_changed(&plan, &changed, ready.as_ref(), &mut nodes, &mut events);
        }
        if plan.cluster.proxy == proxy::Mode::Userspace || plan.services.is_empty() {
            continue;
        }
        // The status is read again only when the supervisor rewrote it.
        let status_changed = status_seen.changed() | cluster_seen.changed();
        if settled && !status_changed {
            continue;
        }
        if status_changed || ready.is_none() {
            if let Some(r) = ready_pods(&plan) {
                ready = Some(r);
            }
        }
        let Some(ready) = ready.clone() else {
            continue;
        };
        follow_once(&plan, &ready, &mut nodes);
        let in_sync = nodes
            .iter()
            .all(|st| st.held.as_ref() == Some(&ready) && st.flows.is_empty());
        if in_sync && recorded.as_ref() != Some(&ready) {
            write_programmed(&programmed_file(&plan, None), &ready);
            recorded = Some(ready);
        }
        settled = in_sync;
    }
}

/// Puts back the rules of the nodes (by namespace, in `changed`) whose
/// rules are not what the follower last loaded: somebody else changed
/// them. Userspace mode's portals follow the services; the other modes'
/// rules the endpoints the node held (or `ready`).
fn restore_changed(
    plan: &Plan,
    changed: &std::collections::BTreeSet<String>,
    ready: Option<&PodSet>,
    nodes: &mut [NodeState],
    events: &mut Option<crate::events::EventLog>,
) {
    let mode = plan.cluster.proxy;
    for (n, st) in plan.nodes.iter().zip(nodes.iter_mut()) {
        if !changed.contains(&n.netns) {
            continue;
        }
        let now = rules::installed(mode, n).ok();
        if now.is_some() && now == st.good {
            continue;
        }
        let services = match (mode, st.held.as_ref().or(ready)) {
            (proxy::Mode::Userspace, _) | (_, None) => plan.services.clone(),
            (_, Some(held)) => with_ready_endpoints(plan, held),
        };
        match rules::restore(mode, n, &services) {
            Ok(text) => {
                st.good = Some(text);
                tracing::info!(node = %n.name, "service rules changed behind the testbed's back: restored");
                if let Some(log) = events.as_mut() {
                    log.record(
                        crate::events::EventKind::DriftRepaired,
                        format!("node {}", n.name),
                        "service rules restored",
                    );
                }
            }
            Err(e) => {
                tracing::warn!(node = %n.name, error = %e, "restoring the service rules");
                st.held = None;
            }
        }
    }
}

/// One round of [`follow_endpoints`]: brings each node's rules to `ready`.
fn follow_once(plan: &Plan, ready: &PodSet, nodes: &mut [NodeState]) {
    let mode = plan.cluster.proxy;
    let now = Instant::now();
    let mut after_cache: Option<Vec<proxy::Service>> = None;
    for (n, st) in plan.nodes.iter().zip(nodes.iter_mut()) {
        if (st.held.as_ref() == Some(ready) && st.flows.is_empty()) || now < st.retry_at {
            continue;
        }
        let after: &Vec<proxy::Service> =
            after_cache.get_or_insert_with(|| with_ready_endpoints(plan, ready));
        let mut ok = true;
        if st.held.as_ref() != Some(ready) {
            let before = match &st.held {
                Some(held) => with_ready_endpoints(plan, held),
                None => plan.services.clone(),
            };
            let full = || rules::load(mode, n, &rules::resync(mode, after));
            let result = match st.held {
                Some(_) => {
                    let text = rules::update(mode, &before, after);
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
                    tracing::info!(node = %n.name, ready = ready.len(), took = ?now.elapsed(), "service endpoints updated");
                    st.good = rules::installed(mode, n).ok();
                    for gone in rules::udp_endpoints_gone(&before, after) {
                        if !st.flows.contains(&gone) {
                            st.flows.push(gone);
                        }
                    }
                    st.held = Some(ready.clone());
                }
                Err(e) => {
                    tracing::warn!(node = %n.name, error = %e, "loading the service rules");
                    st.held = None;
                    ok = false;
                }
            }
        }
        // Flows already DNATed to endpoints that left go too.
        if ok && !st.flows.is_empty() {
            match rules::forget_udp_flows(n, &st.flows) {
                Ok(deleted) => {
                    tracing::info!(node = %n.name, deleted, "UDP flows of endpoints that left deleted");
                    st.flows.clear();
                }
                Err(e) => {
                    tracing::warn!(node = %n.name, error = %e, "deleting the UDP flows of endpoints that left");
                    ok = false;
                }
            }
        }
        st.retry_at = if ok {
            st.backoff.succeeded();
            now
        } else {
            now + st.backoff.failed()
        };
    }
}

/// The file where the follower records which pods' endpoints the rules
/// hold: one for the supervisor (`node` None), one per node's proxy.
pub fn programmed_file(plan: &Plan, node: Option<&str>) -> JsonFile<PodSet> {
    crate::state::files::endpoints(Path::new(&plan.state_dir), node)
}

/// Records `ready` in `file` atomically.
pub fn write_programmed(file: &JsonFile<PodSet>, ready: &PodSet) {
    if let Err(e) = file.write(ready) {
        tracing::warn!("{e}: the programmed endpoints are not recorded");
    }
}

/// Data paths that did not take the ready pods' endpoints in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "{lagging} do not hold the endpoints of the ready pods yet (the logs in {state_dir} say why)"
)]
pub struct NotProgrammed {
    /// The data paths, in words.
    pub lagging: String,
    /// The testbed's state directory.
    pub state_dir: String,
}

/// Waits until the nodes' rules (or proxies) hold the endpoints of every
/// pod that is ready now, so that `up` returns with services that answer.
/// At `deadline`, says which do not.
pub fn wait_programmed(plan: &Plan, deadline: Instant) -> Result<(), NotProgrammed> {
    if plan.services.is_empty() {
        return Ok(());
    }
    let files: Vec<(String, JsonFile<PodSet>)> = if plan.cluster.proxy == proxy::Mode::Userspace {
        plan.nodes
            .iter()
            .map(|n| {
                (
                    format!("the userspace proxy of node {}", n.name),
                    programmed_file(plan, Some(&n.name)),
                )
            })
            .collect()
    } else {
        vec![(
            "the nodes' service rules".to_string(),
            programmed_file(plan, None),
        )]
    };
    loop {
        let want = ready_pods(plan);
        let lagging: Vec<&str> = files
            .iter()
            .filter(|(_, f)| want.is_none() || f.read().ok() != want)
            .map(|(what, _)| what.as_str())
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotProgrammed {
                lagging: lagging.join(", "),
                state_dir: plan.state_dir.clone(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::serving;
    use crate::runtime::status::{ContainerStatus, State};
    use crate::runtime::OwnerKind;

    fn c(pod: &str, state: State, ready: bool) -> ContainerStatus {
        ContainerStatus {
            kind: OwnerKind::Pod,
            namespace: Some("default".into()),
            owner: pod.into(),
            container: "c".into(),
            pid: None,
            start_time: None,
            state,
            restarts: 0,
            last_exit: None,
            ready,
            ready_tcp: None,
            error: None,
            log: String::new(),
        }
    }

    #[test]
    fn a_pod_serves_while_a_container_runs_and_none_is_down() {
        let got = serving(&[
            c("up", State::Running, true),
            c("sidecar-done", State::Running, true),
            c("sidecar-done", State::Exited, false),
            c("not-ready", State::Running, false),
            c("all-exited", State::Exited, false),
            c("restarting", State::Running, true),
            c("restarting", State::Waiting, false),
            c("failed", State::Failed, false),
        ]);
        let names: Vec<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(names, ["sidecar-done", "up"]);
    }
}
