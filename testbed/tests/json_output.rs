//! Every `--json` output against docs/json.md: objects (or lists of
//! objects) with the documented, typed, camelCase fields, no null and no
//! positional rows; every documented field met at least once; and reviewed
//! snapshots of each shape. Outputs that need a running testbed come from
//! the same pure functions the commands call (`report::summary`,
//! `report::status::report`, `report::inspect::kernel`).

mod results_fixture;
mod shapes;

use serde_json::Value;
use shapes::{structural_faults, Doc};
use std::path::{Path, PathBuf};
use std::process::Command;
use testbed::plan::{render, Plan};
use testbed::report::{self, inspect, status, validate};
use testbed::runtime::status::{ContainerStatus, Exit, State};
use testbed::runtime::OwnerKind;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn doc() -> Doc {
    let text = std::fs::read_to_string(root().join("docs/json.md")).expect("docs/json.md");
    Doc::parse(&text)
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("topologies"))
        .expect("topologies/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(file: &Path) -> testbed::Loaded {
    testbed::load(file).unwrap_or_else(|e| panic!("{}", e.render()))
}

fn example(stem: &str) -> Plan {
    load(&root().join(format!("topologies/{stem}.yaml"))).plan
}

/// What no example has: a host whose link the kernel limits.
const LIMITED_HOST: &str = "
name: limited
cluster: {overlay: host-gw}
nodes: [{name: node1}]
hosts: [{name: client, link: {rate: 20mbit}}]
";

/// Every plan of the examples, and each again over the other overlays (so
/// that vxlan's neighbours and FDB entries are met too), and one more.
fn plans() -> Vec<Plan> {
    let extra = testbed::load_str("limited.yaml", LIMITED_HOST.into());
    let mut plans = vec![extra.unwrap_or_else(|e| panic!("{}", e.render())).plan];
    for file in examples() {
        for backend in overlay::Backend::ALL {
            if let Ok(l) = load(&file).with_overlay(backend) {
                plans.push(l.plan);
            }
        }
    }
    plans
}

