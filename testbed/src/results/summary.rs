//! An experiment's results side by side: `summary.json` ([`Summary`]),
//! `summary.md` and `plots/*.svg`, written by [`write_experiment`] from the
//! runs' records and their `samples.csv`, read back by [`read_experiment`].

use super::files::{self, combination_dir, run_dir};
use super::{markdown, plots, stats, Percentiles, ResultsError, RunRecord};
use crate::traffic::SampleOutcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// `summary.json`'s schema.
pub const SUMMARY_SCHEMA: &str = "testbed.summary/1";

/// `summary.json`: every combination of an experiment's run side by side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// [`SUMMARY_SCHEMA`].
    pub schema: String,
    /// The experiment.
    pub experiment: String,
    /// Whether the experiment was interrupted (some runs may be missing).
    pub interrupted: bool,
    /// Whether every run's cluster came back to its plan.
    pub verified: bool,
    /// The workloads' names, in the file's order.
    pub workloads: Vec<String>,
    /// The combinations, in run order.
    pub combinations: Vec<CombinationSummary>,
}

/// One combination's runs, pooled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CombinationSummary {
    /// `proxy=nftables,overlay=udp`.
    pub name: String,
    /// Its directory ([`combination_dir`]).
    pub dir: String,
    /// Its values by parameter path.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Its runs, by repetition.
    pub runs: Vec<RunRef>,
    /// Each workload over every repetition.
    pub workloads: Vec<PooledWorkload>,
    /// Each fault of the timeline, with every repetition's recovery.
    pub faults: Vec<FaultSummary>,
}

/// A run of a combination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    /// The repetition.
    pub rep: u32,
    /// Its seed.
    pub seed: u64,
    /// Its directory, relative to the experiment's (`<combination>/rep-<r>`).
    pub dir: String,
    /// Whether its cluster came back to its plan.
    pub verified: bool,
    /// Whether it was interrupted.
    pub interrupted: bool,
}

/// A workload's figures over every repetition of a combination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PooledWorkload {
    /// The workload.
    pub name: String,
    /// Sends made.
    pub sent: u64,
    /// Sends answered `ok`.
    pub ok: u64,
    /// The others, by outcome.
    pub failed: BTreeMap<String, u64>,
    /// `ok / sent` (0 without sends).
    pub success_rate: f64,
    /// Latency of every repetition's `ok` sends together, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Percentiles>,
    /// The repetitions' mean throughput.
    pub throughput: f64,
}

/// A fault of the timeline across the repetitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultSummary {
    /// The fault as the first repetition resolved it.
    pub spec: String,
    /// Each repetition's.
    pub runs: Vec<FaultRun>,
}

/// A fault in one repetition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRun {
    /// The repetition.
    pub rep: u32,
    /// When it was injected, milliseconds.
    pub at: f64,
    /// Its resolved target (picks differ between repetitions).
    pub spec: String,
    /// Its recovery, milliseconds (absent: never recovered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<f64>,
}

/// Writes `summary.json`, `summary.md` and `plots/{latency,success,
/// recovery}.svg` into `dir`, the experiment's run directory, from `runs`
/// (whose `samples.csv` are read from their directories under `dir`).
pub fn write_experiment(
    dir: &Path,
    experiment: &str,
    runs: &[RunRecord],
    interrupted: bool,
) -> Result<Summary, ResultsError> {
    let summary = summarize(experiment, runs, interrupted);
    // Every combination's ok latencies per workload, for the pooled
    // percentiles and the distribution plot.
    let mut latencies = Vec::new();
    let mut with_latency = summary.clone();
    for c in &mut with_latency.combinations {
        let mut per_workload = vec![Vec::new(); summary.workloads.len()];
        for r in &c.runs {
            for s in files::read_samples(&dir.join(&r.dir))? {
                let w = summary.workloads.iter().position(|w| *w == s.workload);
                if let (Some(w), SampleOutcome::Ok) = (w, s.outcome) {
                    per_workload[w].push(s.latency_us as f64 / 1000.0);
                }
            }
        }
        for pw in &mut c.workloads {
            if let Some(w) = summary.workloads.iter().position(|w| *w == pw.name) {
                pw.latency_ms = stats::percentiles(&per_workload[w]);
            }
        }
        latencies.push(per_workload);
    }
    let summary = with_latency;
    files::write(
        &dir.join("summary.json"),
        files::pretty(&summary).as_bytes(),
    )?;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    files::write(
        &dir.join("summary.md"),
        markdown::summary_md(&summary, &id).as_bytes(),
    )?;
    let plots_dir = dir.join("plots");
    files::create_dir(&plots_dir)?;
    for (name, svg) in [
        ("latency.svg", plots::latency_plot(&summary, &latencies)),
        ("success.svg", plots::success_plot(&summary)),
        ("recovery.svg", plots::recovery_plot(&summary)),
    ] {
        let path = plots_dir.join(name);
        let svg = svg.map_err(|message| ResultsError::Plot {
            path: path.clone(),
            message,
        })?;
        files::write(&path, svg.as_bytes())?;
    }
    Ok(summary)
}

