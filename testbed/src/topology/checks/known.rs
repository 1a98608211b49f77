//! What the checks may name: the pods, nodes, hosts, services and
//! controllers of a topology (checks in its own file) or of a running
//! testbed's plan (a separate checks file), and the check that every name a
//! check uses is one of them, with a did-you-mean when it is not.

use super::Declared;
use super::{CheckKind, Endpoint, Port};
use crate::diag::{did_you_mean, At, Diagnostic, Diagnostics};
use crate::topology::Topology;
use proxy::{Protocol, ServiceType};
use std::collections::BTreeMap;

/// The names a check can use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Known {
    pub(crate) pods: Vec<KnownPod>,
    pub(crate) nodes: Vec<String>,
    pub(crate) hosts: Vec<String>,
    pub(crate) services: Vec<KnownService>,
}

/// A pod a check may name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KnownPod {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) owner: Option<String>,
}

/// A service a check may name.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KnownService {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) kind: ServiceType,
    pub(crate) ports: Vec<(u16, Protocol)>,
}

impl Known {
    /// The names of a topology (controller pods expanded).
    pub fn of_topology(topo: &Topology) -> Known {
        Known {
            pods: topo
                .pods
                .iter()
                .map(|p| KnownPod {
                    name: p.name.value.clone(),
                    namespace: p.namespace.value.clone(),
                    labels: p.labels.map.clone(),
                    owner: p.owner.clone(),
                })
                .collect(),
            nodes: topo.nodes.iter().map(|m| m.name.value.clone()).collect(),
            hosts: topo.hosts.iter().map(|m| m.name.value.clone()).collect(),
            services: topo
                .services
                .iter()
                .map(|s| KnownService {
                    name: s.name.value.clone(),
                    namespace: s.namespace.value.clone(),
                    kind: s.kind.value,
                    ports: s.ports.iter().map(|p| (p.port.value, p.protocol)).collect(),
                })
                .collect(),
        }
    }
}

/// Adds an error to `diags` for every pod, node, host, service or
/// controller a check names that `known` does not hold, every selector that
/// selects nothing, and every service port a check probes that the service
/// does not have.
pub fn check_names(checks: &[Declared], known: &Known, diags: &mut Diagnostics) {
    for d in checks {
        let (from, to, port) = match &d.check.kind {
            CheckKind::Pair { from, to, port, .. } | CheckKind::Matrix { from, to, port, .. } => {
                (from, to, port)
            }
        };
        endpoint(from, &d.from, known, diags);
        if endpoint(to, &d.to, known, diags) {
            service_port(to, port.as_ref(), d, known, diags);
        }
    }
}

/// What is wrong with a name a check uses: the error's message and its help.
type Missing = (String, String);

/// Whether `e` names what exists; an error at `at` otherwise.
pub(crate) fn endpoint(e: &Endpoint, at: &At, known: &Known, diags: &mut Diagnostics) -> bool {
    let missing = match e {
        Endpoint::Pod { name, namespace } => pod(name, namespace, known),
        Endpoint::Node(name) => machine(name, "node", &known.nodes, &known.hosts),
        Endpoint::Host(name) => machine(name, "host", &known.hosts, &known.nodes),
        Endpoint::Service { name, namespace }
        | Endpoint::External { name, namespace }
        | Endpoint::NodePort {
            name, namespace, ..
        } => service(e, name, namespace, known),
        Endpoint::Pods(labels) => selected(labels, known),
        Endpoint::Rc(name) => rc(name, known),
        Endpoint::AllPods if known.pods.is_empty() => Some((
            "there are no pods, so the check would test nothing".into(),
            "add pods, or probe from nodes or hosts".into(),
        )),
        Endpoint::AllHosts if known.hosts.is_empty() => Some((
            "there are no hosts, so the check would test nothing".into(),
            "add `hosts:`, or probe from nodes or pods".into(),
        )),
        _ => None,
    };
    match missing {
        Some((msg, help)) => {
            diags.push(Diagnostic::error(at, msg).help(help));
            false
        }
        None => true,
    }
}

/// `pod NAME[.NAMESPACE]`: what is wrong when no pod has that name in that
/// namespace (pointing at a namespace that has one).
fn pod(name: &str, namespace: &str, known: &Known) -> Option<Missing> {
    if known
        .pods
        .iter()
        .any(|p| p.name == name && p.namespace == namespace)
    {
        return None;
    }
    let all: Vec<String> = known
        .pods
        .iter()
        .map(|p| qualified(&p.name, &p.namespace))
        .collect();
    let help = match known.pods.iter().find(|p| p.name == name) {
        Some(p) => format!(
            "there is a pod `{name}` in namespace `{}`: write `pod {}`",
            p.namespace,
            qualified(name, &p.namespace)
        ),
        None => suggest(&qualified(name, namespace), &all, "pods"),
    };
    Some((
        format!("there is no pod `{name}` in namespace `{namespace}`"),
        help,
    ))
}