fn stdout_of(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the testbed binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Fails unless `text` is JSON of the documented shape `root`.
fn assert_shape(doc: &Doc, root: &str, text: &str, what: &str) {
    let v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{text}"));
    let mut faults = structural_faults(&v);
    faults.extend(doc.check_root(root, &v));
    assert!(
        faults.is_empty(),
        "{what} is not a {root} as docs/json.md documents it:\n  {}",
        faults.join("\n  ")
    );
}

fn json<T: serde::Serialize>(v: &T) -> String {
    render::to_json(v).expect("serialises")
}

/// Statuses of every container of `plan`, cycling through what a
/// supervisor reports: running and ready, running but not ready yet,
/// waiting after a failed run, ended well, killed for good, unable to start
/// (the `skew`-th of these first).
fn synthetic(plan: &Plan, skew: usize) -> Vec<ContainerStatus> {
    let pods = plan.pods.iter().flat_map(|p| {
        p.containers
            .iter()
            .map(move |c| (OwnerKind::Pod, Some(p.namespace.clone()), &p.name, c))
    });
    let hosts = plan.hosts.iter().flat_map(|h| {
        h.containers
            .iter()
            .map(move |c| (OwnerKind::Host, None, &h.name, c))
    });
    pods.chain(hosts)
        .enumerate()
        .map(|(i, (kind, namespace, owner, c))| {
            let mut s = ContainerStatus {
                kind,
                namespace,
                owner: owner.clone(),
                container: c.name.clone(),
                pid: Some(1000 + i as i32),
                start_time: None,
                state: State::Running,
                restarts: 0,
                last_exit: None,
                ready: true,
                ready_tcp: c.ready_tcp,
                error: None,
                log: c.log.clone(),
            };
            match (i + skew) % 7 {
                1 => s.ready = false,
                6 => {
                    (s.state, s.pid, s.ready) = (State::Waiting, None, false);
                    (s.restarts, s.last_exit) = (2, Some(Exit::Unknown));
                }
                2 => {
                    (s.state, s.pid, s.ready) = (State::Waiting, None, false);
                    (s.restarts, s.last_exit) = (3, Some(Exit::Code(1)));
                }
                3 => (s.state, s.pid, s.last_exit) = (State::Exited, None, Some(Exit::Code(0))),
                4 => {
                    (s.state, s.pid, s.ready) = (State::Failed, None, false);
                    (s.restarts, s.last_exit) = (1, Some(Exit::Signal(9)));
                }
                5 => {
                    (s.state, s.pid, s.ready) = (State::Failed, None, false);
                    s.error = Some("`nosuch` is not a program on this machine".into());
                }
                _ => {}
            }
            s
        })
        .collect()
}

/// Counters for the first node of `plan` only (a node whose daemon has
/// written none yet has no `overlay`).
fn counters(plan: &Plan) -> std::collections::BTreeMap<String, overlay::stats::StatsSnapshot> {
    let stats = overlay::stats::Stats::new(1);
    use overlay::stats::Counter::*;
    for (c, n) in [
        (TunToUdpPackets, 1200),
        (TunToUdpBytes, 1_480_000),
        (UdpToTunPackets, 1100),
        (UdpToTunBytes, 1_320_000),
        (NoRoute, 2),
        (ForeignSource, 1),
    ] {
        stats.shard(0).add(c, n);
    }
    stats.set_workers(2);
    stats.set_leases(1);
    stats.set_bad_leases(vec![overlay::registry::BadLease {
        file: "/run/testbed/web/registry/subnets/10.244.3.0-24".into(),
        error: "expected value at line 1 column 1".into(),
    }]);
    let snapshot = || overlay::stats::StatsSnapshot {
        uptime_ms: 61_000,
        ..stats.snapshot()
    };
    plan.nodes
        .iter()
        .take(1)
        .map(|n| (n.name.clone(), snapshot()))
        .collect()
}

fn running() -> status::Supervisor {
    status::Supervisor {
        running: true,
        pid: Some(4242),
    }
}

/// The status of `plan` with synthetic containers; in the web example's,
/// web-0 serves and web-1 does not. Its first node is not ready, and a
/// fault of each kind is in force.
fn status_of(plan: &Plan) -> status::StatusReport {
    use testbed::controller::live::{ActiveFault, Fault, Live, NodeCondition, Target};
    let mut live = Live::default();
    if let Some(n) = plan.nodes.first() {
        live.conditions.insert(
            n.name.clone(),
            NodeCondition {
                ready: false,
                since_ms: 1_764_400_000_000,
                reason: Some("unreachable for 5000 ms (node-down fault)".into()),
            },
        );
        live.faults.push(ActiveFault {
            fault: Fault::NodeDown {
                node: n.name.clone(),
            },
            since_ms: 1_764_399_995_000,
            until_ms: None,
        });
        live.faults.push(ActiveFault {
            fault: Fault::Partition {
                nodes: vec![n.name.clone()],
                from: vec![],
            },
            since_ms: 1_764_399_996_000,
            until_ms: Some(1_764_400_006_000),
        });
    }
    live.faults.push(ActiveFault {
        fault: Fault::LinkDown {
            target: Target::Host("client".into()),
        },
        since_ms: 1_764_399_997_000,
        until_ms: None,
    });
    status::report(plan, &synthetic(plan, 4), &counters(plan), running())
        .with_controller(&live, vec!["default/pinned".into()], &events())
        .with_cluster(Some(cluster_status()))
}

/// The machines of a share: this one, and one without heartbeat.
fn cluster_status() -> testbed::report::cluster::ClusterStatus {
    use testbed::report::cluster::{ClusterStatus, MachineStatus};
    ClusterStatus {
        machine: "alpha".into(),
        etcd: Some(testbed::cluster::EtcdHealth {
            endpoints: "http://10.0.0.1:2379".into(),
            reachable: false,
            since_ms: 1_764_400_000_000,
            error: Some("etcd unreachable at http://10.0.0.1:2379".into()),
        }),
        machines: vec![
            MachineStatus {
                name: "alpha".into(),
                address: "10.0.0.1".parse().expect("address"),
                heartbeat: true,
                nodes: vec!["node1".into()],
                not_ready: vec![],
                ready_pods: 2,
                faults: vec!["node-down node1".into()],
            },
            MachineStatus {
                name: "beta".into(),
                address: "10.0.0.2".parse().expect("address"),
                heartbeat: false,
                nodes: vec![],
                not_ready: vec!["node2".into()],
                ready_pods: 0,
                faults: vec![],
            },
        ],
    }
}

/// A few events, one of each shape.
fn events() -> Vec<testbed::controller::events::Event> {
    use testbed::controller::events::{Event, EventKind};
    let at = |ms: u64, e: Event| Event { unix_ms: ms, ..e };
    vec![
        at(
            1_764_400_000_000,
            Event::now(
                EventKind::NodeNotReady,
                "node node1",
                "unreachable for 5000 ms",
            ),
        ),
        at(
            1_764_400_000_010,
            Event::now(
                EventKind::PodEvicted,
                "pod default/web-0",
                "node node1 is not ready",
            ),
        ),
        at(
            1_764_400_000_020,
            Event::now(
                EventKind::DriftDetected,
                "netns tb-web.node.node1",
                "not repaired",
            )
            .with_message("cannot recreate cni0"),
        ),
    ]
}

#[test]
fn the_documented_fields_are_camel_case() {
    let doc = doc();
    // flannel's own document keeps flannel's names (docs/json.md says so).
    let foreign = ["NetworkConfig", "BackendConfig"];
    for (ty, fields) in doc
        .types
        .iter()
        .filter(|(t, _)| !foreign.contains(&t.as_str()))
    {
        for f in fields {
            let mut chars = f.name.chars();
            assert!(
                chars.next().is_some_and(|c| c.is_ascii_lowercase())
                    && chars.all(|c| c.is_ascii_alphanumeric()),
                "{ty}.{} is not camelCase",
                f.name
            );
        }
    }
}

#[test]
fn every_json_output_has_its_documented_shape() {
    let doc = doc();
    // validate: every example (valid) and every bad file (invalid).
    let bad = std::fs::read_dir(root().join("tests/bad"))
        .expect("tests/bad")
        .map(|e| e.expect("entry").path());
    for file in examples().into_iter().chain(bad) {
        let f = file.display().to_string();
        let (code, out) = stdout_of(&["validate", "--json", &f]);
        assert!(matches!(code, Some(0 | 2)), "validate {f}: {code:?}");
        assert_shape(&doc, "Validation", &out, &format!("validate --json {f}"));
    }
    // plan, through the binary.
    for file in examples() {
        let f = file.display().to_string();
        let (code, out) = stdout_of(&["plan", "--json", &f]);
        assert_eq!(code, Some(0), "plan {f}");
        assert_shape(&doc, "Plan", &out, &format!("plan --json {f}"));
    }
    for plan in plans() {
        let what = |cmd: &str| format!("{cmd} of {} ({:?})", plan.name, plan.cluster.overlay);
        assert_shape(&doc, "Plan", &json(&plan), &what("plan"));
        assert_shape(&doc, "Summary", &json(&report::summary(&plan)), &what("up"));
        let statuses = vec![status_of(&plan)];
        assert_shape(
            &doc,
            "list of StatusReport",
            &json(&statuses),
            &what("status"),
        );
        let desired = testbed::plan::state::desired(&plan);
        let kernel = inspect::kernel(&plan.name, &desired);
        assert_shape(&doc, "KernelReport", &json(&kernel), &what("inspect"));
        let rules: Vec<inspect::InstalledRules> = plan
            .nodes
            .iter()
            .map(|n| inspect::InstalledRules {
                node: n.name.clone(),
                netns: n.netns.clone(),
                mode: plan.cluster.proxy,
                rules: testbed::services::rendered(&plan, &[]),
            })
            .collect();
        assert_shape(
            &doc,
            "list of InstalledRules",
            &json(&rules),
            &what("inspect --rules"),
        );
    }
    // events, and the controller's replies (with an apply's difference).
    // On a machine's share, each event names its machine.
    let mut on_alpha = events();
    for e in &mut on_alpha {
        e.machine = Some("alpha".into());
    }
    let evs = report::EventsReport {
        testbed: "web".into(),
        events: on_alpha,
    };
    assert_shape(&doc, "Events", &json(&evs), "events");
    assert_shape(&doc, "Reply", &json(&apply_reply()), "apply");
    assert_shape(&doc, "CheckReport", &json(&check_report()), "check");
    let verify = report::VerifyReport {
        testbed: "web".into(),
        matches: false,
        namespaces: 9,
        differences: vec!["pod.default.web: link eth0: missing".into()],
    };
    assert_shape(&doc, "VerifyReport", &json(&verify), "verify");
    let down = report::DownReport {
        removed: vec![
            report::Removed {
                testbed: "web".into(),
                namespaces: 9,
                processes: 4,
                kept_logs: Some("/srv/logs/web".into()),
                kept_files: Some(12),
                machine: Some("alpha".into()),
                etcd: Some(testbed::cluster::leave::Left {
                    outcome: testbed::cluster::leave::Outcome::Unreachable,
                    machines: vec!["beta".into()],
                    keys: Some(3),
                    error: Some("etcd unreachable at http://10.0.0.1:2379".into()),
                    left: vec!["/testbed/web/".into()],
                }),
            },
            report::Removed {
                testbed: "other".into(),
                namespaces: 0,
                processes: 0,
                kept_logs: None,
                kept_files: None,
                machine: None,
                etcd: None,
            },
        ],
    };
    assert_shape(&doc, "DownReport", &json(&down), "down");
    for args in [
        vec!["rules", "--json", "topologies/web.yaml"],
        vec![
            "rules",
            "--json",
            "--mode",
            "nftables",
            "topologies/web.yaml",
            "--without",
            "web-0",
        ],
    ] {
        let (code, out) = stdout_of(&args);
        assert_eq!(code, Some(0), "{args:?}");
        assert_shape(&doc, "RulesReport", &out, &args.join(" "));
    }
    let web = example("web");
    for link in [web.nodes[0].link.clone(), Some(Default::default()), None] {
        let impair = report::ImpairReport {
            testbed: "web".into(),
            machine: "node1".into(),
            link,
        };
        assert_shape(&doc, "ImpairReport", &json(&impair), "impair --show");
    }
    results_shapes(&doc);
    // ls: whatever this machine has, and each state.
    let (code, out) = stdout_of(&["ls", "--json"]);
    assert_eq!(code, Some(0), "ls");
    assert_shape(&doc, "list of Listed", &out, "ls --json");
    assert_shape(&doc, "list of Listed", &json(&listed()), "ls");
    let unseen = doc.unseen();
    assert!(
        unseen.is_empty(),
        "docs/json.md documents fields no output had (stale, or the test lacks a case): {unseen:?}"
    );
}

/// `results --json` of an experiment and of a run, and `results diff
/// --json` of two experiments whose seeds differ.
fn results_shapes(doc: &Doc) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    results_fixture::write(a.path(), 7);
    results_fixture::write(b.path(), 8);
    let (pa, pb) = (
        a.path().display().to_string(),
        b.path().display().to_string(),
    );
    let (code, out) = stdout_of(&["results", "--json", &pa]);
    assert_eq!(code, Some(0), "results --json");
    assert_shape(
        doc,
        "ExperimentSummary",
        &out,
        "results --json (experiment)",
    );
    for entry in [
        "proxy=iptables,cidr=default/rep-0",
        "proxy=userspace,cidr=10.0.0.0%2F8/rep-1",
    ] {
        let run = a.path().join(entry).display().to_string();
        let (code, out) = stdout_of(&["results", "--json", &run]);
        assert_eq!(code, Some(0), "results --json {entry}");
        assert_shape(doc, "RunRecord", &out, "results --json (run)");
    }
    let (code, out) = stdout_of(&["results", "diff", "--json", &pa, &pb]);
    assert_eq!(code, Some(1), "seeds differ");
    assert_shape(doc, "ResultsDiff", &out, "results diff --json");
    // Runs on one side only.
    let only = a
        .path()
        .join("proxy=iptables,cidr=default/rep-1")
        .display()
        .to_string();
    let (_, out) = stdout_of(&["results", "diff", "--json", &pa, &only]);
    assert_shape(
        doc,
        "ResultsDiff",
        &out,
        "results diff --json (a run against an experiment)",
    );
}

