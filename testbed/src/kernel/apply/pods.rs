//! The pods of a plan, one batch of namespaces at a time: each pod's veth
//! pair made by its node (the outer end a hairpin port of the node's pod
//! bridge, the inner end moved into the pod's namespace as `eth0`), then
//! loopback, `eth0`, the pod's address and routes inside the pod.

use super::{configure_eth0, nl, ApplyError, Ns};
use crate::kernel::links;
use crate::plan::types::{PodPlan, Veth};
use crate::plan::Plan;
use futures::future::try_join_all;
use rtnetlink::Handle;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};

/// Configures the pods whose namespaces are in `batch`. `machines` holds
/// the nodes' namespaces and `bridges` each node's pod bridge index, in
/// plan order.
pub(super) async fn configure(
    plan: &Plan,
    machines: &HashMap<&str, &Ns>,
    bridges: &[u32],
    batch: &HashMap<&str, &Ns>,
) -> Result<(), ApplyError> {
    let node_of: HashMap<&str, usize> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let pods: Vec<_> = plan
        .pods
        .iter()
        .filter_map(|p| batch.get(p.netns.as_str()).map(|ns| (p, *ns)))
        .collect();
    try_join_all(pods.iter().map(|&(p, ns)| {
        let node_of = &node_of;
        async move {
            links::set_up(&ns.handle, "lo")
                .await
                .map_err(nl("bringing up lo".into(), &p.netns))?;
            let Some(i) = &p.interface else {
                return Ok(());
            };
            let (k, node) = node_of
                .get(p.node.as_str())
                .and_then(|&k| plan.nodes.get(k).map(|n| (k, n)))
                .ok_or_else(|| ApplyError::Unsupported(format!("pod {} has no node", p.name)))?;
            let bridge = bridges.get(k).copied().ok_or_else(|| {
                ApplyError::Unsupported(format!("node {} has no pod bridge", node.name))
            })?;
            let h = &machines
                .get(node.netns.as_str())
                .ok_or_else(|| {
                    ApplyError::Unsupported(format!("namespace `{}` was not created", node.netns))
                })?
                .handle;
            let fd = ns.netns.file.as_raw_fd();
            pod_interface(p, i, (h, &node.netns), bridge, (&ns.handle, fd)).await?;
            Ok::<(), ApplyError>(())
        }
    }))
    .await?;
    Ok(())
}

/// Makes pod `p`'s interface `i` as `up` does, and as drift repair does
/// again when either end has gone: the veth pair made by the node (`node`:
/// its handle and namespace name), the outer end a hairpin port of the pod
/// bridge `bridge` there, the inner end moved into the pod's namespace
/// (`pod`: its handle and namespace file) as `eth0` with its MAC and MTU,
/// then up (without IPv6 addresses) with the pod's address and routes.
pub(crate) async fn pod_interface(
    p: &PodPlan,
    i: &Veth,
    node: (&Handle, &str),
    bridge: u32,
    pod: (&Handle, RawFd),
) -> Result<(), ApplyError> {
    let (h, node_ns) = node;
    links::add_veth(h, &i.peer, Some(bridge), &i.inner, pod.1)
        .await
        .map_err(nl(
            format!(
                "creating interface {} of pod {}/{}",
                i.peer.name, p.namespace, p.name
            ),
            node_ns,
        ))?;
    links::set_hairpin(h, &i.peer.name).await.map_err(nl(
        format!("setting hairpin mode on {}", i.peer.name),
        node_ns,
    ))?;
    configure_eth0(pod.0, &p.netns, &i.inner.addresses, &p.routes).await?;
    Ok(())
}
