//! Pods added to and removed from a running testbed, one by one or a few at
//! a time, by the controller: the nodes' namespaces exist already; a pod's
//! namespace, veth pair, address and routes are made as `up` makes them
//! (`pods::configure`), and removed by deleting the pair from the node's
//! side and unpinning the namespace.

use super::{create_namespaces, nl, pod_spec, pods, ApplyError, Ns, NsSpec};
use crate::kernel::netns::{self, Netns};
use crate::plan::Plan;
use std::collections::{BTreeSet, HashMap};

fn runtime() -> Result<tokio::runtime::Runtime, ApplyError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ApplyError::Runtime)
}

/// A netlink handle inside the existing namespace `name`.
fn open(rt: &tokio::runtime::Runtime, name: &str) -> Result<Ns, ApplyError> {
    let netns = Netns::open(name)?;
    let handle = netns.netlink(rt)?;
    Ok(Ns { netns, handle })
}

fn key(p: &crate::plan::types::PodPlan) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// The pods of `plan` named in `keys` that have a namespace of their own.
fn owned<'p>(plan: &'p Plan, keys: &BTreeSet<String>) -> Vec<&'p crate::plan::types::PodPlan> {
    plan.pods
        .iter()
        .filter(|p| p.owns_netns && keys.contains(&key(p)))
        .collect()
}

/// Makes the pods of `plan` named in `keys` (`NAMESPACE/NAME`) in the
/// kernel. A namespace left by an earlier run of the same pod is removed
/// first. On failure the namespaces made are removed again.
pub fn add_pods(plan: &Plan, keys: &BTreeSet<String>) -> Result<(), ApplyError> {
    let pods = owned(plan, keys);
    if pods.is_empty() {
        return Ok(());
    }
    let rt = runtime()?;
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    let mut machines = Vec::new();
    let mut bridges = vec![0u32; plan.nodes.len()];
    for (i, n) in plan.nodes.iter().enumerate() {
        if !nodes.contains(n.name.as_str()) {
            continue;
        }
        let ns = open(&rt, &n.netns)?;
        bridges[i] = rt
            .block_on(crate::kernel::links::index(&ns.handle, &n.bridge.name))
            .map_err(nl(format!("finding {}", n.bridge.name), &n.netns))?;
        machines.push(ns);
    }
    let specs: Vec<NsSpec> = pods
        .iter()
        .map(|p| {
            let _ = netns::delete(&p.netns);
            pod_spec(&p.netns)
        })
        .collect();
    let (made, err) = create_namespaces(specs, rt.handle(), 1, None);
    let result = match err {
        Some(e) => Err(e),
        None => {
            let by_name: HashMap<&str, &Ns> = machines
                .iter()
                .map(|n| (n.netns.name.as_str(), n))
                .collect();
            let batch: HashMap<&str, &Ns> =
                made.iter().map(|n| (n.netns.name.as_str(), n)).collect();
            rt.block_on(pods::configure(plan, &by_name, &bridges, &batch))
        }
    };
    if result.is_err() {
        for n in &made {
            let _ = netns::delete(&n.netns.name);
        }
    }
    result
}

