//! The userspace mode's rules, kube-proxy's "portals": in each node's
//! namespace, traffic to a service port (cluster IP, external IP, node port)
//! is handed to the node's proxy, which listens on one port per service port
//! (`listen_port`). Traffic arriving from pods or from outside is
//! `REDIRECT`ed to the proxy; traffic the node itself sends is DNATed to the
//! proxy on the loopback address. Ports without endpoints get no portal, so
//! the filter table rejects them at once as in the iptables mode. The
//! proxy's own ports are reachable only through a portal: the filter table
//! rejects what arrives at them without having been NATed (`guard`). The
//! rules are the same on every node; rendering is pure.

use crate::{Protocol, Service};
use std::fmt::Write;

/// The first port the proxies listen on (inside the node namespaces only;
/// below the ephemeral range, above the usual well-known services).
pub const LISTEN_BASE: u16 = 20000;

pub use crate::iptables::port_id;

/// The filter chain (hooked into INPUT) that refuses traffic to the
/// proxy's ports that no portal rule sent there.
pub const GUARD_CHAIN: &str = "TB-PROXY-GUARD";

/// The proxy's port for each service port, in plan order: `LISTEN_BASE`
/// plus the port's position among all services' ports.
pub fn listen_ports(services: &[Service]) -> Vec<(String, u16)> {
    services
        .iter()
        .flat_map(|s| s.ports.iter().map(move |p| port_id(s, p)))
        .enumerate()
        .map(|(i, id)| (id, LISTEN_BASE.saturating_add(i as u16)))
        .collect()
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::TCP => "tcp",
        Protocol::UDP => "udp",
    }
}

/// The rules of every node, as `iptables-restore --noflush` input, for the
/// services with their current endpoints; with `hooks`, also the jumps from
/// the built-in chains (for a fresh namespace).
pub fn render(services: &[Service], hooks: bool) -> String {
    let mut out = String::from(
        "*nat\n:TB-PORTALS-CONTAINER - [0:0]\n:TB-PORTALS-HOST - [0:0]\n:TB-NODEPORT-CONTAINER - [0:0]\n:TB-NODEPORT-HOST - [0:0]\n",
    );
    if hooks {
        out.push_str("-A PREROUTING -j TB-PORTALS-CONTAINER\n-A OUTPUT -j TB-PORTALS-HOST\n-A PREROUTING -m addrtype --dst-type LOCAL -j TB-NODEPORT-CONTAINER\n-A OUTPUT -m addrtype --dst-type LOCAL -j TB-NODEPORT-HOST\n");
    }
    let ports = listen_ports(services);
    let mut i = 0;
    for s in services {
        for p in &s.ports {
            let listen = ports[i].1;
            i += 1;
            if p.endpoints.is_empty() {
                continue;
            }
            let pr = proto(p.protocol);
            let id = port_id(s, p);
            let mut addrs = vec![(s.cluster_ip, "cluster IP")];
            if let Some(lb) = s.load_balancer_ip {
                addrs.push((lb, "external IP"));
            }
            for (ip, what) in addrs {
                let m = format!(
                    "-d {ip}/32 -p {pr} -m {pr} --dport {} -m comment --comment \"{id} {what}\"",
                    p.port
                );
                let _ = writeln!(
                    out,
                    "-A TB-PORTALS-CONTAINER {m} -j REDIRECT --to-ports {listen}"
                );
                let _ = writeln!(
                    out,
                    "-A TB-PORTALS-HOST {m} -j DNAT --to-destination 127.0.0.1:{listen}"
                );
            }
            if let Some(np) = p.node_port {
                let m =
                    format!("-p {pr} -m {pr} --dport {np} -m comment --comment \"{id} node port\"");
                let _ = writeln!(
                    out,
                    "-A TB-NODEPORT-CONTAINER {m} -j REDIRECT --to-ports {listen}"
                );
                let _ = writeln!(
                    out,
                    "-A TB-NODEPORT-HOST {m} -j DNAT --to-destination 127.0.0.1:{listen}"
                );
            }
        }
    }
    out.push_str("COMMIT\n");
    let rules = guard(&ports);
    let chain = crate::iptables::FilterChain {
        name: GUARD_CHAIN,
        hook: "INPUT",
        rules: &rules,
    };
    out.push_str(&crate::iptables::filter_rules(
        services,
        hooks,
        Some(&chain),
    ));
    out
}

