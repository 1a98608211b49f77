//! The agent: a thread of each machine's controller that keeps the
//! machine's heartbeat in etcd ([`super::MachineRecord`], re-written when
//! its ready pods, NotReady nodes, faults or moved pods change), holds the subnet leases of its nodes when no
//! udp daemon does (kernel vxlan and host-gw), and every [`EVERY`] reads
//! every machine's heartbeat into the state directory's view. It connects
//! from the machine's network namespace (`daemons::in_machine_netns`).
//! etcd away: the view keeps the last records with `reachable: false`, an
//! event says so, and the agent keeps trying; when etcd is back a session
//! that expired meanwhile is granted again and every key written again.

use super::{ClusterView, EtcdHealth, MachineRecord};
use crate::events::{EventKind, EventLog};
use crate::plan::Plan;
use overlay::etcd::{EtcdError, EtcdStore};
use overlay::registry::{LeaseAttrs, SubnetStore};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the controller tells the other machines through the agent's
/// heartbeat: this machine's NotReady nodes, its faults in force (as
/// `testbed fault` names them) and how often its pods were moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// NotReady nodes of this machine.
    pub not_ready: Vec<String>,
    /// Faults in force on this machine.
    pub faults: Vec<String>,
    /// How often each of this machine's pods was moved, by
    /// `NAMESPACE/NAME`: those moved at least once, pinned here.
    pub moves: std::collections::BTreeMap<String, u32>,
    /// The bare pods removed for good, `NAMESPACE/NAME`, sorted.
    pub removed: Vec<String>,
}

/// [`Published`], shared between the controller and its agent.
pub type NotReady = std::sync::Arc<std::sync::Mutex<Published>>;

/// How often the agent publishes and reads.
pub const EVERY: Duration = Duration::from_millis(250);

/// Connects to the etcd of `plan` from the machine's network namespace,
/// with the testbed's [`super::TTL`]. `None` when the plan keeps its
/// registry in files.
pub fn connect(plan: &Plan) -> Option<Result<EtcdStore, EtcdError>> {
    let etcd = plan.cluster.etcd.as_ref()?;
    let (endpoints, prefix) = (etcd.endpoints.clone(), etcd.prefix.clone());
    let r = crate::daemons::in_machine_netns(move || {
        EtcdStore::connect(&endpoints, &prefix, super::CONNECT_TIMEOUT)
    })
    .map_err(EtcdError::Runtime)
    .and_then(|r| r);
    Some(r.map(|s| s.with_ttl(super::TTL)))
}

/// A node's subnet lease as flannel writes it.
pub fn lease_attrs(plan: &Plan, node: &crate::plan::types::NodePlan) -> LeaseAttrs {
    let data = match (&node.overlay, plan.cluster.overlay) {
        (Some(dev), overlay::Backend::Vxlan) => serde_json::json!({
            "VNI": dev.vni.unwrap_or(1),
            "VtepMAC": dev.iface.mac.map(|m| m.to_string()).unwrap_or_default(),
        }),
        _ => serde_json::Value::Null,
    };
    LeaseAttrs {
        public_ip: node.lease.public_ip,
        backend_type: node.lease.backend_type.to_string(),
        backend_data: data,
    }
}

/// The name a testbed on one machine with `registry: etcd` gives its one
/// machine in etcd.
pub const ONLY_MACHINE: &str = "local";

/// Starts the agent of the testbed whose state directory is `dir`, running
/// `plan`, until `stop`; `None` for a plan that keeps nothing in etcd.
/// `not_ready` is what the controller holds NotReady among this machine's
/// nodes, as it last set it (published in the heartbeat).
pub fn spawn(
    dir: PathBuf,
    plan: &Plan,
    stop: &'static AtomicBool,
    not_ready: NotReady,
) -> Option<std::thread::JoinHandle<()>> {
    let etcd = plan.cluster.etcd.as_ref()?;
    let machine = plan
        .machine
        .clone()
        .unwrap_or_else(|| ONLY_MACHINE.to_string());
    let view = ClusterView {
        machine,
        etcd: EtcdHealth {
            endpoints: etcd.endpoints.join(", "),
            reachable: false,
            since_ms: crate::events::now_ms(),
            error: Some("not asked yet".into()),
        },
        machines: Default::default(),
    };
    let plan = plan.clone();
    let view_dir = dir.clone();
    Some(std::thread::spawn(move || {
        let mut a = Agent {
            events: EventLog::open(&dir).ok(),
            watch: crate::state::plan_watch::PlanWatch::new(crate::state::layout::plan(&dir)),
            dir,
            plan,
            store: None,
            view,
            published: None,
            leases_renewed: None,
            not_ready,
            recent: Recent::start(&view_dir),
        };
        while !stop.load(Ordering::SeqCst) {
            a.round();
            std::thread::sleep(EVERY);
        }
        a.leave();
    }))
}

struct Agent {
    dir: PathBuf,
    plan: Plan,
    watch: crate::state::plan_watch::PlanWatch,
    store: Option<EtcdStore>,
    view: ClusterView,
    published: Option<MachineRecord>,
    leases_renewed: Option<Instant>,
    events: Option<EventLog>,
    not_ready: NotReady,
    recent: Recent,
}

/// This machine's last [`super::EVENTS_KEPT`] events, followed as the log
/// grows (read once, then only what is appended), and whether they changed
/// since they were last published.
struct Recent {
    follower: Option<crate::events::Follower>,
    last: std::collections::VecDeque<crate::events::Event>,
    dirty: bool,
}

