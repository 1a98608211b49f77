//! Experiments (`experiment-format.md`, "Experiments"): a topology brought
//! up under each combination of parameters, driven by workloads, with faults
//! on a timeline. `spec` decodes an experiment file with located errors,
//! `params` applies a combination's values to the topology and plans it,
//! and `schedule` derives, purely from the file and its seed, every run the
//! experiment makes: order, seeds, send times and resolved fault targets.
//! Running them is `runner`'s (above this module, with `traffic` and
//! `results`).

pub mod params;
pub mod schedule;
pub mod spec;

use crate::check::Endpoint;
use std::path::PathBuf;
use std::time::Duration;

/// A decoded experiment file.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    /// `experiment`: a DNS label.
    pub name: String,
    /// `topology`, joined to the experiment file's directory.
    pub topology: PathBuf,
    /// The topology file's text (every combination is applied to it).
    pub topology_source: String,
    /// `seed` (default 0): repetition r uses `seed + r`.
    pub seed: u64,
    /// `repeat` (default 1, 1..=1000).
    pub repeat: u32,
    /// `params`, in the file's order.
    pub params: Vec<Param>,
    /// `shuffle` (default true): combinations in a seeded random order.
    pub shuffle: bool,
    /// `workloads`.
    pub workloads: Vec<Workload>,
    /// `timeline`, in the file's order.
    pub timeline: Vec<Entry>,
}

/// One parameter: a topology field and the values it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The field's path, e.g. `cluster.proxy`.
    pub path: String,
    /// The values, in the file's order (at least one).
    pub values: Vec<String>,
}

impl Param {
    /// The last segment of the path, which names the value in a
    /// combination's name (`proxy` of `cluster.proxy`).
    pub fn short(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }
}

/// What a workload sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkloadKind {
    /// HTTP GET requests.
    Http,
    /// TCP connections opened and closed.
    TcpConnect,
    /// Long-lived TCP streams (`streams` of them).
    TcpStream,
    /// UDP datagrams that are echoed.
    UdpEcho,
    /// ICMP echo requests.
    Ping,
}

/// A workload: open-loop traffic from `from` to `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// `name`: a DNS label, unique in the file.
    pub name: String,
    /// `kind`.
    pub kind: WorkloadKind,
    /// `from`: an endpoint as in checks (several sources: one generator each).
    pub from: Endpoint,
    /// `to`.
    pub to: Endpoint,
    /// `port` (none: the service's first port; `ping` has none).
    pub port: Option<u16>,
    /// `rate`: sends per second (`N/s`, default `DEFAULT_RATE`).
    pub rate: u32,
    /// `streams` (tcpStream only, default 1).
    pub streams: u32,
    /// `start` (default 0s), from the start of the workloads.
    pub start: Duration,
    /// `duration` (default `DEFAULT_DURATION`).
    pub duration: Duration,
    /// `timeout` of one send (default `DEFAULT_TIMEOUT`).
    pub timeout: Duration,
}

/// One entry of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// `at`, from the start of the workloads.
    pub at: Duration,
    /// What happens.
    pub action: Action,
    /// `for`: a fault is undone after this long (faults only).
    pub hold: Option<Duration>,
}

/// What a timeline entry does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `fault: {...}`.
    Fault(Fault),
    /// `check: NAME`: a check of the topology's list.
    Check(String),
    /// `exec: {pod, command}`: output saved with the run.
    Exec {
        /// `NAME` or `NAMESPACE/NAME`.
        pod: String,
        /// The command and its arguments.
        command: Vec<String>,
    },
}

/// A pod a fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodTarget {
    /// `pod NAME` or `pod NAMESPACE/NAME`, kept as `NAMESPACE/NAME`.
    Named(String),
    /// `{pick: {rc: NAME}}`: one of the controller's pods, chosen with the
    /// run's seed.
    Pick {
        /// The replication controller.
        rc: String,
    },
}

/// What a link fault applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// A pod (named or picked).
    Pod(PodTarget),
    /// `node NAME`.
    Node(String),
    /// `host NAME`.
    Host(String),
}

/// A fault, as `testbed fault` offers them.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// `kill: POD`: SIGKILL its containers.
    Kill(PodTarget),
    /// `delete: POD`: delete the pod (its controller makes another).
    Delete(PodTarget),
    /// `nodeDown: NODE`.
    NodeDown(String),
    /// `linkDown: TARGET`.
    LinkDown(LinkTarget),
    /// `partition: [[A, ...], [B, ...]]`: two sides that cannot reach each
    /// other (the second may be empty: every other machine).
    Partition(Vec<String>, Vec<String>),
    /// `impair: {node, delay, jitter, loss}`.
    Impair(Impairment),
    /// `scale: {rc, replicas}`.
    Scale {
        /// The replication controller.
        rc: String,
        /// Its new number of replicas.
        replicas: u32,
    },
}

/// `impair: {node: NAME, delay, jitter, loss}`: a node's LAN link impaired.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Impairment {
    /// The node.
    pub node: String,
    /// Added delay.
    pub delay: Option<Duration>,
    /// Delay variation.
    pub jitter: Option<Duration>,
    /// Loss in millionths (1% = 10 000).
    pub loss_ppm: Option<u32>,
}
