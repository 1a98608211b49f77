//! Programs the service proxy of every node of a running testbed. The
//! iptables mode renders kube-proxy-style chains (`proxy::iptables`) and
//! loads them into each node's namespace in one `iptables-restore --noflush`
//! transaction per node; the nftables and userspace modes are not built yet.

use crate::kernel::netns::Netns;
use crate::plan::Plan;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// Why the rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// A namespace could not be opened.
    #[error(transparent)]
    Netns(#[from] crate::kernel::netns::NetnsError),
    /// iptables-restore failed or is missing.
    #[error("loading the service rules into node `{node}` with iptables-restore: {message}")]
    Restore {
        /// The node.
        node: String,
        /// What went wrong.
        message: String,
    },
}

/// Whether this build programs the plan's proxy mode.
pub fn supported(plan: &Plan) -> bool {
    plan.cluster.proxy == proxy::Mode::Iptables
}

/// Loads the service rules into every node (iptables mode).
pub fn program(plan: &Plan) -> Result<(), ServicesError> {
    if !supported(plan) {
        return Ok(());
    }
    let rules = proxy::iptables::render(&plan.services);
    for n in &plan.nodes {
        let ns = Netns::open(&n.netns)?;
        let fd = ns.file.as_raw_fd();
        let restore = |message: String| ServicesError::Restore {
            node: n.name.clone(),
            message,
        };
        let mut cmd = Command::new("iptables-restore");
        cmd.arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        use std::os::unix::process::CommandExt;
        // SAFETY: setns is async-signal-safe; it moves only the child into
        // the node's namespace before iptables-restore runs.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            restore(if e.kind() == std::io::ErrorKind::NotFound {
                "iptables-restore is not installed (Debian: apt-get install iptables)".into()
            } else {
                e.to_string()
            })
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| restore(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| restore(e.to_string()))?;
        if !out.status.success() {
            return Err(restore(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
    }
    Ok(())
}
