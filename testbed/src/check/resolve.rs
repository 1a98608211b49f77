//! Turns one check into the probes it stands for against a plan (pure):
//! sources become the network namespaces probes are sent from, targets the
//! addresses and ports probed, both in plan order; a matrix's rows and
//! columns are its sources and targets.

use crate::check::{Check, CheckKind, Endpoint, Port, Probe, Resolved};
use crate::plan::types::{HostPlan, NodePlan, PodPlan};
use crate::plan::Plan;
use crate::runtime::{owner_label, OwnerKind};
use proxy::{Protocol, Service};
use std::net::Ipv4Addr;

/// A source: who sends, and from which namespace.
struct Source {
    label: String,
    netns: String,
}

/// A target: the label, the address and what is probed there.
struct Target {
    label: String,
    addr: Ipv4Addr,
    port: Port,
}

/// Why a check stands for no probes in a plan: a name the plan does not
/// hold, a pod without an address, a port the service does not have, an
/// `expectTable` of the wrong size (the message its report carries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unresolvable(pub String);

/// The probes `check` stands for in `plan`, or why there are none.
pub fn resolve(plan: &Plan, check: &Check) -> Result<Resolved, Unresolvable> {
    probes(plan, check).map_err(Unresolvable)
}

fn probes(plan: &Plan, check: &Check) -> Result<Resolved, String> {
    let (from, to, port, ignore_self) = match &check.kind {
        CheckKind::Pair { from, to, port, .. } => (from, to, port, false),
        CheckKind::Matrix {
            from,
            to,
            port,
            ignore_self,
            ..
        } => (from, to, port, *ignore_self),
    };
    let sources = sources(plan, from)?;
    let targets = targets(plan, to, port.as_ref())?;
    let mut probes = Vec::with_capacity(sources.len() * targets.len());
    for s in &sources {
        for t in &targets {
            if ignore_self && s.label == t.label {
                continue;
            }
            probes.push(Probe {
                from: s.label.clone(),
                netns: s.netns.clone(),
                to: t.label.clone(),
                addr: t.addr,
                port: t.port.clone(),
            });
        }
    }
    let resolved = Resolved {
        rows: sources.into_iter().map(|s| s.label).collect(),
        columns: targets.into_iter().map(|t| t.label).collect(),
        probes,
    };
    if let CheckKind::Matrix {
        expect_table: Some(table),
        ..
    } = &check.kind
    {
        table_fits(table, &resolved)?;
    }
    Ok(resolved)
}

/// An `expectTable` has one row per source and one column per target.
fn table_fits(table: &[String], r: &Resolved) -> Result<(), String> {
    let width = table.first().map_or(0, |row| row.chars().count());
    if table.len() == r.rows.len()
        && table
            .iter()
            .all(|row| row.chars().count() == r.columns.len())
    {
        return Ok(());
    }
    Err(format!(
        "`expectTable` is {} rows by {width} columns, but the matrix is {} rows (from: {}) by {} columns (to: {})",
        table.len(),
        r.rows.len(),
        r.rows.join(", "),
        r.columns.len(),
        r.columns.join(", "),
    ))
}

/// How reports name a pod: `pod NAME` in `default`, `pod NS/NAME` elsewhere.
fn pod_label(p: &PodPlan) -> String {
    owner_label(OwnerKind::Pod, Some(&p.namespace), &p.name)
}

