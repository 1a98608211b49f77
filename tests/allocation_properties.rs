//! Properties of allocation over generated topologies: no address, subnet,
//! port, MAC or interface name is handed out twice, and each stays inside
//! the range it comes from. Pins are generated near each other on purpose,
//! so that clashes are frequent; a clash must be an error, never a plan
//! that hands one address out twice.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::HashSet;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use testbed::plan::Plan;

#[derive(Debug, Clone)]
struct PodSpec {
    node: Option<usize>,
    mode: u8,
    pin: Option<u8>,
}

#[derive(Debug, Clone)]
struct Spec {
    nodes: usize,
    hosts: usize,
    subnet_len: u8,
    service_prefix: u8,
    overlay: &'static str,
    pods: Vec<PodSpec>,
    services: Vec<(u8, Option<u8>, Option<u16>)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        1usize..6,
        0usize..4,
        prop_oneof![Just(24u8), Just(26), Just(27), Just(28)],
        prop_oneof![Just(24u8), Just(26), Just(27)],
        prop_oneof![Just("udp"), Just("vxlan"), Just("host-gw")],
        proptest::collection::vec(
            (
                proptest::option::of(0usize..6),
                0u8..8,
                proptest::option::weighted(0.15, 2u8..12),
            ),
            0..40,
        ),
        proptest::collection::vec(
            (
                0u8..3,
                proptest::option::weighted(0.3, 1u8..10),
                proptest::option::weighted(0.3, 0u16..6),
            ),
            0..12,
        ),
    )
        .prop_map(
            |(nodes, hosts, subnet_len, service_prefix, overlay, pods, services)| Spec {
                nodes,
                hosts,
                subnet_len,
                service_prefix,
                overlay,
                pods: pods
                    .into_iter()
                    .map(|(node, mode, pin)| PodSpec {
                        node: node.filter(|n| *n < nodes),
                        mode,
                        pin,
                    })
                    .collect(),
                services,
            },
        )
}

fn yaml(s: &Spec) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "name: prop\nseed: 7\ncluster:\n  subnetLen: {}\n  serviceCIDR: 10.96.0.0/{}\n  overlay: {}", s.subnet_len, s.service_prefix, s.overlay);
    y.push_str("nodes:\n");
    for n in 0..s.nodes {
        let _ = writeln!(y, "  - name: node{n}");
    }
    if s.hosts > 0 {
        y.push_str("hosts:\n");
        for h in 0..s.hosts {
            let _ = writeln!(y, "  - name: host{h}");
        }
    }
    if !s.pods.is_empty() {
        y.push_str("pods:\n");
    }
    for (i, p) in s.pods.iter().enumerate() {
        let _ = writeln!(y, "  - name: p{i}\n    labels: {{app: a{}}}", i % 3);
        // Modes: mostly bridge; host, none and container: now and then.
        match p.mode {
            5 => y.push_str("    network: host\n"),
            6 => y.push_str("    network: none\n"),
            7 if i > 0 => {
                let _ = writeln!(y, "    network: container:p{}", i - 1);
            }
            _ => {
                if let Some(pin) = p.pin {
                    // Pins land in the first subnets, near each other.
                    let node = p.node.unwrap_or(0) as u32;
                    let base = u32::from(Ipv4Addr::new(10, 244, 0, 0))
                        + ((node + 1) << (32 - u32::from(s.subnet_len)));
                    let _ = writeln!(y, "    ip: {}", Ipv4Addr::from(base + u32::from(pin)));
                }
            }
        }
        if let Some(n) = p.node {
            if p.mode != 7 || i == 0 {
                let _ = writeln!(y, "    node: node{n}");
            }
        }
        y.push_str("    containers: [{name: c, command: [sleep, infinity]}]\n");
    }
    if !s.services.is_empty() {
        y.push_str("services:\n");
    }
    for (i, (kind, pin, node_port)) in s.services.iter().enumerate() {
        let kind = ["ClusterIP", "NodePort", "LoadBalancer"][*kind as usize];
        let _ = writeln!(
            y,
            "  - name: s{i}\n    type: {kind}\n    selector: {{app: a{}}}",
            i % 3
        );
        if let Some(pin) = pin {
            let _ = writeln!(y, "    clusterIP: 10.96.0.{pin}");
        }
        let np = match node_port {
            Some(p) if kind != "ClusterIP" => format!(", nodePort: {}", 30000 + p),
            _ => String::new(),
        };
        let _ = writeln!(y, "    ports: [{{port: 80, targetPort: 8080{np}}}]");
    }
    y
}

fn unique<T: std::hash::Hash + Eq + std::fmt::Debug>(
    items: impl IntoIterator<Item = T>,
    what: &str,
) -> Result<(), TestCaseError> {
    let mut seen = HashSet::new();
    for i in items {
        if !seen.insert(format!("{i:?}")) {
            return Err(TestCaseError::fail(format!(
                "{what} {i:?} handed out twice"
            )));
        }
    }
    Ok(())
}