/// A check report with a result of each status, an error pair and a
/// matrix with its expected table.
fn check_report() -> testbed::check::report::CheckReport {
    use testbed::check::report::{CheckReport, CheckResult, PairResult, Status, Table, SCHEMA};
    use testbed::check::Expect;
    let pair = |actual: &str, error: Option<&str>| PairResult {
        from: "pod client".into(),
        to: "service shop/web".into(),
        port: "http/80/".into(),
        expected: Expect::Allow,
        actual: actual.into(),
        error: error.map(String::from),
    };
    CheckReport {
        schema: SCHEMA,
        testbed: "web".into(),
        checks: vec![
            CheckResult {
                name: "ok".into(),
                status: Status::Pass,
                attempts: 1,
                pairs: vec![pair("ok", None)],
                table: None,
            },
            CheckResult {
                name: "broken".into(),
                status: Status::Fail,
                attempts: 25,
                pairs: vec![pair("error", Some("HTTP 404"))],
                table: None,
            },
            CheckResult {
                name: "matrix".into(),
                status: Status::Warn,
                attempts: 1,
                pairs: vec![],
                table: Some(Table {
                    rows: vec!["pod a".into(), "pod b".into()],
                    columns: vec!["pod a".into(), "pod b".into()],
                    cells: vec!["-X".into(), ".-".into()],
                    expected: Some(vec!["-.".into(), ".-".into()]),
                }),
            },
        ],
    }
}

