//! Running an experiment (`testbed run FILE`): every run of the schedule in
//! order, each on a fresh testbed (`one`), with the generators and the
//! timeline beside each other (`execute`, `timeline`, `workloads`), and the
//! results written as they come (`results`): an interrupted experiment
//! (SIGINT) ends the run under way, removes its testbed and still writes a
//! readable summary of the runs made.

pub mod execute;
pub mod one;
pub mod timeline;
pub mod workloads;

use crate::experiment::schedule::Schedule;
use crate::experiment::Experiment;
use crate::results::{self, RunRecord};
use crate::state::TestbedName;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Why an experiment could not run (on).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A combination does not make a valid topology.
    #[error("combination {combination}: {problem}")]
    Topology {
        /// The combination.
        combination: String,
        /// The first problem.
        problem: String,
    },
    /// The topology's testbed runs already (an experiment builds its own).
    #[error("testbed {0} is up (or left over): an experiment brings its topology up itself; `testbed down {0}` first")]
    Busy(String),
    /// `up` failed.
    #[error("bringing the testbed up: {0}")]
    Up(String),
    /// Writing a result failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the results failed.
    #[error(transparent)]
    Results(#[from] results::ResultsError),
    /// Something else.
    #[error("{0}")]
    Other(String),
}

impl RunError {
    /// Whether it is the input's fault (exit 2) rather than the run's.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, RunError::Topology { .. } | RunError::Busy(_))
    }
}

/// Where results go and how long `up` may take.
#[derive(Clone, Debug)]
pub struct Options {
    /// The directory `results/` (the experiment's go under
    /// `<results>/<experiment>/<run-id>/`).
    pub results: PathBuf,
    /// How long one `up` may take.
    pub up_timeout: Duration,
}

/// What an experiment left.
#[derive(Debug)]
pub struct Outcome {
    /// `<results>/<experiment>/<run-id>`.
    pub dir: PathBuf,
    /// The runs made, in order.
    pub runs: Vec<RunRecord>,
    /// Whether SIGINT ended it early.
    pub interrupted: bool,
}

/// Where an experiment is, for progress.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// The run, from 1.
    pub index: usize,
    /// Of how many.
    pub total: usize,
    /// Its combination.
    pub combination: &'a str,
    /// Its repetition.
    pub rep: u32,
    /// What it does now.
    pub what: &'a str,
}

