//! The runs an experiment makes, derived purely from the file and its seed:
//! the cross product of `params` (first parameter outermost, in the file's
//! order), shuffled with the seed when `shuffle` (Fisher-Yates with
//! xoshiro256** stream `SHUFFLE_STREAM` of `seed`), each combination run
//! `repeat` times with seed `seed + r` (which is also the topology's `seed`
//! for that run). A workload sends open loop, evenly spaced: `rate` per
//! second over `duration` gives `rate * duration` sends, send k at
//! `start + (k + phase) / rate`, the phase in [0, 1) drawn from stream
//! `PHASE_STREAM + workload index` of the run's seed. `pick` targets are
//! drawn from stream `PICK_STREAM + entry index` of the run's seed among
//! the controller's pods in the plan of that run's topology, in plan order.
//! The generator is the project's `overlay::rng::Xoshiro256StarStar::for_stream`,
//! its draws `overlay::rng::below`.

use super::{params, Action, Experiment, Fault, LinkTarget, PodTarget};
use crate::plan::Plan;
use crate::LoadError;
use overlay::impair::Xoshiro256StarStar;
use serde::Serialize;

/// How many send times a `Sends` lists.
pub const SHOWN: u64 = 5;
/// The stream of the combinations' order.
pub const SHUFFLE_STREAM: u64 = 1;
/// The first stream of the workloads' phases.
pub const PHASE_STREAM: u64 = 1 << 32;
/// The first stream of the timeline's picks.
pub const PICK_STREAM: u64 = 2 << 32;

/// Every run of an experiment, in the order they are made.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// The experiment's name.
    pub experiment: String,
    /// The combinations, in run order.
    pub combinations: Vec<Combination>,
    /// The runs, in order: each combination's repetitions together.
    pub runs: Vec<Run>,
}

/// One combination of parameter values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Combination {
    /// `proxy=nftables,overlay=udp` (`default` without parameters).
    pub name: String,
    /// The values, in the file's order of parameters.
    pub params: Vec<Setting>,
}

/// One parameter's value in a combination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The topology field's path.
    pub path: String,
    /// Its value.
    pub value: String,
}

/// One run: a combination's repetition.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The combination's name.
    pub combination: String,
    /// The repetition, from 0.
    pub rep: u32,
    /// `seed + rep`.
    pub seed: u64,
    /// Each workload's sends.
    pub workloads: Vec<Sends>,
    /// The timeline with targets resolved, in the file's order.
    pub timeline: Vec<Step>,
}

/// A workload's open-loop send times in one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sends {
    /// The workload.
    pub name: String,
    /// How many sends.
    pub count: u64,
    /// `start`, microseconds from the start of the workloads.
    pub start_us: u64,
    /// The first few send times (at most `SHOWN`), for reading.
    pub first_us: Vec<u64>,
    /// Sends per second.
    pub rate: u32,
    /// The phase in millionths of the interval.
    pub phase_ppm: u64,
}

impl Sends {
    /// The time of send `k` (< `count`), microseconds from the start of
    /// the workloads.
    pub fn at_us(&self, k: u64) -> u64 {
        self.start_us + (k * 1_000_000 + self.phase_ppm) / u64::from(self.rate)
    }
}

/// A timeline entry with its target resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Microseconds from the start of the workloads.
    pub at_us: u64,
    /// When a fault is undone, if `for` was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_us: Option<u64>,
    /// What happens, as text (`kill pod shop/web-1`, `check web`, ...).
    pub what: String,
}

/// Why an experiment's schedule cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A combination's values together do not make a valid topology.
    #[error("combination {combination} (seed {seed}) does not make a valid topology: {problem}")]
    Topology {
        /// The combination.
        combination: String,
        /// The run's seed.
        seed: u64,
        /// The first problem.
        problem: String,
    },
    /// `--only` matches no combination.
    #[error("no combination has {0}")]
    NoMatch(String),
    /// A picked controller has no pods in a run's plan.
    #[error("run {combination}/rep-{rep}: replication controller {rc} has no pods to pick from")]
    NothingToPick {
        /// The combination.
        combination: String,
        /// The repetition.
        rep: u32,
        /// The controller.
        rc: String,
    },
}

/// What the command line narrows: `--only PARAM=VALUE` (PARAM the path or
/// its last segment) and `--repeat N`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only the combinations with these values.
    pub only: Vec<(String, String)>,
    /// Another `repeat`.
    pub repeat: Option<u32>,
}

