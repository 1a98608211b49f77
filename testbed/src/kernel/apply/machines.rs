//! The machines of a plan: the fabric's LAN bridge, each node's pod bridge,
//! the uplinks from the LAN to every node and host, their addresses and
//! routes, each node's overlay device (a backend is one arm of
//! [`configure_node`]) and the link impairments the kernel applies.

use super::{configure_eth0, nl, route_text, ApplyError, Ns};
use crate::kernel::netns::NetnsError;
use crate::kernel::{links, qdisc};
use crate::plan::state::{kernel_impaired, needs_netem};
use crate::plan::types::{IfAddr, LinkPlan, NodePlan, OverlayDevice, Veth};
use crate::plan::Plan;
use futures::future::try_join_all;
use overlay::Backend;
use rtnetlink::Handle;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};

/// Configures the fabric, the nodes and the hosts; returns each node's pod
/// bridge index (in plan order), for the pods' interfaces.
pub(super) async fn configure(
    plan: &Plan,
    ns: &HashMap<&str, &Ns>,
) -> Result<Vec<u32>, ApplyError> {
    let fabric = ns_of(ns, &plan.fabric.netns)?;
    // Stage 1: bridges and loopbacks.
    let (lan_idx, bridge_idx) = add_bridges(plan, ns, fabric).await?;
    // Stage 2: veth pairs.
    add_uplinks(plan, ns, fabric, lan_idx).await?;
    // Stage 3: addresses, routes and the overlay.
    let nodes = try_join_all(
        plan.nodes
            .iter()
            .zip(bridge_idx.iter())
            .map(|(n, &br)| async move {
                let ns = ns_of(ns, &n.netns)?;
                configure_node(plan, n, ns, br).await
            }),
    );
    let hosts = try_join_all(plan.hosts.iter().map(|m| async move {
        let h = &ns_of(ns, &m.netns)?.handle;
        configure_eth0(h, &m.netns, &m.uplink.inner.addresses, &[]).await?;
        Ok::<(), ApplyError>(())
    }));
    futures::try_join!(nodes, hosts)?;
    // Stage 4: link impairments the kernel applies.
    impair_links(plan, ns, fabric).await?;
    Ok(bridge_idx)
}

/// The created namespace `name`.
fn ns_of<'a>(ns: &HashMap<&str, &'a Ns>, name: &str) -> Result<&'a Ns, ApplyError> {
    ns.get(name)
        .copied()
        .ok_or_else(|| ApplyError::Unsupported(format!("namespace `{name}` was not created")))
}

/// Makes the LAN bridge and every node's pod bridge, and brings up every
/// namespace's loopback; returns the LAN bridge's index and the pod
/// bridges' (in plan order).
async fn add_bridges(
    plan: &Plan,
    ns: &HashMap<&str, &Ns>,
    fabric: &Ns,
) -> Result<(u32, Vec<u32>), ApplyError> {
    let lan = async {
        links::add_bridge(&fabric.handle, &plan.fabric.bridge)
            .await
            .map_err(nl("creating the LAN bridge".into(), &fabric.netns.name))
    };
    let bridges = try_join_all(plan.nodes.iter().map(|n| async move {
        let h = &ns_of(ns, &n.netns)?.handle;
        links::add_bridge(h, &n.bridge)
            .await
            .map_err(nl(format!("creating bridge {}", n.bridge.name), &n.netns))
    }));
    let loopbacks = try_join_all(ns.values().map(|n| async move {
        links::set_up(&n.handle, "lo")
            .await
            .map_err(nl("bringing up lo".into(), &n.netns.name))
    }));
    let (lan_idx, bridge_idx, _) = futures::try_join!(lan, bridges, loopbacks)?;
    Ok((lan_idx, bridge_idx))
}

