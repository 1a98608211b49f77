//! The netlink requests the testbed makes: bridges, veth pairs whose far end
//! lands in another namespace, vxlan devices, addresses, routes and
//! neighbour/FDB entries. Each request goes to the namespace of the handle
//! it is made on.

use crate::plan::types::{IfAddr, Iface, Mac, Route};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourState};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

/// A failed netlink request.
pub type NlResult<T> = Result<T, rtnetlink::Error>;

fn mac_bytes(m: &Option<Mac>) -> Option<Vec<u8>> {
    m.map(|m| m.0.to_vec())
}

fn with_mac<T>(b: LinkMessageBuilder<T>, mac: &Option<Mac>) -> LinkMessageBuilder<T> {
    match mac_bytes(mac) {
        Some(m) => b.address(m),
        None => b,
    }
}

/// The index of interface `name`.
pub async fn index(h: &Handle, name: &str) -> NlResult<u32> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await? {
        Some(msg) => Ok(msg.header.index),
        None => Err(rtnetlink::Error::RequestFailed),
    }
}

/// Deletes interface `name` if it exists (a veth: both ends go).
pub async fn delete_if_present(h: &Handle, name: &str) -> NlResult<()> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    let idx = match links.try_next().await {
        Ok(Some(msg)) => msg.header.index,
        Ok(None) => return Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => return Ok(()),
        Err(e) => return Err(e),
    };
    match h.link().del(idx).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
        r => r,
    }
}

/// Sets interface `name` administratively up or down.
pub async fn set_admin(h: &Handle, name: &str, up: bool) -> NlResult<()> {
    let b = LinkUnspec::new_with_name(name);
    let b = if up { b.up() } else { b.down() };
    h.link().set(b.build()).execute().await
}

/// Brings interface `name` up.
pub async fn set_up(h: &Handle, name: &str) -> NlResult<()> {
    h.link()
        .set(LinkUnspec::new_with_name(name).up().build())
        .execute()
        .await
}

/// Puts bridge port `name` in hairpin mode, so that a frame may leave by the
/// port it came in: a pod reaching its own service is DNATed back to itself
/// (kube-proxy needs the same of its CNI bridge). It gets no IPv6 address
/// either ([`no_ipv6_addresses`]): it is brought up before its peer, so
/// that is in time.
pub async fn set_hairpin(h: &Handle, name: &str) -> NlResult<()> {
    let idx = index(h, name).await?;
    no_ipv6_addresses(h, idx).await?;
    h.link()
        .set_port(LinkBridgePort::new(idx).hairpin(true).build())
        .execute()
        .await
}

/// Makes interface `index` generate no IPv6 address (addr_gen_mode
/// `none`: no link-local address, so no duplicate address detection or
/// router solicitation) when it comes up. The cluster is IPv4; at 5,000
/// pods the kernel's IPv6 autoconfiguration of every pod interface cost
/// about 40% of configuring them (bench/updown.py). Must come before the
/// interface has a carrier.
pub async fn no_ipv6_addresses(h: &Handle, index: u32) -> NlResult<()> {
    use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute};
    let spec =
        LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
            In6AddrGenMode::None,
        )])]);
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .append_extra_attribute(spec)
                .build(),
        )
        .execute()
        .await
}

/// Brings interface `index` up.
pub async fn set_index_up(h: &Handle, index: u32) -> NlResult<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
}

/// Sets interface `index`'s MTU and brings it up.
pub async fn set_mtu_up(h: &Handle, index: u32, mtu: u32) -> NlResult<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
}

/// Creates a bridge, up, with the planned MAC and MTU; returns its index.
pub async fn add_bridge(h: &Handle, iface: &Iface) -> NlResult<u32> {
    let b = with_mac(LinkBridge::new(&iface.name).mtu(iface.mtu), &iface.mac).up();
    h.link().add(b.build()).execute().await?;
    index(h, &iface.name).await
}

/// Creates a veth pair: `local` here (a port of bridge `master`) and up,
/// `peer` in the namespace `peer_ns`, down: the kernel refuses to bring a
/// veth end up before its peer exists, so the peer's namespace does that
/// (`set_index_up`). Both get their planned MACs and MTUs.
pub async fn add_veth(
    h: &Handle,
    local: &Iface,
    master: Option<u32>,
    peer: &Iface,
    peer_ns: RawFd,
) -> NlResult<()> {
    let peer_msg = with_mac(
        LinkMessageBuilder::<LinkUnspec>::default()
            .name(peer.name.clone())
            .mtu(peer.mtu),
        &peer.mac,
    )
    .setns_by_fd(peer_ns)
    .build();
    let mut b = with_mac(
        LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(local.name.clone())
            .mtu(local.mtu),
        &local.mac,
    )
    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
    .up();
    if let Some(m) = master {
        b = b.controller(m);
    }
    h.link().add(b.build()).execute().await
}

/// Creates a vxlan device as flannel's vxlan backend does: learning off,
/// bound to `dev` and the node's `local` address, on UDP `port`.
pub async fn add_vxlan(
    h: &Handle,
    iface: &Iface,
    vni: u32,
    dev: u32,
    local: Ipv4Addr,
    port: u16,
) -> NlResult<u32> {
    let b = LinkVxlan::new(&iface.name, vni)
        .dev(dev)
        .local(local)
        .port(port)
        .learning(false)
        .mtu(iface.mtu);
    h.link()
        .add(with_mac(b, &iface.mac).up().build())
        .execute()
        .await?;
    index(h, &iface.name).await
}