fn check(plan: &Plan) -> Result<(), TestCaseError> {
    let c = &plan.cluster;
    for n in &plan.nodes {
        prop_assert!(
            c.pod_cidr.covers(&n.lease.subnet),
            "subnet {} outside podCIDR",
            n.lease.subnet
        );
        prop_assert!(
            c.underlay_cidr.is_host(n.ip) && !c.load_balancer_cidr.contains(n.ip),
            "node ip {}",
            n.ip
        );
        prop_assert!(
            n.lease.subnet != c.pod_cidr.subnet(c.subnet_len, 0).expect("first subnet"),
            "flannel never leases the first subnet"
        );
    }
    for h in &plan.hosts {
        prop_assert!(
            c.underlay_cidr.is_host(h.ip) && !c.load_balancer_cidr.contains(h.ip),
            "host ip {}",
            h.ip
        );
    }
    unique(plan.nodes.iter().map(|n| n.lease.subnet), "subnet")?;
    unique(
        plan.nodes
            .iter()
            .map(|n| n.ip)
            .chain(plan.hosts.iter().map(|h| h.ip)),
        "underlay address",
    )?;
    let mut pod_ips: Vec<Ipv4Addr> = Vec::new();
    for p in plan.pods.iter().filter(|p| p.network == "bridge") {
        let ip =
            p.ip.ok_or_else(|| TestCaseError::fail(format!("bridge pod {} has no ip", p.name)))?;
        let node = plan
            .nodes
            .iter()
            .find(|n| n.name == p.node)
            .expect("pod's node exists");
        prop_assert!(
            node.lease.subnet.is_host(ip),
            "{ip} outside {}",
            node.lease.subnet
        );
        prop_assert!(
            node.bridge.addresses[0].ip != ip,
            "{ip} is the bridge address"
        );
        prop_assert!(p
            .interface
            .as_ref()
            .is_some_and(|i| i.peer.name.len() <= 15));
        pod_ips.push(ip);
    }
    unique(pod_ips, "pod address")?;
    for s in &plan.services {
        prop_assert!(
            c.service_cidr.is_host(s.cluster_ip),
            "cluster ip {}",
            s.cluster_ip
        );
        if let Some(lb) = s.load_balancer_ip {
            prop_assert!(c.load_balancer_cidr.contains(lb) && c.underlay_cidr.is_host(lb));
        }
        for p in &s.ports {
            if let Some(np) = p.node_port {
                prop_assert!((30000..=32767).contains(&np));
            }
        }
    }
    unique(plan.services.iter().map(|s| s.cluster_ip), "cluster IP")?;
    unique(
        plan.services.iter().filter_map(|s| s.load_balancer_ip),
        "external IP",
    )?;
    unique(
        plan.services
            .iter()
            .flat_map(|s| s.ports.iter().filter_map(|p| p.node_port)),
        "node port",
    )?;
    // MACs are unique across the testbed; interface names within a namespace.
    let mut macs = Vec::new();
    let mut names = Vec::new();
    macs.extend(plan.fabric.bridge.mac);
    for n in &plan.nodes {
        macs.extend(
            [n.uplink.inner.mac, n.uplink.peer.mac, n.bridge.mac]
                .into_iter()
                .flatten(),
        );
        names.push((n.uplink.peer_netns.clone(), n.uplink.peer.name.clone()));
    }
    for h in &plan.hosts {
        macs.extend(
            [h.uplink.inner.mac, h.uplink.peer.mac]
                .into_iter()
                .flatten(),
        );
        names.push((h.uplink.peer_netns.clone(), h.uplink.peer.name.clone()));
    }
    for p in &plan.pods {
        if let Some(i) = &p.interface {
            macs.extend([i.inner.mac, i.peer.mac].into_iter().flatten());
            names.push((i.peer_netns.clone(), i.peer.name.clone()));
        }
    }
    unique(macs.iter().map(|m| m.to_string()), "MAC")?;
    for m in &macs {
        prop_assert!(
            m.0[0] & 0x03 == 0x02,
            "{m} is not a locally administered unicast MAC"
        );
    }
    unique(names, "interface name")?;
    Ok(())
}

#[test]
fn allocation_never_repeats_and_stays_in_range() {
    let planned = AtomicUsize::new(0);
    let rejected = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&spec(), |s| {
        let text = yaml(&s);
        match testbed::load_str("generated.yaml", text.clone()) {
            Ok(loaded) => {
                planned.fetch_add(1, Ordering::Relaxed);
                check(&loaded.plan).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))
            }
            Err(e) => {
                rejected.fetch_add(1, Ordering::Relaxed);
                // A rejection must be explained: every error has a place.
                let testbed::LoadError::Invalid { diagnostics, .. } = &e else {
                    return Err(TestCaseError::fail(format!("unexpected {e}")));
                };
                for d in diagnostics {
                    prop_assert!(d.pos.line >= 1 && !d.path.is_empty(), "{d:?}\n{text}");
                }
                Ok(())
            }
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (ok, bad) = (planned.into_inner(), rejected.into_inner());
    // Both outcomes must be exercised, or the property says little.
    assert!(
        ok >= 100,
        "only {ok} generated topologies planned ({bad} rejected)"
    );
    assert!(
        bad >= 20,
        "only {bad} generated topologies were rejected ({ok} planned)"
    );
}
