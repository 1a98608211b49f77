//! Drift repair: from one namespace's desired state (`plan::state::desired`,
//! with the controller's faults folded in, e.g. `up: false` for a link it
//! holds down) and its observed state (`kernel::observe`), the pure
//! [`repairs`] lists the fixes that bring the kernel back, in a fixed order;
//! [`apply_fixes`] (in `exec`) makes them over rtnetlink inside the
//! namespace.
//!
//! What is repaired: missing veth pairs of pods and machines (recreated as
//! `up` makes them, with their addresses and the routes through them), MACs,
//! MTUs, bridge ports, up/down, addresses, routes, permanent neighbours and
//! sysctls. Addresses, routes and neighbours on the testbed's own links that
//! the plan does not have are removed; interfaces the plan does not have are
//! left alone (only reported by `verify`), and so are qdiscs (impairments
//! are the controller's to set). A route through a link wanted down is
//! neither added nor removed: the kernel drops such routes with the link
//! and refuses to add them while it is down.

mod exec;

pub use exec::{apply_fixes, RepairError};

use crate::plan::state::{route, LinkState, NsState};
use crate::plan::types::{IfAddr, Mac, Neighbour, Route};
use std::collections::BTreeSet;
use std::fmt;

/// One change that takes a namespace towards its desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fix {
    /// A link that is missing (or of the wrong kind) is made again as `up`
    /// makes it, with its MAC, MTU, bridge, addresses and the routes
    /// through it; both ends when it is a veth.
    RecreateLink {
        /// Its name.
        link: String,
    },
    /// A link's MAC address.
    SetMac {
        /// The link.
        link: String,
        /// The MAC wanted.
        mac: Mac,
        /// The MAC it had.
        was: Option<Mac>,
    },
    /// A link's MTU.
    SetMtu {
        /// The link.
        link: String,
        /// The MTU wanted.
        mtu: u32,
        /// The MTU it had.
        was: u32,
    },
    /// The bridge a link is a port of.
    SetMaster {
        /// The link.
        link: String,
        /// The bridge wanted, or none.
        master: Option<String>,
        /// The bridge it was a port of.
        was: Option<String>,
    },
    /// A link administratively up or down.
    SetUp {
        /// The link.
        link: String,
        /// Up (true) or down.
        up: bool,
    },
    /// An address the plan does not have.
    DelAddress {
        /// The link.
        link: String,
        /// The address.
        addr: IfAddr,
    },
    /// A missing address.
    AddAddress {
        /// The link.
        link: String,
        /// The address.
        addr: IfAddr,
    },
    /// A route the plan does not have.
    DelRoute(Route),
    /// A missing route.
    AddRoute(Route),
    /// A permanent neighbour entry the plan does not have.
    DelNeighbour(Neighbour),
    /// A missing permanent neighbour entry.
    AddNeighbour(Neighbour),
    /// A sysctl of the namespace.
    SetSysctl {
        /// Its key (`net.ipv4.ip_forward`).
        key: String,
        /// The value wanted.
        value: String,
        /// The value it had, if it could be read.
        was: Option<String>,
    },
}

fn or_none<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".into(), |x| x.to_string())
}

fn neighbour(n: &Neighbour) -> String {
    format!("neighbour {} lladdr {} dev {}", n.ip, n.mac, n.dev)
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fix::RecreateLink { link } => write!(f, "{link} recreated"),
            Fix::SetMac { link, mac, was } => write!(f, "{link} mac {mac} (was {})", or_none(was)),
            Fix::SetMtu { link, mtu, was } => write!(f, "{link} mtu {mtu} (was {was})"),
            Fix::SetMaster { link, master, was } => {
                write!(
                    f,
                    "{link} master {} (was {})",
                    or_none(master),
                    or_none(was)
                )
            }
            Fix::SetUp { link, up: true } => write!(f, "{link} set up"),
            Fix::SetUp { link, up: false } => write!(f, "{link} set down"),
            Fix::DelAddress { link, addr } => {
                write!(f, "unexpected address {addr} on {link} removed")
            }
            Fix::AddAddress { link, addr } => write!(f, "address {addr} on {link} restored"),
            Fix::DelRoute(r) => write!(f, "unexpected route {} removed", route(r)),
            Fix::AddRoute(r) => write!(f, "route {} restored", route(r)),
            Fix::DelNeighbour(n) => write!(f, "unexpected {} removed", neighbour(n)),
            Fix::AddNeighbour(n) => write!(f, "{} restored", neighbour(n)),
            Fix::SetSysctl { key, value, was } => {
                let was = was.as_deref().unwrap_or("unreadable");
                write!(f, "sysctl {key} = {value} (was {was})")
            }
        }
    }
}

