//! Bringing a testbed up and down as one transaction: checks first (root,
//! name free, programs exist), then the state directory, the kernel objects,
//! the supervisor and its containers, and readiness. Any failure removes all
//! of it again. The state directory holds the plan (`plan.json`), the
//! supervisor's pid, status and logs; teardown does not need it.

use crate::controller::spec::Spec;
use crate::daemons::{self, DaemonKind};
use crate::kernel::{apply, teardown};
use crate::plan::Plan;
use crate::state::{self, NameError, TestbedName};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why `up` failed. Nothing is left behind in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// Not running as root.
    #[error("testbed up needs root to create network namespaces: run it with sudo")]
    NotRoot,
    /// The plan's name is not a testbed name (a hand-made plan).
    #[error(transparent)]
    Name(#[from] NameError),
    /// The same name runs with another topology.
    #[error("a testbed named `{0}` is already running with a different topology; change it with `testbed apply FILE` (`--dry-run` shows the difference first), or run `testbed down {0}` first, or rename this one")]
    Conflict(String),
    /// Objects of this name exist without a state directory.
    #[error("leftovers of a testbed named `{0}` exist ({1} network namespaces, no state); run `testbed down {0}` first")]
    Leftovers(String, usize),
    /// A container's program cannot be found.
    #[error("{0}")]
    Command(String),
    /// A file of the state directory could not be written.
    #[error(transparent)]
    File(#[from] state::files::FileError),
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
    /// etcd did not answer (nothing was made).
    #[error("{0}; nothing was made")]
    Etcd(overlay::etcd::EtcdError),
    /// This machine's part of the LAN could not join the others'.
    #[error("joining the LAN to the other machines: {0}")]
    Span(String),
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
    /// The same topology was running without its supervisor (it had died):
    /// `up` started it again, it took over the containers still running,
    /// and everything is ready again.
    SupervisorRestarted(Vec<String>),
}

/// The plan a running testbed runs (live impairment changes included).
pub fn running_plan(name: &TestbedName) -> Option<Plan> {
    state::files::plan(&name.dir()).read().ok()
}

/// The nodes whose live impairments differ from the plan as filed.
fn impaired_nodes(running: &Plan, filed: &Plan) -> Vec<String> {
    running
        .nodes
        .iter()
        .zip(&filed.nodes)
        .filter(|(live, filed)| live.link != filed.link)
        .map(|(live, _)| live.name.clone())
        .collect()
}

/// Brings `plan` up and waits until it is ready; on any failure removes
/// everything it made.
pub fn up(
    spec: &Spec,
    plan: &Plan,
    timeout: Duration,
    on_progress: &mut dyn FnMut(&str),
) -> Result<UpOutcome, UpError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(UpError::NotRoot);
    }
    let name = TestbedName::new(&plan.name)?;
    if let Some(running) = running_plan(&name) {
        // Live changes (faults, `scale`, `impair`, rescheduling) are not a
        // different topology: compare the file with the one last given.
        let filed = crate::controller::spec::read(&name.dir())
            .ok()
            .and_then(|s| s.load().ok())
            .map(|l| l.plan)
            .unwrap_or_else(|| running.clone());
        if &filed != plan {
            return Err(UpError::Conflict(plan.name.clone()));
        }
        let impaired = impaired_nodes(&running, &filed);
        if state::pids::supervisor(&name.dir()).is_some() {
            return Ok(UpOutcome::AlreadyUp(impaired));
        }
        // The supervisor died: start it again on the running plan; it
        // takes over the containers that still run.
        on_progress("starting the supervisor again");
        let deadline = Instant::now() + timeout;
        start_supervisor(&name, &running)?;
        wait_ready(&running, timeout, deadline)?;
        return Ok(UpOutcome::SupervisorRestarted(impaired));
    }
    let left = teardown::namespaces_of(&name);
    if !left.is_empty() || name.dir().exists() {
        return Err(UpError::Leftovers(plan.name.clone(), left.len()));
    }
    crate::runtime::launch::check(plan).map_err(|e| UpError::Command(e.to_string()))?;
    // etcd first: when it does not answer, nothing is made.
    let etcd = match crate::cluster::agent::connect(plan) {
        Some(r) => {
            on_progress("connecting to etcd");
            Some(r.map_err(UpError::Etcd)?)
        }
        None => None,
    };
    let result = build(spec, plan, &name, timeout, etcd.as_ref(), on_progress);
    if result.is_err() {
        if let Err(e) = teardown::teardown(&name, &mut |_| {}) {
            tracing::warn!(error = %e, "rollback after a failed up");
        }
    }
    result
}

