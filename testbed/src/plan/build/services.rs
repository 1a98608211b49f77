//! Services: cluster IPs, node ports, external IPs and endpoints.

use super::cluster::point;
use super::{suggest, Planner, NODE_PORTS};
use crate::diag::At;
use crate::plan::names;
use crate::plan::types::*;
use crate::topology::model::Sp;
use overlay::Ipv4Net;
use proxy::{Endpoint, Service, ServicePort, ServiceType};
use std::collections::HashMap;
use std::net::Ipv4Addr;

impl Planner<'_, '_> {
    pub(super) fn services(&mut self, pods: &[PodPlan], nodes: &[NodePlan]) -> Vec<Service> {
        let topo = self.topo;
        let cluster_ips = self.cluster_ips();
        let node_ports = self.node_ports();
        let lb_pool = self.external_ips();
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

    /// External IPs: the addresses of loadBalancerCIDR that are LAN host
    /// addresses, in order.
    fn external_ips(&mut self) -> Vec<Ipv4Addr> {
        let topo = self.topo;
        let c = &topo.cluster;
        let (lb, lan) = (&c.lb_cidr, &c.underlay_cidr);
        let pool: Vec<Ipv4Addr> = (0..lb.value.size())
            .filter_map(|i| lb.value.nth(i))
            .filter(|ip| lan.value.is_host(*ip))
            .collect();
        let wanting: Vec<&At> = topo
            .services
            .iter()
            .filter(|s| s.kind.value == ServiceType::LoadBalancer)
            .map(|s| &s.kind.at)
            .collect();
        if wanting.len() <= pool.len() {
            return pool;
        }
        let machines = (topo.nodes.len() + topo.hosts.len()) as u64;
        let wanted = wanting.len() as u64;
        let help = match suggest::top_range(lan.value, wanted, machines) {
            Some(r) => format!("use a larger range at the top of the LAN, e.g. `loadBalancerCIDR: {r}`, or make some services NodePort"),
            None => {
                let others = [c.pod_cidr.value, c.service_cidr.value];
                match suggest::lan_with_range(lan.value, wanted, machines, &others) {
                    Some((w, r)) => format!("use a larger LAN with a larger range at its top, e.g. `underlayCIDR: {w}` and `loadBalancerCIDR: {r}`, or make some services NodePort"),
                    None => "use a larger underlayCIDR and loadBalancerCIDR, or make some services NodePort".into(),
                }
            }
        };
        self.err(
            &point(topo, lb, Some(wanting[pool.len()])),
            format!(
                "{} {} has {} external IPs but {} LoadBalancer services need one each",
                lb.named("loadBalancerCIDR"),
                lb.value,
                pool.len(),
                wanting.len()
            ),
            help,
        );
        pool
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
            self.service_cidr_too_small();
            return out;
        }
        for (i, s) in topo.services.iter().enumerate() {
            let Some(ip) = &s.cluster_ip else { continue };
            if !net.contains(ip.value) {
                self.outside_service_cidr(ip);
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

    fn service_cidr_too_small(&mut self) {
        let topo = self.topo;
        let c = &topo.cluster;
        let net = &c.service_cidr;
        let count = topo.services.len() as u64;
        let others = [c.pod_cidr.value, c.underlay_cidr.value];
        let wide =
            suggest::len_for_hosts(count).and_then(|l| suggest::widened(net.value, l, &others));
        let help = match wide {
            Some(w) => format!("use a larger serviceCIDR, e.g. `serviceCIDR: {w}`"),
            None => "use a larger serviceCIDR (a shorter prefix)".to_string(),
        };
        let first_without = topo
            .services
            .get(net.value.host_count() as usize)
            .map(|s| &s.name.at);
        self.err(
            &point(topo, net, first_without),
            format!(
                "{} {} has {} addresses but {count} services need one each",
                net.named("serviceCIDR"),
                net.value,
                net.value.host_count(),
            ),
            help,
        );
    }

    fn outside_service_cidr(&mut self, ip: &Sp<Ipv4Addr>) {
        let c = &self.topo.cluster;
        let net = &c.service_cidr;
        let mut help = format!(
            "pick an address in {}, or remove `clusterIP` to have one allocated",
            net.value
        );
        // With the default network, the file more likely meant its own.
        let own = Ipv4Net::new(ip.value, net.value.prefix_len());
        let others = [c.pod_cidr.value, c.underlay_cidr.value];
        if !net.is_written() && !others.iter().any(|o| o.overlaps(&own)) {
            help.push_str(&format!(", or set `serviceCIDR: {own}` in `cluster`"));
        }
        self.err(
            &ip.at,
            format!(
                "clusterIP {} is outside {} {}",
                ip.value,
                net.named("serviceCIDR"),
                net.value
            ),
            help,
        );
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
