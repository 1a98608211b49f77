//! Keeps a testbed's own daemons running: the udp overlay daemon and the
//! userspace proxy of every node. The supervisor runs this next to the
//! containers; a daemon that is gone (crashed, killed) is started again
//! with the containers' back-off (0.1 s doubling to 10 s, reset after a
//! long run); the supervisor's log says so, and the daemon's previous log is
//! kept beside the new one (`NODE.log.previous`).

use crate::kernel::teardown::{daemons, NODE_DAEMONS};
use crate::plan::Plan;
use crate::runtime::supervise::backoff;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(250);

/// A daemon's current run, as the watchdog knows it.
enum Run {
    /// Started by this watchdog (reaped here).
    Child(Child),
    /// Started by `up`: its pid, found once by its command line.
    Adopted(i32),
    /// Not running.
    Gone,
}

/// One daemon the testbed needs.
struct Wanted {
    kind: &'static str,
    node: String,
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
        let mut add = |kind: &'static str, log: PathBuf| {
            out.push(Wanted {
                kind,
                node: n.name.clone(),
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
                NODE_DAEMONS[0],
                crate::overlay_run::overlay_dir(plan).join(format!("{}.log", n.name)),
            );
        }
        if plan.cluster.proxy == proxy::Mode::Userspace && !plan.services.is_empty() {
            add(
                NODE_DAEMONS[1],
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
    if all.is_empty() {
        return;
    }
    // The daemons `up` started: one look at /proc; after that each is
    // checked by its own pid.
    for d in daemons(&plan.name, &NODE_DAEMONS) {
        if let Some(w) = all
            .iter_mut()
            .find(|w| d.kind == w.kind && d.node.as_deref() == Some(w.node.as_str()))
        {
            w.run = Run::Adopted(d.pid);
        }
    }
    loop {
        std::thread::sleep(TICK);
        for w in &mut all {
            let args = [w.kind, plan.name.as_str(), w.node.as_str()].join("\0");
            let alive = match &mut w.run {
                Run::Child(c) => matches!(c.try_wait(), Ok(None)),
                // The pid still runs this daemon (not a reused pid).
                Run::Adopted(pid) => std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(args.len()).any(|x| x == args.as_bytes())),
                Run::Gone => false,
            };
            if alive {
                continue;
            }
            let now = Instant::now();
            match w.next_start {
                None => {
                    w.ran = now - w.started;
                    let (delay, next) = backoff(w.delay, w.ran);
                    w.delay = next;
                    w.next_start = Some(now + delay);
                    w.run = Run::Gone;
                    tracing::warn!(daemon = w.kind, node = %w.node, "the daemon is gone; starting it again in {delay:?}");
                }
                Some(at) if now >= at => {
                    // Keep the log of a run that crashed, not that of a
                    // start that failed at once.
                    if w.ran > Duration::from_secs(1)
                        && std::fs::metadata(&w.log).is_ok_and(|m| m.len() > 0)
                    {
                        let _ = std::fs::rename(&w.log, w.log.with_extension("log.previous"));
                    }
                    match crate::lifecycle::spawn_detached(&[w.kind, &plan.name, &w.node], &w.log) {
                        Ok(child) => {
                            tracing::warn!(daemon = w.kind, node = %w.node, pid = child.id(), "daemon started again");
                            w.run = Run::Child(child);
                            w.started = now;
                            w.next_start = None;
                        }
                        Err(e) => {
                            tracing::warn!(daemon = w.kind, node = %w.node, error = %e, "starting the daemon again");
                            w.next_start = None;
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
}
