//! Recorded results of experiments (`experiment-format.md`, "Results"):
//! the layout under `results/<experiment>/<run-id>/`, each run's
//! `run.json` and `samples.csv`, the statistics drawn from raw samples,
//! SVG plots drawn in-process, the experiment's `summary.json` and
//! `summary.md`, and reading results back for `testbed results` and
//! `testbed results diff`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `run.json`'s schema.
pub const RUN_SCHEMA: &str = "testbed.run/1";

/// `run.json`: one repetition of one combination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// [`RUN_SCHEMA`].
    pub schema: String,
    /// The experiment's name.
    pub experiment: String,
    /// The combination's name (`proxy=nftables,overlay=udp`).
    pub combination: String,
    /// The combination's values by parameter path, in the file's order.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The repetition, from 0.
    pub rep: u32,
    /// The run's seed (`seed + rep`).
    pub seed: u64,
    /// Where and what ran.
    pub meta: Meta,
    /// Each workload's figures, in the file's order.
    pub workloads: Vec<WorkloadSummary>,
    /// The faults of the timeline, in the file's order.
    pub faults: Vec<FaultRecord>,
    /// The timeline's checks, in the order they ran.
    pub checks: Vec<CheckRecord>,
    /// The timeline's exec steps.
    pub execs: Vec<ExecRecord>,
    /// What the seed determines; `results diff` requires it equal.
    pub seeded: Seeded,
    /// Whether the cluster was back to its plan (`verify`) after every
    /// fault was undone, and what differed if not.
    pub verified: Verified,
    /// Whether the run was interrupted (SIGINT) before its end.
    pub interrupted: bool,
}

/// Where and what ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// SHA-256 of the topology file's bytes (hex).
    pub topology_sha256: String,
    /// SHA-256 of the run's plan as JSON (hex).
    pub plan_sha256: String,
    /// `CARGO_PKG_VERSION`.
    pub testbed_version: String,
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: u32,
    /// UTC start of the run, RFC 3339 (`2026-11-28T22:15:00Z`).
    pub started: String,
    /// The testbed's name while it ran.
    pub testbed: String,
}

/// A workload's figures in one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSummary {
    /// The workload.
    pub name: String,
    /// Sends made.
    pub sent: u64,
    /// Sends answered `ok`.
    pub ok: u64,
    /// The others, by outcome name.
    pub failed: BTreeMap<String, u64>,
    /// Latency of the `ok` sends, milliseconds (`None` without any).
    pub latency_ms: Option<Percentiles>,
    /// `ok` sends per second over the workload's duration (tcpStream:
    /// received bytes per second).
    pub throughput: f64,
    /// Answers per answering pod.
    pub backends: BTreeMap<String, u64>,
    /// The generators' send-time lateness (actual minus scheduled),
    /// microseconds.
    pub jitter_us: Option<Percentiles>,
}

/// Percentiles of a distribution (nearest rank).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// One fault of the timeline, as it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRecord {
    /// When it was injected, milliseconds from the start of the workloads.
    pub at: f64,
    /// When it was undone (`None`: at the end of the run).
    pub until: Option<f64>,
    /// What it was, with its target resolved (`kill pod shop/web-1`).
    pub spec: String,
    /// From `at` to the moment after which every send of the affected
    /// workloads succeeded for at least one second, milliseconds (`None`:
    /// never within the run). Affected: the workloads with a failed send
    /// from `at` on, before the next fault. 0 when none was affected.
    pub recovery_ms: Option<f64>,
    /// The workloads counted as affected.
    pub affected: Vec<String>,
    /// The controller's answer (`None`: accepted).
    pub error: Option<String>,
}

/// A check of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckRecord {
    /// The check.
    pub name: String,
    /// When it started, milliseconds from the start of the workloads.
    pub at: u64,
    /// `pass`, `fail` or `warn`.
    pub status: String,
}

/// An exec step of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRecord {
    /// When it ran, milliseconds from the start of the workloads.
    pub at: u64,
    /// The pod.
    pub pod: String,
    /// The command.
    pub command: Vec<String>,
    /// Its exit code (`None`: it did not run or was killed).
    pub exit: Option<i32>,
    /// Its output's file, relative to the run's directory (`exec/...`).
    pub output: String,
}

/// What the seed determines in a run: two runs of the same file and seed
/// have these equal, on any machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seeded {
    /// SHA-256 of the plan (as in `meta`).
    pub plan_sha256: String,
    /// The run's schedule (`experiment::schedule::Run`) as JSON.
    pub schedule: serde_json::Value,
    /// The faults' resolved targets, in the timeline's order.
    pub fault_targets: Vec<String>,
    /// The userspace proxy's backend order per service port (`port id` to
    /// endpoints in round-robin order), for the plan's endpoints.
    pub balancer_order: BTreeMap<String, Vec<String>>,
    /// The udp overlay's impairment fates: per node and direction, a hash
    /// of the first 10,000 decisions (drop, delay) for the run's seed.
    pub impairment_fates: BTreeMap<String, String>,
}

/// Whether the cluster came back to its plan after the run's faults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// Observed equals desired.
    pub ok: bool,
    /// How long it took after the faults were undone, milliseconds.
    pub after_ms: u64,
    /// The differences left (empty when `ok`).
    pub differences: Vec<String>,
}
mod stub;
pub use stub::*;
