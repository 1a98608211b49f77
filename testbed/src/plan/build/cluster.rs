//! The cluster-wide networks: whether they fit together, the node subnets
//! and the LAN addresses of nodes and hosts. A value the file did not write
//! is named as such in every message here ("`serviceCIDR` (not set: the
//! default)"), the message points at the field it was derived from or at the
//! smallest enclosing thing the file wrote, and the advice is computed from
//! the file's own values.

use super::suggest;
use super::Planner;
use crate::diag::{At, Diagnostic, Diagnostics};
use crate::topology::decode::derived_lb_cidr;
use crate::topology::model::{Origin, Sp, Topology};
use overlay::{Ipv4Net, NetworkConfig, NetworkError};
use std::net::Ipv4Addr;

/// Where an error about the cluster value `v` points: at its own text, or
/// the text it was derived from; for a plain default, at the `cluster:` key,
/// else at `fallback` (the entry that needs the value) when there is one.
pub(super) fn point<T>(topo: &Topology, v: &Sp<T>, fallback: Option<&At>) -> At {
    match (&v.origin, &topo.cluster.at, fallback) {
        (Origin::Default, None, Some(f)) => f.clone(),
        _ => v.at.clone(),
    }
}

/// flannel's configuration of the pod network, when the cluster's networks
/// fit together; otherwise `None`, with every reason in `diags`.
pub(super) fn cluster_config(topo: &Topology, diags: &mut Diagnostics) -> Option<NetworkConfig> {
    let apart = networks_apart(topo, diags);
    let inside = lb_inside_lan(topo, diags);
    let config = network_config(topo, diags);
    config.filter(|_| apart && inside)
}

/// The pod, service and underlay networks share no address.
fn networks_apart(topo: &Topology, diags: &mut Diagnostics) -> bool {
    let c = &topo.cluster;
    let nets = [
        (&c.pod_cidr, "podCIDR"),
        (&c.service_cidr, "serviceCIDR"),
        (&c.underlay_cidr, "underlayCIDR"),
    ];
    let mut ok = true;
    for (i, &(a, an)) in nets.iter().enumerate() {
        for &(b, bn) in &nets[i + 1..] {
            if !a.value.overlaps(&b.value) {
                continue;
            }
            ok = false;
            // Point at what the file wrote; advise moving what it did not
            // (or, both written, the later one).
            let ((here, hn), (other, on)) = if b.is_written() || !a.is_written() {
                ((b, bn), (a, an))
            } else {
                ((a, an), (b, bn))
            };
            let (mv, mvn) = if other.is_written() {
                (here, hn)
            } else {
                (other, on)
            };
            let avoid: Vec<Ipv4Net> = nets
                .iter()
                .filter(|(_, n)| *n != mvn)
                .map(|(s, _)| s.value)
                .collect();
            let why = "the pod, service and underlay networks must not share addresses";
            let help = match suggest::free_like(mv.value, &avoid) {
                Some(free) if mv.is_written() => format!("{why}: e.g. `{mvn}: {free}`"),
                Some(free) => format!("{why}: set `{mvn}: {free}` (or another network clear of the others) in `cluster`"),
                None => format!("{why}: move `{mvn}`"),
            };
            diags.push(
                Diagnostic::error(
                    &point(topo, here, None),
                    format!(
                        "{} {} overlaps {} {}",
                        here.named(hn),
                        here.value,
                        other.named(on),
                        other.value
                    ),
                )
                .help(help),
            );
        }
    }
    ok
}