/// The reply to an `apply` that touches every kind of thing.
fn apply_reply() -> testbed::controller::control::Reply {
    let old = "
name: t
nodes: [{name: n1}, {name: n2, link: {delay: 5ms}}]
hosts: [{name: h1}, {name: h2, link: {rate: 10mbit}}]
pods:
  - {name: keep, labels: {a: b}, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: gone, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - {name: web, replicas: 1, selector: {app: web}, template: {labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}}
services:
  - {name: web, selector: {app: web}, ports: [{port: 80}]}
  - {name: old, selector: {a: b}, ports: [{port: 53, protocol: UDP}]}
";
    let new = "
name: t
nodes: [{name: n1, labels: {zone: a}}, {name: n2, link: {delay: 10ms}}]
hosts: [{name: h1}, {name: h3}]
pods:
  - {name: keep, labels: {a: c}, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - {name: web, replicas: 2, selector: {app: web}, template: {labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}}
services:
  - {name: web, type: NodePort, selector: {app: web}, ports: [{port: 80}]}
  - {name: new, selector: {app: web}, ports: [{port: 81}]}
";
    let plan = |y: &str| {
        testbed::load_str("t.yaml", y.into())
            .unwrap_or_else(|e| panic!("{}", e.render()))
            .plan
    };
    let changes = testbed::controller::change::changes(&plan(old), &plan(new));
    testbed::controller::control::Reply {
        code: 0,
        message: changes.render(),
        changes: Some(serde_json::to_value(&changes).expect("JSON")),
    }
}

fn listed() -> Vec<report::Listed> {
    let plan = example("web");
    vec![
        report::listed("webdemo", Some(&plan), 9, true),
        report::listed("old", Some(&plan), 9, false),
        report::listed("crashed", None, 3, false),
    ]
}

/// The shape `status --json` had: rows of positional strings, restarts as
/// text, counters as untyped pairs.
const OLD_STATUS: &str = r#"[{
  "name": "webdemo", "supervisor": true,
  "nodes": [["node1", "192.168.96.1", "10.244.1.0/24"]],
  "hosts": [["client", "192.168.96.239", "Running"]],
  "pods": [["shop/web-0", "node1", "10.244.1.2", "Running", "0"]],
  "services": [["shop/web", "ClusterIP", "10.96.0.10", "-", "10.244.1.2:8080"]],
  "overlay": [["node1", {"tunToUdp": {"packets": 1, "bytes": 84}}]]
}]"#;

