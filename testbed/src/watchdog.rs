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

/// One daemon the testbed needs.
struct Wanted {
    kind: &'static str,
    node: String,
    log: PathBuf,
    /// The run this watchdog started (reaped here); `None` for one started
    /// by `up`, found by its command line.
    child: Option<Child>,
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
                child: None,
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
    loop {
        std::thread::sleep(TICK);
        // One look at /proc a round, for the daemons this watchdog did not
        // start itself.
        let running = if all.iter().any(|w| w.child.is_none()) {
            daemons(&plan.name, &NODE_DAEMONS)
        } else {
            Vec::new()
        };
        for w in &mut all {
            let alive = match &mut w.child {
                Some(c) => matches!(c.try_wait(), Ok(None)),
                None => running
                    .iter()
                    .any(|d| d.kind == w.kind && d.node.as_deref() == Some(w.node.as_str())),
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
                    w.child = None;
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
                            w.child = Some(child);
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
