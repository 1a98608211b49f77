//! Pid files of the testbed's daemons (the supervisor, and per node the
//! overlay daemon and the userspace proxy), in the state directory. A
//! running daemon locks its pid file (an open-file-description lock, which
//! lasts exactly as long as the process and is not inherited by what it
//! executes) and writes its identity into it: pid, start time and program.
//! A daemon is recognised only by a locked pid file whose identity matches
//! the live process, never by a command line: a reused pid, or a user's
//! process that merely calls itself `testbed supervise NAME`, is not taken
//! for one.
#![allow(unsafe_code)] // open file description locks (`fcntl` F_OFD_*), which nix does not wrap.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A kind of daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DaemonKind {
    /// `testbed supervise NAME`: containers, restarts, endpoints, the
    /// other daemons.
    Supervisor,
    /// `testbed overlay-daemon NAME NODE`: a node's udp overlay.
    Overlay,
    /// `testbed proxy-daemon NAME NODE`: a node's userspace proxy.
    Proxy,
}

impl DaemonKind {
    /// The hidden subcommand that runs it.
    pub fn subcommand(self) -> &'static str {
        match self {
            DaemonKind::Supervisor => "supervise",
            DaemonKind::Overlay => "overlay-daemon",
            DaemonKind::Proxy => "proxy-daemon",
        }
    }

    /// The directory of the state directory its files are in.
    fn dir(self) -> &'static str {
        match self {
            DaemonKind::Supervisor => "",
            DaemonKind::Overlay => crate::layout::OVERLAY_DIR,
            DaemonKind::Proxy => crate::layout::PROXY_DIR,
        }
    }
}

/// The supervisor's pid file: `STATE/supervisor.pid`.
pub fn supervisor_pid_path(state_dir: &Path) -> PathBuf {
    crate::layout::supervisor_pid(state_dir)
}

/// The pid file of a daemon of node `node`: `STATE/overlay/NODE.pid` or
/// `STATE/proxy/NODE.pid` (a supervisor has one file whatever the node).
pub fn pid_path(state_dir: &Path, kind: DaemonKind, node: &str) -> PathBuf {
    match kind {
        DaemonKind::Supervisor => supervisor_pid_path(state_dir),
        _ => crate::layout::daemon_pid(state_dir, kind.dir(), node),
    }
}

/// What a pid file says: which process holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The process.
    pub pid: i32,
    /// Its start time (clock ticks after boot, `/proc/PID/stat` field 22):
    /// with the pid, unique for the machine's uptime.
    pub start_time: u64,
    /// Device and inode of its program (`/proc/PID/exe`).
    pub exe: (u64, u64),
}

impl Identity {
    /// The identity of process `pid` now, if it exists.
    pub fn of(pid: i32) -> Option<Identity> {
        let start_time = start_time(pid)?;
        let exe = fs::metadata(format!("/proc/{pid}/exe")).ok()?;
        Some(Identity {
            pid,
            start_time,
            exe: (exe.dev(), exe.ino()),
        })
    }

