//! Removes everything a testbed owns, found from the kernel alone: its
//! namespaces are the ones named `tb-NAME.*`, its processes the ones inside
//! them (the supervisor and every daemon run inside a namespace of the
//! testbed too, see `daemons`) and those its pid files name, so this works
//! after a crash or `kill -9` and without the topology file or the state
//! directory. Nothing else is touched.
//!
//! Processes are killed with SIGKILL and waited for for as long as they are
//! still exiting (at scale, thousands of processes take seconds to exit);
//! only a process that has not begun to exit well after SIGKILL, or an exit
//! that makes no progress for a minute, is reported as surviving. Even then
//! the namespaces and the state directory are removed.

use super::exiting::{self, ProcState, Verdict};
use crate::kernel::netns::{self, Netns};
use crate::plan::names;
use crate::state::{self, TestbedName};
use std::time::{Duration, Instant};

/// What a teardown removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Network namespaces (with every interface, address and route in them).
    pub namespaces: usize,
    /// Processes ended.
    pub processes: usize,
}

/// Why a teardown did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    /// A namespace could not be removed.
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    /// Processes survived SIGKILL (everything else was removed).
    #[error("processes {0:?} in the testbed's namespaces did not exit after SIGKILL (stuck in the kernel?); everything else was removed")]
    Survivors(Vec<i32>),
    /// The state directory could not be removed.
    #[error("cannot remove {path}: {source}")]
    State {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The namespaces of testbed `name` that exist now.
pub fn namespaces_of(name: &TestbedName) -> Vec<String> {
    netns::list(&format!("{}.", names::prefix(name.as_str())))
}

/// Every testbed with anything left on this machine: a state directory or a
/// namespace, sorted by name. Entries that are not testbed names are
/// ignored (nothing of them is ever removed).
pub fn testbeds() -> Vec<TestbedName> {
    let mut found: Vec<TestbedName> = netns::list("tb-")
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("tb-")
                .and_then(|r| r.split_once('.'))
                .and_then(|(name, _)| TestbedName::new(name).ok())
        })
        .collect();
    if let Ok(dir) = std::fs::read_dir(state::ROOT) {
        found.extend(
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| TestbedName::new(&n).ok()),
        );
    }
    found.sort();
    found.dedup();
    found
}

/// The processes of testbed `name`: every process inside one of its
/// namespaces (`inodes`) and every daemon its pid files name.
fn processes(name: &TestbedName, inodes: &[u64]) -> Vec<i32> {
    let mut pids = netns::processes_in(inodes);
    pids.extend(
        crate::state::pids::running(&name.dir())
            .into_iter()
            .map(|(_, _, id)| id.pid),
    );
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// How often a progress line is due while processes exit.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Kills every process `find` returns, again and again until a look finds
/// none (a dying supervisor may have forked), waiting for each to exit.
/// Returns how many were killed, or the survivors.
fn kill_all(find: impl Fn() -> Vec<i32>, progress: &mut dyn FnMut(&str)) -> (usize, Vec<i32>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut killed = 0;
    for _sweep in 0..20 {
        let pids = find();
        if pids.is_empty() {
            return (killed, Vec::new());
        }
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        killed += pids.len();
        let survivors = wait_exit(pids, progress);
        if !survivors.is_empty() {
            return (killed, survivors);
        }
    }
    // Something keeps starting processes in the namespaces.
    (killed, find())
}

/// Waits until every pid has exited, as long as they are exiting; returns
/// those that will not.
fn wait_exit(mut pids: Vec<i32>, progress: &mut dyn FnMut(&str)) -> Vec<i32> {
    let killed_at = Instant::now();
    let mut last_change = killed_at;
    let mut last_report = killed_at;
    loop {
        let before = pids.len();
        let states: Vec<(i32, ProcState)> =
            pids.iter().map(|&p| (p, exiting::state_of(p))).collect();
        let now = Instant::now();
        pids = states
            .iter()
            .filter(|(_, s)| *s != ProcState::Gone)
            .map(|(p, _)| *p)
            .collect();
        if pids.len() != before {
            last_change = now;
        }
        match exiting::judge(&states, now - killed_at, now - last_change) {
            Verdict::Done => return Vec::new(),
            Verdict::Stuck(left) => return left,
            Verdict::Wait => {}
        }
        if now - last_report >= PROGRESS_EVERY {
            let n = pids.len();
            let s = if n == 1 { "" } else { "es" };
            progress(&format!("waiting for {n} process{s} to exit"));
            last_report = now;
        }
        // Look less often while many remain: a look reads one /proc file
        // per process (about 20 µs of CPU each).
        let pause = Duration::from_micros(20 * pids.len() as u64 * 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(250));
        std::thread::sleep(pause);
    }
}

/// Removes testbed `name`: ends every process of it, removes its
/// namespaces and its state directory. `progress` hears about long waits.
pub fn teardown(
    name: &TestbedName,
    progress: &mut dyn FnMut(&str),
) -> Result<Removed, TeardownError> {
    let mut removed = Removed::default();
    let started = Instant::now();
    let spaces = namespaces_of(name);
    let inodes: Vec<u64> = spaces
        .iter()
        .filter_map(|n| Netns::open(n).ok())
        .filter_map(|n| n.inode().ok())
        .collect();
    let (killed, survivors) = kill_all(|| processes(name, &inodes), progress);
    removed.processes = killed;
    tracing::debug!(processes = killed, elapsed = ?started.elapsed(), "processes ended");
    if spaces.len() > 100 {
        progress(&format!("removing {} network namespaces", spaces.len()));
    }
    let mut first_error = None;
    for n in &spaces {
        match netns::delete(n) {
            Ok(()) => removed.namespaces += 1,
            Err(e) => {
                first_error.get_or_insert(TeardownError::Netns(e));
            }
        }
    }
    tracing::debug!(namespaces = removed.namespaces, elapsed = ?started.elapsed(), "namespaces removed");
    let dir = name.dir();
    if dir.exists() {
        if let Err(source) = state::remove_dir(&dir) {
            first_error.get_or_insert(TeardownError::State {
                path: dir.display().to_string(),
                source,
            });
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), "state directory removed");
    if !survivors.is_empty() {
        return Err(TeardownError::Survivors(survivors));
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}
