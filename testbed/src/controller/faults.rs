//! What faults mean for the desired state, pure: which links must be down
//! (a node-down or link-down fault makes "down" the desired state, so that
//! drift repair keeps it down rather than fighting it), which LAN ports may
//! not talk (partitions), and whether a fault request makes sense.

use super::live::{ActiveFault, Fault, Live, Target};
use super::lookup::{self, Refusal};
use crate::plan::state::KernelState;
use crate::plan::Plan;
use std::collections::BTreeSet;

/// Where a link fault acts: the namespace and the interface set down.
pub fn link_of(plan: &Plan, target: &Target) -> Option<(String, String)> {
    match target {
        Target::Pod(key) => {
            let p = plan
                .pods
                .iter()
                .find(|p| format!("{}/{}", p.namespace, p.name) == *key)?;
            let i = p.interface.as_ref()?;
            Some((p.netns.clone(), i.inner.name.clone()))
        }
        Target::Node(n) => {
            let n = plan.nodes.iter().find(|x| &x.name == n)?;
            Some((plan.fabric.netns.clone(), n.uplink.peer.name.clone()))
        }
        Target::Host(h) => {
            let h = plan.hosts.iter().find(|x| &x.name == h)?;
            Some((plan.fabric.netns.clone(), h.uplink.peer.name.clone()))
        }
    }
}

/// The links the active faults hold down: (namespace, interface).
pub fn links_down(plan: &Plan, faults: &[ActiveFault]) -> BTreeSet<(String, String)> {
    faults
        .iter()
        .filter_map(|f| match &f.fault {
            Fault::NodeDown { node } => link_of(plan, &Target::Node(node.clone())),
            Fault::LinkDown { target } => link_of(plan, target),
            Fault::Partition { .. } => None,
        })
        .collect()
}

/// The kernel state `plan` describes with the active faults in force: the
/// links they hold down are down, without the routes through them (the
/// kernel drops those with the link; they come back with it).
pub fn kernel_state(plan: &Plan, faults: &[ActiveFault]) -> KernelState {
    let mut want = crate::plan::state::desired(plan);
    for (ns, link) in links_down(plan, faults) {
        let Some(s) = want.get_mut(&ns) else { continue };
        if let Some(l) = s.links.get_mut(&link) {
            l.up = false;
            s.routes.retain(|r| r.dev != link);
        }
    }
    want
}

