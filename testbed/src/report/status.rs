//! `testbed status`: a running testbed's nodes (with their overlay daemon's
//! counters), hosts and pods (phase, readiness, restarts, each container's
//! state), services with the endpoints the proxies hold, and its
//! supervisor. [`report`] is a pure function of the plan and what was read
//! (the supervisor's container statuses, the daemons' counters, whether the
//! supervisor runs); [`status`] reads those.

use super::{nodes_table, section, service_cells, table, Host, Node, Pod};
use crate::controller::events::Event;
use crate::controller::live::{ActiveFault, Live};
use crate::plan::types::ContainerPlan;
use crate::plan::Plan;
use crate::runtime::status::{ContainerStatus, Exit, State};
use crate::runtime::OwnerKind;
use overlay::stats::StatsSnapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The status of one testbed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The testbed.
    pub name: String,
    /// Its supervisor.
    pub supervisor: Supervisor,
    /// Its nodes.
    pub nodes: Vec<NodeStatus>,
    /// Its hosts.
    pub hosts: Vec<HostStatus>,
    /// Its pods.
    pub pods: Vec<PodStatus>,
    /// Its services, with the endpoints of the pods that serve (what the
    /// proxies hold).
    pub services: Vec<proxy::Service>,
    /// The faults in force.
    pub faults: Vec<ActiveFault>,
    /// Pods the controller cannot place now (pinned by the file to a node
    /// that is not ready), `NAMESPACE/NAME`.
    pub pending: Vec<String>,
    /// The controller's last events, oldest first.
    pub recent: Vec<Event>,
    /// A machine's share of a testbed spread over several: the machines
    /// and etcd, as this machine sees them.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster: Option<super::cluster::ClusterStatus>,
}

/// Whether the supervisor runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Supervisor {
    /// Whether it runs.
    pub running: bool,
    /// Its process, while it runs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<i32>,
}

/// A node and its overlay daemon's counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node.
    #[serde(flatten)]
    pub node: Node,
    /// Its udp overlay daemon's counters (udp overlay, once it wrote them).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub overlay: Option<StatsSnapshot>,
    /// Whether the controller finds it ready.
    pub ready: bool,
    /// Why not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub not_ready_reason: Option<String>,
}

/// A host and its containers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// The host.
    #[serde(flatten)]
    pub host: Host,
    /// Its phase (hosts with containers only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phase: Option<Phase>,
    /// Its containers.
    pub containers: Vec<Container>,
}

/// A pod and its containers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// The pod.
    #[serde(flatten)]
    pub pod: Pod,
    /// Its phase.
    pub phase: Phase,
    /// Whether it serves: a container runs and every one is running and
    /// ready or ended successfully (its endpoints are in the rotation).
    pub ready: bool,
    /// Restarts of all its containers.
    pub restarts: u32,
    /// Its containers.
    pub containers: Vec<Container>,
}

/// A pod's or host's phase, as Kubernetes names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Some container is not (yet) running and ready.
    Pending,
    /// Every container runs and is ready (or ended successfully).
    Running,
    /// Every container ended successfully for good.
    Succeeded,
    /// A container failed for good.
    Failed,
    /// The supervisor has said nothing of it yet.
    Unknown,
}

/// One container, as the supervisor last reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Its name.
    pub name: String,
    /// What it is doing.
    pub state: ContainerState,
    /// Its process, while it runs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<i32>,
    /// How often it was started again.
    pub restarts: u32,
    /// How its last run ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_exit: Option<Exit>,
    /// Whether it runs and its ready check passed.
    pub ready: bool,
    /// Its ready check: a TCP port.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ready_tcp: Option<u16>,
    /// Why its last start failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Its log file.
    pub log: String,
}

/// What a container is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Its process runs.
    Running,
    /// To be started (again) after a back-off.
    Waiting,
    /// Ended with code 0 and stays ended.
    Exited,
    /// Ended otherwise (or could not start) and stays ended.
    Failed,
    /// The supervisor has not reported it yet.
    Unknown,
}

