//! A run's timeline as the actions the runner takes, in time order (pure):
//! each fault becomes the controller request `testbed fault` would send,
//! with picked targets resolved by the run's seed, and a fault with `for`
//! gets its undo at its end (node-up, link-up, the partition cleared, the
//! node's impairments and the controller's replicas back to the plan's).
//! Checks and exec steps are kept as they are.

use crate::controller::control::Request;
use crate::controller::live::{Fault as LiveFault, Target};
use crate::experiment::schedule::pod_target;
use crate::experiment::{Action, Experiment, Fault, Impairment, LinkTarget, PodTarget};
use crate::plan::types::LinkPlan;
use crate::plan::Plan;
use crate::topology::units::{Duration as D, Percent};

/// What the runner does at one moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    /// A request to the controller: a fault (`undo` false) or its undo.
    Request {
        /// The request.
        request: Request,
        /// The fault's index among the timeline's faults.
        fault: usize,
        /// Whether it undoes the fault.
        undo: bool,
    },
    /// A check of the topology's list, by name.
    Check(String),
    /// A command in a pod; `index` numbers its output file.
    Exec {
        /// `NAME` or `NAMESPACE/NAME`.
        pod: String,
        /// The command.
        command: Vec<String>,
        /// Its position among the exec steps.
        index: usize,
    },
}

/// An action and when it happens.
#[derive(Clone, Debug, PartialEq)]
pub struct Timed {
    /// Microseconds from the start of the workloads.
    pub at_us: u64,
    /// What happens.
    pub act: Act,
}

/// A fault of the timeline, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// When, microseconds from the start of the workloads.
    pub at_us: u64,
    /// When it is undone (`for`), if written; a kill or a delete ends when
    /// it is made.
    pub until_us: Option<u64>,
    /// The schedule's text of it.
    pub spec: String,
}

/// The actions of `exp`'s timeline in `plan` for a run with `seed`,
/// sorted by time (undos before new faults at the same moment, then the
/// file's order); and the faults in the file's order. `texts` are the
/// schedule's descriptions of the entries (same order as the timeline).
pub fn actions(
    exp: &Experiment,
    plan: &Plan,
    seed: u64,
    texts: &[String],
) -> Result<(Vec<Timed>, Vec<FaultPlan>), String> {
    let mut out = Vec::new();
    let mut faults = Vec::new();
    let mut execs = 0;
    for (i, e) in exp.timeline.iter().enumerate() {
        let at_us = e.at.as_micros() as u64;
        match &e.action {
            Action::Check(name) => out.push(Timed {
                at_us,
                act: Act::Check(name.clone()),
            }),
            Action::Exec { pod, command } => {
                out.push(Timed {
                    at_us,
                    act: Act::Exec {
                        pod: pod.clone(),
                        command: command.clone(),
                        index: execs,
                    },
                });
                execs += 1;
            }
            Action::Fault(f) => {
                let index = faults.len();
                // A kill or a delete is over once made: its window is a
                // moment, not the rest of the run.
                let instant = matches!(f, Fault::Kill(_) | Fault::Delete(_));
                let until_us = match e.hold {
                    Some(h) => Some(at_us + h.as_micros() as u64),
                    None if instant => Some(at_us),
                    None => None,
                };
                let (request, undo) = requests(plan, f, seed, i)?;
                out.push(Timed {
                    at_us,
                    act: Act::Request {
                        request,
                        fault: index,
                        undo: false,
                    },
                });
                if let (Some(until), Some(undo)) = (until_us, undo) {
                    out.push(Timed {
                        at_us: until,
                        act: Act::Request {
                            request: undo,
                            fault: index,
                            undo: true,
                        },
                    });
                }
                faults.push(FaultPlan {
                    at_us,
                    until_us,
                    spec: texts.get(i).cloned().unwrap_or_default(),
                });
            }
        }
    }
    // Stable: the file's order among equals, undos first.
    out.sort_by_key(|t| (t.at_us, !matches!(t.act, Act::Request { undo: true, .. })));
    Ok((out, faults))
}

/// The request of fault `f` (entry `entry` of the timeline) and the one
/// that undoes it, if it can be undone.
fn requests(
    plan: &Plan,
    f: &Fault,
    seed: u64,
    entry: usize,
) -> Result<(Request, Option<Request>), String> {
    let pod = |t: &PodTarget| pod_name(plan, t, seed, entry);
    Ok(match f {
        Fault::Kill(t) => (
            Request::Kill {
                pod: pod(t)?,
                container: None,
            },
            None,
        ),
        Fault::Delete(t) => (Request::Delete { pod: pod(t)? }, None),
        Fault::NodeDown(n) => live_fault(LiveFault::NodeDown { node: n.clone() }),
        Fault::LinkDown(t) => {
            let target = match t {
                LinkTarget::Pod(p) => {
                    let name = pod(p)?;
                    Target::Pod(if name.contains('/') {
                        name
                    } else {
                        format!("default/{name}")
                    })
                }
                LinkTarget::Node(n) => Target::Node(n.clone()),
                LinkTarget::Host(h) => Target::Host(h.clone()),
            };
            live_fault(LiveFault::LinkDown { target })
        }
        Fault::Partition(a, b) => live_fault(LiveFault::Partition {
            nodes: a.clone(),
            from: b.clone(),
        }),
        Fault::Impair(imp) => impair(plan, imp)?,
        Fault::Scale { rc, replicas } => scale(plan, rc, *replicas),
    })
}

/// The pod `t` picks (entry `entry` of the timeline), as `NAME` or
/// `NAMESPACE/NAME`.
fn pod_name(plan: &Plan, t: &PodTarget, seed: u64, entry: usize) -> Result<String, String> {
    pod_target(plan, t, seed, entry)
        .map(|p| p.trim_start_matches("pod ").to_string())
        .ok_or_else(|| format!("timeline entry {}: nothing to pick from", entry + 1))
}

/// A live fault's request, undone by clearing that fault.
fn live_fault(fault: LiveFault) -> (Request, Option<Request>) {
    let clear = Request::Clear {
        fault: Some(fault.clone()),
    };
    (
        Request::Fault {
            fault,
            for_ms: None,
        },
        Some(clear),
    )
}

/// The request impairing a node's link (the fields not given keep the
/// plan's), undone by setting the plan's link back.
fn impair(plan: &Plan, imp: &Impairment) -> Result<(Request, Option<Request>), String> {
    let before = plan
        .nodes
        .iter()
        .find(|n| n.name == imp.node)
        .ok_or_else(|| format!("impair: no node {}", imp.node))?
        .link
        .clone();
    let mut link = before.clone().unwrap_or_default();
    let us = |d: std::time::Duration| D(d.as_micros() as u64);
    link.delay = imp.delay.map(us).or(link.delay);
    link.jitter = imp.jitter.map(us).or(link.jitter);
    link.loss = imp.loss_ppm.map(Percent).or(link.loss);
    let impair = |link: Option<LinkPlan>| Request::Impair {
        machine: imp.node.clone(),
        link,
    };
    Ok((impair(Some(link)), Some(impair(before))))
}

/// The request scaling controller `rc` to `replicas`, undone by scaling
/// it back to the plan's number of pods.
fn scale(plan: &Plan, rc: &str, replicas: u32) -> (Request, Option<Request>) {
    let now = plan
        .pods
        .iter()
        .filter(|p| p.owner.as_deref() == Some(rc))
        .count() as u32;
    let scale = |replicas| Request::Scale {
        rc: rc.to_string(),
        replicas,
    };
    (scale(replicas), Some(scale(now)))
}

#[cfg(test)]
mod tests;
