//! Keeps a testbed's own daemons running: the udp overlay daemon and the
//! userspace proxy of every node. The supervisor runs this next to the
//! containers; a daemon that is gone (crashed, killed) is started again
//! with the containers' back-off (0.1 s doubling to 10 s, reset after a
//! long run); the supervisor's log says so, and the daemon's previous log is
//! kept beside the new one (`NODE.log.previous`). It also caps the
//! daemons' logs as the supervisor caps the containers' (`runtime::logs`).

use crate::daemons::{self, DaemonKind};
use crate::plan::Plan;
use crate::runtime::supervise::backoff;
use crate::state::pids::{self, Identity};
use crate::state::TestbedName;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(250);

/// A daemon's current run, as the watchdog knows it.
enum Run {
    /// Started by this watchdog (reaped here).
    Child(Child),
    /// Started before (by `up`, or an earlier supervisor): the process its
    /// pid file names.
    Adopted(Identity),
    /// Not running.
    Gone,
}

/// One daemon the testbed needs.
struct Wanted {
    kind: DaemonKind,
    node: String,
    netns: String,
    log: PathBuf,
    /// The current run.
    run: Run,
    started: Instant,
    /// How long the last run lasted, once it is over.
    ran: Duration,
    delay: Duration,
    next_start: Option<Instant>,
}

/// The daemons `plan` runs on its nodes.
fn wanted(plan: &Plan) -> Vec<Wanted> {
    let mut out = Vec::new();
    for n in &plan.nodes {
        let mut add = |kind: DaemonKind, log: PathBuf| {
            out.push(Wanted {
                kind,
                node: n.name.clone(),
                netns: n.netns.clone(),
                log,
                run: Run::Gone,
                started: Instant::now(),
                ran: Duration::ZERO,
                delay: Duration::from_millis(100),
                next_start: None,
            })
        };
        if plan.cluster.overlay == overlay::Backend::Udp {
            add(
                DaemonKind::Overlay,
                crate::overlay_run::log_path(plan, &n.name),
            );
        }
        if plan.cluster.proxy == proxy::Mode::Userspace && !plan.services.is_empty() {
            add(
                DaemonKind::Proxy,
                crate::services::userspace::log_path(plan, &n.name),
            );
        }
    }
    out
}

/// Watches and restarts the node daemons of `plan`; runs for as long as the
/// supervisor does.
pub fn keep_daemons(plan: &Plan) {
    let mut all = wanted(plan);
    let Ok(name) = TestbedName::new(&plan.name) else {
        return;
    };
    if all.is_empty() {
        return;
    }
    let state_dir = std::path::Path::new(&plan.state_dir);
    // The daemons already running (started by `up`, or by a supervisor
    // before this one): their pid files name them; after that each is
    // checked by its own identity.
    for w in &mut all {
        if let Some(id) = pids::holder(&pids::pid_path(state_dir, w.kind, &w.node)) {
            w.run = Run::Adopted(id);
        }
    }
    let max = plan.cluster.container_log_max_bytes;
    let mut rotated = Instant::now();
    loop {
        std::thread::sleep(TICK);
        if rotated.elapsed() >= Duration::from_secs(1) {
            // Daemons' logs are capped as containers' are.
            for w in &all {
                if let Err(e) = crate::runtime::logs::rotate_if_larger(&w.log, max) {
                    tracing::warn!("cannot rotate {}: {e}", w.log.display());
                }
            }
            rotated = Instant::now();
        }
        for w in &mut all {
            let alive = match &mut w.run {
                Run::Child(c) => matches!(c.try_wait(), Ok(None)),
                // The same process (not a reused pid).
                Run::Adopted(id) => id.alive(),
                Run::Gone => false,
            };
            if !alive {
                restart(&name, state_dir, w);
            }
        }
    }
}

/// Schedules the start of a daemon that is gone, or starts it when its
/// back-off has passed.
fn restart(name: &TestbedName, state_dir: &std::path::Path, w: &mut Wanted) {
    let now = Instant::now();
    // One that runs after all (started by someone else meanwhile) is taken
    // over, not doubled.
    if let Some(id) = pids::holder(&pids::pid_path(state_dir, w.kind, &w.node)) {
        w.run = Run::Adopted(id);
        w.next_start = None;
        return;
    }
    match w.next_start {
        None => {
            w.ran = now - w.started;
            let (delay, next) = backoff(w.delay, w.ran);
            w.delay = next;
            w.next_start = Some(now + delay);
            w.run = Run::Gone;
            tracing::warn!(daemon = w.kind.subcommand(), node = %w.node, "the daemon is gone; starting it again in {delay:?}");
        }
        Some(at) if now >= at => {
            // Keep the log of a run that crashed, not that of a start that
            // failed at once.
            if w.ran > Duration::from_secs(1)
                && std::fs::metadata(&w.log).is_ok_and(|m| m.len() > 0)
            {
                let _ = std::fs::rename(&w.log, crate::runtime::logs::previous(&w.log));
            }
            match daemons::spawn(w.kind, name, Some(&w.node), &w.netns, &w.log) {
                Ok(child) => {
                    tracing::warn!(daemon = w.kind.subcommand(), node = %w.node, pid = child.id(), "daemon started again");
                    w.run = Run::Child(child);
                    w.started = now;
                    w.next_start = None;
                }
                Err(e) => {
                    tracing::warn!(daemon = w.kind.subcommand(), node = %w.node, error = %e, "starting the daemon again");
                    w.next_start = None;
                }
            }
        }
        Some(_) => {}
    }
}
