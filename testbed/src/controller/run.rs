//! The controller process (`testbed supervise NAME`, started detached by
//! `up` in the fabric's namespace): it loads the desired state from the
//! state directory, runs the supervisor of the containers, the endpoint
//! follower and the daemons' watchdog, and every round (50 ms) serves one
//! request, and every 200 ms observes the nodes, the pods' namespaces and
//! readiness and acts on what differs (`converge`). SIGTERM or SIGINT stop
//! it and every container.

use super::control::{self, Server};
use super::events::{EventKind, EventLog};
use super::live::{self, Live};
use super::spec::{self, Spec};
use crate::plan::state::NsState;
use crate::plan::Plan;
use crate::runtime::supervise::{self, Supervisor};
use crate::state::TestbedName;
use crate::topology::model::Topology;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How often the loop runs.
const TICK: Duration = Duration::from_millis(50);
/// How often the controller looks at nodes, faults and readiness.
const OBSERVE: Duration = Duration::from_millis(200);
/// How often every namespace and every node's rules are read back in full
/// (spread evenly: one of a thousand every 3.6 s; reading one back costs a
/// few milliseconds, so a shorter cycle showed in the idle CPU).
const RESYNC: Duration = Duration::from_secs(3600);
/// How long a failed repair waits before it is tried again.
const RETRY_REPAIR: Duration = Duration::from_millis(200);
/// How often it looks for pods whose namespace was deleted.
const PINS_EVERY: Duration = Duration::from_secs(1);

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The supervisor part could not start.
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
    /// A state file cannot be read, or does not hold what it should.
    #[error(transparent)]
    File(#[from] crate::state::files::FileError),
    /// A state file is missing or broken.
    #[error("{what} {path}: {message}")]
    State {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The control socket could not be made.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

pub use super::events::now_ms;

/// The running controller's state.
pub struct Controller {
    pub(super) dir: PathBuf,
    pub(super) spec: Spec,
    pub(super) topo: Topology,
    pub(super) live: Live,
    pub(super) plan: Plan,
    pub(super) sup: Supervisor,
    pub(super) events: EventLog,
    /// Sandboxes that were ready at the last look.
    pub(super) ready: BTreeSet<String>,
    /// Since when each node has been unreachable (ms).
    pub(super) unreachable: BTreeMap<String, u64>,
    /// The sandboxes held stopped (their node is down).
    pub(super) held: BTreeSet<String>,
    /// The links the faults hold down, as last set.
    pub(super) links_down: BTreeSet<(String, String)>,
    /// The LAN cuts, as last set.
    pub(super) cuts: Vec<(String, String)>,
    /// The namespaces watched for drift.
    pub(super) drift: super::drift::Drift,
    /// Tells the endpoint follower (which owns the service rules) which
    /// nodes' rules changed.
    pub(super) rules_changed: std::sync::mpsc::Sender<String>,
    /// The supervisor's status version readiness was last looked at.
    pub(super) seen_version: u64,
    /// When the pods' namespaces were last looked for.
    pub(super) pins_checked: Instant,
    /// Namespaces whose last repair failed, and when to try again.
    pub(super) retry: BTreeMap<String, Instant>,
    /// When the next namespace is read back in full, and which (an index
    /// into the watched names).
    pub(super) resync: (Instant, usize),
    /// The other machines, when this is one machine's share.
    pub(super) machines: Option<super::machines::Machines>,
    /// This machine's NotReady nodes, for the agent's heartbeat.
    pub(super) not_ready: crate::cluster::agent::NotReady,
}

fn state_err(what: &'static str, path: PathBuf, e: impl ToString) -> ControllerError {
    ControllerError::State {
        what,
        path,
        message: e.to_string(),
    }
}

/// How often each pod of this share was moved, for the heartbeat: only
/// pods moved at least once (the others need no word: a copy never moved
/// yields to any moved one), and only those pinned to this machine's
/// nodes (a pod given up to another machine whose replan failed is not
/// offered back).
fn published_moves(
    plan: &Plan,
    live: &Live,
    machines: Option<&super::machines::Machines>,
) -> BTreeMap<String, u32> {
    plan.pods
        .iter()
        .map(|p| live::pod_key(&p.namespace, &p.name))
        .filter(|k| {
            let pinned = live.pins.get(k).map(|pin| pin.node.as_str());
            machines.is_none_or(|m| pinned.is_none_or(|n| m.owns(n)))
        })
        .filter_map(|k| Some((k.clone(), *live.moves.get(&k).filter(|m| **m > 0)?)))
        .collect()
}

/// What the controller starts from, read from the state directory.
struct Stored {
    /// The plan in force.
    plan: Plan,
    /// How the testbed was brought up.
    spec: Spec,
    /// The topology of its file.
    topo: Topology,
    /// The live state (with the whole testbed's pins for a share).
    live: Live,
    /// The other machines, when this is one machine's share.
    machines: Option<super::machines::Machines>,
}

impl Stored {
    /// Reads the plan, the spec (and its file), and the live state of the
    /// testbed whose state directory is `dir`; for a share, pins every pod
    /// where `up` placed it and learns the other machines.
    fn read(dir: &Path) -> Result<Stored, ControllerError> {
        let plan: Plan = crate::state::files::plan(dir).read()?;
        let spec = spec::read(dir)?;
        let topo = spec
            .load()
            .map_err(|e| state_err("the file", dir.join(spec::SPEC_FILE), e.render()))?
            .topology;
        let mut live = live::read(dir)?;
        let machines = spec.machine.as_deref().and_then(|me| {
            // The whole testbed as `up` placed it: every pod pinned there.
            let whole = spec.load_whole().ok()?.plan;
            super::desired::keep_pins(&whole, &mut live);
            Some(super::machines::Machines::new(me, &whole))
        });
        Ok(Stored {
            plan,
            spec,
            topo,
            live,
            machines,
        })
    }
}

/// Runs the controller of testbed `name` until SIGTERM or SIGINT.
pub fn run_from_state(name: &TestbedName) -> Result<(), ControllerError> {
    let dir = name.dir();
    let stop = supervise::install_handlers()?;
    let _lock = supervise::claim(&dir)?;
    let stored = Stored::read(&dir)?;
    let plan = &stored.plan;
    // The agent's first heartbeat already says how often each pod moved.
    let not_ready = crate::cluster::agent::NotReady::default();
    if let Ok(mut shared) = not_ready.lock() {
        shared.moves = published_moves(plan, &stored.live, stored.machines.as_ref());
        shared.removed = stored.live.removed.iter().cloned().collect();
    }
    let agent = crate::cluster::agent::spawn(dir.clone(), plan, stop, not_ready.clone());
    let inbox = super::remote::serve_inbox(dir.clone(), plan, stop);
    crate::runtime::files::prepare(plan).map_err(supervise::SuperviseError::from)?;
    raise_fd_limit(plan);
    let server = Server::bind(&dir).map_err(|source| ControllerError::Socket {
        path: dir.join(control::SOCKET),
        source,
    })?;
    let events = EventLog::open(&dir)
        .map_err(|e| state_err("the events", dir.join(super::events::EVENTS_FILE), e))?;
    let rules_tx = start_helpers(&dir, plan);
    info!(testbed = %plan.name, pid = std::process::id(), "controller started");
    let mut c = Controller::new(dir, stored, events, rules_tx, not_ready);
    c.events
        .record(EventKind::Controller, "testbed", "controller started");
    c.run_until(stop, &server);
    c.sup.shutdown();
    // The agent leaves etcd (heartbeat and leases) before the process ends.
    for t in [agent, inbox].into_iter().flatten() {
        let _ = t.join();
    }
    c.events
        .record(EventKind::Controller, "testbed", "controller stopped");
    info!("controller stopped");
    Ok(())
}

/// Raises the descriptor limit for `plan`: a descriptor per namespace
/// watched for drift, per container log and readiness check, and the
/// follower's and daemons' own.
fn raise_fd_limit(plan: &Plan) {
    let containers: usize = plan.pods.iter().map(|p| p.containers.len()).sum();
    crate::kernel::apply::raise_fd_limit(
        (crate::kernel::apply::namespaces(plan).len() + containers * 2 + 1024) as u64,
    );
}

/// Starts the endpoint follower of the testbed whose state directory is
/// `dir` and the watchdog of `plan`'s daemons, each on its own thread;
/// returns how to tell the follower which nodes' rules changed.
fn start_helpers(dir: &Path, plan: &Plan) -> std::sync::mpsc::Sender<String> {
    let follower_dir = dir.to_path_buf();
    let (rules_tx, rules_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || crate::services::follow_endpoints(&follower_dir, &rules_rx));
    let watched = plan.clone();
    std::thread::spawn(move || crate::watchdog::keep_daemons(&watched));
    rules_tx
}

impl Controller {
    /// The controller of the testbed whose state directory is `dir`, from
    /// what was read there, with the supervisor of its containers and the
    /// drift watch of its namespaces started.
    fn new(
        dir: PathBuf,
        stored: Stored,
        events: EventLog,
        rules_tx: std::sync::mpsc::Sender<String>,
        not_ready: crate::cluster::agent::NotReady,
    ) -> Controller {
        let Stored {
            plan,
            spec,
            topo,
            live,
            machines,
        } = stored;
        let sup = Supervisor::new(&plan, dir.clone());
        Controller {
            dir,
            spec,
            topo,
            links_down: super::faults::links_down(&plan, &live.faults),
            cuts: super::faults::cuts(&plan, &live.faults),
            live,
            plan: plan.clone(),
            sup,
            events,
            ready: BTreeSet::new(),
            unreachable: BTreeMap::new(),
            held: BTreeSet::new(),
            drift: super::drift::Drift::start(super::drift::watched(&plan)),
            rules_changed: rules_tx,
            seen_version: u64::MAX,
            pins_checked: Instant::now(),
            retry: BTreeMap::new(),
            resync: (Instant::now(), 0),
            machines,
            not_ready,
        }
    }

    /// The loop, until `stop` is set: every round the supervisor's tick,
    /// the status events, one request on `server` if one waits, the drift
    /// repairs, and every `OBSERVE` a look at the world.
    fn run_until(&mut self, stop: &AtomicBool, server: &Server) {
        let mut observed = Instant::now() - OBSERVE;
        let mut waiting = false;
        while !stop.load(Ordering::SeqCst) {
            self.sup.tick();
            self.status_events();
            if waiting {
                if let Some((req, mut stream)) = server.next() {
                    let reply = self.handle(req);
                    control::answer(&mut stream, &reply);
                }
            }
            self.repair_drift();
            if observed.elapsed() >= OBSERVE {
                self.observe();
                observed = Instant::now();
            }
            waiting = server.wait(TICK);
        }
    }
}

impl Controller {
    /// Saves the live state (a failure is logged: the state in memory
    /// stays right, and the next change tries again).
    pub(super) fn save_live(&mut self) {
        self.live.generation += 1;
        if let Err(e) = live::write(&self.dir, &self.live) {
            warn!("cannot save the live state: {e}");
        }
    }

    /// The sandbox keys of the pods on `node`.
    pub(super) fn pods_on(&self, node: &str) -> BTreeSet<String> {
        self.plan
            .pods
            .iter()
            .filter(|p| p.node == node)
            .map(|p| live::pod_key(&p.namespace, &p.name))
            .collect()
    }

    /// Whether pod `key` is an endpoint of a service.
    pub(super) fn is_endpoint(&self, key: &str) -> bool {
        let Some((ns, name)) = key.split_once('/') else {
            return false;
        };
        self.plan.services.iter().any(|s| {
            s.namespace == ns
                && s.ports
                    .iter()
                    .any(|p| p.endpoints.iter().any(|e| e.pod == name))
        })
    }

    /// One look at the world: faults whose time is up, nodes, pods whose
    /// namespace is gone, readiness.
    fn observe(&mut self) {
        let now = now_ms();
        self.expire_faults(now);
        self.watch_nodes(now);
        self.publish_not_ready();
        self.watch_machines(now);
        if self.pins_checked.elapsed() >= PINS_EVERY {
            self.recreate_missing();
            self.pins_checked = Instant::now();
        }
    }

    /// Tells the agent which of this machine's nodes are NotReady and
    /// which faults are in force (for its heartbeat).
    fn publish_not_ready(&mut self) {
        let local: Vec<String> = self
            .plan
            .nodes
            .iter()
            .filter(|n| self.live.conditions.get(&n.name).is_some_and(|c| !c.ready))
            .map(|n| n.name.clone())
            .collect();
        let faults = self
            .live
            .faults
            .iter()
            .map(|f| f.fault.to_string())
            .collect();
        let moves = published_moves(&self.plan, &self.live, self.machines.as_ref());
        if let Ok(mut shared) = self.not_ready.lock() {
            shared.not_ready = local;
            shared.faults = faults;
            shared.moves = moves;
            shared.removed = self.live.removed.iter().cloned().collect();
        }
    }

    /// Records the starts and readiness changes the supervisor reported
    /// since the last look.
    fn status_events(&mut self) {
        if self.sup.version() != self.seen_version {
            self.seen_version = self.sup.version();
            self.start_events();
            self.readiness_events();
        }
    }

    /// Repairs the namespaces that changed (see [`super::drift`]), and
    /// those whose last repair failed once their pause is over (a fix can
    /// fail for a moment, e.g. a route through a link that just came up).
    fn repair_drift(&mut self) {
        let mut dirty = self.drift.take();
        self.resync_next(&mut dirty);
        self.send_rules_changed(&mut dirty);
        let now = Instant::now();
        let due: Vec<String> = self
            .retry
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            self.retry.remove(&n);
            dirty.insert(n);
        }
        if dirty.is_empty() {
            return;
        }
        let want = super::faults::kernel_state(&self.plan, &self.live.faults);
        let names: BTreeSet<String> = dirty
            .iter()
            .filter_map(|n| super::drift::netns_of(n))
            .filter(|n| want.contains_key(*n))
            .map(str::to_string)
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        let have = match crate::kernel::observe::observe(&names, &["net.ipv4.ip_forward"]) {
            Ok(h) => h,
            Err(e) => {
                warn!("reading the namespaces that changed: {e}");
                return;
            }
        };
        for ns in &names {
            let (Some(w), Some(h)) = (want.get(ns), have.get(ns)) else {
                continue;
            };
            self.repair_netns(ns, w, h, now);
        }
    }

    /// Adds to `dirty` the next name to read back in full, when its time
    /// has come: every namespace (and node's rules) once per RESYNC, one at
    /// a time spread over it, for what no notification announces (a
    /// permanent neighbour merely downgraded; rules of the legacy iptables
    /// backend).
    fn resync_next(&mut self, dirty: &mut BTreeSet<String>) {
        if self.resync.0 <= Instant::now() {
            let all = super::drift::watched(&self.plan);
            let k = self.resync.1 % all.len().max(1);
            if let Some(name) = all.get(k) {
                dirty.insert(name.clone());
            }
            let step = RESYNC / u32::try_from(all.len().max(1)).unwrap_or(u32::MAX);
            self.resync = (Instant::now() + step, k + 1);
        }
    }

    /// Takes the nodes' rules out of `dirty` and tells the endpoint
    /// follower (which owns them) that they changed.
    fn send_rules_changed(&self, dirty: &mut BTreeSet<String>) {
        let rules: Vec<String> = dirty
            .iter()
            .filter_map(|n| n.strip_prefix(crate::kernel::watch::RULES))
            .map(str::to_string)
            .collect();
        for ns in rules {
            dirty.remove(&format!("{}{ns}", crate::kernel::watch::RULES));
            let _ = self.rules_changed.send(ns);
        }
    }

    /// Repairs namespace `ns`, which should be `want` and is `have`
    /// (remaking the span device if it is gone), and records what was
    /// repaired and what was not; a failure is tried again after
    /// `RETRY_REPAIR` from `now`.
    fn repair_netns(&mut self, ns: &str, want: &NsState, have: &NsState, now: Instant) {
        let mut fixes = crate::kernel::repair::repairs(want, have);
        // The span device is made from the machine's namespace.
        let span = self.remake_span(ns, &mut fixes);
        if fixes.is_empty() && span.is_none() {
            return;
        }
        let (mut done, mut failed) =
            match crate::kernel::repair::apply_fixes(ns, &fixes, &self.plan) {
                Ok(done) => (done, Vec::new()),
                Err(crate::kernel::repair::RepairError::Incomplete { done, errors, .. }) => {
                    (done, errors)
                }
                Err(e) => (Vec::new(), vec![e.to_string()]),
            };
        match span {
            Some(Ok(d)) => done.insert(0, d),
            Some(Err(e)) => failed.insert(0, e),
            None => {}
        }
        for d in done {
            self.events
                .record(EventKind::DriftRepaired, format!("netns {ns}"), d);
        }
        if !failed.is_empty() {
            self.retry.insert(ns.to_string(), now + RETRY_REPAIR);
        }
        for e in failed {
            warn!("drift in {ns} not repaired: {e}");
            self.events.record(
                EventKind::DriftDetected,
                format!("netns {ns}"),
                format!("not repaired: {e}"),
            );
        }
    }

    fn start_events(&mut self) {
        for s in self.sup.take_starts() {
            if s.key.starts_with("host:") {
                continue;
            }
            let (kind, reason) = match (s.restart, s.last_exit) {
                (false, _) => (
                    EventKind::PodStarted,
                    format!("container {} started", s.container),
                ),
                (true, Some(exit)) => (
                    EventKind::PodRestarted,
                    format!(
                        "container {} started again after it ended ({exit})",
                        s.container
                    ),
                ),
                (true, None) => (
                    EventKind::PodRestarted,
                    format!("container {} started again", s.container),
                ),
            };
            self.events.record(kind, format!("pod {}", s.key), reason);
        }
    }

    fn readiness_events(&mut self) {
        let ready = self.sup.ready_sandboxes();
        let came: Vec<String> = ready.difference(&self.ready).cloned().collect();
        let went: Vec<String> = self.ready.difference(&ready).cloned().collect();
        for key in came {
            if key.starts_with("host:") {
                continue;
            }
            self.events.record(
                EventKind::PodReady,
                format!("pod {key}"),
                "every container ready",
            );
            if self.is_endpoint(&key) {
                self.events.record(
                    EventKind::EndpointAdded,
                    format!("pod {key}"),
                    "ready: its endpoints serve",
                );
            }
        }
        for key in went {
            if key.starts_with("host:") || !self.is_endpoint(&key) {
                continue;
            }
            self.events.record(
                EventKind::EndpointRemoved,
                format!("pod {key}"),
                "not ready: its endpoints left the services",
            );
        }
        self.ready = ready;
    }
}
