use super::*;
use crate::check::Endpoint;
use crate::experiment::{Action, Fault, LinkTarget, PodTarget};

pub(crate) const TOPO: &str = "\
name: t
nodes: [{name: node1}, {name: node2}]
hosts: [{name: client}]
replicationControllers:
  - name: web
    namespace: shop
    replicas: 3
    selector: {app: web}
    template:
      labels: {app: web}
      containers: [{name: c, command: [sleep, infinity]}]
services:
  - {name: web, namespace: shop, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
pods:
  - name: toolbox
    containers: [{name: c, command: [sleep, infinity]}]
checks:
  - {name: web-up, from: pod toolbox, to: pod toolbox, port: tcp/80}
";

pub(crate) fn load_topo(p: &str) -> Result<(std::path::PathBuf, Loaded), LoadError> {
    match p {
        "t.yaml" => crate::load_str(p, TOPO.to_string()).map(|l| (p.into(), l)),
        "bad.yaml" => crate::load_str(p, "name: t\n".to_string()).map(|l| (p.into(), l)),
        _ => Err(LoadError::Read {
            file: p.to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
    }
}

pub(crate) fn ok(body: &str) -> Experiment {
    let src = format!("experiment: e\ntopology: t.yaml\n{body}");
    match read_str("e.yaml", &src, &load_topo) {
        Ok(e) => e,
        Err(e) => panic!("{}", e.render()),
    }
}

/// The problems, as `line:col path: message | help`.
fn errs(body: &str) -> Vec<String> {
    let src = format!("experiment: e\ntopology: t.yaml\n{body}");
    match read_str("e.yaml", &src, &load_topo) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(LoadError::Invalid { diagnostics, .. }) => diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {}: {} | {}",
                    d.pos.line,
                    d.pos.col,
                    d.path,
                    d.message,
                    d.help.clone().unwrap_or_default()
                )
            })
            .collect(),
        Err(e) => panic!("{e}"),
    }
}

fn has(errs: &[String], text: &str) {
    assert!(
        errs.iter().any(|e| e.contains(text)),
        "no `{text}` in {errs:#?}"
    );
}

#[test]
fn defaults() {
    let e = ok("");
    assert_eq!(e.name, "e");
    assert_eq!((e.seed, e.repeat, e.shuffle), (0, 1, true));
    assert!(e.params.is_empty() && e.workloads.is_empty() && e.timeline.is_empty());
    assert_eq!(e.topology_source, TOPO);
}

#[test]
fn top_level_fields() {
    let e = ok("seed: 7\nrepeat: 3\nshuffle: false\n");
    assert_eq!((e.seed, e.repeat, e.shuffle), (7, 3, false));
}

#[test]
fn an_empty_file_and_missing_fields() {
    let e = read_str("e.yaml", "", &load_topo).unwrap_err();
    assert!(e.render().contains("the file is empty"));
    let e = read_str("e.yaml", "seed: 1\n", &load_topo).unwrap_err();
    let r = e.render();
    assert!(
        r.contains("no `experiment`") && r.contains("no `topology`"),
        "{r}"
    );
}

#[test]
fn unknown_fields_say_did_you_mean() {
    has(
        &errs("repat: 2\n"),
        "3:1 repat: unknown field `repat` in an experiment | did you mean `repeat`?",
    );
    has(&errs("workloads: [{name: w, kind: ping, from: pod toolbox, to: pod toolbox, durration: 1s}]\n"), "did you mean `duration`?");
}

#[test]
fn the_name_is_a_dns_label() {
    let src = "experiment: Fail_over\ntopology: t.yaml\n";
    let r = read_str("e.yaml", src, &load_topo).unwrap_err().render();
    assert!(
        r.contains("`Fail_over`") && r.contains("e.yaml:1:13"),
        "{r}"
    );
}

#[test]
fn seed_and_repeat_ranges() {
    has(
        &errs("seed: -1\n"),
        "3:7 seed: `seed` must be a whole number",
    );
    has(&errs("repeat: 0\n"), "repeat: `repeat` 0 is out of range");
    has(&errs("repeat: 1001\n"), "`repeat` 1001 is out of range");
    has(&errs("shuffle: yes\n"), "`shuffle` must be true or false");
}

#[test]
fn a_bad_or_missing_topology_names_the_field() {
    let src = "experiment: e\ntopology: bad.yaml\n";
    let r = read_str("e.yaml", src, &load_topo).unwrap_err().render();
    assert!(
        r.contains("e.yaml:2:11") && r.contains("the topology `bad.yaml` is not valid"),
        "{r}"
    );
    let src = "experiment: e\ntopology: nowhere.yaml\n";
    let r = read_str("e.yaml", src, &load_topo).unwrap_err().render();
    assert!(
        r.contains("`nowhere.yaml` is not valid") && r.contains("cannot read"),
        "{r}"
    );
}

