//! The middle of a run: the generators started together at one moment
//! (each in a thread of its own, sending from its namespace), and the
//! timeline's actions taken at their times beside them: faults and their
//! undos through the controller's socket, checks in threads of their own
//! (a check that takes a while does not delay the next fault), exec steps
//! as `testbed exec` with their output saved under `exec/`.

use super::timeline::{Act, Timed};
use super::RunError;
use crate::check::report::{self, CheckResult, Status};
use crate::check::Check;
use crate::controller::control;
use crate::plan::Plan;
use crate::results::{CheckRecord, ExecRecord};
use crate::state::TestbedName;
use crate::traffic::{Generator, Sample};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after "now" the workloads start (the threads are ready by
/// then).
const START_DELAY: Duration = Duration::from_millis(200);
/// The longest an exec step may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a sleep between looks at the stop flag.
const NAP: Duration = Duration::from_millis(20);

/// What the middle of a run needs.
pub struct Inputs<'a> {
    /// The testbed.
    pub name: &'a TestbedName,
    /// Its plan as brought up.
    pub plan: &'a Plan,
    /// The topology's checks (the timeline names them).
    pub checks: &'a [Check],
    /// The generators.
    pub gens: &'a [Generator],
    /// The timeline's actions, in time order.
    pub acts: &'a [Timed],
    /// When everything has ended, microseconds from the start.
    pub end_us: u64,
    /// The run's directory.
    pub dir: &'a Path,
    /// SIGINT.
    pub stop: &'a AtomicBool,
}

/// What happened.
#[derive(Default)]
pub struct Executed {
    /// Every generator's samples.
    pub samples: Vec<Sample>,
    /// The controller's answers to faults it did not take, by fault index.
    pub fault_errors: BTreeMap<usize, String>,
    /// The checks as they ran.
    pub checks: Vec<CheckRecord>,
    /// Their full results (`checks.json`, `junit.xml`).
    pub check_results: Vec<CheckResult>,
    /// The exec steps.
    pub execs: Vec<ExecRecord>,
}

/// Runs the generators and the timeline from now until `end_us`.
pub fn execute(inp: &Inputs<'_>, progress: &mut dyn FnMut(&str)) -> Executed {
    let t0 = Instant::now() + START_DELAY;
    let halt = Arc::new(AtomicBool::new(false));
    let mut out = Executed::default();
    let checks: Mutex<Vec<(CheckRecord, Vec<CheckResult>)>> = Mutex::default();
    let execs: Mutex<Vec<ExecRecord>> = Mutex::default();
    let shared = Shared {
        checks: &checks,
        execs: &execs,
    };
    std::thread::scope(|scope| {
        let gens: Vec<_> = inp
            .gens
            .iter()
            .map(|g| {
                let halt = Arc::clone(&halt);
                scope.spawn(move || crate::traffic::run(g, t0, &halt))
            })
            .collect();
        let mut helpers = Vec::new();
        for a in inp.acts {
            if !sleep_until(t0 + Duration::from_micros(a.at_us), inp.stop, progress, t0) {
                break;
            }
            if let Some(h) = take(scope, inp, a, &shared, &mut out.fault_errors) {
                helpers.push(h);
            }
        }
        sleep_until(
            t0 + Duration::from_micros(inp.end_us),
            inp.stop,
            progress,
            t0,
        );
        halt.store(true, Ordering::Relaxed);
        for g in gens {
            match g.join() {
                Ok(Ok(samples)) => out.samples.extend(samples),
                Ok(Err(e)) => tracing::warn!(error = %e, "a generator failed"),
                Err(_) => tracing::warn!("a generator panicked"),
            }
        }
        for h in helpers {
            let _ = h.join();
        }
    });
    let mut checks = checks.into_inner().unwrap_or_else(|e| e.into_inner());
    checks.sort_by(|a, b| (a.0.at, &a.0.name).cmp(&(b.0.at, &b.0.name)));
    for (record, results) in checks {
        out.checks.push(record);
        out.check_results.extend(results);
    }
    out.execs = execs.into_inner().unwrap_or_else(|e| e.into_inner());
    out.execs.sort_by_key(|e| e.at);
    out
}

/// Where the threads of checks and exec steps leave what they found.
struct Shared<'a> {
    checks: &'a Mutex<Vec<(CheckRecord, Vec<CheckResult>)>>,
    execs: &'a Mutex<Vec<ExecRecord>>,
}