impl From<State> for ContainerState {
    fn from(s: State) -> ContainerState {
        match s {
            State::Running => ContainerState::Running,
            State::Waiting => ContainerState::Waiting,
            State::Exited => ContainerState::Exited,
            State::Failed => ContainerState::Failed,
        }
    }
}

impl Container {
    /// Container `plan` as `status` reports it (`None`: not reported yet).
    fn new(plan: &ContainerPlan, status: Option<&ContainerStatus>) -> Container {
        Container {
            name: plan.name.clone(),
            state: status.map_or(ContainerState::Unknown, |s| s.state.into()),
            pid: status.and_then(|s| s.pid),
            restarts: status.map_or(0, |s| s.restarts),
            last_exit: status.and_then(|s| s.last_exit),
            ready: status.is_some_and(|s| s.ready),
            ready_tcp: plan.ready_tcp,
            error: status.and_then(|s| s.error.clone()),
            log: status.map_or_else(|| plan.log.clone(), |s| s.log.clone()),
        }
    }

    /// Whether nothing is to be waited for: running and ready, or ended
    /// successfully for good.
    fn settled(&self) -> bool {
        match self.state {
            ContainerState::Running => self.ready,
            ContainerState::Exited => true,
            _ => false,
        }
    }
}

/// The phase of a pod or host with these containers: Failed (one failed for
/// good), Succeeded (all ended well), Running (all running and ready, or
/// ended well), Unknown (none reported), Pending otherwise.
fn phase(cs: &[Container]) -> Phase {
    if cs.iter().all(|c| c.state == ContainerState::Unknown) {
        Phase::Unknown
    } else if cs.iter().any(|c| c.state == ContainerState::Failed) {
        Phase::Failed
    } else if cs.iter().all(|c| c.state == ContainerState::Exited) {
        Phase::Succeeded
    } else if cs.iter().all(Container::settled) {
        Phase::Running
    } else {
        Phase::Pending
    }
}

/// The containers of one pod or host, in plan order, with their statuses.
fn containers(
    statuses: &[ContainerStatus],
    kind: OwnerKind,
    namespace: Option<&str>,
    owner: &str,
    plans: &[ContainerPlan],
) -> Vec<Container> {
    plans
        .iter()
        .map(|c| {
            let s = statuses.iter().find(|s| {
                s.kind == kind
                    && s.namespace.as_deref() == namespace
                    && s.owner == owner
                    && s.container == c.name
            });
            Container::new(c, s)
        })
        .collect()
}

/// The status of testbed `plan`, from the supervisor's container statuses
/// (empty while it has written none), each node's overlay daemon counters
/// (by node name) and whether the supervisor runs.
pub fn report(
    plan: &Plan,
    statuses: &[ContainerStatus],
    overlay: &BTreeMap<String, StatsSnapshot>,
    supervisor: Supervisor,
) -> StatusReport {
    use crate::services::endpoints;
    // Endpoints are the serving pods', as the proxies hold them (every
    // pod's while the supervisor has said nothing yet).
    let serving = if statuses.is_empty() {
        endpoints::all_pods(plan)
    } else {
        // On a machine's share, with the other machines' ready pods.
        let mut s = endpoints::serving(statuses);
        s.extend(crate::cluster::remote_ready(plan));
        s
    };
    StatusReport {
        name: plan.name.clone(),
        supervisor,
        cluster: None,
        nodes: plan
            .nodes
            .iter()
            .map(|n| NodeStatus {
                node: n.into(),
                overlay: overlay.get(&n.name).cloned(),
                ready: true,
                not_ready_reason: None,
            })
            .collect(),
        hosts: plan
            .hosts
            .iter()
            .map(|h| {
                let cs = containers(statuses, OwnerKind::Host, None, &h.name, &h.containers);
                HostStatus {
                    host: h.into(),
                    phase: (!cs.is_empty()).then(|| phase(&cs)),
                    containers: cs,
                }
            })
            .collect(),
        pods: plan
            .pods
            .iter()
            .map(|p| {
                let ns = Some(p.namespace.as_str());
                let cs = containers(statuses, OwnerKind::Pod, ns, &p.name, &p.containers);
                PodStatus {
                    pod: p.into(),
                    phase: phase(&cs),
                    ready: serving.contains(&(p.namespace.clone(), p.name.clone())),
                    restarts: cs.iter().map(|c| c.restarts).sum(),
                    containers: cs,
                }
            })
            .collect(),
        services: endpoints::with_ready_endpoints(plan, &serving),
        faults: Vec::new(),
        pending: Vec::new(),
        recent: Vec::new(),
    }
}