#[test]
fn params_in_file_order() {
    let e = ok("params:\n  cluster.proxy: [iptables, nftables]\n  cluster.overlay: [udp, vxlan]\n");
    assert_eq!(e.params.len(), 2);
    assert_eq!(e.params[0].path, "cluster.proxy");
    assert_eq!(e.params[0].short(), "proxy");
    assert_eq!(e.params[1].values, ["udp", "vxlan"]);
}

#[test]
fn a_param_value_must_make_a_valid_topology() {
    let e = errs("params:\n  cluster.proxy: [iptables, ipvs]\n");
    has(
        &e,
        "4:29 params.cluster.proxy[1]: `cluster.proxy: ipvs` does not make a valid topology",
    );
}

#[test]
fn an_unknown_param_path_is_named() {
    let e = errs("params:\n  cluster.proxi: [iptables]\n");
    has(&e, "4:3 params.cluster.proxi: `cluster.proxi` is not a field of the topology: unknown field `proxi`");
    has(&e, "did you mean `proxy`?");
    has(
        &errs("params:\n  nodes[0].name: [a]\n"),
        "is not a path of mapping fields",
    );
}

#[test]
fn params_need_values_and_distinct_names() {
    has(
        &errs("params:\n  cluster.proxy: []\n"),
        "`cluster.proxy` has no values",
    );
    has(
        &errs("params:\n  cluster.proxy: iptables\n"),
        "must be a list",
    );
    has(&errs("params: [a]\n"), "`params` must be a mapping");
    has(
        &errs("params:\n  cluster.proxy: [iptables]\n  proxy: [a]\n"),
        "both end in `proxy`",
    );
}

#[test]
fn a_workload_with_defaults() {
    let e = ok("workloads:\n  - {name: w, kind: http, from: pod toolbox, to: service web.shop}\n");
    let w = &e.workloads[0];
    assert_eq!(w.kind, WorkloadKind::Http);
    assert_eq!(
        w.from,
        Endpoint::Pod {
            name: "toolbox".into(),
            namespace: "default".into()
        }
    );
    assert_eq!(
        w.to,
        Endpoint::Service {
            name: "web".into(),
            namespace: "shop".into()
        }
    );
    assert_eq!((w.port, w.rate, w.streams), (None, DEFAULT_RATE, 1));
    assert_eq!(
        (w.start, w.duration, w.timeout),
        (Duration::ZERO, DEFAULT_DURATION, DEFAULT_TIMEOUT)
    );
}

#[test]
fn a_workload_with_every_field() {
    let e = ok("workloads:\n  - {name: s, kind: tcpStream, from: {pods: {app: web}}, to: pod toolbox, port: 5201, rate: 200/s, streams: 4, start: 1s, duration: 20s, timeout: 500ms}\n");
    let w = &e.workloads[0];
    assert_eq!(w.kind, WorkloadKind::TcpStream);
    assert!(matches!(&w.from, Endpoint::Pods(l) if l["app"] == "web"));
    assert_eq!((w.port, w.rate, w.streams), (Some(5201), 200, 4));
    assert_eq!(w.start, Duration::from_secs(1));
    assert_eq!(w.duration, Duration::from_secs(20));
    assert_eq!(w.timeout, Duration::from_millis(500));
}

#[test]
fn workload_errors() {
    let w = |s: &str| {
        errs(&format!(
            "workloads:\n  - {{name: w, from: pod toolbox, to: pod toolbox, {s}}}\n"
        ))
    };
    has(
        &w("kind: htp"),
        "`kind` `htp` is not one of the choices | did you mean `http`?",
    );
    has(
        &w("kind: http, rate: 200"),
        "`rate` `200` is not a number of sends per second",
    );
    has(
        &w("kind: http, rate: 0/s"),
        "is not a number of sends per second",
    );
    has(&w("kind: http, port: 0"), "`port` 0 is out of range");
    has(&w("kind: ping, port: 80"), "a `ping` workload has no port");
    has(
        &w("kind: http, streams: 2"),
        "`streams` applies only to a `tcpStream` workload",
    );
    has(&w("kind: http, duration: 2d"), "`duration` is invalid");
    has(
        &w("kind: http, start: 90000s"),
        "`start` is longer than a day",
    );
    has(
        &errs("workloads:\n  - {name: w, kind: http, from: service web.shop, to: pod toolbox}\n"),
        "a service or an address cannot send",
    );
    has(
        &errs("workloads:\n  - {name: w, kind: http, from: pod toolbox, to: pid x}\n"),
        "workloads[0].to",
    );
    has(
        &errs("workloads:\n  - {kind: http, from: pod toolbox, to: pod toolbox}\n"),
        "a workload has no `name`",
    );
    has(&errs("workloads:\n  - {name: w, kind: ping, from: pod toolbox, to: pod toolbox}\n  - {name: w, kind: ping, from: pod toolbox, to: pod toolbox}\n"), "a workload named `w` is already declared");
}

