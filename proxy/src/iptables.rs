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

/// FNV-1a over the parts (each followed by a zero byte), rendered in base32
/// as kube-proxy names chains.
fn chain_hash(parts: &[&str]) -> String {
    let bytes: Vec<u8> = parts
        .iter()
        .flat_map(|p| p.bytes().chain(std::iter::once(0)))
        .collect();
    let h = crate::fnv1a(&bytes);
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

/// A service port's identity, as chains, comments, the proxy and its logs
/// name it: `namespace/name:port/tcp`.
pub fn port_id(s: &Service, p: &ServicePort) -> String {
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
    rules(services, true)
}

/// The testbed's chains alone, to replace those loaded before (declaring a
/// chain in `iptables-restore --noflush` input empties it), leaving the
/// built-in chains' hooks alone: a full resynchronisation after a failed
/// update.
pub fn resync(services: &[Service]) -> String {
    rules(services, false)
}

/// The transaction that takes the rules from the endpoints of `before` to
/// those of `after` (the same services and ports, other endpoints): only
/// the chains of the ports whose endpoints changed are rewritten, endpoint
/// chains that are no longer used are deleted, and the filter chains are
/// rewritten only when a port gained its first or lost its last endpoint.
/// Other services' rules, and connections through them, are untouched.
/// Empty when nothing changed.
pub fn update(before: &[Service], after: &[Service]) -> String {
    let mut declare = String::new();
    let mut body = String::new();
    let mut delete = String::new();
    let mut filter_changed = false;
    for (b, a) in before.iter().zip(after) {
        for (bp, ap) in b.ports.iter().zip(&a.ports) {
            if bp.endpoints == ap.endpoints {
                continue;
            }
            filter_changed |= bp.endpoints.is_empty() != ap.endpoints.is_empty();
            let _ = writeln!(declare, ":{} - [0:0]", svc_chain(a, ap));
            for sep in port_rules(a, ap, &mut body) {
                let _ = writeln!(declare, ":{sep} - [0:0]");
            }
            for e in &bp.endpoints {
                if !ap.endpoints.contains(e) {
                    let sep = sep_chain(b, bp, &e.ip.to_string(), e.port);
                    let _ = writeln!(declare, ":{sep} - [0:0]");
                    let _ = writeln!(delete, "-X {sep}");
                }
            }
        }
    }
    let mut out = String::new();
    if !declare.is_empty() {
        out = format!("*nat\n{declare}{body}{delete}COMMIT\n");
    }
    if filter_changed {
        out.push_str(&filter_rules(after, false, None));
    }
    out
}

/// The rules of one port's chain and of its endpoints' chains, appended to
/// `out`; returns the endpoint chains.
fn port_rules(s: &Service, p: &ServicePort, out: &mut String) -> Vec<String> {
    let pr = proto(p.protocol);
    let id = port_id(s, p);
    let svc = svc_chain(s, p);
    let seps: Vec<(String, &crate::Endpoint)> = p
        .endpoints
        .iter()
        .map(|e| (sep_chain(s, p, &e.ip.to_string(), e.port), e))
        .collect();
    if s.session_affinity == SessionAffinity::ClientIP {
        for (sep, _) in &seps {
            let _ = writeln!(
                out,
                "-A {svc} -m recent --name {sep} --rcheck --seconds {AFFINITY_SECONDS} --reap -j {sep}"
            );
        }
    }
    let n = seps.len();
    for (i, (sep, _)) in seps.iter().enumerate() {
        if i + 1 < n {
            let prob = 1.0 / (n - i) as f64;
            let _ = writeln!(
                out,
                "-A {svc} -m statistic --mode random --probability {prob:.10} -j {sep}"
            );
        } else {
            let _ = writeln!(out, "-A {svc} -j {sep}");
        }
    }
    for (sep, e) in &seps {
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment \"{id} -> {}:{}\" -j TB-MARK-MASQ",
            e.ip, e.port
        );
        if s.session_affinity == SessionAffinity::ClientIP {
            let _ = writeln!(
                out,
                "-A {sep} -m recent --name {sep} --set -p {pr} -j DNAT --to-destination {}:{}",
                e.ip, e.port
            );
        } else {
            let _ = writeln!(
                out,
                "-A {sep} -p {pr} -j DNAT --to-destination {}:{}",
                e.ip, e.port
            );
        }
    }
    seps.into_iter().map(|(sep, _)| sep).collect()
}

/// The service's addresses for one port: the cluster IP, and the external
/// IP of a LoadBalancer.
fn targets(s: &Service) -> Vec<(String, &'static str)> {
    let mut t = vec![(s.cluster_ip.to_string(), "cluster IP")];
    if let Some(lb) = s.load_balancer_ip {
        t.push((lb.to_string(), "external IP"));
    }
    t
}

/// A chain another mode adds to the filter table: its name, the built-in
/// chain that jumps to it (with the hooks), and its rules.
pub(crate) struct FilterChain<'a> {
    pub(crate) name: &'a str,
    pub(crate) hook: &'a str,
    pub(crate) rules: &'a str,
}