/// Creates a vxlan device in the namespace open as `netns` (an
/// `IFLA_NET_NS_FD`), down, learning on, with `local` as the outer source
/// and UDP `port`. Its UDP socket is opened, when it comes up, in the
/// namespace of the socket behind `h` (the kernel's vxlan keeps the
/// requester's namespace as the one it tunnels in), so no link of the
/// device's appears there.
pub async fn add_vxlan_into(
    h: &Handle,
    iface: &Iface,
    vni: u32,
    local: Ipv4Addr,
    port: u16,
    netns: RawFd,
) -> NlResult<()> {
    let b = LinkVxlan::new(&iface.name, vni)
        .local(local)
        .port(port)
        .learning(true)
        .mtu(iface.mtu)
        .setns_by_fd(netns);
    h.link()
        .add(with_mac(b, &iface.mac).build())
        .execute()
        .await
}

/// Appends a forwarding-database entry of vxlan device `dev` sending `mac`
/// to the VTEP at `dst`, beside those already there for `mac`, as
/// `bridge fdb append` does (`NLM_F_APPEND`): for the all-zeros MAC, one
/// entry per remote is head-end replication.
pub async fn append_fdb(h: &Handle, dev: u32, mac: Mac, dst: Ipv4Addr) -> NlResult<()> {
    use rtnetlink::packet_core::{
        NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
    };
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourMessage};
    use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = dev;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
    let mut answers = h.clone().request(req)?;
    while let Some(answer) = futures::StreamExt::next(&mut answers).await {
        if let NetlinkPayload::Error(e) = answer.payload {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

/// Adds an address to interface `index`.
pub async fn add_address(h: &Handle, index: u32, addr: IfAddr) -> NlResult<()> {
    h.address()
        .add(index, IpAddr::V4(addr.ip), addr.prefix_len)
        .execute()
        .await
}

/// Adds a route through interface `dev`.
pub async fn add_route(h: &Handle, route: &Route, dev: u32) -> NlResult<()> {
    h.route().add(route_message(route, dev)?).execute().await
}

/// Adds a permanent neighbour entry.
pub async fn add_neighbour(h: &Handle, dev: u32, ip: Ipv4Addr, mac: Mac) -> NlResult<()> {
    h.neighbours()
        .add(dev, IpAddr::V4(ip))
        .link_layer_address(&mac.0)
        .state(NeighbourState::Permanent)
        .execute()
        .await
}

/// Adds a forwarding-database entry sending `mac` to the VTEP at `dst`.
pub async fn add_fdb(h: &Handle, dev: u32, mac: Mac, dst: Ipv4Addr) -> NlResult<()> {
    h.neighbours()
        .add_bridge(dev, &mac.0)
        .destination(IpAddr::V4(dst))
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .execute()
        .await
}

/// Sets interface `index`'s MTU.
pub async fn set_mtu(h: &Handle, index: u32, mtu: u32) -> NlResult<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
}

/// Sets interface `index`'s MAC address.
pub async fn set_mac(h: &Handle, index: u32, mac: Mac) -> NlResult<()> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.0.to_vec())
                .build(),
        )
        .execute()
        .await
}

/// Makes interface `index` a port of bridge `master`, or of none.
pub async fn set_master(h: &Handle, index: u32, master: Option<u32>) -> NlResult<()> {
    let b = LinkUnspec::new_with_index(index);
    let b = match master {
        Some(m) => b.controller(m),
        None => b.nocontroller(),
    };
    h.link().set(b.build()).execute().await
}

/// Removes an address from interface `index`.
pub async fn del_address(h: &Handle, index: u32, addr: IfAddr) -> NlResult<()> {
    let msg = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(addr.ip, addr.prefix_len)
        .build();
    h.address().del(msg).execute().await
}

/// The message of a route through interface `dev` of the main table.
fn route_message(
    route: &Route,
    dev: u32,
) -> NlResult<rtnetlink::packet_route::route::RouteMessage> {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new().output_interface(dev);
    if route.dst != "default" {
        let net: overlay::Ipv4Net = route
            .dst
            .parse()
            .map_err(|_| rtnetlink::Error::RequestFailed)?;
        b = b.destination_prefix(net.network(), net.prefix_len());
    }
    if let Some(via) = route.via {
        b = b.gateway(via);
    }
    if route.onlink {
        b = b.onlink();
    }
    Ok(b.build())
}

/// Deletes a route through interface `dev`.
pub async fn del_route(h: &Handle, route: &Route, dev: u32) -> NlResult<()> {
    h.route().del(route_message(route, dev)?).execute().await
}

/// Deletes the IPv4 neighbour entry of `ip` on interface `dev`.
pub async fn del_neighbour(h: &Handle, dev: u32, ip: Ipv4Addr) -> NlResult<()> {
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourMessage};
    let mut msg = NeighbourMessage::default();
    msg.header.family = rtnetlink::packet_route::AddressFamily::Inet;
    msg.header.ifindex = dev;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    h.neighbours().del(msg).execute().await
}

/// Whether a request failed only because its object already exists
/// (adding) or is already gone (deleting): the state wanted is there.
pub fn already(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if [libc::EEXIST, libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL]
            .contains(&-m.raw_code()))
}