/// The shape `up --json` had.
const OLD_SUMMARY: &str = r#"{
  "name": "webdemo",
  "nodes": [["node1", "192.168.96.1", "10.244.1.0/24"]],
  "hosts": [["client", "192.168.96.239"]],
  "pods": [["shop/web-0", "node1", "10.244.1.2"]],
  "services": [["shop/web", "ClusterIP", "10.96.0.10", "-", "80/TCP"]]
}"#;

#[test]
fn the_check_rejects_positional_rows() {
    let doc = doc();
    for (root, old) in [
        ("list of StatusReport", OLD_STATUS),
        ("Summary", OLD_SUMMARY),
    ] {
        let v: Value = serde_json::from_str(old).expect("JSON");
        let faults = structural_faults(&v);
        assert!(
            faults.iter().any(|f| f.contains("positional row")),
            "{faults:?}"
        );
        let errors = doc.check_root(root, &v);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("$[0].nodes[0]") || e.contains("$.nodes[0]")),
            "{errors:?}"
        );
    }
    // A number as text, a null, an undocumented field: each caught.
    let mut pod = serde_json::to_value(&status_of(&example("web")).pods[0]).expect("pod");
    pod["restarts"] = "0".into();
    pod["ready"] = Value::Null;
    pod["ip"] = "10.244.1.2".into();
    let errors = doc.check_root("PodStatus", &pod);
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn validate_json_snapshots() {
    let (code, out) = stdout_of(&["validate", "--json", "topologies/minimal.yaml"]);
    assert_eq!(code, Some(0));
    insta::assert_snapshot!("validate-valid", out);
    let (code, out) = stdout_of(&["validate", "--json", "tests/bad/84-several-errors.yaml"]);
    assert_eq!(code, Some(2));
    insta::assert_snapshot!("validate-invalid", out);
    // The human line of a valid file comes from the same report.
    let plan = example("minimal");
    let human = validate::validation("topologies/minimal.yaml", Some(&plan), &[]).to_string();
    let (_, out) = stdout_of(&["validate", "topologies/minimal.yaml"]);
    assert_eq!(human, out);
}