/// The summary of `runs` without pooled latencies (they need the samples).
pub fn summarize(experiment: &str, runs: &[RunRecord], interrupted: bool) -> Summary {
    let mut workloads: Vec<String> = Vec::new();
    let mut order: Vec<&str> = Vec::new();
    for r in runs {
        if !order.contains(&r.combination.as_str()) {
            order.push(&r.combination);
        }
        for w in &r.workloads {
            if !workloads.contains(&w.name) {
                workloads.push(w.name.clone());
            }
        }
    }
    let combinations = order
        .iter()
        .map(|name| {
            let mut mine: Vec<&RunRecord> =
                runs.iter().filter(|r| r.combination == *name).collect();
            mine.sort_by_key(|r| r.rep);
            combination(name, &mine, &workloads)
        })
        .collect();
    Summary {
        schema: SUMMARY_SCHEMA.to_string(),
        experiment: experiment.to_string(),
        interrupted: interrupted || runs.iter().any(|r| r.interrupted),
        verified: runs.iter().all(|r| r.verified.ok),
        workloads,
        combinations,
    }
}

/// One combination's summary from its runs (sorted by repetition).
fn combination(name: &str, runs: &[&RunRecord], workloads: &[String]) -> CombinationSummary {
    let pooled = workloads
        .iter()
        .filter_map(|w| {
            let each: Vec<_> = runs
                .iter()
                .filter_map(|r| r.workloads.iter().find(|x| &x.name == w))
                .collect();
            if each.is_empty() {
                return None;
            }
            let (sent, ok) = each.iter().fold((0, 0), |(s, o), x| (s + x.sent, o + x.ok));
            let mut failed = BTreeMap::new();
            for (k, v) in each.iter().flat_map(|x| &x.failed) {
                *failed.entry(k.clone()).or_insert(0) += v;
            }
            Some(PooledWorkload {
                name: w.clone(),
                sent,
                ok,
                failed,
                success_rate: if sent == 0 {
                    0.0
                } else {
                    ok as f64 / sent as f64
                },
                latency_ms: None,
                throughput: each.iter().map(|x| x.throughput).sum::<f64>() / each.len() as f64,
            })
        })
        .collect();
    let n_faults = runs.iter().map(|r| r.faults.len()).max().unwrap_or(0);
    let faults = (0..n_faults)
        .map(|i| {
            let each: Vec<FaultRun> = runs
                .iter()
                .filter_map(|r| {
                    r.faults.get(i).map(|f| FaultRun {
                        rep: r.rep,
                        at: f.at,
                        spec: f.spec.clone(),
                        recovery_ms: f.recovery_ms,
                    })
                })
                .collect();
            FaultSummary {
                spec: each.first().map_or(String::new(), |f| f.spec.clone()),
                runs: each,
            }
        })
        .collect();
    CombinationSummary {
        name: name.to_string(),
        dir: combination_dir(name),
        params: runs.first().map(|r| r.params.clone()).unwrap_or_default(),
        runs: runs
            .iter()
            .map(|r| RunRef {
                rep: r.rep,
                seed: r.seed,
                dir: run_dir(name, r.rep).display().to_string(),
                verified: r.verified.ok,
                interrupted: r.interrupted,
            })
            .collect(),
        workloads: pooled,
        faults,
    }
}

/// Reads `dir/summary.json`.
pub fn read_experiment(dir: &Path) -> Result<Summary, ResultsError> {
    files::read_json(&dir.join("summary.json"), SUMMARY_SCHEMA)
}

/// Reads every run of the experiment in `dir`, in the summary's order.
pub fn read_runs(dir: &Path, summary: &Summary) -> Result<Vec<RunRecord>, ResultsError> {
    let mut out = Vec::new();
    for c in &summary.combinations {
        for r in &c.runs {
            // The summary's own files name their runs; one that names a
            // path outside the experiment is not ours.
            let rel = Path::new(&r.dir);
            if rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(ResultsError::NotResults {
                    path: dir.join(rel),
                });
            }
            out.push(files::read_run(&dir.join(rel))?);
        }
    }
    Ok(out)
}