/// The filter table: ports without endpoints are rejected at once (a TCP
/// reset wherever the client is; the ICMP error for UDP); and `extra`.
pub(crate) fn filter_rules(
    services: &[Service],
    hooks: bool,
    extra: Option<&FilterChain>,
) -> String {
    let mut out = String::from("*filter\n:TB-SERVICES - [0:0]\n:TB-NODEPORTS - [0:0]\n");
    if let Some(c) = extra {
        let _ = writeln!(out, ":{} - [0:0]", c.name);
    }
    if hooks {
        out.push_str(
            "-A INPUT -j TB-SERVICES\n-A FORWARD -j TB-SERVICES\n-A OUTPUT -j TB-SERVICES\n",
        );
        if let Some(c) = extra {
            let _ = writeln!(out, "-A {} -j {}", c.hook, c.name);
        }
    }
    if let Some(c) = extra {
        out.push_str(c.rules);
    }
    for s in services {
        for p in s.ports.iter().filter(|p| p.endpoints.is_empty()) {
            let pr = proto(p.protocol);
            let id = port_id(s, p);
            let reject = match p.protocol {
                Protocol::TCP => "tcp-reset",
                Protocol::UDP => "icmp-port-unreachable",
            };
            for (ip, what) in targets(s) {
                let _ = writeln!(
                    out,
                    "-A TB-SERVICES -d {ip}/32 -p {pr} -m {pr} --dport {} -m comment --comment \"{id} {what} has no endpoints\" -j REJECT --reject-with {reject}",
                    p.port
                );
            }
            if let Some(np) = p.node_port {
                let _ = writeln!(
                    out,
                    "-A TB-NODEPORTS -p {pr} -m {pr} --dport {np} -m comment --comment \"{id} node port has no endpoints\" -j REJECT --reject-with {reject}"
                );
            }
        }
    }
    out.push_str("-A TB-SERVICES -m addrtype --dst-type LOCAL -j TB-NODEPORTS\nCOMMIT\n");
    out
}

/// Every port is dispatched to its chain whether or not it has endpoints
/// (an empty chain lets the packet on to the filter table's rejection), so
/// that an endpoint change never rewrites the dispatch chain.
fn rules(services: &[Service], hooks: bool) -> String {
    let mut nat_chains = vec![
        "TB-SERVICES".to_string(),
        "TB-NODEPORTS".into(),
        "TB-POSTROUTING".into(),
        "TB-MARK-MASQ".into(),
    ];
    let mut nat = String::new();
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
            let svc = svc_chain(s, p);
            nat_chains.push(svc.clone());
            for (ip, what) in targets(s) {
                let _ = writeln!(nat, "-A TB-SERVICES -d {ip}/32 -p {pr} -m {pr} --dport {} -m comment --comment \"{id} {what}\" -j {svc}", p.port);
            }
            if let Some(np) = p.node_port {
                let _ = writeln!(nat, "-A TB-NODEPORTS -p {pr} -m {pr} --dport {np} -m comment --comment \"{id} node port\" -j {svc}");
            }
            nat_chains.extend(port_rules(s, p, &mut per_port));
        }
    }
    let _ = writeln!(
        nat,
        "-A TB-SERVICES -m addrtype --dst-type LOCAL -j TB-NODEPORTS"
    );
    let mut out = String::from("*nat\n");
    for c in &nat_chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    if hooks {
        out.push_str("-A PREROUTING -j TB-SERVICES\n-A OUTPUT -j TB-SERVICES\n-A POSTROUTING -j TB-POSTROUTING\n");
    }
    out.push_str(&nat);
    out.push_str(&per_port);
    out.push_str("COMMIT\n");
    out.push_str(&filter_rules(services, hooks, None));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(eps: usize, affinity: SessionAffinity) -> Service {
        crate::fixtures::svc("web", eps, affinity)
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
    fn an_update_rewrites_only_the_changed_port() {
        let other = |eps| {
            let mut s = svc(eps, SessionAffinity::None);
            s.name = "other".into();
            s
        };
        let before = [svc(3, SessionAffinity::None), other(2)];
        let after = [svc(2, SessionAffinity::None), other(2)];
        let u = update(&before, &after);
        // The changed port's chain, its two endpoints and the one that left
        // are declared (emptied); the one that left is deleted.
        assert_eq!(u.matches(":TB-SVC-").count(), 1, "{u}");
        assert_eq!(u.matches(":TB-SEP-").count(), 3, "{u}");
        assert_eq!(u.matches("-X TB-SEP-").count(), 1, "{u}");
        assert_eq!(u.matches("-j DNAT").count(), 2, "{u}");
        assert!(!u.contains("TB-SERVICES") && !u.contains("*filter"), "{u}");
        assert!(!u.contains(&svc_chain(&after[1], &after[1].ports[0])));
        assert_eq!(update(&after, &after), "");
        // Losing the last endpoint rewrites the filter chains to reject.
        let u = update(&after, &[svc(0, SessionAffinity::None), other(2)]);
        assert!(u.contains("*filter") && u.contains("tcp-reset"), "{u}");
        assert!(!u.contains("-A INPUT"), "hooks stay: {u}");
        assert_eq!(u.matches("-X TB-SEP-").count(), 2, "{u}");
    }

    #[test]
    fn no_endpoints_rejects() {
        let r = render(&[svc(0, SessionAffinity::None)]);
        assert!(
            r.contains("-d 10.96.0.10/32 -p tcp -m tcp --dport 80") && r.contains("REJECT"),
            "{r}"
        );
        // Still dispatched to its (empty) chain, so that endpoints arriving
        // later change only that chain.
        assert_eq!(r.matches("-j DNAT").count(), 0, "{r}");
    }

    #[test]
    fn client_ip_affinity_uses_recent() {
        let r = render(&[svc(2, SessionAffinity::ClientIP)]);
        assert_eq!(r.matches("--rcheck --seconds 10800 --reap").count(), 2);
        assert_eq!(r.matches("--set -p tcp -j DNAT").count(), 2);
    }
}
