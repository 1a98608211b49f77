//! The nftables mode: one table (`ip testbed`) per node namespace. Dispatch
//! goes through verdict maps keyed on destination address . protocol . port
//! (constant time however many services) to one chain per service port,
//! which marks the packet for masquerading and DNATs it to an endpoint
//! picked with `numgen random mod N` from an inline map. With ClientIP
//! affinity the port's chain first looks the client up in a per-endpoint set
//! with a timeout and jumps to that endpoint's chain. Ports without
//! endpoints keep their (empty) chain and are rejected at once through the
//! `no-endpoints` maps. The table is created in one `nft -f` transaction;
//! an endpoint change rewrites only the changed ports' chains (and map
//! elements), in one small transaction. Rendering is pure.

use crate::iptables::{sep_chain, svc_chain, AFFINITY_SECONDS};
use crate::{Endpoint, Protocol, Service, ServicePort, SessionAffinity};
use std::fmt::Write;

/// The table's name.
pub const TABLE: &str = "testbed";

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::TCP => "tcp",
        Protocol::UDP => "udp",
    }
}

/// nft identifiers: the iptables chain names, lowercased.
fn ident(chain: &str) -> String {
    chain.to_ascii_lowercase()
}

fn addrs(s: &Service) -> Vec<String> {
    let mut a = vec![s.cluster_ip.to_string()];
    if let Some(lb) = s.load_balancer_ip {
        a.push(lb.to_string());
    }
    a
}

/// The endpoint chain of an affinity port's endpoint.
fn sep(s: &Service, p: &ServicePort, e: &Endpoint) -> String {
    ident(&sep_chain(s, p, &e.ip.to_string(), e.port))
}

fn affinity(s: &Service) -> bool {
    s.session_affinity == SessionAffinity::ClientIP
}

/// The rules of one port's chain, one per line.
fn port_rules(s: &Service, p: &ServicePort) -> Vec<String> {
    let pr = proto(p.protocol);
    let n = p.endpoints.len();
    if n == 0 {
        return Vec::new();
    }
    if affinity(s) {
        let mut rules: Vec<String> = p
            .endpoints
            .iter()
            .map(|e| {
                let c = sep(s, p, e);
                format!("ip saddr @{c}-clients goto {c}")
            })
            .collect();
        let arms: Vec<String> = p
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i} : goto {}", sep(s, p, e)))
            .collect();
        rules.push(format!(
            "numgen random mod {n} vmap {{ {} }}",
            arms.join(", ")
        ));
        return rules;
    }
    let arms: Vec<String> = p
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{i} : {} . {}", e.ip, e.port))
        .collect();
    vec![
        "meta mark set meta mark or 0x4000".to_string(),
        format!(
            "meta l4proto {pr} dnat ip addr . port to numgen random mod {n} map {{ {} }}",
            arms.join(", ")
        ),
    ]
}

/// The client set and the chain of an affinity port's endpoint: as
/// declarations inside the table block (`within`), or as commands of their
/// own (the chain created empty, then its rules added one by one: nft before
/// 1.0.7 drops rules written inside a standalone `add chain`).
fn endpoint_objects(s: &Service, p: &ServicePort, e: &Endpoint, within: bool) -> Vec<String> {
    let c = sep(s, p, e);
    let set = format!(
        "set {{TABLE}}{c}-clients {{ type ipv4_addr; flags dynamic,timeout; timeout {AFFINITY_SECONDS}s; }}"
    );
    let rules = [
        format!("update @{c}-clients {{ ip saddr }}"),
        "meta mark set meta mark or 0x4000".to_string(),
        format!(
            "meta l4proto {} dnat to {}:{}",
            proto(p.protocol),
            e.ip,
            e.port
        ),
    ];
    if within {
        vec![
            set.replace("{TABLE}", ""),
            format!("chain {c} {{ {}; }}", rules.join("; ")),
        ]
    } else {
        let table = format!("ip {TABLE} ");
        let mut out = vec![
            format!("add {}", set.replace("{TABLE}", &table)),
            format!("add chain {table}{c}"),
        ];
        out.extend(rules.iter().map(|r| format!("add rule {table}{c} {r}")));
        out
    }
}

fn no_endpoint_elements(s: &Service, p: &ServicePort) -> (Vec<String>, Vec<String>) {
    let pr = proto(p.protocol);
    let target = format!("goto reject-{pr}");
    let by_addr = addrs(s)
        .iter()
        .map(|a| format!("{a} . {pr} . {} : {target}", p.port))
        .collect();
    let by_port = p
        .node_port
        .map(|np| format!("{pr} . {np} : {target}"))
        .into_iter()
        .collect();
    (by_addr, by_port)
}

