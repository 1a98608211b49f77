//! One run of an experiment: a fresh testbed built from the topology with
//! the combination's values and the run's seed, the workloads' generators
//! started together, the timeline executed beside them (faults through the
//! controller, checks, exec steps), every fault undone at the end, the
//! cluster verified back at its plan, the testbed removed, and what
//! happened handed to `results`.

use super::execute::{self, Executed};
use super::{timeline, workloads, RunError};
use crate::controller::control::{self, Request};
use crate::experiment::schedule::{Combination, Run};
use crate::experiment::{params, Experiment};
use crate::kernel::teardown;
use crate::results::{self, FaultInput, Meta, RunInput, Verified};
use crate::state::TestbedName;
use crate::Loaded;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long after the last send the generators' answers are waited for
/// (besides the workloads' timeouts).
const LEAD: Duration = Duration::from_millis(300);
/// How long the cluster may take to return to its plan after the faults
/// are undone.
const SETTLE: Duration = Duration::from_secs(30);

/// What a run needs.
pub struct Context<'a> {
    /// The experiment.
    pub exp: &'a Experiment,
    /// The run's combination.
    pub combination: &'a Combination,
    /// The run in the schedule.
    pub run: &'a Run,
    /// The run's directory (it exists).
    pub dir: &'a Path,
    /// Set by SIGINT: the run ends early.
    pub stop: &'a AtomicBool,
    /// How long `up` may take.
    pub up_timeout: Duration,
}

/// The topology of a run: the file with the combination's values and the
/// run's seed set, as text, and planned.
pub fn topology(exp: &Experiment, c: &Combination, seed: u64) -> Result<Loaded, RunError> {
    let seed = seed.to_string();
    let mut values: Vec<(&str, &str)> = c
        .params
        .iter()
        .map(|s| (s.path.as_str(), s.value.as_str()))
        .collect();
    values.push(("seed", &seed));
    let file = exp.topology.display().to_string();
    let bad = |problem: String| RunError::Topology {
        combination: c.name.clone(),
        problem,
    };
    params::load_with(&file, &exp.topology_source, &values)
        .map_err(|e| bad(params::first_problem(&e)))?;
    let text = params::source_with(&exp.topology_source, &values).map_err(|e| bad(e.0))?;
    crate::load_str(&file, text).map_err(|e| bad(params::first_problem(&e)))
}

/// Removes the testbed when dropped (a run that fails half-way leaves
/// nothing behind).
struct Guard(Option<TestbedName>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            if let Err(e) = teardown::teardown(&name, &mut |_| {}) {
                tracing::warn!(testbed = %name, error = %e, "removing the run's testbed");
            }
        }
    }
}

/// Makes one run; `progress` hears where it is.
pub fn run(ctx: &Context<'_>, progress: &mut dyn FnMut(&str)) -> Result<RunInput, RunError> {
    let loaded = topology(ctx.exp, ctx.combination, ctx.run.seed)?;
    let plan = &loaded.plan;
    let name = TestbedName::new(&plan.name).map_err(|e| RunError::Other(e.to_string()))?;
    let started = crate::controller::events::rfc3339_ms(crate::controller::events::now_ms());
    let spec = crate::controller::spec::Spec {
        file: ctx.exp.topology.display().to_string(),
        source: loaded.source.clone(),
        overlay: None,
        machine: None,
    };
    let gens = workloads::generators(plan, &ctx.exp.workloads, ctx.run).map_err(RunError::Other)?;
    let texts: Vec<String> = ctx.run.timeline.iter().map(|s| s.what.clone()).collect();
    let (acts, faults) =
        timeline::actions(ctx.exp, plan, ctx.run.seed, &texts).map_err(RunError::Other)?;
    progress("bringing the testbed up");
    crate::lifecycle::up(&spec, plan, ctx.up_timeout, progress)
        .map_err(|e| RunError::Up(e.to_string()))?;
    let mut guard = Guard(Some(name.clone()));
    let end_us = workloads_end(ctx.exp).max(acts.last().map_or(0, |a| a.at_us));
    let executed = execute::execute(
        &execute::Inputs {
            name: &name,
            plan,
            checks: &loaded.topology.checks,
            gens: &gens,
            acts: &acts,
            end_us,
            dir: ctx.dir,
            stop: ctx.stop,
        },
        progress,
    );
    progress("undoing the faults");
    let verified = settle(&name, plan, &acts);
    copy_events(
        &name.dir(),
        &ctx.dir.join(crate::state::layout::EVENTS_FILE),
    );
    execute::write_checks(ctx.dir, name.as_str(), &executed.check_results)?;
    progress("removing the testbed");
    guard.0 = None;
    teardown::teardown(&name, &mut |_| {}).map_err(|e| RunError::Other(e.to_string()))?;
    let left = teardown::namespaces_of(&name);
    if !left.is_empty() {
        return Err(RunError::Other(format!(
            "{} namespaces of {name} were left after removing it",
            left.len()
        )));
    }
    Ok(input(ctx, &loaded, started, executed, &faults, verified))
}

/// The end of the last workload, microseconds from the start.
fn workloads_end(exp: &Experiment) -> u64 {
    exp.workloads
        .iter()
        .map(|w| (w.start + w.duration + w.timeout + LEAD).as_micros() as u64)
        .max()
        .unwrap_or(0)
}

