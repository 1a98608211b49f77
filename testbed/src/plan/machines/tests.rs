use super::*;
use crate::plan::testutil::{load, plan};

fn a(
    machines: &[&str],
    nodes: &[Option<&str>],
    hosts: &[Option<&str>],
) -> (Vec<String>, Vec<String>) {
    let got = assignment(machines, nodes, hosts).expect("machines given");
    (got.nodes, got.hosts)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn without_machines_nothing_is_assigned() {
    assert_eq!(assignment(&[], &[None, Some("m1")], &[None]), None);
}

#[test]
fn unplaced_nodes_go_round_robin_and_hosts_to_the_least_loaded() {
    let (n, h) = a(&["a", "b"], &[None, None, None, None], &[None, None]);
    assert_eq!(n, s(&["a", "b", "a", "b"]));
    assert_eq!(h, s(&["a", "b"]));
    // Three machines, two nodes: the first host fills the empty machine.
    let (n, h) = a(&["a", "b", "c"], &[None, None], &[None, None]);
    assert_eq!(n, s(&["a", "b"]));
    assert_eq!(h, s(&["c", "a"]));
}

#[test]
fn written_machines_count_first() {
    // Both nodes written on `a` come first: the free ones fill `b`.
    let (n, h) = a(
        &["a", "b"],
        &[None, Some("a"), None, Some("a")],
        &[None, Some("b")],
    );
    assert_eq!(n, s(&["b", "a", "b", "a"]));
    // a: 2 nodes; b: 2 nodes and the written host: the free host goes to a.
    assert_eq!(h, s(&["a", "b"]));
    // A host written on a machine weighs on the hosts' spread only.
    let (n, h) = a(&["a", "b"], &[None, None], &[Some("a"), None]);
    assert_eq!(n, s(&["a", "b"]));
    assert_eq!(h, s(&["a", "b"]));
}

#[test]
fn the_spread_is_the_same_every_time() {
    let nodes: Vec<Option<&str>> = (0..50).map(|i| (i % 7 == 0).then_some("c")).collect();
    let first = assignment(&["a", "b", "c"], &nodes, &[None; 5]);
    for _ in 0..3 {
        assert_eq!(assignment(&["a", "b", "c"], &nodes, &[None; 5]), first);
    }
}

const SPREAD: &str = "name: t
machines:
  - {name: alpha, address: 10.0.0.1}
  - {name: beta, address: 10.0.0.2}
cluster: {registry: etcd, etcd: {endpoints: [http://10.0.0.1:2379]}}
nodes:
  - {name: n1}
  - {name: n2}
  - {name: n3, machine: alpha}
hosts:
  - {name: h1}
pods:
  - {name: a, node: n1, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: b, node: n2, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: hn, node: n2, network: host, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: side, network: 'container:b', containers: [{name: c, command: [sleep, infinity]}]}
";

fn pods(share: &Share) -> Vec<String> {
    share.pods.iter().map(|p| p.name.clone()).collect()
}

#[test]
fn a_share_holds_its_nodes_their_pods_its_hosts_and_the_lan() {
    let p = plan(SPREAD);
    // n3 is written on alpha; n1 then goes to beta, n2 to alpha (ties to
    // the first); h1 to beta (alpha 2, beta 1).
    let alpha = share(&p, "alpha").unwrap();
    assert_eq!(alpha.machine.address.to_string(), "10.0.0.1");
    assert_eq!(alpha.nodes, s(&["n2", "n3"]));
    assert_eq!(alpha.hosts, Vec::<String>::new());
    assert_eq!(pods(&alpha), s(&["b", "hn", "side"]));
    assert_eq!(
        alpha.namespaces,
        s(&[
            "tb-t.fabric",
            "tb-t.node.n2",
            "tb-t.node.n3",
            "tb-t.pod.default.b"
        ]),
        "host-network and container: pods live in namespaces of others"
    );
    let beta = share(&p, "beta").unwrap();
    assert_eq!(beta.nodes, s(&["n1"]));
    assert_eq!(beta.hosts, s(&["h1"]));
    assert_eq!(pods(&beta), s(&["a"]));
    assert_eq!(
        beta.namespaces,
        s(&[
            "tb-t.fabric",
            "tb-t.node.n1",
            "tb-t.host.h1",
            "tb-t.pod.default.a"
        ])
    );
}

#[test]
fn every_node_host_and_pod_is_in_exactly_one_share() {
    let p = plan(SPREAD);
    let shares: Vec<Share> = p
        .machines
        .iter()
        .map(|m| share(&p, &m.name).unwrap())
        .collect();
    for n in &p.nodes {
        assert_eq!(
            shares.iter().filter(|s| s.nodes.contains(&n.name)).count(),
            1,
            "{}",
            n.name
        );
    }
    for h in &p.hosts {
        assert_eq!(
            shares.iter().filter(|s| s.hosts.contains(&h.name)).count(),
            1,
            "{}",
            h.name
        );
    }
    for pod in &p.pods {
        let n = shares
            .iter()
            .filter(|s| {
                s.pods
                    .iter()
                    .any(|r| r.name == pod.name && r.namespace == pod.namespace)
            })
            .count();
        assert_eq!(n, 1, "{}", pod.name);
    }
    assert!(shares.iter().all(|s| s.namespaces[0] == p.fabric.netns));
}

#[test]
fn a_share_of_an_unknown_machine_or_a_one_machine_plan_is_an_error() {
    let p = plan(SPREAD);
    let e = share(&p, "alhpa").unwrap_err();
    assert!(e.to_string().contains("did you mean `alpha`?"), "{e}");
    let e = share(&p, "gamma").unwrap_err();
    assert!(
        e.to_string().contains("its machines are: alpha, beta"),
        "{e}"
    );
    let one = plan("name: t\nnodes: [{name: n1}]\n");
    assert_eq!(
        share(&one, "alpha"),
        Err(ShareError::NoMachines("t".into()))
    );
}

#[test]
fn a_machine_that_gets_nothing_is_a_warning() {
    let l = load(
        "name: t
machines: [{name: a, address: 10.0.0.1}, {name: b, address: 10.0.0.2}, {name: c, address: 10.0.0.3}]
cluster: {registry: etcd, etcd: {endpoints: ['http://10.0.0.1:2379']}}
nodes: [{name: n1}, {name: n2, machine: a}]
",
    );
    let w: Vec<&str> = l.warnings.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("the machine `c` gets no node and no host"),
        "{w:?}"
    );
    assert_eq!(l.warnings[0].path, "machines[2].name");
    // Many idle machines are one warning, at the first of them.
    let many: String = (1..=9)
        .map(|i| format!("{{name: m{i}, address: 10.0.0.{i}}}, "))
        .collect();
    let l = load(&format!(
        "name: t\nmachines: [{many}]\ncluster: {{registry: etcd, etcd: {{endpoints: ['http://10.0.0.1:2379']}}}}\nnodes: [{{name: n1}}]\n"
    ));
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert_eq!(l.warnings[0].path, "machines[1].name");
    assert!(
        l.warnings[0]
            .message
            .starts_with("the machines `m2`, `m3`, `m4`, `m5`, `m6`, 3 more get"),
        "{}",
        l.warnings[0].message
    );
}

#[test]
fn the_plan_carries_machines_registry_and_etcd_and_reads_back() {
    let p = plan(SPREAD);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["machines"][1]["name"], "beta");
    assert_eq!(json["machines"][1]["address"], "10.0.0.2");
    assert_eq!(json["nodes"][0]["machine"], "beta");
    assert_eq!(json["hosts"][0]["machine"], "beta");
    assert_eq!(json["cluster"]["registry"], "etcd");
    assert_eq!(
        json["cluster"]["etcd"]["endpoints"][0],
        "http://10.0.0.1:2379"
    );
    assert_eq!(json["cluster"]["etcd"]["prefix"], "/coreos.com/network");
    let back: Plan = serde_json::from_value(json).unwrap();
    assert_eq!(back, p);
}

/// A plan of one machine has none of the fields: its bytes are those of a
/// plan from before they existed.
#[test]
fn a_one_machine_plan_has_none_of_the_fields() {
    let p = plan("name: t\nnodes: [{name: n1}]\nhosts: [{name: h1}]\n");
    let json = serde_json::to_string(&p).unwrap();
    for key in ["\"machines\"", "\"machine\"", "\"registry\"", "\"etcd\""] {
        assert!(!json.contains(key), "{key} in {json}");
    }
    // Written as the default, `registry: file` is left out too.
    let q = plan("name: t\ncluster: {registry: file}\nnodes: [{name: n1}]\nhosts: [{name: h1}]\n");
    assert_eq!(serde_json::to_string(&q).unwrap(), json);
}

#[test]
fn a_lan_across_machines_leaves_room_for_the_span_unless_the_file_says() {
    let two = "name: t\nmachines: [{name: a, address: 192.0.2.1}, {name: b, address: 192.0.2.2}]\n\
               nodes: [{name: n1}, {name: n2}]\n";
    let p = plan(two);
    assert_eq!(p.cluster.mtu, 1500 - crate::plan::span::OVERHEAD);
    assert_eq!(p.fabric.bridge.mtu, p.cluster.mtu);
    assert!(p.nodes.iter().all(|n| n.uplink.inner.mtu == p.cluster.mtu));
    assert_eq!(
        p.cluster.pod_mtu,
        p.cluster.mtu - p.cluster.overlay.overhead()
    );
    // A file that says its MTU (a jumbo-frame network) is taken at its word.
    let p = plan(&two.replace("nodes:", "cluster: {mtu: 9000}\nnodes:"));
    assert_eq!(p.cluster.mtu, 9000);
    // One machine: Ethernet's 1500 as ever.
    let p = plan("name: t\nnodes: [{name: n1}]\n");
    assert_eq!(p.cluster.mtu, 1500);
}

#[test]
fn a_restricted_plan_builds_exactly_its_share_and_keeps_what_names_every_machine() {
    let p = plan(SPREAD);
    for m in ["alpha", "beta"] {
        let r = restrict(&p, m).unwrap();
        let sh = share(&p, m).unwrap();
        assert_eq!(r.machine.as_deref(), Some(m));
        let nodes: Vec<String> = r.nodes.iter().map(|n| n.name.clone()).collect();
        assert_eq!(nodes, sh.nodes);
        let hosts: Vec<String> = r.hosts.iter().map(|h| h.name.clone()).collect();
        assert_eq!(hosts, sh.hosts);
        let pods: Vec<String> = r.pods.iter().map(|p| p.name.clone()).collect();
        assert_eq!(pods, self::pods(&sh));
        // Services, DNS and the nodes' routes still name every machine.
        assert_eq!(r.services, p.services);
        assert_eq!(r.dns, p.dns);
        for n in &r.nodes {
            let whole = p.nodes.iter().find(|x| x.name == n.name).unwrap();
            assert_eq!(n, whole);
        }
        // Restricting is deterministic and idempotent on the other fields.
        assert_eq!(restrict(&p, m).unwrap(), r);
    }
    assert!(restrict(&p, "gamma").is_err());
}