/// The parts of the table that depend on the services, in service and port
/// order: the elements of the four maps, the client sets and the chains.
#[derive(Default)]
struct Parts {
    /// `services` map: address . protocol . port to the port's chain.
    dispatch: Vec<String>,
    /// `nodeports` map: protocol . node port to the port's chain.
    nodeports: Vec<String>,
    /// `no-endpoints` map elements.
    reject: Vec<String>,
    /// `no-endpoints-nodeports` map elements.
    reject_np: Vec<String>,
    /// The ports' and affinity endpoints' chains, as table lines.
    chains: String,
    /// The affinity endpoints' client sets, as table lines.
    sets: String,
}

impl Parts {
    /// Adds port `p` of service `s`: its map elements, its chain and, with
    /// affinity, its endpoints' sets and chains.
    fn add_port(&mut self, s: &Service, p: &ServicePort) {
        let pr = proto(p.protocol);
        let svc = ident(&svc_chain(s, p));
        for a in addrs(s) {
            self.dispatch
                .push(format!("{a} . {pr} . {} : goto {svc}", p.port));
        }
        if let Some(np) = p.node_port {
            self.nodeports.push(format!("{pr} . {np} : goto {svc}"));
        }
        if p.endpoints.is_empty() {
            let (a, n) = no_endpoint_elements(s, p);
            self.reject.extend(a);
            self.reject_np.extend(n);
        }
        let _ = writeln!(self.chains, "  chain {svc} {{");
        for r in port_rules(s, p) {
            let _ = writeln!(self.chains, "    {r}");
        }
        let _ = writeln!(self.chains, "  }}");
        if affinity(s) {
            for e in &p.endpoints {
                let objects = endpoint_objects(s, p, e, true);
                let _ = writeln!(self.sets, "  {}", objects[0]);
                let _ = writeln!(self.chains, "  {}", objects[1]);
            }
        }
    }
}

/// The whole table as one `nft -f` transaction that replaces any previous
/// version of it atomically.
pub fn render(services: &[Service]) -> String {
    let mut parts = Parts::default();
    for s in services {
        for p in &s.ports {
            parts.add_port(s, p);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    write_maps(&mut out, &parts);
    out.push_str(&parts.sets);
    write_fixed_chains(&mut out);
    out.push_str(&parts.chains);
    out.push_str("}\n");
    out
}

/// The table's four verdict maps with their elements.
fn write_maps(out: &mut String, parts: &Parts) {
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", v.join(", "))
        }
    };
    let _ = writeln!(
        out,
        "  map services {{ type ipv4_addr . inet_proto . inet_service : verdict;{} }}",
        elements(&parts.dispatch)
    );
    let _ = writeln!(
        out,
        "  map nodeports {{ type inet_proto . inet_service : verdict;{} }}",
        elements(&parts.nodeports)
    );
    let _ = writeln!(
        out,
        "  map no-endpoints {{ type ipv4_addr . inet_proto . inet_service : verdict;{} }}",
        elements(&parts.reject)
    );
    let _ = writeln!(
        out,
        "  map no-endpoints-nodeports {{ type inet_proto . inet_service : verdict;{} }}",
        elements(&parts.reject_np)
    );
}

/// The chains every table has: the hooks, the dispatch through the maps,
/// masquerading and the rejections.
fn write_fixed_chains(out: &mut String) {
    out.push_str("  chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump dispatch; }\n");
    out.push_str(
        "  chain output { type nat hook output priority -100; policy accept; jump dispatch; }\n",
    );
    out.push_str("  chain dispatch {\n    ip daddr . meta l4proto . th dport vmap @services\n    fib daddr type local meta l4proto . th dport vmap @nodeports\n  }\n");
    out.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    meta mark & 0x4000 == 0x4000 meta mark set meta mark ^ 0x4000 masquerade\n  }\n");
    out.push_str("  chain refuse {\n    type filter hook forward priority 0; policy accept;\n    ip daddr . meta l4proto . th dport vmap @no-endpoints\n  }\n");
    out.push_str("  chain refuse-local {\n    type filter hook output priority 0; policy accept;\n    ip daddr . meta l4proto . th dport vmap @no-endpoints\n  }\n");
    out.push_str("  chain refuse-in {\n    type filter hook input priority 0; policy accept;\n    ip daddr . meta l4proto . th dport vmap @no-endpoints\n    fib daddr type local meta l4proto . th dport vmap @no-endpoints-nodeports\n  }\n");
    out.push_str("  chain reject-tcp { reject with tcp reset; }\n  chain reject-udp { reject; }\n");
}

