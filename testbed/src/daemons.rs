//! Starting the testbed's own long-running processes (the supervisor, and
//! per node the udp overlay daemon and the userspace proxy) detached and
//! *inside* a namespace of the testbed: the supervisor in the fabric's, a
//! node's daemons in the node's. So `down` finds every one of them as a
//! process in the testbed's namespaces, and `state::pids` recognises a
//! running one by its pid file.
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
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("testbed")
        .arg(kind.subcommand())
        .arg(name.as_str())
        .args(node)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid and setns are async-signal-safe system calls on a
    // descriptor that stays open (held by `ns`) until after the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::setns(ns_fd, libc::CLONE_NEWNET) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(ns);
    child
}