/// Takes action `a` now: a request to the controller is made here (its
/// refusal kept in `errors`), a check or an exec step in a thread of its
/// own (returned).
fn take<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    inp: &'scope Inputs<'_>,
    a: &'scope Timed,
    shared: &'scope Shared<'scope>,
    errors: &mut BTreeMap<usize, String>,
) -> Option<std::thread::ScopedJoinHandle<'scope, ()>> {
    let at_ms = a.at_us / 1000;
    match &a.act {
        Act::Request {
            request,
            fault,
            undo,
        } => {
            let answer = control::request(&inp.name.dir(), request, Duration::from_secs(30));
            let problem = match answer {
                Ok(r) if r.code == 0 => None,
                Ok(r) => Some(r.message),
                Err(e) => Some(e.to_string()),
            };
            if let Some(p) = problem {
                tracing::warn!(fault = fault, undo = undo, problem = %p, "timeline request");
                errors.entry(*fault).or_insert(p);
            }
            None
        }
        Act::Check(name) => Some(scope.spawn(move || {
            let Some(check) = inp.checks.iter().find(|c| &c.name == name) else {
                return;
            };
            let live = crate::lifecycle::running_plan(inp.name).unwrap_or_else(|| inp.plan.clone());
            let results = crate::check::suite::run_checks(&live, std::slice::from_ref(check), None);
            let status = match results.first().map(|r| r.status) {
                Some(Status::Pass) => "pass",
                Some(Status::Warn) => "warn",
                _ => "fail",
            };
            let record = CheckRecord {
                name: name.clone(),
                at: at_ms,
                status: status.to_string(),
            };
            if let Ok(mut c) = shared.checks.lock() {
                c.push((record, results));
            }
        })),
        Act::Exec {
            pod,
            command,
            index,
        } => Some(scope.spawn(move || {
            let r = exec(inp.name, inp.dir, pod, command, *index, at_ms);
            if let Ok(mut e) = shared.execs.lock() {
                e.push(r);
            }
        })),
    }
}

/// Sleeps until `when`, saying where the run is; false when `stop` was set.
fn sleep_until(
    when: Instant,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&str),
    t0: Instant,
) -> bool {
    let mut said = Instant::now() - Duration::from_secs(1);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= when {
            return true;
        }
        if now.duration_since(said) >= Duration::from_millis(500) {
            said = now;
            let t = now.saturating_duration_since(t0).as_secs_f64();
            progress(&format!("t={t:.1}s"));
        }
        std::thread::sleep((when - now).min(NAP));
    }
}

/// Runs `testbed exec` in `pod`, its output saved as
/// `exec/<index>-<pod>.txt` in the run's directory.
fn exec(
    tb: &TestbedName,
    dir: &Path,
    pod: &str,
    command: &[String],
    index: usize,
    at_ms: u64,
) -> ExecRecord {
    let file = format!("exec/{index:02}-{}.txt", pod.replace('/', "_"));
    let mut record = ExecRecord {
        at: at_ms,
        pod: pod.to_string(),
        command: command.to_vec(),
        exit: None,
        output: file.clone(),
    };
    let run = || -> std::io::Result<Option<i32>> {
        std::fs::create_dir_all(dir.join("exec"))?;
        let out = std::fs::File::create(dir.join(&file))?;
        let err = out.try_clone()?;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["exec", "-t", tb.as_str(), pod, "--"])
            .args(command)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let deadline = Instant::now() + EXEC_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                return Ok(None);
            }
            std::thread::sleep(NAP);
        }
    };
    match run() {
        Ok(code) => record.exit = code,
        Err(e) => tracing::warn!(pod, error = %e, "exec step"),
    }
    record
}

/// `checks.json` (as `testbed check --json` prints) and `junit.xml` of the
/// run's checks.
pub fn write_checks(dir: &Path, testbed: &str, results: &[CheckResult]) -> Result<(), RunError> {
    let doc = report::CheckReport {
        schema: report::SCHEMA,
        testbed: testbed.to_string(),
        checks: results.to_vec(),
    };
    let json = serde_json::to_string_pretty(&doc).map_err(|e| RunError::Other(e.to_string()))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).map_err(|source| RunError::Write {
            path: dir.join(name).display().to_string(),
            source,
        })
    };
    write("checks.json", format!("{json}\n").as_bytes())?;
    write("junit.xml", report::junit(testbed, results).as_bytes())
}
