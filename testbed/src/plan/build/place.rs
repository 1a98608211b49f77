//! Pod placement: which node each pod runs on, and bridge pods' addresses.

use super::{Placement, Planner};
use crate::topology::model::{Network, Pod};
use overlay::Ipv4Net;
use std::collections::HashMap;
use std::net::Ipv4Addr;

impl Planner<'_, '_> {
    /// Places every pod on a node and gives bridge pods their addresses.
    pub(super) fn place_pods(
        &mut self,
        subnets: &[Ipv4Net],
        node_ips: &[Ipv4Addr],
    ) -> Vec<Placement> {
        let topo = self.topo;
        let node_index: HashMap<&str, usize> = topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.value.as_str(), i))
            .collect();
        let pod_index: HashMap<(&str, &str), usize> = topo
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.namespace.value.as_str(), p.name.value.as_str()), i))
            .collect();
        let capacity: Vec<u64> = subnets
            .iter()
            .map(|s| s.host_count().saturating_sub(1))
            .collect();
        let mut placed = vec![Placement::default(); topo.pods.len()];
        let mut load = vec![0u64; topo.nodes.len()];
        let mut bridged = vec![0u64; topo.nodes.len()];
        let is_container = |p: &Pod| matches!(p.network.value, Network::Container(_));

        // Pinned pods first: by node, or by an address inside a node's subnet.
        for (i, pod) in topo.pods.iter().enumerate() {
            if is_container(pod) {
                continue;
            }
            let node = match (&pod.node, &pod.ip) {
                (Some(n), _) => node_index.get(n.value.as_str()).copied(),
                (None, Some(ip)) => {
                    let found = subnets.iter().position(|s| s.contains(ip.value));
                    if found.is_none() {
                        let list: Vec<String> = topo
                            .nodes
                            .iter()
                            .zip(subnets)
                            .take(4)
                            .map(|(n, s)| format!("{} has {s}", n.name.value))
                            .collect();
                        let more = if topo.nodes.len() > 4 { ", ..." } else { "" };
                        self.err(
                            &ip.at,
                            format!("{} is not in any node's pod subnet", ip.value),
                            format!(
                                "pick an address in a node's subnet ({}{more}), or remove `ip`",
                                list.join(", ")
                            ),
                        );
                    }
                    found
                }
                (None, None) => continue,
            };
            if let Some(n) = node {
                placed[i].node = Some(n);
                load[n] += 1;
                if pod.network.value == Network::Bridge {
                    bridged[n] += 1;
                }
            }
        }
        // The rest on the least-loaded node with room, ties in node order.
        for (i, pod) in topo.pods.iter().enumerate() {
            if is_container(pod) || pod.node.is_some() || pod.ip.is_some() {
                continue;
            }
            let bridge = pod.network.value == Network::Bridge;
            let choice = (0..topo.nodes.len())
                .filter(|&n| !bridge || bridged[n] < capacity[n])
                .min_by_key(|&n| (load[n], n));
            match choice {
                Some(n) => {
                    placed[i].node = Some(n);
                    load[n] += 1;
                    if bridge {
                        bridged[n] += 1;
                    }
                }
                None => {
                    let cap = capacity.first().copied().unwrap_or(0);
                    self.err(
                        &pod.name.at,
                        format!(
                            "no node has room for pod `{}`: each node's /{} pod subnet holds {cap} pods and all are full",
                            pod.name.value, self.config.subnet_len
                        ),
                        "use a shorter cluster.subnetLen (larger node subnets), or add nodes",
                    );
                }
            }
        }
        // Addresses, node by node: pins first, then in pod order.
        for (n, subnet) in subnets.iter().enumerate() {
            let bridge_ip = subnet.nth(1);
            let mut taken: HashMap<Ipv4Addr, usize> = HashMap::new();
            for (i, pod) in topo.pods.iter().enumerate() {
                let Some(ip) = &pod.ip else { continue };
                if placed[i].node != Some(n) || pod.network.value != Network::Bridge {
                    continue;
                }
                let node_name = &topo.nodes[n].name.value;
                if !subnet.contains(ip.value) {
                    self.err(
                        &ip.at,
                        format!(
                            "{} is outside node `{node_name}`'s pod subnet {subnet}",
                            ip.value
                        ),
                        format!(
                            "pick an address from {} to {}, or remove `ip` to have one allocated",
                            subnet.nth(2).unwrap_or(subnet.network()),
                            subnet.nth(subnet.size() - 2).unwrap_or(subnet.network())
                        ),
                    );
                } else if Some(ip.value) == bridge_ip {
                    self.err(&ip.at, format!("{} is node `{node_name}`'s bridge address", ip.value), "the first address of a node's subnet belongs to its bridge (the pods' gateway): pick another");
                } else if !subnet.is_host(ip.value) {
                    self.err(
                        &ip.at,
                        format!(
                            "{} is the network or broadcast address of {subnet}",
                            ip.value
                        ),
                        "pick an address between them",
                    );
                } else if let Some(&other) = taken.get(&ip.value) {
                    let o = &topo.pods[other];
                    self.err(
                        &ip.at,
                        format!("{} is already pinned by pod `{}` (line {})", ip.value, o.name.value, o.at.pos.line),
                        "give each pod its own address, or remove `ip` from one to have one allocated",
                    );
                } else {
                    taken.insert(ip.value, i);
                    placed[i].ip = Some(ip.value);
                }
            }
            let mut next: u64 = 2;
            let mut overflow: Vec<usize> = Vec::new();
            for (i, pod) in topo.pods.iter().enumerate() {
                if placed[i].node != Some(n)
                    || pod.network.value != Network::Bridge
                    || pod.ip.is_some()
                {
                    continue;
                }
                while subnet.nth(next).is_some_and(|ip| taken.contains_key(&ip)) {
                    next += 1;
                }
                match subnet.nth(next).filter(|ip| subnet.is_host(*ip)) {
                    Some(ip) => {
                        taken.insert(ip, i);
                        placed[i].ip = Some(ip);
                        next += 1;
                    }
                    None => overflow.push(i),
                }
            }
            if let Some(&first) = overflow.first() {
                let pod = &topo.pods[first];
                let node_name = &topo.nodes[n].name.value;
                let at = pod.node.as_ref().map_or(&pod.name.at, |s| &s.at).clone();
                let placed_here = placed
                    .iter()
                    .zip(&topo.pods)
                    .filter(|(p, pod)| p.node == Some(n) && pod.network.value == Network::Bridge)
                    .count();
                self.err(
                    &at,
                    format!(
                        "node `{node_name}`'s pod subnet {subnet} has room for {} bridge pods, but {placed_here} are placed on it (from pod `{}` on, they get no address)",
                        capacity[n], pod.name.value
                    ),
                    "use a shorter cluster.subnetLen (larger node subnets), or place some pods on other nodes",
                );
            }
        }
        // Host-network pods have the node's address.
        for (i, pod) in topo.pods.iter().enumerate() {
            if pod.network.value == Network::Host {
                placed[i].ip = placed[i].node.map(|n| node_ips[n]);
            }
        }
        // Pods sharing another's network follow it to its node and address.
        for (i, pod) in topo.pods.iter().enumerate() {
            let mut cur = pod;
            let mut steps = 0;
            while let Network::Container(target) = &cur.network.value {
                match pod_index.get(&(pod.namespace.value.as_str(), target.as_str())) {
                    Some(&t) if steps <= topo.pods.len() => {
                        cur = &topo.pods[t];
                        steps += 1;
                    }
                    _ => break,
                }
            }
            if steps > 0 && !matches!(cur.network.value, Network::Container(_)) {
                if let Some(&root) =
                    pod_index.get(&(cur.namespace.value.as_str(), cur.name.value.as_str()))
                {
                    placed[i] = placed[root].clone();
                }
            }
        }
        placed
    }
}
