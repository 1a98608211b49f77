//! What the machines of a testbed spread over several (`machines:`) share
//! through etcd, beside flannel's own layout (`overlay::etcd`): under the
//! testbed's prefix `/testbed/NAME/`, one key per machine,
//! `/testbed/NAME/machines/MACHINE`, held by that machine's controller with
//! an etcd lease of [`TTL`] (its heartbeat: it goes when the machine does),
//! whose value ([`MachineRecord`]) names the machine's nodes, the pods
//! ready on it, and where it runs the pods that were moved ([`yielded`]
//! settles a pod two machines run after a partition). Each machine's agent ([`agent`]) keeps its own record and
//! reads everyone's into the state directory (`cluster.json`,
//! [`ClusterView`]): the endpoint followers add the other machines' ready
//! pods to their own, and the controller marks the nodes of a machine
//! whose heartbeat is gone NotReady. When etcd is away the view keeps the
//! last records it read and says since when etcd is unreachable.
//!
//! This module holds the keys, the records and the pure decisions; the
//! agent does the I/O.

pub mod agent;
pub mod events;
pub mod leave;

use crate::plan::Plan;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TTL of the machines' heartbeats and of the subnet leases their
/// nodes hold: how long after a machine dies the others notice. (flannel's
/// own TTL is 24 hours: a lease there outlives a reboot. Here a machine's
/// subnets must leave the others' routes soon after it is gone.)
pub const TTL: Duration = Duration::from_secs(5);

/// How long `up` and the daemons wait for etcd to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The file in the state directory holding the agent's [`ClusterView`].
pub use crate::state::layout::VIEW_FILE;

/// The testbed's own prefix in etcd.
pub fn prefix(testbed: &str) -> String {
    format!("/testbed/{testbed}/")
}

/// The prefix of the machines' heartbeats.
pub fn machines_prefix(testbed: &str) -> String {
    format!("{}machines/", prefix(testbed))
}

/// A machine's heartbeat key.
pub fn machine_key(testbed: &str, machine: &str) -> String {
    format!("{}{machine}", machines_prefix(testbed))
}

/// How many of its last events each machine keeps in etcd.
pub const EVENTS_KEPT: usize = 200;

/// The prefix of the machines' last events.
pub fn events_prefix(testbed: &str) -> String {
    format!("{}events/", prefix(testbed))
}

/// The prefix of requests for machine `machine` (`fault`, `scale`,
/// `apply` made on another machine): `/testbed/NAME/inbox/MACHINE/ID`.
pub fn inbox_prefix(testbed: &str, machine: &str) -> String {
    format!("{}inbox/{machine}/", prefix(testbed))
}

/// Where the answer to request `id` goes.
pub fn reply_key(testbed: &str, id: &str) -> String {
    format!("{}replies/{id}", prefix(testbed))
}

/// What a machine tells the others (the value of its heartbeat key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineRecord {
    /// The machine.
    pub machine: String,
    /// Its nodes.
    pub nodes: Vec<String>,
    /// Its pods that can serve, `NAMESPACE/NAME`, sorted.
    pub ready: Vec<String>,
    /// Every pod it runs, `NAMESPACE/NAME`, sorted.
    #[serde(default)]
    pub pods: Vec<String>,
    /// Its nodes its controller holds NotReady (a fault, a namespace
    /// gone): the other machines take no pods there either and place the
    /// pods evicted from them as it does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
    /// The faults in force on it, as `testbed fault` names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
    /// Where it runs each of its pods that were moved (evicted and placed
    /// again) at least once, by `NAMESPACE/NAME`, and how often: when two
    /// machines run the same pod (one was cut off from etcd while the
    /// other moved its pods away), the newer placement stays
    /// ([`yielded`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placed: BTreeMap<String, Placement>,
    /// The bare pods its controller removed for good (evicted with their
    /// node, or deleted), `NAMESPACE/NAME`: a machine that was cut off
    /// meanwhile and still runs one removes it too ([`removed_elsewhere`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// Where a machine runs one of its pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The node.
    pub node: String,
    /// The pod's address (bridge pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// How often the pod was evicted and placed again (every machine
    /// counts the evictions it sees alike).
    #[serde(default)]
    pub moves: u32,
}

/// The bare pods of `mine` (this machine's, `NAMESPACE/NAME`) that another
/// machine in `view` removed for good, each with that machine (the first
/// by name): evicted with a node of `me` while `me` was cut off from etcd.
pub fn removed_elsewhere(
    view: &ClusterView,
    me: &str,
    mine: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in view.machines.values().filter(|r| r.machine != me) {
        for key in r.removed.iter().filter(|k| mine.contains(*k)) {
            out.entry(key.clone()).or_insert_with(|| r.machine.clone());
        }
    }
    out
}

