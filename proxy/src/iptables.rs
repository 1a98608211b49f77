//! The iptables mode: kube-proxy's chain structure, rendered as
//! `iptables-restore --noflush` input for a node's namespace. A dispatch
//! chain with one rule per service port (cluster IP, external IP) and a jump
//! to the node-port chain for local addresses; a chain per service port that
//! picks an endpoint uniformly at random (`statistic --probability
//! 1/(n-i)`), or sticks to one per client with `recent`; a chain per
//! endpoint that marks the packet for masquerading and DNATs it. Service
//! traffic is masqueraded (like kube-proxy's `masqueradeAll`), so replies
//! from endpoints on the same bridge come back through the node. Ports
//! without endpoints are rejected at once in the filter table. Every chain
//! starts with `TB-`. Rendering is pure: the same services give the same
//! bytes.

use crate::{Protocol, Service, ServicePort, SessionAffinity};
use std::fmt::Write;

/// The mark that asks for masquerading.
pub const MASQ_MARK: &str = "0x4000";
/// ClientIP affinity lifetime, kube-proxy's default (3 hours).
pub const AFFINITY_SECONDS: u32 = 10_800;

/// FNV-1a over the parts, rendered in base32 as kube-proxy names chains.
fn chain_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..12)
        .map(|i| ALPHABET[((h >> (i * 5)) & 31) as usize] as char)
        .collect()
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::TCP => "tcp",
        Protocol::UDP => "udp",
    }
}

fn port_id(s: &Service, p: &ServicePort) -> String {
    format!(
        "{}/{}:{}/{}",
        s.namespace,
        s.name,
        p.port,
        proto(p.protocol)
    )
}

/// The chain of one service port.
pub fn svc_chain(s: &Service, p: &ServicePort) -> String {
    format!("TB-SVC-{}", chain_hash(&[&port_id(s, p)]))
}

/// The chain of one endpoint of a service port.
pub fn sep_chain(s: &Service, p: &ServicePort, ip: &str, port: u16) -> String {
    format!(
        "TB-SEP-{}",
        chain_hash(&[&port_id(s, p), ip, &port.to_string()])
    )
}

/// The rules of every node, as `iptables-restore --noflush` input that also
/// hooks the testbed's chains into the built-in ones (for a fresh namespace).
pub fn render(services: &[Service]) -> String {
    rules(services, services, true)
}

/// The testbed's chains alone, to replace those loaded before (declaring a
/// chain in `iptables-restore --noflush` input empties it): what an
/// endpoint change re-applies, leaving the built-in chains' hooks alone.
/// `active` are the services with their current endpoints; the chains of
/// every endpoint of `all` are declared too, so that those of endpoints that
/// left are emptied rather than left behind.
pub fn chains(all: &[Service], active: &[Service]) -> String {
    rules(all, active, false)
}