/// How many of the controller's last events `status` shows.
pub const RECENT: usize = 5;

impl StatusReport {
    /// The report with the machines' and etcd's status (`None`: a testbed
    /// on one machine).
    pub fn with_cluster(mut self, cluster: Option<super::cluster::ClusterStatus>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The report with what the controller keeps: node readiness, the
    /// faults in force, pending pods, and its last events.
    pub fn with_controller(mut self, live: &Live, pending: Vec<String>, events: &[Event]) -> Self {
        for n in &mut self.nodes {
            if let Some(c) = live.conditions.get(&n.node.name).filter(|c| !c.ready) {
                n.ready = false;
                n.not_ready_reason = c.reason.clone();
            }
        }
        self.faults = live.faults.clone();
        self.pending = pending;
        self.recent = events[events.len().saturating_sub(RECENT)..].to_vec();
        self
    }
}

/// The status of running testbed `plan`, read from its state directory and
/// its processes.
pub fn status(plan: &Plan) -> StatusReport {
    let statuses = crate::runtime::status::read(std::path::Path::new(&plan.state_dir))
        .map(|s| s.containers)
        .unwrap_or_default();
    let pid = crate::state::pids::supervisor(std::path::Path::new(&plan.state_dir));
    let supervisor = Supervisor {
        running: pid.is_some(),
        pid,
    };
    let dir = std::path::Path::new(&plan.state_dir);
    let live = crate::controller::live::read(dir).unwrap_or_default();
    let events = crate::controller::events::read(dir).unwrap_or_default();
    let pending = crate::controller::desired::pending(plan, &live);
    report(
        plan,
        &statuses,
        &crate::overlay_run::stats(plan),
        supervisor,
    )
    .with_controller(&live, pending, &events)
    .with_cluster(super::cluster::status(plan, &live))
}

/// One row of the overlay table: packets each way and drops by reason.
fn overlay_row(node: &str, s: &StatsSnapshot) -> [String; 4] {
    // The drop reasons by their JSON names, so that the table and the JSON
    // name them alike.
    let drops: Vec<String> = match serde_json::to_value(s.drops) {
        Ok(serde_json::Value::Object(m)) => m
            .iter()
            .filter_map(|(k, x)| x.as_u64().filter(|c| *c > 0).map(|c| format!("{k}={c}")))
            .collect(),
        _ => Vec::new(),
    };
    let traffic = |t: overlay::stats::Traffic| format!("{} pkts / {} B", t.packets, t.bytes);
    [
        node.to_string(),
        traffic(s.tun_to_udp),
        traffic(s.udp_to_tun),
        if drops.is_empty() {
            "-".into()
        } else {
            drops.join(" ")
        },
    ]
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let running = if self.supervisor.running {
            "running"
        } else {
            "not running"
        };
        writeln!(f, "testbed {} (supervisor {running})\n", self.name)?;
        write_nodes(f, &self.nodes)?;
        write_hosts(f, &self.hosts)?;
        write_pods(f, &self.pods)?;
        write_services(f, &self.services)?;
        write_faults(f, &self.faults)?;
        if !self.pending.is_empty() {
            writeln!(
                f,
                "\npending (no ready node to run on): {}",
                self.pending.join(", ")
            )?;
        }
        if let Some(c) = &self.cluster {
            write!(f, "\n{c}")?;
        }
        if !self.recent.is_empty() {
            writeln!(f, "\nLAST EVENTS")?;
            f.write_str(&crate::controller::events::render(&self.recent))?;
        }
        write_overlay(f, &self.nodes)
    }
}

