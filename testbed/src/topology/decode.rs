//! Turns the positioned YAML tree into the typed topology, checking every
//! field's shape and value: unknown fields (with "did you mean"), wrong
//! types, missing fields, names, ports, addresses and units. Every problem is
//! collected; a broken value is replaced by its default or its entry is left
//! out, so that one run reports everything.

use crate::diag::{did_you_mean, At, Diagnostic, Diagnostics, Pos};
use crate::topology::model::*;
use crate::topology::yaml::{Key, Node, Value};
use overlay::{Backend, Ipv4Net};
use proxy::{Mode, Protocol, ServiceType, SessionAffinity};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The defaults of the `cluster` section.
pub mod defaults {
    /// `cluster.podCIDR`.
    pub const POD_CIDR: &str = "10.244.0.0/16";
    /// `cluster.subnetLen`.
    pub const SUBNET_LEN: u8 = 24;
    /// `cluster.serviceCIDR`.
    pub const SERVICE_CIDR: &str = "10.96.0.0/16";
    /// `cluster.underlayCIDR`.
    pub const UNDERLAY_CIDR: &str = "192.168.96.0/24";
    /// `cluster.loadBalancerCIDR`.
    pub const LB_CIDR: &str = "192.168.96.240/28";
    /// `cluster.mtu`.
    pub const MTU: u32 = 1500;
}

/// Limits of `cluster.mtu`.
pub const MTU_RANGE: (u32, u32) = (576, 9000);
/// The largest number of replicas one controller may ask for.
pub const MAX_REPLICAS: u32 = 10_000;

/// Decodes a parsed topology file; problems go to `diags`.
pub fn decode(root: &Node, diags: &mut Diagnostics) -> Topology {
    let mut d = Decoder { diags };
    d.topology(root)
}

struct Decoder<'d> {
    diags: &'d mut Diagnostics,
}

/// A mapping whose keys were checked against the known fields.
struct Obj<'a> {
    entries: &'a [(Key, Node)],
    path: String,
    pos: Pos,
}

impl<'a> Obj<'a> {
    fn get(&self, key: &str) -> Option<(&'a Node, String)> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, n)| (n, join(&self.path, key)))
    }

    fn at(&self) -> At {
        At::new(self.pos, self.path.clone())
    }

