//! Mermaid flowchart: renders in Markdown viewers that support Mermaid.

use super::{endpoint_pods, link_label, pod_label, service_label};
use crate::plan::Plan;
use std::collections::HashMap;
use std::fmt::Write;

fn label(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "#quot;"))
}

/// The plan as a Mermaid flowchart.
pub fn mermaid(p: &Plan) -> String {
    let mut o = String::from("flowchart TB\n");
    let _ = writeln!(
        o,
        "  lan[{}]",
        label(&format!(
            "LAN {} · {}",
            p.fabric.bridge.name, p.cluster.underlay_cidr
        ))
    );
    let mut pod_ids: HashMap<(&str, &str), String> = HashMap::new();
    for (i, pod) in p.pods.iter().enumerate() {
        pod_ids.insert((&pod.namespace, &pod.name), format!("p{i}"));
    }
    for (ni, n) in p.nodes.iter().enumerate() {
        let _ = writeln!(
            o,
            "  subgraph n{ni}[{}]",
            label(&format!(
                "node {} · {} · pods {}",
                n.name, n.ip, n.lease.subnet
            ))
        );
        let _ = writeln!(o, "    n{ni}eth[{}]", label(&format!("eth0 {}", n.ip)));
        let _ = writeln!(
            o,
            "    n{ni}br([{}])",
            label(&format!(
                "{} {}",
                n.bridge.name,
                n.bridge
                    .addresses
                    .first()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            ))
        );
        if let Some(ov) = &n.overlay {
            let _ = writeln!(
                o,
                "    n{ni}ov>{}]",
                label(&format!("{} ({})", ov.iface.name, p.cluster.overlay))
            );
            let _ = writeln!(o, "    n{ni}ov -.- n{ni}eth");
        }
        for pod in p.pods.iter().filter(|x| x.node == n.name) {
            let id = &pod_ids[&(pod.namespace.as_str(), pod.name.as_str())];
            let _ = writeln!(o, "    {id}[{}]", label(&pod_label(pod)));
            match pod.network.as_str() {
                "bridge" => {
                    let _ = writeln!(o, "    {id} --- n{ni}br");
                }
                "host" => {
                    let _ = writeln!(o, "    {id} -.- n{ni}eth");
                }
                "none" => {}
                other => {
                    let target = other.trim_start_matches("container:");
                    if let Some(t) = pod_ids.get(&(pod.namespace.as_str(), target)) {
                        let _ = writeln!(o, "    {id} -.-|shares netns| {t}");
                    }
                }
            }
        }
        o.push_str("  end\n");
        match link_label(&n.link) {
            Some(l) => {
                let _ = writeln!(o, "  lan ---|{}| n{ni}eth", label(&l));
            }
            None => {
                let _ = writeln!(o, "  lan --- n{ni}eth");
            }
        }
    }
    for (hi, h) in p.hosts.iter().enumerate() {
        let _ = writeln!(
            o,
            "  h{hi}[{}]",
            label(&format!("host {} · {}", h.name, h.ip))
        );
        match link_label(&h.link) {
            Some(l) => {
                let _ = writeln!(o, "  lan ---|{}| h{hi}", label(&l));
            }
            None => {
                let _ = writeln!(o, "  lan --- h{hi}");
            }
        }
    }
    for (si, s) in p.services.iter().enumerate() {
        let _ = writeln!(
            o,
            "  s{si}{{{{{}}}}}",
            label(&format!("{:?} {}", s.kind, service_label(s)))
        );
        for pod in endpoint_pods(p, s) {
            let _ = writeln!(
                o,
                "  s{si} -.-> {}",
                pod_ids[&(pod.namespace.as_str(), pod.name.as_str())]
            );
        }
    }
    o
}