#[test]
fn up_summary_snapshots() {
    let summary = report::summary(&example("web"));
    insta::assert_snapshot!("summary-web-json", json(&summary));
    insta::assert_snapshot!("summary-web-text", summary.to_string());
    let modes = report::summary(&example("network-modes"));
    insta::assert_snapshot!("summary-network-modes-text", modes.to_string());
    // It reads back into the same value: every field typed, none lost.
    let back: report::Summary = serde_json::from_str(&json(&summary)).expect("parses");
    assert_eq!(back, summary);
}

#[test]
fn status_snapshots() {
    let plan = example("web");
    let st = status_of(&plan);
    insta::assert_snapshot!("status-web-json", json(&vec![&st]));
    insta::assert_snapshot!("status-web-text", st.to_string());
    let back: status::StatusReport = serde_json::from_str(&json(&st)).expect("parses");
    assert_eq!(back, st);
    // Only pods that serve are endpoints; the supervisor not running and
    // no report yet: every pod Unknown, every pod's endpoints kept.
    assert!(st.pods.iter().any(|p| !p.ready));
    let none = status::report(&plan, &[], &Default::default(), Default::default());
    assert!(none.pods.iter().all(|p| p.phase == status::Phase::Unknown));
    assert_eq!(none.services, plan.services);
    let v = serde_json::to_value(&none).expect("JSON");
    assert_eq!(v["supervisor"], serde_json::json!({"running": false}));
}

#[test]
fn ls_snapshots() {
    insta::assert_snapshot!("ls-json", json(&listed()));
    insta::assert_snapshot!("ls-text", report::list_table(&listed()));
}

#[test]
fn results_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    results_fixture::write(dir.path(), 7);
    let run = dir.path().join("proxy=userspace,cidr=10.0.0.0%2F8/rep-1");
    for (name, path) in [
        ("results-experiment-json", dir.path()),
        ("results-run-json", run.as_path()),
    ] {
        let (code, out) = stdout_of(&["results", "--json", &path.display().to_string()]);
        assert_eq!(code, Some(0), "{name}");
        insta::assert_snapshot!(name, out);
    }
    let (_, text) = stdout_of(&["results", &run.display().to_string()]);
    insta::assert_snapshot!("results-run-text", text);
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    let id = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    insta::assert_snapshot!("results-summary-md", md.replace(&id, "RUN-ID"));
}

