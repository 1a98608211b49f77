//! The pods' plans: the namespace each runs in (its own, its node's or the
//! one it shares), a bridge pod's veth and default route, its volumes and
//! its containers.

use super::{containers, Placement, Planner, POD_BRIDGE};
use crate::plan::names::{self, IfNames};
use crate::plan::types::*;
use crate::topology::model::{Network, Pod};
use std::net::Ipv4Addr;

impl Planner<'_, '_> {
    /// Every placed pod's plan, in the topology's order.
    pub(super) fn pods(
        &mut self,
        placed: &[Placement],
        nodes: &[NodePlan],
        if_names: &mut [IfNames],
        mtu: u32,
    ) -> Vec<PodPlan> {
        let topo = self.topo;
        let mut out = Vec::new();
        for (i, pod) in topo.pods.iter().enumerate() {
            let Some(n) = placed[i].node else { continue };
            let node = &nodes[n];
            let ns = &pod.namespace.value;
            let name = &pod.name.value;
            let (network, netns, owns) = self.pod_netns(pod, node, nodes, placed);
            let mut interface = None;
            let mut routes = Vec::new();
            if let (Network::Bridge, Some(ip)) = (&pod.network.value, placed[i].ip) {
                let (veth, route) = self.pod_veth(pod, node, ip, &mut if_names[n], mtu);
                interface = Some(veth);
                routes.push(route);
            }
            let dir = crate::layout::pod_dir(&self.state_dir, ns, name);
            let volumes = pod
                .volumes
                .iter()
                .map(|v| VolumePlan {
                    name: v.value.clone(),
                    path: crate::layout::volume(&dir, &v.value),
                })
                .collect();
            out.push(PodPlan {
                name: name.clone(),
                namespace: ns.clone(),
                node: node.name.clone(),
                owner: pod.owner.clone(),
                labels: pod.labels.map.clone(),
                network,
                netns,
                owns_netns: owns,
                ip: placed[i].ip,
                interface,
                routes,
                hostname: name.clone(),
                hosts_file: crate::layout::hosts_file(&dir),
                volumes,
                containers: containers(pod.containers.iter(), &dir),
            });
        }
        out
    }

    /// A pod's network mode as written in the plan, the namespace it runs
    /// in, and whether that namespace is its own.
    fn pod_netns(
        &self,
        pod: &Pod,
        node: &NodePlan,
        nodes: &[NodePlan],
        placed: &[Placement],
    ) -> (String, String, bool) {
        let own_netns = names::pod_netns(&self.prefix, &pod.namespace.value, &pod.name.value);
        match &pod.network.value {
            Network::Bridge => ("bridge".to_string(), own_netns, true),
            Network::None => ("none".to_string(), own_netns, true),
            Network::Host => ("host".to_string(), node.netns.clone(), false),
            Network::Container(t) => (
                format!("container:{t}"),
                self.shared_netns(pod, nodes, placed),
                false,
            ),
        }
    }

    /// A bridge pod's veth to its node's pod bridge, with address `ip`, and
    /// its default route through the bridge.
    fn pod_veth(
        &mut self,
        pod: &Pod,
        node: &NodePlan,
        ip: Ipv4Addr,
        if_names: &mut IfNames,
        mtu: u32,
    ) -> (Veth, Route) {
        let tb = &self.topo.name.value;
        let ns = &pod.namespace.value;
        let name = &pod.name.value;
        let gw = node.bridge.addresses[0];
        let veth = Veth {
            inner: Iface {
                name: "eth0".into(),
                mac: Some(self.macs.mac(tb, &format!("pod/{ns}/{name}/eth0"))),
                mtu,
                addresses: vec![IfAddr {
                    ip,
                    prefix_len: gw.prefix_len,
                }],
            },
            peer_netns: node.netns.clone(),
            peer: Iface {
                name: if_names.hashed("veth", &format!("{ns}/{name}")),
                mac: Some(self.macs.mac(tb, &format!("pod/{ns}/{name}/peer"))),
                mtu,
                addresses: Vec::new(),
            },
            peer_master: POD_BRIDGE.into(),
        };
        let route = Route {
            dst: "default".into(),
            via: Some(gw.ip),
            dev: "eth0".into(),
            onlink: false,
        };
        (veth, route)
    }

    /// The namespace a `container:` pod joins: that of the end of its chain.
    fn shared_netns(&self, pod: &Pod, nodes: &[NodePlan], placed: &[Placement]) -> String {
        let topo = self.topo;
        let mut cur = pod;
        for _ in 0..=topo.pods.len() {
            let Network::Container(t) = &cur.network.value else {
                break;
            };
            match topo
                .pods
                .iter()
                .position(|p| p.namespace.value == pod.namespace.value && &p.name.value == t)
            {
                Some(j) => {
                    cur = &topo.pods[j];
                    if cur.network.value == Network::Host {
                        return placed[j]
                            .node
                            .map(|n| nodes[n].netns.clone())
                            .unwrap_or_default();
                    }
                }
                None => break,
            }
        }
        names::pod_netns(&self.prefix, &cur.namespace.value, &cur.name.value)
    }
}