/// The transaction that takes the table from the endpoints of `before` to
/// those of `after` (the same services and ports, other endpoints): each
/// changed port's chain is flushed and refilled, the chains and client sets
/// of affinity endpoints that left are deleted and those of new ones added,
/// and a port that lost its last endpoint (or gained its first) moves into
/// (or out of) the `no-endpoints` maps. Nothing else is touched. Empty when
/// nothing changed.
pub fn update(before: &[Service], after: &[Service]) -> String {
    let mut out = String::new();
    for (b, a) in before.iter().zip(after) {
        for (bp, ap) in b.ports.iter().zip(&a.ports) {
            if bp.endpoints == ap.endpoints {
                continue;
            }
            let svc = ident(&svc_chain(a, ap));
            let _ = writeln!(out, "flush chain ip {TABLE} {svc}");
            if affinity(a) {
                for e in bp.endpoints.iter().filter(|e| !ap.endpoints.contains(e)) {
                    let c = sep(b, bp, e);
                    let _ = writeln!(out, "delete chain ip {TABLE} {c}");
                    let _ = writeln!(out, "delete set ip {TABLE} {c}-clients");
                }
                for e in ap.endpoints.iter().filter(|e| !bp.endpoints.contains(e)) {
                    for line in endpoint_objects(a, ap, e, false) {
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            for r in port_rules(a, ap) {
                let _ = writeln!(out, "add rule ip {TABLE} {svc} {r}");
            }
            if bp.endpoints.is_empty() != ap.endpoints.is_empty() {
                let verb = if ap.endpoints.is_empty() {
                    "add"
                } else {
                    "delete"
                };
                let (by_addr, by_port) = no_endpoint_elements(a, ap);
                let keys = |v: Vec<String>| {
                    if verb == "add" {
                        v
                    } else {
                        v.into_iter()
                            .map(|e| e.split(" : ").next().unwrap_or_default().to_string())
                            .collect()
                    }
                };
                for (map, v) in [
                    ("no-endpoints", keys(by_addr)),
                    ("no-endpoints-nodeports", keys(by_port)),
                ] {
                    if !v.is_empty() {
                        let _ = writeln!(
                            out,
                            "{verb} element ip {TABLE} {map} {{ {} }}",
                            v.join(", ")
                        );
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::svc;

    #[test]
    fn one_chain_per_port_without_affinity() {
        let r = render(&[svc("web", 3, SessionAffinity::None)]);
        assert_eq!(r.matches("chain tb-svc-").count(), 1, "{r}");
        assert!(!r.contains("tb-sep-"), "{r}");
        assert!(r.contains("numgen random mod 3 map { 0 : 10.244.1.2 . 8080, 1 : 10.244.1.3 . 8080, 2 : 10.244.1.4 . 8080 }"), "{r}");
    }

    #[test]
    fn affinity_keeps_endpoint_chains_and_sets() {
        let r = render(&[svc("web", 2, SessionAffinity::ClientIP)]);
        assert_eq!(r.matches("set tb-sep-").count(), 2, "{r}");
        assert_eq!(r.matches("update @tb-sep-").count(), 2, "{r}");
    }

    #[test]
    fn updates_touch_only_the_changed_port() {
        let before = [
            svc("web", 3, SessionAffinity::None),
            svc("other", 2, SessionAffinity::None),
        ];
        let after = [
            svc("web", 2, SessionAffinity::None),
            svc("other", 2, SessionAffinity::None),
        ];
        let u = update(&before, &after);
        assert_eq!(u.lines().count(), 3, "{u}");
        assert!(u.starts_with("flush chain ip testbed tb-svc-"), "{u}");
        assert!(u.contains("numgen random mod 2 map"), "{u}");
        assert_eq!(update(&after, &after), "");
        // The last endpoint leaves: into the rejection maps, and back.
        let empty = [
            svc("web", 0, SessionAffinity::None),
            svc("other", 2, SessionAffinity::None),
        ];
        let u = update(&after, &empty);
        assert!(
            u.contains(
                "add element ip testbed no-endpoints { 10.96.0.10 . tcp . 80 : goto reject-tcp }"
            ),
            "{u}"
        );
        assert!(
            u.contains(
                "add element ip testbed no-endpoints-nodeports { tcp . 30080 : goto reject-tcp }"
            ),
            "{u}"
        );
        let u = update(&empty, &after);
        assert!(
            u.contains("delete element ip testbed no-endpoints { 10.96.0.10 . tcp . 80 }"),
            "{u}"
        );
        // Affinity endpoints that leave take their chain and set along.
        let u = update(
            &[svc("web", 2, SessionAffinity::ClientIP)],
            &[svc("web", 1, SessionAffinity::ClientIP)],
        );
        assert_eq!(u.matches("delete chain").count(), 1, "{u}");
        assert_eq!(u.matches("delete set").count(), 1, "{u}");
        // One coming back: its chain is created empty and filled rule by
        // rule (old nft ignores rules inside a standalone `add chain`).
        let u = update(
            &[svc("web", 1, SessionAffinity::ClientIP)],
            &[svc("web", 2, SessionAffinity::ClientIP)],
        );
        assert!(
            !u.lines()
                .any(|l| l.starts_with("add chain") && l.contains('{')),
            "{u}"
        );
        assert_eq!(u.matches("add rule ip testbed tb-sep-").count(), 3, "{u}");
    }
}
