//! Checks: what must (or must not) be reachable in a running testbed
//! (`testbed check`), as `experiment-format.md` (version 1) defines them.
//! `spec` (`topology::checks`) is the declarations as written (decoded with located errors, in a
//! topology's `checks:` or a file of their own), `resolve` turns one into
//! the probes it stands for against a plan (pure), `probe` sends one probe
//! from inside a namespace and says what came back, `run` runs checks
//! (retrying allows, holding denies) and `report` renders the results as
//! text, JSON and JUnit.

pub mod probe;
pub mod report;
pub mod resolve;
pub mod run;
pub mod suite;

/// The declarations (as written in a topology's `checks:` or a file of
/// their own) live with the topology format, below the plan; they are
/// `check::spec` here as before.
pub use crate::topology::checks as spec;
pub use crate::topology::checks::{Check, CheckKind, Endpoint, Expect, Level, Port};

use std::net::Ipv4Addr;

/// What one probe got back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Answered as expected of a reachable target.
    Ok,
    /// Refused (TCP reset, ICMP unreachable).
    Refused,
    /// Nothing came back in time.
    Timeout,
    /// HTTP answered, without the expected text.
    WrongBody,
    /// Something else went wrong (its text).
    Error(String),
}

/// One probe a check stands for: from a source's namespace to an address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// The source as reports name it: `pod a` (`pod shop/a` outside
    /// `default`), `node n1`, `host h`.
    pub from: String,
    /// The network namespace the probe is sent from.
    pub netns: String,
    /// The target as reports name it: `pod default/b`, `service shop/web`,
    /// `nodePort shop/web via n1`, `address 10.0.0.1`.
    pub to: String,
    /// The address probed.
    pub addr: Ipv4Addr,
    /// What is probed (a service's port resolved to the number probed:
    /// the cluster IP's port, or the node port).
    pub port: Port,
}

/// The probes of a check: for a pair check every (source, target) pair in
/// order; for a matrix the same, row by row, with the row and column labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The sources, in plan order.
    pub rows: Vec<String>,
    /// The targets, in plan order.
    pub columns: Vec<String>,
    /// The probes (a matrix leaves out a source probing itself when
    /// `ignoreSelf`).
    pub probes: Vec<Probe>,
}

/// What a check may name in a running testbed: its plan's pods, nodes,
/// hosts and services (the declarations themselves know only topologies,
/// which are below the plan).
impl spec::Known {
    /// The names of a plan (a running testbed's).
    pub fn of_plan(plan: &crate::plan::Plan) -> spec::Known {
        spec::Known {
            pods: plan
                .pods
                .iter()
                .map(|p| spec::KnownPod {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    labels: p.labels.clone(),
                    owner: p.owner.clone(),
                })
                .collect(),
            nodes: plan.nodes.iter().map(|n| n.name.clone()).collect(),
            hosts: plan.hosts.iter().map(|h| h.name.clone()).collect(),
            services: plan
                .services
                .iter()
                .map(|s| spec::KnownService {
                    name: s.name.clone(),
                    namespace: s.namespace.clone(),
                    kind: s.kind,
                    ports: s.ports.iter().map(|p| (p.port, p.protocol)).collect(),
                })
                .collect(),
        }
    }
}
