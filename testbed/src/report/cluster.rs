//! `status` of a machine's share of a testbed spread over several: every
//! machine with its address, whether etcd holds its heartbeat, its nodes
//! (with their readiness as this machine's controller sees them) and how
//! many of its pods serve; and whether etcd answers, since when.

use crate::cluster::EtcdHealth;
use crate::controller::live::Live;
use crate::plan::Plan;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The machines and etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// This machine.
    pub machine: String,
    /// etcd, as the agent last found it (`None` before its first look).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etcd: Option<EtcdHealth>,
    /// Every machine of the testbed, in file order.
    pub machines: Vec<MachineStatus>,
}

/// One machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// Its name.
    pub name: String,
    /// Its address on the real network.
    pub address: std::net::Ipv4Addr,
    /// Whether etcd held its heartbeat at the agent's last look.
    pub heartbeat: bool,
    /// Its nodes as its heartbeat names them (empty without one).
    pub nodes: Vec<String>,
    /// The nodes of it that this machine's controller holds NotReady.
    pub not_ready: Vec<String>,
    /// How many of its pods serve, by its heartbeat.
    pub ready_pods: usize,
    /// The faults in force on it, by its heartbeat.
    pub faults: Vec<String>,
}

/// The status of `plan`'s machines; `None` for a testbed on one machine.
pub fn status(plan: &Plan, live: &Live) -> Option<ClusterStatus> {
    let me = plan.machine.clone()?;
    let dir = std::path::Path::new(&plan.state_dir);
    let view = crate::cluster::read_view(dir);
    // Which machine runs each node: the whole testbed as filed.
    let whole = crate::controller::spec::read(dir)
        .ok()
        .and_then(|s| s.load_whole().ok());
    let machine_of = |node: &str| {
        whole
            .as_ref()
            .and_then(|w| w.plan.nodes.iter().find(|n| n.name == node))
            .and_then(|n| n.machine.clone())
    };
    let machines = plan
        .machines
        .iter()
        .map(|m| {
            let record = view.as_ref().and_then(|v| v.machines.get(&m.name));
            let not_ready = live
                .conditions
                .iter()
                .filter(|(n, c)| !c.ready && machine_of(n).as_deref() == Some(m.name.as_str()))
                .map(|(n, _)| n.clone())
                .collect();
            MachineStatus {
                name: m.name.clone(),
                address: m.address,
                heartbeat: record.is_some(),
                nodes: record.map(|r| r.nodes.clone()).unwrap_or_default(),
                not_ready,
                ready_pods: record.map_or(0, |r| r.ready.len()),
                faults: record.map(|r| r.faults.clone()).unwrap_or_default(),
            }
        })
        .collect();
    Some(ClusterStatus {
        machine: me,
        etcd: view.map(|v| v.etcd),
        machines,
    })
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.machines.iter().map(|m| {
            let me = if m.name == self.machine {
                " (this)"
            } else {
                ""
            };
            let nodes = if m.nodes.is_empty() {
                "-".to_string()
            } else {
                m.nodes.join(", ")
            };
            [
                format!("{}{me}", m.name),
                m.address.to_string(),
                if m.heartbeat { "yes" } else { "none" }.to_string(),
                nodes,
                if m.not_ready.is_empty() {
                    "-".to_string()
                } else {
                    m.not_ready.join(", ")
                },
                m.ready_pods.to_string(),
                if m.faults.is_empty() {
                    "-".to_string()
                } else {
                    m.faults.join(", ")
                },
            ]
        });
        f.write_str(&super::table(
            [
                "MACHINE",
                "ADDRESS",
                "HEARTBEAT",
                "NODES",
                "NOT READY",
                "READY PODS",
                "FAULTS",
            ],
            rows,
        ))?;
        let since = |ms: u64| crate::controller::events::rfc3339_ms(ms);
        match &self.etcd {
            None => writeln!(f, "etcd: not asked yet"),
            Some(e) if e.reachable => {
                writeln!(f, "etcd at {}: answers (since {})", e.endpoints, since(e.since_ms))
            }
            Some(e) => writeln!(
                f,
                "etcd at {}: UNREACHABLE since {} ({}); the data path runs on the last known leases and endpoints",
                e.endpoints,
                since(e.since_ms),
                e.error.as_deref().unwrap_or("no answer")
            ),
        }
    }
}
