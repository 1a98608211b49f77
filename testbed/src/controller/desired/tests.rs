use super::*;
use crate::controller::live::{Live, Pin};
use crate::plan::testutil::load;

const FILE: &str = "
name: t
seed: 7
nodes: [{name: n1}, {name: n2}, {name: n3}]
pods:
  - {name: db, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - name: web
    replicas: 3
    selector: {app: web}
    template:
      labels: {app: web}
      containers: [{name: c, command: [sleep, infinity]}]
services:
  - {name: web, selector: {app: web}, ports: [{port: 80}]}
";

fn spec() -> Topology {
    load(FILE).topology
}

fn placement(plan: &Plan) -> Vec<(String, String, String)> {
    plan.pods
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.node.clone(),
                p.ip.map(|i| i.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

/// With no live changes the desired plan is the file's plan, byte for byte.
#[test]
fn no_live_changes_is_the_files_plan() {
    let d = desired(&spec(), &Live::default()).unwrap();
    assert_eq!(d.plan, load(FILE).plan);
    assert!(d.pending.is_empty());
}

/// Pins keep pods where they were when the file's own placement would move
/// them (here: a pod added before them in file order).
#[test]
fn pinned_pods_stay_where_they_run() {
    let first = desired(&spec(), &Live::default()).unwrap().plan;
    let mut live = Live {
        pins: pins(&first),
        ..Live::default()
    };
    live.replicas.insert("default/web".into(), 5);
    let second = desired(&spec(), &live).unwrap().plan;
    for p in &first.pods {
        let q = second.pods.iter().find(|q| q.name == p.name).unwrap();
        assert_eq!((&q.node, q.ip, &q.interface), (&p.node, p.ip, &p.interface));
    }
    let names: Vec<&str> = second.pods.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"web-4"), "{names:?}");
    // Endpoints follow: five web pods behind the service.
    assert_eq!(second.services[0].ports[0].endpoints.len(), 5);
}

/// Scaling down removes the highest-numbered pods.
#[test]
fn scale_down_keeps_the_lowest_indexes() {
    let mut live = Live::default();
    live.replicas.insert("default/web".into(), 1);
    let plan = desired(&spec(), &live).unwrap().plan;
    let names: Vec<&str> = plan.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["db", "web-0"]);
}

/// Eviction: controller pods move to ready nodes with fresh addresses, a
/// bare pod is gone, nothing lands on the unschedulable node, and pods
/// elsewhere do not move. The same events give the same placement.
#[test]
fn eviction_moves_controller_pods_and_drops_bare_ones() {
    let run = || {
        let first = desired(&spec(), &Live::default()).unwrap().plan;
        let mut live = Live {
            pins: pins(&first),
            ..Live::default()
        };
        let victim = first
            .pods
            .iter()
            .find(|p| p.name == "db")
            .unwrap()
            .node
            .clone();
        live.unschedulable.insert(victim.clone());
        let evicted = evict(&first, &victim, &mut live);
        let plan = desired(&spec(), &live).unwrap().plan;
        assert!(plan.pods.iter().all(|p| p.node != victim));
        assert!(!plan.pods.iter().any(|p| p.name == "db"));
        for p in &first.pods {
            if p.node != victim {
                let q = plan.pods.iter().find(|q| q.name == p.name).unwrap();
                assert_eq!((&q.node, q.ip), (&p.node, p.ip), "{} moved", p.name);
            }
        }
        assert!(!evicted.is_empty());
        placement(&plan)
    };
    assert_eq!(run(), run());
}

/// A pod the file pins to an unschedulable node is pending, not placed
/// elsewhere.
#[test]
fn a_file_pinned_pod_on_an_unschedulable_node_is_pending() {
    let file = FILE.replace("{name: db,", "{name: db, node: n2,");
    let spec = load(&file).topology;
    let mut live = Live::default();
    live.unschedulable.insert("n2".into());
    let d = desired(&spec, &live).unwrap();
    assert_eq!(d.pending, ["default/db"]);
    assert!(d.plan.pods.iter().all(|p| p.node != "n2"));
}