/// Removes the kernel objects of the pods of `plan` named in `keys` by
/// unpinning their namespaces: the kernel frees each namespace, and its
/// veth pair with it, in the background once nothing holds it (deleting
/// the pairs one by one costs a wait for the kernel per pair). Pods in
/// `now` (made again at once, on the same node, with the same interface
/// names) have their pair deleted first, from the node's side, so that the
/// names are free on return. What is already gone is skipped.
pub fn remove_pods(
    plan: &Plan,
    keys: &BTreeSet<String>,
    now: &BTreeSet<String>,
) -> Result<(), ApplyError> {
    let pods = owned(plan, keys);
    if pods.is_empty() {
        return Ok(());
    }
    let rt = runtime()?;
    let mut handles: HashMap<&str, Ns> = HashMap::new();
    for p in &pods {
        if let Some(i) = p.interface.as_ref().filter(|_| now.contains(&key(p))) {
            if !handles.contains_key(i.peer_netns.as_str()) {
                if let Ok(ns) = open(&rt, &i.peer_netns) {
                    handles.insert(i.peer_netns.as_str(), ns);
                }
            }
            if let Some(ns) = handles.get(i.peer_netns.as_str()) {
                rt.block_on(crate::kernel::links::delete_if_present(
                    &ns.handle,
                    &i.peer.name,
                ))
                .map_err(nl(format!("deleting {}", i.peer.name), &i.peer_netns))?;
            }
        }
        netns::delete(&p.netns)?;
    }
    forget_addresses(plan, &pods, &rt);
    Ok(())
}

/// Deletes each removed pod's address from its node's neighbour table (on
/// the node's pod bridge): a pod made later with that address and another
/// MAC is then found by a fresh ARP at once, not after the stale entry's
/// probes fail (seconds in which the node sends to the old MAC). A failure
/// (no such entry, the node gone) is ignored.
fn forget_addresses(
    plan: &Plan,
    pods: &[&crate::plan::types::PodPlan],
    rt: &tokio::runtime::Runtime,
) {
    let mut nodes: HashMap<&str, Option<(Ns, u32)>> = HashMap::new();
    for p in pods {
        let Some(ip) = p.ip.filter(|_| p.interface.is_some()) else {
            continue;
        };
        let Some(node) = plan.nodes.iter().find(|n| n.name == p.node) else {
            continue;
        };
        let entry = nodes.entry(node.netns.as_str()).or_insert_with(|| {
            let ns = open(rt, &node.netns).ok()?;
            let idx = rt
                .block_on(crate::kernel::links::index(&ns.handle, &node.bridge.name))
                .ok()?;
            Some((ns, idx))
        });
        if let Some((ns, idx)) = entry {
            let _ = rt.block_on(crate::kernel::links::del_neighbour(&ns.handle, *idx, ip));
        }
    }
}

/// Sets interface `link` of namespace `netns` up or down (a fault, or its
/// end).
pub fn set_link(netns: &str, link: &str, up: bool) -> Result<(), ApplyError> {
    let rt = runtime()?;
    let ns = open(&rt, netns)?;
    let what = format!("setting {link} {}", if up { "up" } else { "down" });
    rt.block_on(crate::kernel::links::set_admin(&ns.handle, link, up))
        .map_err(nl(what, netns))
}

/// Replaces the kernel impairments of machine `machine` (a node or host of
/// `plan`, with its link as `plan` now says) on both ends of its uplink:
/// the old root qdiscs go, the new ones (if any) are added.
pub fn set_impairment(plan: &Plan, machine: &str) -> Result<(), ApplyError> {
    let (netns, up, link) = match plan.nodes.iter().find(|n| n.name == machine) {
        Some(n) => (&n.netns, &n.uplink, &n.link),
        None => match plan.hosts.iter().find(|h| h.name == machine) {
            Some(h) => (&h.netns, &h.uplink, &h.link),
            None => return Ok(()),
        },
    };
    let rt = runtime()?;
    for (ns, dev) in [
        (netns.as_str(), &up.inner.name),
        (up.peer_netns.as_str(), &up.peer.name),
    ] {
        let h = open(&rt, ns)?;
        rt.block_on(async {
            let idx = crate::kernel::links::index(&h.handle, dev)
                .await
                .map_err(nl(format!("finding {dev}"), ns))?;
            crate::kernel::qdisc::del_root(&h.handle, idx)
                .await
                .map_err(nl(format!("removing the qdisc of {dev}"), ns))?;
            match link {
                Some(l) => super::machines::impair_link(machine, ns, &h.handle, dev, l).await,
                None => Ok(()),
            }
        })?;
    }
    Ok(())
}
