//! The desired plan of a running testbed: its file as last applied with the
//! live changes (`live`) laid over it. Pure and deterministic: the same file
//! and the same live state give the same plan, byte for byte.
//!
//! - Replica counts set live replace the file's: the controller's pods are
//!   `RC-0` .. `RC-(N-1)`, from its template.
//! - Bare pods that are gone are left out.
//! - Every pod the file does not pin goes where it ran before (its `Pin`),
//!   so that a change elsewhere moves nothing; a pod without a pin (new, or
//!   evicted) is placed as `up` places pods, on the least-loaded node that
//!   takes pods, and gets the lowest free address of that node's subnet.
//! - A pod the file pins to a node that takes no pods is pending: it is left
//!   out until the node is ready again.
//! - Live impairments replace the file's.

use super::live::{pod_key, Live, Pin};
use crate::diag::Diagnostics;
use crate::plan::Plan;
use crate::topology::model::{Network, Pod, Sp, Topology};
use std::collections::BTreeSet;

/// The desired plan, and the pods that could not be placed.
#[derive(Debug)]
pub struct Desired {
    /// The plan.
    pub plan: Plan,
    /// Pods left out: pinned by the file to a node that takes no pods, or
    /// with no node to go to. `NAMESPACE/NAME`.
    pub pending: Vec<String>,
}

/// Why no plan could be made (the live state contradicts the file).
#[derive(Debug, thiserror::Error)]
#[error("the desired state cannot be planned: {}", .0.join("; "))]
pub struct DesiredError(pub Vec<String>);

/// The topology the desired plan is built from, and the pods left pending.
pub fn topology(spec: &Topology, live: &Live) -> (Topology, Vec<String>) {
    let mut topo = spec.clone();
    for rc in &spec.controllers {
        let key = pod_key(&rc.namespace.value, &rc.name.value);
        let Some(&n) = live.replicas.get(&key) else {
            continue;
        };
        topo.pods.retain(|p| {
            !(p.owner.as_deref() == Some(rc.name.value.as_str())
                && p.namespace.value == rc.namespace.value)
        });
        for i in 0..n {
            let mut pod = rc.template.clone();
            pod.name = Sp::new(format!("{}-{i}", rc.name.value), rc.name.at.clone());
            pod.owner = Some(rc.name.value.clone());
            topo.pods.push(pod);
        }
    }
    topo.pods.retain(|p| {
        !live
            .removed
            .contains(&pod_key(&p.namespace.value, &p.name.value))
    });
    let schedulable = topo
        .nodes
        .iter()
        .any(|n| !live.unschedulable.contains(&n.name.value));
    let mut pending = Vec::new();
    topo.pods.retain(|p| {
        let key = pod_key(&p.namespace.value, &p.name.value);
        let file_node = p.node.as_ref().map(|n| n.value.as_str());
        let placed_by_file = p.node.is_some() || p.ip.is_some();
        let keep = match (file_node, live.pins.get(&key)) {
            (Some(n), _) if live.unschedulable.contains(n) => false,
            _ if placed_by_file || is_shared(p) => true,
            (_, Some(_)) => true,
            (_, None) => schedulable,
        };
        if !keep {
            pending.push(key);
        }
        keep
    });
    for p in &mut topo.pods {
        if p.node.is_some() || p.ip.is_some() || is_shared(p) {
            continue;
        }
        let Some(pin) = live.pins.get(&pod_key(&p.namespace.value, &p.name.value)) else {
            continue;
        };
        p.node = Some(Sp::new(pin.node.clone(), p.name.at.clone()));
        if p.network.value == Network::Bridge {
            p.ip = pin.ip.map(|ip| Sp::new(ip, p.name.at.clone()));
        }
    }
    (topo, pending)
}

fn is_shared(p: &Pod) -> bool {
    matches!(p.network.value, Network::Container(_))
}

/// The desired plan of `spec` with `live` laid over it.
pub fn desired(spec: &Topology, live: &Live) -> Result<Desired, DesiredError> {
    let (topo, pending) = topology(spec, live);
    let mut diags = Diagnostics::default();
    let plan = crate::plan::build::build_with(&topo, &live.unschedulable, &mut diags);
    let errors: Vec<String> = diags
        .into_sorted()
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    match plan {
        Some(mut plan) if errors.is_empty() => {
            for (name, link) in &live.impairments {
                if let Some(n) = plan.nodes.iter_mut().find(|n| &n.name == name) {
                    n.link = link.clone();
                } else if let Some(h) = plan.hosts.iter_mut().find(|h| &h.name == name) {
                    h.link = link.clone();
                }
            }
            Ok(Desired { plan, pending })
        }
        _ => Err(DesiredError(errors)),
    }
}

