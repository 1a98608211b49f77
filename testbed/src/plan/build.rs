//! Computes the plan from a checked topology: node subnets (flannel's
//! leasing order), underlay addresses, pod placement and addresses, cluster
//! IPs, node ports, external IPs, endpoints, names, MACs, routes and hosts
//! files. Pure: no root, no I/O, the same bytes for the same file and seed.
//! Problems only allocation can find (pins that clash, networks too small)
//! are reported here.

use crate::diag::{At, Diagnostic, Diagnostics};
use crate::plan::names::{self, IfNames, MacAllocator};
use crate::plan::types::*;
use crate::topology::model::{Link, Network, Pod, Sp, Topology};
use overlay::{Backend, Ipv4Net, Lease, NetworkConfig, NetworkError};
use proxy::{Endpoint, Service, ServicePort, ServiceType};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// Where running testbeds keep their state.
pub const STATE_ROOT: &str = "/run/testbed";
/// The LAN bridge in the fabric namespace.
pub const LAN_BRIDGE: &str = "lan0";
/// A node's pod bridge.
pub const POD_BRIDGE: &str = "cni0";
/// The UDP port of the udp backend (flannel's).
pub const UDP_PORT: u16 = 8285;
/// The UDP port of the vxlan backend (flannel's).
pub const VXLAN_PORT: u16 = 8472;
/// The VXLAN network identifier (flannel's `flannel.1`).
pub const VXLAN_VNI: u32 = 1;
/// The range node ports come from.
pub const NODE_PORTS: (u16, u16) = (30000, 32767);

/// Plans `topo`. Returns `None` when the cluster settings themselves are
/// unusable; otherwise a plan, with any problems added to `diags`.
pub fn build(topo: &Topology, diags: &mut Diagnostics) -> Option<Plan> {
    let config = cluster_config(topo, diags)?;
    let mut p = Planner {
        topo,
        diags,
        prefix: names::prefix(&topo.name.value),
        state_dir: format!("{STATE_ROOT}/{}", topo.name.value),
        macs: MacAllocator::default(),
        config,
    };
    p.plan()
}

fn cluster_config(topo: &Topology, diags: &mut Diagnostics) -> Option<NetworkConfig> {
    let c = &topo.cluster;
    let mut ok = true;
    let nets = [
        (&c.pod_cidr, "podCIDR"),
        (&c.service_cidr, "serviceCIDR"),
        (&c.underlay_cidr, "underlayCIDR"),
    ];
    for (i, (a, an)) in nets.iter().enumerate() {
        for (b, bn) in &nets[i + 1..] {
            if a.value.overlaps(&b.value) {
                ok = false;
                diags.push(
                    Diagnostic::error(
                        &b.at,
                        format!("`{bn}` {} overlaps `{an}` {}", b.value, a.value),
                    )
                    .help("the pod, service and underlay networks must not share addresses; the defaults are 10.244.0.0/16, 10.96.0.0/16 and 192.168.96.0/24"),
                );
            }
        }
    }
    if !c.underlay_cidr.value.covers(&c.lb_cidr.value) {
        ok = false;
        diags.push(
            Diagnostic::error(
                &c.lb_cidr.at,
                format!(
                    "`loadBalancerCIDR` {} is not inside `underlayCIDR` {}",
                    c.lb_cidr.value, c.underlay_cidr.value
                ),
            )
            .help("external IPs are announced on the LAN, so they must be LAN addresses: pick a small range at the top of underlayCIDR, e.g. 192.168.96.240/28 for 192.168.96.0/24"),
        );
    }
    let config = match NetworkConfig::new(c.pod_cidr.value, c.subnet_len.value, c.overlay.value) {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            let help = match e {
                NetworkError::SubnetTooLong { .. } => "a node subnet needs its bridge address and pod addresses: use at most 30, e.g. 24".to_string(),
                _ => format!(
                    "flannel leaves the first and last subnet of podCIDR unused, so there must be at least four: use at least {} with podCIDR {}",
                    c.pod_cidr.value.prefix_len() + 2,
                    c.pod_cidr.value
                ),
            };
            diags.push(Diagnostic::error(&c.subnet_len.at, e.to_string()).help(help));
            None
        }
    };
    if ok {
        config
    } else {
        None
    }
}

