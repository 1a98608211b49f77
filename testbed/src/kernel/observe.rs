//! Reads the live network state of namespaces back into the plan's shape
//! (`plan::state`): links, IPv4 addresses, routes of the main table other
//! than the kernel's own, permanent neighbours and the sysctls the testbed
//! sets. One netlink socket is opened inside each namespace.

use crate::kernel::netns::{Netns, NetnsError};
use crate::plan::state::{sorted, KernelState, LinkState, NsState};
use crate::plan::types::{IfAddr, Mac, Neighbour, Route};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState as NState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

/// Why the state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink dump failed.
    #[error("reading {what} in `{netns}`: {source}")]
    Netlink {
        /// What.
        what: &'static str,
        /// Where.
        netns: String,
        /// The cause.
        source: rtnetlink::Error,
    },
    /// The runtime could not start.
    #[error("cannot start the netlink runtime: {0}")]
    Runtime(std::io::Error),
}

/// Reads the state of every namespace in `names` that exists.
pub fn observe(names: &[String], sysctls: &[&str]) -> Result<KernelState, ObserveError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ObserveError::Runtime)?;
    let mut out = KernelState::new();
    for name in names {
        let Ok(ns) = Netns::open(name) else { continue };
        let handle = rt.handle().clone();
        let keys: Vec<String> = sysctls.iter().map(|s| s.to_string()).collect();
        let (conn, sys) = ns.run_in(move || {
            let _enter = handle.enter();
            let conn = rtnetlink::new_connection();
            let sys: BTreeMap<String, String> = keys
                .iter()
                .filter_map(|k| {
                    std::fs::read_to_string(format!("/proc/sys/{}", k.replace('.', "/")))
                        .ok()
                        .map(|v| (k.clone(), v.trim().to_string()))
                })
                .collect();
            (conn, sys)
        })?;
        let (conn, h, _) = conn.map_err(|e| NetnsError::Sys {
            what: "opening netlink in",
            name: name.clone(),
            source: e,
        })?;
        rt.spawn(conn);
        let mut state = rt.block_on(read(&h, name))?;
        state.sysctls = sys;
        out.insert(name.clone(), state);
    }
    Ok(out)
}

/// Reads one namespace's links, addresses, routes and neighbours through
/// `h`, a netlink socket inside namespace `ns`.
async fn read(h: &Handle, ns: &str) -> Result<NsState, ObserveError> {
    let err = |what: &'static str| {
        move |source| ObserveError::Netlink {
            what,
            netns: ns.to_string(),
            source,
        }
    };
    let links: Vec<_> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(err("links"))?;
    let names = link_names(&links);
    let qdiscs = crate::kernel::qdisc::roots(h)
        .await
        .map_err(err("qdiscs"))?;
    let mut state = NsState::default();
    for l in &links {
        if let Some(n) = names.get(&l.header.index) {
            state
                .links
                .insert(n.clone(), link_state(l, &names, &qdiscs));
        }
    }
    let addrs: Vec<_> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(err("addresses"))?;
    add_addresses(&mut state, &addrs, &names);
    let routes: Vec<_> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(err("routes"))?;
    state.routes = sorted(routes.iter().filter_map(|r| route(r, &names)).collect());
    let neigh: Vec<_> = h
        .neighbours()
        .get()
        .set_address_family(rtnetlink::packet_route::AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .map_err(err("neighbours"))?;
    state.neighbours = neigh.iter().filter_map(|n| neighbour(n, &names)).collect();
    state.neighbours.sort_by_key(|x| (x.dev.clone(), x.ip));
    Ok(state)
}

/// The name of every link, by interface index.
fn link_names(links: &[LinkMessage]) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for l in links {
        for a in &l.attributes {
            if let LinkAttribute::IfName(n) = a {
                names.insert(l.header.index, n.clone());
            }
        }
    }
    names
}

/// A link's state: up or not, MAC, MTU, bridge (from the link `names`),
/// kind and the root qdisc the testbed sets (netem, or tbf with its rate),
/// from the namespace's root `qdiscs`.
fn link_state(
    l: &LinkMessage,
    names: &HashMap<u32, String>,
    qdiscs: &HashMap<u32, (String, Option<u64>)>,
) -> LinkState {
    let mut s = LinkState {
        up: l.header.flags.contains(LinkFlags::Up),
        ..LinkState::default()
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::Address(m) if m.len() == 6 => {
                s.mac = Some(Mac([m[0], m[1], m[2], m[3], m[4], m[5]]))
            }
            LinkAttribute::Mtu(m) => s.mtu = *m,
            LinkAttribute::Controller(i) => s.master = names.get(i).cloned(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = match k {
                            InfoKind::Bridge => "bridge".into(),
                            InfoKind::Veth => "veth".into(),
                            InfoKind::Vxlan => "vxlan".into(),
                            InfoKind::Tun => "tun".into(),
                            other => other.to_string(),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    s.qdisc = match qdiscs.get(&l.header.index) {
        Some((kind, _)) if kind == "netem" => Some(kind.clone()),
        Some((kind, Some(rate))) if kind == "tbf" => {
            Some(format!("tbf {}", crate::topology::units::Rate(*rate)))
        }
        _ => None,
    };
    s
}

/// Adds the IPv4 addresses `addrs` to the links of `state` they are on
/// (named by `names`), each link's sorted and without repeats.
fn add_addresses(state: &mut NsState, addrs: &[AddressMessage], names: &HashMap<u32, String>) {
    for a in addrs {
        let Some(name) = names.get(&a.header.index) else {
            continue;
        };
        for attr in &a.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = attr {
                if let Some(l) = state.links.get_mut(name) {
                    l.addresses.push(IfAddr {
                        ip: *ip,
                        prefix_len: a.header.prefix_len,
                    });
                }
            }
        }
    }
    for l in state.links.values_mut() {
        l.addresses.sort();
        l.addresses.dedup();
    }
}

/// A route of the main table, its device named by `names`; none for the
/// kernel's own routes and those of other tables.
fn route(r: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    if r.header.table != 254 || r.header.protocol == RouteProtocol::Kernel {
        return None;
    }
    let mut route = Route {
        dst: "default".into(),
        via: None,
        dev: String::new(),
        onlink: r.header.flags.contains(RouteFlags::Onlink),
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                route.dst = format!("{d}/{}", r.header.destination_prefix_length)
            }
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.via = Some(*g),
            RouteAttribute::Oif(i) => route.dev = names.get(i).cloned().unwrap_or_default(),
            _ => {}
        }
    }
    Some(route)
}

/// A permanent IPv4 neighbour with its MAC and device (named by `names`);
/// none for any other entry.
fn neighbour(n: &NeighbourMessage, names: &HashMap<u32, String>) -> Option<Neighbour> {
    if n.header.state != NState::Permanent {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
            NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                mac = Some(Mac([m[0], m[1], m[2], m[3], m[4], m[5]]))
            }
            _ => {}
        }
    }
    Some(Neighbour {
        ip: ip?,
        mac: mac?,
        dev: names.get(&n.header.ifindex)?.clone(),
    })
}
