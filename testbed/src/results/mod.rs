//! Recorded results of experiments (`experiment-format.md`, "Results"):
//! the layout under `results/<experiment>/<run-id>/`, each run's
//! `run.json` and `samples.csv`, the statistics drawn from raw samples,
//! SVG plots drawn in-process, the experiment's `summary.json` and
//! `summary.md`, and reading results back for `testbed results` and
//! `testbed results diff`.
//!
//! `stats` computes the figures, `files` writes and reads one run's files,
//! `summary` the experiment's `summary.json`, `markdown` the texts people
//! read (`summary.md`, `testbed results`), `plots` the SVGs, `seeded` what
//! the seed determines and `diff` compares two results. Absent values are
//! left out of the JSON, never `null` (docs/json.md).

pub mod diff;
pub mod files;
pub mod markdown;
pub mod plots;
pub mod seeded;
pub mod stats;
pub mod summary;
#[cfg(test)]
mod testutil;

pub use files::{combination_dir, read_run, read_samples, run_id, write_run};
pub use seeded::seeded;
pub use stats::FaultInput;
pub use summary::{read_experiment, write_experiment, Summary};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything the runner knows after one run: what [`write_run`] turns
/// into the run's files.
#[derive(Clone, Debug)]
pub struct RunInput {
    /// The experiment's name.
    pub experiment: String,
    /// The combination run.
    pub combination: crate::experiment::schedule::Combination,
    /// The repetition, from 0.
    pub rep: u32,
    /// The run's seed.
    pub seed: u64,
    /// Where and what ran.
    pub meta: Meta,
    /// The file's workloads.
    pub workloads: Vec<crate::experiment::Workload>,
    /// Every sample of every generator, in any order.
    pub samples: Vec<crate::traffic::Sample>,
    /// The timeline's faults, in the file's order.
    pub faults: Vec<FaultInput>,
    /// The timeline's checks.
    pub checks: Vec<CheckRecord>,
    /// The timeline's exec steps.
    pub execs: Vec<ExecRecord>,
    /// What the seed determines ([`seeded`]).
    pub seeded: Seeded,
    /// Whether the cluster came back to its plan.
    pub verified: Verified,
    /// Whether the run was interrupted.
    pub interrupted: bool,
}

/// Why results could not be written or read; every variant names its file.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A JSON file is not what the testbed writes.
    #[error("{}: not a valid results file: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A JSON file of another schema (or version).
    #[error("{}: schema `{found}`, expected `{expected}`", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// The schema it has.
        found: String,
        /// The schema expected.
        expected: &'static str,
    },
    /// A row of `samples.csv` is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A plot could not be drawn.
    #[error("{}: drawing the plot: {message}", path.display())]
    Plot {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A directory holds neither `summary.json` nor `run.json`.
    #[error("{}: not a results directory (no summary.json or run.json)", path.display())]
    NotResults {
        /// The directory.
        path: PathBuf,
    },
}

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Percentiles>,
    /// `ok` sends per second over the workload's duration (tcpStream:
    /// received bytes per second).
    pub throughput: f64,
    /// Answers per answering pod.
    pub backends: BTreeMap<String, u64>,
    /// The generators' send-time lateness (actual minus scheduled),
    /// microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<f64>,
    /// What it was, with its target resolved (`kill pod shop/web-1`).
    pub spec: String,
    /// From `at` to the moment after which every send of the affected
    /// workloads succeeded for at least one second, milliseconds (`None`:
    /// never within the run). Affected: the workloads with a failed send
    /// from `at` on, before the next fault. 0 when none was affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<f64>,
    /// The workloads counted as affected.
    pub affected: Vec<String>,
    /// The controller's answer (`None`: accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
