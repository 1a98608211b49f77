//! Checks what the entries of a topology say about each other: unique names,
//! references to nodes and pods that exist, `container:` chains without
//! cycles, pins that fit the pod's network mode, selectors that select.

use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::topology::model::{Network, Pod, Service, Sp, Topology};
use std::collections::{BTreeMap, HashMap};

/// Adds every problem found between entries of `topo` to `diags`.
pub fn check(topo: &Topology, diags: &mut Diagnostics) {
    unique_machines(topo, diags);
    unique_pods(topo, diags);
    unique_in_namespace(
        topo.services.iter().map(|s| (&s.namespace.value, &s.name)),
        "service",
        diags,
    );
    unique_in_namespace(
        topo.controllers
            .iter()
            .map(|c| (&c.namespace.value, &c.name)),
        "replication controller",
        diags,
    );
    pod_references(topo, diags);
    selectors(topo, diags);
    proxy_ports(topo, diags);
    crate::topology::machines::check(topo, diags);
}

/// In userspace mode the node's proxy listens on `LISTEN_BASE` upwards in
/// every node's namespace: a `network: host` container whose ready port is
/// one of those would clash with it.
fn proxy_ports(topo: &Topology, diags: &mut Diagnostics) {
    if topo.cluster.proxy.value != proxy::Mode::Userspace {
        return;
    }
    // The listen ports in plan order, one per service port; a ready check
    // is TCP, so only the TCP ones can clash.
    let base = proxy::portals::LISTEN_BASE;
    let all: Vec<proxy::Protocol> = topo
        .services
        .iter()
        .flat_map(|s| s.ports.iter().map(|p| p.protocol))
        .collect();
    let n = all.len();
    let tcp: Vec<u32> = all
        .iter()
        .enumerate()
        .filter(|(_, p)| **p == proxy::Protocol::TCP)
        .map(|(i, _)| u32::from(base) + i as u32)
        .collect();
    for p in topo
        .pods
        .iter()
        .filter(|p| p.network.value == Network::Host)
    {
        for c in &p.containers {
            if let Some(port) = c
                .ready_tcp
                .as_ref()
                .filter(|t| tcp.contains(&u32::from(t.value)))
            {
                diags.push(
                    Diagnostic::error(
                        &port.at,
                        format!(
                            "port {} is taken by the userspace proxy on every node (it listens on {base} and up, one port per service port: {n} here), and this container shares its node's namespace",
                            port.value,
                        ),
                    )
                    .help("listen on another port, or use `network: bridge` or another `cluster.proxy`"),
                );
            }
        }
    }
}

fn unique_machines(topo: &Topology, diags: &mut Diagnostics) {
    let mut seen: HashMap<&str, (&str, usize)> = HashMap::new();
    for (kind, m) in topo
        .nodes
        .iter()
        .map(|m| ("node", m))
        .chain(topo.hosts.iter().map(|m| ("host", m)))
    {
        if let Some((first_kind, line)) = seen.get(m.name.value.as_str()) {
            diags.push(
                Diagnostic::error(
                    &m.name.at,
                    format!(
                        "the name `{}` is already used by a {first_kind} (line {line})",
                        m.name.value
                    ),
                )
                .help(format!(
                    "nodes and hosts share one set of names (they resolve by name on the LAN): rename this {kind}"
                )),
            );
        } else {
            seen.insert(&m.name.value, (kind, m.name.at.pos.line));
        }
    }
}

fn unique_pods(topo: &Topology, diags: &mut Diagnostics) {
    let mut seen: HashMap<(&str, &str), &Pod> = HashMap::new();
    for pod in &topo.pods {
        let key = (pod.namespace.value.as_str(), pod.name.value.as_str());
        match seen.get(&key) {
            None => {
                seen.insert(key, pod);
            }
            Some(first) => {
                let d = match (&first.owner, &pod.owner) {
                    (None, Some(rc)) => Diagnostic::error(
                        &pod.name.at,
                        format!(
                            "the replication controller `{rc}` makes a pod `{}`, but the pod on line {} already has that name in namespace `{}`",
                            pod.name.value, first.name.at.pos.line, pod.namespace.value
                        ),
                    )
                    .help("rename the controller or the pod: controller pods are named `<controller>-<index>`"),
                    (Some(a), Some(b)) if a != b => Diagnostic::error(
                        &pod.name.at,
                        format!(
                            "the replication controllers `{a}` and `{b}` both make a pod `{}` in namespace `{}`",
                            pod.name.value, pod.namespace.value
                        ),
                    )
                    .help("rename one controller: controller pods are named `<controller>-<index>`"),
                    (Some(_), Some(_)) => continue,
                    _ => Diagnostic::error(
                        &pod.name.at,
                        format!(
                            "a pod named `{}` already exists in namespace `{}` (line {})",
                            pod.name.value, pod.namespace.value, first.name.at.pos.line
                        ),
                    )
                    .help("pod names are unique within a namespace: rename one, or put it in another `namespace`"),
                };
                diags.push(d);
            }
        }
    }
}

