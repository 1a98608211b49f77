//! `testbed inspect`: a testbed's kernel state read back (namespaces with
//! their links, routes, neighbours and sysctls, as lists of named objects:
//! [`kernel`], pure), and the service rules installed in every node
//! ([`installed`]).

use crate::plan::state::{KernelState, LinkState, NsState};
use crate::plan::types::{IfAddr, Mac, Neighbour, Route};
use crate::plan::Plan;
use crate::services::ServicesError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// The kernel state of a testbed's namespaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelReport {
    /// The testbed.
    pub name: String,
    /// Its namespaces, by name.
    pub namespaces: Vec<Namespace>,
}

/// One network namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// Its name under /run/netns.
    pub name: String,
    /// Its interfaces, by name.
    pub links: Vec<Link>,
    /// Routes of the main table beyond those the kernel adds for addresses.
    pub routes: Vec<KernelRoute>,
    /// Permanent neighbour entries.
    pub neighbours: Vec<Neighbour>,
    /// The sysctls the testbed sets, by name.
    pub sysctls: BTreeMap<String, String>,
}

/// One interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// Its name.
    pub name: String,
    /// Its kind (bridge, veth, vxlan, tun); absent for loopback.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    /// Its MAC address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<Mac>,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is administratively up.
    pub up: bool,
    /// The bridge it is a port of.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub master: Option<String>,
    /// Its IPv4 addresses with prefix length.
    pub addresses: Vec<IfAddr>,
    /// The root qdisc the testbed put on it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub qdisc: Option<String>,
}

/// A route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelRoute {
    /// The destination: a prefix, or `default`.
    pub dst: String,
    /// The gateway.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<Ipv4Addr>,
    /// The output device.
    pub dev: String,
    /// Whether the gateway is used without a connected route to it.
    pub onlink: bool,
}

impl From<&Route> for KernelRoute {
    fn from(r: &Route) -> KernelRoute {
        KernelRoute {
            dst: r.dst.clone(),
            via: r.via,
            dev: r.dev.clone(),
            onlink: r.onlink,
        }
    }
}

fn link(name: &str, l: &LinkState) -> Link {
    Link {
        name: name.to_string(),
        kind: (!l.kind.is_empty()).then(|| l.kind.clone()),
        mac: l.mac,
        mtu: l.mtu,
        up: l.up,
        master: l.master.clone(),
        addresses: l.addresses.clone(),
        qdisc: l.qdisc.clone(),
    }
}

fn namespace(name: &str, s: &NsState) -> Namespace {
    Namespace {
        name: name.to_string(),
        links: s.links.iter().map(|(n, l)| link(n, l)).collect(),
        routes: s.routes.iter().map(KernelRoute::from).collect(),
        neighbours: s.neighbours.clone(),
        sysctls: s.sysctls.clone(),
    }
}

/// The report of testbed `name`'s kernel state `state` (as read back, or as
/// its plan implies).
pub fn kernel(name: &str, state: &KernelState) -> KernelReport {
    KernelReport {
        name: name.to_string(),
        namespaces: state.iter().map(|(n, s)| namespace(n, s)).collect(),
    }
}

/// The service rules one node has installed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstalledRules {
    /// The node.
    pub node: String,
    /// Its namespace.
    pub netns: String,
    /// The proxy mode, which says what `rules` is: `iptables-save` output
    /// (the testbed's chains; iptables and userspace), or `nft list table`.
    pub mode: proxy::Mode,
    /// The rules, as the kernel reports them.
    pub rules: String,
}

/// The service rules installed in every node of running testbed `plan`.
pub fn installed(plan: &Plan) -> Result<Vec<InstalledRules>, ServicesError> {
    plan.nodes
        .iter()
        .map(|n| {
            Ok(InstalledRules {
                node: n.name.clone(),
                netns: n.netns.clone(),
                mode: plan.cluster.proxy,
                rules: crate::services::installed(plan.cluster.proxy, n)?,
            })
        })
        .collect()
}

impl fmt::Display for InstalledRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "# node {} ({})\n{}", self.node, self.netns, self.rules)
    }
}