/// `NAME` in `default`, `NS/NAME` elsewhere.
fn qualified(namespace: &str, name: &str) -> String {
    if namespace == "default" {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// The pods an endpoint selects, in plan order; an error when none.
fn pods<'p>(plan: &'p Plan, e: &Endpoint) -> Result<Vec<&'p PodPlan>, String> {
    let (pods, what): (Vec<&PodPlan>, String) = match e {
        Endpoint::Pod { name, namespace } => (
            plan.pods
                .iter()
                .filter(|p| &p.name == name && &p.namespace == namespace)
                .collect(),
            format!("no pod {}", qualified(namespace, name)),
        ),
        Endpoint::Pods(labels) => (
            plan.pods
                .iter()
                .filter(|p| labels.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                .collect(),
            format!(
                "no pod has the labels {{{}}}",
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Endpoint::Rc(name) => (
            plan.pods
                .iter()
                // Any namespace, as an experiment's `pick: {rc}` does.
                .filter(|p| p.owner.as_ref() == Some(name))
                .collect(),
            format!("replication controller {name} has no pods"),
        ),
        _ => (plan.pods.iter().collect(), "there are no pods".to_string()),
    };
    if pods.is_empty() {
        return Err(what);
    }
    Ok(pods)
}

/// The sources an endpoint selects, in plan order; an error when none or
/// when it cannot send (a service or an address).
fn sources(plan: &Plan, e: &Endpoint) -> Result<Vec<Source>, String> {
    let out: Vec<Source> = match e {
        Endpoint::Pod { .. } | Endpoint::Pods(_) | Endpoint::Rc(_) | Endpoint::AllPods => {
            pods(plan, e)?
                .into_iter()
                .map(|p| Source {
                    label: pod_label(p),
                    netns: p.netns.clone(),
                })
                .collect()
        }
        Endpoint::Node(name) => {
            let n = node(plan, name)?;
            vec![Source {
                label: format!("node {}", n.name),
                netns: n.netns.clone(),
            }]
        }
        Endpoint::Host(name) => {
            let h = host(plan, name)?;
            vec![Source {
                label: owner_label(OwnerKind::Host, None, &h.name),
                netns: h.netns.clone(),
            }]
        }
        Endpoint::AllNodes => plan
            .nodes
            .iter()
            .map(|n| Source {
                label: format!("node {}", n.name),
                netns: n.netns.clone(),
            })
            .collect(),
        Endpoint::AllHosts => plan
            .hosts
            .iter()
            .map(|h| Source {
                label: owner_label(OwnerKind::Host, None, &h.name),
                netns: h.netns.clone(),
            })
            .collect(),
        Endpoint::Service { .. }
        | Endpoint::NodePort { .. }
        | Endpoint::External { .. }
        | Endpoint::Address(_) => {
            return Err("a service or an address cannot send: it can only be a target".into())
        }
    };
    if out.is_empty() {
        return Err("`from` selects nothing".into());
    }
    Ok(out)
}

/// Node `name`; an error when the plan has none.
fn node<'p>(plan: &'p Plan, name: &str) -> Result<&'p NodePlan, String> {
    plan.nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| format!("no node {name}"))
}

/// Host `name`; an error when the plan has none.
fn host<'p>(plan: &'p Plan, name: &str) -> Result<&'p HostPlan, String> {
    plan.hosts
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| format!("no host {name}"))
}

/// Service `namespace/name`; an error when the plan has none.
fn service<'p>(plan: &'p Plan, namespace: &str, name: &str) -> Result<&'p Service, String> {
    plan.services
        .iter()
        .find(|s| s.name == name && s.namespace == namespace)
        .ok_or_else(|| format!("no service {}", qualified(namespace, name)))
}

/// The targets an endpoint selects, probed on `port` (the check's port; by
/// default icmp, or a service's first port).
fn targets(plan: &Plan, e: &Endpoint, port: Option<&Port>) -> Result<Vec<Target>, String> {
    let plain = port.cloned().unwrap_or(Port::Icmp);
    let out: Vec<Target> = match e {
        Endpoint::Pod { .. } => vec![pod_target(pods(plan, e)?[0], plain)?],
        // A selector leaves out pods without an address (network: none).
        Endpoint::Pods(_) | Endpoint::Rc(_) | Endpoint::AllPods => pods(plan, e)?
            .into_iter()
            .filter_map(|p| {
                p.ip.map(|addr| Target {
                    label: pod_label(p),
                    addr,
                    port: plain.clone(),
                })
            })
            .collect(),
        Endpoint::Node(name) => vec![node_target(node(plan, name)?, plain)],
        Endpoint::Host(name) => vec![host_target(host(plan, name)?, plain)],
        Endpoint::AllNodes => plan
            .nodes
            .iter()
            .map(|n| node_target(n, plain.clone()))
            .collect(),
        Endpoint::AllHosts => plan
            .hosts
            .iter()
            .map(|h| host_target(h, plain.clone()))
            .collect(),
        Endpoint::Address(a) => vec![Target {
            label: format!("address {a}"),
            addr: *a,
            port: plain,
        }],
        Endpoint::Service { name, namespace } => {
            let s = service(plan, namespace, name)?;
            vec![Target {
                label: format!("service {}", qualified(namespace, name)),
                addr: s.cluster_ip,
                port: service_port(s, port)?.0,
            }]
        }
        Endpoint::External { name, namespace } => {
            vec![external_target(plan, namespace, name, port)?]
        }
        Endpoint::NodePort {
            name,
            namespace,
            node: via,
        } => vec![node_port_target(plan, namespace, name, via, port)?],
    };
    if out.is_empty() {
        return Err("`to` selects nothing with an address".into());
    }
    Ok(out)
}

