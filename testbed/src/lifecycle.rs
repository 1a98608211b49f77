//! Bringing a testbed up and down as one transaction: checks first (root,
//! name free, programs exist), then the state directory, the kernel objects,
//! the supervisor and its containers, and readiness. Any failure removes all
//! of it again. The state directory holds the plan (`plan.json`), the
//! supervisor's pid, status and logs; teardown does not need it.

use crate::kernel::{apply, teardown};
use crate::plan::Plan;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why `up` failed. Nothing is left behind in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// Not running as root.
    #[error("testbed up needs root to create network namespaces: run it with sudo")]
    NotRoot,
    /// The same name runs with another topology.
    #[error("a testbed named `{0}` is already running with a different topology; run `testbed down {0}` first, or rename this one")]
    Conflict(String),
    /// Objects of this name exist without a state directory.
    #[error("leftovers of a testbed named `{0}` exist ({1} network namespaces, no state); run `testbed down {0}` first")]
    Leftovers(String, usize),
    /// A container's program cannot be found.
    #[error("{0}")]
    Command(String),
    /// The state directory could not be written.
    #[error("cannot write the state directory {path}: {source}")]
    State {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel refused something.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    /// Impairments that cannot be applied as asked.
    #[error("{0}")]
    Impairment(String),
    /// The overlay could not start.
    #[error(transparent)]
    Overlay(#[from] crate::overlay_run::OverlayRunError),
    /// The service rules could not be loaded.
    #[error(transparent)]
    Services(#[from] crate::services::ServicesError),
    /// The supervisor could not start.
    #[error("cannot start the supervisor: {0}")]
    Supervisor(String),
    /// Something was not ready in time.
    #[error("not ready after {timeout:?}: {what}")]
    NotReady {
        /// The limit.
        timeout: Duration,
        /// What was not ready.
        what: String,
    },
}

/// What `up` did.
#[derive(Debug)]
pub enum UpOutcome {
    /// It built the testbed.
    Started(apply::Timings),
    /// The same topology was already running: nothing changed. Lists the
    /// nodes whose impairments `testbed impair` has changed since (they
    /// keep the live ones).
    AlreadyUp(Vec<String>),
}

/// The path of a testbed's saved plan.
pub fn plan_path(name: &str) -> PathBuf {
    Path::new(&teardown::state_dir(name)).join("plan.json")
}

/// Where `testbed impair` keeps the plan as `up` filed it, before its first
/// live change.
fn filed_path(name: &str) -> PathBuf {
    Path::new(&teardown::state_dir(name)).join("plan.filed.json")
}

/// The plan a running testbed runs (live impairment changes included).
pub fn running_plan(name: &str) -> Option<Plan> {
    let text = std::fs::read_to_string(plan_path(name)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Brings `plan` up and waits until it is ready; on any failure removes
/// everything it made.
pub fn up(
    plan: &Plan,
    timeout: Duration,
    on_progress: &mut dyn FnMut(&str),
) -> Result<UpOutcome, UpError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(UpError::NotRoot);
    }
    let name = &plan.name;
    if let Some(running) = running_plan(name) {
        // Live impairment changes (`testbed impair`) are not a different
        // topology: compare the file with the plan as it was filed.
        let filed = std::fs::read_to_string(filed_path(name))
            .ok()
            .and_then(|t| serde_json::from_str::<Plan>(&t).ok())
            .unwrap_or_else(|| running.clone());
        return if &filed == plan {
            let impaired = running
                .nodes
                .iter()
                .zip(&filed.nodes)
                .filter(|(live, filed)| live.link != filed.link)
                .map(|(live, _)| live.name.clone())
                .collect();
            Ok(UpOutcome::AlreadyUp(impaired))
        } else {
            Err(UpError::Conflict(name.clone()))
        };
    }
    let left = teardown::namespaces_of(name);
    if !left.is_empty() || Path::new(&teardown::state_dir(name)).exists() {
        return Err(UpError::Leftovers(name.clone(), left.len()));
    }
    crate::runtime::launch::check(plan).map_err(|e| UpError::Command(e.to_string()))?;
    let result = build(plan, timeout, on_progress);
    if result.is_err() {
        if let Err(e) = teardown::teardown(name) {
            tracing::warn!(error = %e, "rollback after a failed up");
        }
    }
    result
}

fn build(
    plan: &Plan,
    timeout: Duration,
    on_progress: &mut dyn FnMut(&str),
) -> Result<UpOutcome, UpError> {
    let deadline = Instant::now() + timeout;
    let dir = teardown::state_dir(&plan.name);
    let state_err = |source| UpError::State {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(state_err)?;
    let json =
        serde_json::to_string_pretty(plan).map_err(|e| state_err(std::io::Error::other(e)))?;
    write_atomic(&plan_path(&plan.name), &json).map_err(state_err)?;
    crate::runtime::files::prepare(plan)
        .map_err(|e| state_err(std::io::Error::other(e.to_string())))?;
    on_progress(&format!(
        "creating {} namespaces and their interfaces",
        apply::namespaces(plan).len()
    ));
    let timings = apply::apply(plan)?;
    crate::overlay_run::write_registry(plan)?;
    if plan.cluster.overlay == overlay::Backend::Udp {
        on_progress("starting the overlay daemons");
        crate::overlay_run::start(plan, deadline)?;
    }
    if !plan.services.is_empty() {
        on_progress("programming the services");
        crate::services::program(plan)?;
        crate::services::userspace::start(plan, deadline)?;
    }
    on_progress("starting containers");
    start_supervisor(&plan.name)?;
    on_progress("waiting for containers to be ready");
    crate::runtime::status::wait_ready(Path::new(&dir), deadline).map_err(|e| {
        UpError::NotReady {
            timeout,
            what: e.to_string(),
        }
    })?;
    // Services answer once the rules hold the endpoints of the ready pods.
    crate::services::wait_programmed(plan, deadline)
        .map_err(|what| UpError::NotReady { timeout, what })?;
    Ok(UpOutcome::Started(timings))
}

/// Starts `testbed supervise NAME` detached: its own session, stdio to a log
/// file, so it outlives this command.
fn start_supervisor(name: &str) -> Result<(), UpError> {
    let log_path = Path::new(&teardown::state_dir(name)).join("supervisor.log");
    spawn_detached(&["supervise", name], &log_path)
        .map(drop)
        .map_err(|e| UpError::Supervisor(format!("{}: {e}", log_path.display())))
}

/// Starts this binary with `args` detached from the caller: its own session,
/// stdin from /dev/null, stdout and stderr to a new file at `log`, working
/// directory `/`. The daemons of a testbed (supervisor, overlay, proxies)
/// start this way so that they outlive `up`.
///
/// The program is `/proc/self/exe`, which stays this very binary even
/// after a rebuild replaced the file, and its `argv[0]` is `testbed`, by
/// which `down` recognises the testbed's own processes.
pub fn spawn_detached(args: &[&str], log: &Path) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("testbed")
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// Changes the impairments of node `machine` of running testbed `name`: the
/// node's overlay daemon picks them up at once, and the saved plan records
/// them.
pub fn impair(
    name: &str,
    machine: &str,
    link: Option<crate::plan::types::LinkPlan>,
) -> Result<(), UpError> {
    let mut plan = running_plan(name)
        .ok_or_else(|| UpError::Impairment(format!("no running testbed named `{name}`")))?;
    if plan.hosts.iter().any(|h| h.name == machine) || plan.cluster.overlay != overlay::Backend::Udp
    {
        return Err(UpError::Impairment(format!(
            "`{machine}`'s impairments are the kernel's qdiscs; `testbed impair` changes those the udp overlay applies (nodes of a udp testbed); change the file and run `down` and `up` instead"
        )));
    }
    let Some(node) = plan.nodes.iter_mut().find(|n| n.name == machine) else {
        return Err(UpError::Impairment(format!(
            "testbed `{name}` has no node `{machine}`"
        )));
    };
    node.link = link;
    let node = node.clone();
    let filed = filed_path(name);
    if !filed.exists() {
        std::fs::read_to_string(plan_path(name))
            .and_then(|text| write_atomic(&filed, &text))
            .map_err(|source| UpError::State {
                path: filed.display().to_string(),
                source,
            })?;
    }
    crate::overlay_run::write_impairment(&plan, &node)?;
    let json =
        serde_json::to_string_pretty(&plan).map_err(|e| UpError::Impairment(e.to_string()))?;
    write_atomic(&plan_path(name), &json).map_err(|source| UpError::State {
        path: plan_path(name).display().to_string(),
        source,
    })
}
