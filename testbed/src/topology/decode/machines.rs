//! The fields that spread a testbed over several real machines: the
//! top-level `machines:` list, and `cluster.registry` and `cluster.etcd`
//! (where the machines' shared state lives). Shapes and values only; what
//! the entries say about each other (unknown or duplicate machines, etcd
//! settings that do not fit the registry) is checked in
//! `topology::machines`. The URL and prefix rules are pure functions here,
//! so that other code can reuse them.

use super::{at, Decoder, Obj};
use crate::diag::At;
use crate::topology::model::*;
use crate::topology::yaml::{Node, Value};
use std::net::Ipv4Addr;

/// The most machines one testbed may be spread over.
pub const MAX_MACHINES: usize = 64;
/// The most etcd endpoints `cluster.etcd.endpoints` may list.
pub const MAX_ETCD_ENDPOINTS: usize = 16;
/// The longest `cluster.etcd.prefix`.
pub const MAX_ETCD_PREFIX: usize = 200;
/// `cluster.etcd.prefix` when the file sets none: flannel's own.
pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";

const MACHINE: &[&str] = &["name", "address"];
const ETCD: &[&str] = &["endpoints", "prefix"];

/// Checks one etcd client URL: `http://` or `https://`, a host (an IPv4
/// address or a DNS name) and a port, nothing else. The error explains
/// what is wrong.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("has no scheme: it must start with `http://` or `https://`".into());
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "has the scheme `{scheme}`; etcd's clients speak `http` or `https`"
        ));
    }
    if let Some(c) = rest.chars().find(|c| matches!(c, '/' | '?' | '#' | '@')) {
        return Err(format!(
            "has `{c}` after the scheme: an endpoint is a scheme, a host and a port only"
        ));
    }
    if rest.starts_with('[') {
        return Err("is an IPv6 address; only IPv4 exists in version 1".into());
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err("has no port: etcd's client port is usually 2379".into());
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => {
            return Err(format!(
                "has the port `{port}`, not a number from 1 to 65535"
            ))
        }
    }
    if host.parse::<Ipv4Addr>().is_ok() || is_dns_name(host) {
        Ok(())
    } else if host.is_empty() {
        Err("has no host".into())
    } else {
        Err(format!(
            "has the host `{host}`, which is neither an IPv4 address nor a DNS name"
        ))
    }
}

/// Whether `s` is a DNS name: dot-separated labels of letters, digits and
/// `-`, none empty or longer than 63, at most 253 in all, not all digits.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Checks an etcd key prefix: it starts with `/`, its segments are
/// non-empty runs of letters, digits, `.`, `_` and `-` (no `.` or `..`
/// alone), it does not end with `/`, and it is at most
/// [`MAX_ETCD_PREFIX`] characters.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err("does not start with `/`".into());
    };
    if prefix.len() > MAX_ETCD_PREFIX {
        return Err(format!(
            "is {} characters long, more than {MAX_ETCD_PREFIX}",
            prefix.len()
        ));
    }
    if rest.is_empty() || rest.ends_with('/') {
        return Err("ends with `/`: keys are the prefix, `/`, and a name".into());
    }
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err("has an empty segment (`//`)".into());
        }
        if seg == "." || seg == ".." {
            return Err(format!("has the segment `{seg}`"));
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!("contains `{c}`"));
        }
    }
    Ok(())
}