/// Makes every run of `sched`; `stop` (set by SIGINT) ends it after the
/// run under way is cleaned up.
pub fn run_all(
    exp: &Experiment,
    sched: &Schedule,
    opts: &Options,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Outcome, RunError> {
    let name = testbed_name(exp, sched)?;
    preflight(exp, sched)?;
    busy(&name)?;
    let (dir, made) = results_dir(exp, sched, opts)?;
    let (runs, failure) = run_each(exp, sched, opts, stop, progress, &dir);
    let interrupted = stop.load(Ordering::Relaxed) || failure.is_some();
    let written = results::write_experiment(&dir, &exp.name, &runs, interrupted);
    publish(&made, &dir);
    written?;
    match failure {
        Some(e) => Err(e),
        None => Ok(Outcome {
            dir,
            runs,
            interrupted,
        }),
    }
}

/// The name of the testbed the schedule's first run brings up (every run's
/// topology has the same name).
fn testbed_name(exp: &Experiment, sched: &Schedule) -> Result<String, RunError> {
    let first = sched
        .runs
        .first()
        .ok_or_else(|| RunError::Other("the schedule has no runs".into()))?;
    let combo = sched
        .combinations
        .iter()
        .find(|c| c.name == first.combination)
        .ok_or_else(|| RunError::Other("the schedule's first combination is missing".into()))?;
    Ok(one::topology(exp, combo, first.seed)?.plan.name)
}

/// Makes the experiment's `<results>/<experiment>/<run-id>` directory and
/// writes `schedule.json` in it; returns the directory and the parents made
/// for it.
fn results_dir(
    exp: &Experiment,
    sched: &Schedule,
    opts: &Options,
) -> Result<(PathBuf, Vec<PathBuf>), RunError> {
    let dir = opts
        .results
        .join(&exp.name)
        .join(results::run_id(std::time::SystemTime::now()));
    // The parents made here are the user's to read too (not ones that were
    // there: their modes are the user's business).
    let made: Vec<PathBuf> = [opts.results.clone(), opts.results.join(&exp.name)]
        .into_iter()
        .filter(|p| !p.exists())
        .collect();
    create(&dir)?;
    let json = serde_json::json!({"schema": "testbed.schedule/1", "schedule": sched});
    if let Err(e) = write(&dir.join("schedule.json"), &format!("{json:#}\n")) {
        publish(&made, &dir);
        return Err(e);
    }
    Ok((dir, made))
}

/// Makes the runs in order until one fails or `stop` is set: the records of
/// the runs made, and the failure that ended them.
fn run_each(
    exp: &Experiment,
    sched: &Schedule,
    opts: &Options,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&Progress<'_>),
    dir: &Path,
) -> (Vec<RunRecord>, Option<RunError>) {
    let mut runs = Vec::new();
    for (i, run) in sched.runs.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Some(c) = combination_of(sched, &run.combination) else {
            continue;
        };
        let run_dir = dir
            .join(results::combination_dir(&c.name))
            .join(format!("rep-{}", run.rep));
        // A failure from here on still leaves a summary of the runs made.
        if let Err(e) = create(&run_dir) {
            return (runs, Some(e));
        }
        let ctx = one::Context {
            exp,
            combination: c,
            run,
            dir: &run_dir,
            stop,
            up_timeout: opts.up_timeout,
        };
        let mut say = |what: &str| {
            progress(&Progress {
                index: i + 1,
                total: sched.runs.len(),
                combination: &c.name,
                rep: run.rep,
                what,
            })
        };
        match one::run(&ctx, &mut say).and_then(|input| Ok(results::write_run(&run_dir, input)?)) {
            Ok(record) => runs.push(record),
            Err(e) => return (runs, Some(e)),
        }
    }
    (runs, None)
}

/// The combination named `name` of `sched`.
fn combination_of<'a>(
    sched: &'a Schedule,
    name: &str,
) -> Option<&'a crate::experiment::schedule::Combination> {
    sched.combinations.iter().find(|c| c.name == name)
}

/// Plans every run before the first is made: its topology, its
/// generators and its timeline's requests (a problem in the last run is
/// found before anything is built).
fn preflight(exp: &Experiment, sched: &Schedule) -> Result<(), RunError> {
    for run in &sched.runs {
        let Some(c) = combination_of(sched, &run.combination) else {
            continue;
        };
        let bad = |problem: String| RunError::Topology {
            combination: c.name.clone(),
            problem,
        };
        let loaded = one::topology(exp, c, run.seed)?;
        workloads::generators(&loaded.plan, &exp.workloads, run).map_err(bad)?;
        let texts: Vec<String> = run.timeline.iter().map(|s| s.what.clone()).collect();
        timeline::actions(exp, &loaded.plan, run.seed, &texts).map_err(bad)?;
    }
    Ok(())
}

/// Refuses to start when the topology's testbed exists.
fn busy(name: &str) -> Result<(), RunError> {
    let n = TestbedName::new(name).map_err(|e| RunError::Other(e.to_string()))?;
    if n.dir().exists() || !crate::kernel::teardown::namespaces_of(&n).is_empty() {
        return Err(RunError::Busy(name.to_string()));
    }
    Ok(())
}

/// Results are read by the user who ran `sudo testbed run` and by CI
/// steps that are not root: the run's tree 0755/0644, and the parents this
/// experiment made 0755.
fn publish(made: &[PathBuf], dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = crate::state::publish_tree(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "making the results readable");
    }
    for p in made {
        if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)) {
            tracing::warn!(dir = %p.display(), error = %e, "making the results readable");
        }
    }
}

fn create(dir: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(dir).map_err(|source| RunError::Write {
        path: dir.display().to_string(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), RunError> {
    std::fs::write(path, text).map_err(|source| RunError::Write {
        path: path.display().to_string(),
        source,
    })
}
