//! The kernel state a plan implies, namespace by namespace: links (kind,
//! MAC, MTU, state, bridge, IPv4 addresses), routes, permanent neighbours and
//! sysctls. The same shape is read back from the kernel (`kernel::observe`),
//! so comparing the two (`diff`) is how `testbed verify` finds drift.

use crate::plan::types::{IfAddr, Iface, LinkPlan, Mac, Neighbour, Route, Veth};
use crate::plan::Plan;
use overlay::Backend;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The state of every namespace, by name.
pub type KernelState = BTreeMap<String, NsState>;

/// One namespace's network state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NsState {
    /// Interfaces by name.
    pub links: BTreeMap<String, LinkState>,
    /// Routes of the main table other than those the kernel adds for
    /// addresses, sorted.
    pub routes: Vec<Route>,
    /// Permanent IPv4 neighbour entries, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub neighbours: Vec<Neighbour>,
    /// Sysctls the testbed sets.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub sysctls: BTreeMap<String, String>,
}

/// One interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkState {
    /// bridge, veth, vxlan, tun, or empty for loopback.
    pub kind: String,
    /// Its MAC address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<Mac>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// The bridge it is a port of.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub master: Option<String>,
    /// Its IPv4 addresses, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub addresses: Vec<IfAddr>,
    /// The root qdisc the testbed put on it (`netem`, or `tbf RATE`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub qdisc: Option<String>,
}

fn link(kind: &str, i: &Iface, master: Option<&str>) -> (String, LinkState) {
    let mut addresses = i.addresses.clone();
    addresses.sort();
    (
        i.name.clone(),
        LinkState {
            kind: kind.into(),
            mac: i.mac,
            mtu: i.mtu,
            up: true,
            master: master.map(str::to_string),
            addresses,
            qdisc: None,
        },
    )
}

fn loopback() -> (String, LinkState) {
    (
        "lo".into(),
        LinkState {
            kind: String::new(),
            mac: Some(Mac([0; 6])),
            mtu: 65536,
            up: true,
            master: None,
            addresses: vec![IfAddr {
                ip: std::net::Ipv4Addr::LOCALHOST,
                prefix_len: 8,
            }],
            qdisc: None,
        },
    )
}

/// The qdisc a kernel-impaired link carries on both its ends.
pub fn qdisc_of(l: &LinkPlan) -> Option<String> {
    if needs_netem(l) {
        Some("netem".into())
    } else {
        l.rate.map(|r| format!("tbf {r}"))
    }
}

/// The kernel state `plan` describes.
pub fn desired(plan: &Plan) -> KernelState {
    let mut out = KernelState::new();
    let mut pending: Vec<(String, String, Option<String>)> = Vec::new();
    let mut fabric = NsState::default();
    fabric
        .links
        .extend([loopback(), link("bridge", &plan.fabric.bridge, None)]);
    for up in plan
        .nodes
        .iter()
        .map(|n| &n.uplink)
        .chain(plan.hosts.iter().map(|h| &h.uplink))
    {
        fabric
            .links
            .extend([link("veth", &up.peer, Some(&up.peer_master))]);
    }
    if let Some(Ok(span)) = crate::plan::span::of_share(plan) {
        // No MAC: the kernel picks the device's.
        fabric
            .links
            .extend([link("vxlan", &span.device, Some(&plan.fabric.bridge.name))]);
    }
    out.insert(plan.fabric.netns.clone(), fabric);
    for (_, netns, up, link) in kernel_impaired(plan) {
        let q = qdisc_of(link);
        if let Some(l) = out
            .get_mut(&plan.fabric.netns)
            .and_then(|s| s.links.get_mut(&up.peer.name))
        {
            l.qdisc = q.clone();
        }
        pending.push((netns.to_string(), up.inner.name.clone(), q));
    }
    for n in &plan.nodes {
        let mut s = NsState::default();
        s.links.extend([
            loopback(),
            link("veth", &n.uplink.inner, None),
            link("bridge", &n.bridge, None),
        ]);
        if let Some(dev) = &n.overlay {
            let kind = if dev.vni.is_some() { "vxlan" } else { "tun" };
            s.links.extend([link(kind, &dev.iface, None)]);
        }
        for p in plan.pods.iter().filter(|p| p.node == n.name) {
            if let Some(i) = &p.interface {
                s.links
                    .extend([link("veth", &i.peer, Some(&i.peer_master))]);
            }
        }
        s.routes = sorted(n.routes.clone());
        s.neighbours = n.neighbours.clone();
        s.neighbours.sort_by_key(|x| (x.dev.clone(), x.ip));
        s.sysctls = n.sysctls.clone();
        out.insert(n.netns.clone(), s);
    }
    for h in &plan.hosts {
        let mut s = NsState::default();
        s.links
            .extend([loopback(), link("veth", &h.uplink.inner, None)]);
        out.insert(h.netns.clone(), s);
    }
    for p in plan.pods.iter().filter(|p| p.owns_netns) {
        let mut s = NsState::default();
        s.links.extend([loopback()]);
        if let Some(i) = &p.interface {
            s.links.extend([link("veth", &i.inner, None)]);
        }
        s.routes = sorted(p.routes.clone());
        out.insert(p.netns.clone(), s);
    }
    for (netns, dev, q) in pending {
        if let Some(l) = out.get_mut(&netns).and_then(|s| s.links.get_mut(&dev)) {
            l.qdisc = q;
        }
    }
    out
}
/// The machines whose link impairments the kernel applies: every host, and
/// the nodes unless the udp overlay's data path does it.
pub fn kernel_impaired(plan: &Plan) -> Vec<(&str, &str, &Veth, &LinkPlan)> {
    let nodes = plan
        .nodes
        .iter()
        .filter(|_| plan.cluster.overlay != Backend::Udp)
        .filter_map(|n| {
            Some((
                n.name.as_str(),
                n.netns.as_str(),
                &n.uplink,
                n.link.as_ref()?,
            ))
        });
    let hosts = plan.hosts.iter().filter_map(|h| {
        Some((
            h.name.as_str(),
            h.netns.as_str(),
            &h.uplink,
            h.link.as_ref()?,
        ))
    });
    nodes.chain(hosts).collect()
}

