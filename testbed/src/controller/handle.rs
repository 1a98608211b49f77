//! The controller's answers to requests (`control::Request`): each is
//! checked first (a request naming what does not exist, or making no sense,
//! is refused and changes nothing), then becomes a change of the live state
//! or of the file, and the same machinery as healing moves the testbed to
//! the new desired state.

use super::control::{Reply, Request};
use super::events::EventKind;
use super::faults;
use super::live::{ActiveFault, Fault, Live};
use super::lookup::{self, Refusal};
use super::run::{now_ms, Controller};
use super::spec::Spec;
use std::collections::BTreeSet;

impl From<Refusal> for Reply {
    fn from(r: Refusal) -> Reply {
        Reply::refused(r.0)
    }
}

impl Controller {
    /// Answers one request.
    pub(super) fn handle(&mut self, req: Request) -> Reply {
        let result = match req {
            Request::Fault { fault, for_ms } => self.inject(&fault, for_ms),
            Request::Clear { fault } => self.clear(fault.as_ref()),
            Request::Kill { pod, container } => self.kill(&pod, container.as_deref()),
            Request::Delete { pod } => self.delete(&pod),
            Request::Scale { rc, replicas } => self.scale(&rc, replicas),
            Request::Apply { spec, dry_run } => self.apply(spec, dry_run),
            Request::Impair { machine, link } => self.impair(&machine, link),
            // Probes for another machine's `check` are sent by the inbox
            // thread itself, never through the control loop.
            Request::Probe { .. } => Err(Refusal(
                "a probe request is for another machine's inbox".into(),
            )),
        };
        result.unwrap_or_else(Reply::from)
    }

    fn inject(&mut self, fault: &Fault, for_ms: Option<u64>) -> Result<Reply, Refusal> {
        let fault = faults::check(&self.plan, &self.live, fault)?;
        let now = now_ms();
        self.live.faults.push(ActiveFault {
            fault: fault.clone(),
            since_ms: now,
            until_ms: for_ms.map(|d| now + d),
        });
        self.save_live();
        self.enact_faults();
        let reason = match for_ms {
            Some(d) => format!("injected for {d} ms"),
            None => "injected".into(),
        };
        self.events
            .record(EventKind::FaultInjected, format!("fault {fault}"), reason);
        Ok(Reply::ok(format!("{fault}: injected")))
    }

    fn clear(&mut self, fault: Option<&Fault>) -> Result<Reply, Refusal> {
        let cleared: Vec<Fault> = match fault {
            Some(f) => vec![faults::check_clear(&self.plan, &self.live, f)?],
            None => self.live.faults.iter().map(|f| f.fault.clone()).collect(),
        };
        self.live.faults.retain(|f| !cleared.contains(&f.fault));
        self.save_live();
        self.enact_faults();
        for f in &cleared {
            self.events.record(
                EventKind::FaultCleared,
                format!("fault {f}"),
                "cleared on request",
            );
        }
        Ok(Reply::ok(match cleared.len() {
            0 => "no fault was in force".to_string(),
            1 => format!("{}: cleared", cleared[0]),
            n => format!("{n} faults cleared"),
        }))
    }

    fn kill(&mut self, pod: &str, container: Option<&str>) -> Result<Reply, Refusal> {
        let key = lookup::pod(&self.plan, pod)?;
        if let Some(c) = container {
            let p = self
                .plan
                .pods
                .iter()
                .find(|p| super::live::pod_key(&p.namespace, &p.name) == key);
            let names: Vec<&str> = p
                .map(|p| p.containers.iter().map(|c| c.name.as_str()).collect())
                .unwrap_or_default();
            if !names.contains(&c) {
                let mut msg = format!("pod `{pod}` has no container `{c}`");
                if let Some(close) = crate::diag::did_you_mean(c, &names) {
                    msg.push_str(&format!("; did you mean `{close}`?"));
                } else {
                    msg.push_str(&format!(" (it has: {})", names.join(", ")));
                }
                return Err(Refusal(msg));
            }
        }
        let killed = self.sup.kill(&key, container);
        if killed.is_empty() {
            return Err(Refusal(format!(
                "pod `{pod}` has no running container to kill"
            )));
        }
        self.events.record(
            EventKind::FaultInjected,
            format!("fault kill pod {key}"),
            format!("SIGKILL to {}", killed.join(", ")),
        );
        Ok(Reply::ok(format!(
            "pod {key}: SIGKILL to {}; its restart policy decides what follows",
            killed.join(", ")
        )))
    }