/// Undoes every fault still in force (the controller's faults, changed
/// impairments and replica counts back to the plan's) and waits until the
/// kernel matches the plan and every container is ready again.
fn settle(name: &TestbedName, plan: &crate::plan::Plan, acts: &[timeline::Timed]) -> Verified {
    let dir = name.dir();
    let mut requests = vec![Request::Clear { fault: None }];
    // The undo of every impairment and scale, whether or not it had `for`.
    for a in acts {
        if let timeline::Act::Request { request, .. } = &a.act {
            match request {
                Request::Impair { machine, .. } => {
                    let link = plan
                        .nodes
                        .iter()
                        .find(|n| &n.name == machine)
                        .and_then(|n| n.link.clone());
                    requests.push(Request::Impair {
                        machine: machine.clone(),
                        link,
                    });
                }
                Request::Scale { rc, .. } => requests.push(Request::Scale {
                    rc: rc.clone(),
                    replicas: plan
                        .pods
                        .iter()
                        .filter(|p| p.owner.as_ref() == Some(rc))
                        .count() as u32,
                }),
                _ => {}
            }
        }
    }
    let mut differences = Vec::new();
    for r in &requests {
        match control::request(&dir, r, Duration::from_secs(30)) {
            // Refused (2): nothing to change; `verify` below sees what is left.
            Ok(reply) if reply.code != 1 => {}
            Ok(reply) => differences.push(format!("undo {r:?}: {}", reply.message)),
            Err(e) => differences.push(format!("undo: {e}")),
        }
    }
    let start = Instant::now();
    let deadline = start + SETTLE;
    loop {
        let live = crate::lifecycle::running_plan(name).unwrap_or_else(|| plan.clone());
        let ready = crate::runtime::status::wait_ready(&dir, Instant::now()).is_ok();
        let diffs = match crate::controller::verify::differences(&live) {
            Ok((d, _)) => d,
            Err(e) => vec![e.to_string()],
        };
        if (ready && diffs.is_empty()) || Instant::now() > deadline {
            let mut all = differences.clone();
            all.extend(diffs);
            if !ready {
                all.push("not every container was ready".to_string());
            }
            return Verified {
                ok: all.is_empty(),
                after_ms: start.elapsed().as_millis() as u64,
                differences: all,
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The controller's events of the run (the rotated file first), copied.
fn copy_events(state: &Path, to: &Path) {
    use crate::controller::events::{EVENTS_FILE, ROTATED_FILE};
    let mut text = std::fs::read(state.join(ROTATED_FILE)).unwrap_or_default();
    text.extend(std::fs::read(state.join(EVENTS_FILE)).unwrap_or_default());
    if let Err(e) = std::fs::write(to, text) {
        tracing::warn!(path = %to.display(), error = %e, "copying the events");
    }
}

/// What the run hands to `results`.
fn input(
    ctx: &Context<'_>,
    loaded: &Loaded,
    started: String,
    ex: Executed,
    faults: &[timeline::FaultPlan],
    verified: Verified,
) -> RunInput {
    let meta = Meta {
        topology_sha256: results::seeded::sha256_hex(ctx.exp.topology_source.as_bytes()),
        plan_sha256: results::seeded::plan_sha256(&loaded.plan),
        testbed_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        started,
        testbed: loaded.plan.name.clone(),
    };
    let faults = faults
        .iter()
        .enumerate()
        .map(|(i, f)| FaultInput {
            at_ms: f.at_us as f64 / 1000.0,
            until_ms: f.until_us.map(|u| u as f64 / 1000.0),
            spec: f.spec.clone(),
            error: ex.fault_errors.get(&i).cloned(),
        })
        .collect();
    RunInput {
        experiment: ctx.exp.name.clone(),
        combination: ctx.combination.clone(),
        rep: ctx.run.rep,
        seed: ctx.run.seed,
        meta,
        workloads: ctx.exp.workloads.clone(),
        samples: ex.samples,
        faults,
        checks: ex.checks,
        execs: ex.execs,
        seeded: results::seeded(&loaded.plan, ctx.run),
        verified,
        interrupted: ctx.stop.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::schedule::Setting;

    #[test]
    fn a_runs_topology_has_the_values_and_the_seed_and_keeps_the_rest() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../topologies/experiments/failover.yaml"
        );
        let exp = crate::experiment::spec::read(Path::new(file)).unwrap();
        let c = Combination {
            name: "proxy=userspace,overlay=vxlan".into(),
            params: vec![
                Setting {
                    path: "cluster.proxy".into(),
                    value: "userspace".into(),
                },
                Setting {
                    path: "cluster.overlay".into(),
                    value: "vxlan".into(),
                },
            ],
        };
        let l = topology(&exp, &c, 42).unwrap();
        assert_eq!(l.topology.seed, 42);
        assert_eq!(l.plan.cluster.overlay, overlay::Backend::Vxlan);
        assert_eq!(l.plan.seed, 42);
        let original = crate::load_str("t", exp.topology_source.clone()).unwrap();
        assert_eq!(l.plan.pods.len(), original.plan.pods.len());
        assert_eq!(l.plan.services.len(), original.plan.services.len());
        // The text reads back to the same plan (what the controller replans).
        let again = crate::load_str("t", l.source.clone()).unwrap();
        assert_eq!(again.plan, l.plan);
    }
}