    /// Whether this process still runs (the same process: same pid, start
    /// time and program; not a zombie).
    pub fn alive(&self) -> bool {
        Identity::of(self.pid).is_some_and(|now| now == *self) && !is_zombie(self.pid)
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// Whether process `pid` has exited and waits to be reaped.
pub fn is_zombie(pid: i32) -> bool {
    stat_field(pid, 3).is_some_and(|s| s == "Z" || s == "X")
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may hold anything.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_string)
}

/// Why a pid file could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another process holds it.
    #[error("already running as pid {pid} ({path})")]
    AlreadyRunning {
        /// Its pid (0 when it has not written it yet).
        pid: i32,
        /// The pid file.
        path: PathBuf,
    },
    /// It cannot be created, locked or written.
    #[error("cannot claim {path}: {source}")]
    Io {
        /// The pid file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// A pid file held by the running daemon: an open-file-description lock on
/// it lasts exactly as long as the process (and is not inherited by what it
/// executes).
#[derive(Debug)]
pub struct PidFile {
    _file: File,
}

fn whole_file_lock() -> libc::flock {
    // SAFETY: flock is plain data; zero is a valid start.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

impl PidFile {
    /// Locks the pid file at `path` (creating it 0600, and its directory
    /// 0700) and writes this
    /// process's identity into it; fails if another process holds it.
    pub fn claim(path: &Path) -> Result<PidFile, PidFileError> {
        let io = |source| PidFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            super::create_private_dir(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let lock = whole_file_lock();
        // SAFETY: F_OFD_SETLK reads the flock struct it is given.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
                return Err(PidFileError::AlreadyRunning {
                    pid: holder(path).map_or(0, |i| i.pid),
                    path: path.to_path_buf(),
                });
            }
            return Err(io(e));
        }
        let me = Identity::of(std::process::id() as i32)
            .ok_or_else(|| io(io::Error::other("cannot read /proc/self")))?;
        let text = serde_json::to_string(&me).map_err(|e| io(io::Error::other(e)))?;
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(PidFile { _file: file })
    }
}

/// Whether the pid file at `path` is locked by a live process.
fn locked(file: &File) -> bool {
    let mut lock = whole_file_lock();
    // SAFETY: F_OFD_GETLK fills the flock struct it is given.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    r == 0 && lock.l_type != libc::F_UNLCK as libc::c_short
}

/// The daemon holding the pid file at `path`, if one runs: the file is
/// locked and the process it names is alive with the recorded start time
/// and program.
pub fn holder(path: &Path) -> Option<Identity> {
    let mut file = File::open(path).ok()?;
    if !locked(&file) {
        return None;
    }
    // The identity is written right after the lock is taken.
    for _ in 0..50 {
        let mut text = String::new();
        let _ = file.rewind();
        if file.read_to_string(&mut text).is_ok() {
            if let Ok(id) = serde_json::from_str::<Identity>(&text) {
                return id.alive().then_some(id);
            }
            // An earlier release wrote the bare pid; its lock still says
            // the process lives.
            if let Ok(pid) = text.trim().parse::<i32>() {
                return Identity::of(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// The pid of the running supervisor of the testbed whose state directory
/// is `state_dir`.
pub fn supervisor(state_dir: &Path) -> Option<i32> {
    holder(&supervisor_pid_path(state_dir)).map(|i| i.pid)
}

/// Every daemon of the testbed with state directory `state_dir` that runs
/// now, found by its pid file: the supervisor, then the nodes' daemons.
pub fn running(state_dir: &Path) -> Vec<(DaemonKind, Option<String>, Identity)> {
    let mut out = Vec::new();
    if let Some(id) = holder(&supervisor_pid_path(state_dir)) {
        out.push((DaemonKind::Supervisor, None, id));
    }
    for kind in [DaemonKind::Overlay, DaemonKind::Proxy] {
        let Ok(dir) = fs::read_dir(state_dir.join(kind.dir())) else {
            continue;
        };
        let mut found: Vec<(String, Identity)> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let node = name.strip_suffix(".pid")?.to_string();
                Some((node, holder(&e.path())?))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(found.into_iter().map(|(n, id)| (kind, Some(n), id)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let me = std::process::id() as i32;
        assert_eq!(stat_field(me, 1), None);
        assert!(matches!(stat_field(me, 3).as_deref(), Some("R" | "S")));
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert!(!is_zombie(me));
        let id = Identity::of(me).expect("own identity");
        assert!(id.alive());
        assert!(!Identity {
            start_time: id.start_time + 1,
            ..id
        }
        .alive());
        assert!(!Identity { exe: (0, 0), ..id }.alive());
    }

    #[test]
    fn a_pid_file_names_its_holder_only_while_it_is_held() {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = supervisor_pid_path(&dir);
        assert_eq!(holder(&path), None, "no file");
        let held = PidFile::claim(&path).expect("claim");
        let id = holder(&path).expect("held");
        assert_eq!(id.pid, std::process::id() as i32);
        // The same process, another open file description: refused.
        assert!(matches!(
            PidFile::claim(&path),
            Err(PidFileError::AlreadyRunning { pid, .. }) if pid == id.pid
        ));
        drop(held);
        assert_eq!(holder(&path), None, "released with the file");
        // A file that names a live process but is not locked names nobody.
        fs::write(&path, serde_json::to_string(&id).unwrap()).unwrap();
        assert_eq!(holder(&path), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