impl Decoder<'_> {
    /// The `machines:` list, and where its key is.
    pub(super) fn machines(&mut self, top: &Obj) -> (Vec<RealMachine>, Option<At>) {
        let Some((node, path)) = top.get("machines") else {
            return (Vec::new(), None);
        };
        let key = top.key_at("machines");
        let items = self.list(node, &path, "`machines`");
        if items.is_empty() && matches!(node.value, Value::Seq(_) | Value::Null) {
            self.err(
                &at(node, &path),
                "`machines` is empty",
                "list the machines the testbed is spread over, e.g. `machines: [{name: m1, address: 10.0.0.1}]`, or leave `machines` out to run on one machine",
            );
        }
        if items.len() > MAX_MACHINES {
            self.err(
                &at(node, &path),
                format!(
                    "`machines` lists {} machines, more than {MAX_MACHINES}",
                    items.len()
                ),
                format!("a testbed is spread over at most {MAX_MACHINES} machines"),
            );
        }
        let machines = items
            .into_iter()
            .filter_map(|(n, p)| self.real_machine(n, &p))
            .collect();
        (machines, Some(key))
    }

    fn real_machine(&mut self, node: &Node, path: &str) -> Option<RealMachine> {
        let obj = self.obj(node, path, "a machine", MACHINE)?;
        let name = self
            .required(&obj, "name", "a machine", "m1")
            .and_then(|(n, p)| self.name(n, &p, "a machine's name", 63));
        let address = self
            .required(&obj, "address", "a machine", "10.0.0.1")
            .and_then(|(n, p)| {
                let help = "write the machine's IPv4 address on the network that joins the machines, e.g. 10.0.0.1";
                let a = self.parsed::<Ipv4Addr>(n, &p, "`address`", help)?;
                let ip = a.value;
                if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
                    self.err(
                        &a.at,
                        format!("`address` {ip} is not a unicast address another machine can reach"),
                        help,
                    );
                    return None;
                }
                Some(a)
            });
        Some(RealMachine {
            name: name?,
            address: address?,
            at: obj.at(),
        })
    }

    /// `machine:` of a node or host: a name, checked against `machines:`
    /// later.
    pub(super) fn machine_ref(&mut self, obj: &Obj) -> Option<Sp<String>> {
        obj.get("machine")
            .and_then(|(n, p)| self.name(n, &p, "`machine`", 63))
    }

    /// `cluster.registry`. A broken value stands in as the registry that
    /// fits the file's `etcd` (if any), so that no second error follows
    /// from the first.
    pub(super) fn registry(&mut self, obj: &Obj, here: &At) -> Sp<Registry> {
        let Some((n, p)) = obj.get("registry") else {
            return Sp::defaulted(Registry::File, here.clone());
        };
        let options = [("file", Registry::File), ("etcd", Registry::Etcd)];
        self.choice(n, &p, "`registry`", &options)
            .unwrap_or_else(|| {
                let fits = match obj.get("etcd") {
                    Some(_) => Registry::Etcd,
                    None => Registry::File,
                };
                Sp::new(fits, at(n, &p))
            })
    }

    /// `cluster.etcd`, when written.
    pub(super) fn etcd(&mut self, obj: &Obj) -> Option<Etcd> {
        let (node, path) = obj.get("etcd")?;
        let eobj = self.obj(node, &path, "`etcd`", ETCD)?;
        let mut key = obj.key_at("etcd");
        key.pos.len = "etcd".len();
        let (endpoints, listed) = match eobj.get("endpoints") {
            Some((n, p)) => self.endpoints(n, &p),
            None => (Vec::new(), 0),
        };
        let prefix = match eobj.get("prefix") {
            Some((n, p)) => self.text(n, &p, "`prefix`").and_then(|t| {
                match check_prefix(&t.value) {
                    Ok(()) => Some(t),
                    Err(why) => {
                        self.err(
                            &t.at,
                            format!("`prefix` `{}` {why}", t.value),
                            format!("an etcd key prefix is a path like flannel's default, {DEFAULT_ETCD_PREFIX}"),
                        );
                        None
                    }
                }
            }),
            None => None,
        }
        .unwrap_or_else(|| Sp::defaulted(DEFAULT_ETCD_PREFIX.into(), key.clone()));
        Some(Etcd {
            endpoints,
            listed,
            prefix,
            at: key,
        })
    }

    /// The valid endpoints, and how many were listed.
    fn endpoints(&mut self, node: &Node, path: &str) -> (Vec<Sp<String>>, usize) {
        let items = self.list(node, path, "`endpoints`");
        // A value that is not a list is its own error, not "no endpoints".
        let listed = match node.value {
            Value::Seq(_) | Value::Null => items.len(),
            _ => 1,
        };
        if items.len() > MAX_ETCD_ENDPOINTS {
            self.err(
                &at(node, path),
                format!(
                    "`endpoints` lists {} URLs, more than {MAX_ETCD_ENDPOINTS}",
                    items.len()
                ),
                "list a few members of the etcd cluster; its client finds the others",
            );
        }
        let mut out: Vec<Sp<String>> = Vec::new();
        for (n, p) in items {
            let Some(url) = self.text(n, &p, "an etcd endpoint") else {
                continue;
            };
            if let Err(why) = check_endpoint(&url.value) {
                let example = if url.value.contains("://") {
                    "http://10.0.0.1:2379".to_string()
                } else {
                    format!("http://{}", url.value)
                };
                self.err(
                    &url.at,
                    format!("the etcd endpoint `{}` {why}", url.value),
                    format!("an endpoint is etcd's client URL, `http://HOST:PORT` or `https://HOST:PORT`, e.g. {example}"),
                );
                continue;
            }
            if let Some(first) = out.iter().find(|e| e.value == url.value) {
                self.err(
                    &url.at,
                    format!(
                        "the etcd endpoint `{}` is listed twice (first on line {})",
                        url.value, first.at.pos.line
                    ),
                    "list each endpoint once",
                );
                continue;
            }
            out.push(url);
        }
        (out, listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_scheme_host_and_port() {
        for ok in [
            "http://10.0.0.1:2379",
            "https://10.0.0.1:2379",
            "http://etcd-1.lab.example:2379",
            "http://localhost:1",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("10.0.0.1:2379", "no scheme"),
            ("ftp://10.0.0.1:2379", "scheme `ftp`"),
            ("http://10.0.0.1", "no port"),
            ("http://10.0.0.1:0", "port `0`"),
            ("http://10.0.0.1:65536", "port `65536`"),
            ("http://10.0.0.1:x", "port `x`"),
            ("http://:2379", "no host"),
            ("http://10.0.0.1:2379/v3", "`/`"),
            ("http://user@10.0.0.1:2379", "`@`"),
            ("http://[::1]:2379", "IPv6"),
            ("http://10.0.0.256:2379", "neither"),
            ("http://a_b:2379", "neither"),
            ("http://-a:2379", "neither"),
        ] {
            let e = check_endpoint(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    /// A broken field is one error: endpoints that are not a list are not
    /// also "no endpoints".
    #[test]
    fn endpoints_that_are_not_a_list_are_one_error() {
        let yaml = "name: t\ncluster: {registry: etcd, etcd: {endpoints: 'http://10.0.0.1:2379'}}\nnodes: [{name: n1}]\n";
        let Err(crate::LoadError::Invalid { diagnostics, .. }) =
            crate::load_str("t.yaml", yaml.to_string())
        else {
            panic!("accepted");
        };
        let paths: Vec<&str> = diagnostics.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["cluster.etcd.endpoints"], "{diagnostics:?}");
    }

    #[test]
    fn prefixes_are_absolute_paths() {
        for ok in ["/coreos.com/network", "/a", "/lab-1/net_2"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("coreos.com/network", "start with `/`"),
            ("/", "ends with `/`"),
            ("/a/", "ends with `/`"),
            ("/a//b", "empty segment"),
            ("/a/../b", "`..`"),
            ("/a b", "contains ` `"),
        ] {
            let e = check_prefix(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_ETCD_PREFIX));
        assert!(check_prefix(&long).is_err());
    }
}
