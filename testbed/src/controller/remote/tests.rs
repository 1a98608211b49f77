use super::*;
use crate::controller::live::{Fault, Target};
use crate::plan::testutil::plan;

const SPREAD: &str = "
name: t
machines: [{name: alpha, address: 192.0.2.1}, {name: beta, address: 192.0.2.2}]
cluster: {registry: etcd, etcd: {endpoints: ['http://192.0.2.1:2379']}}
nodes:
  - {name: n1, machine: alpha}
  - {name: n2, machine: beta}
hosts:
  - {name: h, machine: beta}
pods:
  - {name: p, node: n2, containers: [{name: c, command: [sleep, infinity]}]}
";

fn records() -> BTreeMap<String, MachineRecord> {
    [
        ("alpha", vec!["default/q"]),
        ("beta", vec!["default/p", "prod/r"]),
    ]
    .into_iter()
    .map(|(m, pods)| {
        (
            m.to_string(),
            MachineRecord {
                machine: m.to_string(),
                nodes: Vec::new(),
                ready: Vec::new(),
                pods: pods.into_iter().map(String::from).collect(),
                not_ready: Vec::new(),
                faults: Vec::new(),
                placed: BTreeMap::new(),
                removed: Vec::new(),
            },
        )
    })
    .collect()
}

fn to(req: Request) -> Vec<String> {
    route(&req, "alpha", &plan(SPREAD), &records())
}

#[test]
fn a_request_goes_to_the_machine_running_what_it_names() {
    let fault = |fault| Request::Fault {
        fault,
        for_ms: None,
    };
    assert_eq!(to(fault(Fault::NodeDown { node: "n2".into() })), ["beta"]);
    assert_eq!(to(fault(Fault::NodeDown { node: "n1".into() })), ["alpha"]);
    let link = |t| fault(Fault::LinkDown { target: t });
    assert_eq!(to(link(Target::Host("h".into()))), ["beta"]);
    assert_eq!(to(link(Target::Pod("default/p".into()))), ["beta"]);
    assert_eq!(to(link(Target::Node("n1".into()))), ["alpha"]);
    let clear = Request::Clear {
        fault: Some(Fault::NodeDown { node: "n2".into() }),
    };
    assert_eq!(to(clear), ["beta"]);
    // Pods by the heartbeats (bare names are in `default`).
    assert_eq!(
        to(Request::Kill {
            pod: "p".into(),
            container: None
        }),
        ["beta"]
    );
    assert_eq!(
        to(Request::Delete {
            pod: "prod/r".into()
        }),
        ["beta"]
    );
    assert_eq!(to(Request::Delete { pod: "q".into() }), ["alpha"]);
    assert_eq!(
        to(Request::Impair {
            machine: "h".into(),
            link: None
        }),
        ["beta"]
    );
}

#[test]
fn what_concerns_every_machine_goes_to_all_and_unknown_names_stay_here() {
    let all = ["alpha", "beta"];
    assert_eq!(
        to(Request::Scale {
            rc: "web".into(),
            replicas: 3
        }),
        all
    );
    assert_eq!(to(Request::Clear { fault: None }), all);
    let cut = Request::Fault {
        fault: Fault::Partition {
            nodes: vec!["n1".into()],
            from: vec![],
        },
        for_ms: None,
    };
    assert_eq!(to(cut), all);
    // Unknown: here, where the controller names the closest.
    assert_eq!(
        to(Request::Kill {
            pod: "nope".into(),
            container: None
        }),
        ["alpha"]
    );
    assert_eq!(
        to(Request::Fault {
            fault: Fault::NodeDown { node: "n9".into() },
            for_ms: None
        }),
        ["alpha"]
    );
}

#[test]
fn replies_of_several_machines_are_joined_under_their_names() {
    let r = |code, message: &str| Reply {
        code,
        message: message.into(),
        changes: None,
    };
    let one = join(vec![("beta".into(), r(0, "done"))]);
    assert_eq!(one, r(0, "done"));
    let both = join(vec![
        ("alpha".into(), r(0, "done\n")),
        ("beta".into(), r(2, "no such rc")),
    ]);
    assert_eq!(both.code, 2);
    assert_eq!(both.message, "alpha: done\nbeta: no such rc");
}

#[test]
fn a_namespace_belongs_to_the_machine_of_its_node_host_or_pod() {
    let whole = plan(SPREAD);
    let of = |ns: &str| machine_of_netns(ns, &whole, &records());
    assert_eq!(of("tb-t.node.n1").as_deref(), Some("alpha"));
    assert_eq!(of("tb-t.node.n2").as_deref(), Some("beta"));
    assert_eq!(of("tb-t.host.h").as_deref(), Some("beta"));
    assert_eq!(of("tb-t.pod.default.p").as_deref(), Some("beta"));
    assert_eq!(of("tb-t.pod.prod.r").as_deref(), Some("beta"));
    assert_eq!(of("tb-t.pod.default.q").as_deref(), Some("alpha"));
    for unknown in [
        "tb-t.pod.default.zz",
        "tb-t.node.n9",
        "tb-other.node.n1",
        "tb-t.fabric",
    ] {
        assert_eq!(of(unknown), None, "{unknown}");
    }
}
