//! Pod placement: which node each pod runs on, and bridge pods' addresses.
//! Pinned pods go where they are pinned; every other pod goes to the
//! least-loaded node with room, and a pod sharing its node's network avoids
//! the nodes where another such pod already waits for one of its ports (as
//! Kubernetes' scheduler keeps host ports apart).

use super::{suggest, Placement, Planner};
use crate::diag::{At, Diagnostic};
use crate::topology::model::{Network, Pod};
use overlay::Ipv4Net;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// What is already on each node while pods are placed.
struct Load {
    /// Pods on the node.
    pods: Vec<u64>,
    /// Bridge pods on the node (they need an address of its subnet).
    bridged: Vec<u64>,
    /// Bridge pods its subnet has addresses for.
    capacity: Vec<u64>,
    /// The ready ports of the host-network pods on the node.
    host_ports: Vec<Vec<u16>>,
}

impl Load {
    fn add(&mut self, n: usize, pod: &Pod) {
        self.pods[n] += 1;
        match pod.network.value {
            Network::Bridge => self.bridged[n] += 1,
            Network::Host => self.host_ports[n].extend(host_ports(pod)),
            _ => {}
        }
    }
}

/// The TCP ports a host-network pod waits for: ports it listens on in its
/// node's namespace.
fn host_ports(pod: &Pod) -> Vec<u16> {
    if pod.network.value != Network::Host {
        return Vec::new();
    }
    pod.containers
        .iter()
        .filter_map(|c| c.ready_tcp.as_ref().map(|t| t.value))
        .collect()
}

fn is_shared(p: &Pod) -> bool {
    matches!(p.network.value, Network::Container(_))
}

impl Planner<'_, '_> {
    /// Places every pod on a node and gives bridge pods their addresses.
    pub(super) fn place_pods(
        &mut self,
        subnets: &[Ipv4Net],
        node_ips: &[Ipv4Addr],
    ) -> Vec<Placement> {
        let topo = self.topo;
        let nodes = topo.nodes.len();
        let mut load = Load {
            pods: vec![0; nodes],
            bridged: vec![0; nodes],
            capacity: subnets
                .iter()
                .map(|s| s.host_count().saturating_sub(1))
                .collect(),
            host_ports: vec![Vec::new(); nodes],
        };
        let mut placed = vec![Placement::default(); topo.pods.len()];
        self.place_pinned(subnets, &mut placed, &mut load);
        self.place_rest(&mut placed, &mut load);
        for (n, subnet) in subnets.iter().enumerate() {
            let taken = self.pinned_addresses(n, *subnet, &mut placed);
            self.allocate_addresses(n, *subnet, load.capacity[n], taken, &mut placed);
        }
        // Host-network pods have the node's address.
        for (i, pod) in topo.pods.iter().enumerate() {
            if pod.network.value == Network::Host {
                placed[i].ip = placed[i].node.map(|n| node_ips[n]);
            }
        }
        self.follow_shared(&mut placed);
        self.host_port_clashes(&placed);
        placed
    }