/// The combinations in run order.
pub fn combinations(exp: &Experiment) -> Vec<Combination> {
    let mut out = vec![Combination {
        name: String::new(),
        params: Vec::new(),
    }];
    for p in &exp.params {
        out = out
            .into_iter()
            .flat_map(|c| {
                p.values.iter().map(move |v| {
                    let mut c = c.clone();
                    let part = format!("{}={v}", p.short());
                    c.name = if c.name.is_empty() {
                        part
                    } else {
                        format!("{},{part}", c.name)
                    };
                    c.params.push(Setting {
                        path: p.path.clone(),
                        value: v.clone(),
                    });
                    c
                })
            })
            .collect();
    }
    if exp.params.is_empty() {
        out[0].name = "default".to_string();
    }
    if exp.shuffle {
        let mut rng = Xoshiro256StarStar::for_stream(exp.seed, SHUFFLE_STREAM);
        for i in (1..out.len()).rev() {
            out.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    out
}

/// Every run of `exp`, narrowed by `opts`.
pub fn schedule(exp: &Experiment, opts: &Options) -> Result<Schedule, ScheduleError> {
    let combos: Vec<Combination> = combinations(exp)
        .into_iter()
        .filter(|c| {
            opts.only.iter().all(|(k, v)| {
                c.params.iter().any(|s| {
                    (&s.path == k || s.path.rsplit('.').next() == Some(k.as_str())) && &s.value == v
                })
            })
        })
        .collect();
    if combos.is_empty() {
        let only: Vec<String> = opts.only.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(ScheduleError::NoMatch(only.join(", ")));
    }
    let repeat = opts.repeat.unwrap_or(exp.repeat);
    let mut runs = Vec::new();
    for c in &combos {
        for rep in 0..repeat {
            runs.push(run(exp, c, rep)?);
        }
    }
    Ok(Schedule {
        experiment: exp.name.clone(),
        combinations: combos,
        runs,
    })
}

/// One run of combination `c`.
fn run(exp: &Experiment, c: &Combination, rep: u32) -> Result<Run, ScheduleError> {
    let seed = exp.seed.wrapping_add(u64::from(rep));
    let seed_text = seed.to_string();
    let mut values: Vec<(&str, &str)> = c
        .params
        .iter()
        .map(|s| (s.path.as_str(), s.value.as_str()))
        .collect();
    values.push(("seed", &seed_text));
    let file = exp.topology.display().to_string();
    let loaded =
        params::load_with(&file, &exp.topology_source, &values).map_err(|e: LoadError| {
            ScheduleError::Topology {
                combination: c.name.clone(),
                seed,
                problem: params::first_problem(&e),
            }
        })?;
    let workloads = exp
        .workloads
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut rng = Xoshiro256StarStar::for_stream(seed, PHASE_STREAM + i as u64);
            let phase_ppm = rng.below(1_000_000);
            let start = w.start.as_micros() as u64;
            let mut s = Sends {
                name: w.name.clone(),
                count: u64::from(w.rate) * w.duration.as_micros() as u64 / 1_000_000,
                start_us: start,
                first_us: Vec::new(),
                rate: w.rate,
                phase_ppm,
            };
            s.first_us = (0..s.count.min(SHOWN)).map(|k| s.at_us(k)).collect();
            s
        })
        .collect();
    let mut timeline = Vec::new();
    for (i, e) in exp.timeline.iter().enumerate() {
        let mut pick = |t: &PodTarget| -> Result<String, ScheduleError> {
            pod_target(&loaded.plan, t, seed, i).ok_or_else(|| ScheduleError::NothingToPick {
                combination: c.name.clone(),
                rep,
                rc: match t {
                    PodTarget::Pick { rc } => rc.clone(),
                    PodTarget::Named(n) => n.clone(),
                },
            })
        };
        let what = describe(&e.action, &mut pick)?;
        let at_us = e.at.as_micros() as u64;
        timeline.push(Step {
            at_us,
            until_us: e.hold.map(|h| at_us + h.as_micros() as u64),
            what,
        });
    }
    Ok(Run {
        combination: c.name.clone(),
        rep,
        seed,
        workloads,
        timeline,
    })
}

/// The pod `t` names in `plan` as `pod NAMESPACE/NAME` (`pod NAME` as
/// written for a named one): a `pick` draws among the controller's pods in
/// plan order with stream `PICK_STREAM + entry` of the run's `seed`.
/// `None`: the controller has no pods.
pub fn pod_target(plan: &Plan, t: &PodTarget, seed: u64, entry: usize) -> Option<String> {
    match t {
        PodTarget::Named(n) => Some(format!("pod {n}")),
        PodTarget::Pick { rc } => {
            let pods: Vec<_> = plan
                .pods
                .iter()
                .filter(|p| p.owner.as_ref() == Some(rc))
                .collect();
            if pods.is_empty() {
                return None;
            }
            let mut rng = Xoshiro256StarStar::for_stream(seed, PICK_STREAM + entry as u64);
            let p = pods[rng.below(pods.len() as u64) as usize];
            Some(format!("pod {}/{}", p.namespace, p.name))
        }
    }
}

/// A timeline action as text, its pod targets named by `pick`.
fn describe(
    action: &Action,
    pick: &mut dyn FnMut(&PodTarget) -> Result<String, ScheduleError>,
) -> Result<String, ScheduleError> {
    use crate::topology::units::{Duration as D, Percent};
    Ok(match action {
        Action::Check(n) => format!("check {n}"),
        Action::Exec { pod, command } => format!("exec pod {pod}: {}", command.join(" ")),
        Action::Fault(f) => match f {
            Fault::Kill(t) => format!("kill {}", pick(t)?),
            Fault::Delete(t) => format!("delete {}", pick(t)?),
            Fault::NodeDown(n) => format!("nodeDown node {n}"),
            Fault::LinkDown(LinkTarget::Pod(t)) => format!("linkDown {}", pick(t)?),
            Fault::LinkDown(LinkTarget::Node(n)) => format!("linkDown node {n}"),
            Fault::LinkDown(LinkTarget::Host(h)) => format!("linkDown host {h}"),
            Fault::Partition(a, b) if b.is_empty() => {
                format!("partition [{}] from the rest", a.join(", "))
            }
            Fault::Partition(a, b) => {
                format!("partition [{}] from [{}]", a.join(", "), b.join(", "))
            }
            Fault::Impair(imp) => {
                let us = |d: std::time::Duration| D(d.as_micros() as u64);
                let mut s = format!("impair node {}", imp.node);
                if let Some(d) = imp.delay {
                    s.push_str(&format!(" delay {}", us(d)));
                }
                if let Some(d) = imp.jitter {
                    s.push_str(&format!(" jitter {}", us(d)));
                }
                if let Some(l) = imp.loss_ppm {
                    s.push_str(&format!(" loss {}", Percent(l)));
                }
                s
            }
            Fault::Scale { rc, replicas } => format!("scale rc {rc} to {replicas}"),
        },
    })
}

#[cfg(test)]
mod tests;