/// External IPs are LAN addresses. (A derived range always is.)
fn lb_inside_lan(topo: &Topology, diags: &mut Diagnostics) -> bool {
    let c = &topo.cluster;
    let (lb, lan) = (&c.lb_cidr, &c.underlay_cidr);
    if lan.value.covers(&lb.value) {
        return true;
    }
    let why = "external IPs are announced on the LAN, so they must be LAN addresses";
    let top = derived_lb_cidr(lan.value);
    let inside = format!(
        "pick a range inside {}, e.g. `loadBalancerCIDR: {top}` (what leaving it out gives)",
        lan.value
    );
    let help = if lan.is_written() {
        format!("{why}: {inside}")
    } else {
        // The LAN is the default: the file more likely meant a LAN of its own.
        let len = lb.value.prefix_len().saturating_sub(2).min(24);
        let own = Ipv4Net::new(lb.value.network(), len);
        let others = [c.pod_cidr.value, c.service_cidr.value];
        if others.iter().any(|o| o.overlaps(&own)) {
            format!("{why}: set `underlayCIDR` to the LAN that holds them, or {inside}")
        } else {
            format!("{why}: set `underlayCIDR` to the LAN that holds them, e.g. `underlayCIDR: {own}`, or {inside}")
        }
    };
    diags.push(
        Diagnostic::error(
            &point(topo, lb, None),
            format!(
                "{} {} is not inside {} {}",
                lb.named("loadBalancerCIDR"),
                lb.value,
                lan.named("underlayCIDR"),
                lan.value
            ),
        )
        .help(help),
    );
    false
}

/// flannel's configuration: podCIDR cut into subnets of subnetLen.
fn network_config(topo: &Topology, diags: &mut Diagnostics) -> Option<NetworkConfig> {
    let c = &topo.cluster;
    let (pod, len) = (&c.pod_cidr, &c.subnet_len);
    let e = match NetworkConfig::new(pod.value, len.value, c.overlay.value) {
        Ok(cfg) => return Some(cfg),
        Err(e) => e,
    };
    let (msg, help) = match e {
        NetworkError::SubnetTooLong { len: l } if len.is_written() => (
            format!("`subnetLen` {l} is longer than 30: a node subnet needs room for its bridge and pods"),
            "use at most 30, e.g. 24".to_string(),
        ),
        NetworkError::SubnetTooLong { len: l } => (
            format!(
                "{} {l} is longer than 30: `podCIDR` {} is too small to hold four node subnets of a bridge and a pod",
                len.named("subnetLen"),
                pod.value
            ),
            format!(
                "use a podCIDR of /28 or larger, e.g. `podCIDR: {}`",
                Ipv4Net::new(pod.value.network(), 24)
            ),
        ),
        NetworkError::SubnetTooShort { len: l, min, .. } => (
            format!(
                "`subnetLen` {l} must be at least {min}, the prefix length of {} {} + 2",
                pod.named("podCIDR"),
                pod.value
            ),
            format!(
                "flannel leaves the first and last subnet of podCIDR unused, so there must be at least four: use at least {min} with podCIDR {}",
                pod.value
            ),
        ),
        e => (e.to_string(), "use a larger podCIDR".to_string()),
    };
    diags.push(Diagnostic::error(&point(topo, len, None), msg).help(help));
    None
}

