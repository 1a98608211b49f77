//! The cluster-wide networks: whether they fit together, and the LAN
//! addresses of nodes and hosts.

use super::Planner;
use crate::diag::{Diagnostic, Diagnostics};
use crate::topology::model::Topology;
use overlay::{NetworkConfig, NetworkError};
use std::net::Ipv4Addr;

pub(super) fn cluster_config(topo: &Topology, diags: &mut Diagnostics) -> Option<NetworkConfig> {
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

impl Planner<'_, '_> {
    /// Nodes take underlay addresses from the bottom up, hosts from the top
    /// down, both skipping loadBalancerCIDR; so adding a host never moves a
    /// node, nor the other way round.
    pub(super) fn underlay_addresses(&mut self) -> Option<(Vec<Ipv4Addr>, Vec<Ipv4Addr>)> {
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
}
