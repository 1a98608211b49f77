//! What the CLI prints about testbeds, as typed data: each report is both
//! the `--json` output (objects with named, typed, camelCase fields; absent
//! values omitted, never null; shapes documented in docs/json.md) and the
//! source of the human tables. Here: the summary after `up` and the list of
//! testbeds (`ls`); `status` (a running testbed), `inspect` (its kernel
//! state and installed rules) and `validate` (a file's problems) have their
//! own modules.

pub mod cluster;
pub mod inspect;
pub mod status;
pub mod validate;

pub use status::{status, StatusReport};

/// What `testbed down --json` prints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DownReport {
    /// Each testbed removed, in order.
    pub removed: Vec<Removed>,
}

/// One testbed `down` removed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// The testbed.
    pub testbed: String,
    /// Network namespaces removed.
    pub namespaces: usize,
    /// Processes ended.
    pub processes: usize,
    /// `--keep-logs`: where its logs were copied.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kept_logs: Option<String>,
    /// `--keep-logs`: how many files were copied.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kept_files: Option<usize>,
    /// A share of a testbed spread over machines: the machine.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub machine: Option<String>,
    /// A testbed keeping its state in etcd: what `down` did there.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etcd: Option<crate::cluster::leave::Left>,
}

/// What `testbed verify --json` prints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    /// The testbed.
    pub testbed: String,
    /// Whether the kernel matches the desired state.
    pub matches: bool,
    /// Network namespaces read.
    pub namespaces: usize,
    /// Every difference, one line each (empty when it matches).
    pub differences: Vec<String>,
}

/// What `testbed impair --show --json` (and `impair --json`) prints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImpairReport {
    /// The testbed.
    pub testbed: String,
    /// The node or host.
    pub machine: String,
    /// Its impairments in force (absent: none).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<crate::plan::types::LinkPlan>,
}

impl ImpairReport {
    /// One line: `web: node1: delay 10ms loss 1%` (or `no impairments`).
    pub fn text(&self) -> String {
        let what = match &self.link {
            None => "no impairments".to_string(),
            Some(l) => {
                let mut parts = Vec::new();
                let mut add = |k: &str, v: Option<String>| {
                    if let Some(v) = v {
                        parts.push(format!("{k} {v}"));
                    }
                };
                add("delay", l.delay.map(|d| d.to_string()));
                add("jitter", l.jitter.map(|d| d.to_string()));
                add("loss", l.loss.map(|p| p.to_string()));
                add("duplicate", l.duplicate.map(|p| p.to_string()));
                add("reorder", l.reorder.map(|p| p.to_string()));
                add("rate", l.rate.map(|r| r.to_string()));
                if parts.is_empty() {
                    "no impairments".to_string()
                } else {
                    parts.join(" ")
                }
            }
        };
        format!("{}: {}: {what}", self.testbed, self.machine)
    }
}

/// What `testbed rules --json FILE` prints: the rules a proxy mode loads
/// into every node for the file (pure: no root, nothing loaded).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RulesReport {
    /// The proxy mode.
    pub mode: proxy::Mode,
    /// The pods whose endpoints are taken out (`--without`).
    pub without: Vec<String>,
    /// The transaction, as `iptables-restore` or `nft -f` reads it.
    pub rules: String,
}

/// What `testbed events --json` prints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventsReport {
    /// The testbed.
    pub testbed: String,
    /// Its events, oldest first.
    pub events: Vec<crate::controller::events::Event>,
}

use crate::kernel::teardown;
use crate::plan::types::{HostPlan, NodePlan, PodPlan};
use crate::plan::Plan;
use overlay::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// The short summary `up` prints: nodes, hosts, pods and services with
/// their addresses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The testbed.
    pub name: String,
    /// Its nodes.
    pub nodes: Vec<Node>,
    /// Its hosts.
    pub hosts: Vec<Host>,
    /// Its pods.
    pub pods: Vec<Pod>,
    /// Its services, with the endpoints the plan gives them (every selected
    /// pod).
    pub services: Vec<proxy::Service>,
}

/// A node: its name and addresses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Its name.
    pub name: String,
    /// Its LAN address.
    pub address: Ipv4Addr,
    /// The subnet its pods' addresses come from.
    pub pod_subnet: Ipv4Net,
}

impl From<&NodePlan> for Node {
    fn from(n: &NodePlan) -> Node {
        Node {
            name: n.name.clone(),
            address: n.ip,
            pod_subnet: n.lease.subnet,
        }
    }
}

/// A host outside the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Its name.
    pub name: String,
    /// Its LAN address.
    pub address: Ipv4Addr,
}

impl From<&HostPlan> for Host {
    fn from(h: &HostPlan) -> Host {
        Host {
            name: h.name.clone(),
            address: h.ip,
        }
    }
}

/// A pod: where it runs and how it is connected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// Its Kubernetes-style namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its IP address (absent for `none` pods).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub address: Option<Ipv4Addr>,
    /// Its network mode.
    pub network: NetworkMode,
    /// The pod whose network namespace it shares (`container` mode only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub network_pod: Option<String>,
}

/// How a pod is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own namespace on the node's bridge.
    Bridge,
    /// The node's namespace.
    Host,
    /// Its own namespace with loopback only.
    None,
    /// Another pod's namespace.
    Container,
}

impl From<&PodPlan> for Pod {
    fn from(p: &PodPlan) -> Pod {
        let (network, network_pod) = match p.network.as_str() {
            "bridge" => (NetworkMode::Bridge, None),
            "host" => (NetworkMode::Host, None),
            "none" => (NetworkMode::None, None),
            other => (
                NetworkMode::Container,
                Some(other.trim_start_matches("container:").to_string()),
            ),
        };
        Pod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            node: p.node.clone(),
            address: p.ip,
            network,
            network_pod,
        }
    }
}