/// Pod `p` as a target probed on `port`; an error when it has no address.
fn pod_target(p: &PodPlan, port: Port) -> Result<Target, String> {
    let addr = p.ip.ok_or_else(|| {
        format!(
            "{} has no IP address (network: {}), so nothing can reach it",
            pod_label(p),
            p.network
        )
    })?;
    Ok(Target {
        label: pod_label(p),
        addr,
        port,
    })
}

/// Node `n`'s LAN address as a target probed on `port`.
fn node_target(n: &NodePlan, port: Port) -> Target {
    Target {
        label: format!("node {}", n.name),
        addr: n.ip,
        port,
    }
}

/// Host `h`'s LAN address as a target probed on `port`.
fn host_target(h: &HostPlan, port: Port) -> Target {
    Target {
        label: owner_label(OwnerKind::Host, None, &h.name),
        addr: h.ip,
        port,
    }
}

/// The external (load balancer) address of service `namespace/name` as a
/// target; an error when it has none.
fn external_target(
    plan: &Plan,
    namespace: &str,
    name: &str,
    port: Option<&Port>,
) -> Result<Target, String> {
    let s = service(plan, namespace, name)?;
    let addr = s.load_balancer_ip.ok_or_else(|| {
        format!(
            "service {} has no external IP (type {:?})",
            qualified(namespace, name),
            s.kind
        )
    })?;
    Ok(Target {
        label: format!("external {}", qualified(namespace, name)),
        addr,
        port: service_port(s, port)?.0,
    })
}

/// The node port of service `namespace/name` on node `via` as a target;
/// an error when the service has no node port or the probe is icmp.
fn node_port_target(
    plan: &Plan,
    namespace: &str,
    name: &str,
    via: &str,
    port: Option<&Port>,
) -> Result<Target, String> {
    let s = service(plan, namespace, name)?;
    let n = node(plan, via)?;
    let (probe, node_port) = service_port(s, port)?;
    let node_port = node_port.ok_or_else(|| {
        format!(
            "service {} has no node port (type {:?})",
            qualified(namespace, name),
            s.kind
        )
    })?;
    let port = match probe {
        Port::Tcp(_) => Port::Tcp(node_port),
        Port::Udp(_) => Port::Udp(node_port),
        Port::Http { path, .. } => Port::Http {
            port: node_port,
            path,
        },
        Port::Icmp => return Err("a node port is probed on a service port, not with icmp".into()),
    };
    Ok(Target {
        label: format!("nodePort {} via {}", qualified(namespace, name), n.name),
        addr: n.ip,
        port,
    })
}

/// What is probed on a service's IP (the check's port, or the service's
/// first port when it has none), with that port's node port.
fn service_port(s: &Service, port: Option<&Port>) -> Result<(Port, Option<u16>), String> {
    let name = qualified(&s.namespace, &s.name);
    let (number, proto) = match port {
        Some(Port::Icmp) => return Ok((Port::Icmp, None)),
        Some(Port::Tcp(n)) | Some(Port::Http { port: n, .. }) => (*n, Protocol::TCP),
        Some(Port::Udp(n)) => (*n, Protocol::UDP),
        None => {
            let first = s
                .ports
                .first()
                .ok_or_else(|| format!("service {name} has no ports"))?;
            let probe = match first.protocol {
                Protocol::TCP => Port::Tcp(first.port),
                Protocol::UDP => Port::Udp(first.port),
            };
            return Ok((probe, first.node_port));
        }
    };
    let sp = s
        .ports
        .iter()
        .find(|p| p.port == number && p.protocol == proto)
        .ok_or_else(|| {
            let list: Vec<String> = s
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.port, p.protocol))
                .collect();
            format!(
                "service {name} has no {proto} port {number} (its ports: {})",
                list.join(", ")
            )
        })?;
    Ok((port.cloned().unwrap_or(Port::Icmp), sp.node_port))
}

#[cfg(test)]
mod tests;
