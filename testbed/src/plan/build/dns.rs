//! The names every pod and host resolves, and the hosts files written from them.

use crate::plan::types::*;
use proxy::Service;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The names every pod and host can resolve. Qualified names are the same
/// for all; bare names depend on the asker's namespace: a service of that
/// name, else a pod of that name, else a node or host.
pub(super) fn dns(
    nodes: &[NodePlan],
    hosts: &[HostPlan],
    pods: &[PodPlan],
    services: &[Service],
) -> Dns {
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
        let mut seen: Vec<&str> = machines.iter().map(|(n, _)| *n).collect();
        let mut list = Vec::new();
        for s in services.iter().filter(|s| s.namespace == ns) {
            list.push(Record {
                name: s.name.clone(),
                ip: s.cluster_ip,
            });
            seen.push(&s.name);
        }
        for p in pods.iter().filter(|p| p.namespace == ns) {
            let Some(ip) = p.ip else { continue };
            if seen.contains(&p.name.as_str()) {
                continue;
            }
            list.push(Record {
                name: p.name.clone(),
                ip,
            });
            seen.push(&p.name);
        }
        bare.insert(ns.to_string(), list);
    }
    Dns { records, bare }
}

impl Plan {
    /// The hosts file of a pod or host: loopback, then bare names as seen
    /// from `namespace` (they win, as the first entry for a name does), then
    /// qualified names. Machines name their namespace `default`.
    pub fn hosts_file(&self, namespace: &str, hostname: &str, own_ip: Option<Ipv4Addr>) -> String {
        let mut out = String::from("# written by testbed from its plan\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        let claimed = self
            .dns
            .bare
            .get(namespace)
            .is_some_and(|l| l.iter().any(|r| r.name == hostname))
            || self.dns.records.iter().any(|r| r.name == hostname);
        if !claimed {
            let ip = own_ip.unwrap_or(Ipv4Addr::new(127, 0, 1, 1));
            out.push_str(&format!("{ip}\t{hostname}\n"));
        }
        for r in self.dns.bare.get(namespace).into_iter().flatten() {
            out.push_str(&format!("{}\t{}\n", r.ip, r.name));
        }
        for r in &self.dns.records {
            out.push_str(&format!("{}\t{}\n", r.ip, r.name));
        }
        out
    }
}