#[test]
fn timeline_faults() {
    let e = ok("timeline:
  - {at: 5s, fault: {kill: pod shop/web-1}}
  - {at: 6s, fault: {delete: {pick: {rc: web}}}}
  - {at: 8s, fault: {nodeDown: node2}, for: 6s}
  - {at: 9s, fault: {linkDown: host client}}
  - {at: 9s, fault: {linkDown: node node1}}
  - {at: 9s, fault: {linkDown: pod toolbox}}
  - {at: 15s, fault: {impair: {node: node1, delay: 20ms, loss: 1%}}, for: 3s}
  - {at: 16s, fault: {partition: [[node1], [node2, client]]}, for: 2s}
  - {at: 17s, fault: {scale: {rc: web, replicas: 1}}}
  - {at: 18s, check: web-up}
  - {at: 19s, exec: {pod: toolbox, command: [ip, route]}}
");
    let a: Vec<&Action> = e.timeline.iter().map(|t| &t.action).collect();
    assert_eq!(
        *a[0],
        Action::Fault(Fault::Kill(PodTarget::Named("shop/web-1".into())))
    );
    assert_eq!(
        *a[1],
        Action::Fault(Fault::Delete(PodTarget::Pick { rc: "web".into() }))
    );
    assert_eq!(*a[2], Action::Fault(Fault::NodeDown("node2".into())));
    assert_eq!(e.timeline[2].hold, Some(Duration::from_secs(6)));
    assert_eq!(
        *a[3],
        Action::Fault(Fault::LinkDown(LinkTarget::Host("client".into())))
    );
    assert_eq!(
        *a[4],
        Action::Fault(Fault::LinkDown(LinkTarget::Node("node1".into())))
    );
    assert_eq!(
        *a[5],
        Action::Fault(Fault::LinkDown(LinkTarget::Pod(PodTarget::Named(
            "default/toolbox".into()
        ))))
    );
    let Action::Fault(Fault::Impair(imp)) = a[6] else {
        panic!("{:?}", a[6])
    };
    assert_eq!(
        (imp.node.as_str(), imp.delay, imp.loss_ppm),
        ("node1", Some(Duration::from_millis(20)), Some(10_000))
    );
    assert_eq!(
        *a[7],
        Action::Fault(Fault::Partition(
            vec!["node1".into()],
            vec!["node2".into(), "client".into()]
        ))
    );
    assert_eq!(
        *a[8],
        Action::Fault(Fault::Scale {
            rc: "web".into(),
            replicas: 1
        })
    );
    assert_eq!(*a[9], Action::Check("web-up".into()));
    assert_eq!(
        *a[10],
        Action::Exec {
            pod: "default/toolbox".into(),
            command: vec!["ip".into(), "route".into()]
        }
    );
    assert_eq!(e.timeline[10].at, Duration::from_secs(19));
}

#[test]
fn timeline_errors() {
    let t = |s: &str| errs(&format!("timeline:\n  - {s}\n"));
    has(
        &t("{fault: {kill: pod toolbox}}"),
        "a timeline entry has no `at`",
    );
    has(&t("{at: 1s}"), "does exactly one thing, but this has none");
    has(
        &t("{at: 1s, check: web-up, exec: {pod: toolbox, command: [a]}}"),
        "but this has check and exec",
    );
    has(
        &t("{at: 1s, check: web-up, for: 1s}"),
        "`for` applies only to a fault",
    );
    has(
        &t("{at: 1s, check: web-upp}"),
        "no check named `web-upp` | did you mean `web-up`?",
    );
    has(
        &t("{at: 1s, fault: {kil: pod toolbox}}"),
        "did you mean `kill`?",
    );
    has(
        &t("{at: 1s, fault: {kill: pod toolbx}}"),
        "no pod `default/toolbx` | did you mean `default/toolbox`?",
    );
    has(
        &t("{at: 1s, fault: {kill: toolbox}}"),
        "`toolbox` is not a pod",
    );
    has(
        &t("{at: 1s, fault: {kill: {pick: {rc: db}}}}"),
        "no replication controller `db`",
    );
    has(
        &t("{at: 1s, fault: {kill: {pick: {pods: web}}}}"),
        "unknown field `pods` in `pick`",
    );
    has(&t("{at: 1s, fault: {nodeDown: node3}}"), "no node `node3`");
    has(
        &t("{at: 1s, fault: {nodeDown: node1, kill: pod toolbox}}"),
        "a fault has exactly one field, but this has 2",
    );
    has(
        &t("{at: 1s, fault: {partition: []}}"),
        "`partition` is one or two lists",
    );
    has(
        &t("{at: 1s, fault: {impair: {node: node1}}}"),
        "`impair` changes nothing",
    );
    has(
        &t("{at: 1s, fault: {impair: {node: node1, loss: 200%}}}"),
        "`loss` is invalid",
    );
    has(
        &t("{at: 1s, fault: {scale: {rc: web}}}"),
        "`scale` has no `replicas`",
    );
    has(
        &t("{at: 1s, exec: {pod: toolbox, command: []}}"),
        "`command` is empty",
    );
    has(
        &t("{at: 1s, exec: {pod: ghost, command: [ls]}}"),
        "no pod `default/ghost`",
    );
    has(&t("{at: soon, check: web-up}"), "`at` is invalid");
}
