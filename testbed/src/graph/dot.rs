//! Graphviz DOT: nodes are clusters holding their bridge and pods.

use super::{bridge_label, endpoint_pods, link_label, node_label, pod_label, service_label};
use crate::plan::types::{HostPlan, NodePlan, PodPlan};
use crate::plan::Plan;
use std::fmt::Write;

/// `s` as a quoted DOT string.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The plan as an undirected Graphviz graph.
pub fn dot(p: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "graph {} {{", q(&p.name));
    let _ = writeln!(o, "  compound=true; rankdir=TB; fontname=\"Helvetica\";");
    let _ = writeln!(o, "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(
        o,
        "  lan [label={}, fillcolor=\"#e8e8e8\"];",
        q(&format!(
            "LAN {} ({})\\n{}",
            p.fabric.bridge.name, p.fabric.netns, p.cluster.underlay_cidr
        ))
    );
    for n in &p.nodes {
        node(&mut o, p, n);
    }
    for h in &p.hosts {
        host(&mut o, h);
    }
    for s in &p.services {
        service(&mut o, p, s);
    }
    o.push_str("}\n");
    o
}

/// A node's cluster (its LAN device, bridge, overlay device and pods) and
/// its edge to the LAN.
fn node(o: &mut String, p: &Plan, n: &NodePlan) {
    let _ = writeln!(
        o,
        "  subgraph {} {{",
        q(&format!("cluster_node_{}", n.name))
    );
    let _ = writeln!(
        o,
        "    label={}; style=\"rounded\"; color=\"#3b6ea5\";",
        q(&node_label(n))
    );
    let eth = format!("node/{}/eth0", n.name);
    let br = format!("node/{}/bridge", n.name);
    let _ = writeln!(
        o,
        "    {} [label={}];",
        q(&eth),
        q(&format!("eth0 {}", n.ip))
    );
    let _ = writeln!(
        o,
        "    {} [label={}, shape=ellipse, fillcolor=\"#dbe8f5\"];",
        q(&br),
        q(&bridge_label(n))
    );
    if let Some(ov) = &n.overlay {
        let id = format!("node/{}/overlay", n.name);
        let _ = writeln!(
            o,
            "    {} [label={}, shape=cds, fillcolor=\"#f5ecd9\"];",
            q(&id),
            q(&format!(
                "{} ({}) mtu {}",
                ov.iface.name, p.cluster.overlay, ov.iface.mtu
            ))
        );
        let _ = writeln!(o, "    {} -- {} [style=dotted];", q(&id), q(&eth));
    }
    for pod in p.pods.iter().filter(|x| x.node == n.name) {
        node_pod(o, pod, &eth, &br);
    }
    let _ = writeln!(o, "  }}");
    let label = link_label(&n.link)
        .map(|l| format!(", label={}", q(&l)))
        .unwrap_or_default();
    let _ = writeln!(o, "  lan -- {}{label};", q(&eth));
}

/// A pod inside its node's cluster, with its edge to what gives it its
/// network: the bridge `br`, the node's device `eth`, or the pod whose
/// namespace it shares.
fn node_pod(o: &mut String, pod: &PodPlan, eth: &str, br: &str) {
    let id = format!("pod/{}/{}", pod.namespace, pod.name);
    let fill = match pod.network.as_str() {
        "bridge" => "#eef5fc",
        "host" => "#fcefe3",
        "none" => "#eeeeee",
        _ => "#f1eafa",
    };
    let _ = writeln!(
        o,
        "    {} [label={}, fillcolor=\"{fill}\"];",
        q(&id),
        q(&pod_label(pod))
    );
    match pod.network.as_str() {
        "bridge" => {
            let _ = writeln!(o, "    {} -- {};", q(&id), q(br));
        }
        "host" => {
            let _ = writeln!(o, "    {} -- {} [style=dashed];", q(&id), q(eth));
        }
        "none" => {}
        other => {
            let target = other.trim_start_matches("container:");
            let _ = writeln!(
                o,
                "    {} -- {} [style=dashed, label=\"shares netns\"];",
                q(&id),
                q(&format!("pod/{}/{target}", pod.namespace))
            );
        }
    }
}

/// A host and its edge to the LAN.
fn host(o: &mut String, h: &HostPlan) {
    let id = format!("host/{}", h.name);
    let _ = writeln!(
        o,
        "  {} [label={}, fillcolor=\"#eef7ea\"];",
        q(&id),
        q(&format!("host {} · {}", h.name, h.ip))
    );
    let label = link_label(&h.link)
        .map(|l| format!(", label={}", q(&l)))
        .unwrap_or_default();
    let _ = writeln!(o, "  lan -- {}{label};", q(&id));
}

/// A service and an edge to each of its endpoint pods.
fn service(o: &mut String, p: &Plan, s: &proxy::Service) {
    let id = format!("svc/{}/{}", s.namespace, s.name);
    let _ = writeln!(
        o,
        "  {} [label={}, shape=hexagon, fillcolor=\"#fff6d6\"];",
        q(&id),
        q(&format!("{:?} {}", s.kind, service_label(s)))
    );
    for pod in endpoint_pods(p, s) {
        let _ = writeln!(
            o,
            "  {} -- {} [style=dashed, color=\"#b08a00\"];",
            q(&id),
            q(&format!("pod/{}/{}", pod.namespace, pod.name))
        );
    }
}
