//! Starting the testbed's own long-running processes (the supervisor, and
//! per node the udp overlay daemon and the userspace proxy) detached and
//! *inside* a namespace of the testbed: the supervisor in the fabric's, a
//! node's daemons in the node's. So `down` finds every one of them as a
//! process in the testbed's namespaces, and `state::pids` recognises a
//! running one by its pid file.
//!
//! Each gets the *machine's* network namespace (where `up` ran: the one the
//! real network and etcd are reached from) as an inherited descriptor named
//! by `TESTBED_MACHINE_NETNS_FD`, and passes it on to what it starts, so
//! that a daemon living in a testbed namespace can still talk to etcd
//! ([`machine_netns`], [`in_machine_netns`]).
#![allow(unsafe_code)] // setsid and setns in the child between fork and exec (`pre_exec`).

use crate::state::TestbedName;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub use crate::state::pids::DaemonKind;

/// Starts `testbed KIND NAME [NODE]` detached: its own session, stdin from
/// `/dev/null`, stdout and stderr appended to `log` (created 0600), working
/// directory `/`, inside the network namespace `netns` (a name under
/// `/run/netns`, entered between `fork` and `exec`).
///
/// The program is `/proc/self/exe`, which stays this very binary even after
/// a rebuild replaced the file; its `argv[0]` is `testbed`.
pub fn spawn(
    kind: DaemonKind,
    name: &TestbedName,
    node: Option<&str>,
    netns: &str,
    log: &Path,
) -> io::Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    let err = out.try_clone()?;
    let ns = File::open(crate::kernel::netns::path(netns))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {netns}: {e}")))?;
    let ns_fd = ns.as_raw_fd();
    let machine = machine_netns()?;
    let machine_fd = machine.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("testbed")
        .arg(kind.subcommand())
        .arg(name.as_str())
        .args(node)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env(MACHINE_NETNS_ENV, machine_fd.to_string());
    // SAFETY: setsid, setns and fcntl are async-signal-safe system calls on
    // descriptors that stay open (held by `ns` and `machine`) until after
    // the spawn. Clearing close-on-exec on the machine's descriptor in the
    // child only lets it (and nothing else) through exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0
                || libc::setns(ns_fd, libc::CLONE_NEWNET) < 0
                || libc::fcntl(machine_fd, libc::F_SETFD, 0) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(ns);
    drop(machine);
    child
}

/// The variable naming the inherited descriptor of the machine's namespace.
pub const MACHINE_NETNS_ENV: &str = "TESTBED_MACHINE_NETNS_FD";

/// The machine's network namespace: the one this process inherited from
/// whoever started it (a daemon), or else the calling thread's own (`up`
/// runs in the machine's namespace). An inherited descriptor that is not a
/// network namespace is ignored.
pub fn machine_netns() -> io::Result<File> {
    if let Some(&fd) = INHERITED.get() {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
        if link.to_string_lossy().starts_with("net:[") {
            return File::open(format!("/proc/self/fd/{fd}"));
        }
    }
    File::open("/proc/thread-self/ns/net")
}

/// The inherited descriptor, once [`seal_machine_netns`] took it.
static INHERITED: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// Marks the inherited descriptor of the machine's namespace close-on-exec
/// again, so that containers and programs this process starts do not get
/// it (daemons it starts get it through [`spawn`]). Called first thing by
/// every process of the binary, while it has one thread: the variable is
/// taken out of the environment too.
pub fn seal_machine_netns() {
    let Some(fd) = std::env::var(MACHINE_NETNS_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
    else {
        return;
    };
    std::env::remove_var(MACHINE_NETNS_ENV);
    let _ = INHERITED.set(fd);
    // SAFETY: F_SETFD on a descriptor number only changes its flag; a
    // number that is not open fails with EBADF, which is ignored.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

/// Runs `f` on a thread inside the machine's network namespace: sockets
/// and threads it makes stay there (e.g. an etcd client's).
pub fn in_machine_netns<T: Send>(f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = machine_netns()?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("a thread in the machine's namespace panicked"))?
    })
}
