//! Reading the supervisor's status file (`STATE_DIR/status.json`, whose
//! records are [`crate::state::status`]'s): which pods can serve, and
//! waiting until every container is ready ([`wait_ready`], for `up`). The
//! supervisor rewrites the file atomically on every change.

use crate::state::files::{self, FileError};
use std::path::Path;
use std::time::{Duration, Instant};

pub use crate::state::status::{ContainerStatus, Exit, State, Status};

/// How often [`wait_ready`] reads the status file.
const POLL: Duration = Duration::from_millis(100);

/// Why the status could not be read or the testbed is not ready.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The file cannot be read, or is not a status file.
    #[error(transparent)]
    File(#[from] FileError),
    /// Containers are not ready: one failed for good, or the deadline passed.
    #[error("not ready:\n{what}")]
    NotReady {
        /// One indented line per container that is not ready.
        what: String,
    },
    /// No supervisor runs for this state directory.
    #[error("the supervisor of {state_dir} is not running{last}")]
    SupervisorGone {
        /// The state directory.
        state_dir: String,
        /// What the status file said last.
        last: String,
    },
}

/// The pods that can serve: at least one container running, and every
/// container running and ready or finished successfully (a sidecar that
/// ran to completion).
pub fn serving(containers: &[ContainerStatus]) -> std::collections::BTreeSet<(String, String)> {
    use crate::state::status::OwnerKind;
    use std::collections::BTreeMap;
    // (namespace, pod) -> (any container running, all fine)
    let mut pods: BTreeMap<(String, String), (bool, bool)> = BTreeMap::new();
    for c in containers.iter().filter(|c| c.kind == OwnerKind::Pod) {
        let e = pods
            .entry((c.namespace.clone().unwrap_or_default(), c.owner.clone()))
            .or_insert((false, true));
        match c.state {
            State::Running => {
                e.0 = true;
                e.1 &= c.ready;
            }
            State::Exited => {}
            State::Waiting | State::Failed => e.1 = false,
        }
    }
    pods.into_iter()
        .filter(|(_, (running, fine))| *running && *fine)
        .map(|(k, _)| k)
        .collect()
}

/// Reads `STATE_DIR/status.json`.
pub fn read(state_dir: &Path) -> Result<Status, StatusError> {
    Ok(files::status(state_dir).read()?)
}

/// Writes `STATE_DIR/status.json` atomically.
pub fn write(state_dir: &Path, status: &Status) -> Result<(), FileError> {
    files::status(state_dir).write(status)
}

/// Waits until every container is settled (running and ready, or ended
/// successfully for good), polling the status file until `deadline`.
/// Fails at once when a container failed for good or the supervisor is gone,
/// and at the deadline naming every container that is not ready, with its
/// state, last exit, restarts and log file.
pub fn wait_ready(state_dir: &Path, deadline: Instant) -> Result<Status, StatusError> {
    loop {
        let status = files::status(state_dir).read_if_there()?;
        let running = crate::state::pids::supervisor(state_dir);
        let alive = running.is_some();
        // A status the running supervisor did not write (one that died
        // wrote it, and this one took its containers over) says nothing
        // yet of readiness as this one probes it.
        let status = status.filter(|s| !alive || running == i32::try_from(s.supervisor_pid).ok());
        if let Some(status) = &status {
            let failed: Vec<_> = status
                .containers
                .iter()
                .filter(|c| c.state == State::Failed)
                .collect();
            if !failed.is_empty() {
                return Err(StatusError::NotReady {
                    what: lines(&failed),
                });
            }
            if !alive || status.stopping {
                let pending: Vec<_> = status.containers.iter().filter(|c| !c.settled()).collect();
                return Err(StatusError::SupervisorGone {
                    state_dir: state_dir.display().to_string(),
                    last: if pending.is_empty() {
                        String::new()
                    } else {
                        format!("; it last reported:\n{}", lines(&pending))
                    },
                });
            }
            if status.containers.iter().all(ContainerStatus::settled) {
                return Ok(status.clone());
            }
        }
        if Instant::now() >= deadline {
            let what = match &status {
                Some(s) => lines(
                    &s.containers
                        .iter()
                        .filter(|c| !c.settled())
                        .collect::<Vec<_>>(),
                ),
                None => format!(
                    "  no status in {} yet (is the supervisor running?)",
                    files::status(state_dir).path().display()
                ),
            };
            return Err(StatusError::NotReady { what });
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn lines(containers: &[&ContainerStatus]) -> String {
    containers
        .iter()
        .map(|c| format!("  {}", c.describe()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_without_a_supervisor_times_out_with_a_clear_message() {
        let dir = crate::runtime::testutil::TempDir::new();
        let err = wait_ready(dir.path(), Instant::now() + Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("no status in"), "{err}");
    }
}
