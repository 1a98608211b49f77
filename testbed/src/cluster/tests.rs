use super::*;

fn view(reachable: bool, records: &[(&str, &[&str], &[&str])]) -> ClusterView {
    ClusterView {
        machine: "alpha".into(),
        etcd: EtcdHealth {
            endpoints: "http://192.0.2.1:2379".into(),
            reachable,
            since_ms: 1,
            error: None,
        },
        machines: records
            .iter()
            .map(|(m, nodes, ready)| {
                (
                    m.to_string(),
                    MachineRecord {
                        machine: m.to_string(),
                        nodes: nodes.iter().map(|s| s.to_string()).collect(),
                        ready: ready.iter().map(|s| s.to_string()).collect(),
                        pods: Vec::new(),
                        not_ready: Vec::new(),
                        faults: Vec::new(),
                        placed: BTreeMap::new(),
                        removed: Vec::new(),
                    },
                )
            })
            .collect(),
    }
}

fn pods(v: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn keys_live_under_the_testbeds_own_prefix() {
    assert_eq!(prefix("demo"), "/testbed/demo/");
    assert_eq!(machine_key("demo", "alpha"), "/testbed/demo/machines/alpha");
    assert!(machine_key("demo", "a").starts_with(&machines_prefix("demo")));
    // One testbed's prefix is not another's.
    assert!(!machine_key("demo2", "a").starts_with(&prefix("demo")));
}

#[test]
fn the_others_ready_pods_leave_out_this_machines_and_bad_names() {
    let v = view(
        true,
        &[
            ("alpha", &["n1"], &["default/web-0"]),
            ("beta", &["n2"], &["default/web-1", "prod/api", "broken"]),
        ],
    );
    assert_eq!(
        others_ready(&v, "alpha"),
        pods(&[("default", "web-1"), ("prod", "api")])
    );
    assert_eq!(others_ready(&v, "beta"), pods(&[("default", "web-0")]));
}

#[test]
fn nodes_of_a_machine_without_heartbeat_are_lost_only_while_etcd_answers() {
    let nodes: BTreeMap<String, String> = [("n1", "alpha"), ("n2", "beta"), ("n3", "gamma")]
        .iter()
        .map(|(n, m)| (n.to_string(), m.to_string()))
        .collect();
    let v = view(true, &[("alpha", &["n1"], &[]), ("gamma", &["n3"], &[])]);
    assert_eq!(lost_nodes(&v, "alpha", &nodes), ["n2"]);
    // This machine's own nodes are never lost through etcd.
    let v = view(true, &[]);
    assert_eq!(lost_nodes(&v, "alpha", &nodes), ["n2", "n3"]);
    // etcd away: nothing is concluded.
    let v = view(false, &[]);
    assert!(lost_nodes(&v, "alpha", &nodes).is_empty());
}

#[test]
fn records_round_trip_and_a_key_must_name_its_machine() {
    let r = record(
        "beta",
        &["n2".into()],
        &pods(&[("default", "web-1")]),
        &pods(&[("default", "web-1"), ("default", "db")]),
    );
    assert_eq!(r.ready, ["default/web-1"]);
    assert_eq!(r.pods, ["default/db", "default/web-1"]);
    let text = serde_json::to_vec(&r).unwrap();
    let p = machines_prefix("demo");
    assert_eq!(decode(&p, &machine_key("demo", "beta"), &text), Some(r));
    assert_eq!(decode(&p, &machine_key("demo", "alpha"), &text), None);
    assert_eq!(decode(&p, "/elsewhere/beta", &text), None);
    assert_eq!(decode(&p, &machine_key("demo", "beta"), b"not json"), None);
}

#[test]
fn nodes_another_machine_holds_not_ready_are_reported_with_it() {
    let mut v = view(
        true,
        &[("alpha", &["n1"], &[]), ("beta", &["n2", "n3"], &[])],
    );
    v.machines.get_mut("beta").unwrap().not_ready = vec!["n3".into()];
    v.machines.get_mut("alpha").unwrap().not_ready = vec!["n1".into()];
    let r = reported_not_ready(&v, "alpha");
    assert_eq!(r.len(), 1);
    assert_eq!(r.get("n3").map(String::as_str), Some("beta"));
}

#[test]
fn the_newer_placement_of_a_pod_two_machines_run_stays() {
    let at = |node: &str, moves: u32| Placement {
        node: node.into(),
        ip: None,
        moves,
    };
    let mut v = view(true, &[("alpha", &["n1"], &[]), ("gamma", &["n5"], &[])]);
    let placed = |v: &mut ClusterView, m: &str, list: &[(&str, Placement)]| {
        v.machines.get_mut(m).unwrap().placed = list
            .iter()
            .map(|(k, p)| (k.to_string(), p.clone()))
            .collect();
    };
    // Alpha moved web-2 and web-3 off beta's nodes while beta was cut off.
    placed(
        &mut v,
        "alpha",
        &[
            ("default/web-2", at("n1", 1)),
            ("default/web-3", at("n2", 1)),
            ("default/web-0", at("n1", 0)),
        ],
    );
    let beta: BTreeMap<String, u32> = [
        ("default/web-2", 0),
        ("default/web-3", 0),
        ("default/web-4", 0),
    ]
    .map(|(k, m)| (k.to_string(), m))
    .into();
    let gave_up = yielded(&v, "beta", &beta);
    assert_eq!(
        gave_up.keys().collect::<Vec<_>>(),
        ["default/web-2", "default/web-3"]
    );
    assert_eq!(gave_up["default/web-2"], at("n1", 1));
    // Alpha keeps its copies: beta's placements are older.
    let mut back = v.clone();
    back.machines.insert(
        "beta".into(),
        MachineRecord {
            machine: "beta".into(),
            placed: beta.keys().map(|k| (k.clone(), at("n3", 0))).collect(),
            ..Default::default()
        },
    );
    let alpha: BTreeMap<String, u32> = [
        ("default/web-2", 1),
        ("default/web-3", 1),
        ("default/web-0", 0),
    ]
    .map(|(k, m)| (k.to_string(), m))
    .into();
    assert!(yielded(&back, "alpha", &alpha).is_empty());
    // A tie: the machine whose name sorts first keeps it, whichever asks.
    placed(&mut back, "gamma", &[("default/web-0", at("n5", 0))]);
    assert!(yielded(&back, "alpha", &alpha).is_empty());
    let gamma: BTreeMap<String, u32> = [("default/web-0".to_string(), 0)].into();
    assert_eq!(
        yielded(&back, "gamma", &gamma)["default/web-0"],
        at("n1", 0)
    );
    // Among several others, the newest wins.
    placed(&mut back, "gamma", &[("default/web-2", at("n5", 2))]);
    assert_eq!(yielded(&back, "beta", &beta)["default/web-2"], at("n5", 2));
    // Pods only others run are not this machine's business.
    assert!(yielded(&back, "beta", &BTreeMap::new()).is_empty());
}

#[test]
fn bare_pods_another_machine_removed_are_removed_here_too() {
    let mut v = view(true, &[("alpha", &["n1"], &[]), ("gamma", &["n5"], &[])]);
    v.machines.get_mut("gamma").unwrap().removed = vec!["default/solo".into()];
    v.machines.get_mut("alpha").unwrap().removed =
        vec!["default/other".into(), "default/solo".into()];
    let mine: BTreeSet<String> = ["default/solo".to_string(), "default/kept".to_string()].into();
    let gone = removed_elsewhere(&v, "beta", &mine);
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone["default/solo"], "alpha", "the first machine by name");
    // A machine's own record says nothing to it.
    assert!(removed_elsewhere(&v, "alpha", &["default/other".to_string()].into()).is_empty());
}
