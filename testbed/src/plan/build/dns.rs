//! The names every pod and host resolves (the hosts files written from
//! them are `plan::hosts`).

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