#[test]
fn inspect_snapshots() {
    // The kernel state `inspect` reads back has the shape of the state the
    // plan implies (`verify` compares the two): that of a small example.
    let plan = example("minimal");
    let kernel = inspect::kernel(&plan.name, &testbed::plan::state::desired(&plan));
    insta::assert_snapshot!("inspect-minimal-json", json(&kernel));
    let rules = vec![inspect::InstalledRules {
        node: plan.nodes[0].name.clone(),
        netns: plan.nodes[0].netns.clone(),
        mode: proxy::Mode::Nftables,
        rules: "table ip testbed {\n}\n".into(),
    }];
    insta::assert_snapshot!("inspect-rules-json", json(&rules));
}

/// A real testbed, removed (with its private directory) when dropped.
struct Live {
    name: String,
    dir: tempfile::TempDir,
}

impl Live {
    /// Brings `body` up under a fresh name, from a file in a directory only
    /// root can read.
    fn up(body: &str) -> (Live, String) {
        let name = format!("js{:x}", std::process::id());
        let dir = tempfile::tempdir().expect("a fresh private directory");
        let live = Live { name, dir };
        let file = live.dir.path().join("topology.yaml");
        std::fs::write(&file, format!("name: {}\n{body}", live.name)).expect("topology");
        let (code, out) = stdout_of(&["up", "--json", file.to_str().expect("path")]);
        assert_eq!(code, Some(0), "up failed");
        (live, out)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let (code, _) = stdout_of(&["down", &self.name]);
        if code != Some(0) {
            eprintln!("cleanup of {} failed", self.name);
        }
    }
}

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test needs root, and CI must run it"
        );
        eprintln!("skipped: needs root");
    }
    root
}

#[test]
fn a_running_testbed_prints_the_documented_shapes() {
    if !is_root() {
        return;
    }
    let doc = doc();
    let (tb, up) = Live::up(
        "
nodes: [{name: node1}, {name: node2}]
pods:
  - name: web
    node: node2
    labels: {app: web}
    containers: [{name: main, command: [sleep, infinity]}]
services:
  - name: web
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
",
    );
    assert_shape(&doc, "Summary", &up, "up --json");
    // The overlay daemons write their counters once a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let (code, out) = stdout_of(&["status", &tb.name, "--json"]);
        assert_eq!(code, Some(0), "status");
        let v: Value = serde_json::from_str(&out).expect("status JSON");
        let counted = v[0]["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["overlay"].is_object()));
        if counted || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_shape(&doc, "list of StatusReport", &status, "status --json");
    let v: Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(v[0]["supervisor"]["running"], true, "{status}");
    assert!(v[0]["supervisor"]["pid"].as_u64().is_some(), "{status}");
    assert_eq!(v[0]["pods"][0]["restarts"], 0, "{status}");
    assert_eq!(v[0]["pods"][0]["phase"], "Running", "{status}");
    assert!(
        v[0]["nodes"][1]["overlay"]["tunToUdp"]["packets"].is_u64(),
        "{status}"
    );
    assert_eq!(
        v[0]["services"][0]["ports"][0]["endpoints"][0]["port"], 8080,
        "{status}"
    );
    for (root, args) in [
        ("KernelReport", &["inspect", &tb.name, "--json"][..]),
        (
            "list of InstalledRules",
            &["inspect", &tb.name, "--rules", "--json"],
        ),
        ("list of Listed", &["ls", "--json"]),
    ] {
        let (code, out) = stdout_of(args);
        assert_eq!(code, Some(0), "{args:?}");
        assert_shape(&doc, root, &out, &args.join(" "));
    }
    // What inspect reads back is what the plan implies, in the same shape
    // (the kernel also reports sysctls the plan leaves at their default).
    let (_, have) = stdout_of(&["inspect", &tb.name, "--json"]);
    let have: inspect::KernelReport = serde_json::from_str(&have).expect("parses");
    let plan = testbed::lifecycle::running_plan(
        &testbed::state::TestbedName::new(&tb.name).expect("name"),
    )
    .expect("its plan");
    let want = inspect::kernel(&plan.name, &testbed::plan::state::desired(&plan));
    assert_eq!(have.namespaces.len(), want.namespaces.len());
    for (h, w) in have.namespaces.iter().zip(&want.namespaces) {
        assert_eq!(
            (&h.name, &h.links, &h.routes, &h.neighbours),
            (&w.name, &w.links, &w.routes, &w.neighbours)
        );
        assert!(w.sysctls.iter().all(|(k, v)| h.sysctls.get(k) == Some(v)));
    }
}
