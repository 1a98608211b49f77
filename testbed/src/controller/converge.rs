//! The controller's actions: moving the running testbed to a new desired
//! plan (pods removed, made, made again; services reprogrammed), watching
//! the nodes (a node unreachable for `podEvictionTimeout` is NotReady and
//! its pods are evicted; one reachable again is Ready), making again the
//! pods whose namespace vanished, and putting the faults in force.

use super::desired::{self, pins};
use super::events::EventKind;
use super::faults;
use super::live::{pod_key, NodeCondition};
use super::run::Controller;
use crate::kernel::apply;
use crate::plan::types::PodPlan;
use crate::plan::Plan;
use std::collections::{BTreeMap, BTreeSet};
use tracing::warn;

impl Controller {
    /// Moves the testbed to `new`: pods gone or changed (or in `force`) are
    /// stopped and their kernel objects removed; the plan file and the
    /// pods' files are written; new and changed pods are made and started;
    /// unchanged pods are not touched. Records every step as an event.
    pub(super) fn converge(
        &mut self,
        new: Plan,
        force: &BTreeSet<String>,
        reason: &str,
    ) -> Result<(), String> {
        let changes = Changes::between(&self.plan, &new, force);
        let remade = self.take_down(&new, &changes, reason);
        let services_changed = new.services != self.plan.services;
        self.plan = new;
        self.write_plan();
        if let Err(e) = crate::runtime::files::prepare(&self.plan) {
            warn!("writing the pods' files: {e}");
        }
        let result = self.bring_up(&changes, &remade, reason);
        // New services: every node gets the testbed's chains (or table,
        // or portals) for them, and the hooks into them if it had none
        // (a testbed that had no service); the follower then narrows the
        // endpoints to the ready pods.
        if services_changed && !self.plan.services.is_empty() {
            self.restore_service_rules();
        }
        self.repin();
        self.save_live();
        result
    }

    /// The first half of a move to `new`: stops the pods gone, stops
    /// watching the namespaces of the pods to be made (again), removes the
    /// kernel objects of the pods gone and records the pods deleted for
    /// good. Returns the network namespaces of the pods to be made.
    fn take_down(&mut self, new: &Plan, changes: &Changes, reason: &str) -> BTreeSet<String> {
        let Changes {
            gone,
            made,
            in_place,
        } = changes;
        self.sup.stop_pods(gone);
        // No watching socket may keep a removed namespace alive.
        let remade: BTreeSet<String> = new
            .pods
            .iter()
            .filter(|p| made.contains(&pod_key(&p.namespace, &p.name)))
            .map(|p| p.netns.clone())
            .collect();
        let keep = apply::namespaces(new)
            .into_iter()
            .filter(|n| !super::drift::netns_of(n).is_some_and(|ns| remade.contains(ns)));
        self.drift.want(keep, &BTreeSet::new());
        if let Err(e) = apply::remove_pods(&self.plan, gone, in_place) {
            warn!("removing pods: {e}");
        }
        for key in gone {
            if !made.contains(key) {
                self.events
                    .record(EventKind::PodDeleted, format!("pod {key}"), reason);
            }
        }
        remade
    }

    /// The second half of a move, once the new plan is in force: makes the
    /// pods to be made, records them, hands the plan to the supervisor and
    /// starts their containers, watches the namespaces made again (`remade`)
    /// anew, and forgets the pods gone among the held ones. The result of
    /// making the pods.
    fn bring_up(
        &mut self,
        changes: &Changes,
        remade: &BTreeSet<String>,
        reason: &str,
    ) -> Result<(), String> {
        let Changes { gone, made, .. } = changes;
        let result = apply::add_pods(&self.plan, made).map_err(|e| e.to_string());
        for key in made {
            let what = if gone.contains(key) {
                "made again"
            } else {
                "made"
            };
            self.events.record(
                EventKind::PodCreated,
                format!("pod {key}"),
                format!("{what}: {reason}"),
            );
        }
        self.sup.set_plan(&self.plan);
        // Start the new containers now rather than at the next round.
        self.sup.tick();
        self.sup.write_status();
        // Watch the namespaces made again anew (the old socket saw the old).
        self.drift.want(super::drift::watched(&self.plan), remade);
        self.held.retain(|k| !gone.contains(k));
        result
    }

    /// Loads the service rules of the plan on every node (a warning for
    /// each node that fails).
    fn restore_service_rules(&self) {
        for n in &self.plan.nodes {
            if let Err(e) =
                crate::services::rules::restore(self.plan.cluster.proxy, n, &self.plan.services)
            {
                warn!("loading the service rules of node {}: {e}", n.name);
            }
        }
    }