fn unique_in_namespace<'a>(
    items: impl Iterator<Item = (&'a String, &'a Sp<String>)>,
    kind: &str,
    diags: &mut Diagnostics,
) {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (ns, name) in items {
        if let Some(line) = seen.get(&(ns.as_str(), name.value.as_str())) {
            diags.push(
                Diagnostic::error(
                    &name.at,
                    format!(
                        "a {kind} named `{}` already exists in namespace `{ns}` (line {line})",
                        name.value
                    ),
                )
                .help(format!(
                    "{kind} names are unique within a namespace: rename one"
                )),
            );
        } else {
            seen.insert((ns, &name.value), name.at.pos.line);
        }
    }
}

/// The pods by namespace and name.
type PodsByName<'t> = HashMap<(&'t str, &'t str), &'t Pod>;

/// Checks what each pod refers to: the node it is pinned to, a pinned
/// address only on a bridge pod, the pod whose network it shares.
fn pod_references(topo: &Topology, diags: &mut Diagnostics) {
    let node_names: Vec<&str> = topo.nodes.iter().map(|n| n.name.value.as_str()).collect();
    let host_names: Vec<&str> = topo.hosts.iter().map(|n| n.name.value.as_str()).collect();
    let by_name: PodsByName = topo
        .pods
        .iter()
        .map(|p| ((p.namespace.value.as_str(), p.name.value.as_str()), p))
        .collect();
    for pod in &topo.pods {
        if pod.owner.is_some()
            && pod.name.value != format!("{}-0", pod.owner.as_deref().unwrap_or(""))
        {
            // A template is checked once, through its first pod.
            continue;
        }
        if let Some(node) = &pod.node {
            pinned_node(node, &node_names, &host_names, diags);
        }
        if let Some(ip) = &pod.ip {
            if pod.network.value != Network::Bridge {
                diags.push(
                    Diagnostic::error(&ip.at, "`ip` is pinned on a pod whose network is not `bridge`")
                        .help("only bridge pods get an address of their own: remove `ip`, or the `network` line"),
                );
            }
        }
        if let Network::Container(target) = &pod.network.value {
            shared_network(topo, &by_name, pod, target, diags);
        }
    }
}

/// A pod's `node` must name one of the nodes `node_names` (a host of
/// `host_names` is outside the cluster).
fn pinned_node(
    node: &Sp<String>,
    node_names: &[&str],
    host_names: &[&str],
    diags: &mut Diagnostics,
) {
    if node_names.contains(&node.value.as_str()) {
        return;
    }
    let help = if host_names.contains(&node.value.as_str()) {
        format!(
            "`{}` is a host, outside the cluster; pods run on nodes: {}",
            node.value,
            node_names.join(", ")
        )
    } else if let Some(s) = did_you_mean(&node.value, node_names) {
        format!("did you mean `{s}`?")
    } else {
        format!(
            "the nodes are: {}; or leave `node` out to have the pod placed",
            node_names.join(", ")
        )
    };
    diags.push(
        Diagnostic::error(&node.at, format!("there is no node named `{}`", node.value)).help(help),
    );
}

/// `pod` shares the network of pod `target` (`network: container:TARGET`):
/// that pod must exist in the same namespace, the chain of shared networks
/// must not be a cycle, and `pod` must not be pinned to another node.
fn shared_network(
    topo: &Topology,
    by_name: &PodsByName,
    pod: &Pod,
    target: &str,
    diags: &mut Diagnostics,
) {
    let ns = pod.namespace.value.as_str();
    let Some(first) = by_name.get(&(ns, target)) else {
        diags.push(no_pod_to_share(topo, pod, target));
        return;
    };
    sharing_cycle(by_name, pod, first, diags);
    if let (Some(mine), Some(theirs)) = (&pod.node, &first.node) {
        if mine.value != theirs.value {
            diags.push(
                Diagnostic::error(
                    &mine.at,
                    format!(
                        "the pod shares the network of `{target}`, which runs on `{}`, but is pinned to `{}`",
                        theirs.value, mine.value
                    ),
                )
                .help("a pod sharing another pod's network runs on that pod's node: remove `node` from this pod"),
            );
        }
    }
}

/// The error for `pod` sharing the network of `target`, which is no pod of
/// its namespace; the help says where `target` is, or what was meant.
fn no_pod_to_share(topo: &Topology, pod: &Pod, target: &str) -> Diagnostic {
    let ns = pod.namespace.value.as_str();
    let in_ns: Vec<&str> = topo
        .pods
        .iter()
        .filter(|p| p.namespace.value == ns)
        .map(|p| p.name.value.as_str())
        .collect();
    let elsewhere = topo.pods.iter().find(|p| p.name.value == target);
    let help = if let Some(p) = elsewhere.filter(|_| !pod.namespace.is_written()) {
        format!(
            "`{target}` is in namespace `{0}`, and this pod is in `{ns}` because its `namespace` is not set: add `namespace: {0}` to this pod",
            p.namespace.value
        )
    } else if let Some(p) = elsewhere {
        format!(
            "`{target}` is in namespace `{}`; a pod can only share the network of a pod in its own namespace (`{ns}`)",
            p.namespace.value
        )
    } else if let Some(s) = did_you_mean(target, &in_ns) {
        format!("did you mean `container:{s}`?")
    } else {
        "name a pod of the same namespace, e.g. `container:web`".into()
    };
    Diagnostic::error(
        &pod.network.at,
        format!("there is no pod `{target}` in namespace `{ns}` to share the network of"),
    )
    .help(help)
}

