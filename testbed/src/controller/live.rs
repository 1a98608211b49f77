//! The live changes of a running testbed: what has happened to it since its
//! file was applied. Replica counts set by `testbed scale`, bare pods that
//! are gone (deleted, evicted), where every pod runs now (so that a later
//! change leaves it there), the nodes that take no new pods, and the active
//! faults. Plain data, kept as `live.json` in the state directory; together
//! with the file it determines the desired plan (`desired`).

use crate::state::files::{FileError, JsonFile};
use crate::topology::units::Duration;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

/// The file in the state directory.
pub use crate::state::layout::LIVE_FILE;

/// Where a pod runs now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// Its node.
    pub node: String,
    /// Its address (bridge pods).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ip: Option<Ipv4Addr>,
}

/// A fault, as `testbed fault` names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Fault {
    /// A node cut off: its LAN link down, its containers stopped.
    NodeDown {
        /// The node.
        node: String,
    },
    /// A machine's or pod's link down.
    LinkDown {
        /// `pod NS/NAME`, `node NAME` or `host NAME`.
        target: Target,
    },
    /// Nodes that cannot reach each other on the LAN.
    Partition {
        /// One side.
        nodes: Vec<String>,
        /// The other side (every other node and host when empty).
        from: Vec<String>,
    },
}

/// What a link fault applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "name")]
pub enum Target {
    /// A pod, `NAMESPACE/NAME`.
    Pod(String),
    /// A node.
    Node(String),
    /// A host.
    Host(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pod(p) => write!(f, "pod {}", p.strip_prefix("default/").unwrap_or(p)),
            Target::Node(n) => write!(f, "node {n}"),
            Target::Host(h) => write!(f, "host:{h}"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NodeDown { node } => write!(f, "node-down {node}"),
            Fault::LinkDown { target } => write!(f, "link-down {target}"),
            Fault::Partition { nodes, from } if from.is_empty() => {
                write!(f, "partition {}", nodes.join(" "))
            }
            Fault::Partition { nodes, from } => {
                write!(f, "partition {} --from {}", nodes.join(" "), from.join(" "))
            }
        }
    }
}

/// A fault in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveFault {
    /// The fault.
    pub fault: Fault,
    /// When it was injected (ms since the Unix epoch).
    pub since_ms: u64,
    /// When it is undone by itself (`--for`), ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub until_ms: Option<u64>,
}

/// A node's readiness as the controller last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    /// Whether it is ready.
    pub ready: bool,
    /// Since when (ms since the Unix epoch).
    pub since_ms: u64,
    /// Why, when it is not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// The live changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Live {
    /// Counts every change, so that readers see that the plan moved.
    pub generation: u64,
    /// Replica counts set by `testbed scale`, by `NAMESPACE/RC`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub replicas: BTreeMap<String, u32>,
    /// Bare pods that are gone, `NAMESPACE/NAME`.
    #[serde(skip_serializing_if = "BTreeSet::is_empty", default)]
    pub removed: BTreeSet<String>,
    /// Where each pod runs, by `NAMESPACE/NAME`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub pins: BTreeMap<String, Pin>,
    /// How often each controller pod was evicted and placed again, by
    /// `NAMESPACE/NAME` (across machines, the newer placement of a pod two
    /// machines run stays: `cluster::yielded`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub moves: BTreeMap<String, u32>,
    /// Nodes that take no new pods (not ready), by name.
    #[serde(skip_serializing_if = "BTreeSet::is_empty", default)]
    pub unschedulable: BTreeSet<String>,
    /// The nodes' readiness, by name (a node missing here is ready).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub conditions: BTreeMap<String, NodeCondition>,
    /// Faults in force, in the order they were injected.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub faults: Vec<ActiveFault>,
    /// Live link impairments (`testbed impair`), by machine name; `None`
    /// removes the file's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub impairments: BTreeMap<String, Option<crate::plan::types::LinkPlan>>,
}

/// `NAMESPACE/NAME`, how live state keys pods.
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Live {
    /// Whether node `node` has a node-down fault in force.
    pub fn node_down(&self, node: &str) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(&f.fault, Fault::NodeDown { node: n } if n == node))
    }

    /// The node-down fault of `node`, if in force.
    pub fn node_down_since(&self, node: &str) -> Option<u64> {
        self.faults.iter().find_map(|f| match &f.fault {
            Fault::NodeDown { node: n } if n == node => Some(f.since_ms),
            _ => None,
        })
    }
}

/// The live state's file of the testbed whose state directory is `dir`.
pub fn file(dir: &Path) -> JsonFile<Live> {
    JsonFile::new(dir.join(LIVE_FILE), "live state", true)
}

/// Reads the live state of the testbed whose state directory is `dir`
/// (none yet: the empty state).
pub fn read(dir: &Path) -> Result<Live, FileError> {
    Ok(file(dir).read_if_there()?.unwrap_or_default())
}

/// Writes `live` atomically.
pub fn write(dir: &Path, live: &Live) -> Result<(), FileError> {
    file(dir).write(live)
}

/// A duration in milliseconds.
pub fn millis(d: Duration) -> u64 {
    d.0 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_state_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Live::default());
        let mut live = Live::default();
        live.replicas.insert("default/web".into(), 5);
        live.faults.push(ActiveFault {
            fault: Fault::LinkDown {
                target: Target::Pod("default/web-0".into()),
            },
            since_ms: 1,
            until_ms: Some(2),
        });
        write(dir.path(), &live).unwrap();
        assert_eq!(read(dir.path()).unwrap(), live);
        let text = std::fs::read_to_string(dir.path().join(LIVE_FILE)).unwrap();
        assert!(text.contains(r#""kind": "linkDown""#), "{text}");
    }

    #[test]
    fn faults_read_as_the_command_line_names_them() {
        let f = Fault::Partition {
            nodes: vec!["n1".into()],
            from: vec!["n2".into(), "n3".into()],
        };
        assert_eq!(f.to_string(), "partition n1 --from n2 n3");
        let f = Fault::LinkDown {
            target: Target::Host("client".into()),
        };
        assert_eq!(f.to_string(), "link-down host:client");
    }
}