    /// Pins the pods where the plan in force put them.
    fn repin(&mut self) {
        self.live.pins = match &self.machines {
            // A share pins every pod of the whole testbed where this plan
            // put it, the other machines' included: they placed them the
            // same way, and a later change here must not place them anew
            // (on this machine, say) while they stay where they are there.
            Some(_) => desired::desired(&self.topo, &self.live)
                .map(|d| pins(&d.plan))
                .unwrap_or_else(|_| pins(&self.plan)),
            None => pins(&self.plan),
        };
    }

    fn keep_pins(&mut self) {
        desired::keep_pins(&self.plan, &mut self.live);
    }

    fn write_plan(&self) {
        if let Err(e) = crate::state::files::plan(&self.dir).write(&self.plan) {
            warn!("{e}");
        }
    }

    /// Plans the file with the live state again and moves to the result.
    pub(super) fn replan(&mut self, force: &BTreeSet<String>, reason: &str) -> Result<(), String> {
        self.keep_pins();
        let d = desired::desired_share(&self.topo, &self.live, self.spec.machine.as_deref())
            .map_err(|e| e.to_string())?;
        self.converge(d.plan, force, reason)
    }

    /// Nodes: reachable means its namespace exists and no node-down fault
    /// holds it. Unreachable for `podEvictionTimeout`: NotReady, its pods
    /// evicted (controller pods placed again on ready nodes, bare pods
    /// gone). Reachable again: Ready, and it takes pods again.
    pub(super) fn watch_nodes(&mut self, now: u64) {
        let timeout = super::live::millis(self.plan.cluster.pod_eviction_timeout);
        let nodes: Vec<(String, String)> = self
            .plan
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.netns.clone()))
            .collect();
        let mut evict = Vec::new();
        for (node, netns) in &nodes {
            let down = self.live.node_down_since(node);
            let exists = crate::kernel::netns::path(netns).exists();
            let ready = self.live.conditions.get(node).is_none_or(|c| c.ready);
            if down.is_none() && exists {
                self.unreachable.remove(node);
                if !ready {
                    self.node_ready(node, now, "reachable again");
                }
                continue;
            }
            let since = *self
                .unreachable
                .entry(node.clone())
                .or_insert(down.unwrap_or(now));
            if ready && now.saturating_sub(since) >= timeout {
                let why = if down.is_some() {
                    "node-down fault"
                } else {
                    "its namespace is gone"
                };
                self.node_not_ready(
                    node,
                    now,
                    format!("unreachable for {} ms ({why})", now - since),
                );
                evict.push(node.clone());
            }
        }
        for node in evict {
            self.keep_pins();
            let gone = desired::evict(&self.plan, &node, &mut self.live);
            for key in &gone {
                self.events.record(
                    EventKind::PodEvicted,
                    format!("pod {key}"),
                    format!("node {node} is not ready"),
                );
            }
            if let Err(e) = self.replan(&BTreeSet::new(), &format!("evicted from node {node}")) {
                warn!("rescheduling the pods of node {node}: {e}");
            }
        }
        self.hold_down_nodes();
    }

    /// Node `node` is Ready again (and takes pods), because `why`.
    pub(super) fn node_ready(&mut self, node: &str, now: u64, why: &str) {
        self.live.conditions.insert(
            node.to_string(),
            NodeCondition {
                ready: true,
                since_ms: now,
                reason: None,
            },
        );
        self.live.unschedulable.remove(node);
        self.events
            .record(EventKind::NodeReady, format!("node {node}"), why);
        self.save_live();
    }

    /// Node `node` is NotReady (and takes no pods), because `reason`.
    pub(super) fn node_not_ready(&mut self, node: &str, now: u64, reason: String) {
        self.live.conditions.insert(
            node.to_string(),
            NodeCondition {
                ready: false,
                since_ms: now,
                reason: Some(reason.clone()),
            },
        );
        self.live.unschedulable.insert(node.to_string());
        self.events
            .record(EventKind::NodeNotReady, format!("node {node}"), reason);
    }

    /// Holds stopped the containers of pods on nodes that are down.
    fn hold_down_nodes(&mut self) {
        let mut held = BTreeSet::new();
        for n in &self.plan.nodes {
            if self.live.node_down(&n.name) {
                held.extend(self.pods_on(&n.name));
            }
        }
        if held != self.held {
            self.sup.hold(&held, "its node is down");
            self.held = held;
        }
    }

    /// Pods whose namespace vanished (deleted behind the testbed's back) are
    /// made again, on the same node with the same address.
    pub(super) fn recreate_missing(&mut self) {
        // One read of the directory, not a lookup per pod.
        let pinned: BTreeSet<String> =
            crate::kernel::netns::list(&format!("{}.", self.plan.prefix))
                .into_iter()
                .collect();
        let missing: BTreeSet<String> = self
            .plan
            .pods
            .iter()
            .filter(|p| p.owns_netns && !self.live.node_down(&p.node))
            .filter(|p| !pinned.contains(&p.netns))
            .map(|p| pod_key(&p.namespace, &p.name))
            .collect();
        if missing.is_empty() {
            return;
        }
        for key in &missing {
            self.events.record(
                EventKind::DriftDetected,
                format!("pod {key}"),
                "its network namespace is gone",
            );
        }
        let plan = self.plan.clone();
        if let Err(e) = self.converge(plan, &missing, "its namespace was gone") {
            warn!("making pods again: {e}");
        }
    }

    /// Undoes the faults whose `--for` ran out.
    pub(super) fn expire_faults(&mut self, now: u64) {
        let (done, kept): (Vec<_>, Vec<_>) = self
            .live
            .faults
            .drain(..)
            .partition(|f| f.until_ms.is_some_and(|u| u <= now));
        self.live.faults = kept;
        if done.is_empty() {
            return;
        }
        for f in &done {
            self.events.record(
                EventKind::FaultCleared,
                format!("fault {}", f.fault),
                "its time ran out",
            );
        }
        self.save_live();
        self.enact_faults();
    }

    /// Puts machine `m`'s link impairments as the plan now says in force:
    /// the udp overlay's data path for its nodes, the kernel's qdiscs for
    /// hosts and for nodes of other overlays.
    pub(super) fn set_impairment(&mut self, m: &str) -> Result<(), String> {
        let udp = self.plan.cluster.overlay == overlay::Backend::Udp;
        let result = match self.plan.nodes.iter().find(|n| n.name == m) {
            Some(n) if udp => {
                crate::overlay_run::write_impairment(&self.plan, n).map_err(|e| e.to_string())
            }
            _ => apply::set_impairment(&self.plan, m).map_err(|e| e.to_string()),
        };
        match &result {
            Ok(()) => self.events.record(
                EventKind::ApplyStep,
                format!("machine {m}"),
                "link impairments changed",
            ),
            Err(e) => warn!("changing the impairments of {m}: {e}"),
        }
        result
    }

    /// Puts the kernel side of the active faults in force: links held down
    /// (and released ones up again), LAN cuts. Pods of down nodes are held
    /// by [`Controller::watch_nodes`].
    pub(super) fn enact_faults(&mut self) {
        let want = faults::links_down(&self.plan, &self.live.faults);
        for (ns, link) in want.symmetric_difference(&self.links_down) {
            let up = !want.contains(&(ns.clone(), link.clone()));
            if let Err(e) = apply::set_link(ns, link, up) {
                warn!(
                    "setting {link} in {ns} {}: {e}",
                    if up { "up" } else { "down" }
                );
            }
        }
        self.links_down = want;
        let cuts = faults::cuts(&self.plan, &self.live.faults);
        if cuts != self.cuts {
            if let Err(e) = crate::kernel::partition::set_cuts(&self.plan.fabric.netns, &cuts) {
                warn!("setting the LAN partition: {e}");
            }
            self.cuts = cuts;
        }
        self.hold_down_nodes();
    }
}