/// The pairs of LAN ports (in the fabric's namespace) that may not talk,
/// from every partition in force, each pair once, in order.
pub fn cuts(plan: &Plan, faults: &[ActiveFault]) -> Vec<(String, String)> {
    let port = |name: &str| {
        plan.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.uplink.peer.name.clone())
            .or_else(|| {
                plan.hosts
                    .iter()
                    .find(|h| h.name == name)
                    .map(|h| h.uplink.peer.name.clone())
            })
    };
    let everyone: Vec<&str> = plan
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .chain(plan.hosts.iter().map(|h| h.name.as_str()))
        .collect();
    let mut out = BTreeSet::new();
    for f in faults {
        let Fault::Partition { nodes, from } = &f.fault else {
            continue;
        };
        let others: Vec<&str> = if from.is_empty() {
            everyone
                .iter()
                .copied()
                .filter(|m| !nodes.iter().any(|n| n == m))
                .collect()
        } else {
            from.iter().map(String::as_str).collect()
        };
        for a in nodes {
            for b in &others {
                if let (Some(x), Some(y)) = (port(a), port(b)) {
                    out.insert(if x < y { (x, y) } else { (y, x) });
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Checks a fault request against the running testbed: what it names
/// exists, and it is not in force already.
pub fn check(plan: &Plan, live: &Live, fault: &Fault) -> Result<Fault, Refusal> {
    let fault = match fault {
        Fault::NodeDown { node } => {
            lookup::node(plan, node)?;
            if live.node_down(node) {
                return Err(Refusal(format!("node `{node}` is down already")));
            }
            fault.clone()
        }
        Fault::LinkDown { target } => {
            let target = match target {
                Target::Pod(p) => {
                    let key = lookup::pod(plan, p)?;
                    let pod = plan
                        .pods
                        .iter()
                        .find(|x| format!("{}/{}", x.namespace, x.name) == key);
                    if pod.is_some_and(|p| p.interface.is_none()) {
                        return Err(Refusal(format!(
                            "pod `{p}` has no link of its own (network {}): take its node's link down instead",
                            pod.map_or("", |p| p.network.as_str())
                        )));
                    }
                    Target::Pod(key)
                }
                Target::Node(n) => {
                    lookup::node(plan, n)?;
                    target.clone()
                }
                Target::Host(h) => {
                    lookup::host(plan, h)?;
                    target.clone()
                }
            };
            let fault = Fault::LinkDown { target };
            if live.faults.iter().any(|f| f.fault == fault) {
                return Err(Refusal(format!("{fault} is in force already")));
            }
            fault
        }
        Fault::Partition { nodes, from } => {
            if nodes.is_empty() {
                return Err(Refusal(
                    "a partition needs at least one node on one side".into(),
                ));
            }
            for m in nodes.iter().chain(from) {
                if lookup::node(plan, m).is_err() && lookup::host(plan, m).is_err() {
                    return Err(lookup::node(plan, m)
                        .err()
                        .unwrap_or(Refusal(String::new())));
                }
            }
            if let Some(both) = nodes.iter().find(|n| from.contains(n)) {
                return Err(Refusal(format!(
                    "`{both}` is on both sides of the partition"
                )));
            }
            let mut a = nodes.clone();
            a.sort();
            a.dedup();
            let mut b = from.clone();
            b.sort();
            b.dedup();
            Fault::Partition { nodes: a, from: b }
        }
    };
    Ok(fault)
}

/// The active fault `clear` undoes: `fault` itself must be in force.
/// `node-up` of a ready node and `link-up` of a link that is up are refused.
pub fn check_clear(plan: &Plan, live: &Live, fault: &Fault) -> Result<Fault, Refusal> {
    let fault = match fault {
        Fault::NodeDown { node } => {
            lookup::node(plan, node)?;
            if !live.node_down(node) {
                return Err(Refusal(format!(
                    "node `{node}` is not down: there is nothing to bring up"
                )));
            }
            fault.clone()
        }
        Fault::LinkDown { target } => {
            let target = match target {
                Target::Pod(p) => Target::Pod(lookup::pod(plan, p)?),
                t => t.clone(),
            };
            Fault::LinkDown { target }
        }
        Fault::Partition { .. } => fault.clone(),
    };
    if !live.faults.iter().any(|f| f.fault == fault) {
        return Err(Refusal(format!("{fault} is not in force")));
    }
    Ok(fault)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::plan;

    const FILE: &str = "
name: t
nodes: [{name: n1}, {name: n2}, {name: n3}]
hosts: [{name: h}]
pods:
  - {name: a, containers: [{name: c, command: [sleep, infinity]}]}
";

    fn active(f: Fault) -> ActiveFault {
        ActiveFault {
            fault: f,
            since_ms: 0,
            until_ms: None,
        }
    }

    #[test]
    fn a_partition_cuts_each_pair_of_ports_once() {
        let p = plan(FILE);
        let f = [active(Fault::Partition {
            nodes: vec!["n1".into()],
            from: vec![],
        })];
        let c = cuts(&p, &f);
        // n1 against n2, n3 and the host.
        assert_eq!(c.len(), 3, "{c:?}");
        let f = [active(Fault::Partition {
            nodes: vec!["n1".into()],
            from: vec!["n2".into()],
        })];
        assert_eq!(cuts(&p, &f).len(), 1);
    }

    #[test]
    fn faults_make_down_the_desired_state_of_their_links() {
        let p = plan(FILE);
        let f = [
            active(Fault::NodeDown { node: "n2".into() }),
            active(Fault::LinkDown {
                target: Target::Pod("default/a".into()),
            }),
        ];
        let want = kernel_state(&p, &f);
        let port = &p.nodes[1].uplink.peer.name;
        assert!(!want[&p.fabric.netns].links[port].up);
        assert!(!want[&p.pods[0].netns].links["eth0"].up);
        assert!(
            want[&p.pods[0].netns].routes.is_empty(),
            "no route through a down link"
        );
        assert!(want[&p.fabric.netns].links[&p.nodes[0].uplink.peer.name].up);
    }

    #[test]
    fn nonsense_faults_are_refused() {
        let p = plan(FILE);
        let mut live = Live::default();
        assert!(check(&p, &live, &Fault::NodeDown { node: "n4".into() }).is_err());
        live.faults
            .push(active(Fault::NodeDown { node: "n1".into() }));
        let e = check(&p, &live, &Fault::NodeDown { node: "n1".into() }).unwrap_err();
        assert!(e.0.contains("down already"), "{e}");
        let e = check_clear(&p, &live, &Fault::NodeDown { node: "n2".into() }).unwrap_err();
        assert!(e.0.contains("not down"), "{e}");
        assert!(check_clear(&p, &live, &Fault::NodeDown { node: "n1".into() }).is_ok());
        let e = check(
            &p,
            &live,
            &Fault::Partition {
                nodes: vec!["n1".into()],
                from: vec!["n1".into()],
            },
        )
        .unwrap_err();
        assert!(e.0.contains("both sides"), "{e}");
    }
}
