//! The supervisor as a process: its signal handlers (SIGTERM and SIGINT
//! stop it, SIGCHLD says a child ended), its pid file, and a loop for
//! running it alone (the controller runs it inside its own loop).
#![allow(unsafe_code)] // the SIGCHLD handler (`sigaction`).

use super::{files, pids, SuperviseError, Supervisor, TICK};
use crate::plan::Plan;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use tracing::info;

/// Installs the handlers of SIGTERM and SIGINT (which set the process's
/// stop flag, returned) and of SIGCHLD, for a process that runs a
/// supervisor.
pub fn install_handlers() -> Result<&'static AtomicBool, SuperviseError> {
    let stop = crate::signals::stop_on_signals()
        .map_err(|(signal, source)| SuperviseError::Signal { signal, source })?;
    install_child_handler()?;
    Ok(stop)
}

/// Counts SIGCHLDs: when it moved, some child ended, and every supervisor
/// of the process looks at its children at its next tick (and otherwise
/// only at the containers it took over, once a second).
pub(super) static CHILD_ENDED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_child(_: libc::c_int) {
    CHILD_ENDED.fetch_add(1, Ordering::SeqCst);
}

/// Makes SIGCHLD mark [`CHILD_ENDED`] (process-wide), so that an idle
/// supervisor does not look at every child at every tick.
pub fn install_child_handler() -> Result<(), SuperviseError> {
    let action = SigAction::new(
        SigHandler::Handler(on_child),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { nix::sys::signal::sigaction(Signal::SIGCHLD, &action) }.map_err(|source| {
        SuperviseError::Signal {
            signal: Signal::SIGCHLD,
            source,
        }
    })?;
    Ok(())
}

/// Claims the supervisor's pid file in `state_dir` (held while the returned
/// value lives).
pub fn claim(state_dir: &Path) -> Result<pids::PidFile, SuperviseError> {
    let pid_path = pids::supervisor_pid_path(state_dir);
    pids::PidFile::claim(&pid_path).map_err(|e| match e {
        pids::PidFileError::AlreadyRunning { pid, .. } => SuperviseError::AlreadyRunning {
            pid: pid as u32,
            state_dir: state_dir.display().to_string(),
        },
        pids::PidFileError::Io { path, source } => SuperviseError::PidFile { path, source },
    })
}

/// Runs the supervisor of `plan` until `stop` is set, then stops every
/// container and returns. (What [`run`] does, without signal handlers.)
pub fn run_until(plan: &Plan, stop: &AtomicBool) -> Result<(), SuperviseError> {
    let state_dir = files::state_dir(&plan.state_dir)?.to_path_buf();
    let _lock = claim(&state_dir)?;
    install_child_handler()?;
    files::prepare(plan)?;
    info!(testbed = %plan.name, pid = std::process::id(), "supervisor started");
    let mut sup = Supervisor::new(plan, state_dir);
    while !stop.load(Ordering::SeqCst) {
        sup.tick();
        thread::sleep(TICK);
    }
    sup.shutdown();
    info!(testbed = %plan.name, "supervisor stopped");
    Ok(())
}