/// Whether a link's impairments need netem (anything but a rate).
pub fn needs_netem(l: &LinkPlan) -> bool {
    l.delay.is_some()
        || l.jitter.is_some()
        || l.loss.is_some()
        || l.duplicate.is_some()
        || l.reorder.is_some()
}

/// Routes in a canonical order.
pub fn sorted(mut routes: Vec<Route>) -> Vec<Route> {
    routes.sort_by(|a, b| (&a.dst, &a.dev, a.via).cmp(&(&b.dst, &b.dev, b.via)));
    routes
}

/// Whether link `have` is as `want` says (a wanted link without a MAC
/// takes whichever the kernel gave it).
fn matches(want: &LinkState, have: &LinkState) -> bool {
    let mac = want.mac.is_none() || want.mac == have.mac;
    mac && LinkState {
        mac: have.mac,
        ..want.clone()
    } == *have
}

/// Every difference between the desired and the observed state, one line
/// each, naming the namespace and the object.
pub fn diff(want: &KernelState, have: &KernelState) -> Vec<String> {
    let mut out = Vec::new();
    for (ns, w) in want {
        let Some(h) = have.get(ns) else {
            out.push(format!("{ns}: namespace missing"));
            continue;
        };
        diff_links(ns, w, h, &mut out);
        diff_routes_and_neighbours(ns, w, h, &mut out);
        for (k, v) in &w.sysctls {
            match h.sysctls.get(k) {
                Some(hv) if hv == v => {}
                hv => out.push(format!(
                    "{ns}: sysctl {k} = {} (want {v})",
                    hv.map_or("?", |s| s.as_str())
                )),
            }
        }
    }
    for ns in have.keys().filter(|n| !want.contains_key(*n)) {
        out.push(format!("{ns}: unexpected namespace"));
    }
    out
}

/// The interfaces of namespace `ns` missing, different or unexpected.
fn diff_links(ns: &str, w: &NsState, h: &NsState, out: &mut Vec<String>) {
    for (name, wl) in &w.links {
        match h.links.get(name) {
            None => out.push(format!("{ns}: interface {name} missing")),
            Some(hl) if !matches(wl, hl) => {
                out.push(format!(
                    "{ns}: interface {name}: {}",
                    link_differences(wl, hl).join(", ")
                ));
            }
            Some(_) => {}
        }
    }
    for name in h.links.keys().filter(|n| !w.links.contains_key(*n)) {
        out.push(format!("{ns}: unexpected interface {name}"));
    }
}

/// How an observed link differs from the desired one, field by field.
fn link_differences(wl: &LinkState, hl: &LinkState) -> Vec<String> {
    let mut what = Vec::new();
    if hl.kind != wl.kind {
        what.push(format!("kind {} (want {})", hl.kind, wl.kind));
    }
    if wl.mac.is_some() && hl.mac != wl.mac {
        what.push(format!("mac {} (want {})", show(&hl.mac), show(&wl.mac)));
    }
    if hl.mtu != wl.mtu {
        what.push(format!("mtu {} (want {})", hl.mtu, wl.mtu));
    }
    if hl.up != wl.up {
        what.push(format!("{} (want {})", updown(hl.up), updown(wl.up)));
    }
    if hl.master != wl.master {
        what.push(format!(
            "master {} (want {})",
            show(&hl.master),
            show(&wl.master)
        ));
    }
    if hl.qdisc != wl.qdisc {
        what.push(format!(
            "qdisc {} (want {})",
            show(&hl.qdisc),
            show(&wl.qdisc)
        ));
    }
    if hl.addresses != wl.addresses {
        what.push(format!(
            "addresses {} (want {})",
            addrs(&hl.addresses),
            addrs(&wl.addresses)
        ));
    }
    what
}

/// The routes and neighbours of namespace `ns` missing or unexpected.
fn diff_routes_and_neighbours(ns: &str, w: &NsState, h: &NsState, out: &mut Vec<String>) {
    for r in w.routes.iter().filter(|r| !h.routes.contains(r)) {
        out.push(format!("{ns}: route {} missing", route(r)));
    }
    for r in h.routes.iter().filter(|r| !w.routes.contains(r)) {
        out.push(format!("{ns}: unexpected route {}", route(r)));
    }
    for n in w.neighbours.iter().filter(|n| !h.neighbours.contains(n)) {
        out.push(format!(
            "{ns}: neighbour {} lladdr {} dev {} missing",
            n.ip, n.mac, n.dev
        ));
    }
    for n in h.neighbours.iter().filter(|n| !w.neighbours.contains(n)) {
        out.push(format!(
            "{ns}: unexpected neighbour {} lladdr {} dev {}",
            n.ip, n.mac, n.dev
        ));
    }
}

fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".into(), |x| x.to_string())
}

fn updown(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

fn addrs(a: &[IfAddr]) -> String {
    let v: Vec<String> = a.iter().map(|x| x.to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// A route as `ip route` shows it: `DST [via GW] dev DEV [onlink]`.
pub fn route(r: &Route) -> String {
    let mut s = r.dst.clone();
    if let Some(v) = r.via {
        s.push_str(&format!(" via {v}"));
    }
    s.push_str(&format!(" dev {}", r.dev));
    if r.onlink {
        s.push_str(" onlink");
    }
    s
}
