//! Named network namespaces, as iproute2 keeps them: a file under
//! `/run/netns` on which the namespace is bind-mounted, so `ip netns exec`
//! works on them too. Creating one also opens a netlink connection inside it,
//! and removing one finds and ends the processes still inside it.
#![allow(unsafe_code)] // setns in a child between fork and exec (`pre_exec`).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name is already used.
    #[error("network namespace `{0}` already exists (another testbed, or one left behind: `testbed down` removes it)")]
    Exists(String),
    /// A system call failed.
    #[error("{what} `{name}`: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The namespace.
        name: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn sys(what: &'static str, name: &str, e: impl Into<std::io::Error>) -> NetnsError {
    NetnsError::Sys {
        what,
        name: name.to_string(),
        source: e.into(),
    }
}

/// The path of namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// An open handle on a named namespace.
#[derive(Debug)]
pub struct Netns {
    /// Its name.
    pub name: String,
    /// The open namespace file.
    pub file: File,
}

impl Netns {
    /// Opens an existing namespace.
    pub fn open(name: &str) -> Result<Netns, NetnsError> {
        let file = File::open(path(name)).map_err(|e| sys("opening namespace", name, e))?;
        Ok(Netns {
            name: name.to_string(),
            file,
        })
    }

    /// The namespace's inode, which `/proc/PID/ns/net` of its processes shows.
    pub fn inode(&self) -> Result<u64, NetnsError> {
        self.file
            .metadata()
            .map(|m| m.ino())
            .map_err(|e| sys("reading namespace", &self.name, e))
    }

    /// A netlink connection whose socket is opened inside this namespace;
    /// its connection task runs on `rt`.
    pub fn netlink(&self, rt: &tokio::runtime::Runtime) -> Result<rtnetlink::Handle, NetnsError> {
        let handle = rt.handle().clone();
        let conn = self.run_in(move || {
            let _enter = handle.enter();
            rtnetlink::new_connection()
        })?;
        let (conn, handle, _) = conn.map_err(|e| sys("opening netlink in", &self.name, e))?;
        rt.spawn(conn);
        Ok(handle)
    }

    /// Runs `program args` inside this namespace, feeding it `input`, and
    /// returns its output whatever its exit status. Only the child enters
    /// the namespace (between fork and exec), so no thread of this process
    /// changes namespace. An error of kind `NotFound` means the program is
    /// not installed.
    pub fn command(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> std::io::Result<std::process::Output> {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let fd = self.file.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; it moves only the child into
        // the namespace before the program runs.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // A program that stops reading early (it found an error) closes the
        // pipe: what it says on stderr is the real story, so always wait.
        let written = match (child.stdin.take(), input) {
            (Some(mut stdin), Some(text)) => stdin.write_all(text.as_bytes()),
            _ => Ok(()),
        };
        let out = child.wait_with_output()?;
        match written {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe && out.status.success() => Err(
                std::io::Error::new(e.kind(), format!("writing to {program}: {e}")),
            ),
            _ => Ok(out),
        }
    }

    /// Runs `f` on a new thread that has entered this namespace (the calling
    /// thread's namespace never changes) and waits for it; `f` may borrow
    /// from the caller.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| sys("opening namespace", &self.name, e))?;
        let name = self.name.clone();
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .spawn_scoped(scope, move || {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| sys("entering namespace", &name, e))?;
                    Ok(f())
                })
                .map_err(|e| sys("entering namespace", &self.name, e))?
                .join()
                .unwrap_or_else(|_| {
                    Err(sys(
                        "entering namespace",
                        &self.name,
                        std::io::Error::other("thread panicked"),
                    ))
                })
        })
    }
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that
/// namespace mounts made under it are seen by every mount namespace.
pub fn prepare_dir() -> Result<(), NetnsError> {
    fs::create_dir_all(NETNS_DIR).map_err(|e| sys("creating", NETNS_DIR, e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>).is_ok() {
        return Ok(());
    }
    mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| sys("bind-mounting", NETNS_DIR, e))?;
    mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>)
        .map_err(|e| sys("sharing", NETNS_DIR, e))
}

/// Creates namespace `name` by moving the *calling thread* into a new
/// namespace and pinning it under `/run/netns`. The caller must be a thread
/// of its own that is dedicated to this; it stays in the new namespace, so
/// that it can open sockets there before it ends.
///
/// With `anchor` (an empty file in `/run/netns` that is never mounted on),
/// the file the namespace is pinned on is a hard link to it rather than a
/// new file: a mount point is a directory entry, not an inode, and where
/// `/run` is a disk file system (not the usual tmpfs) allocating thousands
/// of inodes was a quarter of the cost of `up`.
pub fn create_here(name: &str, anchor: Option<&Path>) -> Result<Netns, NetnsError> {
    let p = path(name);
    let made = match anchor {
        Some(a) => fs::hard_link(a, &p),
        None => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&p)
            .map(drop),
    };
    made.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            NetnsError::Exists(name.to_string())
        } else {
            sys("creating namespace file", name, e)
        }
    })?;
    let pinned = unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| sys("creating namespace", name, e))
        .and_then(|()| {
            mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| sys("pinning namespace", name, e))
        });
    if let Err(e) = pinned {
        let _ = fs::remove_file(&p);
        return Err(e);
    }
    Netns::open(name)
}

/// An empty file in `/run/netns` for [`create_here`]'s hard links, removed
/// again on drop. Its name has the testbed's prefix, so that `down` removes
/// one left by a crash.
#[derive(Debug)]
pub struct Anchor {
    path: PathBuf,
}

impl Anchor {
    /// Creates `/run/netns/NAME`.
    pub fn create(name: &str) -> Result<Anchor, NetnsError> {
        let p = path(name);
        let _ = fs::remove_file(&p);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&p)
            .map_err(|e| sys("creating namespace file", name, e))?;
        Ok(Anchor { path: p })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Removes namespace `name`: unpins and deletes its file. The kernel frees
/// the namespace, and every interface in it, once no process is inside.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    let p = path(name);
    match umount2(&p, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(sys("unpinning namespace", name, e)),
    }
    match fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(sys("removing namespace file", name, e)),
    }
}

/// The names of the namespaces under `/run/netns` that start with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// The processes whose network namespace is one of `inodes`.
pub fn processes_in(inodes: &[u64]) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(meta) = fs::metadata(format!("/proc/{pid}/ns/net")) {
            if inodes.contains(&meta.ino()) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Sends SIGKILL to every pid and waits (up to `timeout`) until they are gone.
pub fn kill_and_wait(pids: &[i32], timeout: Duration) -> Vec<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|p| {
                // A zombie has exited: its parent reaps it.
                fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
            })
            .collect();
        if alive.is_empty() || Instant::now() > deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
