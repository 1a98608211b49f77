//! How two plans of one testbed differ, for `testbed apply`: what is added,
//! removed and changed ([`changes`], printed before anything is done), and
//! which differences cannot be made to a running testbed ([`not_live`],
//! which makes `apply` refuse). Pure: plans in, values out.
//!
//! Live: pods added, removed or changed (a changed pod is replaced), every
//! service change (its rules are replaced, a new cluster IP included), node
//! labels, link impairments of nodes and hosts, a host's containers (its
//! processes are restarted) and `cluster.containerLogMaxSize` (the next
//! look at the logs uses the new cap). Not live: the cluster's networks,
//! MTU, overlay and proxy, the seed and the name, nodes or hosts added or
//! removed, and a LAN address or pod subnet that would move (they follow
//! the order of the machines in the file).

use crate::plan::types::{HostPlan, LinkPlan, NodePlan, PodPlan};
use crate::plan::Plan;
use proxy::{Protocol, Service, ServiceType};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// What differs between the running plan and a new one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// Pods, keyed by namespace and name.
    pub pods: Section<PodBrief, PodField>,
    /// Services, keyed by namespace and name.
    pub services: Section<ServiceBrief, ServiceField>,
    /// Hosts, keyed by name.
    pub hosts: Section<MachineBrief, HostField>,
    /// Nodes, keyed by name.
    pub nodes: Section<MachineBrief, NodeField>,
    /// Link impairments of nodes and hosts that are in both plans and whose
    /// impairments differ.
    pub links: Vec<LinkChange>,
}

/// The objects of one kind added, removed and changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Section<B, F> {
    /// In the new plan only, in its order.
    pub added: Vec<B>,
    /// In the old plan only, in its order.
    pub removed: Vec<B>,
    /// In both, different, in the new plan's order.
    pub changed: Vec<Changed<F>>,
}

impl<B, F> Default for Section<B, F> {
    fn default() -> Self {
        Section {
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
        }
    }
}

impl<B, F> Section<B, F> {
    /// Whether nothing of this kind differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// An object in both plans that differs, and which of its fields do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changed<F> {
    /// Its namespace (pods and services).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// What differs.
    pub fields: Vec<F>,
}

/// A pod added or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodBrief {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// Its IP, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// The replication controller that owns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A service added or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBrief {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// How it is exposed.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// Its virtual IP.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    /// Its ports.
    pub ports: Vec<PortBrief>,
}

/// A port of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortBrief {
    /// The port on the virtual IP.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// A node or host added or removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineBrief {
    /// Its name.
    pub name: String,
    /// Its LAN address.
    pub ip: Ipv4Addr,
}

/// Declares a field enumeration, spelled in JSON and text as the plan's
/// JSON spells the field.
macro_rules! fields {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// The field's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

fields! {
    /// What of a pod differs. Any of these makes the pod be replaced.
    PodField {
        /// Its node.
        Node = "node",
        /// Its IP.
        Ip = "ip",
        /// Its network mode.
        Network = "network",
        /// Its owner (a replication controller, or none).
        Owner = "owner",
        /// Its labels.
        Labels = "labels",
        /// Its volumes.
        Volumes = "volumes",
        /// Its containers (commands, environment, mounts, readiness...).
        Containers = "containers",
        /// Its interface or routes, though not its node, IP or network
        /// (the pod MTU, its gateway).
        Interface = "interface",
    }
}

fields! {
    /// What of a service differs.
    ServiceField {
        /// ClusterIP, NodePort or LoadBalancer.
        Type = "type",
        /// Its virtual IP.
        ClusterIp = "clusterIP",
        /// Its external IP.
        LoadBalancerIp = "loadBalancerIP",
        /// The node that answers for the external IP.
        AnnouncedBy = "announcedBy",
        /// Client affinity.
        SessionAffinity = "sessionAffinity",
        /// Its selector.
        Selector = "selector",
        /// Its ports (numbers, protocols, target and node ports).
        Ports = "ports",
        /// The pods behind it.
        Endpoints = "endpoints",
    }
}

fields! {
    /// What of a host differs.
    HostField {
        /// Its LAN address.
        Ip = "ip",
        /// Its link impairments.
        Link = "link",
        /// Its containers.
        Containers = "containers",
    }
}

fields! {
    /// What of a node differs.
    NodeField {
        /// Its LAN address.
        Ip = "ip",
        /// Its pod subnet.
        PodSubnet = "podSubnet",
        /// Its labels.
        Labels = "labels",
        /// Its link impairments.
        Link = "link",
    }
}

/// Which kind of machine a link belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MachineKind {
    /// A node.
    Node,
    /// A host.
    Host,
}