/// `service`, `external` or `nodePort` endpoint `e` naming service `name` in
/// `namespace`: what is wrong when there is no such service, it has no
/// address of the kind probed, or the node of a `nodePort` does not exist.
fn service(e: &Endpoint, name: &str, namespace: &str, known: &Known) -> Option<Missing> {
    let Some(s) = known
        .services
        .iter()
        .find(|s| s.name == name && s.namespace == namespace)
    else {
        let all: Vec<String> = known
            .services
            .iter()
            .map(|s| qualified(&s.name, &s.namespace))
            .collect();
        return Some((
            format!("there is no service `{name}` in namespace `{namespace}`"),
            suggest(&qualified(name, namespace), &all, "services"),
        ));
    };
    match e {
        Endpoint::External { .. } if s.kind != ServiceType::LoadBalancer => Some((
            format!("service `{name}` is of type {:?}: it has no external IP", s.kind),
            "`external` probes a LoadBalancer service's IP; write `service NAME` for its cluster IP".into(),
        )),
        Endpoint::NodePort { .. } if s.kind == ServiceType::ClusterIP => Some((
            format!("service `{name}` is of type ClusterIP: it has no node port"),
            "`nodePort` probes a NodePort or LoadBalancer service; write `service NAME` for its cluster IP".into(),
        )),
        Endpoint::NodePort { node, .. } => machine(node, "node", &known.nodes, &known.hosts),
        _ => None,
    }
}

/// `{pods: {LABELS}}`: what is wrong when no pod has all of `labels`.
fn selected(labels: &BTreeMap<String, String>, known: &Known) -> Option<Missing> {
    if known
        .pods
        .iter()
        .any(|p| labels.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
    {
        return None;
    }
    let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    Some((
        format!(
            "no pod has the labels {{{}}}, so the check would test nothing",
            text.join(", ")
        ),
        "select by labels the pods have (see their `labels:`), or use `{allPods: true}`".into(),
    ))
}

/// `{rc: NAME}`: what is wrong when no pod of `default` is owned by
/// replication controller `name`.
fn rc(name: &str, known: &Known) -> Option<Missing> {
    if known
        .pods
        .iter()
        .any(|p| p.owner.as_deref() == Some(name) && p.namespace == "default")
    {
        return None;
    }
    let mut all: Vec<String> = known
        .pods
        .iter()
        .filter(|p| p.namespace == "default")
        .filter_map(|p| p.owner.clone())
        .collect();
    all.dedup();
    Some((
        format!("no replication controller `{name}` with pods in namespace `default`"),
        suggest(name, &all, "replication controllers"),
    ))
}

/// A `kind` (node or host) named `name`: what is wrong when `of_kind` does
/// not hold it (pointing at `others`, the other kind, when that does).
fn machine(name: &str, kind: &str, of_kind: &[String], others: &[String]) -> Option<Missing> {
    if of_kind.iter().any(|n| n == name) {
        return None;
    }
    let other = if kind == "node" { "host" } else { "node" };
    let help = if others.iter().any(|n| n == name) {
        format!("`{name}` is a {other}: write `{other} {name}`")
    } else {
        suggest(name, of_kind, &format!("{kind}s"))
    };
    Some((format!("there is no {kind} `{name}`"), help))
}

/// For a service-like target: the port probed is one of the service's.
fn service_port(
    to: &Endpoint,
    port: Option<&Port>,
    d: &Declared,
    known: &Known,
    diags: &mut Diagnostics,
) {
    let (Endpoint::Service { name, namespace }
    | Endpoint::External { name, namespace }
    | Endpoint::NodePort {
        name, namespace, ..
    }) = to
    else {
        return;
    };
    let Some(s) = known
        .services
        .iter()
        .find(|s| &s.name == name && &s.namespace == namespace)
    else {
        return;
    };
    let (number, proto) = match port {
        Some(Port::Tcp(n)) => (*n, Protocol::TCP),
        Some(Port::Http { port, .. }) => (*port, Protocol::TCP),
        Some(Port::Udp(n)) => (*n, Protocol::UDP),
        Some(Port::Icmp) => return,
        None if s.ports.is_empty() => (0, Protocol::TCP),
        None => return,
    };
    if s.ports.contains(&(number, proto)) {
        return;
    }
    let list: Vec<String> = s
        .ports
        .iter()
        .map(|(n, p)| format!("{}/{n}", if *p == Protocol::TCP { "tcp" } else { "udp" }))
        .collect();
    let at = d.port.as_ref().unwrap_or(&d.to);
    let msg = if s.ports.is_empty() {
        format!("service `{name}` has no ports to probe")
    } else {
        format!("service `{name}` has no {proto} port {number}")
    };
    diags.push(Diagnostic::error(at, msg).help(format!(
        "the service's ports are: {}; `port` names one of them (for `nodePort`, the service port, not the node port)",
        if list.is_empty() { "none".to_string() } else { list.join(", ") }
    )));
}

fn qualified(name: &str, namespace: &str) -> String {
    if namespace == "default" {
        name.to_string()
    } else {
        format!("{name}.{namespace}")
    }
}

fn suggest(word: &str, all: &[String], what: &str) -> String {
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    match did_you_mean(word, &refs) {
        Some(s) => format!("did you mean `{s}`?"),
        None if all.is_empty() => format!("there are no {what}"),
        None if all.len() <= 10 => format!("the {what} are: {}", all.join(", ")),
        None => format!("the {what} include: {}, ...", all[..10].join(", ")),
    }
}
