//! The userspace mode's rules, kube-proxy's "portals": in each node's
//! namespace, traffic to a service port (cluster IP, external IP, node port)
//! is handed to the node's proxy, which listens on one port per service port
//! (`listen_port`). Traffic arriving from pods or from outside is
//! `REDIRECT`ed to the proxy; traffic the node itself sends is DNATed to the
//! proxy on the loopback address. Ports without endpoints get no portal, so
//! the filter table rejects them at once as in the iptables mode. The rules
//! are the same on every node; rendering is pure.

use crate::{Protocol, Service};
use std::fmt::Write;

/// The first port the proxies listen on (inside the node namespaces only;
/// below the ephemeral range, above the usual well-known services).
pub const LISTEN_BASE: u16 = 20000;

pub use crate::iptables::port_id;

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
    out.push_str(&crate::iptables::filter_rules(services, hooks));
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
        assert!(!r.contains("20000"), "{r}");
        assert!(
            r.contains("default/a:80/tcp cluster IP has no endpoints"),
            "{r}"
        );
        assert!(changed(&[svc("a", 1)], &[svc("a", 0)]));
        assert!(!changed(&[svc("a", 2)], &[svc("a", 1)]));
    }
}
