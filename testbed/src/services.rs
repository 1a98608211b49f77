//! Programs the service proxy of every node of a running testbed. The
//! iptables mode renders kube-proxy-style chains (`proxy::iptables`) and
//! loads them into each node's namespace in one `iptables-restore --noflush`
//! transaction per node; the nftables mode renders one table
//! (`proxy::nftables`) loaded with one `nft -f` transaction per node; the
//! userspace mode is not built yet.

use crate::kernel::netns::Netns;
use crate::plan::Plan;
use std::collections::BTreeSet;
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
    #[error("loading the service rules into node `{node}`: {message}")]
    Restore {
        /// The node.
        node: String,
        /// What went wrong.
        message: String,
    },
}

/// Whether this build programs the plan's proxy mode.
pub fn supported(plan: &Plan) -> bool {
    matches!(
        plan.cluster.proxy,
        proxy::Mode::Iptables | proxy::Mode::Nftables
    )
}

/// The rules for `active` (the plan's services with their current
/// endpoints), and the program that loads them: for `up` (`first`, hooks
/// included) or for an update.
fn rules(
    plan: &Plan,
    active: &[proxy::Service],
    first: bool,
) -> (&'static str, &'static [&'static str], String) {
    match plan.cluster.proxy {
        proxy::Mode::Nftables => (
            "nft",
            &["-f", "-"],
            proxy::nftables::render(&plan.services, active),
        ),
        _ if first => (
            "iptables-restore",
            &["--noflush"],
            proxy::iptables::render(active),
        ),
        _ => (
            "iptables-restore",
            &["--noflush"],
            proxy::iptables::chains(&plan.services, active),
        ),
    }
}

/// The text the plan's proxy mode loads into every node with all endpoints:
/// at `up` (`first`, hooks included) or as an update (what `testbed rules`
/// prints).
pub fn rendered(plan: &Plan, first: bool) -> String {
    rules(plan, &plan.services, first).2
}

/// Loads the service rules into every node (iptables mode), hooks included:
/// for the fresh namespaces of `up`.
pub fn program(plan: &Plan) -> Result<(), ServicesError> {
    if !supported(plan) {
        return Ok(());
    }
    load(plan, rules(plan, &plan.services, true))
}

/// The services with only the endpoints of ready pods.
pub fn with_ready_endpoints(
    plan: &Plan,
    ready: &BTreeSet<(String, String)>,
) -> Vec<proxy::Service> {
    let mut services = plan.services.clone();
    for s in &mut services {
        for p in &mut s.ports {
            p.endpoints
                .retain(|e| ready.contains(&(s.namespace.clone(), e.pod.clone())));
        }
    }
    services
}

/// The pods whose every container runs and is ready, by (namespace, name).
fn ready_pods(plan: &Plan) -> Option<BTreeSet<(String, String)>> {
    use crate::runtime::status::State;
    use crate::runtime::OwnerKind;
    let status = crate::runtime::status::read(std::path::Path::new(&plan.state_dir)).ok()?;
    let mut not_ready = BTreeSet::new();
    for c in status
        .containers
        .iter()
        .filter(|c| c.kind == OwnerKind::Pod)
    {
        let ok = match c.state {
            State::Running => c.ready,
            State::Exited => true,
            State::Waiting | State::Failed => false,
        };
        if !ok {
            not_ready.insert((c.namespace.clone().unwrap_or_default(), c.owner.clone()));
        }
    }
    Some(
        plan.pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .filter(|k| !not_ready.contains(k))
            .collect(),
    )
}

/// Keeps every node's rules following the pods: when a pod stops being
/// ready (its container died, is restarting or failed) its endpoints leave
/// the rotation, and come back when it is ready again. Runs for as long as
/// the supervisor does, checking every 200 ms and re-applying only the
/// testbed's chains, only on a change.
pub fn follow_endpoints(plan: &Plan) {
    if !supported(plan) || plan.services.is_empty() {
        return;
    }
    let mut current = plan
        .pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect::<BTreeSet<_>>();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let Some(ready) = ready_pods(plan) else {
            continue;
        };
        if ready == current {
            continue;
        }
        match load(
            plan,
            rules(plan, &with_ready_endpoints(plan, &ready), false),
        ) {
            Ok(()) => {
                tracing::info!(ready = ready.len(), "service endpoints updated");
                write_programmed(plan, &ready);
                current = ready;
            }
            Err(e) => tracing::warn!(error = %e, "updating service endpoints"),
        }
    }
}

/// The file where the supervisor records which pods' endpoints the nodes'
/// rules hold.
fn programmed_path(plan: &Plan) -> std::path::PathBuf {
    std::path::Path::new(&plan.state_dir).join("endpoints.json")
}

fn write_programmed(plan: &Plan, ready: &BTreeSet<(String, String)>) {
    let path = programmed_path(plan);
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string(ready).unwrap_or_default();
    if std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        tracing::warn!(path = %path.display(), "cannot record the programmed endpoints");
    }
}

/// Waits until the nodes' rules hold the endpoints of every pod that is
/// ready now, so that `up` returns with services that answer. Gives up
/// quietly at `deadline` (the rules follow within a poll anyway).
pub fn wait_programmed(plan: &Plan, deadline: std::time::Instant) {
    if !supported(plan) || plan.services.is_empty() {
        return;
    }
    while std::time::Instant::now() < deadline {
        let want = ready_pods(plan);
        let have: Option<BTreeSet<(String, String)>> =
            std::fs::read_to_string(programmed_path(plan))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        if want.is_some() && want == have {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn load(plan: &Plan, (program, args, rules): (&str, &[&str], String)) -> Result<(), ServicesError> {
    for n in &plan.nodes {
        let ns = Netns::open(&n.netns)?;
        let fd = ns.file.as_raw_fd();
        let restore = |message: String| ServicesError::Restore {
            node: n.name.clone(),
            message,
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
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
                format!("{program} is not installed (Debian: apt-get install iptables nftables)")
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