/// [`desired`], as machine `machine`'s share when the testbed is spread
/// over machines (`plan::machines::restrict`): planned whole, so every
/// machine places every pod the same way, then cut to the share.
pub fn desired_share(
    spec: &Topology,
    live: &Live,
    machine: Option<&str>,
) -> Result<Desired, DesiredError> {
    let mut d = desired(spec, live)?;
    if let Some(m) = machine {
        let lost = lost_elsewhere(&d.plan, live, m);
        d.plan = crate::plan::machines::restrict(&d.plan, m)
            .map_err(|e| DesiredError(vec![e.to_string()]))?;
        for n in &mut d.plan.nodes {
            forget_nodes(n, &lost);
        }
    }
    Ok(d)
}

/// The nodes of machines other than `me` that are NotReady, as the nodes
/// of this machine reach them: LAN address, pod subnet, VTEP MAC.
fn lost_elsewhere(
    whole: &Plan,
    live: &Live,
    me: &str,
) -> Vec<(std::net::Ipv4Addr, String, Option<crate::plan::types::Mac>)> {
    whole
        .nodes
        .iter()
        .filter(|n| n.machine.as_deref().is_some_and(|m| m != me))
        .filter(|n| live.conditions.get(&n.name).is_some_and(|c| !c.ready))
        .map(|n| {
            let mac = n.overlay.as_ref().and_then(|o| o.iface.mac);
            (n.ip, n.lease.subnet.to_string(), mac)
        })
        .collect()
}

/// Drops node `n`'s routes to the pod subnets of `lost` nodes, and its
/// overlay neighbour and forwarding entries for them (what flannel does
/// when their leases expire).
fn forget_nodes(
    n: &mut crate::plan::types::NodePlan,
    lost: &[(std::net::Ipv4Addr, String, Option<crate::plan::types::Mac>)],
) {
    for (ip, subnet, mac) in lost {
        n.routes.retain(|r| &r.dst != subnet);
        if let Some(mac) = mac {
            n.neighbours.retain(|x| &x.mac != mac);
            n.fdb.retain(|x| &x.mac != mac);
        }
        n.fdb.retain(|x| x.dst != *ip);
    }
}

/// Where every pod of `plan` runs, as pins.
pub fn pins(plan: &Plan) -> std::collections::BTreeMap<String, Pin> {
    plan.pods
        .iter()
        .map(|p| {
            (
                pod_key(&p.namespace, &p.name),
                Pin {
                    node: p.node.clone(),
                    ip: p.ip.filter(|_| p.network == "bridge"),
                },
            )
        })
        .collect()
}

/// Pins every pod of `plan` where it runs, unless it has a pin already or
/// runs on a node that takes no pods (its pods are being evicted), so that
/// planning again moves nothing that is not meant to move.
pub fn keep_pins(plan: &Plan, live: &mut Live) {
    for (key, pin) in pins(plan) {
        if !live.unschedulable.contains(&pin.node) {
            live.pins.entry(key).or_insert(pin);
        }
    }
}

/// Evicts every pod of `plan` on node `node`: controller pods lose their
/// pin (they are placed again), bare pods are removed. Returns the pods
/// evicted, `NAMESPACE/NAME`.
pub fn evict(plan: &Plan, node: &str, live: &mut Live) -> Vec<String> {
    let mut out = Vec::new();
    for p in plan.pods.iter().filter(|p| p.node == node) {
        let key = pod_key(&p.namespace, &p.name);
        live.pins.remove(&key);
        if p.owner.is_none() {
            live.removed.insert(key.clone());
        } else {
            *live.moves.entry(key.clone()).or_insert(0) += 1;
        }
        out.push(key);
    }
    out
}

/// The pods the file wants that `plan` does not run because the node the
/// file pins them to takes no pods (what `status` calls pending).
pub fn pending(plan: &Plan, live: &Live) -> Vec<String> {
    let Some(topo) = crate::controller::spec::read(std::path::Path::new(&plan.state_dir))
        .ok()
        .and_then(|s| s.load().ok())
    else {
        return Vec::new();
    };
    topology(&topo.topology, live).1
}

/// The pods `plan` has, `NAMESPACE/NAME`.
pub fn pod_keys(plan: &Plan) -> BTreeSet<String> {
    plan.pods
        .iter()
        .map(|p| pod_key(&p.namespace, &p.name))
        .collect()
}

#[cfg(test)]
mod tests;