/// The guard's rules: a connection or datagram to the proxy's port range
/// whose connection-tracking entry was not destination-NATed (a portal's
/// `REDIRECT` or DNAT sets that status, and replies and later packets of
/// the flow share it) is rejected: a TCP reset, or ICMP port unreachable.
/// So a LAN host or a pod that sends straight to a node's address (or a
/// local process to 127.0.0.1) at 20000 upwards is refused, while service
/// traffic is not. The whole range is the proxy's: both protocols are
/// guarded on every port of it.
fn guard(ports: &[(String, u16)]) -> String {
    let (Some(first), Some(last)) = (
        ports.iter().map(|p| p.1).min(),
        ports.iter().map(|p| p.1).max(),
    ) else {
        return String::new();
    };
    let range = if first == last {
        first.to_string()
    } else {
        format!("{first}:{last}")
    };
    let mut out = String::new();
    for (pr, reject) in [("tcp", "tcp-reset"), ("udp", "icmp-port-unreachable")] {
        let _ = writeln!(
            out,
            "-A {GUARD_CHAIN} -p {pr} -m {pr} --dport {range} -m conntrack ! --ctstate DNAT -m comment --comment \"proxy ports only through a portal\" -j REJECT --reject-with {reject}"
        );
    }
    out
}

/// Whether going from `before` to `after` changes the rules: only when a
/// port gains its first endpoint or loses its last (the proxy follows every
/// other change in memory).
pub fn changed(before: &[Service], after: &[Service]) -> bool {
    before.iter().zip(after).any(|(b, a)| {
        b.ports
            .iter()
            .zip(&a.ports)
            .any(|(bp, ap)| bp.endpoints.is_empty() != ap.endpoints.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, eps: usize) -> Service {
        crate::fixtures::svc(name, eps, crate::SessionAffinity::None)
    }

    #[test]
    fn portals_redirect_pods_and_dnat_the_node() {
        let r = render(&[svc("a", 0), svc("web", 2)], true);
        assert!(r.contains("-A TB-PORTALS-CONTAINER -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:80/tcp cluster IP\" -j REDIRECT --to-ports 20001"), "{r}");
        assert!(
            r.contains("-j DNAT --to-destination 127.0.0.1:20001"),
            "{r}"
        );
        assert!(r.contains("--dport 30080 -m comment --comment \"default/web:80/tcp node port\" -j REDIRECT --to-ports 20001"), "{r}");
        // The port without endpoints has no portal and is rejected.
        assert!(
            !r.contains("--to-ports 20000") && !r.contains("127.0.0.1:20000"),
            "{r}"
        );
        assert!(
            r.contains("default/a:80/tcp cluster IP has no endpoints"),
            "{r}"
        );
        // The proxy's ports refuse what no portal sent, both protocols.
        assert!(r.contains(":TB-PROXY-GUARD - [0:0]\n"), "{r}");
        assert!(r.contains("-A INPUT -j TB-PROXY-GUARD\n"), "{r}");
        assert!(r.contains("-A TB-PROXY-GUARD -p tcp -m tcp --dport 20000:20001 -m conntrack ! --ctstate DNAT -m comment --comment \"proxy ports only through a portal\" -j REJECT --reject-with tcp-reset\n"), "{r}");
        assert!(
            r.contains(
                "-A TB-PROXY-GUARD -p udp -m udp --dport 20000:20001 -m conntrack ! --ctstate DNAT"
            ),
            "{r}"
        );
        let resync = render(&[svc("a", 0), svc("web", 2)], false);
        assert!(!resync.contains("-A INPUT"), "{resync}");
        assert!(resync.contains("-A TB-PROXY-GUARD -p tcp"), "{resync}");
        assert!(render(&[svc("web", 1)], true).contains("--dport 20000 -m conntrack"));
        assert!(changed(&[svc("a", 1)], &[svc("a", 0)]));
        assert!(!changed(&[svc("a", 2)], &[svc("a", 1)]));
    }
}