/// Follows the chain of shared networks from `pod` through `first` (the
/// pod it shares the network of) to its end; an error if it is a cycle.
fn sharing_cycle(by_name: &PodsByName, pod: &Pod, first: &Pod, diags: &mut Diagnostics) {
    let ns = pod.namespace.value.as_str();
    let mut chain = vec![pod.name.value.as_str()];
    let mut cur: &Pod = first;
    loop {
        if chain.contains(&cur.name.value.as_str()) {
            chain.push(&cur.name.value);
            diags.push(
                Diagnostic::error(
                    &pod.network.at,
                    format!(
                        "the pods share each other's network in a cycle: {}",
                        chain.join(" -> ")
                    ),
                )
                .help("one pod of the chain must have a network of its own (bridge, host or none)"),
            );
            break;
        }
        chain.push(&cur.name.value);
        match &cur.network.value {
            Network::Container(next) => match by_name.get(&(ns, next.as_str())) {
                Some(p) => cur = p,
                None => break,
            },
            _ => break,
        }
    }
}

fn selectors(topo: &Topology, diags: &mut Diagnostics) {
    for svc in &topo.services {
        if svc.selector.map.is_empty() {
            continue;
        }
        let selected: Vec<&Pod> = topo
            .pods
            .iter()
            .filter(|p| p.namespace.value == svc.namespace.value && p.labels.matches(&svc.selector))
            .collect();
        if selected.is_empty() {
            let labels: BTreeMap<_, _> = svc.selector.map.iter().collect();
            let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            diags.push(
                Diagnostic::warning(
                    &svc.selector.at,
                    format!(
                        "no pod in namespace `{}` has the labels {{{}}}: the service has no endpoints and refuses connections",
                        svc.namespace.value,
                        text.join(", ")
                    ),
                )
                .help(selector_help(topo, svc)),
            );
        }
        for p in selected {
            if p.network.value == Network::None {
                diags.push(
                    Diagnostic::warning(
                        &p.network.at,
                        format!(
                            "the service `{}` selects this pod, but with `network: none` it cannot serve",
                            svc.name.value
                        ),
                    )
                    .help("give the pod a network, or change its labels"),
                );
            }
        }
    }
}

/// Advice for a service that selects no pod of its namespace: when pods of
/// another namespace carry its labels, which `namespace` to set (saying
/// which side left it to the default).
fn selector_help(topo: &Topology, svc: &Service) -> String {
    let ns = &svc.namespace.value;
    let Some(pod) = topo.pods.iter().find(|p| p.labels.matches(&svc.selector)) else {
        return "check the selector against the pods' labels and namespace".into();
    };
    let theirs = &pod.namespace.value;
    if !svc.namespace.is_written() {
        format!("pods with these labels are in namespace `{theirs}`, and this service is in `{ns}` because its `namespace` is not set: add `namespace: {theirs}` to the service")
    } else if !pod.namespace.is_written() {
        let whose = match &pod.owner {
            Some(rc) => format!("replication controller `{rc}`"),
            None => format!("pod `{}` and the others", pod.name.value),
        };
        format!("pods with these labels are in `{theirs}` because their `namespace` is not set: add `namespace: {ns}` to {whose}, or put the service in `{theirs}`")
    } else {
        format!("pods with these labels are in namespace `{theirs}`: a service selects pods of its own namespace (`{ns}`) only")
    }
}

#[cfg(test)]
mod tests {
    fn warnings(yaml: &str) -> Vec<crate::diag::Diagnostic> {
        crate::plan::testutil::load(yaml).warnings
    }

    /// A service whose namespace is the default, selecting pods of another
    /// namespace: the advice says which namespace was left to the default.
    #[test]
    fn a_selector_missing_by_namespace_says_which_side_defaulted() {
        let pods = "pods:\n  - {name: web, namespace: shop, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}\n";
        let w = warnings(&format!("name: t\nnodes: [{{name: n1}}]\n{pods}services:\n  - {{name: web, selector: {{app: web}}, ports: [{{port: 80}}]}}\n"));
        let help = w[0].help.as_deref().unwrap_or("");
        assert!(
            help.contains("add `namespace: shop` to the service"),
            "{help}"
        );
        let pods = pods.replace("namespace: shop, ", "");
        let w = warnings(&format!("name: t\nnodes: [{{name: n1}}]\n{pods}services:\n  - {{name: web, namespace: shop, selector: {{app: web}}, ports: [{{port: 80}}]}}\n"));
        let help = w[0].help.as_deref().unwrap_or("");
        assert!(
            help.contains(
                "because their `namespace` is not set: add `namespace: shop` to pod `web`"
            ),
            "{help}"
        );
    }
}