/// The pods machine `me` must give up, each with where it runs instead:
/// those of `mine` (its pods, by `NAMESPACE/NAME`, with their moves) that
/// another machine in `view` runs from a newer placement (more moves; on
/// a tie, the machine whose name sorts first keeps it). A machine cut off
/// from etcd evicts nothing while the others move its pods away; back, it
/// finds them running elsewhere with one move more and stops its copies.
pub fn yielded(
    view: &ClusterView,
    me: &str,
    mine: &BTreeMap<String, u32>,
) -> BTreeMap<String, Placement> {
    let mut best: BTreeMap<&str, (&str, &Placement)> = BTreeMap::new();
    for r in view.machines.values().filter(|r| r.machine != me) {
        for (key, p) in &r.placed {
            let newer = |(m, q): &(&str, &Placement)| {
                (p.moves, std::cmp::Reverse(r.machine.as_str())) > (q.moves, std::cmp::Reverse(*m))
            };
            if mine.contains_key(key) && best.get(key.as_str()).is_none_or(newer) {
                best.insert(key, (&r.machine, p));
            }
        }
    }
    best.into_iter()
        .filter(|(key, (m, p))| {
            let moves = mine.get(*key).copied().unwrap_or(0);
            (p.moves, std::cmp::Reverse(*m)) > (moves, std::cmp::Reverse(me))
        })
        .map(|(key, (_, p))| (key.to_string(), p.clone()))
        .collect()
}

/// Whether etcd answers, as the agent last found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdHealth {
    /// The endpoints, comma-separated.
    pub endpoints: String,
    /// Whether the last request was answered.
    pub reachable: bool,
    /// Since when (ms since the epoch) it has been as it is.
    pub since_ms: u64,
    /// The last error, while unreachable.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// The agent's view of the cluster, written to [`VIEW_FILE`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// This machine.
    pub machine: String,
    /// etcd's health.
    pub etcd: EtcdHealth,
    /// Every machine whose heartbeat etcd holds (this one included), as
    /// last read: kept as they were while etcd is unreachable.
    pub machines: BTreeMap<String, MachineRecord>,
}

/// Where the view of the testbed whose state directory is `dir` is.
pub fn view_path(dir: &Path) -> PathBuf {
    dir.join(VIEW_FILE)
}

/// The view's file, which the agent writes.
pub fn view_file(dir: &Path) -> crate::state::files::JsonFile<ClusterView> {
    crate::state::files::JsonFile::new(view_path(dir), "machines' view", true)
}

/// The view, if the agent wrote one.
pub fn read_view(dir: &Path) -> Option<ClusterView> {
    view_file(dir).read().ok()
}

/// The pods ready on the *other* machines of `plan`'s testbed, by
/// (namespace, name): none for a testbed on one machine or before the
/// agent's first look.
pub fn remote_ready(plan: &Plan) -> BTreeSet<(String, String)> {
    let Some(me) = &plan.machine else {
        return BTreeSet::new();
    };
    read_view(Path::new(&plan.state_dir)).map_or_else(BTreeSet::new, |v| others_ready(&v, me))
}

/// The pods `view` says are ready on machines other than `me`.
pub fn others_ready(view: &ClusterView, me: &str) -> BTreeSet<(String, String)> {
    view.machines
        .values()
        .filter(|r| r.machine != me)
        .flat_map(|r| r.ready.iter())
        .filter_map(|k| {
            let (ns, name) = k.split_once('/')?;
            Some((ns.to_string(), name.to_string()))
        })
        .collect()
}

/// The nodes of machines other than `me` that their own machine holds
/// NotReady, by their heartbeats in `view`, with that machine.
pub fn reported_not_ready(view: &ClusterView, me: &str) -> BTreeMap<String, String> {
    view.machines
        .values()
        .filter(|r| r.machine != me)
        .flat_map(|r| r.not_ready.iter().map(|n| (n.clone(), r.machine.clone())))
        .collect()
}

/// The nodes of machines other than `me` whose heartbeat `view` does not
/// hold, by the plan's machine assignment (`nodes`: node → machine):
/// NotReady while etcd answers. While etcd is unreachable nothing is
/// concluded (the last known state stands).
pub fn lost_nodes(view: &ClusterView, me: &str, nodes: &BTreeMap<String, String>) -> Vec<String> {
    if !view.etcd.reachable {
        return Vec::new();
    }
    nodes
        .iter()
        .filter(|(_, m)| m.as_str() != me && !view.machines.contains_key(m.as_str()))
        .map(|(n, _)| n.clone())
        .collect()
}

/// The record of machine `machine` with its `nodes`, its `ready` pods and
/// `all` its pods.
pub fn record(
    machine: &str,
    nodes: &[String],
    ready: &BTreeSet<(String, String)>,
    all: &BTreeSet<(String, String)>,
) -> MachineRecord {
    let names = |s: &BTreeSet<(String, String)>| -> Vec<String> {
        s.iter().map(|(ns, n)| format!("{ns}/{n}")).collect()
    };
    MachineRecord {
        machine: machine.to_string(),
        nodes: nodes.to_vec(),
        ready: names(ready),
        pods: names(all),
        not_ready: Vec::new(),
        faults: Vec::new(),
        placed: BTreeMap::new(),
        removed: Vec::new(),
    }
}

/// The record under `key` (under `machines_prefix`), if it is one: a key
/// that does not name the machine its value names is ignored.
pub fn decode(prefix: &str, key: &str, value: &[u8]) -> Option<MachineRecord> {
    let name = key.strip_prefix(prefix)?;
    let r: MachineRecord = serde_json::from_slice(value).ok()?;
    (r.machine == name && crate::state::check_name(name).is_ok()).then_some(r)
}

#[cfg(test)]
mod tests;