    /// Pinned pods first: by node, or by an address inside a node's subnet.
    fn place_pinned(&mut self, subnets: &[Ipv4Net], placed: &mut [Placement], load: &mut Load) {
        let topo = self.topo;
        let node_index: HashMap<&str, usize> = topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.value.as_str(), i))
            .collect();
        for (i, pod) in topo.pods.iter().enumerate() {
            if is_shared(pod) {
                continue;
            }
            let node = match (&pod.node, &pod.ip) {
                (Some(n), _) => node_index.get(n.value.as_str()).copied(),
                (None, Some(ip)) => {
                    let found = subnets.iter().position(|s| s.contains(ip.value));
                    if found.is_none() {
                        self.in_no_subnet(ip.value, &ip.at, subnets);
                    }
                    found
                }
                (None, None) => continue,
            };
            if let Some(n) = node {
                placed[i].node = Some(n);
                load.add(n, pod);
            }
        }
    }

    fn in_no_subnet(&mut self, ip: Ipv4Addr, at: &At, subnets: &[Ipv4Net]) {
        let topo = self.topo;
        let pod_cidr = &topo.cluster.pod_cidr;
        let list: Vec<String> = topo
            .nodes
            .iter()
            .zip(subnets)
            .take(4)
            .map(|(n, s)| format!("{} has {s}", n.name.value))
            .collect();
        let more = if topo.nodes.len() > 4 { ", ..." } else { "" };
        let mut msg = format!("{ip} is not in any node's pod subnet");
        let mut help = format!(
            "pick an address in a node's subnet ({}{more}), or remove `ip`",
            list.join(", ")
        );
        if !pod_cidr.value.contains(ip) {
            msg.push_str(&format!(
                ": it is outside {} {}",
                pod_cidr.named("podCIDR"),
                pod_cidr.value
            ));
            let c = &topo.cluster;
            let own = Ipv4Net::new(ip, pod_cidr.value.prefix_len());
            let clear = ![c.service_cidr.value, c.underlay_cidr.value]
                .iter()
                .any(|o| o.overlaps(&own));
            if !pod_cidr.is_written() && clear {
                help.push_str(&format!(", or set `podCIDR: {own}` in `cluster`"));
            }
        }
        self.err(at, msg, help);
    }

    /// The rest on the least-loaded node with room, ties in node order; a
    /// host-network pod prefers nodes where its ports are free.
    fn place_rest(&mut self, placed: &mut [Placement], load: &mut Load) {
        let topo = self.topo;
        for (i, pod) in topo.pods.iter().enumerate() {
            if is_shared(pod) || pod.node.is_some() || pod.ip.is_some() {
                continue;
            }
            let bridge = pod.network.value == Network::Bridge;
            let ports = host_ports(pod);
            let clash = |n: usize| ports.iter().any(|p| load.host_ports[n].contains(p));
            let choice = (0..topo.nodes.len())
                .filter(|&n| !self.unschedulable[n])
                .filter(|&n| !bridge || load.bridged[n] < load.capacity[n])
                .min_by_key(|&n| (clash(n), load.pods[n], n));
            match choice {
                Some(n) => {
                    placed[i].node = Some(n);
                    load.add(n, pod);
                }
                None => self.no_room(pod, load),
            }
        }
    }

    fn no_room(&mut self, pod: &Pod, load: &Load) {
        let topo = self.topo;
        let len = &topo.cluster.subnet_len;
        let cap = load.capacity.first().copied().unwrap_or(0);
        let mut msg = format!(
            "no node has room for pod `{}`: each node's /{} pod subnet holds {cap} pods and all are full",
            pod.name.value, len.value
        );
        if !len.is_written() {
            msg.push_str(&format!("; {} is {}", len.named("subnetLen"), len.value));
        }
        let help = self.subnet_len_help(self.bridge_pods(), "add nodes");
        self.err(&pod.name.at, msg, help);
    }

    /// Advice for node subnets too small for `pods` bridge pods: a subnet
    /// length that holds them (computed from the file's podCIDR and nodes).
    fn subnet_len_help(&self, pods: u64, or: &str) -> String {
        let c = &self.topo.cluster;
        let nodes = self.topo.nodes.len().max(1) as u64;
        let per_node = pods.div_ceil(nodes);
        match suggest::subnet_len_for(c.pod_cidr.value, c.subnet_len.value, nodes, per_node) {
            Some(l) if l < c.subnet_len.value => format!(
                "use a shorter subnetLen (larger node subnets), e.g. `subnetLen: {l}` ({} pods a node), or {or}",
                suggest::pods_per_subnet(l)
            ),
            _ => format!("use a larger podCIDR and a shorter subnetLen (larger node subnets), or {or}"),
        }
    }

    /// Checks the pinned addresses of node `n`'s bridge pods; returns them.
    fn pinned_addresses(
        &mut self,
        n: usize,
        subnet: Ipv4Net,
        placed: &mut [Placement],
    ) -> HashMap<Ipv4Addr, usize> {
        let topo = self.topo;
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
                    format!(
                        "{} is already pinned by pod `{}` (line {})",
                        ip.value, o.name.value, o.at.pos.line
                    ),
                    "give each pod its own address, or remove `ip` from one to have one allocated",
                );
            } else {
                taken.insert(ip.value, i);
                placed[i].ip = Some(ip.value);
            }
        }
        taken
    }

    /// Addresses for node `n`'s other bridge pods, in pod order from `.2`,
    /// skipping the pinned ones.
    fn allocate_addresses(
        &mut self,
        n: usize,
        subnet: Ipv4Net,
        capacity: u64,
        mut taken: HashMap<Ipv4Addr, usize>,
        placed: &mut [Placement],
    ) {
        let topo = self.topo;
        let mut next: u64 = 2;
        let mut overflow: Vec<usize> = Vec::new();
        for (i, pod) in topo.pods.iter().enumerate() {
            if placed[i].node != Some(n) || pod.network.value != Network::Bridge || pod.ip.is_some()
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
        let Some(&first) = overflow.first() else {
            return;
        };
        let pod = &topo.pods[first];
        let node_name = &topo.nodes[n].name.value;
        let at = pod.node.as_ref().map_or(&pod.name.at, |s| &s.at).clone();
        let placed_here = placed
            .iter()
            .zip(&topo.pods)
            .filter(|(p, pod)| p.node == Some(n) && pod.network.value == Network::Bridge)
            .count();
        let len = &topo.cluster.subnet_len;
        let mut msg = format!(
            "node `{node_name}`'s pod subnet {subnet} has room for {capacity} bridge pods, but {placed_here} are placed on it (from pod `{}` on, they get no address)",
            pod.name.value
        );
        if !len.is_written() {
            msg.push_str(&format!("; {} is {}", len.named("subnetLen"), len.value));
        }
        let nodes = topo.nodes.len() as u64;
        let help =
            self.subnet_len_help(placed_here as u64 * nodes, "place some pods on other nodes");
        self.err(&at, msg, help);
    }

    /// Pods sharing another's network follow it to its node and address.
    fn follow_shared(&self, placed: &mut [Placement]) {
        let topo = self.topo;
        let pod_index: HashMap<(&str, &str), usize> = topo
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.namespace.value.as_str(), p.name.value.as_str()), i))
            .collect();
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
            if steps > 0 && !is_shared(cur) {
                if let Some(&root) =
                    pod_index.get(&(cur.namespace.value.as_str(), cur.name.value.as_str()))
                {
                    placed[i] = placed[root].clone();
                }
            }
        }
    }

    /// Host-network pods on one node that wait for the same port: the
    /// second cannot listen on it. A warning, since one pod may wait for
    /// another's port on purpose.
    fn host_port_clashes(&mut self, placed: &[Placement]) {
        let topo = self.topo;
        let mut seen: HashMap<(usize, u16), &Pod> = HashMap::new();
        for (i, pod) in topo.pods.iter().enumerate() {
            let Some(n) = placed[i].node else { continue };
            for c in &pod.containers {
                let Some(port) = c
                    .ready_tcp
                    .as_ref()
                    .filter(|_| pod.network.value == Network::Host)
                else {
                    continue;
                };
                let Some(first) = seen.get(&(n, port.value)).copied() else {
                    seen.insert((n, port.value), pod);
                    continue;
                };
                if std::ptr::eq(first, pod) {
                    continue;
                }
                let node = &topo.nodes[n].name.value;
                let (why, help) = if pod.node.is_none() {
                    (
                        format!("placed on `{node}` (no `node` is set) because every node already has a host-network pod waiting for that port"),
                        "add a node, use another port, or `network: bridge`".to_string(),
                    )
                } else {
                    (
                        format!("both pinned to `{node}`"),
                        "pin one to another node, use another port, or `network: bridge`"
                            .to_string(),
                    )
                };
                let d = Diagnostic::warning(
                    &port.at,
                    format!(
                        "pods `{}` and `{}` share node `{node}`'s network and both wait for port {}: the second to start cannot listen on it ({why})",
                        first.name.value, pod.name.value, port.value
                    ),
                )
                .help(help);
                self.diags.push(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::testutil::load;

    const HOST_PODS: &str = "
  - {name: a, node: n1, network: host, containers: [{name: c, command: [sleep, infinity], ready: {tcp: 8080}}]}
  - {name: x, node: n2, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: b, network: host, containers: [{name: c, command: [sleep, infinity], ready: {tcp: 8080}}]}
";

    /// A host-network pod placed by default goes where its port is free,
    /// not to the first of the least-loaded nodes, where it could not listen.
    #[test]
    fn default_placement_keeps_host_ports_apart() {
        let l = load(&format!(
            "name: t\nnodes: [{{name: n1}}, {{name: n2}}]\npods:{HOST_PODS}"
        ));
        let b = l.plan.pods.iter().find(|p| p.name == "b").unwrap();
        assert_eq!(b.node, "n2");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    /// When every node has the port taken, the pod is placed as usual and
    /// the file is warned about, saying that the placement was the default.
    #[test]
    fn a_host_port_clash_that_cannot_be_avoided_is_a_warning() {
        let l = load(&format!(
            "name: t\nnodes: [{{name: n1}}]\npods:{}",
            HOST_PODS.replace("node: n2", "node: n1")
        ));
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        let w = &l.warnings[0];
        assert_eq!(w.path, "pods[2].containers[0].ready.tcp");
        assert!(w.message.contains("no `node` is set"), "{}", w.message);
    }
}