/// Makes every node's and host's uplink, all from the fabric (the pods'
/// interfaces are each node's, later). Requests on one handle are
/// pipelined.
async fn add_uplinks(
    plan: &Plan,
    ns: &HashMap<&str, &Ns>,
    fabric: &Ns,
    lan_idx: u32,
) -> Result<(), ApplyError> {
    let fd =
        |name: &str| -> Result<RawFd, ApplyError> { Ok(ns_of(ns, name)?.netns.file.as_raw_fd()) };
    let uplinks = try_join_all(
        plan.nodes
            .iter()
            .map(|n| (&n.uplink, n.netns.as_str()))
            .chain(plan.hosts.iter().map(|h| (&h.uplink, h.netns.as_str())))
            .map(|(up, machine)| async move {
                let fabric = (&fabric.handle, fabric.netns.name.as_str());
                uplink(fabric, lan_idx, up, (machine, fd(machine)?)).await
            }),
    );
    uplinks.await?;
    Ok(())
}

/// Applies the link impairments the kernel applies, at both ends of each
/// impaired uplink (the udp overlay applies its nodes' in its own data
/// path).
async fn impair_links(plan: &Plan, ns: &HashMap<&str, &Ns>, fabric: &Ns) -> Result<(), ApplyError> {
    try_join_all(
        kernel_impaired(plan)
            .into_iter()
            .map(|(machine, netns, up, link)| async move {
                let inner = ns_of(ns, netns)?;
                impair_link(machine, netns, &inner.handle, &up.inner.name, link).await?;
                impair_link(
                    machine,
                    &fabric.netns.name,
                    &fabric.handle,
                    &up.peer.name,
                    link,
                )
                .await
            }),
    )
    .await?;
    Ok(())
}

/// One end of an impaired link: netem when anything but a rate is asked
/// (the kernel must have it), tbf for a rate alone.
pub(super) async fn impair_link(
    machine: &str,
    ns: &str,
    h: &Handle,
    dev: &str,
    link: &LinkPlan,
) -> Result<(), ApplyError> {
    let idx = links::index(h, dev)
        .await
        .map_err(nl(format!("finding {dev}"), ns))?;
    if needs_netem(link) {
        let known = qdisc::probe(h, idx, "netem")
            .await
            .map_err(nl("asking the kernel for netem".into(), ns))?;
        if !known {
            return Err(ApplyError::Unsupported(format!(
                "the link impairments of `{machine}` need the kernel's netem qdisc (sch_netem), and this kernel has none; impairments of nodes are applied without the kernel with `cluster.overlay: udp`, and a rate alone uses tbf"
            )));
        }
        qdisc::add_netem(h, idx, link)
            .await
            .map_err(nl(format!("adding netem to {dev} of {machine}"), ns))
    } else if let Some(rate) = link.rate {
        qdisc::add_tbf(h, idx, rate.0)
            .await
            .map_err(nl(format!("adding tbf to {dev} of {machine}"), ns))
    } else {
        Ok(())
    }
}

/// A node's addresses, its overlay device and routes. The overlay backend is
/// the pluggable part: host-gw needs only routes, vxlan a device with
/// neighbour and FDB entries, udp a daemon (not built yet).
async fn configure_node(
    plan: &Plan,
    n: &NodePlan,
    node_ns: &Ns,
    bridge: u32,
) -> Result<(), ApplyError> {
    let h = &node_ns.handle;
    let ns = n.netns.as_str();
    let eth = configure_eth0(h, ns, &n.uplink.inner.addresses, &[]).await?;
    add_addresses(h, ns, bridge, &n.bridge.name, &n.bridge.addresses).await?;
    let mut devices: HashMap<String, u32> =
        HashMap::from([("eth0".to_string(), eth), (n.bridge.name.clone(), bridge)]);
    match (plan.cluster.overlay, &n.overlay) {
        (Backend::HostGw, _) => {}
        (Backend::Udp, Some(dev)) => {
            let idx = add_tun(node_ns, ns, dev).await?;
            devices.insert(dev.iface.name.clone(), idx);
        }
        (Backend::Vxlan, Some(dev)) => {
            let idx = links::add_vxlan(h, &dev.iface, dev.vni.unwrap_or(1), eth, n.ip, dev.port)
                .await
                .map_err(nl(format!("creating vxlan device {}", dev.iface.name), ns))?;
            add_addresses(h, ns, idx, &dev.iface.name, &dev.iface.addresses).await?;
            devices.insert(dev.iface.name.clone(), idx);
        }
        (backend, _) => {
            return Err(ApplyError::Unsupported(format!(
                "the {backend} overlay cannot be applied yet"
            )));
        }
    }
    add_node_routes(h, ns, n, &devices).await
}

