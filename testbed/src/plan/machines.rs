//! Which real machine runs what, for a testbed spread over several
//! (`machines:`): the deterministic spread of nodes and hosts the file does
//! not place (`assignment`), its application to a plan (`assign`), and one
//! machine's share of a plan (`share`). Pure: no I/O.
//!
//! The spread: every `machine:` the file writes counts first. Then each
//! node without one, in file order, goes to the machine with the fewest
//! nodes so far, ties to the machine listed first (with no `machine:`
//! written, this is round-robin in file order); then each host without one
//! goes to the machine with the fewest nodes and hosts so far, ties the
//! same way. Pods follow their node; the LAN (the fabric namespace) has a
//! part on every machine.

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::plan::types::{HostPlan, MachinePlan, NodePlan, Plan};
use crate::topology::model::{Machine, Topology};
use serde::Serialize;

/// The machine of every node and host, by index into the file's lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The machine of each node.
    pub nodes: Vec<String>,
    /// The machine of each host.
    pub hosts: Vec<String>,
}

/// Assigns every node and host to one of `machines` (names, in file
/// order), keeping what the file wrote (`Some` in `nodes` and `hosts`) and
/// spreading the rest as the module comment says. `None` when there are no
/// machines (a testbed on one machine).
pub fn assignment(
    machines: &[&str],
    nodes: &[Option<&str>],
    hosts: &[Option<&str>],
) -> Option<Assignment> {
    if machines.is_empty() {
        return None;
    }
    let pos = |name: &str| machines.iter().position(|m| *m == name);
    // Nodes per machine, and nodes and hosts per machine, the written
    // ones counted first.
    let mut nodes_on = vec![0usize; machines.len()];
    let mut all_on = vec![0usize; machines.len()];
    for i in nodes.iter().flatten().filter_map(|w| pos(w)) {
        nodes_on[i] += 1;
        all_on[i] += 1;
    }
    for i in hosts.iter().flatten().filter_map(|w| pos(w)) {
        all_on[i] += 1;
    }
    let node_machines = spread(machines, nodes, || {
        let i = least(&nodes_on);
        nodes_on[i] += 1;
        all_on[i] += 1;
        i
    });
    let host_machines = spread(machines, hosts, || {
        let i = least(&all_on);
        all_on[i] += 1;
        i
    });
    Some(Assignment {
        nodes: node_machines,
        hosts: host_machines,
    })
}

/// Each entry's machine: the written one, or the one `pick` chooses.
fn spread(
    machines: &[&str],
    written: &[Option<&str>],
    mut pick: impl FnMut() -> usize,
) -> Vec<String> {
    written
        .iter()
        .map(|w| match w {
            Some(name) => name.to_string(),
            None => machines[pick()].to_string(),
        })
        .collect()
}

/// The index of the smallest count, the first of equal ones.
fn least(counts: &[usize]) -> usize {
    counts
        .iter()
        .enumerate()
        .min_by_key(|(i, c)| (**c, *i))
        .map_or(0, |(i, _)| i)
}

/// Fills in the machine of every node and host of a plan being built from
/// `topo`, and returns the plan's machines. Machines that get no node and
/// no host are a warning.
pub fn assign(
    topo: &Topology,
    nodes: &mut [NodePlan],
    hosts: &mut [HostPlan],
    diags: &mut Diagnostics,
) -> Vec<MachinePlan> {
    let names: Vec<&str> = topo
        .machines
        .iter()
        .map(|m| m.name.value.as_str())
        .collect();
    let (wn, wh) = (written(&topo.nodes), written(&topo.hosts));
    let Some(a) = assignment(&names, &wn, &wh) else {
        return Vec::new();
    };
    for (n, m) in nodes.iter_mut().zip(a.nodes) {
        n.machine = Some(m);
    }
    for (h, m) in hosts.iter_mut().zip(a.hosts) {
        h.machine = Some(m);
    }
    idle_machines(topo, nodes, hosts, diags);
    topo.machines
        .iter()
        .map(|m| MachinePlan {
            name: m.name.value.clone(),
            address: m.address.value,
        })
        .collect()
}

