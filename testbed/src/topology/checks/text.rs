//! The one-line forms inside a check: endpoints (`pod web.shop`,
//! `nodePort web via node1`, ...) and ports (`tcp/80`, `http/80/path`,
//! `icmp`), parsed into their types or a message and a hint.

use super::{Endpoint, Port};
use crate::diag::did_you_mean;
use crate::topology::decode::is_dns_label;
use std::net::Ipv4Addr;

/// The endpoint words of the string forms.
const KINDS: &[&str] = &[
    "pod", "host", "node", "service", "nodePort", "external", "address",
];
pub(super) const ENDPOINT_HELP: &str = "write `pod NAME[.NAMESPACE]`, `host NAME`, `node NAME`, `service NAME[.NAMESPACE]`, `nodePort SERVICE via NODE`, `external SERVICE`, `address A.B.C.D`, or one of `{pods: {app: web}}`, `{rc: NAME}`, `{allPods: true}`, `{allNodes: true}`, `{allHosts: true}`";
pub(super) const PORT_HELP: &str =
    "write `tcp/N`, `udp/N`, `http/N` or `http/N/path` (N from 1 to 65535), or `icmp`";
/// The longest HTTP path accepted in a `port`.
const MAX_PATH: usize = 1024;

/// What is wrong, and how to fix it.
pub type Problem = (String, String);

/// `tcp/N`, `udp/N`, `http/N[/path]` or `icmp`.
pub fn parse_port(s: &str) -> Result<Port, Problem> {
    if s == "icmp" {
        return Ok(Port::Icmp);
    }
    let (proto, rest) = s.split_once('/').unwrap_or((s, ""));
    let (num, path) = match rest.split_once('/') {
        Some((n, p)) => (n, Some(format!("/{p}"))),
        None => (rest, None),
    };
    if !matches!(proto, "tcp" | "udp" | "http") {
        let help = match did_you_mean(proto, &["tcp", "udp", "http", "icmp"]) {
            Some(w) => format!("did you mean `{w}`? {PORT_HELP}"),
            None => PORT_HELP.to_string(),
        };
        return Err((format!("`port` `{s}` is not a kind of probe"), help));
    }
    let n = match num.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => n as u16,
        _ => {
            return Err((
                format!("`port` `{s}` has no port number from 1 to 65535"),
                PORT_HELP.to_string(),
            ))
        }
    };
    match (proto, path) {
        ("tcp", None) => Ok(Port::Tcp(n)),
        ("udp", None) => Ok(Port::Udp(n)),
        ("http", None) => Ok(Port::Http {
            port: n,
            path: "/".into(),
        }),
        ("http", Some(p)) => {
            if p.len() > MAX_PATH || !p.bytes().all(|b| b.is_ascii_graphic()) {
                return Err((
                    format!("the path of `port` `{s}` is not a URL path"),
                    format!("a path is at most {MAX_PATH} printable characters without spaces, e.g. `http/80/healthz`"),
                ));
            }
            Ok(Port::Http { port: n, path: p })
        }
        _ => Err((
            format!("`port` `{s}` has a path, but only `http` ports do"),
            PORT_HELP.to_string(),
        )),
    }
}

/// The string forms of an endpoint: `pod NAME[.NAMESPACE]`, `host NAME`,
/// `node NAME`, `service NAME[.NAMESPACE]`, `nodePort SERVICE via NODE`,
/// `external SERVICE`, `address A.B.C.D`.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, Problem> {
    let (kind, rest) = s.trim().split_once(' ').unwrap_or((s.trim(), ""));
    let rest = rest.trim();
    if !KINDS.contains(&kind) {
        let help = match did_you_mean(kind, KINDS) {
            Some(w) => format!("did you mean `{w}`? {ENDPOINT_HELP}"),
            None => ENDPOINT_HELP.to_string(),
        };
        return Err((format!("`{s}` is not an endpoint"), help));
    }
    if rest.is_empty() {
        return Err((
            format!("`{kind}` names nothing"),
            format!("write e.g. `{}`", example(kind)),
        ));
    }
    match kind {
        "pod" | "service" | "external" => {
            let (name, namespace) = qualified(rest, kind)?;
            Ok(match kind {
                "pod" => Endpoint::Pod { name, namespace },
                "service" => Endpoint::Service { name, namespace },
                _ => Endpoint::External { name, namespace },
            })
        }
        "host" => Ok(Endpoint::Host(label(rest, kind)?)),
        "node" => Ok(Endpoint::Node(label(rest, kind)?)),
        "nodePort" => {
            let Some((svc, node)) = rest.split_once(" via ") else {
                return Err((
                    format!("`{s}` does not say which node's address to probe"),
                    format!("write e.g. `{}`", example(kind)),
                ));
            };
            let (name, namespace) = qualified(svc.trim(), kind)?;
            let node = label(node.trim(), "node")?;
            Ok(Endpoint::NodePort {
                name,
                namespace,
                node,
            })
        }
        _ => rest
            .parse::<Ipv4Addr>()
            .map(Endpoint::Address)
            .map_err(|_| {
                (
                    format!("`{rest}` is not an IPv4 address"),
                    "write e.g. `address 192.168.0.10`".to_string(),
                )
            }),
    }
}

fn example(kind: &str) -> &'static str {
    match kind {
        "pod" => "pod web.shop",
        "host" => "host client",
        "node" => "node node1",
        "service" => "service web.shop",
        "nodePort" => "nodePort web.shop via node1",
        "external" => "external web.shop",
        _ => "address 192.168.0.10",
    }
}

/// `NAME[.NAMESPACE]`, both DNS labels; the namespace defaults to `default`.
fn qualified(s: &str, kind: &str) -> Result<(String, String), Problem> {
    let (name, ns) = s.split_once('.').unwrap_or((s, "default"));
    Ok((label(name, kind)?, label(ns, "namespace")?))
}

fn label(s: &str, what: &str) -> Result<String, Problem> {
    if is_dns_label(s, 63) {
        return Ok(s.to_string());
    }
    Err((
        format!("`{s}` is not a {what} name"),
        "names are lowercase letters, digits and `-`, starting with a letter, at most 63 characters; write `NAME.NAMESPACE` for another namespace".to_string(),
    ))
}
