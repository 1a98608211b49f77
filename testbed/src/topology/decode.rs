//! Turns the positioned YAML tree into the typed topology, checking every
//! field's shape and value: unknown fields (with "did you mean"), wrong
//! types, missing fields, names, ports, addresses and units. Every problem is
//! collected; a broken value is replaced by its default or its entry is left
//! out, so that one run reports everything. This module holds the decoder
//! and its field helpers; the top level is decoded in `top`, the sections
//! in `cluster`, `workload` (machines, pods, containers, controllers) and
//! `service`.

use crate::diag::{did_you_mean, At, Diagnostic, Diagnostics, Pos};
use crate::topology::model::*;
use crate::topology::yaml::{Key, Node, Value};
use std::collections::BTreeMap;
use std::str::FromStr;

mod cluster;
mod machines;
mod service;
mod top;
mod workload;

pub use cluster::{
    defaults, derived_lb_cidr, derived_subnet_len, lb_derivation, MIN_CONTAINER_LOG_MAX_SIZE,
    MTU_RANGE,
};
pub use machines::{
    check_endpoint, check_prefix, DEFAULT_ETCD_PREFIX, MAX_ETCD_ENDPOINTS, MAX_MACHINES,
};
pub use workload::MAX_REPLICAS;

/// Decodes a parsed topology file; problems go to `diags`.
pub fn decode(root: &Node, diags: &mut Diagnostics) -> Topology {
    Decoder::new(diags).topology(root)
}

pub(crate) struct Decoder<'d> {
    pub(crate) diags: &'d mut Diagnostics,
    /// Addresses for "e.g." in messages, from the file's own networks once
    /// its `cluster` section is read.
    examples: Examples,
}

/// Example addresses inside the cluster's networks.
struct Examples {
    /// A pod address of the first node's subnet.
    pod_ip: std::net::Ipv4Addr,
    /// A cluster IP.
    cluster_ip: std::net::Ipv4Addr,
}

impl Examples {
    fn of(
        pod_cidr: &overlay::Ipv4Net,
        subnet_len: u8,
        service_cidr: &overlay::Ipv4Net,
    ) -> Examples {
        let first = pod_cidr.subnet(subnet_len, 1).unwrap_or(*pod_cidr);
        Examples {
            pod_ip: first
                .nth(50.min(first.size() - 1))
                .unwrap_or(first.network()),
            cluster_ip: service_cidr
                .nth(10.min(service_cidr.size() - 1))
                .unwrap_or(service_cidr.network()),
        }
    }
}

/// A mapping whose keys were checked against the known fields.
pub(crate) struct Obj<'a> {
    pub(crate) entries: &'a [(Key, Node)],
    pub(crate) path: String,
    pub(crate) pos: Pos,
}

impl<'a> Obj<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<(&'a Node, String)> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, n)| (n, join(&self.path, key)))
    }

    pub(crate) fn at(&self) -> At {
        At::new(self.pos, self.path.clone())
    }

    pub(crate) fn key_at(&self, key: &str) -> At {
        let pos = self
            .entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map_or(self.pos, |(k, _)| k.pos);
        At::new(pos, join(&self.path, key))
    }
}

pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub(crate) fn at(node: &Node, path: &str) -> At {
    At::new(node.pos, path)
}

