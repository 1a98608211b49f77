//! The other machines, for a controller running one machine's share of a
//! testbed spread over several: the agent (`cluster::agent`) keeps the
//! heartbeats; here a node of a machine whose heartbeat is gone (while etcd
//! answers) is unreachable, and after `podEvictionTimeout` NotReady, its
//! pods evicted as a local node's are (controller pods placed again on
//! ready nodes, which the share then builds when they land on this
//! machine's; bare pods gone). Its heartbeat back: Ready again, taking
//! pods again.
//!
//! A machine that was cut off from etcd (alive, evicting nothing) and finds
//! its own pods running on another machine from a newer placement gives
//! its copies up (`cluster::yielded`).
//!
//! Every pod of the whole testbed is pinned where `up` placed it when the
//! controller starts, so that every machine plans the others' pods where
//! they are, and a replan here never moves a pod of another machine onto
//! this one.

use super::events::EventKind;
use super::run::Controller;
use std::collections::{BTreeMap, BTreeSet};
use tracing::warn;

/// What the controller knows of the other machines.
pub struct Machines {
    /// This machine.
    pub me: String,
    /// Every node's machine.
    pub machine_of: BTreeMap<String, String>,
    /// Since when each node of another machine has had no heartbeat (ms).
    pub lost_since: BTreeMap<String, u64>,
}

/// What changed among the other machines' nodes.
#[derive(Default)]
struct Changed {
    /// Nodes to mark NotReady, evicting their pods, each with why.
    evict: Vec<(String, String)>,
    /// Nodes Ready again.
    back: Vec<String>,
}

impl Machines {
    /// For the share of machine `me` of the testbed planned whole as `full`.
    pub fn new(me: &str, full: &crate::plan::Plan) -> Machines {
        Machines {
            me: me.to_string(),
            machine_of: full
                .nodes
                .iter()
                .filter_map(|n| Some((n.name.clone(), n.machine.clone()?)))
                .collect(),
            lost_since: BTreeMap::new(),
        }
    }
}

impl Machines {
    /// Whether node `node` is this machine's (a node the plan does not
    /// place on a machine is everyone's).
    pub fn owns(&self, node: &str) -> bool {
        self.machine_of.get(node).is_none_or(|m| *m == self.me)
    }
}

impl Controller {
    /// Marks the nodes of machines whose heartbeat is gone NotReady after
    /// the eviction timeout (evicting their pods), and Ready again when it
    /// is back.
    pub(super) fn watch_machines(&mut self, now: u64) {
        let Some(mut m) = self.machines.take() else {
            return;
        };
        let view = crate::cluster::read_view(&self.dir);
        let changed = view
            .as_ref()
            .map(|view| self.follow_machines(&mut m, view, now))
            .unwrap_or_default();
        let gave_up = view.map(|v| self.give_up_moved(&m, &v)).unwrap_or(false);
        self.machines = Some(m);
        if changed.evict.is_empty() && changed.back.is_empty() && !gave_up {
            return;
        }
        self.keep_pins_whole();
        // The pods on the lost nodes, as the whole testbed is planned
        // before they are NotReady (then it would place them elsewhere).
        let whole = match changed.evict.is_empty() {
            true => None,
            false => super::desired::desired(&self.topo, &self.live)
                .map(|d| d.plan)
                .ok(),
        };
        for (node, reason) in changed.evict {
            self.node_not_ready(&node, now, reason);
            let Some(whole) = &whole else { continue };
            for key in super::desired::evict(whole, &node, &mut self.live) {
                self.events.record(
                    EventKind::PodEvicted,
                    format!("pod {key}"),
                    format!("node {node} is not ready"),
                );
            }
        }
        self.save_live();
        if let Err(e) = self.replan(&BTreeSet::new(), "a machine was lost or came back") {
            warn!("following the other machines: {e}");
        }
        // The routes to those nodes' subnets went or came back: read every
        // node of this machine back now and repair it.
        let now = std::time::Instant::now();
        for n in &self.plan.nodes {
            self.retry.insert(n.netns.clone(), now);
        }
    }

