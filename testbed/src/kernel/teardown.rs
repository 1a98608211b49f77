//! Removes everything a testbed owns, found from the kernel alone: its
//! namespaces are the ones named `tb-NAME.*`, its processes the ones inside
//! them (and its supervisor), so this works after a crash or `kill -9` and
//! without the topology file or the state directory. Nothing else is touched.

use crate::kernel::netns::{self, Netns};
use crate::plan::build::STATE_ROOT;
use crate::plan::names;
use std::path::Path;
use std::time::Duration;

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
    /// Processes survived SIGKILL.
    #[error("processes {0:?} in the testbed's namespaces did not exit")]
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
pub fn namespaces_of(name: &str) -> Vec<String> {
    netns::list(&format!("{}.", names::prefix(name)))
}

/// The state directory of testbed `name`.
pub fn state_dir(name: &str) -> String {
    format!("{STATE_ROOT}/{name}")
}

/// Every testbed with anything left on this machine: a state directory or a
/// namespace, sorted by name.
pub fn testbeds() -> Vec<String> {
    let mut found: Vec<String> = netns::list("tb-")
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("tb-")
                .and_then(|r| r.split_once('.'))
                .map(|(name, _)| name.to_string())
        })
        .collect();
    if let Ok(dir) = std::fs::read_dir(STATE_ROOT) {
        found.extend(
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok()),
        );
    }
    found.sort();
    found.dedup();
    found
}

/// The supervisor processes of testbed `name`: `testbed supervise NAME`.
pub fn supervisors(name: &str) -> Vec<i32> {
    daemons(name, &["supervise"])
        .into_iter()
        .map(|d| d.pid)
        .collect()
}

/// One of a testbed's own processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Its pid.
    pub pid: i32,
    /// Its kind: the subcommand (`supervise`, `overlay-daemon`, ...).
    pub kind: String,
    /// Its node, for a node's daemon.
    pub node: Option<String>,
}

/// The testbed's own processes of one of `kinds` for testbed `name`:
/// `testbed KIND NAME [NODE]`. Found by their command line, wherever they
/// are (a daemon that has not yet entered its node's namespace too).
pub fn daemons(name: &str, kinds: &[&str]) -> Vec<Daemon> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            if !args.first().is_some_and(|a| a.ends_with(b"testbed")) {
                return None;
            }
            let at = args.windows(2).position(|w| {
                kinds.iter().any(|k| w[0] == k.as_bytes()) && w[1] == name.as_bytes()
            })?;
            let node = args
                .get(at + 2)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf8_lossy(n).into_owned());
            Some(Daemon {
                pid,
                kind: String::from_utf8_lossy(args[at]).into_owned(),
                node,
            })
        })
        .collect()
}

/// The kinds of daemon a testbed runs besides its supervisor.
pub const NODE_DAEMONS: [&str; 2] = ["overlay-daemon", "proxy-daemon"];

/// Removes testbed `name`: ends its supervisor and every process inside its
/// namespaces, removes the namespaces and the state directory.
pub fn teardown(name: &str) -> Result<Removed, TeardownError> {
    let mut removed = Removed::default();
    // The supervisor first (nothing starts daemons again once it is gone),
    // then the daemons, found by their command lines. Scanning again until
    // a pass finds nothing also catches a daemon the supervisor was forking
    // as it died: until it execs, it still looks like `supervise NAME`.
    let kinds = ["supervise", NODE_DAEMONS[0], NODE_DAEMONS[1]];
    for pass in 0.. {
        let found: Vec<i32> = if pass == 0 {
            supervisors(name)
        } else {
            daemons(name, &kinds).into_iter().map(|d| d.pid).collect()
        };
        if found.is_empty() && pass > 0 {
            break;
        }
        removed.processes += found.len();
        let left = netns::kill_and_wait(&found, Duration::from_secs(5));
        if !left.is_empty() {
            return Err(TeardownError::Survivors(left));
        }
        if pass > 10 {
            // Something keeps starting them: give up rather than loop.
            return Err(TeardownError::Survivors(found));
        }
    }
    let spaces = namespaces_of(name);
    let inodes: Vec<u64> = spaces
        .iter()
        .filter_map(|n| Netns::open(n).ok())
        .filter_map(|n| n.inode().ok())
        .collect();
    let procs = netns::processes_in(&inodes);
    removed.processes += procs.len();
    let left = netns::kill_and_wait(&procs, Duration::from_secs(5));
    if !left.is_empty() {
        return Err(TeardownError::Survivors(left));
    }
    for n in &spaces {
        netns::delete(n)?;
        removed.namespaces += 1;
    }
    let dir = state_dir(name);
    if Path::new(&dir).exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| TeardownError::State {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(removed)
}