impl Planner<'_, '_> {
    /// The nodes' subnets, leased in order as flannel leases them.
    pub(super) fn node_subnets(&mut self) -> Option<Vec<Ipv4Net>> {
        let topo = self.topo;
        let c = &topo.cluster;
        let (pod, len) = (&c.pod_cidr, &c.subnet_len);
        let nodes = topo.nodes.len();
        if let Ok(subnets) = self.config.lease_subnets(nodes) {
            return Some(subnets);
        }
        let available = self.config.capacity();
        // Point at the pod network if the file wrote it, else at the subnet
        // length if it wrote that, else at the first node without a subnet.
        let at = if pod.is_written() || !len.is_written() {
            let first_without = topo.nodes.get(available as usize).map(|n| &n.name.at);
            point(topo, pod, first_without)
        } else {
            len.at.clone()
        };
        let mut msg = format!(
            "{} {} has room for {available} node subnets of /{}, but {nodes} nodes need one each",
            pod.named("podCIDR"),
            pod.value,
            len.value
        );
        if !len.is_written() {
            msg.push_str(&format!("; {} is {}", len.named("subnetLen"), len.value));
        }
        let per_node = self.bridge_pods().div_ceil(nodes.max(1) as u64).max(1);
        let others = [c.service_cidr.value, c.underlay_cidr.value];
        let wider = suggest::widened(
            pod.value,
            suggest::pod_len_for(len.value, nodes as u64),
            &others,
        );
        let mut ways = Vec::new();
        if let Some(l) = suggest::subnet_len_for(pod.value, len.value, nodes as u64, per_node) {
            ways.push(format!(
                "`subnetLen: {l}` ({} node subnets of {} pods)",
                suggest::subnets_in(pod.value, l),
                suggest::pods_per_subnet(l)
            ));
        }
        if let Some(w) = wider {
            ways.push(format!("a larger podCIDR, e.g. `podCIDR: {w}`"));
        }
        let help = if ways.is_empty() {
            "use a larger podCIDR (a shorter prefix) or a longer subnetLen".to_string()
        } else {
            format!(
                "use {}; flannel leaves the first and last subnet unused",
                ways.join(" or ")
            )
        };
        self.err(&at, msg, help);
        None
    }

    /// How many pods have an address of their own on a node's bridge.
    pub(super) fn bridge_pods(&self) -> u64 {
        self.topo
            .pods
            .iter()
            .filter(|p| p.network.value == crate::topology::model::Network::Bridge)
            .count() as u64
    }

    /// Nodes take underlay addresses from the bottom up, hosts from the top
    /// down, both skipping loadBalancerCIDR; so adding a host never moves a
    /// node, nor the other way round.
    pub(super) fn underlay_addresses(&mut self) -> Option<(Vec<Ipv4Addr>, Vec<Ipv4Addr>)> {
        let topo = self.topo;
        let c = &topo.cluster;
        let (net, lb) = (c.underlay_cidr.value, c.lb_cidr.value);
        let usable = |ip: &Ipv4Addr| net.is_host(*ip) && !lb.contains(*ip);
        let lb_hosts = suggest::hosts_of(lb, net);
        let room = net.host_count() - lb_hosts;
        let (n, h) = (topo.nodes.len(), topo.hosts.len());
        if (n + h) as u64 > room {
            self.lan_too_small(room, lb_hosts);
            return None;
        }
        let nodes = (0..net.size())
            .filter_map(|i| net.nth(i))
            .filter(usable)
            .take(n)
            .collect();
        let hosts = (0..net.size())
            .rev()
            .filter_map(|i| net.nth(i))
            .filter(usable)
            .take(h)
            .collect();
        Some((nodes, hosts))
    }