/// One warning naming the machines that get no node and no host: their
/// share would be only a part of the LAN.
fn idle_machines(topo: &Topology, nodes: &[NodePlan], hosts: &[HostPlan], diags: &mut Diagnostics) {
    let used = |name: &str| {
        nodes
            .iter()
            .map(|n| &n.machine)
            .chain(hosts.iter().map(|h| &h.machine))
            .any(|x| x.as_deref() == Some(name))
    };
    if diags.has_errors() {
        // A machine left idle by a broken `machine:` is that error's echo.
        return;
    }
    let idle: Vec<_> = topo
        .machines
        .iter()
        .filter(|m| !used(&m.name.value))
        .collect();
    let Some(first) = idle.first() else {
        return;
    };
    let mut names: Vec<String> = idle
        .iter()
        .take(5)
        .map(|m| format!("`{}`", m.name.value))
        .collect();
    if idle.len() > 5 {
        names.push(format!("{} more", idle.len() - 5));
    }
    let (which, verb) = match idle.len() {
        1 => ("the machine", "gets"),
        _ => ("the machines", "get"),
    };
    diags.push(
        Diagnostic::warning(
            &first.name.at,
            format!(
                "{which} {} {verb} no node and no host: a share would be only a part of the LAN",
                names.join(", ")
            ),
        )
        .help("put a node or host on each machine with `machine:`, or list fewer `machines`"),
    );
}

/// The `machine:` each entry of `list` writes.
fn written(list: &[Machine]) -> Vec<Option<&str>> {
    list.iter()
        .map(|m| m.machine.as_ref().map(|s| s.value.as_str()))
        .collect()
}

/// A pod, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    /// Its Kubernetes-style namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What one machine builds of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    /// The machine.
    pub machine: MachinePlan,
    /// The network namespaces it creates, in plan order: the fabric's (its
    /// part of the LAN), then its nodes', its hosts' and its pods' own.
    pub namespaces: Vec<String>,
    /// Its nodes, in plan order.
    pub nodes: Vec<String>,
    /// Its hosts, in plan order.
    pub hosts: Vec<String>,
    /// The pods of its nodes, in plan order.
    pub pods: Vec<PodRef>,
}

/// Why a share cannot be told.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    /// The plan is not spread over machines.
    #[error("the testbed `{0}` runs on one machine: its topology has no `machines:`")]
    NoMachines(String),
    /// No machine has that name.
    #[error("the testbed `{testbed}` has no machine named `{name}`; {hint}")]
    Unknown {
        /// The testbed.
        testbed: String,
        /// The name asked for.
        name: String,
        /// "did you mean" or the list of machines.
        hint: String,
    },
}

/// The share of `plan` that the machine `machine` builds.
pub fn share(plan: &Plan, machine: &str) -> Result<Share, ShareError> {
    if plan.machines.is_empty() {
        return Err(ShareError::NoMachines(plan.name.clone()));
    }
    let Some(m) = plan.machines.iter().find(|m| m.name == machine) else {
        let names: Vec<&str> = plan.machines.iter().map(|m| m.name.as_str()).collect();
        let hint = match did_you_mean(machine, &names) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("its machines are: {}", names.join(", ")),
        };
        return Err(ShareError::Unknown {
            testbed: plan.name.clone(),
            name: machine.to_string(),
            hint,
        });
    };
    let mine = |x: &Option<String>| x.as_deref() == Some(machine);
    let nodes: Vec<&NodePlan> = plan.nodes.iter().filter(|n| mine(&n.machine)).collect();
    let hosts: Vec<&HostPlan> = plan.hosts.iter().filter(|h| mine(&h.machine)).collect();
    let pods: Vec<_> = plan
        .pods
        .iter()
        .filter(|p| nodes.iter().any(|n| n.name == p.node))
        .collect();
    let namespaces = std::iter::once(plan.fabric.netns.clone())
        .chain(nodes.iter().map(|n| n.netns.clone()))
        .chain(hosts.iter().map(|h| h.netns.clone()))
        .chain(
            pods.iter()
                .filter(|p| p.owns_netns)
                .map(|p| p.netns.clone()),
        )
        .collect();
    Ok(Share {
        machine: m.clone(),
        namespaces,
        nodes: nodes.iter().map(|n| n.name.clone()).collect(),
        hosts: hosts.iter().map(|h| h.name.clone()).collect(),
        pods: pods
            .iter()
            .map(|p| PodRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests;

/// The plan of `machine`'s share of `plan` (see [`share`]): only its nodes,
/// hosts and pods, with `machine` set; the LAN, the services (endpoints on
/// every machine), the DNS records and the nodes' routes, neighbours and
/// forwarding entries (to every machine's nodes) stay whole. What a machine
/// builds, watches and repairs is exactly this plan.
pub fn restrict(plan: &Plan, machine: &str) -> Result<Plan, ShareError> {
    let s = share(plan, machine)?;
    let mut out = plan.clone();
    out.machine = Some(s.machine.name);
    out.nodes.retain(|n| n.machine.as_deref() == Some(machine));
    out.hosts.retain(|h| h.machine.as_deref() == Some(machine));
    let nodes: std::collections::BTreeSet<&str> = s.nodes.iter().map(String::as_str).collect();
    out.pods.retain(|p| nodes.contains(p.node.as_str()));
    Ok(out)
}
