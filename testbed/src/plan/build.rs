//! Computes the plan from a checked topology: node subnets (flannel's
//! leasing order), underlay addresses, pod placement and addresses, cluster
//! IPs, node ports, external IPs, endpoints, names, MACs, routes and hosts
//! files. Pure: no root, no I/O, the same bytes for the same file and seed.
//! Problems only allocation can find (pins that clash, networks too small)
//! are reported here. The networks' checks and LAN addresses are in
//! `cluster`, placement in `place`, the pods' plans in `pods`, services in
//! `services`, names in `dns`.

use crate::diag::{At, Diagnostic, Diagnostics};
use crate::plan::names::{self, IfNames, MacAllocator};
use crate::plan::types::*;
use crate::topology::model::{Link, Sp, Topology};
use overlay::{Backend, Ipv4Net, Lease, NetworkConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

mod cluster;
mod dns;
mod place;
mod pods;
mod services;
mod suggest;

use cluster::cluster_config;
use dns::dns;

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
    build_with(topo, &BTreeSet::new(), diags)
}

/// Plans `topo` with the nodes named in `unschedulable` taking no pod that
/// is not pinned to them (the controller's nodes that are not ready).
pub fn build_with(
    topo: &Topology,
    unschedulable: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Option<Plan> {
    let config = cluster_config(topo, diags)?;
    let mut p = Planner {
        topo,
        unschedulable: topo
            .nodes
            .iter()
            .map(|n| unschedulable.contains(&n.name.value))
            .collect(),
        diags,
        prefix: names::prefix(&topo.name.value),
        state_dir: crate::layout::state_dir(&topo.name.value),
        macs: MacAllocator::default(),
        config,
    };
    p.plan()
}

struct Planner<'t, 'd> {
    topo: &'t Topology,
    /// By node index: takes no unpinned pod.
    unschedulable: Vec<bool>,
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
        let subnets = self.node_subnets()?;
        let (node_ips, host_ips) = self.underlay_addresses()?;
        let placements = self.place_pods(&subnets, &node_ips);
        let pod_mtu = self.lan_mtu() - c.overlay.value.overhead();

        let fabric_netns = names::fabric_netns(&self.prefix);
        let fabric = Fabric {
            netns: fabric_netns.clone(),
            bridge: Iface {
                name: LAN_BRIDGE.into(),
                mac: Some(self.macs.mac(&topo.name.value, "fabric/lan0")),
                mtu: self.lan_mtu(),
                addresses: Vec::new(),
            },
        };
        let mut fabric_names = IfNames::with(&[LAN_BRIDGE, "lo"]);
        let (mut nodes, mut node_if_names) = self.node_plans(
            &subnets,
            &node_ips,
            pod_mtu,
            &fabric_netns,
            &mut fabric_names,
        );
        let mut hosts = self.host_plans(&host_ips, &fabric_netns, &mut fabric_names);
        let machines = crate::plan::machines::assign(topo, &mut nodes, &mut hosts, self.diags);
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
            cluster: self.cluster_plan(pod_mtu),
            machines,
            machine: None,
            fabric,
            nodes,
            hosts,
            pods,
            services,
            dns,
        })
    }

    /// The LAN's MTU: the file's `cluster.mtu`; when the file leaves it out
    /// and the LAN spans several machines, Ethernet's 1500 less what the
    /// span's encapsulation takes (`plan::span::OVERHEAD`), so that a full
    /// LAN frame still crosses a 1500-byte network between machines.
    fn lan_mtu(&self) -> u32 {
        let c = &self.topo.cluster;
        if self.topo.machines.len() > 1 && c.mtu.origin == crate::topology::model::Origin::Default {
            c.mtu.value.saturating_sub(super::span::OVERHEAD)
        } else {
            c.mtu.value
        }
    }

    fn cluster_plan(&self, pod_mtu: u32) -> ClusterPlan {
        let c = &self.topo.cluster;
        ClusterPlan {
            pod_cidr: c.pod_cidr.value,
            subnet_len: c.subnet_len.value,
            service_cidr: c.service_cidr.value,
            underlay_cidr: c.underlay_cidr.value,
            load_balancer_cidr: c.lb_cidr.value,
            mtu: self.lan_mtu(),
            pod_mtu,
            overlay: c.overlay.value,
            proxy: c.proxy.value,
            network_config: self.config.clone(),
            container_log_max_bytes: c.container_log_max_size.value.0,
            pod_eviction_timeout: c.pod_eviction_timeout.value,
            registry: c.registry.value,
            etcd: c.etcd.as_ref().map(|e| EtcdPlan {
                endpoints: e.endpoints.iter().map(|u| u.value.clone()).collect(),
                prefix: e.prefix.value.clone(),
            }),
        }
    }

    /// Each node's namespace, uplink, bridge, overlay device and routes, and
    /// the interface names taken in it.
    fn node_plans(
        &mut self,
        subnets: &[Ipv4Net],
        node_ips: &[Ipv4Addr],
        pod_mtu: u32,
        fabric_netns: &str,
        fabric_names: &mut IfNames,
    ) -> (Vec<NodePlan>, Vec<IfNames>) {
        let topo = self.topo;
        let c = &topo.cluster;
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
                fabric_netns,
                fabric_names,
            );
            let subnet = subnets[i];
            let bridge_ip = subnet.nth(1).unwrap_or(subnet.network());
            let overlay = self.overlay_device(c.overlay.value, subnet, pod_mtu, vtep_macs[i]);
            let (routes, neighbours, fdb) = self.node_routes(i, subnets, node_ips, &vtep_macs);
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
                machine: None,
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
        (nodes, node_if_names)
    }

    fn host_plans(
        &mut self,
        host_ips: &[Ipv4Addr],
        fabric_netns: &str,
        fabric_names: &mut IfNames,
    ) -> Vec<HostPlan> {
        let topo = self.topo;
        let mut hosts = Vec::new();
        for (i, h) in topo.hosts.iter().enumerate() {
            let uplink = self.uplink(
                &h.name.value,
                "host",
                host_ips[i],
                fabric_netns,
                fabric_names,
            );
            let dir = crate::layout::host_dir(&self.state_dir, &h.name.value);
            hosts.push(HostPlan {
                name: h.name.value.clone(),
                netns: names::host_netns(&self.prefix, &h.name.value),
                ip: host_ips[i],
                machine: None,
                uplink,
                link: h.link.as_ref().map(link_plan),
                hosts_file: crate::layout::hosts_file(&dir),
                containers: containers(h.containers.iter(), &dir),
            });
        }
        hosts
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
                mtu: self.lan_mtu(),
                addresses: vec![IfAddr {
                    ip,
                    prefix_len: c.underlay_cidr.value.prefix_len(),
                }],
            },
            peer_netns: fabric_netns.to_string(),
            peer: Iface {
                name: peer_name,
                mac: Some(self.macs.mac(tb, &format!("{kind}/{name}/peer"))),
                mtu: self.lan_mtu(),
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
                source: crate::layout::volume(dir, &m.name.value),
                target: m.path.value.clone(),
            })
            .collect(),
        ready_tcp: c.ready_tcp.as_ref().map(|r| r.value),
        log: crate::layout::container_log(dir, &c.name.value),
    })
    .collect()
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
        let plan = crate::plan::testutil::plan(yaml);
        let pods: Vec<&str> = plan.services[0].ports[0]
            .endpoints
            .iter()
            .map(|e| e.pod.as_str())
            .collect();
        assert_eq!(pods, ["a", "c"]);
    }
}