/// Whether `s` is a DNS label as Kubernetes names are: lowercase letters,
/// digits and `-`, starting with a letter, ending with a letter or digit.
pub fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Whether `s` is a valid label key or value (Kubernetes' rules: at most 63
/// of `[A-Za-z0-9._-]`, beginning and ending alphanumeric; keys may carry a
/// `prefix/`; values may be empty).
fn is_label_part(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    let b = s.as_bytes();
    b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl<'d> Decoder<'d> {
    /// A decoder whose problems go to `diags`.
    pub(crate) fn new(diags: &'d mut Diagnostics) -> Decoder<'d> {
        Decoder {
            diags,
            examples: Examples::of(
                &defaults::pod_cidr(),
                defaults::SUBNET_LEN,
                &defaults::service_cidr(),
            ),
        }
    }
}

impl Decoder<'_> {
    pub(crate) fn err(&mut self, at: &At, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::error(at, msg).help(help));
    }

    /// A mapping with only `known` fields; `what` names it in messages.
    pub(crate) fn obj<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        what: &str,
        known: &[&str],
    ) -> Option<Obj<'a>> {
        static EMPTY: &[(Key, Node)] = &[];
        let entries: &'a [(Key, Node)] = match &node.value {
            Value::Map(m) => m,
            Value::Null => EMPTY,
            other => {
                self.err(
                    &at(node, path),
                    format!("{what} must be a mapping of fields, but this is {}", other.describe()),
                    format!("write its fields indented below it, one `field: value` a line; the fields are: {}", known.join(", ")),
                );
                return None;
            }
        };
        for (k, _) in entries {
            if !known.contains(&k.name.as_str()) {
                let mut at = At::new(k.pos, join(path, &k.name));
                at.pos.len = k.name.chars().count().max(1);
                let help = match did_you_mean(&k.name, known) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("the fields of {what} are: {}", known.join(", ")),
                };
                self.err(&at, format!("unknown field `{}` in {what}", k.name), help);
            }
        }
        Some(Obj {
            entries,
            path: path.to_string(),
            pos: node.pos,
        })
    }

    pub(crate) fn required<'a>(
        &mut self,
        obj: &Obj<'a>,
        key: &str,
        what: &str,
        example: &str,
    ) -> Option<(&'a Node, String)> {
        match obj.get(key) {
            Some((n, p)) if n.value != Value::Null => Some((n, p)),
            found => {
                let at = match &found {
                    Some((n, p)) => At::new(n.pos, p.clone()),
                    None => At::new(obj.pos, join(&obj.path, key)),
                };
                self.err(
                    &at,
                    format!("{what} has no `{key}`, which is required"),
                    format!("add `{key}: {example}`"),
                );
                None
            }
        }
    }

    /// Any scalar, as text.
    pub(crate) fn text(&mut self, node: &Node, path: &str, what: &str) -> Option<Sp<String>> {
        match &node.value {
            Value::Scalar { text, .. } => Some(Sp::new(text.clone(), at(node, path))),
            other => {
                self.err(
                    &at(node, path),
                    format!(
                        "{what} must be a single value, but this is {}",
                        other.describe()
                    ),
                    "write it on the same line as its field, e.g. `name: web`",
                );
                None
            }
        }
    }

    /// A plain (unquoted) integer in `lo..=hi`.
    pub(crate) fn int(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        lo: i64,
        hi: i64,
        help: &str,
    ) -> Option<Sp<i64>> {
        let at = at(node, path);
        let n = match &node.value {
            Value::Scalar { text, plain: true } => text.parse::<i64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (lo..=hi).contains(&n) => Some(Sp::new(n, at)),
            Some(n) => {
                self.err(&at, format!("{what} {n} is out of range"), help);
                None
            }
            None => {
                self.err(
                    &at,
                    format!(
                        "{what} must be a whole number, but this is {}",
                        node.value.describe()
                    ),
                    help,
                );
                None
            }
        }
    }

    pub(crate) fn port(&mut self, node: &Node, path: &str, what: &str) -> Option<Sp<u16>> {
        if let Value::Scalar { text, .. } = &node.value {
            if !text.is_empty() && text.parse::<i64>().is_err() && is_dns_label(text, 15) {
                self.err(
                    &at(node, path),
                    format!("{what} `{text}` is a port name; only numbers are supported"),
                    "write the container's port number, e.g. 8080",
                );
                return None;
            }
        }
        self.int(
            node,
            path,
            what,
            1,
            65535,
            "a port is a number from 1 to 65535",
        )
        .map(|n| Sp::new(n.value as u16, n.at))
    }

    /// A value parsed with `FromStr`, whose error text explains the fix.
    pub(crate) fn parsed<T: FromStr>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        help: &str,
    ) -> Option<Sp<T>>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(node, path, what)?;
        match text.value.parse::<T>() {
            Ok(v) => Some(Sp::new(v, text.at)),
            Err(e) => {
                self.err(&text.at, format!("{what} is invalid: {e}"), help);
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<Sp<T>> {
        let text = self.text(node, path, what)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text.value) {
            return Some(Sp::new(*v, text.at));
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let help = match did_you_mean(&text.value, &names) {
            Some(s) => format!("did you mean `{s}`? The choices are: {}", names.join(", ")),
            None => format!("the choices are: {}", names.join(", ")),
        };
        self.err(
            &text.at,
            format!("{what} `{}` is not one of the choices", text.value),
            help,
        );
        None
    }

    /// A name that is a DNS label (at most `max` characters).
    pub(crate) fn name(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        max: usize,
    ) -> Option<Sp<String>> {
        let text = self.text(node, path, what)?;
        if is_dns_label(&text.value, max) {
            return Some(text);
        }
        let v = &text.value;
        let why = if v.is_empty() {
            "is empty".to_string()
        } else if v.chars().count() > max {
            format!("is {} characters long, more than {max}", v.chars().count())
        } else if !v.starts_with(|c: char| c.is_ascii_lowercase()) {
            "does not start with a lowercase letter".to_string()
        } else if v.ends_with('-') {
            "ends with `-`".to_string()
        } else {
            let bad: String = v
                .chars()
                .filter(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
                .collect();
            format!("contains `{bad}`")
        };
        let suggestion: String = v
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let suggestion = suggestion.trim_matches('-');
        let mut help = format!(
            "names are used in kernel object and file names: use lowercase letters, digits and `-`, start with a letter, end with a letter or digit, at most {max} characters"
        );
        if is_dns_label(suggestion, max) && suggestion != v {
            help.push_str(&format!(", e.g. `{suggestion}`"));
        }
        self.err(&text.at, format!("{what} `{v}` {why}"), help);
        None
    }

    pub(crate) fn list<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        what: &str,
    ) -> Vec<(&'a Node, String)> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (n, format!("{path}[{i}]")))
                .collect(),
            Value::Null => Vec::new(),
            other => {
                self.err(
                    &at(node, path),
                    format!("{what} must be a list, but this is {}", other.describe()),
                    "write one entry a line, each starting with `- `",
                );
                Vec::new()
            }
        }
    }

    pub(crate) fn labels(&mut self, obj: &Obj, key: &str, what: &str) -> Labels {
        let mut labels = Labels {
            map: BTreeMap::new(),
            at: obj.key_at(key),
        };
        let Some((node, path)) = obj.get(key) else {
            return labels;
        };
        labels.at = at(node, &path);
        let entries = match &node.value {
            Value::Map(m) => m,
            Value::Null => return labels,
            other => {
                self.err(
                    &labels.at,
                    format!(
                        "{what} must be a mapping of key: value pairs, but this is {}",
                        other.describe()
                    ),
                    "write e.g. `{app: web}`",
                );
                return labels;
            }
        };
        for (k, v) in entries {
            let kat = At::new(k.pos, join(&path, &k.name));
            let (prefix, name) = k.name.rsplit_once('/').unwrap_or(("", &k.name));
            if !is_label_part(name, false)
                || (!k.name.starts_with(name) && !is_label_part(prefix, false))
            {
                self.err(
                    &kat,
                    format!("label key `{}` is not valid", k.name),
                    "a label key is at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, optionally after a `prefix/`",
                );
                continue;
            }
            let Some(value) = self.text(v, &kat.path, "a label value") else {
                continue;
            };
            if !is_label_part(&value.value, true) {
                self.err(
                    &value.at,
                    format!("label value `{}` is not valid", value.value),
                    "a label value is at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit",
                );
                continue;
            }
            labels.map.insert(k.name.clone(), value.value);
        }
        labels
    }
}