struct Planner<'t, 'd> {
    topo: &'t Topology,
    diags: &'d mut Diagnostics,
    prefix: String,
    state_dir: String,
    macs: MacAllocator,
    config: NetworkConfig,
}

/// Where a pod landed and what address it has.
#[derive(Clone, Default)]
struct Placement {
    node: Option<usize>,
    ip: Option<Ipv4Addr>,
}

impl Planner<'_, '_> {
    fn err(&mut self, at: &At, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::error(at, msg).help(help));
    }

    fn plan(&mut self) -> Option<Plan> {
        let topo = self.topo;
        let c = &topo.cluster;
        let subnets = match self.config.lease_subnets(topo.nodes.len()) {
            Ok(s) => s,
            Err(e) => {
                self.err(
                    &c.pod_cidr.at,
                    e.to_string(),
                    "use a larger podCIDR (a shorter prefix) or a longer subnetLen; flannel leaves the first and last subnet unused",
                );
                return None;
            }
        };
        let (node_ips, host_ips) = self.underlay_addresses()?;
        let placements = self.place_pods(&subnets, &node_ips);
        let pod_mtu = c.mtu.value - c.overlay.value.overhead();

        let fabric_netns = names::fabric_netns(&self.prefix);
        let fabric = Fabric {
            netns: fabric_netns.clone(),
            bridge: Iface {
                name: LAN_BRIDGE.into(),
                mac: Some(self.macs.mac(&topo.name.value, "fabric/lan0")),
                mtu: c.mtu.value,
                addresses: Vec::new(),
            },
        };
        let mut fabric_names = IfNames::with(&[LAN_BRIDGE, "lo"]);
        let vtep_macs: Vec<Option<Mac>> = topo
            .nodes
            .iter()
            .map(|n| {
                (c.overlay.value == Backend::Vxlan).then(|| {
                    self.macs.mac(
                        &topo.name.value,
                        &format!("node/{}/flannel.1", n.name.value),
                    )
                })
            })
            .collect();
        let mut node_if_names: Vec<IfNames> = Vec::new();
        let mut nodes = Vec::new();
        for (i, n) in topo.nodes.iter().enumerate() {
            let netns = names::node_netns(&self.prefix, &n.name.value);
            let uplink = self.uplink(
                &n.name.value,
                "node",
                node_ips[i],
                &fabric_netns,
                &mut fabric_names,
            );
            let subnet = subnets[i];
            let bridge_ip = subnet.nth(1).unwrap_or(subnet.network());
            let overlay = self.overlay_device(c.overlay.value, subnet, pod_mtu, vtep_macs[i]);
            let (routes, neighbours, fdb) = self.node_routes(i, &subnets, &node_ips, &vtep_macs);
            let mut sysctls = BTreeMap::new();
            sysctls.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
            let mut fixed = vec!["lo", "eth0", POD_BRIDGE];
            if let Some(dev) = c.overlay.value.device() {
                fixed.push(dev);
            }
            node_if_names.push(IfNames::with(&fixed));
            nodes.push(NodePlan {
                name: n.name.value.clone(),
                labels: n.labels.map.clone(),
                netns,
                ip: node_ips[i],
                uplink,
                lease: Lease::new(subnet, node_ips[i], c.overlay.value),
                bridge: Iface {
                    name: POD_BRIDGE.into(),
                    mac: Some(
                        self.macs
                            .mac(&topo.name.value, &format!("node/{}/cni0", n.name.value)),
                    ),
                    mtu: pod_mtu,
                    addresses: vec![IfAddr {
                        ip: bridge_ip,
                        prefix_len: subnet.prefix_len(),
                    }],
                },
                overlay,
                routes,
                neighbours,
                fdb,
                sysctls,
                link: n.link.as_ref().map(link_plan),
            });
        }
        let mut hosts = Vec::new();
        for (i, h) in topo.hosts.iter().enumerate() {
            let uplink = self.uplink(
                &h.name.value,
                "host",
                host_ips[i],
                &fabric_netns,
                &mut fabric_names,
            );
            let dir = format!("{}/hosts/{}", self.state_dir, h.name.value);
            hosts.push(HostPlan {
                name: h.name.value.clone(),
                netns: names::host_netns(&self.prefix, &h.name.value),
                ip: host_ips[i],
                uplink,
                link: h.link.as_ref().map(link_plan),
                hosts_file: format!("{dir}/hosts"),
                containers: containers(h.containers.iter(), &dir),
            });
        }
        let pods = self.pods(&placements, &nodes, &mut node_if_names, pod_mtu);
        let services = self.services(&pods, &nodes);
        // The node that announces an external IP holds it (as a /32 on its
        // LAN interface), so it answers ARP for it, like a bare-metal L2
        // load balancer.
        for svc in &services {
            if let (Some(ip), Some(by)) = (svc.load_balancer_ip, &svc.announced_by) {
                if let Some(n) = nodes.iter_mut().find(|n| &n.name == by) {
                    n.uplink.inner.addresses.push(IfAddr { ip, prefix_len: 32 });
                }
            }
        }
        let dns = dns(&nodes, &hosts, &pods, &services);
        Some(Plan {
            version: PLAN_VERSION,
            name: topo.name.value.clone(),
            seed: topo.seed,
            prefix: self.prefix.clone(),
            state_dir: self.state_dir.clone(),
            cluster: ClusterPlan {
                pod_cidr: c.pod_cidr.value,
                subnet_len: c.subnet_len.value,
                service_cidr: c.service_cidr.value,
                underlay_cidr: c.underlay_cidr.value,
                load_balancer_cidr: c.lb_cidr.value,
                mtu: c.mtu.value,
                pod_mtu,
                overlay: c.overlay.value,
                proxy: c.proxy.value,
                network_config: self.config.clone(),
            },
            fabric,
            nodes,
            hosts,
            pods,
            services,
            dns,
        })
    }

    /// Nodes take underlay addresses from the bottom up, hosts from the top
    /// down, both skipping loadBalancerCIDR; so adding a host never moves a
    /// node, nor the other way round.
    fn underlay_addresses(&mut self) -> Option<(Vec<Ipv4Addr>, Vec<Ipv4Addr>)> {
        let c = &self.topo.cluster;
        let net = c.underlay_cidr.value;
        let lb = c.lb_cidr.value;
        let usable = |ip: &Ipv4Addr| net.is_host(*ip) && !lb.contains(*ip);
        let lb_hosts = (0..lb.size())
            .filter_map(|i| lb.nth(i))
            .filter(|ip| net.is_host(*ip))
            .count() as u64;
        let room = net.host_count() - lb_hosts;
        let (n, h) = (self.topo.nodes.len(), self.topo.hosts.len());
        if (n + h) as u64 > room {
            self.err(
                &c.underlay_cidr.at,
                format!(
                    "`underlayCIDR` {net} has room for {room} machines ({} addresses, less {lb_hosts} in loadBalancerCIDR), but {n} nodes and {h} hosts are declared",
                    net.host_count()
                ),
                "use a larger underlayCIDR (a shorter prefix), e.g. 192.168.96.0/24",
            );
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

    fn uplink(
        &mut self,
        name: &str,
        kind: &str,
        ip: Ipv4Addr,
        fabric_netns: &str,
        fabric_names: &mut IfNames,
    ) -> Veth {
        let c = &self.topo.cluster;
        let tb = &self.topo.name.value;
        let peer_name = fabric_names.readable(if kind == "node" { "n-" } else { "h-" }, name);
        Veth {
            inner: Iface {
                name: "eth0".into(),
                mac: Some(self.macs.mac(tb, &format!("{kind}/{name}/eth0"))),
                mtu: c.mtu.value,
                addresses: vec![IfAddr {
                    ip,
                    prefix_len: c.underlay_cidr.value.prefix_len(),
                }],
            },
            peer_netns: fabric_netns.to_string(),
            peer: Iface {
                name: peer_name,
                mac: Some(self.macs.mac(tb, &format!("{kind}/{name}/peer"))),
                mtu: c.mtu.value,
                addresses: Vec::new(),
            },
            peer_master: LAN_BRIDGE.into(),
        }
    }

    fn overlay_device(
        &self,
        backend: Backend,
        subnet: Ipv4Net,
        mtu: u32,
        vtep: Option<Mac>,
    ) -> Option<OverlayDevice> {
        let name = backend.device()?;
        let addr = IfAddr {
            ip: subnet.network(),
            prefix_len: 32,
        };
        Some(OverlayDevice {
            iface: Iface {
                name: name.into(),
                mac: vtep,
                mtu,
                addresses: vec![addr],
            },
            port: if backend == Backend::Vxlan {
                VXLAN_PORT
            } else {
                UDP_PORT
            },
            vni: (backend == Backend::Vxlan).then_some(VXLAN_VNI),
        })
    }

    /// The routes (and vxlan's neighbour and FDB entries) node `i` needs to
    /// reach every other node's pod subnet, as flannel's backends program them.
    fn node_routes(
        &self,
        i: usize,
        subnets: &[Ipv4Net],
        ips: &[Ipv4Addr],
        vteps: &[Option<Mac>],
    ) -> (Vec<Route>, Vec<Neighbour>, Vec<FdbEntry>) {
        let c = &self.topo.cluster;
        let mut routes = Vec::new();
        let mut neigh = Vec::new();
        let mut fdb = Vec::new();
        // The node's own connections to cluster IPs need a route for the
        // service network, so that the output hook's DNAT sees them.
        routes.push(Route {
            dst: c.service_cidr.value.to_string(),
            via: None,
            dev: POD_BRIDGE.into(),
            onlink: false,
        });
        match c.overlay.value {
            Backend::Udp => routes.push(Route {
                dst: c.pod_cidr.value.to_string(),
                via: None,
                dev: "flannel0".into(),
                onlink: false,
            }),
            Backend::Vxlan => {
                for (j, s) in subnets.iter().enumerate() {
                    let Some(mac) = vteps[j] else { continue };
                    if j == i {
                        continue;
                    }
                    routes.push(Route {
                        dst: s.to_string(),
                        via: Some(s.network()),
                        dev: "flannel.1".into(),
                        onlink: true,
                    });
                    neigh.push(Neighbour {
                        ip: s.network(),
                        mac,
                        dev: "flannel.1".into(),
                    });
                    fdb.push(FdbEntry {
                        mac,
                        dst: ips[j],
                        dev: "flannel.1".into(),
                    });
                }
            }
            Backend::HostGw => {
                for (j, s) in subnets.iter().enumerate() {
                    if j != i {
                        routes.push(Route {
                            dst: s.to_string(),
                            via: Some(ips[j]),
                            dev: "eth0".into(),
                            onlink: false,
                        });
                    }
                }
            }
        }
        (routes, neigh, fdb)
    }

    /// Places every pod on a node and gives bridge pods their addresses.
    fn place_pods(&mut self, subnets: &[Ipv4Net], node_ips: &[Ipv4Addr]) -> Vec<Placement> {
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

    fn pods(
        &mut self,
        placed: &[Placement],
        nodes: &[NodePlan],
        if_names: &mut [IfNames],
        mtu: u32,
    ) -> Vec<PodPlan> {
        let topo = self.topo;
        let tb = &topo.name.value;
        let mut out = Vec::new();
        for (i, pod) in topo.pods.iter().enumerate() {
            let Some(n) = placed[i].node else { continue };
            let node = &nodes[n];
            let ns = &pod.namespace.value;
            let name = &pod.name.value;
            let own_netns = names::pod_netns(&self.prefix, ns, name);
            let (network, netns, owns) = match &pod.network.value {
                Network::Bridge => ("bridge".to_string(), own_netns, true),
                Network::None => ("none".to_string(), own_netns, true),
                Network::Host => ("host".to_string(), node.netns.clone(), false),
                Network::Container(t) => (
                    format!("container:{t}"),
                    self.shared_netns(pod, nodes, placed),
                    false,
                ),
            };
            let mut interface = None;
            let mut routes = Vec::new();
            if let (Network::Bridge, Some(ip)) = (&pod.network.value, placed[i].ip) {
                let gw = node.bridge.addresses[0];
                interface = Some(Veth {
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
                        name: if_names[n].hashed("veth", &format!("{ns}/{name}")),
                        mac: Some(self.macs.mac(tb, &format!("pod/{ns}/{name}/peer"))),
                        mtu,
                        addresses: Vec::new(),
                    },
                    peer_master: POD_BRIDGE.into(),
                });
                routes.push(Route {
                    dst: "default".into(),
                    via: Some(gw.ip),
                    dev: "eth0".into(),
                    onlink: false,
                });
            }
            let dir = format!("{}/pods/{ns}/{name}", self.state_dir);
            let volumes = pod
                .volumes
                .iter()
                .map(|v| VolumePlan {
                    name: v.value.clone(),
                    path: format!("{dir}/volumes/{}", v.value),
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
                hosts_file: format!("{dir}/hosts"),
                volumes,
                containers: containers(pod.containers.iter(), &dir),
            });
        }
        out
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

    fn services(&mut self, pods: &[PodPlan], nodes: &[NodePlan]) -> Vec<Service> {
        let topo = self.topo;
        let c = &topo.cluster;
        let cluster_ips = self.cluster_ips();
        let node_ports = self.node_ports();
        // External IPs: the addresses of loadBalancerCIDR that are LAN host
        // addresses, in order.
        let lb_pool: Vec<Ipv4Addr> = (0..c.lb_cidr.value.size())
            .filter_map(|i| c.lb_cidr.value.nth(i))
            .filter(|ip| c.underlay_cidr.value.is_host(*ip))
            .collect();
        let lb_wanted = topo
            .services
            .iter()
            .filter(|s| s.kind.value == ServiceType::LoadBalancer)
            .count();
        if lb_wanted > lb_pool.len() {
            self.err(
                &c.lb_cidr.at,
                format!(
                    "`loadBalancerCIDR` {} has {} external IPs but {lb_wanted} LoadBalancer services need one each",
                    c.lb_cidr.value,
                    lb_pool.len()
                ),
                "use a larger loadBalancerCIDR (a shorter prefix) inside underlayCIDR, or make some services NodePort",
            );
        }
        let mut lb_next = lb_pool.into_iter();
        let mut out = Vec::new();
        for (si, s) in topo.services.iter().enumerate() {
            let Some(cluster_ip) = cluster_ips[si] else {
                continue;
            };
            let selected: Vec<&PodPlan> = pods
                .iter()
                .filter(|p| p.namespace == s.namespace.value && p.ip.is_some())
                .filter(|p| {
                    s.selector
                        .map
                        .iter()
                        .all(|(k, v)| p.labels.get(k) == Some(v))
                })
                .filter(|p| !s.selector.map.is_empty() && p.network != "none")
                .collect();
            // Pods sharing an address (`container:` or `host` networking)
            // are one endpoint: the first of them stands for it.
            let mut seen = std::collections::BTreeSet::new();
            let selected: Vec<&PodPlan> =
                selected.into_iter().filter(|p| seen.insert(p.ip)).collect();
            let (lb_ip, announced_by) = if s.kind.value == ServiceType::LoadBalancer {
                let ip = lb_next.next();
                let key = format!("{}/{}", s.namespace.value, s.name.value);
                let n = (names::stable_hash(&[&key]) % nodes.len().max(1) as u64) as usize;
                (ip, ip.and(nodes.get(n).map(|n| n.name.clone())))
            } else {
                (None, None)
            };
            let ports = s
                .ports
                .iter()
                .enumerate()
                .map(|(pi, p)| ServicePort {
                    name: p.name.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
                    protocol: p.protocol,
                    port: p.port.value,
                    target_port: p.target_port.value,
                    node_port: node_ports.get(&(si, pi)).copied(),
                    endpoints: selected
                        .iter()
                        .filter_map(|pod| {
                            Some(Endpoint {
                                pod: pod.name.clone(),
                                node: pod.node.clone(),
                                ip: pod.ip?,
                                port: p.target_port.value,
                            })
                        })
                        .collect(),
                })
                .collect();
            out.push(Service {
                name: s.name.value.clone(),
                namespace: s.namespace.value.clone(),
                kind: s.kind.value,
                cluster_ip,
                load_balancer_ip: lb_ip,
                announced_by,
                session_affinity: s.affinity,
                selector: s.selector.map.clone(),
                ports,
            });
        }
        out
    }

    /// Cluster IPs: pins first; every other service hashes its
    /// `namespace/name` to a starting point and takes the next free address,
    /// so adding or removing a service leaves the others' addresses alone.
    fn cluster_ips(&mut self) -> Vec<Option<Ipv4Addr>> {
        let topo = self.topo;
        let net = topo.cluster.service_cidr.value;
        let mut out = vec![None; topo.services.len()];
        let mut taken: HashMap<Ipv4Addr, usize> = HashMap::new();
        if topo.services.len() as u64 > net.host_count() {
            self.err(
                &topo.cluster.service_cidr.at,
                format!(
                    "`serviceCIDR` {net} has {} addresses but {} services need one each",
                    net.host_count(),
                    topo.services.len()
                ),
                "use a larger serviceCIDR (a shorter prefix), e.g. 10.96.0.0/16",
            );
            return out;
        }
        for (i, s) in topo.services.iter().enumerate() {
            let Some(ip) = &s.cluster_ip else { continue };
            if !net.contains(ip.value) {
                self.err(
                    &ip.at,
                    format!("clusterIP {} is outside `serviceCIDR` {net}", ip.value),
                    format!(
                        "pick an address in {net}, or remove `clusterIP` to have one allocated"
                    ),
                );
            } else if !net.is_host(ip.value) {
                self.err(
                    &ip.at,
                    format!(
                        "clusterIP {} is the network or broadcast address of {net}",
                        ip.value
                    ),
                    "pick an address between them",
                );
            } else if let Some(&o) = taken.get(&ip.value) {
                let other = &topo.services[o];
                self.err(
                    &ip.at,
                    format!(
                        "clusterIP {} is already pinned by service `{}` (line {})",
                        ip.value, other.name.value, other.at.pos.line
                    ),
                    "give each service its own address, or remove `clusterIP` from one",
                );
            } else {
                taken.insert(ip.value, i);
                out[i] = Some(ip.value);
            }
        }
        let mut order: Vec<usize> = (0..topo.services.len())
            .filter(|&i| topo.services[i].cluster_ip.is_none())
            .collect();
        order.sort_by(|&a, &b| {
            let (sa, sb) = (&topo.services[a], &topo.services[b]);
            (&sa.namespace.value, &sa.name.value).cmp(&(&sb.namespace.value, &sb.name.value))
        });
        let hosts = net.host_count();
        let first_host = if net.prefix_len() >= 31 { 0 } else { 1 };
        for i in order {
            let s = &topo.services[i];
            let start = names::stable_hash(&[&s.namespace.value, &s.name.value]) % hosts;
            for k in 0..hosts {
                let Some(ip) = net.nth(first_host + (start + k) % hosts) else {
                    break;
                };
                if let std::collections::hash_map::Entry::Vacant(e) = taken.entry(ip) {
                    e.insert(i);
                    out[i] = Some(ip);
                    break;
                }
            }
        }
        out
    }

    /// Node ports: pins first, then each other port of a NodePort or
    /// LoadBalancer service hashed into the range, probing for a free one.
    fn node_ports(&mut self) -> HashMap<(usize, usize), u16> {
        let topo = self.topo;
        let mut out = HashMap::new();
        let mut taken: HashMap<u16, (usize, usize)> = HashMap::new();
        for (si, s) in topo.services.iter().enumerate() {
            for (pi, p) in s.ports.iter().enumerate() {
                let Some(np) = &p.node_port else { continue };
                if let Some(&(os, _)) = taken.get(&np.value) {
                    let other = &topo.services[os];
                    self.err(
                        &np.at,
                        format!("nodePort {} is already used by service `{}` (line {})", np.value, other.name.value, other.at.pos.line),
                        "a node port opens on every node, so each is used once: pick another, or leave `nodePort` out to have one allocated",
                    );
                    continue;
                }
                taken.insert(np.value, (si, pi));
                out.insert((si, pi), np.value);
            }
        }
        let mut order: Vec<(usize, usize)> = Vec::new();
        for (si, s) in topo.services.iter().enumerate() {
            if s.kind.value == ServiceType::ClusterIP {
                continue;
            }
            for (pi, p) in s.ports.iter().enumerate() {
                if p.node_port.is_none() {
                    order.push((si, pi));
                }
            }
        }
        let key = |&(si, pi): &(usize, usize)| {
            let s = &topo.services[si];
            let p = &s.ports[pi];
            (
                s.namespace.value.clone(),
                s.name.value.clone(),
                p.port.value,
                p.protocol,
            )
        };
        order.sort_by_key(key);
        let span = u64::from(NODE_PORTS.1 - NODE_PORTS.0) + 1;
        if (order.len() + taken.len()) as u64 > span {
            if let Some(s) = topo.services.first() {
                self.err(
                    &s.at,
                    format!(
                        "{} node ports are needed but the range 30000-32767 has {span}",
                        order.len() + taken.len()
                    ),
                    "make some services ClusterIP",
                );
            }
            return out;
        }
        for sp in order {
            let (ns, name, port, proto) = key(&sp);
            let start =
                names::stable_hash(&[&ns, &name, &port.to_string(), &proto.to_string()]) % span;
            for k in 0..span {
                let candidate = NODE_PORTS.0 + ((start + k) % span) as u16;
                if let std::collections::hash_map::Entry::Vacant(e) = taken.entry(candidate) {
                    e.insert(sp);
                    out.insert(sp, candidate);
                    break;
                }
            }
        }
        out
    }
}

fn link_plan(l: &Link) -> LinkPlan {
    fn v<T: Copy>(x: &Option<Sp<T>>) -> Option<T> {
        x.as_ref().map(|s| s.value)
    }
    LinkPlan {
        delay: v(&l.delay),
        jitter: v(&l.jitter),
        loss: v(&l.loss),
        duplicate: v(&l.duplicate),
        reorder: v(&l.reorder),
        rate: v(&l.rate),
    }
}

fn containers<'a>(
    list: impl Iterator<Item = &'a crate::topology::model::Container>,
    dir: &str,
) -> Vec<ContainerPlan> {
    list.map(|c| ContainerPlan {
        name: c.name.value.clone(),
        command: c.command.value.clone(),
        env: c.env.clone(),
        working_dir: c.working_dir.as_ref().map(|w| w.value.clone()),
        restart_policy: c.restart_policy,
        mounts: c
            .mounts
            .iter()
            .map(|m| MountPlan {
                source: format!("{dir}/volumes/{}", m.name.value),
                target: m.path.value.clone(),
            })
            .collect(),
        ready_tcp: c.ready_tcp.as_ref().map(|r| r.value),
        log: format!("{dir}/logs/{}.log", c.name.value),
    })
    .collect()
}

/// The names every pod and host can resolve. Qualified names are the same
/// for all; bare names depend on the asker's namespace: a service of that
/// name, else a pod of that name, else a node or host.
fn dns(nodes: &[NodePlan], hosts: &[HostPlan], pods: &[PodPlan], services: &[Service]) -> Dns {
    let mut records = Vec::new();
    for s in services {
        records.push(Record {
            name: format!("{}.{}.svc", s.name, s.namespace),
            ip: s.cluster_ip,
        });
        records.push(Record {
            name: format!("{}.{}", s.name, s.namespace),
            ip: s.cluster_ip,
        });
    }
    for p in pods {
        if let Some(ip) = p.ip {
            records.push(Record {
                name: format!("{}.{}.pod", p.name, p.namespace),
                ip,
            });
        }
    }
    let machines: Vec<(&str, Ipv4Addr)> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.ip))
        .chain(hosts.iter().map(|h| (h.name.as_str(), h.ip)))
        .collect();
    for (name, ip) in &machines {
        records.push(Record {
            name: name.to_string(),
            ip: *ip,
        });
    }
    let mut namespaces: Vec<&str> = pods
        .iter()
        .map(|p| p.namespace.as_str())
        .chain(services.iter().map(|s| s.namespace.as_str()))
        .chain(std::iter::once("default"))
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut bare = BTreeMap::new();
    for ns in namespaces {
        let mut seen: std::collections::HashSet<&str> = machines.iter().map(|(n, _)| *n).collect();
        let mut list = Vec::new();
        for s in services.iter().filter(|s| s.namespace == ns) {
            list.push(Record {
                name: s.name.clone(),
                ip: s.cluster_ip,
            });
            seen.insert(&s.name);
        }
        for p in pods.iter().filter(|p| p.namespace == ns) {
            let Some(ip) = p.ip else { continue };
            if !seen.insert(&p.name) {
                continue;
            }
            list.push(Record {
                name: p.name.clone(),
                ip,
            });
        }
        bare.insert(ns.to_string(), list);
    }
    Dns { records, bare }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pods_sharing_an_address_are_one_endpoint() {
        let yaml = "
name: t
nodes: [{name: node1}]
pods:
  - {name: a, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: b, labels: {app: web}, network: 'container:a', containers: [{name: c, command: [sleep, infinity]}]}
  - {name: c, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
services:
  - {name: web, selector: {app: web}, ports: [{port: 80}]}
";
        let plan = crate::load_str("t.yaml", yaml.to_string())
            .map_err(|e| e.to_string())
            .expect("valid")
            .plan;
        let pods: Vec<&str> = plan.services[0].ports[0]
            .endpoints
            .iter()
            .map(|e| e.pod.as_str())
            .collect();
        assert_eq!(pods, ["a", "c"]);
    }
}
