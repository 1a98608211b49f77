//! Mermaid flowchart: renders in Markdown viewers that support Mermaid.

use super::{bridge_label, endpoint_pods, link_label, node_label, pod_label, service_label};
use crate::plan::types::LinkPlan;
use crate::plan::Plan;
use std::collections::HashMap;
use std::fmt::Write;

fn label(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "#quot;"))
}

/// The edge from the LAN to a machine, labelled with its impairments.
fn uplink(o: &mut String, link: &Option<LinkPlan>, id: &str) {
    let _ = match link_label(link) {
        Some(l) => writeln!(o, "  lan ---|{}| {id}", label(&l)),
        None => writeln!(o, "  lan --- {id}"),
    };
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
        let _ = writeln!(o, "  subgraph n{ni}[{}]", label(&node_label(n)));
        let _ = writeln!(o, "    n{ni}eth[{}]", label(&format!("eth0 {}", n.ip)));
        let _ = writeln!(o, "    n{ni}br([{}])", label(&bridge_label(n)));
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
        uplink(&mut o, &n.link, &format!("n{ni}eth"));
    }
    for (hi, h) in p.hosts.iter().enumerate() {
        let _ = writeln!(
            o,
            "  h{hi}[{}]",
            label(&format!("host {} · {}", h.name, h.ip))
        );
        uplink(&mut o, &h.link, &format!("h{hi}"));
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
