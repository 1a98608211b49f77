//! Makes a machine's part of a span (`plan::span`): the vxlan device in the
//! fabric namespace, a port of the LAN bridge, with its flood entries and
//! the LAN's MTU. The device is created *directly* in the fabric namespace
//! by an `RTM_NEWLINK` sent from a netlink socket in the machine's root
//! namespace with `IFLA_NET_NS_FD` = the fabric: the kernel's vxlan binds
//! its UDP socket in the namespace of the request's socket (`src_net`, or
//! `IFLA_LINK_NETNSID` when given; `vxlan_newlink` →
//! `rtnl_newlink_link_net` → `__vxlan_dev_create`, `vxlan->net`), and the
//! link itself never exists in the root namespace. The root namespace gains
//! only the UDP socket (`ss -uln`: `0.0.0.0:PORT`), shared by every span on
//! that port and closed with the last device using it. Deleting the fabric
//! namespace deletes the device, and so the socket. FDB entries go over
//! netlink (`NLM_F_APPEND`, as `bridge fdb append`), no `bridge` process.

use crate::kernel::apply::{nl, ApplyError};
use crate::kernel::links;
use crate::kernel::netns::{Netns, NetnsError};
use crate::plan::span::SpanPlan;
use rtnetlink::Handle;
use std::os::fd::AsRawFd;

/// Joins fabric namespace `fabric` (holding LAN bridge `bridge`) to the
/// span `plan`, over `root`, a netlink handle whose socket is in the
/// machine's root namespace, and `fabric_h`, one whose socket is in the
/// fabric: creates the device there (down), makes it a port of `bridge`,
/// sets the LAN MTU on it and on the bridge, adds one flood entry per peer
/// and brings it up (which opens the UDP socket in the root namespace). On
/// failure the device is removed again. Every interface on the LAN must
/// already use `plan.mtu`: the caller's plan lowers them.
pub async fn join(
    root: &Handle,
    fabric: &Netns,
    fabric_h: &Handle,
    bridge: &str,
    plan: &SpanPlan,
) -> Result<(), ApplyError> {
    let ns = fabric.name.as_str();
    let dev = &plan.device.name;
    links::add_vxlan_into(
        root,
        &plan.device,
        plan.vni,
        plan.local,
        plan.port,
        fabric.file.as_raw_fd(),
    )
    .await
    .map_err(|e| {
        let exists =
            matches!(&e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST);
        let why = if exists {
            "; a device with this VNI and port exists on this machine already: this testbed's, or another's whose name gives the same VNI"
        } else {
            ""
        };
        nl(
            format!(
                "creating span device {dev} (VNI {}, UDP port {}{why})",
                plan.vni, plan.port
            ),
            ns,
        )(e)
    })?;
    let made = configure(fabric_h, ns, bridge, plan).await;
    if made.is_err() {
        // Nothing half-made: the device goes, and with it its entries.
        if let Err(e) = links::delete_if_present(fabric_h, dev).await {
            tracing::warn!(error = %e, netns = ns, "removing a half-made span device");
        }
    }
    made
}

/// The span device `plan.device` made in fabric `ns`: a port of `bridge`,
/// both at the LAN MTU, with the flood entries, up.
async fn configure(
    fabric_h: &Handle,
    ns: &str,
    bridge: &str,
    plan: &SpanPlan,
) -> Result<(), ApplyError> {
    let dev = &plan.device.name;
    let idx = links::index(fabric_h, dev)
        .await
        .map_err(nl(format!("finding {dev}"), ns))?;
    let br = links::index(fabric_h, bridge)
        .await
        .map_err(nl(format!("finding bridge {bridge}"), ns))?;
    links::set_mtu(fabric_h, br, plan.mtu)
        .await
        .map_err(nl(format!("setting {bridge}'s MTU to {}", plan.mtu), ns))?;
    links::set_master(fabric_h, idx, Some(br))
        .await
        .map_err(nl(format!("making {dev} a port of {bridge}"), ns))?;
    links::no_ipv6_addresses(fabric_h, idx)
        .await
        .map_err(nl(format!("setting {dev}'s IPv6 address generation"), ns))?;
    for f in &plan.fdb {
        links::append_fdb(fabric_h, idx, f.mac, f.dst)
            .await
            .map_err(nl(format!("adding flood entry {} -> {}", f.mac, f.dst), ns))?;
    }
    links::set_index_up(fabric_h, idx)
        .await
        .map_err(nl(format!("bringing up {dev}"), ns))
}

/// [`join`] with the calling thread's network namespace as the machine's
/// root: opens both netlink sockets on a runtime of its own. E.g.
/// `apply(&Netns::open("tb-NAME.fabric")?, "lan0", &plan)`. A failure
/// leaves no device behind.
pub fn apply(fabric: &Netns, bridge: &str, plan: &SpanPlan) -> Result<(), ApplyError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ApplyError::Runtime)?;
    let root = {
        let _enter = rt.enter();
        let (conn, h, _) = rtnetlink::new_connection().map_err(|e| NetnsError::Sys {
            what: "opening netlink in the root namespace for",
            name: fabric.name.clone(),
            source: e,
        })?;
        rt.spawn(conn);
        h
    };
    let fabric_h = fabric.netlink(&rt)?;
    rt.block_on(join(&root, fabric, &fabric_h, bridge, plan))
}
