//! Drawings of a plan: Graphviz DOT, Mermaid, and a self-contained SVG laid
//! out in-process (no external program needed). All three show the same
//! things: the LAN, nodes with their bridge, overlay device and pods, hosts,
//! link impairments and services with their endpoints.

mod dot;
mod mermaid;
mod svg;

pub use dot::dot;
pub use mermaid::mermaid;
pub use svg::svg;

use crate::plan::types::{LinkPlan, NodePlan, PodPlan};
use crate::plan::Plan;

/// A short text for a link's impairments: `10ms ±2ms, 1% loss, 100mbit`.
pub(crate) fn link_label(link: &Option<LinkPlan>) -> Option<String> {
    let l = link.as_ref()?;
    let mut parts = Vec::new();
    match (l.delay, l.jitter) {
        (Some(d), Some(j)) => parts.push(format!("{d} ±{j}")),
        (Some(d), None) => parts.push(d.to_string()),
        _ => {}
    }
    if let Some(x) = l.loss {
        parts.push(format!("{x} loss"));
    }
    if let Some(x) = l.duplicate {
        parts.push(format!("{x} dup"));
    }
    if let Some(x) = l.reorder {
        parts.push(format!("{x} reorder"));
    }
    if let Some(x) = l.rate {
        parts.push(x.to_string());
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A node's title: name, LAN address, pod subnet.
pub(crate) fn node_label(n: &NodePlan) -> String {
    format!("node {} · {} · pods {}", n.name, n.ip, n.lease.subnet)
}

/// A node's bridge with its address.
pub(crate) fn bridge_label(n: &NodePlan) -> String {
    let addr = n
        .bridge
        .addresses
        .first()
        .map(|a| a.to_string())
        .unwrap_or_default();
    format!("{} {addr}", n.bridge.name)
}

/// A pod's one-line description: name, namespace, address or mode.
pub(crate) fn pod_label(p: &PodPlan) -> String {
    let addr = match (p.network.as_str(), p.ip) {
        ("bridge", Some(ip)) => ip.to_string(),
        ("host", _) => "host network".to_string(),
        ("none", _) => "no network".to_string(),
        (other, _) => other.replacen("container:", "shares ", 1),
    };
    if p.namespace == "default" {
        format!("{} · {addr}", p.name)
    } else {
        format!("{}.{} · {addr}", p.name, p.namespace)
    }
}

/// A service's one-line description.
pub(crate) fn service_label(s: &proxy::Service) -> String {
    let ports: Vec<String> = s
        .ports
        .iter()
        .map(|p| {
            let np = p
                .node_port
                .map(|n| format!(" node:{n}"))
                .unwrap_or_default();
            let proto = if p.protocol == proxy::Protocol::UDP {
                "/udp"
            } else {
                ""
            };
            format!("{}→{}{proto}{np}", p.port, p.target_port)
        })
        .collect();
    let lb = s
        .load_balancer_ip
        .map(|ip| format!(" ext {ip}"))
        .unwrap_or_default();
    format!(
        "{}.{} {}{lb} :{}",
        s.name,
        s.namespace,
        s.cluster_ip,
        ports.join(",")
    )
}

/// The pods that serve a service (distinct, in plan order).
pub(crate) fn endpoint_pods<'p>(plan: &'p Plan, s: &proxy::Service) -> Vec<&'p PodPlan> {
    plan.pods
        .iter()
        .filter(|p| {
            p.namespace == s.namespace
                && s.ports
                    .iter()
                    .any(|port| port.endpoints.iter().any(|e| e.pod == p.name))
        })
        .collect()
}