/// Writes the nodes' table, then a line for each node that is NotReady.
fn write_nodes(f: &mut fmt::Formatter<'_>, nodes: &[NodeStatus]) -> fmt::Result {
    f.write_str(&nodes_table(nodes.iter().map(|n| &n.node)))?;
    for n in nodes.iter().filter(|n| !n.ready) {
        let why = n.not_ready_reason.as_deref().unwrap_or("unreachable");
        writeln!(f, "node {} is NotReady: {why}", n.node.name)?;
    }
    Ok(())
}

/// Writes the hosts' section (nothing if there are none).
fn write_hosts(f: &mut fmt::Formatter<'_>, hosts: &[HostStatus]) -> fmt::Result {
    section(f, hosts.len(), || {
        table(
            ["HOST", "ADDRESS", "PHASE"],
            hosts.iter().map(|h| {
                let phase = h.phase.map_or("-".into(), |p| format!("{p:?}"));
                [h.host.name.clone(), h.host.address.to_string(), phase]
            }),
        )
    })
}

/// Writes the pods' section (nothing if there are none).
fn write_pods(f: &mut fmt::Formatter<'_>, pods: &[PodStatus]) -> fmt::Result {
    section(f, pods.len(), || {
        table(
            ["POD", "NODE", "ADDRESS", "PHASE", "RESTARTS"],
            pods.iter().map(|p| {
                [
                    p.pod.qualified(),
                    p.pod.node.clone(),
                    p.pod.address_cell(),
                    format!("{:?}", p.phase),
                    p.restarts.to_string(),
                ]
            }),
        )
    })
}

/// Writes the services' section with the endpoints the proxies hold
/// (nothing if there are no services).
fn write_services(f: &mut fmt::Formatter<'_>, services: &[proxy::Service]) -> fmt::Result {
    section(f, services.len(), || {
        table(
            ["SERVICE", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "ENDPOINTS"],
            services.iter().map(|s| {
                let mut eps: Vec<String> = s
                    .ports
                    .iter()
                    .flat_map(|p| p.endpoints.iter().map(|e| format!("{}:{}", e.ip, e.port)))
                    .collect();
                eps.dedup();
                let eps = if eps.is_empty() {
                    "<none>".to_string()
                } else {
                    eps.join(",")
                };
                let [name, kind, ip, ext] = service_cells(s);
                [name, kind, ip, ext, eps]
            }),
        )
    })
}

/// Writes the section of the faults in force (nothing if there are none).
fn write_faults(f: &mut fmt::Formatter<'_>, faults: &[ActiveFault]) -> fmt::Result {
    section(f, faults.len(), || {
        table(
            ["FAULT", "SINCE", "UNTIL"],
            faults.iter().map(|a| {
                [
                    a.fault.to_string(),
                    crate::controller::events::rfc3339_ms(a.since_ms),
                    a.until_ms
                        .map_or("-".into(), crate::controller::events::rfc3339_ms),
                ]
            }),
        )
    })
}

/// Writes the overlay daemons' counters of the nodes that have them
/// (nothing if none has), then a line for each lease file a daemon skipped.
fn write_overlay(f: &mut fmt::Formatter<'_>, nodes: &[NodeStatus]) -> fmt::Result {
    let daemons: Vec<(&str, &StatsSnapshot)> = nodes
        .iter()
        .filter_map(|n| Some((n.node.name.as_str(), n.overlay.as_ref()?)))
        .collect();
    section(f, daemons.len(), || {
        table(
            ["OVERLAY", "SENT (TUN->UDP)", "RECEIVED (UDP->TUN)", "DROPS"],
            daemons.iter().map(|(n, s)| overlay_row(n, s)),
        )
    })?;
    for (node, s) in &daemons {
        for b in &s.bad_leases {
            writeln!(
                f,
                "{node}: lease file {} skipped ({}); the lease it last held is kept",
                b.file, b.error
            )?;
        }
    }
    Ok(())
}