fn build(
    spec: &Spec,
    plan: &Plan,
    name: &TestbedName,
    timeout: Duration,
    etcd: Option<&overlay::etcd::EtcdStore>,
    on_progress: &mut dyn FnMut(&str),
) -> Result<UpOutcome, UpError> {
    let deadline = Instant::now() + timeout;
    let dir = name.dir();
    let state_err = |source| UpError::State {
        path: dir.display().to_string(),
        source,
    };
    state::create_private_dir(Path::new(state::ROOT)).map_err(state_err)?;
    state::create_private_dir(&dir).map_err(state_err)?;
    if let Err(e) = state::mount_tmpfs(&dir) {
        tracing::debug!(error = %e, "no tmpfs for the state directory: an ordinary directory");
    }
    state::files::plan(&dir).write(plan)?;
    crate::controller::spec::write(&dir, spec)?;
    crate::runtime::files::prepare(plan)
        .map_err(|e| state_err(std::io::Error::other(e.to_string())))?;
    on_progress(&format!(
        "creating {} namespaces and their interfaces",
        apply::namespaces(plan).len()
    ));
    let timings = apply::apply(plan)?;
    if let Some(span) = crate::plan::span::of_share(plan) {
        on_progress("joining the LAN to the other machines");
        let span = span.map_err(|e| UpError::Span(e.to_string()))?;
        let fabric = crate::kernel::netns::Netns::open(&plan.fabric.netns)
            .map_err(|e| UpError::Span(e.to_string()))?;
        crate::kernel::span::apply(&fabric, &plan.fabric.bridge.name, &span)
            .map_err(|e| UpError::Span(e.to_string()))?;
    }
    crate::overlay_run::write_registry(plan, etcd)?;
    if plan.cluster.overlay == overlay::Backend::Udp {
        on_progress("starting the overlay daemons");
        crate::overlay_run::start(plan, deadline)?;
    }
    if !plan.services.is_empty() {
        on_progress("programming the services");
        crate::services::program(plan)?;
        crate::services::userspace::start(plan, deadline)?;
    }
    on_progress(&format!("starting {} containers", container_count(plan)));
    start_supervisor(name, plan)?;
    on_progress("waiting for containers to be ready");
    wait_ready(plan, timeout, deadline)?;
    Ok(UpOutcome::Started(timings))
}

fn container_count(plan: &Plan) -> usize {
    let pods: usize = plan.pods.iter().map(|p| p.containers.len()).sum();
    pods + plan.hosts.iter().map(|h| h.containers.len()).sum::<usize>()
}

/// Waits until every container is ready and the services hold the ready
/// pods' endpoints.
fn wait_ready(plan: &Plan, timeout: Duration, deadline: Instant) -> Result<(), UpError> {
    crate::runtime::status::wait_ready(Path::new(&plan.state_dir), deadline).map_err(|e| {
        UpError::NotReady {
            timeout,
            what: e.to_string(),
        }
    })?;
    // Services answer once the rules hold the endpoints of the ready pods.
    crate::services::wait_programmed(plan, deadline).map_err(|e| UpError::NotReady {
        timeout,
        what: e.to_string(),
    })
}

/// Starts `testbed supervise NAME` detached, inside the fabric's namespace
/// (so that `down` finds it there), with its log in the state directory.
fn start_supervisor(name: &TestbedName, plan: &Plan) -> Result<(), UpError> {
    let log_path = name.dir().join(crate::runtime::supervise::SUPERVISOR_LOG);
    let fail =
        |what: String| UpError::Supervisor(format!("{what} (its log: {})", log_path.display()));
    let mut child = daemons::spawn(
        DaemonKind::Supervisor,
        name,
        None,
        &plan.fabric.netns,
        &log_path,
    )
    .map_err(|e| fail(e.to_string()))?;
    // Running once it holds its pid file (from then on `status` and
    // `wait_ready` see it).
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if crate::state::pids::supervisor(&name.dir()) == Some(pid) {
            return Ok(());
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(fail(format!("it exited ({exit}): {}", log.trim())));
        }
        if Instant::now() > deadline {
            return Err(fail("it did not start within 10 s".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
