//! The pods of a plan, one batch of namespaces at a time: each pod's veth
//! pair made by its node (the outer end a hairpin port of the node's pod
//! bridge, the inner end moved into the pod's namespace as `eth0`), then
//! loopback, `eth0`, the pod's address and routes inside the pod.

use super::{nl, route_text, uplink_up, ApplyError, Ns};
use crate::kernel::links;
use crate::plan::Plan;
use futures::future::try_join_all;
use std::collections::HashMap;
use std::os::fd::AsRawFd;

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
            links::add_veth(
                h,
                &i.peer,
                Some(bridge),
                &i.inner,
                ns.netns.file.as_raw_fd(),
            )
            .await
            .map_err(nl(
                format!(
                    "creating interface {} of pod {}/{}",
                    i.peer.name, p.namespace, p.name
                ),
                &node.netns,
            ))?;
            links::set_hairpin(h, &i.peer.name).await.map_err(nl(
                format!("setting hairpin mode on {}", i.peer.name),
                &node.netns,
            ))?;
            // The address before the link comes up: with `arp_notify` (set
            // in pods made while the testbed runs) the kernel announces it
            // as the link comes up, so that neighbours that knew the
            // address with another pod's MAC learn the new one at once.
            let eth = links::index(&ns.handle, "eth0")
                .await
                .map_err(nl("finding eth0".into(), &p.netns))?;
            for a in &i.inner.addresses {
                links::add_address(&ns.handle, eth, *a)
                    .await
                    .map_err(nl(format!("adding {a} to eth0"), &p.netns))?;
            }
            uplink_up(&ns.handle, &p.netns).await?;
            for r in &p.routes {
                links::add_route(&ns.handle, r, eth)
                    .await
                    .map_err(nl(route_text(r), &p.netns))?;
            }
            Ok::<(), ApplyError>(())
        }
    }))
    .await?;
    Ok(())
}
