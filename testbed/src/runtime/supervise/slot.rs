//! One container as the supervisor knows it (`Slot`), and the restart
//! rules: whether a container that ended is started again, and after how
//! long.

use super::{BACKOFF_MAX, BACKOFF_MIN, BACKOFF_RESET};
use crate::plan::types::ContainerPlan;
use crate::runtime::launch;
use crate::runtime::status::{Exit, State};
use crate::runtime::OwnedSandbox;
use crate::topology::model::RestartPolicy;
use nix::unistd::Pid;
use overlay::backoff::Backoff;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One container and where it stands.
pub(super) struct Slot {
    pub(super) sandbox: Arc<OwnedSandbox>,
    /// Its index in the sandbox's containers.
    pub(super) index: usize,
    pub(super) pid: Option<Pid>,
    pub(super) started: Instant,
    pub(super) state: State,
    pub(super) attempts: u32,
    pub(super) last_exit: Option<Exit>,
    pub(super) ready: bool,
    pub(super) error: Option<String>,
    pub(super) backoff: Backoff,
    pub(super) next_start: Option<Instant>,
    /// Counts starts, so a late readiness result of an earlier run is ignored.
    pub(super) generation: u64,
    /// Set to end the running readiness check.
    pub(super) probe_cancel: Option<Arc<AtomicBool>>,
    /// When its process started (clock ticks), to know it again.
    pub(super) start_time: Option<u64>,
    /// Its process was started by an earlier supervisor: not a child of
    /// this one, so watched, not reaped.
    pub(super) adopted: bool,
    /// Why it is held stopped (its node is down), if it is.
    pub(super) held: Option<String>,
    /// Where its current run began writing in its log (0 after a
    /// rotation), for `logs --previous`.
    pub(super) log_start: u64,
}

impl Slot {
    pub(super) fn container(&self) -> &ContainerPlan {
        &self.sandbox.containers[self.index]
    }

    pub(super) fn who(&self) -> String {
        launch::who(&self.sandbox.view(), &self.container().name)
    }

    pub(super) fn new(sandbox: Arc<OwnedSandbox>, index: usize, now: Instant) -> Slot {
        Slot {
            sandbox,
            index,
            pid: None,
            started: now,
            state: State::Waiting,
            attempts: 0,
            last_exit: None,
            ready: false,
            error: None,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            next_start: Some(now),
            generation: 0,
            probe_cancel: None,
            start_time: None,
            adopted: false,
            held: None,
            log_start: 0,
        }
    }

    pub(super) fn cancel_probe(&mut self) {
        if let Some(c) = self.probe_cancel.take() {
            c.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether a container ended this way is started again.
pub fn should_restart(policy: RestartPolicy, exit: Option<Exit>) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.is_some_and(Exit::success),
        RestartPolicy::Never => false,
    }
}

/// The delay before the next restart and the delay after that, given the
/// current delay and how long the run lasted.
pub fn backoff(current: Duration, ran: Duration) -> (Duration, Duration) {
    let mut b = Backoff::resume(BACKOFF_MIN, BACKOFF_MAX, current);
    let delay = restart_delay(&mut b, ran);
    (delay, b.next())
}

/// The delay before the next restart of a run that lasted `ran`: a long
/// run starts the back-off again.
pub fn restart_delay(b: &mut Backoff, ran: Duration) -> Duration {
    if ran >= BACKOFF_RESET {
        b.succeeded();
    }
    b.failed()
}