impl Recent {
    fn start(dir: &Path) -> Recent {
        let mut r = Recent {
            follower: None,
            last: Default::default(),
            dirty: true,
        };
        if let Ok((f, read)) = crate::events::Follower::start(dir) {
            r.follower = Some(f);
            r.take(read.events);
        }
        r
    }

    fn take(&mut self, events: Vec<crate::events::Event>) {
        self.dirty |= !events.is_empty();
        self.last.extend(events);
        while self.last.len() > super::EVENTS_KEPT {
            self.last.pop_front();
        }
    }

    /// Takes what was appended since the last look.
    fn poll(&mut self) {
        let new = match &mut self.follower {
            Some(f) => f.poll().unwrap_or_default(),
            None => Vec::new(),
        };
        self.take(new);
    }
}

impl Agent {
    fn round(&mut self) {
        if let Some(p) = self.watch.changed() {
            self.plan = p;
        }
        if self.store.is_none() {
            match connect(&self.plan) {
                Some(Ok(s)) => self.store = Some(s),
                Some(Err(e)) => return self.health(Err(e.to_string())),
                None => return,
            }
        }
        let r = self.exchange().map_err(|e| e.to_string());
        self.health(r);
    }

    /// Publishes this machine's record and leases, and reads everyone's.
    fn exchange(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let me = self.view.machine.clone();
        let nodes: Vec<String> = self.plan.nodes.iter().map(|n| n.name.clone()).collect();
        let ready = crate::runtime::status::read(Path::new(&self.plan.state_dir))
            .map(|s| crate::runtime::status::serving(&s.containers))
            .unwrap_or_default();
        let all = self
            .plan
            .pods
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let mut record = super::record(&me, &nodes, &ready, &all);
        let published = self.not_ready.lock().map(|g| g.clone()).unwrap_or_default();
        record.not_ready = published.not_ready;
        record.faults = published.faults;
        record.removed = published.removed;
        // Only pods moved at least once: a copy never moved yields to any
        // moved one, and the heartbeat stays small.
        record.placed = self
            .plan
            .pods
            .iter()
            .filter_map(|p| {
                let key = format!("{}/{}", p.namespace, p.name);
                let placement = super::Placement {
                    node: p.node.clone(),
                    ip: p.ip.filter(|_| p.network == "bridge"),
                    moves: *published.moves.get(&key)?,
                };
                Some((key, placement))
            })
            .collect();
        let key = super::machine_key(&self.plan.name, &me);
        if store.refresh_held()? {
            note(
                &mut self.events,
                "etcd had let this machine's heartbeat expire: written again",
            );
        }
        if self.published.as_ref() != Some(&record) {
            let text = serde_json::to_vec(&record).unwrap_or_default();
            store.put_held(&key, &text)?;
            self.published = Some(record);
        }
        let due = self
            .leases_renewed
            .is_none_or(|t| t.elapsed() >= super::TTL / 3);
        if self.plan.cluster.overlay != overlay::Backend::Udp && due {
            for n in &self.plan.nodes {
                store.put_lease(n.lease.subnet, &lease_attrs(&self.plan, n))?;
            }
            self.leases_renewed = Some(Instant::now());
        }
        self.recent.poll();
        if self.recent.dirty {
            // The last events, for `events` on the other machines.
            let text = serde_json::to_vec(&self.recent.last).unwrap_or_default();
            let key = format!("{}{me}", super::events_prefix(&self.plan.name));
            store.put_held(&key, &text)?;
            self.recent.dirty = false;
        }
        let prefix = super::machines_prefix(&self.plan.name);
        let list = store.list_prefix(&prefix)?;
        let machines = list
            .kvs
            .iter()
            .filter_map(|(k, v)| super::decode(&prefix, k, v))
            .map(|r| (r.machine.clone(), r))
            .collect();
        if machines != self.view.machines {
            self.view.machines = machines;
            self.write();
        }
        Ok(())
    }

    /// Records whether etcd answered; a change of health is an event.
    fn health(&mut self, r: Result<(), String>) {
        let reachable = r.is_ok();
        let error = r.err();
        if reachable != self.view.etcd.reachable
            || self.view.etcd.error.as_deref() == Some("not asked yet")
        {
            self.view.etcd.since_ms = crate::events::now_ms();
            let text = match &error {
                None => format!("etcd at {} answers", self.view.etcd.endpoints),
                Some(e) => format!("etcd unreachable: {e}; the data path keeps the last known leases and endpoints"),
            };
            note(&mut self.events, &text);
        }
        if reachable != self.view.etcd.reachable || error != self.view.etcd.error {
            self.view.etcd.reachable = reachable;
            self.view.etcd.error = error;
            self.write();
        }
    }

    fn write(&self) {
        if let Err(e) = super::view_file(&self.dir).write(&self.view) {
            tracing::warn!(error = %e, "writing the cluster view");
        }
    }

    /// The testbed is going down: the heartbeat and this machine's leases
    /// go at once, so the others need not wait for them to expire.
    fn leave(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        if let Err(e) = store.release_held() {
            tracing::warn!(error = %e, "removing this machine's heartbeat");
        }
        if self.plan.cluster.overlay != overlay::Backend::Udp {
            for n in &self.plan.nodes {
                if let Err(e) = store.revoke(n.lease.subnet) {
                    tracing::warn!(error = %e, node = %n.name, "revoking a lease");
                }
            }
        }
    }
}

/// Logs `text` and records it as an event of the controller about etcd.
fn note(events: &mut Option<EventLog>, text: &str) {
    tracing::info!("{text}");
    if let Some(ev) = events {
        ev.record(EventKind::Controller, "etcd", text);
    }
}