fn rules(all: &[Service], services: &[Service], hooks: bool) -> String {
    let mut nat_chains = vec![
        "TB-SERVICES".to_string(),
        "TB-NODEPORTS".into(),
        "TB-POSTROUTING".into(),
        "TB-MARK-MASQ".into(),
    ];
    let mut nat = String::new();
    let mut filter = String::new();
    let _ = writeln!(nat, "-A TB-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
    let _ = writeln!(
        nat,
        "-A TB-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    let _ = writeln!(nat, "-A TB-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    let _ = writeln!(nat, "-A TB-POSTROUTING -j MASQUERADE");
    let mut per_port = String::new();
    for s in services {
        for p in &s.ports {
            let pr = proto(p.protocol);
            let id = port_id(s, p);
            let mut targets = vec![(s.cluster_ip.to_string(), p.port, "cluster IP")];
            if let Some(lb) = s.load_balancer_ip {
                targets.push((lb.to_string(), p.port, "external IP"));
            }
            if p.endpoints.is_empty() {
                // A TCP reset refuses a connection at once wherever the
                // client is; UDP gets the ICMP error.
                let reject = match p.protocol {
                    Protocol::TCP => "tcp-reset",
                    Protocol::UDP => "icmp-port-unreachable",
                };
                for (ip, port, what) in &targets {
                    let _ = writeln!(
                        filter,
                        "-A TB-SERVICES -d {ip}/32 -p {pr} -m {pr} --dport {port} -m comment --comment \"{id} {what} has no endpoints\" -j REJECT --reject-with {reject}"
                    );
                }
                if let Some(np) = p.node_port {
                    let _ = writeln!(
                        filter,
                        "-A TB-NODEPORTS -p {pr} -m {pr} --dport {np} -m comment --comment \"{id} node port has no endpoints\" -j REJECT --reject-with {reject}"
                    );
                }
                continue;
            }
            let svc = svc_chain(s, p);
            nat_chains.push(svc.clone());
            for (ip, port, what) in &targets {
                let _ = writeln!(nat, "-A TB-SERVICES -d {ip}/32 -p {pr} -m {pr} --dport {port} -m comment --comment \"{id} {what}\" -j {svc}");
            }
            if let Some(np) = p.node_port {
                let _ = writeln!(nat, "-A TB-NODEPORTS -p {pr} -m {pr} --dport {np} -m comment --comment \"{id} node port\" -j {svc}");
            }
            let seps: Vec<(String, &crate::Endpoint)> = p
                .endpoints
                .iter()
                .map(|e| (sep_chain(s, p, &e.ip.to_string(), e.port), e))
                .collect();
            if s.session_affinity == SessionAffinity::ClientIP {
                for (sep, _) in &seps {
                    let _ = writeln!(
                        per_port,
                        "-A {svc} -m recent --name {sep} --rcheck --seconds {AFFINITY_SECONDS} --reap -j {sep}"
                    );
                }
            }
            let n = seps.len();
            for (i, (sep, _)) in seps.iter().enumerate() {
                if i + 1 < n {
                    let prob = 1.0 / (n - i) as f64;
                    let _ = writeln!(
                        per_port,
                        "-A {svc} -m statistic --mode random --probability {prob:.10} -j {sep}"
                    );
                } else {
                    let _ = writeln!(per_port, "-A {svc} -j {sep}");
                }
            }
            for (sep, e) in &seps {
                nat_chains.push(sep.clone());
                let _ = writeln!(
                    per_port,
                    "-A {sep} -m comment --comment \"{id} -> {}:{}\" -j TB-MARK-MASQ",
                    e.ip, e.port
                );
                if s.session_affinity == SessionAffinity::ClientIP {
                    let _ = writeln!(per_port, "-A {sep} -m recent --name {sep} --set -p {pr} -j DNAT --to-destination {}:{}", e.ip, e.port);
                } else {
                    let _ = writeln!(
                        per_port,
                        "-A {sep} -p {pr} -j DNAT --to-destination {}:{}",
                        e.ip, e.port
                    );
                }
            }
        }
    }
    let _ = writeln!(
        nat,
        "-A TB-SERVICES -m addrtype --dst-type LOCAL -j TB-NODEPORTS"
    );
    for s in all {
        for p in s.ports.iter().filter(|p| !p.endpoints.is_empty()) {
            let svc = svc_chain(s, p);
            if !nat_chains.contains(&svc) {
                nat_chains.push(svc);
            }
            for e in &p.endpoints {
                let sep = sep_chain(s, p, &e.ip.to_string(), e.port);
                if !nat_chains.contains(&sep) {
                    nat_chains.push(sep);
                }
            }
        }
    }
    let mut out = String::from("*nat\n");
    for c in &nat_chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    if hooks {
        out.push_str("-A PREROUTING -j TB-SERVICES\n-A OUTPUT -j TB-SERVICES\n-A POSTROUTING -j TB-POSTROUTING\n");
    }
    out.push_str(&nat);
    out.push_str(&per_port);
    out.push_str("COMMIT\n*filter\n:TB-SERVICES - [0:0]\n:TB-NODEPORTS - [0:0]\n");
    if hooks {
        out.push_str(
            "-A INPUT -j TB-SERVICES\n-A FORWARD -j TB-SERVICES\n-A OUTPUT -j TB-SERVICES\n",
        );
    }
    out.push_str(&filter);
    out.push_str("-A TB-SERVICES -m addrtype --dst-type LOCAL -j TB-NODEPORTS\nCOMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Endpoint, ServiceType};

    fn svc(eps: usize, affinity: SessionAffinity) -> Service {
        Service {
            name: "web".into(),
            namespace: "default".into(),
            kind: ServiceType::NodePort,
            cluster_ip: "10.96.0.10".parse().unwrap(),
            load_balancer_ip: None,
            announced_by: None,
            session_affinity: affinity,
            selector: Default::default(),
            ports: vec![ServicePort {
                name: String::new(),
                protocol: Protocol::TCP,
                port: 80,
                target_port: 8080,
                node_port: Some(30080),
                endpoints: (0..eps)
                    .map(|i| Endpoint {
                        pod: format!("web-{i}"),
                        node: "n1".into(),
                        ip: format!("10.244.1.{}", i + 2).parse().unwrap(),
                        port: 8080,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn uniform_choice_over_three() {
        let r = render(&[svc(3, SessionAffinity::None)]);
        assert!(r.contains("--probability 0.3333333333 -j TB-SEP-"), "{r}");
        assert!(r.contains("--probability 0.5000000000 -j TB-SEP-"), "{r}");
        assert_eq!(r.matches("-j DNAT --to-destination").count(), 3);
        assert!(r.contains("-A TB-NODEPORTS -p tcp -m tcp --dport 30080"));
        assert_eq!(render(&[svc(3, SessionAffinity::None)]), r, "pure");
    }

    #[test]
    fn updates_leave_the_hooks_alone() {
        let all = render(&[svc(2, SessionAffinity::None)]);
        let update = chains(
            &[svc(2, SessionAffinity::None)],
            &[svc(2, SessionAffinity::None)],
        );
        assert!(all.contains("-A PREROUTING -j TB-SERVICES") && !update.contains("PREROUTING"));
        assert_eq!(all.lines().count(), update.lines().count() + 6);
        // An endpoint that left: its chain is still declared (emptied).
        let fewer = chains(
            &[svc(2, SessionAffinity::None)],
            &[svc(1, SessionAffinity::None)],
        );
        assert_eq!(fewer.matches(":TB-SEP-").count(), 2);
        assert_eq!(fewer.matches("-j DNAT").count(), 1);
    }

    #[test]
    fn no_endpoints_rejects() {
        let r = render(&[svc(0, SessionAffinity::None)]);
        assert!(
            r.contains("-d 10.96.0.10/32 -p tcp -m tcp --dport 80") && r.contains("REJECT"),
            "{r}"
        );
        assert!(!r.contains("TB-SVC-"));
    }

    #[test]
    fn client_ip_affinity_uses_recent() {
        let r = render(&[svc(2, SessionAffinity::ClientIP)]);
        assert_eq!(r.matches("--rcheck --seconds 10800 --reap").count(), 2);
        assert_eq!(r.matches("--set -p tcp -j DNAT").count(), 2);
    }
}
