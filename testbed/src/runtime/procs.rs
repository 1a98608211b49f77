//! Process plumbing of the supervisor: starting many containers at once,
//! signalling a container's process group, and reaping a container (its
//! group killed first, while the leader still holds the group's id).

use super::status::Exit;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::sync::atomic::Ordering;
use std::thread;
use tracing::warn;

/// How many containers are started at once.
pub(crate) const STARTERS: usize = 4;

/// `f` of every item, computed on up to `threads` threads: `(position,
/// result)` in item order. (A thread that panicked loses its items' results.)
pub(crate) fn parallel_map<T: Send>(
    items: &[usize],
    threads: usize,
    f: impl Fn(usize) -> T + Sync,
) -> Vec<(usize, T)> {
    if items.len() < 2 {
        return items.iter().map(|&i| f(i)).enumerate().collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = thread::scope(|s| {
        let workers: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&item) = items.get(k) else {
                            return mine;
                        };
                        mine.push((k, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    out.sort_by_key(|(k, _)| *k);
    out
}

/// Sends `signal` to the process group of the container led by `pid` (its
/// session, see `launch`), or to `pid` alone if the group is gone.
pub(crate) fn signal_group(pid: Pid, signal: Signal) {
    if killpg(pid, signal).is_err() {
        let _ = nix::sys::signal::kill(pid, signal);
    }
}

/// Reaps the container process `pid` if it exited (or waits for it, with
/// `block`): first the rest of its process group is killed, while the
/// unreaped leader still holds the group's id, then the leader is reaped.
pub(crate) fn reap_one(pid: Pid, block: bool) -> Option<Exit> {
    let mut flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    if !block {
        flags |= WaitPidFlag::WNOHANG;
    }
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => return None,
        Ok(_) => {}
        Err(e) => {
            // Not our child (any more): nothing to reap.
            warn!(pid = pid.as_raw(), "waitid: {e}");
            return Some(Exit::Code(-1));
        }
    }
    let _ = killpg(pid, Signal::SIGKILL);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(Exit::Signal(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                warn!(pid = pid.as_raw(), "waitpid: {e}");
                return Some(Exit::Code(-1));
            }
        }
    }
}