impl Pod {
    /// `namespace/name`.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The address column: the IP, followed by the mode unless it is bridge.
    fn address_cell(&self) -> String {
        let mode = match (self.network, &self.network_pod) {
            (NetworkMode::Bridge, _) => None,
            (NetworkMode::Host, _) => Some("host".to_string()),
            (NetworkMode::None, _) => Some("none".to_string()),
            (NetworkMode::Container, pod) => {
                Some(format!("container:{}", pod.as_deref().unwrap_or("")))
            }
        };
        match (self.address, mode) {
            (Some(ip), None) => ip.to_string(),
            (Some(ip), Some(mode)) => format!("{ip} ({mode})"),
            (None, mode) => format!("- ({})", mode.unwrap_or_default()),
        }
    }
}

/// The summary of `plan`.
pub fn summary(plan: &Plan) -> Summary {
    Summary {
        name: plan.name.clone(),
        nodes: plan.nodes.iter().map(Node::from).collect(),
        hosts: plan.hosts.iter().map(Host::from).collect(),
        pods: plan.pods.iter().map(Pod::from).collect(),
        services: plan.services.clone(),
    }
}

/// Formats rows of cells as aligned columns under a header.
fn table<const N: usize>(header: [&str; N], rows: impl IntoIterator<Item = [String; N]>) -> String {
    let rows: Vec<[String; N]> = rows.into_iter().collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The node table (`NODE  ADDRESS  POD SUBNET`).
fn nodes_table<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> String {
    table(
        ["NODE", "ADDRESS", "POD SUBNET"],
        nodes.into_iter().map(|n| {
            [
                n.name.clone(),
                n.address.to_string(),
                n.pod_subnet.to_string(),
            ]
        }),
    )
}

/// `namespace/name`, type, cluster IP and external IP (`-` when none) of a
/// service: the first columns of its row.
fn service_cells(s: &proxy::Service) -> [String; 4] {
    [
        format!("{}/{}", s.namespace, s.name),
        format!("{:?}", s.kind),
        s.cluster_ip.to_string(),
        s.load_balancer_ip.map_or("-".into(), |ip| ip.to_string()),
    ]
}

/// Writes `section` after a blank line, unless it has no rows.
fn section(
    f: &mut fmt::Formatter<'_>,
    rows: usize,
    section: impl FnOnce() -> String,
) -> fmt::Result {
    if rows == 0 {
        return Ok(());
    }
    f.write_str("\n")?;
    f.write_str(&section())
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&nodes_table(&self.nodes))?;
        section(f, self.hosts.len(), || {
            table(
                ["HOST", "ADDRESS"],
                self.hosts
                    .iter()
                    .map(|h| [h.name.clone(), h.address.to_string()]),
            )
        })?;
        section(f, self.pods.len(), || {
            table(
                ["POD", "NODE", "ADDRESS"],
                self.pods
                    .iter()
                    .map(|p| [p.qualified(), p.node.clone(), p.address_cell()]),
            )
        })?;
        section(f, self.services.len(), || {
            table(
                ["SERVICE", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORTS"],
                self.services.iter().map(|s| {
                    let ports: Vec<String> = s
                        .ports
                        .iter()
                        .map(|p| match p.node_port {
                            Some(np) => format!("{}:{np}/{}", p.port, p.protocol),
                            None => format!("{}/{}", p.port, p.protocol),
                        })
                        .collect();
                    let [name, kind, ip, ext] = service_cells(s);
                    [name, kind, ip, ext, ports.join(",")]
                }),
            )
        })
    }
}

/// One testbed found on this machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Whether it runs.
    pub state: ListedState,
    /// Its network namespaces.
    pub namespaces: usize,
    /// Pods in its plan.
    pub pods: usize,
}

/// Whether a testbed found on this machine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListedState {
    /// Its plan is there and its supervisor runs.
    Running,
    /// Its plan is there but its supervisor is gone.
    Stopped,
    /// Namespaces or a state directory without a plan.
    Leftovers,
}

impl ListedState {
    /// The word `ls` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            ListedState::Running => "running",
            ListedState::Stopped => "stopped",
            ListedState::Leftovers => "leftovers",
        }
    }
}

/// What `ls` says of testbed `name`, given its plan (if it has one), how
/// many namespaces it has and whether its supervisor runs.
pub fn listed(name: &str, plan: Option<&Plan>, namespaces: usize, supervised: bool) -> Listed {
    let state = match (plan, supervised) {
        (None, _) => ListedState::Leftovers,
        (Some(_), true) => ListedState::Running,
        (Some(_), false) => ListedState::Stopped,
    };
    Listed {
        name: name.to_string(),
        state,
        namespaces,
        pods: plan.map_or(0, |p| p.pods.len()),
    }
}

/// Every testbed on this machine.
pub fn list() -> Vec<Listed> {
    teardown::testbeds()
        .into_iter()
        .map(|name| {
            let plan = crate::lifecycle::running_plan(&name);
            let supervised = crate::state::pids::supervisor(&name.dir()).is_some();
            listed(
                name.as_str(),
                plan.as_ref(),
                teardown::namespaces_of(&name).len(),
                supervised,
            )
        })
        .collect()
}

/// `ls` as a table.
pub fn list_table(list: &[Listed]) -> String {
    table(
        ["NAME", "STATE", "NAMESPACES", "PODS"],
        list.iter().map(|l| {
            [
                l.name.clone(),
                l.state.as_str().to_string(),
                l.namespaces.to_string(),
                l.pods.to_string(),
            ]
        }),
    )
}
