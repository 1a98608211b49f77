//! The supervisor: one foreground process per running testbed
//! (`testbed supervise NAME`, started detached by `up`) that starts every
//! container of every pod and host, reaps them, starts them again as their
//! restart policy says, checks their readiness and keeps the status file.
//!
//! - **Restarts**: `Always` after any exit, `OnFailure` after a non-zero
//!   exit or a signal, `Never` never. A failed start (say the command
//!   disappeared) counts as a failure. The delay before a restart starts at
//!   100 ms and doubles up to 10 s; it goes back to 100 ms once a run lasted
//!   10 s.
//! - **A container's end**: when its main process exits, the rest of its
//!   process group (it is a session leader) is killed with SIGKILL before it
//!   is reaped, as Kubernetes ends a container's other processes; processes
//!   that left the group are found by `down` in the testbed's namespaces.
//! - **Readiness**: a container with `ready_tcp` is ready once a TCP connect
//!   to 127.0.0.1:PORT succeeds *in its network namespace* (a thread per
//!   check enters the namespace with `setns`); others once started.
//! - **Stopping**: SIGTERM or SIGINT make it send SIGTERM to every
//!   container's process group, SIGKILL to those still there 2 s later, reap
//!   them, write the final status and return (exit 0).
//! - **One per testbed**: it holds its pid file `STATE_DIR/supervisor.pid`
//!   (`state::pids`) while it runs; a second supervisor fails, and
//!   `state::pids::supervisor` tells whether one runs. The file stays after it
//!   exits; the lock is what counts.
//!
//! Containers are not its children in any way that would end them with it:
//! a `kill -9` of the supervisor leaves them running (and not restarted).

use super::basens::BaseMounts;
use super::files;
use super::launch;
use super::logs;
use super::probe::{spawn_probe, Probe};
use super::procs::{parallel_map, reap_one, signal_group, STARTERS};
use super::status::{self, ContainerStatus, Exit, State, Status};
use super::{OwnedSandbox, Sandbox};
use crate::plan::Plan;
use crate::state::pids;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// The supervisor's log, in the state directory.
pub use crate::state::layout::SUPERVISOR_LOG;

/// The first delay before a restart.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest delay before a restart.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A run this long resets the delay to [`BACKOFF_MIN`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How long stopping containers get between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How often the supervisor looks at the size of the logs.
/// (Two seconds: a look costs a `stat` of every log, which for a thousand
/// containers was a third of an idle controller's CPU at one a second.)
const ROTATE_EVERY: Duration = Duration::from_secs(2);