/// Live impairments replace the file's.
#[test]
fn live_impairments_replace_the_files() {
    let mut live = Live::default();
    live.impairments.insert(
        "n1".into(),
        Some(crate::plan::types::LinkPlan {
            delay: Some("10ms".parse().unwrap()),
            ..Default::default()
        }),
    );
    let plan = desired(&spec(), &live).unwrap().plan;
    assert!(plan.nodes[0].link.is_some());
    assert!(plan.nodes[1].link.is_none());
}

/// A pin to an address another pod holds is a contradiction, reported.
#[test]
fn contradicting_pins_are_an_error() {
    let first = desired(&spec(), &Live::default()).unwrap().plan;
    let mut live = Live {
        pins: pins(&first),
        ..Live::default()
    };
    let a = live.pins["default/web-0"].clone();
    live.pins.insert(
        "default/web-1".into(),
        Pin {
            node: a.node,
            ip: a.ip,
        },
    );
    let e = desired(&spec(), &live).unwrap_err();
    assert!(e.to_string().contains("already pinned"), "{e}");
}

const SPREAD: &str = "
name: t
machines: [{name: alpha, address: 192.0.2.1}, {name: beta, address: 192.0.2.2}]
cluster: {overlay: vxlan, registry: etcd, etcd: {endpoints: ['http://192.0.2.1:2379']}}
nodes:
  - {name: n1, machine: alpha}
  - {name: n2, machine: beta}
  - {name: n3, machine: beta}
replicationControllers:
  - name: web
    replicas: 3
    selector: {app: web}
    template:
      labels: {app: web}
      containers: [{name: c, command: [sleep, infinity]}]
";

/// A machine's share plans the whole testbed and keeps its own part;
/// when another machine's node is NotReady its RC pod comes here, and this
/// machine's nodes forget the routes, neighbours and forwarding entries of
/// that node's subnet (and only those).
#[test]
fn a_share_takes_the_pods_of_a_lost_machine_and_forgets_its_routes() {
    let spec = load(SPREAD).topology;
    let mut live = Live::default();
    let d = desired_share(&spec, &live, Some("alpha")).unwrap();
    assert_eq!(d.plan.machine.as_deref(), Some("alpha"));
    let names = |p: &Plan| p.pods.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&d.plan), ["web-0"]);
    let n1 = &d.plan.nodes[0];
    assert_eq!(n1.routes.iter().filter(|r| r.dev == "flannel.1").count(), 2);
    // Every pod pinned where the whole plan put it, as the controller does.
    keep_pins(&desired(&spec, &live).unwrap().plan, &mut live);
    for n in ["n2", "n3"] {
        live.conditions.insert(
            n.into(),
            crate::controller::live::NodeCondition {
                ready: false,
                since_ms: 1,
                reason: None,
            },
        );
        live.unschedulable.insert(n.into());
    }
    let whole = desired(&spec, &live).unwrap().plan;
    evict(&whole, "n2", &mut live);
    evict(&whole, "n3", &mut live);
    let d = desired_share(&spec, &live, Some("alpha")).unwrap();
    assert_eq!(names(&d.plan), ["web-0", "web-1", "web-2"]);
    assert!(d.plan.pods.iter().all(|p| p.node == "n1"));
    let n1 = &d.plan.nodes[0];
    assert!(
        n1.routes.iter().all(|r| r.dev != "flannel.1"),
        "{:?}",
        n1.routes
    );
    assert!(n1.neighbours.is_empty() && n1.fdb.is_empty());
    // beta's share (were it running) would be the same nodes, no pods.
    let b = desired_share(&spec, &live, Some("beta")).unwrap();
    assert!(b.plan.pods.is_empty());
}
