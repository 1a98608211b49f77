//! What the seed determines in a run ([`Seeded`]), computed purely from the
//! run's plan and schedule with the same code the daemons run: the plan's
//! SHA-256, the schedule, the faults' resolved targets, the userspace
//! proxy's round-robin order (`proxy::userspace::Balancer`, with
//! the port ids and seed the proxy daemon uses, `services::userspace`) and
//! the udp overlay's impairment fates (`overlay::impair::Impairer`, with the
//! seed and streams the overlay daemon uses, `overlay_run::run_daemon`).

use super::Seeded;
use crate::experiment::schedule::Run;
use crate::plan::types::Plan;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;

/// How many impairment decisions are hashed per node and direction.
pub const FATES: u64 = 10_000;
/// The simulated packets: one of `FATE_LEN` bytes every `FATE_GAP_US`.
pub const FATE_GAP_US: u64 = 100;
/// The simulated packets' length, bytes.
pub const FATE_LEN: usize = 1000;

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `plan` as compact JSON (`meta.planSha256` and
/// `seeded.planSha256`). The plan holds the testbed's name (namespaces,
/// MACs, state directory), so runs compared must use the same name.
pub fn plan_sha256(plan: &Plan) -> String {
    // A plan always serialises (string keys, no foreign types).
    sha256_hex(&serde_json::to_vec(plan).unwrap_or_default())
}

/// What the seed determines in `run`, whose topology planned to `plan`.
pub fn seeded(plan: &Plan, run: &Run) -> Seeded {
    Seeded {
        plan_sha256: plan_sha256(plan),
        schedule: serde_json::to_value(run).unwrap_or_default(),
        fault_targets: run
            .timeline
            .iter()
            .filter(|s| !s.what.starts_with("check ") && !s.what.starts_with("exec "))
            .map(|s| s.what.clone())
            .collect(),
        balancer_order: balancer_order(plan),
        impairment_fates: impairment_fates(plan),
    }
}

/// With the userspace proxy: each service port's backends (`POD IP:PORT`)
/// in the round-robin order its balancer starts with, over all the plan's
/// endpoints. Empty with another proxy mode.
pub fn balancer_order(plan: &Plan) -> BTreeMap<String, Vec<String>> {
    use proxy::userspace::Balancer;
    if plan.cluster.proxy != proxy::Mode::Userspace {
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    for s in &plan.services {
        for p in &s.ports {
            let id = proxy::portals::port_id(s, p);
            let addr = |e: &proxy::Endpoint| SocketAddrV4::new(e.ip, e.port);
            let endpoints = p.endpoints.iter().map(addr).collect();
            // The affinity does not change the order; the proxy daemon
            // passes the service's (`services::userspace::serve`).
            let b = Balancer::new(
                &id,
                plan.seed,
                endpoints,
                s.session_affinity,
                std::time::Duration::ZERO,
            );
            let named = b
                .order()
                .iter()
                .map(|a| {
                    let pod = p.endpoints.iter().find(|e| addr(e) == *a);
                    format!("{} {a}", pod.map_or("?", |e| e.pod.as_str()))
                })
                .collect();
            out.insert(id, named);
        }
    }
    out
}

/// With the udp overlay: for each node whose link is impaired, per
/// direction (`NODE/egress`, `NODE/ingress`), the SHA-256 of the first
/// [`FATES`] decisions of its engine (seed and stream as the overlay daemon
/// gives them: node index * 2, + 1 for ingress) for packets of
/// [`FATE_LEN`] bytes every [`FATE_GAP_US`]. Empty with another overlay.
pub fn impairment_fates(plan: &Plan) -> BTreeMap<String, String> {
    use overlay::impair::{Fate, Impairer};
    let mut out = BTreeMap::new();
    if plan.cluster.overlay != overlay::Backend::Udp {
        return out;
    }
    for (index, n) in plan.nodes.iter().enumerate() {
        let cfg = crate::overlay_run::impairment(&n.link);
        if cfg.is_noop() {
            continue;
        }
        let stream = index as u64 * 2;
        for (dir, stream) in [("egress", stream), ("ingress", stream + 1)] {
            let mut engine = Impairer::new(cfg.clone(), plan.seed, stream);
            let mut h = Sha256::new();
            for k in 0..FATES {
                match engine.admit(k * FATE_GAP_US, FATE_LEN) {
                    Fate::Drop => h.update([0u8]),
                    Fate::Deliver { at_us, copies } => {
                        h.update([copies]);
                        h.update(at_us.to_le_bytes());
                    }
                }
            }
            out.insert(format!("{}/{dir}", n.name), hex(&h.finalize()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::schedule::Step;

    const TOPOLOGY: &str = "
name: seeded
cluster: {proxy: userspace, overlay: udp}
nodes:
  - {name: node1, link: {delay: 5ms, jitter: 2ms, loss: 1%}}
  - {name: node2}
replicationControllers:
  - name: web
    replicas: 3
    selector: {app: web}
    template:
      labels: {app: web}
      containers: [{name: web, command: [sleep, infinity]}]
services:
  - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
";

    fn plan(seed: u64) -> Plan {
        let text = TOPOLOGY.replace("name: seeded\n", &format!("name: seeded\nseed: {seed}\n"));
        crate::load_str("seeded.yaml", text)
            .unwrap_or_else(|e| panic!("{}", e.render()))
            .plan
    }

    fn run(seed: u64) -> Run {
        Run {
            combination: "default".into(),
            rep: 0,
            seed,
            workloads: Vec::new(),
            timeline: vec![
                Step {
                    at_us: 1_000_000,
                    until_us: None,
                    what: "kill pod default/web-1".into(),
                },
                Step {
                    at_us: 2_000_000,
                    until_us: None,
                    what: "check web".into(),
                },
                Step {
                    at_us: 3_000_000,
                    until_us: None,
                    what: "exec pod toolbox: ip route".into(),
                },
            ],
        }
    }

    #[test]
    fn sha256_of_known_inputs() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_same_plan_and_run_give_the_same_seeded_quantities() {
        let a = seeded(&plan(7), &run(7));
        assert_eq!(a, seeded(&plan(7), &run(7)));
        assert_eq!(a.fault_targets, vec!["kill pod default/web-1".to_string()]);
        let order = &a.balancer_order["default/web:80/tcp"];
        assert_eq!(order.len(), 3, "{order:?}");
        assert!(order.iter().all(|b| b.starts_with("web-")), "{order:?}");
        assert_eq!(
            a.impairment_fates.len(),
            2,
            "node1 both ways: {:?}",
            a.impairment_fates
        );
        assert_ne!(
            a.impairment_fates["node1/egress"],
            a.impairment_fates["node1/ingress"]
        );
    }

    #[test]
    fn another_seed_changes_the_balancer_order_and_the_fates() {
        let a = seeded(&plan(7), &run(7));
        let b = seeded(&plan(8), &run(8));
        assert_ne!(a.plan_sha256, b.plan_sha256);
        assert_ne!(
            a.impairment_fates["node1/egress"],
            b.impairment_fates["node1/egress"]
        );
        // Three backends have six orders: some seed near 7 gives another.
        let other = (8..40).any(|s| seeded(&plan(s), &run(s)).balancer_order != a.balancer_order);
        assert!(other, "the balancer's order never changes with the seed");
    }

    #[test]
    fn other_modes_have_no_balancer_order_or_fates() {
        let text = TOPOLOGY.replace(
            "{proxy: userspace, overlay: udp}",
            "{proxy: iptables, overlay: vxlan}",
        );
        let p = crate::load_str("seeded.yaml", text)
            .unwrap_or_else(|e| panic!("{}", e.render()))
            .plan;
        let s = seeded(&p, &run(7));
        assert!(s.balancer_order.is_empty() && s.impairment_fates.is_empty());
    }
}