/// How often the supervisor looks at the containers it took over (which
/// send it no SIGCHLD).
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// How often the supervisor looks at its children.
const TICK: Duration = Duration::from_millis(50);

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Another supervisor holds the lock.
    #[error("a supervisor (pid {pid}) already runs for {state_dir}")]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
        /// The state directory.
        state_dir: String,
    },
    /// The plan file cannot be read.
    #[error("cannot read the plan {path}: {source} (is the testbed up?)")]
    ReadPlan {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The plan file is not a plan.
    #[error("{path} is not a plan: {source}")]
    ParsePlan {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The pid file cannot be written or locked.
    #[error("cannot lock {path}: {source}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The state files cannot be prepared.
    #[error(transparent)]
    Files(#[from] files::FilesError),
    /// The signal handlers cannot be installed.
    #[error("cannot handle {signal}: {source}")]
    Signal {
        /// The signal.
        signal: Signal,
        /// The cause.
        source: Errno,
    },
}

/// Every container of a testbed's pods and hosts, started, reaped,
/// restarted and checked for readiness (see the module comment). The
/// controller drives it: [`Supervisor::tick`] at a steady pace, and
/// [`Supervisor::set_plan`], [`Supervisor::hold`], [`Supervisor::stop_pods`]
/// and [`Supervisor::kill`] when the desired state changes.
pub struct Supervisor {
    name: String,
    log_max: u64,
    /// The mount namespace containers are made from.
    base: Option<BaseMounts>,
    state_dir: PathBuf,
    slots: Vec<Slot>,
    probes_tx: Sender<Probe>,
    probes_rx: Receiver<Probe>,
    dirty: bool,
    stopping: bool,
    rotated: Instant,
    scanned: Instant,
    /// Starts since [`Supervisor::take_starts`] was last called (bounded).
    starts: Vec<Started>,
    /// Counts status writes: what it reports changes only with it.
    writes: u64,
    /// The count of SIGCHLDs at the last look at the children.
    children_ended: u64,
}

/// The most starts kept between two [`Supervisor::take_starts`].
const MAX_STARTS: usize = 4096;

/// A container start, for the controller's events.
#[derive(Clone, Debug)]
pub struct Started {
    /// Its sandbox, `NAMESPACE/NAME` or `host:NAME`.
    pub key: String,
    /// The container.
    pub container: String,
    /// Whether it ran before.
    pub restart: bool,
    /// How the previous run ended.
    pub last_exit: Option<Exit>,
}

/// Every sandbox of `plan`, owned.
fn sandboxes(plan: &Plan) -> Vec<Arc<OwnedSandbox>> {
    Sandbox::all(plan)
        .iter()
        .map(|s| Arc::new(OwnedSandbox::of(s)))
        .collect()
}

impl Supervisor {
    /// A supervisor of `plan` whose state is in `state_dir`; it takes over
    /// the containers of an earlier one that still run, and starts the rest
    /// at its first tick.
    pub fn new(plan: &Plan, state_dir: PathBuf) -> Self {
        let now = Instant::now();
        let slots = sandboxes(plan)
            .into_iter()
            .flat_map(|sb| (0..sb.containers.len()).map(move |i| Slot::new(sb.clone(), i, now)))
            .collect();
        let (probes_tx, probes_rx) = channel();
        let base = BaseMounts::create(&state_dir)
            .map_err(|e| {
                warn!("containers get copies of every mount: no base mount namespace: {e}")
            })
            .ok();
        let mut sup = Supervisor {
            name: plan.name.clone(),
            log_max: plan.cluster.container_log_max_bytes,
            base,
            state_dir,
            slots,
            probes_tx,
            probes_rx,
            dirty: true,
            stopping: false,
            rotated: now,
            scanned: now,
            starts: Vec::new(),
            writes: 0,
            children_ended: u64::MAX,
        };
        sup.adopt();
        sup.write_status();
        sup
    }

    /// How many times the status was written: readiness and states change
    /// only when this does.
    pub fn version(&self) -> u64 {
        self.writes
    }

    /// The container starts since the last call.
    pub fn take_starts(&mut self) -> Vec<Started> {
        std::mem::take(&mut self.starts)
    }

    /// One round: reaps what ended, takes readiness results, starts what is
    /// due, writes the status when it changed, rotates logs every two seconds.
    pub fn tick(&mut self) {
        let ended = process::CHILD_ENDED.load(Ordering::SeqCst);
        if ended != self.children_ended {
            self.children_ended = ended;
            self.reap();
        } else if self.scanned.elapsed() >= SCAN_EVERY {
            self.reap_some(false);
            self.scanned = Instant::now();
        }
        self.take_probe_results();
        self.start_due();
        if self.dirty {
            self.write_status();
        }
        if self.rotated.elapsed() >= ROTATE_EVERY {
            self.rotate_logs();
            self.rotated = Instant::now();
        }
    }

    /// Takes over the containers an earlier supervisor of this testbed
    /// started and that still run (it died; `up` started this one): they
    /// keep running, are watched, and are started again per their policy
    /// when they end.
    fn adopt(&mut self) {
        let Ok(previous) = status::read(&self.state_dir) else {
            return;
        };
        let mut adopted = 0;
        for old in previous.containers {
            let (Some(pid), Some(start)) = (old.pid, old.start_time) else {
                continue;
            };
            if !same_process(pid, start) {
                continue;
            }
            let Some(i) = self.slots.iter().position(|s| {
                s.sandbox.kind == old.kind
                    && s.sandbox.namespace == old.namespace
                    && s.sandbox.name == old.owner
                    && s.container().name == old.container
            }) else {
                continue;
            };
            let slot = &mut self.slots[i];
            slot.pid = Some(Pid::from_raw(pid));
            slot.start_time = Some(start);
            slot.adopted = true;
            slot.state = State::Running;
            slot.attempts = old.restarts + 1;
            slot.last_exit = old.last_exit;
            slot.next_start = None;
            slot.generation += 1;
            self.watch_readiness(i);
            adopted += 1;
        }
        if adopted > 0 {
            info!("took over {adopted} running containers of an earlier supervisor");
        }
    }

    /// Starts the readiness check of container `i`, which just started (or
    /// was taken over); one without a check is ready at once.
    fn watch_readiness(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        match slot.container().ready_tcp {
            Some(port) => {
                slot.ready = false;
                let cancel = Arc::new(AtomicBool::new(false));
                slot.probe_cancel = Some(cancel.clone());
                spawn_probe(
                    slot.sandbox.netns.to_string(),
                    port,
                    cancel,
                    self.probes_tx.clone(),
                    i,
                    slot.generation,
                );
            }
            None => slot.ready = true,
        }
    }

    /// Starts every container whose time has come, several at once (a
    /// start is mostly the kernel's work in the new process, on any core).
    fn start_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].next_start.is_some_and(|t| t <= now))
            .collect();
        if due.is_empty() {
            return;
        }
        // Before a run begins: the one that ended is kept as the previous.
        for &i in &due {
            let slot = &mut self.slots[i];
            let log = Path::new(&slot.container().log);
            slot.log_start = if slot.attempts > 0 {
                logs::keep_previous(log, slot.log_start, self.log_max).unwrap_or_else(|e| {
                    warn!("keeping the previous run of {}: {e}", log.display());
                    logs::length(log)
                })
            } else {
                logs::length(log)
            };
        }
        let base = self.base.as_ref();
        let slots = &self.slots;
        let launch_one =
            |i: usize| launch::spawn(&slots[i].sandbox.view(), slots[i].container(), base);
        for (k, result) in parallel_map(&due, STARTERS, launch_one) {
            self.started(due[k], result);
        }
    }

    /// Records the start of container `i` (or its failure).
    fn started(&mut self, i: usize, result: Result<i32, launch::LaunchError>) {
        let slot = &mut self.slots[i];
        slot.next_start = None;
        slot.attempts += 1;
        slot.generation += 1;
        slot.started = Instant::now();
        self.dirty = true;
        match result {
            Ok(pid) => {
                slot.pid = Some(Pid::from_raw(pid));
                slot.start_time = pids::start_time(pid);
                slot.adopted = false;
                slot.state = State::Running;
                slot.error = None;
                if self.starts.len() < MAX_STARTS {
                    self.starts.push(Started {
                        key: slot.sandbox.key(),
                        container: slot.container().name.clone(),
                        restart: slot.attempts > 1,
                        last_exit: slot.last_exit,
                    });
                }
                self.watch_readiness(i);
            }
            Err(e) => {
                error!("{e}");
                slot.error = Some(e.to_string());
                self.ended(i, None);
            }
        }
    }

    /// Reaps every container that exited (and notices the end of those
    /// taken over, which are not this process's children).
    fn reap(&mut self) {
        self.reap_some(true);
    }

    /// [`Supervisor::reap`], of the children too only when `children`
    /// (SIGCHLD said one ended); those taken over have no SIGCHLD and are
    /// always looked at.
    fn reap_some(&mut self, children: bool) {
        for i in 0..self.slots.len() {
            let Some(pid) = self.slots[i].pid else {
                continue;
            };
            if !children && !self.slots[i].adopted {
                continue;
            }
            if self.slots[i].adopted {
                let start = self.slots[i].start_time.unwrap_or(0);
                if !same_process(pid.as_raw(), start) {
                    // The rest of its process group, as for a child.
                    let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
                    self.ended(i, Some(Exit::Unknown));
                }
                continue;
            }
            if let Some(exit) = reap_one(pid, false) {
                self.ended(i, Some(exit));
            }
        }
    }

    /// Records the end of a run (`None`: it could not start) and schedules
    /// the next one as the restart policy says.
    fn ended(&mut self, i: usize, exit: Option<Exit>) {
        let stopping = self.stopping;
        let slot = &mut self.slots[i];
        let ran = slot.started.elapsed();
        slot.pid = None;
        slot.start_time = None;
        slot.adopted = false;
        slot.ready = false;
        slot.cancel_probe();
        if exit.is_some() {
            slot.last_exit = exit;
        }
        self.dirty = true;
        let who = slot.who();
        if let Some(why) = &slot.held {
            slot.state = State::Waiting;
            slot.error = Some(why.clone());
            info!("{who}: stopped ({why})");
        } else if !stopping && should_restart(slot.container().restart_policy, exit) {
            let delay = slot::restart_delay(&mut slot.backoff, ran);
            slot.next_start = Some(Instant::now() + delay);
            slot.state = State::Waiting;
            match exit {
                Some(exit) => info!("{who}: {exit} after {ran:?}; starting it again in {delay:?}"),
                None => info!("{who}: starting it again in {delay:?}"),
            }
        } else {
            slot.state = if exit.is_some_and(Exit::success) {
                State::Exited
            } else {
                State::Failed
            };
            match exit {
                Some(exit) => info!("{who}: {exit}; not restarted"),
                None => info!("{who}: not restarted"),
            }
        }
    }

    fn take_probe_results(&mut self) {
        while let Ok(p) = self.probes_rx.try_recv() {
            let (slot, generation) = match &p {
                Probe::Ready { slot, generation }
                | Probe::Failed {
                    slot, generation, ..
                } => (*slot, *generation),
            };
            let Some(s) = self.slots.get_mut(slot) else {
                continue;
            };
            if s.generation != generation || s.state != State::Running {
                continue;
            }
            match p {
                Probe::Ready { .. } => {
                    info!("{}: ready", s.who());
                    s.ready = true;
                }
                Probe::Failed { message, .. } => {
                    warn!("{}: {message}", s.who());
                    s.error = Some(message);
                }
            }
            self.dirty = true;
        }
    }

    /// Rotates every container's log, and the supervisor's own, that has
    /// grown past the testbed's cap (see [`super::logs`]).
    fn rotate_logs(&mut self) {
        let max = self.log_max;
        let own = self.state_dir.join(SUPERVISOR_LOG);
        let logs = self
            .slots
            .iter()
            .map(|s| Path::new(&s.container().log))
            .chain(std::iter::once(own.as_path()));
        let mut rotated = Vec::new();
        for (i, log) in logs.enumerate() {
            match logs::rotate_if_larger(log, max) {
                Ok(true) => rotated.push(i),
                Ok(false) => {}
                Err(e) => warn!("cannot rotate {}: {e}", log.display()),
            }
        }
        // A rotated log starts again at 0 (the supervisor's own is last).
        for i in rotated {
            if let Some(slot) = self.slots.get_mut(i) {
                slot.log_start = 0;
            }
        }
    }

    /// SIGTERM to every container's process group, SIGKILL after the grace
    /// period, everything reaped.
    pub fn shutdown(&mut self) {
        self.stopping = true;
        for slot in &mut self.slots {
            slot.next_start = None;
            slot.cancel_probe();
            if let Some(pid) = slot.pid {
                debug!(pid = pid.as_raw(), "SIGTERM");
                signal_group(pid, Signal::SIGTERM);
            }
        }
        self.dirty = true;
        self.write_status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && self.slots.iter().any(|s| s.pid.is_some()) {
            self.reap();
            thread::sleep(Duration::from_millis(20));
        }
        for i in 0..self.slots.len() {
            if let Some(pid) = self.slots[i].pid {
                warn!(
                    "{}: still running after {STOP_GRACE:?}; SIGKILL",
                    self.slots[i].who()
                );
                signal_group(pid, Signal::SIGKILL);
                let exit = if self.slots[i].adopted {
                    Some(Exit::Signal(libc::SIGKILL))
                } else {
                    reap_one(pid, true)
                };
                self.ended(i, exit.or(Some(Exit::Signal(libc::SIGKILL))));
            }
        }
        self.write_status();
    }

    fn status(&self) -> Status {
        Status {
            name: self.name.clone(),
            supervisor_pid: std::process::id(),
            stopping: self.stopping,
            containers: self
                .slots
                .iter()
                .map(|s| ContainerStatus {
                    kind: s.sandbox.kind,
                    namespace: s.sandbox.namespace.clone(),
                    owner: s.sandbox.name.clone(),
                    container: s.container().name.clone(),
                    pid: s.pid.map(Pid::as_raw),
                    start_time: s.start_time,
                    state: s.state,
                    restarts: s.attempts.saturating_sub(1),
                    last_exit: s.last_exit,
                    ready: s.ready,
                    ready_tcp: s.container().ready_tcp,
                    error: s.error.clone(),
                    log: s.container().log.clone(),
                })
                .collect(),
        }
    }

    /// Writes the status file now.
    pub fn write_status(&mut self) {
        self.writes += 1;
        match status::write(&self.state_dir, &self.status()) {
            Ok(()) => self.dirty = false,
            Err(e) => warn!("{e}"),
        }
    }
}

impl Drop for Supervisor {
    /// Readiness checks end with the supervisor (when it unwinds, too).
    fn drop(&mut self) {
        for slot in &mut self.slots {
            slot.cancel_probe();
        }
    }
}

/// Whether process `pid` runs and is the one that started at `start`
/// (not a zombie, not a reused pid).
fn same_process(pid: i32, start: u64) -> bool {
    pids::start_time(pid) == Some(start) && !pids::is_zombie(pid)
}

mod changes;
mod process;
mod slot;
#[cfg(test)]
mod tests;

pub use process::{claim, install_child_handler, install_handlers, run_until};
use slot::Slot;
pub use slot::{backoff, should_restart};
