//! Services: cluster IPs, node ports, external IPs and endpoints.

use super::{Planner, NODE_PORTS};
use crate::plan::names;
use crate::plan::types::*;
use proxy::{Endpoint, Service, ServicePort, ServiceType};
use std::collections::HashMap;
use std::net::Ipv4Addr;

impl Planner<'_, '_> {
    pub(super) fn services(&mut self, pods: &[PodPlan], nodes: &[NodePlan]) -> Vec<Service> {
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