    fn lan_too_small(&mut self, room: u64, lb_hosts: u64) {
        let topo = self.topo;
        let c = &topo.cluster;
        let (lan, lb) = (&c.underlay_cidr, &c.lb_cidr);
        let (n, h) = (topo.nodes.len(), topo.hosts.len());
        let first_without = topo
            .nodes
            .iter()
            .chain(&topo.hosts)
            .nth(room as usize)
            .map(|m| &m.name.at);
        let others = [c.pod_cidr.value, c.service_cidr.value];
        let keep_lb = lb.is_written().then_some(lb.value);
        let help = match suggest::lan_for(lan.value, keep_lb, (n + h) as u64, &others) {
            Some(wide) => format!("use a larger underlayCIDR, e.g. `underlayCIDR: {wide}`"),
            None => "use a larger underlayCIDR (a shorter prefix)".to_string(),
        };
        self.err(
            &point(topo, lan, first_without),
            format!(
                "{} {} has room for {room} machines ({} addresses, less {lb_hosts} in {} {}), but {n} nodes and {h} hosts are declared",
                lan.named("underlayCIDR"),
                lan.value,
                lan.value.host_count(),
                lb.named("loadBalancerCIDR"),
                lb.value,
            ),
            help,
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::testutil::plan;

    /// Issue 9, defect 5: a LAN of the user's own and a LoadBalancer
    /// service, no loadBalancerCIDR: the external IP comes from the top /28
    /// of that LAN.
    #[test]
    fn load_balancer_range_follows_the_users_lan() {
        let p = plan(
            "name: t
cluster:
  underlayCIDR: 10.77.0.0/24
nodes: [{name: node1}]
hosts: [{name: client}]
pods:
  - {name: web, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
services:
  - {name: web, type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}
",
        );
        assert_eq!(p.cluster.load_balancer_cidr.to_string(), "10.77.0.240/28");
        let ip = p.services[0].load_balancer_ip.expect("an external IP");
        assert!(p.cluster.load_balancer_cidr.contains(ip), "{ip}");
        assert_eq!(p.nodes[0].ip.to_string(), "10.77.0.1");
        assert_eq!(p.hosts[0].ip.to_string(), "10.77.0.239");
    }

    /// A small LAN keeps most of its addresses: a /28 gives its top /30 to
    /// external IPs, and machines never get an address of that range.
    #[test]
    fn small_lans_get_a_quarter_for_external_ips() {
        let p = plan(
            "name: t
cluster: {underlayCIDR: 10.77.0.0/28}
nodes: [{name: n1}, {name: n2}]
hosts: [{name: h1}]
pods:
  - {name: web, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
services:
  - {name: web, type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}
",
        );
        assert_eq!(p.cluster.load_balancer_cidr.to_string(), "10.77.0.12/30");
        assert_eq!(p.nodes[0].ip.to_string(), "10.77.0.1");
        assert_eq!(p.hosts[0].ip.to_string(), "10.77.0.11");
        let ip = p.services[0].load_balancer_ip.expect("an external IP");
        assert_eq!(ip.to_string(), "10.77.0.12");
    }

    /// However many machines a LAN of any size holds, none gets an address
    /// of the derived range, and every external IP is a LAN host address.
    #[test]
    fn machines_never_take_the_derived_range() {
        for len in 22..=30u8 {
            let lan: overlay::Ipv4Net = format!("10.77.0.0/{len}").parse().unwrap();
            let lb = crate::topology::decode::derived_lb_cidr(lan);
            let room = lan.host_count() - super::suggest::hosts_of(lb, lan);
            for machines in [1, room / 2, room] {
                let nodes = machines.div_ceil(2).max(1);
                let hosts = machines - nodes.min(machines);
                let list = |k: &str, n: u64| {
                    (0..n)
                        .map(|i| format!("{{name: {k}{i}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let yaml = format!(
                    "name: t\ncluster: {{underlayCIDR: {lan}, subnetLen: 28}}\nnodes: [{}]\nhosts: [{}]\n",
                    list("n", nodes),
                    list("h", hosts)
                );
                let p = plan(&yaml);
                assert_eq!(p.cluster.load_balancer_cidr, lb, "{lan}");
                for ip in p
                    .nodes
                    .iter()
                    .map(|n| n.ip)
                    .chain(p.hosts.iter().map(|h| h.ip))
                {
                    assert!(lan.is_host(ip) && !lb.contains(ip), "{lan}: {ip} in {lb}");
                }
            }
        }
    }

    /// Without subnetLen, a pod network smaller than /22 is cut as flannel
    /// cuts it: in four (prefix + 2).
    #[test]
    fn subnet_length_is_derived_from_a_small_pod_network() {
        let p =
            plan("name: t\ncluster: {podCIDR: 10.244.0.0/24}\nnodes: [{name: n1}, {name: n2}]\n");
        assert_eq!(p.cluster.subnet_len, 26);
        assert_eq!(p.nodes[1].lease.subnet.to_string(), "10.244.0.128/26");
    }
}