impl fmt::Display for MachineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MachineKind::Node => "node",
            MachineKind::Host => "host",
        })
    }
}

/// The link impairments of a machine, before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkChange {
    /// A node or a host.
    pub kind: MachineKind,
    /// Its name.
    pub name: String,
    /// The impairments before (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<LinkPlan>,
    /// The impairments after (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<LinkPlan>,
}

/// How `new` differs from `old`.
pub fn changes(old: &Plan, new: &Plan) -> Changes {
    let mut links = Vec::new();
    let nodes = section(
        &old.nodes,
        &new.nodes,
        |n| (None, n.name.clone()),
        |n| MachineBrief {
            name: n.name.clone(),
            ip: n.ip,
        },
        node_fields,
    );
    let hosts = section(
        &old.hosts,
        &new.hosts,
        |h| (None, h.name.clone()),
        |h| MachineBrief {
            name: h.name.clone(),
            ip: h.ip,
        },
        host_fields,
    );
    let old_nodes: BTreeMap<&str, &NodePlan> =
        old.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let old_hosts: BTreeMap<&str, &HostPlan> =
        old.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
    let machines = new
        .nodes
        .iter()
        .filter_map(|n| {
            let o = old_nodes.get(n.name.as_str())?;
            Some((MachineKind::Node, &n.name, &o.link, &n.link))
        })
        .chain(new.hosts.iter().filter_map(|h| {
            let o = old_hosts.get(h.name.as_str())?;
            Some((MachineKind::Host, &h.name, &o.link, &h.link))
        }));
    for (kind, name, o, n) in machines {
        if o != n {
            links.push(LinkChange {
                kind,
                name: name.clone(),
                old: o.clone(),
                new: n.clone(),
            });
        }
    }
    Changes {
        pods: section(
            &old.pods,
            &new.pods,
            |p| (Some(p.namespace.clone()), p.name.clone()),
            |p| PodBrief {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                node: p.node.clone(),
                ip: p.ip,
                owner: p.owner.clone(),
            },
            pod_fields,
        ),
        services: section(
            &old.services,
            &new.services,
            |s| (Some(s.namespace.clone()), s.name.clone()),
            service_brief,
            service_fields,
        ),
        hosts,
        nodes,
        links,
    }
}

/// The objects of `old` and `new` compared by `key`.
fn section<T, B, F>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> (Option<String>, String),
    brief: impl Fn(&T) -> B,
    fields: impl Fn(&T, &T) -> Vec<F>,
) -> Section<B, F> {
    let old_by: BTreeMap<_, &T> = old.iter().map(|o| (key(o), o)).collect();
    let new_by: BTreeMap<_, &T> = new.iter().map(|n| (key(n), n)).collect();
    let mut s = Section::default();
    for n in new {
        let k = key(n);
        match old_by.get(&k) {
            None => s.added.push(brief(n)),
            Some(o) => {
                let fields = fields(o, n);
                if !fields.is_empty() {
                    let (namespace, name) = k;
                    s.changed.push(Changed {
                        namespace,
                        name,
                        fields,
                    });
                }
            }
        }
    }
    s.removed = old
        .iter()
        .filter(|o| !new_by.contains_key(&key(o)))
        .map(brief)
        .collect();
    s
}