    fn delete(&mut self, pod: &str) -> Result<Reply, Refusal> {
        let key = lookup::pod(&self.plan, pod)?;
        let owner = self
            .plan
            .pods
            .iter()
            .find(|p| super::live::pod_key(&p.namespace, &p.name) == key)
            .and_then(|p| p.owner.clone());
        self.events.record(
            EventKind::FaultInjected,
            format!("fault delete pod {key}"),
            "deleted on request",
        );
        let result = match &owner {
            Some(_) => {
                let force: BTreeSet<String> = [key.clone()].into();
                self.sup.stop_pods(&force);
                self.events.record(
                    EventKind::PodDeleted,
                    format!("pod {key}"),
                    "deleted on request",
                );
                let plan = self.plan.clone();
                self.converge(
                    plan,
                    &force,
                    "its replication controller keeps its replicas",
                )
            }
            None => {
                self.live.removed.insert(key.clone());
                self.replan(&BTreeSet::new(), "deleted on request")
            }
        };
        match result {
            Ok(_) => Ok(Reply::ok(match owner {
                Some(rc) => format!("pod {key} deleted; replication controller {rc} made it again"),
                None => format!("pod {key} deleted (a bare pod: it stays gone)"),
            })),
            Err(e) => Ok(Reply::failed(e)),
        }
    }

    fn scale(&mut self, rc: &str, replicas: u32) -> Result<Reply, Refusal> {
        let key = lookup::rc(&self.topo, &self.plan, rc)?;
        let max = crate::topology::decode::MAX_REPLICAS;
        if replicas > max {
            return Err(Refusal(format!(
                "{replicas} replicas is more than one replication controller may have ({max})"
            )));
        }
        let mut live = self.live.clone();
        live.replicas.insert(key.clone(), replicas);
        self.move_to(live, None, &format!("scaled {key} to {replicas}"), false)
    }

    fn impair(
        &mut self,
        machine: &str,
        link: Option<crate::plan::types::LinkPlan>,
    ) -> Result<Reply, Refusal> {
        if lookup::node(&self.plan, machine).is_err() {
            lookup::host(&self.plan, machine).map_err(|_| {
                lookup::node(&self.plan, machine)
                    .err()
                    .unwrap_or(Refusal(String::new()))
            })?;
        }
        let old = self.live.clone();
        let mut live = self.live.clone();
        live.impairments.insert(machine.to_string(), link);
        let reply = self.move_to(live, None, &format!("impairments of {machine}"), false)?;
        if reply.code == 0 {
            return Ok(reply);
        }
        // Not applied (say the kernel has no netem): back to what was.
        let why = reply.message;
        let _ = self.move_to(
            old,
            None,
            &format!("impairments of {machine} restored"),
            false,
        );
        Err(Refusal(why))
    }

    fn apply(&mut self, mut spec: Spec, dry_run: bool) -> Result<Reply, Refusal> {
        // This machine's share of the new version, as of the old one.
        spec.machine = self.spec.machine.clone();
        let loaded = spec.load().map_err(|e| Refusal(e.render()))?;
        if loaded.topology.name.value != self.topo.name.value {
            return Err(Refusal(format!(
                "the file is testbed `{}`, not `{}`: `apply` changes a running testbed to a new version of its own file",
                loaded.topology.name.value, self.topo.name.value
            )));
        }
        // What cannot change live is refused before anything is planned
        // with the running pods' places (which a new network contradicts).
        let not_live = super::change::not_live(&self.plan, &loaded.plan);
        if !not_live.is_empty() {
            let lines: Vec<String> = not_live.iter().map(|n| n.to_string()).collect();
            return Err(Refusal(lines.join("\n")));
        }
        // The file says how many replicas and which pods: what `scale` and
        // `delete` changed live gives way to it.
        let live = Live {
            replicas: Default::default(),
            removed: Default::default(),
            ..self.live.clone()
        };
        self.move_to(live, Some((spec, loaded.topology)), "apply", dry_run)
    }