    /// Gives up this machine's copies of pods another machine runs from a
    /// newer placement (`cluster::yielded`: moved there while this machine
    /// was cut off from etcd), pinning them where they run, and removes the
    /// bare pods the others removed for good meanwhile
    /// (`cluster::removed_elsewhere`); whether any.
    fn give_up_moved(&mut self, m: &Machines, view: &crate::cluster::ClusterView) -> bool {
        // Nothing to settle unless another machine moved or removed pods
        // (the usual case: no work per look).
        let others = view.machines.values().filter(|r| r.machine != m.me);
        if !view.etcd.reachable
            || others
                .clone()
                .all(|r| r.placed.is_empty() && r.removed.is_empty())
        {
            return false;
        }
        // Its own pods, but those it gave up already (pinned to another
        // machine's node: their replan may have failed).
        let mine = self
            .plan
            .pods
            .iter()
            .map(|p| super::live::pod_key(&p.namespace, &p.name))
            .filter(|k| self.live.pins.get(k).is_none_or(|pin| m.owns(&pin.node)))
            .map(|k| {
                let moves = self.live.moves.get(&k).copied().unwrap_or(0);
                (k, moves)
            })
            .collect::<std::collections::BTreeMap<String, u32>>();
        // Evictions the others saw while this machine was cut off count
        // here too, so that moves stay counted alike.
        let mut raised = false;
        for r in view.machines.values().filter(|r| r.machine != m.me) {
            for (key, at) in r.placed.iter().filter(|(k, _)| !mine.contains_key(*k)) {
                if at.moves > self.live.moves.get(key).copied().unwrap_or(0) {
                    self.live.moves.insert(key.clone(), at.moves);
                    raised = true;
                }
            }
        }
        if raised {
            self.save_live();
        }
        // Bare pods the others removed for good while this machine was cut
        // off: removed here too.
        let bare: BTreeSet<String> = self
            .plan
            .pods
            .iter()
            .filter(|p| p.owner.is_none())
            .map(|p| super::live::pod_key(&p.namespace, &p.name))
            .collect();
        let removed = crate::cluster::removed_elsewhere(view, &m.me, &bare);
        for (key, machine) in &removed {
            self.events.record(
                EventKind::PodDeleted,
                format!("pod {key}"),
                format!("machine {machine} removed it for good while this one was cut off"),
            );
            self.live.removed.insert(key.clone());
        }
        // A placement on a node that takes no pods is one being undone (a
        // record read between an eviction and its machine's replan).
        let mut gave_up = crate::cluster::yielded(view, &m.me, &mine);
        gave_up.retain(|_, at| !self.live.unschedulable.contains(&at.node));
        for (key, at) in &gave_up {
            self.events.record(
                EventKind::PodEvicted,
                format!("pod {key}"),
                format!(
                    "it runs on node {} of another machine, placed there while this one was cut off",
                    at.node
                ),
            );
            let pin = super::live::Pin {
                node: at.node.clone(),
                ip: at.ip,
            };
            self.live.pins.insert(key.clone(), pin);
            self.live.moves.insert(key.clone(), at.moves);
        }
        !gave_up.is_empty() || !removed.is_empty()
    }

    /// Marks nodes of machines without heartbeat NotReady (after the
    /// eviction timeout) and those whose heartbeat is back Ready.
    fn follow_machines(
        &mut self,
        m: &mut Machines,
        view: &crate::cluster::ClusterView,
        now: u64,
    ) -> Changed {
        let lost: BTreeSet<String> = crate::cluster::lost_nodes(view, &m.me, &m.machine_of)
            .into_iter()
            .collect();
        let reported = crate::cluster::reported_not_ready(view, &m.me);
        let timeout = super::live::millis(self.plan.cluster.pod_eviction_timeout);
        let mut out = Changed::default();
        for (node, machine) in m.machine_of.iter().filter(|(_, mm)| **mm != m.me) {
            let ready = self.live.conditions.get(node).is_none_or(|c| c.ready);
            if ready && reported.contains_key(node) {
                // Its machine holds it NotReady and evicted its pods: so do
                // we, placing them as it does.
                let reason = format!("NotReady on machine {machine}");
                out.evict.push((node.clone(), reason));
                continue;
            }
            if !lost.contains(node) && !reported.contains_key(node) {
                // With etcd away nothing changes; with a heartbeat, Ready.
                if view.etcd.reachable && view.machines.contains_key(machine) {
                    m.lost_since.remove(node);
                    if !ready {
                        let why = format!("machine {machine}'s heartbeat is back");
                        self.node_ready(node, now, &why);
                        out.back.push(node.clone());
                    }
                }
                continue;
            }
            let since = *m.lost_since.entry(node.clone()).or_insert(now);
            if ready && now.saturating_sub(since) >= timeout {
                let reason = format!(
                    "machine {machine} has had no heartbeat in etcd for {} ms",
                    now - since
                );
                out.evict.push((node.clone(), reason));
            }
        }
        out
    }

    /// When `fixes` (for namespace `ns`) would make the span device again,
    /// makes it here instead, from the machine's namespace (its UDP socket
    /// must live there: see `kernel::span`), and takes that fix out.
    pub(super) fn remake_span(
        &self,
        ns: &str,
        fixes: &mut Vec<crate::kernel::repair::Fix>,
    ) -> Option<Result<String, String>> {
        use crate::kernel::repair::Fix;
        let dev = crate::plan::span::DEVICE;
        let i = fixes
            .iter()
            .position(|f| matches!(f, Fix::RecreateLink { link } if link == dev))?;
        if ns != self.plan.fabric.netns {
            return None;
        }
        fixes.remove(i);
        let span = match crate::plan::span::of_share(&self.plan)? {
            Ok(s) => s,
            Err(e) => return Some(Err(e.to_string())),
        };
        let (fabric, bridge) = (ns.to_string(), self.plan.fabric.bridge.name.clone());
        let made = crate::daemons::in_machine_netns(move || {
            let f = crate::kernel::netns::Netns::open(&fabric).map_err(|e| e.to_string())?;
            crate::kernel::span::apply(&f, &bridge, &span).map_err(|e| e.to_string())
        });
        Some(match made {
            Ok(Ok(())) => Ok(format!(
                "made {dev} again (the LAN's span to the other machines)"
            )),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        })
    }

    /// Pins every pod of the whole testbed where it runs (the others'
    /// included), as `keep_pins` does for this share's.
    pub(super) fn keep_pins_whole(&mut self) {
        if let Ok(d) = super::desired::desired(&self.topo, &self.live) {
            super::desired::keep_pins(&d.plan, &mut self.live);
        }
    }
}