/// Pushes `field` to `out` when `differs`.
fn mark<F>(out: &mut Vec<F>, differs: bool, field: F) {
    if differs {
        out.push(field);
    }
}

fn pod_fields(o: &PodPlan, n: &PodPlan) -> Vec<PodField> {
    let mut f = Vec::new();
    mark(&mut f, o.node != n.node, PodField::Node);
    mark(&mut f, o.ip != n.ip, PodField::Ip);
    mark(&mut f, o.network != n.network, PodField::Network);
    mark(&mut f, o.owner != n.owner, PodField::Owner);
    mark(&mut f, o.labels != n.labels, PodField::Labels);
    mark(&mut f, o.volumes != n.volumes, PodField::Volumes);
    mark(&mut f, o.containers != n.containers, PodField::Containers);
    // What follows from the fields above is not named again.
    let explained = f
        .iter()
        .any(|x| matches!(x, PodField::Node | PodField::Ip | PodField::Network));
    let wiring = o.interface != n.interface || o.routes != n.routes;
    mark(&mut f, wiring && !explained, PodField::Interface);
    f
}

fn service_brief(s: &Service) -> ServiceBrief {
    ServiceBrief {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        kind: s.kind,
        cluster_ip: s.cluster_ip,
        ports: s
            .ports
            .iter()
            .map(|p| PortBrief {
                port: p.port,
                protocol: p.protocol,
            })
            .collect(),
    }
}

fn service_fields(o: &Service, n: &Service) -> Vec<ServiceField> {
    let spec = |s: &Service| {
        s.ports
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.protocol,
                    p.port,
                    p.target_port,
                    p.node_port,
                )
            })
            .collect::<Vec<_>>()
    };
    let endpoints = |s: &Service| {
        s.ports
            .iter()
            .map(|p| p.endpoints.clone())
            .collect::<Vec<_>>()
    };
    let mut f = Vec::new();
    mark(&mut f, o.kind != n.kind, ServiceField::Type);
    mark(
        &mut f,
        o.cluster_ip != n.cluster_ip,
        ServiceField::ClusterIp,
    );
    let lb = o.load_balancer_ip != n.load_balancer_ip;
    mark(&mut f, lb, ServiceField::LoadBalancerIp);
    mark(
        &mut f,
        o.announced_by != n.announced_by,
        ServiceField::AnnouncedBy,
    );
    let affinity = o.session_affinity != n.session_affinity;
    mark(&mut f, affinity, ServiceField::SessionAffinity);
    mark(&mut f, o.selector != n.selector, ServiceField::Selector);
    mark(&mut f, spec(o) != spec(n), ServiceField::Ports);
    mark(
        &mut f,
        endpoints(o) != endpoints(n),
        ServiceField::Endpoints,
    );
    f
}

fn host_fields(o: &HostPlan, n: &HostPlan) -> Vec<HostField> {
    let mut f = Vec::new();
    mark(&mut f, o.ip != n.ip, HostField::Ip);
    mark(&mut f, o.link != n.link, HostField::Link);
    mark(&mut f, o.containers != n.containers, HostField::Containers);
    f
}

fn node_fields(o: &NodePlan, n: &NodePlan) -> Vec<NodeField> {
    let mut f = Vec::new();
    mark(&mut f, o.ip != n.ip, NodeField::Ip);
    mark(
        &mut f,
        o.lease.subnet != n.lease.subnet,
        NodeField::PodSubnet,
    );
    mark(&mut f, o.labels != n.labels, NodeField::Labels);
    mark(&mut f, o.link != n.link, NodeField::Link);
    f
}

impl Changes {
    /// Whether the two plans are the same in everything listed.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
            && self.services.is_empty()
            && self.hosts.is_empty()
            && self.nodes.is_empty()
            && self.links.is_empty()
    }
}

mod refuse;
mod render;
pub use refuse::{not_live, NotLive};

#[cfg(test)]
mod tests;