/// The fixes that take `have` to `want`, in the order they must be made:
/// links (recreated, then MAC, MTU, bridge, up/down), then addresses, then
/// routes, then neighbours, then sysctls; within each, what is wrong is
/// removed before what is missing is added. Empty when nothing differs
/// (qdiscs and unexpected interfaces aside).
pub fn repairs(want: &NsState, have: &NsState) -> Vec<Fix> {
    let recreated: BTreeSet<&str> = want
        .links
        .iter()
        .filter(|(name, w)| have.links.get(*name).is_none_or(|h| h.kind != w.kind))
        .map(|(name, _)| name.as_str())
        .collect();
    let mut out: Vec<Fix> = recreated
        .iter()
        .map(|l| Fix::RecreateLink {
            link: l.to_string(),
        })
        .collect();
    for (name, w) in &want.links {
        match have.links.get(name) {
            Some(h) if !recreated.contains(name.as_str()) => link_fixes(name, w, h, &mut out),
            // A recreated link comes up; one wanted down is then set down.
            _ if !w.up => out.push(Fix::SetUp {
                link: name.clone(),
                up: false,
            }),
            _ => {}
        }
    }
    address_fixes(want, have, &recreated, &mut out);
    route_fixes(want, have, &recreated, &mut out);
    neighbour_fixes(want, have, &mut out);
    for (key, value) in &want.sysctls {
        let was = have.sysctls.get(key);
        if was != Some(value) {
            out.push(Fix::SetSysctl {
                key: key.clone(),
                value: value.clone(),
                was: was.cloned(),
            });
        }
    }
    out
}

/// The fixes of one link that exists: MAC, MTU, bridge, up/down.
fn link_fixes(name: &str, w: &LinkState, h: &LinkState, out: &mut Vec<Fix>) {
    let link = name.to_string();
    if let Some(mac) = w.mac.filter(|m| h.mac != Some(*m)) {
        out.push(Fix::SetMac {
            link: link.clone(),
            mac,
            was: h.mac,
        });
    }
    if w.mtu != h.mtu {
        out.push(Fix::SetMtu {
            link: link.clone(),
            mtu: w.mtu,
            was: h.mtu,
        });
    }
    if w.master != h.master {
        out.push(Fix::SetMaster {
            link: link.clone(),
            master: w.master.clone(),
            was: h.master.clone(),
        });
    }
    if w.up != h.up {
        out.push(Fix::SetUp { link, up: w.up });
    }
}

/// Addresses of the links that exist: the unexpected ones removed, then
/// the missing ones added (a recreated link gets its own).
fn address_fixes(want: &NsState, have: &NsState, recreated: &BTreeSet<&str>, out: &mut Vec<Fix>) {
    let kept = want
        .links
        .iter()
        .filter(|(name, _)| !recreated.contains(name.as_str()))
        .filter_map(|(name, w)| have.links.get(name).map(|h| (name, w, h)));
    let mut adds = Vec::new();
    for (name, w, h) in kept {
        for addr in h.addresses.iter().filter(|a| !w.addresses.contains(a)) {
            out.push(Fix::DelAddress {
                link: name.clone(),
                addr: *addr,
            });
        }
        for addr in w.addresses.iter().filter(|a| !h.addresses.contains(a)) {
            adds.push(Fix::AddAddress {
                link: name.clone(),
                addr: *addr,
            });
        }
    }
    out.extend(adds);
}

/// Routes: those through the testbed's links that the plan does not have
/// removed, the missing ones added; none through a recreated link (it comes
/// with its routes) or a link wanted down.
fn route_fixes(want: &NsState, have: &NsState, recreated: &BTreeSet<&str>, out: &mut Vec<Fix>) {
    let down = |r: &Route| want.links.get(&r.dev).is_some_and(|l| !l.up);
    for r in &have.routes {
        if want.links.contains_key(&r.dev) && !down(r) && !want.routes.contains(r) {
            out.push(Fix::DelRoute(r.clone()));
        }
    }
    for r in &want.routes {
        if !recreated.contains(r.dev.as_str()) && !down(r) && !have.routes.contains(r) {
            out.push(Fix::AddRoute(r.clone()));
        }
    }
}

/// Permanent neighbours on the testbed's links: the unexpected removed, the
/// missing added.
fn neighbour_fixes(want: &NsState, have: &NsState, out: &mut Vec<Fix>) {
    for n in &have.neighbours {
        if want.links.contains_key(&n.dev) && !want.neighbours.contains(n) {
            out.push(Fix::DelNeighbour(n.clone()));
        }
    }
    for n in want
        .neighbours
        .iter()
        .filter(|n| !have.neighbours.contains(n))
    {
        out.push(Fix::AddNeighbour(n.clone()));
    }
}

#[cfg(test)]
mod tests;