/// The pods a move from one plan to another touches, by pod key.
struct Changes {
    /// Pods stopped and removed: gone from the new plan, changed, or forced.
    gone: BTreeSet<String>,
    /// Pods made and started: new, changed, or forced.
    made: BTreeSet<String>,
    /// Pods made again on the node they were on: their interface names must
    /// be free.
    in_place: BTreeSet<String>,
}

impl Changes {
    /// The pods to remove and make to move from `old` to `new`, with the
    /// pods in `force` made again even if unchanged.
    fn between(old: &Plan, new: &Plan, force: &BTreeSet<String>) -> Changes {
        let old_pods: BTreeMap<String, &PodPlan> = old
            .pods
            .iter()
            .map(|p| (pod_key(&p.namespace, &p.name), p))
            .collect();
        let mut gone = BTreeSet::new();
        let mut made = BTreeSet::new();
        for p in &new.pods {
            let key = pod_key(&p.namespace, &p.name);
            match old_pods.get(&key) {
                Some(old) if **old == *p && !force.contains(&key) => {}
                Some(_) => {
                    gone.insert(key.clone());
                    made.insert(key);
                }
                None => {
                    made.insert(key);
                }
            }
        }
        let new_keys = desired::pod_keys(new);
        gone.extend(old_pods.keys().filter(|k| !new_keys.contains(*k)).cloned());
        // Made again where they were: their interface names must be free.
        let in_place: BTreeSet<String> = new
            .pods
            .iter()
            .filter(|p| {
                let key = pod_key(&p.namespace, &p.name);
                gone.contains(&key) && old_pods.get(&key).is_some_and(|o| o.node == p.node)
            })
            .map(|p| pod_key(&p.namespace, &p.name))
            .collect();
        Changes {
            gone,
            made,
            in_place,
        }
    }
}
