//! The nftables mode: one table (`ip testbed`) per node namespace. Dispatch
//! goes through verdict maps keyed on destination address . protocol . port
//! (constant time however many services), the endpoint is picked with
//! `numgen random mod N`, ClientIP affinity keeps each client in a per-endpoint
//! set with a timeout, and the whole table is replaced in one `nft -f`
//! transaction. Marking, masquerading and rejection without endpoints are as
//! in the iptables mode. Rendering is pure.

use crate::iptables::{sep_chain, svc_chain, AFFINITY_SECONDS};
use crate::{Protocol, Service, SessionAffinity};
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

/// The whole table as one `nft -f` transaction that replaces any previous
/// version of it atomically. `active` are the services with their current
/// endpoints (`all`, with every endpoint, is what `up` started with).
pub fn render(all: &[Service], active: &[Service]) -> String {
    let _ = all;
    let mut dispatch = Vec::new();
    let mut nodeports = Vec::new();
    let mut reject = Vec::new();
    let mut reject_np = Vec::new();
    let mut chains = String::new();
    let mut sets = String::new();
    for s in active {
        for p in &s.ports {
            let pr = proto(p.protocol);
            let mut addrs = vec![s.cluster_ip.to_string()];
            if let Some(lb) = s.load_balancer_ip {
                addrs.push(lb.to_string());
            }
            if p.endpoints.is_empty() {
                let target = format!("goto reject-{pr}");
                for a in &addrs {
                    reject.push(format!("{a} . {pr} . {} : {target}", p.port));
                }
                if let Some(np) = p.node_port {
                    reject_np.push(format!("{pr} . {np} : {target}"));
                }
                continue;
            }
            let svc = ident(&svc_chain(s, p));
            for a in &addrs {
                dispatch.push(format!("{a} . {pr} . {} : goto {svc}", p.port));
            }
            if let Some(np) = p.node_port {
                nodeports.push(format!("{pr} . {np} : goto {svc}"));
            }
            let seps: Vec<(String, &crate::Endpoint)> = p
                .endpoints
                .iter()
                .map(|e| (ident(&sep_chain(s, p, &e.ip.to_string(), e.port)), e))
                .collect();
            let _ = writeln!(chains, "  chain {svc} {{");
            if s.session_affinity == SessionAffinity::ClientIP {
                for (sep, _) in &seps {
                    let _ = writeln!(sets, "  set {sep}-clients {{ type ipv4_addr; flags dynamic,timeout; timeout {AFFINITY_SECONDS}s; }}");
                    let _ = writeln!(chains, "    ip saddr @{sep}-clients goto {sep}");
                }
            }
            let arms: Vec<String> = seps
                .iter()
                .enumerate()
                .map(|(i, (sep, _))| format!("{i} : goto {sep}"))
                .collect();
            let _ = writeln!(
                chains,
                "    numgen random mod {} vmap {{ {} }}",
                seps.len(),
                arms.join(", ")
            );
            let _ = writeln!(chains, "  }}");
            for (sep, e) in &seps {
                let _ = writeln!(chains, "  chain {sep} {{");
                if s.session_affinity == SessionAffinity::ClientIP {
                    let _ = writeln!(chains, "    update @{sep}-clients {{ ip saddr }}");
                }
                let _ = writeln!(chains, "    meta mark set meta mark or 0x4000");
                let _ = writeln!(chains, "    meta l4proto {pr} dnat to {}:{}", e.ip, e.port);
                let _ = writeln!(chains, "  }}");
            }
        }
    }
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", v.join(", "))
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    let _ = writeln!(
        out,
        "  map services {{ type ipv4_addr . inet_proto . inet_service : verdict;{} }}",
        elements(&dispatch)
    );
    let _ = writeln!(
        out,
        "  map nodeports {{ type inet_proto . inet_service : verdict;{} }}",
        elements(&nodeports)
    );
    let _ = writeln!(
        out,
        "  map no-endpoints {{ type ipv4_addr . inet_proto . inet_service : verdict;{} }}",
        elements(&reject)
    );
    let _ = writeln!(
        out,
        "  map no-endpoints-nodeports {{ type inet_proto . inet_service : verdict;{} }}",
        elements(&reject_np)
    );
    out.push_str(&sets);
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
    out.push_str(&chains);
    out.push_str("}\n");
    out
}