/// Adds `addresses` to device `idx` (named `name`) of namespace `ns`, in
/// order.
async fn add_addresses(
    h: &Handle,
    ns: &str,
    idx: u32,
    name: &str,
    addresses: &[IfAddr],
) -> Result<(), ApplyError> {
    for a in addresses {
        links::add_address(h, idx, *a)
            .await
            .map_err(nl(format!("adding {a} to {name}"), ns))?;
    }
    Ok(())
}

/// The udp backend's device: a persistent TUN device, made from inside the
/// node's namespace (the node's overlay daemon attaches to it), brought up
/// with its addresses; returns its index.
async fn add_tun(node_ns: &Ns, ns: &str, dev: &OverlayDevice) -> Result<u32, ApplyError> {
    let h = &node_ns.handle;
    let name = dev.iface.name.clone();
    node_ns
        .netns
        .run_in(move || overlay::tun::create_persistent(&name))?
        .map_err(|e| {
            ApplyError::Netns(NetnsError::Sys {
                what: "creating the TUN device",
                name: format!("{ns}: {}", dev.iface.name),
                source: e,
            })
        })?;
    let idx = links::index(h, &dev.iface.name)
        .await
        .map_err(nl(format!("finding {}", dev.iface.name), ns))?;
    links::set_mtu_up(h, idx, dev.iface.mtu)
        .await
        .map_err(nl(format!("bringing up {}", dev.iface.name), ns))?;
    add_addresses(h, ns, idx, &dev.iface.name, &dev.iface.addresses).await?;
    Ok(idx)
}

/// A node's neighbour and FDB entries, then its routes, on the devices
/// `devices` names.
async fn add_node_routes(
    h: &Handle,
    ns: &str,
    n: &NodePlan,
    devices: &HashMap<String, u32>,
) -> Result<(), ApplyError> {
    let dev = |name: &str| {
        devices
            .get(name)
            .copied()
            .ok_or_else(|| ApplyError::Unsupported(format!("no device `{name}` in {ns}")))
    };
    for nb in &n.neighbours {
        links::add_neighbour(h, dev(&nb.dev)?, nb.ip, nb.mac)
            .await
            .map_err(nl(format!("adding neighbour {} on {}", nb.ip, nb.dev), ns))?;
    }
    for f in &n.fdb {
        links::add_fdb(h, dev(&f.dev)?, f.mac, f.dst)
            .await
            .map_err(nl(format!("adding FDB entry {} -> {}", f.mac, f.dst), ns))?;
    }
    for r in &n.routes {
        links::add_route(h, r, dev(&r.dev)?)
            .await
            .map_err(nl(route_text(r), ns))?;
    }
    Ok(())
}

/// Makes machine uplink `up` as `up` does, and as drift repair does again
/// when either end has gone: the veth pair made in the fabric (`fabric`:
/// its handle and namespace name), the outer end a port of the LAN bridge
/// `lan` there, the inner end moved into the machine's namespace
/// (`machine`: its name and file) as `eth0`, down until that namespace
/// brings it up.
pub(crate) async fn uplink(
    fabric: (&Handle, &str),
    lan: u32,
    up: &Veth,
    machine: (&str, RawFd),
) -> Result<(), ApplyError> {
    links::add_veth(fabric.0, &up.peer, Some(lan), &up.inner, machine.1)
        .await
        .map_err(nl(
            format!("creating uplink {} for {}", up.peer.name, machine.0),
            fabric.1,
        ))
}