    fn key_at(&self, key: &str) -> At {
        let pos = self
            .entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map_or(self.pos, |(k, _)| k.pos);
        At::new(pos, join(&self.path, key))
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn at(node: &Node, path: &str) -> At {
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

const TOP: &[&str] = &[
    "name",
    "seed",
    "cluster",
    "nodes",
    "hosts",
    "pods",
    "replicationControllers",
    "services",
];
const CLUSTER: &[&str] = &[
    "podCIDR",
    "subnetLen",
    "serviceCIDR",
    "underlayCIDR",
    "loadBalancerCIDR",
    "mtu",
    "overlay",
    "proxy",
];
const NODE: &[&str] = &["name", "labels", "link"];
const HOST: &[&str] = &["name", "link", "containers"];
const LINK: &[&str] = &["delay", "jitter", "loss", "duplicate", "reorder", "rate"];
const POD: &[&str] = &[
    "name",
    "namespace",
    "node",
    "labels",
    "network",
    "ip",
    "volumes",
    "containers",
];
const TEMPLATE: &[&str] = &["labels", "node", "network", "volumes", "containers"];
const CONTAINER: &[&str] = &[
    "name",
    "command",
    "env",
    "workingDir",
    "restartPolicy",
    "volumeMounts",
    "ready",
];
const RC: &[&str] = &["name", "namespace", "replicas", "selector", "template"];
const SERVICE: &[&str] = &[
    "name",
    "namespace",
    "selector",
    "type",
    "clusterIP",
    "sessionAffinity",
    "ports",
];
const PORT: &[&str] = &["name", "port", "targetPort", "protocol", "nodePort"];

impl Decoder<'_> {
    fn err(&mut self, at: &At, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::error(at, msg).help(help));
    }

    /// A mapping with only `known` fields; `what` names it in messages.
    fn obj<'a>(
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

    fn required<'a>(
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
    fn text(&mut self, node: &Node, path: &str, what: &str) -> Option<Sp<String>> {
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
    fn int(
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

    fn port(&mut self, node: &Node, path: &str, what: &str) -> Option<Sp<u16>> {
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
    fn parsed<T: FromStr>(
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

    fn cidr(&mut self, obj: &Obj, key: &str, default: &str) -> Sp<Ipv4Net> {
        let parsed = obj.get(key).and_then(|(n, p)| {
            self.parsed::<Ipv4Net>(n, &p, &format!("`{key}`"), "write an IPv4 network as ADDRESS/LENGTH with the host bits zero, e.g. 10.244.0.0/16")
        });
        parsed.unwrap_or_else(|| {
            let value = default
                .parse()
                .unwrap_or(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0));
            Sp::new(value, obj.key_at(key))
        })
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(
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
    fn name(&mut self, node: &Node, path: &str, what: &str, max: usize) -> Option<Sp<String>> {
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

    fn list<'a>(&mut self, node: &'a Node, path: &str, what: &str) -> Vec<(&'a Node, String)> {
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

    fn labels(&mut self, obj: &Obj, key: &str, what: &str) -> Labels {
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

    fn topology(&mut self, root: &Node) -> Topology {
        let fallback = Obj {
            entries: &[],
            path: String::new(),
            pos: root.pos,
        };
        let obj = if root.value == Value::Null {
            self.err(
                &at(root, ""),
                "the file is empty",
                "a topology needs at least `name:` and `nodes:`; see topologies/minimal.yaml",
            );
            fallback
        } else {
            self.obj(root, "", "the topology", TOP).unwrap_or(fallback)
        };
        let name = self
            .required(&obj, "name", "the topology", "demo")
            .and_then(|(n, p)| {
                let t = self.text(n, &p, "the topology's `name`")?;
                if crate::state::check_name(&t.value).is_ok() {
                    Some(t)
                } else {
                    self.err(
                        &t.at,
                        format!("the topology's name `{}` is not 1-12 characters of a-z, 0-9 and `-` starting with a letter", t.value),
                        "the name prefixes every kernel object the testbed creates, so it must be short and plain, e.g. `demo` or `lab-1`",
                    );
                    None
                }
            })
            .unwrap_or_else(|| Sp::new("invalid".into(), obj.key_at("name")));
        let seed = obj
            .get("seed")
            .and_then(|(n, p)| {
                if let Value::Scalar { text, plain: true } = &n.value {
                    if let Ok(v) = text.parse::<u64>() {
                        return Some(v);
                    }
                }
                self.err(
                    &at(n, &p),
                    format!("`seed` must be a whole number from 0 to {}, but this is {}", u64::MAX, n.value.describe()),
                    "write e.g. `seed: 42`; the same seed gives the same random choices on every run",
                );
                None
            })
            .unwrap_or(0);
        let cluster = self.cluster(&obj);
        let nodes = match self.required(&obj, "nodes", "the topology", "[{name: node1}]") {
            Some((n, p)) => {
                let items = self.list(n, &p, "`nodes`");
                if items.is_empty() && matches!(n.value, Value::Seq(_)) {
                    self.err(
                        &at(n, &p),
                        "`nodes` is empty",
                        "a cluster needs at least one node, e.g. `nodes: [{name: node1}]`",
                    );
                }
                items
                    .into_iter()
                    .filter_map(|(n, p)| self.machine(n, &p, true))
                    .collect()
            }
            None => Vec::new(),
        };
        let hosts = self.section(&obj, "hosts", |d, n, p| d.machine(n, p, false));
        let mut pods: Vec<Pod> = self.section(&obj, "pods", |d, n, p| d.pod(n, p));
        let controllers =
            self.section(&obj, "replicationControllers", |d, n, p| d.controller(n, p));
        let services = self.section(&obj, "services", |d, n, p| d.service(n, p));
        for rc in &controllers {
            for i in 0..rc.replicas.value {
                let mut pod = rc.template.clone();
                pod.name = Sp::new(format!("{}-{i}", rc.name.value), rc.name.at.clone());
                pod.owner = Some(rc.name.value.clone());
                pods.push(pod);
            }
        }
        Topology {
            name,
            seed,
            cluster,
            nodes,
            hosts,
            pods,
            controllers,
            services,
        }
    }

    fn section<T>(
        &mut self,
        obj: &Obj,
        key: &str,
        mut f: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Vec<T> {
        let Some((node, path)) = obj.get(key) else {
            return Vec::new();
        };
        self.list(node, &path, &format!("`{key}`"))
            .into_iter()
            .filter_map(|(n, p)| f(self, n, &p))
            .collect()
    }

    fn cluster(&mut self, top: &Obj) -> Cluster {
        let (node, path) = match top.get("cluster") {
            Some((n, p)) => (Some(n), p),
            None => (None, "cluster".to_string()),
        };
        let obj = node
            .and_then(|n| self.obj(n, &path, "`cluster`", CLUSTER))
            .unwrap_or(Obj {
                entries: &[],
                path: path.clone(),
                pos: top.key_at("cluster").pos,
            });
        let subnet_len = obj
            .get("subnetLen")
            .and_then(|(n, p)| {
                self.int(
                    n,
                    &p,
                    "`subnetLen`",
                    0,
                    32,
                    "subnetLen is a prefix length from 2 more than podCIDR's up to 30, e.g. 24",
                )
            })
            .map(|s| Sp::new(s.value as u8, s.at))
            .unwrap_or_else(|| Sp::new(defaults::SUBNET_LEN, obj.key_at("subnetLen")));
        let mtu = obj
            .get("mtu")
            .and_then(|(n, p)| {
                self.int(
                    n,
                    &p,
                    "`mtu`",
                    i64::from(MTU_RANGE.0),
                    i64::from(MTU_RANGE.1),
                    "the underlay MTU is from 576 to 9000 bytes; 1500 is Ethernet's",
                )
            })
            .map(|s| Sp::new(s.value as u32, s.at))
            .unwrap_or_else(|| Sp::new(defaults::MTU, obj.key_at("mtu")));
        let overlay = obj
            .get("overlay")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`overlay`",
                    &[
                        ("udp", Backend::Udp),
                        ("vxlan", Backend::Vxlan),
                        ("host-gw", Backend::HostGw),
                    ],
                )
            })
            .unwrap_or_else(|| Sp::new(Backend::Udp, obj.key_at("overlay")));
        let proxy = obj
            .get("proxy")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`proxy`",
                    &[
                        ("iptables", Mode::Iptables),
                        ("nftables", Mode::Nftables),
                        ("userspace", Mode::Userspace),
                    ],
                )
            })
            .unwrap_or_else(|| Sp::new(Mode::Iptables, obj.key_at("proxy")));
        Cluster {
            pod_cidr: self.cidr(&obj, "podCIDR", defaults::POD_CIDR),
            subnet_len,
            service_cidr: self.cidr(&obj, "serviceCIDR", defaults::SERVICE_CIDR),
            underlay_cidr: self.cidr(&obj, "underlayCIDR", defaults::UNDERLAY_CIDR),
            lb_cidr: self.cidr(&obj, "loadBalancerCIDR", defaults::LB_CIDR),
            mtu,
            overlay,
            proxy,
        }
    }

    fn machine(&mut self, node: &Node, path: &str, is_node: bool) -> Option<Machine> {
        let what = if is_node { "a node" } else { "a host" };
        let obj = self.obj(node, path, what, if is_node { NODE } else { HOST })?;
        let name = self
            .required(&obj, "name", what, if is_node { "node1" } else { "client" })
            .and_then(|(n, p)| self.name(n, &p, &format!("{what}'s name"), 63));
        let labels = self.labels(&obj, "labels", "`labels`");
        let link = obj.get("link").and_then(|(n, p)| self.link(n, &p));
        let containers = obj
            .get("containers")
            .map(|(n, p)| self.containers(n, &p, &[]))
            .unwrap_or_default();
        Some(Machine {
            name: name?,
            labels,
            link,
            containers,
            at: obj.at(),
        })
    }

    fn link(&mut self, node: &Node, path: &str) -> Option<Link> {
        let obj = self.obj(node, path, "`link`", LINK)?;
        let mut link = Link {
            at: obj.at(),
            ..Link::default()
        };
        let dur_help = "a duration is a number and a unit: us, ms or s, e.g. 10ms or 1.5ms";
        let pct_help = "a percentage is a number from 0 to 100 followed by %, e.g. 1% or 0.1%";
        for key in ["delay", "jitter"] {
            let v = obj
                .get(key)
                .and_then(|(n, p)| self.parsed(n, &p, &format!("`{key}`"), dur_help));
            if key == "delay" {
                link.delay = v;
            } else {
                link.jitter = v;
            }
        }
        link.loss = obj
            .get("loss")
            .and_then(|(n, p)| self.parsed(n, &p, "`loss`", pct_help));
        link.duplicate = obj
            .get("duplicate")
            .and_then(|(n, p)| self.parsed(n, &p, "`duplicate`", pct_help));
        link.reorder = obj
            .get("reorder")
            .and_then(|(n, p)| self.parsed(n, &p, "`reorder`", pct_help));
        link.rate = obj.get("rate").and_then(|(n, p)| {
            self.parsed(
                n,
                &p,
                "`rate`",
                "a rate is a number and a unit: kbit, mbit or gbit (bits per second), e.g. 100mbit",
            )
        });
        if obj.get("delay").is_none() {
            for (key, why) in [
                ("jitter", "jitter varies the delay"),
                ("reorder", "reordering lets some packets skip the delay"),
            ] {
                if obj.get(key).is_some() {
                    self.err(
                        &obj.key_at(key),
                        format!("`{key}` needs a `delay`"),
                        format!("{why}, so add one to this link, e.g. `delay: 10ms`"),
                    );
                }
            }
        }
        Some(link)
    }

    fn pod(&mut self, node: &Node, path: &str) -> Option<Pod> {
        let obj = self.obj(node, path, "a pod", POD)?;
        let name = self
            .required(&obj, "name", "a pod", "web")
            .and_then(|(n, p)| self.name(n, &p, "the pod's name", 63));
        let mut pod = self.pod_body(&obj, name.is_some())?;
        pod.name = name?;
        pod.namespace = self.namespace(&obj);
        pod.ip = obj.get("ip").and_then(|(n, p)| {
            self.parsed::<Ipv4Addr>(
                n,
                &p,
                "`ip`",
                "write an IPv4 address inside the node's pod subnet, e.g. 10.244.1.50",
            )
        });
        Some(pod)
    }

    fn namespace(&mut self, obj: &Obj) -> Sp<String> {
        obj.get("namespace")
            .and_then(|(n, p)| self.name(n, &p, "the namespace", 63))
            .unwrap_or_else(|| Sp::new("default".into(), obj.key_at("namespace")))
    }

    /// The fields a pod shares with a controller's template.
    fn pod_body(&mut self, obj: &Obj, keep: bool) -> Option<Pod> {
        let network = obj
            .get("network")
            .and_then(|(n, p)| {
                let t = self.text(n, &p, "`network`")?;
                let mode = match t.value.as_str() {
                    "bridge" => Network::Bridge,
                    "host" => Network::Host,
                    "none" => Network::None,
                    v => match v.strip_prefix("container:") {
                        Some(target) if is_dns_label(target, 63) => Network::Container(target.to_string()),
                        Some(target) => {
                            self.err(&t.at, format!("`container:{target}` does not name a pod"), "write `container:` followed by the name of a pod in the same namespace, e.g. `container:web`");
                            return None;
                        }
                        None => {
                            let help = match did_you_mean(v, &["bridge", "host", "none"]) {
                                Some(s) => format!("did you mean `{s}`? The choices are bridge, host, none and container:<pod>"),
                                None => "the choices are bridge, host, none and container:<pod>".into(),
                            };
                            self.err(&t.at, format!("`network` `{v}` is not a network mode"), help);
                            return None;
                        }
                    },
                };
                Some(Sp::new(mode, t.at))
            })
            .unwrap_or_else(|| Sp::new(Network::Bridge, obj.key_at("network")));
        let node = obj
            .get("node")
            .and_then(|(n, p)| self.name(n, &p, "`node`", 63));
        let labels = self.labels(obj, "labels", "`labels`");
        let mut volumes: Vec<Sp<String>> = Vec::new();
        if let Some((n, p)) = obj.get("volumes") {
            for (vn, vp) in self.list(n, &p, "`volumes`") {
                let Some(vobj) = self.obj(vn, &vp, "a volume", &["name"]) else {
                    continue;
                };
                let Some(name) = self
                    .required(&vobj, "name", "a volume", "data")
                    .and_then(|(n, p)| self.name(n, &p, "the volume's name", 63))
                else {
                    continue;
                };
                if let Some(first) = volumes.iter().find(|v| v.value == name.value) {
                    let line = first.at.pos.line;
                    self.err(
                        &name.at,
                        format!(
                            "the volume `{}` is declared twice (first on line {line})",
                            name.value
                        ),
                        "give each volume of a pod its own name",
                    );
                    continue;
                }
                volumes.push(name);
            }
        }
        let names: Vec<String> = volumes.iter().map(|v| v.value.clone()).collect();
        let containers = match self.required(
            obj,
            "containers",
            "a pod",
            "[{name: main, command: [sleep, infinity]}]",
        ) {
            Some((n, p)) => {
                let list = self.containers(n, &p, &names);
                if matches!(&n.value, Value::Seq(items) if items.is_empty()) {
                    self.err(&at(n, &p), "`containers` is empty", "a pod runs at least one container, e.g. `- {name: main, command: [sleep, infinity]}`");
                }
                list
            }
            None => Vec::new(),
        };
        keep.then(|| Pod {
            name: Sp::new(String::new(), obj.at()),
            namespace: Sp::new("default".into(), obj.key_at("namespace")),
            node,
            labels,
            network,
            ip: None,
            volumes,
            containers,
            at: obj.at(),
            owner: None,
        })
    }

    fn containers(&mut self, node: &Node, path: &str, volumes: &[String]) -> Vec<Container> {
        let mut out: Vec<Container> = Vec::new();
        for (n, p) in self.list(node, path, "`containers`") {
            let Some(c) = self.container(n, &p, volumes) else {
                continue;
            };
            if let Some(first) = out.iter().find(|o| o.name.value == c.name.value) {
                let line = first.name.at.pos.line;
                self.err(
                    &c.name.at,
                    format!(
                        "the container name `{}` is used twice in this pod (first on line {line})",
                        c.name.value
                    ),
                    "give each container of a pod its own name",
                );
                continue;
            }
            out.push(c);
        }
        out
    }

    fn container(&mut self, node: &Node, path: &str, volumes: &[String]) -> Option<Container> {
        let obj = self.obj(node, path, "a container", CONTAINER)?;
        let name = self
            .required(&obj, "name", "a container", "main")
            .and_then(|(n, p)| self.name(n, &p, "the container's name", 63));
        let command = self
            .required(&obj, "command", "a container", "[sleep, infinity]")
            .and_then(|(n, p)| {
                let at = at(n, &p);
                let Value::Seq(items) = &n.value else {
                    let help = match &n.value {
                        Value::Scalar { text, .. } => format!(
                            "write the program and its arguments as a list, e.g. `command: [{}]`, or `command: [sh, -c, \"{text}\"]` for a shell line",
                            text.split_whitespace().collect::<Vec<_>>().join(", ")
                        ),
                        _ => "write the program and its arguments as a list, e.g. `command: [sleep, infinity]`".into(),
                    };
                    self.err(&at, format!("`command` must be a list, but this is {}", n.value.describe()), help);
                    return None;
                };
                if items.is_empty() {
                    self.err(&at, "`command` is empty", "name the program to run and its arguments, e.g. `command: [sleep, infinity]`");
                    return None;
                }
                let args: Vec<String> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| self.text(a, &format!("{p}[{i}]"), "a command argument").map(|t| t.value))
                    .collect();
                (args.len() == items.len()).then(|| Sp::new(args, at))
            });
        let mut env = BTreeMap::new();
        if let Some((n, p)) = obj.get("env") {
            match &n.value {
                Value::Map(m) => {
                    for (k, v) in m {
                        let kp = join(&p, &k.name);
                        let valid = !k.name.is_empty()
                            && !k.name.starts_with(|c: char| c.is_ascii_digit())
                            && k.name.chars().all(|c| {
                                c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'
                            });
                        if !valid {
                            self.err(&At::new(k.pos, kp), format!("`{}` is not a valid environment variable name", k.name), "use letters, digits and `_`, not starting with a digit, e.g. LOG_LEVEL");
                            continue;
                        }
                        let value = match &v.value {
                            Value::Null => Some(String::new()),
                            _ => self.text(v, &kp, "an environment value").map(|t| t.value),
                        };
                        if let Some(value) = value {
                            env.insert(k.name.clone(), value);
                        }
                    }
                }
                Value::Null => {}
                other => self.err(
                    &at(n, &p),
                    format!(
                        "`env` must be a mapping of NAME: value, but this is {}",
                        other.describe()
                    ),
                    "write e.g. `env: {LOG_LEVEL: debug}`",
                ),
            }
        }
        let working_dir = obj
            .get("workingDir")
            .and_then(|(n, p)| self.abs_path(n, &p, "`workingDir`"));
        let restart_policy = obj
            .get("restartPolicy")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`restartPolicy`",
                    &[
                        ("Always", RestartPolicy::Always),
                        ("OnFailure", RestartPolicy::OnFailure),
                        ("Never", RestartPolicy::Never),
                    ],
                )
            })
            .map_or(RestartPolicy::Always, |s| s.value);
        let mut mounts: Vec<Mount> = Vec::new();
        if let Some((n, p)) = obj.get("volumeMounts") {
            for (mn, mp) in self.list(n, &p, "`volumeMounts`") {
                let Some(mobj) = self.obj(mn, &mp, "a volume mount", &["name", "mountPath"]) else {
                    continue;
                };
                let vname = self
                    .required(&mobj, "name", "a volume mount", "data")
                    .and_then(|(n, p)| self.text(n, &p, "the volume's name"));
                let mpath = self
                    .required(&mobj, "mountPath", "a volume mount", "/data")
                    .and_then(|(n, p)| self.abs_path(n, &p, "`mountPath`"));
                let (Some(vname), Some(mpath)) = (vname, mpath) else {
                    continue;
                };
                if !volumes.contains(&vname.value) {
                    let known: Vec<&str> = volumes.iter().map(String::as_str).collect();
                    let help = match did_you_mean(&vname.value, &known) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if known.is_empty() => format!(
                            "declare it in the pod: `volumes: [{{name: {}}}]`",
                            vname.value
                        ),
                        None => format!("the pod's volumes are: {}", known.join(", ")),
                    };
                    self.err(
                        &vname.at,
                        format!("the pod has no volume named `{}`", vname.value),
                        help,
                    );
                    continue;
                }
                if let Some(first) = mounts.iter().find(|m| m.path.value == mpath.value) {
                    let line = first.path.at.pos.line;
                    self.err(
                        &mpath.at,
                        format!(
                            "`{}` is mounted twice in this container (first on line {line})",
                            mpath.value
                        ),
                        "mount each volume at its own path",
                    );
                    continue;
                }
                mounts.push(Mount {
                    name: vname,
                    path: mpath,
                });
            }
        }
        let ready_tcp = obj.get("ready").and_then(|(n, p)| {
            let robj = self.obj(n, &p, "`ready`", &["tcp"])?;
            let (tn, tp) = self.required(&robj, "tcp", "`ready`", "8080")?;
            self.port(tn, &tp, "the readiness port")
        });
        Some(Container {
            name: name?,
            command: command?,
            env,
            working_dir,
            restart_policy,
            mounts,
            ready_tcp,
            at: obj.at(),
        })
    }

    fn abs_path(&mut self, node: &Node, path: &str, what: &str) -> Option<Sp<String>> {
        let t = self.text(node, path, what)?;
        if !t.value.starts_with('/') {
            self.err(
                &t.at,
                format!("{what} `{}` is not an absolute path", t.value),
                format!(
                    "write a path starting with `/`, e.g. `/{}`",
                    t.value.trim_start_matches("./")
                ),
            );
            return None;
        }
        if t.value.split('/').any(|c| c == "..") || t.value.contains('\0') {
            self.err(
                &t.at,
                format!("{what} `{}` contains `..`", t.value),
                "write the path without `..` components",
            );
            return None;
        }
        Some(t)
    }

    fn controller(&mut self, node: &Node, path: &str) -> Option<Controller> {
        let obj = self.obj(node, path, "a replication controller", RC)?;
        let name = self
            .required(&obj, "name", "a replication controller", "web")
            .and_then(|(n, p)| self.name(n, &p, "the replication controller's name", 57));
        let namespace = self.namespace(&obj);
        let replicas = self
            .required(&obj, "replicas", "a replication controller", "3")
            .and_then(|(n, p)| {
                self.int(
                    n,
                    &p,
                    "`replicas`",
                    0,
                    i64::from(MAX_REPLICAS),
                    "replicas is a whole number from 0 to 10000",
                )
            })
            .map(|s| Sp::new(s.value as u32, s.at));
        let selector = self.labels(&obj, "selector", "`selector`");
        if obj.get("selector").is_none() {
            self.err(&obj.key_at("selector"), "a replication controller has no `selector`, which is required", "add the labels that identify its pods, e.g. `selector: {app: web}`, the same as in the template's labels");
        }
        let template = self
            .required(&obj, "template", "a replication controller", "{labels: {app: web}, containers: [...]}")
            .and_then(|(n, p)| {
                if let Value::Map(m) = &n.value {
                    for (k, _) in m {
                        if k.name == "name" || k.name == "ip" || k.name == "namespace" {
                            let why = match k.name.as_str() {
                                "name" => "the controller names its pods `<controller>-0`, `<controller>-1`, ...",
                                "ip" => "every replica would get the same address",
                                _ => "the pods take the controller's namespace",
                            };
                            self.err(&At::new(k.pos, join(&p, &k.name)), format!("a template cannot set `{}`: {why}", k.name), format!("remove `{}` from the template", k.name));
                        }
                    }
                }
                let tobj = self.obj(n, &p, "a pod template", &[TEMPLATE, &["name", "ip", "namespace"]].concat())?;
                self.pod_body(&tobj, true)
            });
        let (name, replicas, mut template) = (name?, replicas?, template?);
        template.namespace = namespace.clone();
        if obj.get("selector").is_some() && !template.labels.matches(&selector) {
            let missing: Vec<String> = selector
                .map
                .iter()
                .filter(|(k, v)| template.labels.map.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            self.err(&selector.at, format!("the selector does not match the template's labels: the template lacks {}", missing.join(", ")), "every label of the selector must be among `template.labels`, or the controller would not own its own pods");
        }
        if selector.map.is_empty() && obj.get("selector").is_some() {
            self.err(&selector.at, "the selector is empty", "give at least one label, e.g. `selector: {app: web}`, also set in the template's labels");
        }
        Some(Controller {
            name,
            namespace,
            replicas,
            selector,
            template,
            at: obj.at(),
        })
    }

    fn service(&mut self, node: &Node, path: &str) -> Option<Service> {
        let obj = self.obj(node, path, "a service", SERVICE)?;
        let name = self
            .required(&obj, "name", "a service", "web")
            .and_then(|(n, p)| self.name(n, &p, "the service's name", 63));
        let namespace = self.namespace(&obj);
        let selector = self.labels(&obj, "selector", "`selector`");
        if obj.get("selector").is_none() {
            self.err(
                &obj.key_at("selector"),
                "a service has no `selector`, which is required",
                "add the labels of the pods that serve it, e.g. `selector: {app: web}`",
            );
        }
        let kind = obj
            .get("type")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`type`",
                    &[
                        ("ClusterIP", ServiceType::ClusterIP),
                        ("NodePort", ServiceType::NodePort),
                        ("LoadBalancer", ServiceType::LoadBalancer),
                    ],
                )
            })
            .unwrap_or_else(|| Sp::new(ServiceType::ClusterIP, obj.key_at("type")));
        let cluster_ip = obj.get("clusterIP").and_then(|(n, p)| {
            self.parsed::<Ipv4Addr>(
                n,
                &p,
                "`clusterIP`",
                "write an IPv4 address inside serviceCIDR, e.g. 10.96.0.10",
            )
        });
        let affinity = obj
            .get("sessionAffinity")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`sessionAffinity`",
                    &[
                        ("None", SessionAffinity::None),
                        ("ClientIP", SessionAffinity::ClientIP),
                    ],
                )
            })
            .map_or(SessionAffinity::None, |s| s.value);
        let mut ports: Vec<Port> = Vec::new();
        if let Some((n, p)) =
            self.required(&obj, "ports", "a service", "[{port: 80, targetPort: 8080}]")
        {
            let items = self.list(n, &p, "`ports`");
            if items.is_empty() && matches!(n.value, Value::Seq(_)) {
                self.err(
                    &at(n, &p),
                    "`ports` is empty",
                    "a service needs at least one port, e.g. `- {port: 80, targetPort: 8080}`",
                );
            }
            let several = items.len() > 1;
            for (pn, pp) in items {
                if let Some(port) = self.service_port(pn, &pp, kind.value, several) {
                    if let Some(first) = ports
                        .iter()
                        .find(|o| o.port.value == port.port.value && o.protocol == port.protocol)
                    {
                        let line = first.port.at.pos.line;
                        self.err(&port.port.at, format!("port {}/{} is declared twice in this service (first on line {line})", port.port.value, port.protocol), "give each port of a service its own number, or a different protocol");
                        continue;
                    }
                    if let (Some(a), Some(b)) = (
                        &port.name,
                        ports.iter().find(|o| {
                            o.name.as_ref().map(|n| &n.value)
                                == port.name.as_ref().map(|n| &n.value)
                        }),
                    ) {
                        let line = b.at.pos.line;
                        self.err(&a.at, format!("the port name `{}` is used twice in this service (first on line {line})", a.value), "give each port of a service its own name");
                        continue;
                    }
                    ports.push(port);
                }
            }
        }
        Some(Service {
            name: name?,
            namespace,
            selector,
            kind,
            cluster_ip,
            affinity,
            ports,
            at: obj.at(),
        })
    }

    fn service_port(
        &mut self,
        node: &Node,
        path: &str,
        kind: ServiceType,
        several: bool,
    ) -> Option<Port> {
        let obj = self.obj(node, path, "a service port", PORT)?;
        let name = match obj.get("name") {
            Some((n, p)) => self.name(n, &p, "the port's name", 15),
            None => {
                if several {
                    self.err(
                        &obj.key_at("name"),
                        "this port has no `name`; a service with several ports must name each",
                        "add e.g. `name: http`",
                    );
                }
                None
            }
        };
        let port = self
            .required(&obj, "port", "a service port", "80")
            .and_then(|(n, p)| self.port(n, &p, "`port`"));
        let target_port = match obj.get("targetPort") {
            Some((n, p)) => self.port(n, &p, "`targetPort`"),
            None => port.clone(),
        };
        let protocol = obj
            .get("protocol")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`protocol`",
                    &[("TCP", Protocol::TCP), ("UDP", Protocol::UDP)],
                )
            })
            .map_or(Protocol::TCP, |s| s.value);
        let node_port = obj.get("nodePort").and_then(|(n, p)| {
            let np = self.int(
                n,
                &p,
                "`nodePort`",
                30000,
                32767,
                "a nodePort is from 30000 to 32767, or leave it out to have one allocated",
            )?;
            if kind == ServiceType::ClusterIP {
                self.err(
                    &np.at,
                    "`nodePort` is set on a ClusterIP service",
                    "set `type: NodePort` (or LoadBalancer) on the service, or remove `nodePort`",
                );
                return None;
            }
            Some(Sp::new(np.value as u16, np.at))
        });
        Some(Port {
            name,
            port: port?,
            target_port: target_port?,
            protocol,
            node_port,
            at: obj.at(),
        })
    }
}