    /// Takes `live` (and a new file, if given, saved first) as the
    /// testbed's version; why not, when the file cannot be saved.
    fn adopt(
        &mut self,
        file: Option<(Spec, crate::topology::model::Topology)>,
        live: Live,
    ) -> Result<(), String> {
        if let Some((spec, topo)) = file {
            super::spec::write(&self.dir, &spec)
                .map_err(|e| format!("cannot save the file: {e}"))?;
            self.spec = spec;
            self.topo = topo;
        }
        self.live = live;
        Ok(())
    }

    /// Plans `live` (and a new file, if given), refuses what cannot change
    /// live, and unless `dry_run` moves the testbed there.
    fn move_to(
        &mut self,
        live: Live,
        file: Option<(Spec, crate::topology::model::Topology)>,
        reason: &str,
        dry_run: bool,
    ) -> Result<Reply, Refusal> {
        let mut live = live;
        super::desired::keep_pins(&self.plan, &mut live);
        let topo = file.as_ref().map_or(&self.topo, |(_, t)| t);
        let machine = self.spec.machine.as_deref();
        let d = super::desired::desired_share(topo, &live, machine)
            .map_err(|e| Refusal(e.to_string()))?;
        let not_live = super::change::not_live(&self.plan, &d.plan);
        if !not_live.is_empty() {
            let lines: Vec<String> = not_live.iter().map(|n| n.to_string()).collect();
            return Err(Refusal(lines.join("\n")));
        }
        let changes = super::change::changes(&self.plan, &d.plan);
        let json = serde_json::to_value(&changes).ok();
        let text = changes.render();
        if dry_run || changes.is_empty() {
            if !dry_run {
                // Nothing changes on this machine, but the testbed is at its
                // new version (a file, a replica count) all the same: this
                // machine plans the others' shares from it.
                if let Err(e) = self.adopt(file, live) {
                    return Ok(Reply::failed(e));
                }
                self.save_live();
            }
            let mut r = Reply::ok(if changes.is_empty() {
                "no change".to_string()
            } else {
                text
            });
            r.changes = json;
            return Ok(r);
        }
        self.events.record(
            EventKind::ApplyStep,
            "testbed",
            format!("{reason}: started"),
        );
        let relinked = relinked(&self.plan, &d.plan);
        if let Err(e) = self.adopt(file, live) {
            return Ok(Reply::failed(e));
        }
        let result = self.converge(d.plan, &BTreeSet::new(), reason);
        let failed: Vec<String> = relinked
            .iter()
            .filter_map(|m| self.set_impairment(m).err())
            .collect();
        self.events
            .record(EventKind::ApplyStep, "testbed", format!("{reason}: done"));
        let mut r = match result {
            Ok(_) if failed.is_empty() => Reply::ok(text),
            Ok(_) => Reply::failed(failed.join("\n")),
            Err(e) => Reply::failed(format!("{text}\n{e}")),
        };
        r.changes = json;
        Ok(r)
    }
}

/// The nodes and hosts whose link impairments differ between two plans.
fn relinked(old: &crate::plan::Plan, new: &crate::plan::Plan) -> Vec<String> {
    let nodes = new.nodes.iter().filter_map(|n| {
        let o = old.nodes.iter().find(|o| o.name == n.name)?;
        (o.link != n.link).then(|| n.name.clone())
    });
    let hosts = new.hosts.iter().filter_map(|h| {
        let o = old.hosts.iter().find(|o| o.name == h.name)?;
        (o.link != h.link).then(|| h.name.clone())
    });
    nodes.chain(hosts).collect()
}
