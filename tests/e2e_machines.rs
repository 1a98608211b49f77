//! One topology spread over two emulated machines (`support::machines`:
//! network-and-mount namespaces with their own `/run`, joined by a veth as
//! their physical network), with Debian's etcd running on the first, as
//! `testbed up FILE --machine NAME` builds each share. Pods on the two
//! machines talk over each overlay; a service spreads over the pods of
//! both machines from pods on each; a NodePort answers on nodes of both
//! machines from a host; etcd holds flannel's layout; killing one
//! machine's testbed makes its heartbeat and leases expire and its RC pods
//! come back on the other machine; `up` with etcd away fails at once with
//! nothing made; the test host's root namespace is unchanged.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};
use support::machines::{pair, Machine};
use support::snapshot;

const ETCD: &str = "http://192.0.2.1:2379";

/// Returns from the test without etcd (a failure under CI).
macro_rules! require {
    () => {
        if !etcd_installed() {
            return;
        }
    };
}

fn etcd_installed() -> bool {
    let found = ["etcd", "etcdctl"].iter().all(|b| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(found || !ci, "etcd and etcdctl are needed under CI");
    if !found {
        eprintln!("skipped: etcd (etcd-server, etcd-client) is not installed");
    }
    found
}

/// An etcd server on a machine, killed (by pid) and reaped on drop.
struct EtcdServer(Child);

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd on machine `m` at [`ETCD`], data in `dir` (kept across restarts);
/// waits until it answers.
fn start_etcd(m: &Machine, dir: &Path) -> EtcdServer {
    let data = dir.join("etcd");
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .expect("etcd log");
    let child = m
        .command(
            "etcd",
            &[
                "--name",
                "m",
                "--data-dir",
                data.to_str().expect("path"),
                "--listen-client-urls",
                ETCD,
                "--advertise-client-urls",
                ETCD,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "m=http://127.0.0.1:2380",
            ],
        )
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting etcd");
    let server = EtcdServer(child);
    wait(Duration::from_secs(30), "etcd answers", || {
        etcdctl(m, &["endpoint", "health"]).is_some()
    });
    server
}

/// `etcdctl ARGS` on `m`: its output when it succeeded.
fn etcdctl(m: &Machine, args: &[&str]) -> Option<String> {
    let mut all = vec!["--endpoints", ETCD, "--command-timeout", "2s"];
    all.extend_from_slice(args);
    let out = m
        .command("etcdctl", &all)
        .env("ETCDCTL_API", "3")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait(within: Duration, what: &str, cond: impl FnMut() -> bool) {
    wait_or(within, what, cond, String::new);
}

/// [`wait`], saying what `why` tells when it fails.
fn wait_or(within: Duration, what: &str, mut cond: impl FnMut() -> bool, why: impl Fn() -> String) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < end,
            "{what}: not within {within:?}\n{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The topology: n1, n2 on alpha, n3, n4 and host `client` on beta, an RC
/// of four web pods (one per node), a ClusterIP and a NodePort service.
fn topology(name: &str, overlay: &str) -> String {
    format!(
        r#"name: {name}
machines:
  - {{name: alpha, address: 192.0.2.1}}
  - {{name: beta, address: 192.0.2.2}}
cluster:
  overlay: {overlay}
  registry: etcd
  etcd: {{endpoints: ["{ETCD}"]}}
  podEvictionTimeout: 1s
nodes:
  - {{name: n1, machine: alpha}}
  - {{name: n2, machine: alpha}}
  - {{name: n3, machine: beta}}
  - {{name: n4, machine: beta}}
hosts:
  - name: client
    machine: beta
    containers: [{{name: main, command: [sleep, infinity]}}]
replicationControllers:
  - name: web
    replicas: 4
    selector: {{app: web}}
    template:
      labels: {{app: web}}
      volumes: [{{name: www}}]
      containers:
        - {{name: http, command: [sh, -c, 'hostname > index.html && exec python3 -m http.server 8080'], workingDir: /srv, volumeMounts: [{{name: www, mountPath: /srv}}], ready: {{tcp: 8080}}}}
services:
  - name: web
    selector: {{app: web}}
    ports: [{{port: 80, targetPort: 8080}}]
  - name: web-np
    type: NodePort
    selector: {{app: web}}
    ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]
"#
    )
}

/// Both shares of one testbed, taken down on drop (the machines' own drop
/// is the safety net).
struct Spread<'a> {
    name: String,
    file: String,
    plan: serde_json::Value,
    machines: [&'a Machine; 2],
}

impl<'a> Spread<'a> {
    fn up(a: &'a Machine, b: &'a Machine, dir: &Path, tag: &str, overlay: &str) -> Spread<'a> {
        let name = support::unique(tag);
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, topology(&name, overlay)).expect("topology");
        let file = file.display().to_string();
        let plan: serde_json::Value =
            serde_json::from_str(&support::ok(&["plan", &file, "--format", "json"]))
                .expect("plan json");
        let s = Spread {
            name,
            file,
            plan,
            machines: [a, b],
        };
        // Both at once, as on two real machines.
        std::thread::scope(|sc| {
            for (m, machine) in [(a, "alpha"), (b, "beta")] {
                let file = &s.file;
                sc.spawn(move || {
                    tb(m, &["up", file, "--machine", machine, "--timeout", "90s"]);
                });
            }
        });
        s
    }

    fn ip(&self, list: &str, name: &str) -> String {
        self.plan[list]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["name"] == name))
            .and_then(|x| x["ip"].as_str())
            .unwrap_or_else(|| panic!("{list} {name} has no ip"))
            .to_string()
    }

    fn cluster_ip(&self, service: &str) -> String {
        self.plan["services"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["name"] == service))
            .and_then(|x| x["clusterIP"].as_str())
            .expect("clusterIP")
            .to_string()
    }

    /// `testbed exec NAME TARGET -- CMD` on `m`: exit code and stdout.
    fn exec(&self, m: &Machine, target: &str, cmd: &[&str]) -> (i32, String) {
        let mut args = vec!["exec", "-t", &self.name, target, "--"];
        args.extend_from_slice(cmd);
        let out = m.run(support::bin().to_str().expect("path"), &args);
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            eprintln!(
                "exec {target} {cmd:?} on machine {}: {code}: {}",
                m.pid(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (
            code,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }

    /// The backends answering `n` requests to `url` from `target` on `m`.
    fn spread(&self, m: &Machine, target: &str, url: &str, n: usize) -> BTreeMap<String, usize> {
        let script =
            format!("for i in $(seq {n}); do curl -s -m 3 {url} || echo failed-$?; echo; done");
        let (_, out) = self.exec(m, target, &["sh", "-c", &script]);
        let mut seen = BTreeMap::new();
        for l in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
            *seen.entry(l.to_string()).or_insert(0) += 1;
        }
        seen
    }
}

impl Drop for Spread<'_> {
    fn drop(&mut self) {
        for m in self.machines {
            let _ = m.run(
                support::bin().to_str().unwrap_or("testbed"),
                &["down", &self.name],
            );
        }
    }
}

/// `testbed ARGS` on `m`, failing the test if it fails; its stdout.
fn tb(m: &Machine, args: &[&str]) -> String {
    m.ok(support::bin().to_str().expect("path"), args)
}

/// What pod `to` (at `to_ip`) answers over HTTP from pod `from` on `m`.
fn fetch(s: &Spread, m: &Machine, from: &str, to_ip: &str) -> String {
    let url = format!("http://{to_ip}:8080/");
    s.exec(m, from, &["curl", "-s", "-m", "3", &url]).1
}

/// Pods on nodes of different machines reach each other, both ways; the
/// ClusterIP spreads over all four pods from a pod on each machine; the
/// NodePort answers on a node of each machine from the host.
fn crosses_machines(s: &Spread, a: &Machine, b: &Machine) {
    for (m, from, to) in [
        (a, "web-0", "web-2"),
        (b, "web-3", "web-1"),
        (a, "web-1", "web-3"),
    ] {
        let ip = s.ip("pods", to);
        assert_eq!(
            fetch(s, m, from, &ip),
            to,
            "{from} cannot reach {to} ({ip})"
        );
    }
    let all: BTreeSet<String> = ["web-0", "web-1", "web-2", "web-3"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    let url = format!("http://{}/", s.cluster_ip("web"));
    // Each machine learns the other's ready pods through etcd within a
    // moment of both `up`s returning.
    for (m, from) in [(a, "web-0"), (b, "web-2")] {
        let seen = std::cell::RefCell::new(BTreeMap::new());
        wait_or(
            Duration::from_secs(10),
            &format!("the service spreads over all four pods from {from}"),
            || {
                *seen.borrow_mut() = s.spread(m, from, &url, 40);
                seen.borrow().keys().cloned().collect::<BTreeSet<String>>() == all
            },
            || format!("{:?}", seen.borrow()),
        );
    }
    for node in ["n1", "n3"] {
        let url = format!("http://{}:30080/", s.ip("nodes", node));
        let seen = s.spread(b, "client", &url, 12);
        assert!(
            seen.keys().all(|k| all.contains(k)),
            "NodePort on {node}: {seen:?}"
        );
    }
}

/// `testbed status NAME --json` on `m`: its one report.
fn status(s: &Spread, m: &Machine) -> serde_json::Value {
    let st = tb(m, &["status", &s.name, "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st).expect("status JSON");
    st[0].clone()
}

/// What alpha's testbed says, for a failure message.
fn alpha_says(s: &Spread, m: &Machine) -> String {
    let bin = support::bin();
    let run = |args: &[&str]| {
        String::from_utf8_lossy(&m.run(bin.to_str().unwrap_or(""), args).stdout).into_owned()
    };
    let view = std::fs::read_to_string(m.path(&format!("/run/testbed/{}/cluster.json", s.name)))
        .unwrap_or_default();
    format!(
        "events:\n{}\nstatus:\n{}\nview:\n{view}",
        run(&["events", &s.name]),
        run(&["status", &s.name])
    )
}

/// flannel's layout in etcd: the config and one lease per node, each with
/// its node's address and the backend.
fn flannel_layout(s: &Spread, a: &Machine, backend: &str) {
    let keys = etcdctl(
        a,
        &["get", "--prefix", "--keys-only", "/coreos.com/network/"],
    )
    .expect("etcdctl get");
    let keys: BTreeSet<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    let mut want: BTreeSet<String> = (1..=4)
        .map(|i| format!("/coreos.com/network/subnets/10.244.{i}.0-24"))
        .collect();
    want.insert("/coreos.com/network/config".into());
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(keys, want);
    let lease = etcdctl(
        a,
        &[
            "get",
            "--print-value-only",
            "/coreos.com/network/subnets/10.244.3.0-24",
        ],
    )
    .expect("lease");
    let lease: serde_json::Value = serde_json::from_str(lease.trim()).expect("lease json");
    assert_eq!(lease["PublicIP"], s.ip("nodes", "n3"));
    assert_eq!(lease["BackendType"], backend);
    let both: Vec<bool> = status(s, a)["cluster"]["machines"]
        .as_array()
        .map(|m| m.iter().map(|x| x["heartbeat"] == true).collect())
        .unwrap_or_default();
    assert_eq!(both, [true, true], "both heartbeats in alpha's status");
}

/// `check` on either machine is about the whole testbed: probes from the
/// other machine's namespaces are sent there through etcd. Every pod to
/// every pod across the machines, the service from pods of both, the host
/// on beta to the nodes of both; and a check that must fail does (exit 1).
fn checks_from_either_machine(s: &Spread, a: &Machine, b: &Machine, dir: &Path) {
    let file = dir.join(format!("{}-checks.yaml", s.name));
    std::fs::write(
        &file,
        "checks:
  - name: pods-to-pods
    matrix: {from: {rc: web}, to: {rc: web}, port: tcp/8080}
    expectTable: |
      ....
      ....
      ....
      ....
  - name: service-from-both
    from: {pods: {app: web}}
    to: service web
    port: http/80
    body: web-
  - name: host-to-nodes
    from: host client
    to: {allNodes: true}
    port: icmp
",
    )
    .expect("checks");
    let file = file.to_str().expect("path");
    for m in [a, b] {
        let out = m.run(
            support::bin().to_str().expect("path"),
            &["check", &s.name, "--checks", file, "--json"],
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{report:#}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            report["checks"].as_array().map(Vec::len),
            Some(3),
            "{report:#}"
        );
    }
    let deny = dir.join(format!("{}-deny.yaml", s.name));
    std::fs::write(
        &deny,
        "checks:
  - {name: must-fail, from: pod web-2, to: pod web-0, port: tcp/8080, expect: deny, for: 1s}
",
    )
    .expect("checks");
    let out = a.run(
        support::bin().to_str().expect("path"),
        &["check", &s.name, "--checks", deny.to_str().expect("path")],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The machine's namespace reaches the testbed's daemons (the controller
/// holds a descriptor of it, to talk to etcd) and never its containers:
/// no such descriptor, no variable naming one.
fn containers_never_get_the_machines_namespace(s: &Spread, a: &Machine) {
    let net_fds = |pid: i64| -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter(|l| l.to_string_lossy().starts_with("net:["))
                    .count()
            })
            .unwrap_or(0)
    };
    let st = status(s, a);
    let sup = st["supervisor"]["pid"].as_i64().expect("supervisor pid");
    assert!(
        net_fds(sup) >= 1,
        "the controller holds the machine's namespace"
    );
    for pod in st["pods"].as_array().expect("pods") {
        let pid = pod["containers"][0]["pid"].as_i64().expect("container pid");
        assert_eq!(
            net_fds(pid),
            0,
            "{} holds a namespace descriptor",
            pod["name"]
        );
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&env).contains("TESTBED_MACHINE_NETNS_FD"),
            "{} was told of one",
            pod["name"]
        );
    }
}

/// Both shares match their plans (`verify`, the span device included);
/// alpha's span device deleted behind the testbed's back is made again by
/// its controller (from alpha's own namespace), and pods talk across the
/// machines again.
fn repairs_the_span(s: &Spread, a: &Machine, b: &Machine) {
    for m in [a, b] {
        tb(m, &["verify", &s.name]);
    }
    let fabric = format!("tb-{}.fabric", s.name);
    a.ok("ip", &["-n", &fabric, "link", "del", "span0"]);
    wait_or(
        Duration::from_secs(10),
        "span0 made again on alpha",
        || {
            a.run("ip", &["-n", &fabric, "link", "show", "span0"])
                .status
                .success()
        },
        || alpha_says(s, a),
    );
    let ip = s.ip("pods", "web-2");
    wait_or(
        Duration::from_secs(10),
        "web-0 reaches web-2 across the machines again",
        || fetch(s, a, "web-0", &ip) == "web-2",
        || alpha_says(s, a),
    );
    assert!(alpha_says(s, a).contains("made span0 again"));
    tb(a, &["verify", &s.name]);
}

/// Operations made on beta act on alpha's share through etcd: a container
/// of a pod that runs on alpha killed (restarted there), a node of alpha
/// down and up again, and `scale` on every machine (the new pods placed
/// once, each built by the machine of its node, and served).
fn operates_from_the_other_machine(s: &Spread, a: &Machine, b: &Machine) {
    let bin = support::bin();
    let bin = bin.to_str().expect("path");
    let restarts = |pod: &str| {
        status(s, a)["pods"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["name"] == pod).cloned())
            .map_or(0, |p| p["restarts"].as_u64().unwrap_or(0))
    };
    tb(b, &["fault", "-t", &s.name, "kill", "web-0"]);
    wait_or(
        Duration::from_secs(20),
        "web-0 (on alpha) restarted after a kill from beta",
        || restarts("web-0") >= 1,
        || alpha_says(s, a),
    );
    let out = b.run(
        bin,
        &["fault", "-t", &s.name, "node-down", "n2", "--for", "3s"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        alpha_says(s, a).contains("faultInjected"),
        "{}",
        alpha_says(s, a)
    );
    // Beta's status shows the fault in force on alpha.
    wait(
        Duration::from_secs(2),
        "alpha's fault in beta's status",
        || status(s, b)["cluster"]["machines"][0]["faults"] == serde_json::json!(["node-down n2"]),
    );
    // `events` on beta shows alpha's too, each with its machine.
    wait(
        Duration::from_secs(5),
        "alpha's fault among beta's events",
        || {
            let ev: serde_json::Value =
                serde_json::from_str(&tb(b, &["events", &s.name, "--json"])).unwrap_or_default();
            let list = ev["events"].as_array().cloned().unwrap_or_default();
            list.iter()
                .any(|e| e["kind"] == "faultInjected" && e["machine"] == "alpha")
                && list.iter().any(|e| e["machine"] == "beta")
                && list.iter().all(|e| e["machine"].is_string())
        },
    );
    tb(b, &["scale", "-t", &s.name, "web", "6"]);
    let url = format!("http://{}/", s.cluster_ip("web"));
    wait_or(
        Duration::from_secs(30),
        "six pods serve from both machines",
        || s.spread(b, "web-2", &url, 60).len() == 6,
        || alpha_says(s, a),
    );
    let count = |m: &Machine| status(s, m)["pods"].as_array().map_or(0, Vec::len);
    assert_eq!(count(a) + count(b), 6, "each new pod built once");
    tb(a, &["scale", "-t", &s.name, "web", "4"]);
    let pods = |m: &Machine| -> Vec<String> {
        status(s, m)["pods"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|p| {
                        format!(
                            "{}@{}",
                            p["name"].as_str().unwrap_or(""),
                            p["node"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_or(
        Duration::from_secs(30),
        "back to four pods",
        || count(a) + count(b) == 4,
        || {
            format!(
                "alpha {:?} beta {:?}\n{}",
                pods(a),
                pods(b),
                alpha_says(s, a)
            )
        },
    );
}

/// etcd goes away for a while: traffic across the machines goes on, and
/// status says so; etcd back, status says that too.
fn survives_an_etcd_outage(s: &Spread, a: &Machine, etcd: EtcdServer, dir: &Path) -> EtcdServer {
    drop(etcd);
    wait_or(
        Duration::from_secs(20),
        "alpha's status reports etcd unreachable",
        || status(s, a)["cluster"]["etcd"]["reachable"] == false,
        || alpha_says(s, a),
    );
    assert_eq!(fetch(s, a, "web-0", &s.ip("pods", "web-2")), "web-2");
    let url = format!("http://{}/", s.cluster_ip("web"));
    assert_eq!(
        s.spread(a, "web-0", &url, 40).len(),
        4,
        "the service still spreads over all four"
    );
    assert!(alpha_says(s, a).contains("etcd unreachable"));
    let etcd = start_etcd(a, dir);
    wait_or(
        Duration::from_secs(20),
        "alpha's status reports etcd back",
        || status(s, a)["cluster"]["etcd"]["reachable"] == true,
        || alpha_says(s, a),
    );
    etcd
}

/// Beta is cut off from etcd (its packets to etcd rejected) but keeps
/// running: alpha, seeing no heartbeat, moves web-2 and web-3 to its own
/// nodes while beta still runs its copies, and removes the bare pod `solo`
/// (applied on n3 first) for good. Back in touch, beta finds web-2 and
/// web-3 running on alpha from a newer placement and `solo` removed, and
/// stops its copies: every pod runs once, and the service answers from all
/// four.
fn a_machine_cut_off_gives_up_its_moved_pods(
    s: &Spread,
    a: &Machine,
    b: &Machine,
    dir: &Path,
    overlay: &str,
) {
    let file = dir.join(format!("{}-solo.yaml", s.name));
    let solo =
        "pods:\n  - {name: solo, node: n3, containers: [{name: c, command: [sleep, infinity]}]}\n";
    std::fs::write(&file, topology(&s.name, overlay) + solo).expect("topology");
    tb(a, &["apply", file.to_str().expect("path")]);
    let rule = [
        "-p",
        "tcp",
        "-d",
        "192.0.2.1",
        "--dport",
        "2379",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ];
    let iptables = |op: &str| {
        let mut args = vec!["-w", op, "OUTPUT"];
        args.extend_from_slice(&rule);
        b.ok("iptables", &args);
    };
    let names = |m: &Machine| -> Vec<String> {
        status(s, m)["pods"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|p| {
                        Some(format!("{}@{}", p["name"].as_str()?, p["node"].as_str()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_or(
        Duration::from_secs(30),
        "solo runs on beta",
        || names(b).iter().any(|p| p == "solo@n3"),
        || {
            format!(
                "alpha {:?} beta {:?}\n{}",
                names(a),
                names(b),
                tb(b, &["events", &s.name])
            )
        },
    );
    iptables("-I");
    let on_alpha = |want: &[&str]| {
        let pods = status(s, a)["pods"].as_array().cloned().unwrap_or_default();
        want.iter().all(|p| {
            pods.iter().any(|x| {
                x["name"] == *p && x["ready"] == true && (x["node"] == "n1" || x["node"] == "n2")
            })
        })
    };
    wait_or(
        Duration::from_secs(60),
        "alpha runs web-2 and web-3 while beta is cut off",
        || on_alpha(&["web-2", "web-3"]),
        || alpha_says(s, a),
    );
    let beta_had = names(b);
    assert!(
        beta_had.iter().any(|p| p.starts_with("web-2@"))
            && beta_had.contains(&"solo@n3".to_string()),
        "beta, cut off, still runs its copies and solo: {beta_had:?}"
    );
    iptables("-D");
    wait_or(
        Duration::from_secs(60),
        "each pod runs once",
        || {
            let mut all = names(a);
            all.extend(names(b));
            let mut pods: Vec<&str> = all.iter().filter_map(|p| p.split('@').next()).collect();
            pods.sort();
            pods == ["web-0", "web-1", "web-2", "web-3"]
        },
        || {
            format!(
                "alpha {:?} beta {:?}\n{}",
                names(a),
                names(b),
                alpha_says(s, a)
            )
        },
    );
    assert!(on_alpha(&["web-2", "web-3"]), "the newer copies stay");
    let url = format!("http://{}/", s.cluster_ip("web"));
    wait(Duration::from_secs(20), "all four serve", || {
        s.spread(a, "web-0", &url, 24).len() == 4
    });
    let events = tb(b, &["events", &s.name, "--json"]);
    assert!(
        events.contains("placed there while this one was cut off"),
        "{events}"
    );
}

/// Beta dies (every process of its testbed killed at once): its leases
/// expire, its nodes go NotReady, their RC pods come back on alpha and the
/// service serves from them; alpha's nodes lose the routes to beta's
/// subnets.
fn survives_losing_beta(s: &Spread, a: &Machine, b: &Machine) {
    let killed = kill_testbed(b, &s.name);
    assert!(killed > 0, "nothing of the testbed ran on beta");
    wait(Duration::from_secs(30), "beta's leases expire", || {
        etcdctl(
            a,
            &[
                "get",
                "--prefix",
                "--keys-only",
                "/coreos.com/network/subnets/",
            ],
        )
        .is_some_and(|k| !k.contains("10.244.3.0-24") && !k.contains("10.244.4.0-24"))
    });
    let moved = || {
        let pods = status(s, a)["pods"].as_array().cloned().unwrap_or_default();
        ["web-2", "web-3"].iter().all(|p| {
            pods.iter().any(|x| {
                x["name"] == *p && x["ready"] == true && (x["node"] == "n1" || x["node"] == "n2")
            })
        })
    };
    wait_or(
        Duration::from_secs(60),
        "web-2 and web-3 run on alpha",
        moved,
        || alpha_says(s, a),
    );
    let url = format!("http://{}/", s.cluster_ip("web"));
    let seen = std::cell::RefCell::new(Vec::new());
    wait_or(
        Duration::from_secs(20),
        "all four pods serve from alpha",
        || {
            let got = s.spread(a, "web-0", &url, 24);
            let ok = got.len() == 4;
            seen.borrow_mut().push(got);
            ok
        },
        || {
            let ips: Vec<String> = status(s, a)["pods"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|p| {
                            Some(format!(
                                "{}={}",
                                p["name"].as_str()?,
                                p["address"].as_str()?
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let direct: Vec<String> = ips
                .iter()
                .filter_map(|x| x.split_once('='))
                .map(|(n, ip)| format!("{n}: {}", fetch(s, a, "web-0", ip)))
                .collect();
            let ns = format!("tb-{}.node.n1", s.name);
            let rules = a.ok(
                "sh",
                &[
                    "-c",
                    &format!("ip netns exec {ns} iptables-save -t nat | grep -i dnat"),
                ],
            );
            let routes = a.ok("ip", &["-n", &ns, "route"]);
            format!(
                "{:?}\ndirect: {direct:?}\nrules:\n{rules}\nroutes:\n{routes}\n{}",
                seen.borrow(),
                alpha_says(s, a)
            )
        },
    );
    let node_ns = format!("tb-{}.node.n1", s.name);
    wait_or(
        Duration::from_secs(10),
        "n1 forgets the routes to beta's subnets",
        || {
            let routes = a.ok("ip", &["-n", &node_ns, "route"]);
            !routes.contains("10.244.3.0/24") && !routes.contains("10.244.4.0/24")
        },
        || a.ok("ip", &["-n", &node_ns, "route"]),
    );
    let lost = &status(s, a)["cluster"]["machines"][1];
    assert_eq!(lost["heartbeat"], false, "{lost}");
    assert_eq!(lost["notReady"], serde_json::json!(["n3", "n4"]), "{lost}");
}

/// Both shares go down, beta's first: then alpha's is the last, and the
/// testbed's keys leave etcd.
fn last_share_cleans_etcd(s: Spread, a: &Machine, b: &Machine) {
    let name = s.name.clone();
    tb(b, &["down", &name, "--machine", "beta"]);
    let out = a.run(
        support::bin().to_str().expect("path"),
        &["down", &name, "--machine", "alpha", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("down JSON");
    assert_eq!(report["removed"][0]["machine"], "alpha");
    assert_eq!(
        report["removed"][0]["etcd"]["outcome"], "removed",
        "{report}"
    );
    for prefix in [
        format!("/testbed/{name}/"),
        "/coreos.com/network/".to_string(),
    ] {
        let left = etcdctl(a, &["get", "--prefix", "--keys-only", &prefix]).expect("etcdctl");
        assert!(left.trim().is_empty(), "left under {prefix}: {left}");
    }
    std::mem::forget(s);
}

#[test]
fn a_topology_spans_two_machines_over_each_overlay_and_survives_losing_one() {
    require!();
    let host_before = snapshot::root_snapshot();
    let dir = support::private_dir();
    let (a, b) = pair();
    let mut etcd = start_etcd(&a, dir.path());
    let (a_before, b_before) = (a.network_state(), b.network_state());
    for overlay in ["host-gw", "vxlan", "udp"] {
        let s = Spread::up(&a, &b, dir.path(), "mach", overlay);
        crosses_machines(&s, &a, &b);
        flannel_layout(&s, &a, overlay);
        if overlay == "host-gw" {
            checks_from_either_machine(&s, &a, &b, dir.path());
        }
        if overlay == "vxlan" {
            // (Losing beta afterwards then finds no RC pod of it to move:
            // host-gw and udp test that.)
            a_machine_cut_off_gives_up_its_moved_pods(&s, &a, &b, dir.path(), overlay);
        }
        if overlay == "udp" {
            containers_never_get_the_machines_namespace(&s, &a);
            repairs_the_span(&s, &a, &b);
            operates_from_the_other_machine(&s, &a, &b);
            etcd = survives_an_etcd_outage(&s, &a, etcd, dir.path());
        }
        survives_losing_beta(&s, &a, &b);
        last_share_cleans_etcd(s, &a, &b);
    }
    drop(etcd);
    assert_eq!(a.network_state(), a_before, "alpha's own namespace changed");
    assert_eq!(b.network_state(), b_before, "beta's own namespace changed");
    snapshot::assert_same_state(&host_before, &snapshot::root_snapshot(), "the test host");
}

/// Kills by pid every process of testbed `name` on `m` (in one of its
/// namespaces), as a machine that dies; how many.
fn kill_testbed(m: &Machine, name: &str) -> usize {
    let out = m.ok("sh", &["-c", &format!("ip netns pids tb-{name}.fabric; for n in $(ip netns list | awk '{{print $1}}' | grep '^tb-{name}\\.'); do ip netns pids $n; done")]);
    let pids: BTreeSet<i32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    for &p in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    pids.len()
}

#[test]
fn up_fails_at_once_when_etcd_is_away_and_makes_nothing() {
    require!();
    let dir = support::private_dir();
    let (a, _b) = pair();
    let name = support::unique("noetcd");
    let file = dir.path().join("t.yaml");
    std::fs::write(&file, topology(&name, "udp")).expect("topology");
    let started = Instant::now();
    let out = a.run(
        support::bin().to_str().expect("path"),
        &["up", file.to_str().expect("path"), "--machine", "alpha"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(ETCD) && err.contains("nothing was made"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(a.ok("ip", &["netns", "list"]).trim().is_empty());
    assert!(!a.path(&format!("/run/testbed/{name}")).exists());
}

/// One machine with `registry: etcd` (to study flannel's behaviour): no
/// `machines:`, no `--machine`; the leases live in etcd in flannel's
/// layout, held by the udp daemons or, for the kernel overlays, by the
/// controller's agent; `down` removes them.
#[test]
fn one_machine_keeps_its_leases_in_etcd() {
    require!();
    let dir = support::private_dir();
    let (a, _b) = pair();
    let _etcd = start_etcd(&a, dir.path());
    let bin = support::bin();
    let bin = bin.to_str().expect("path");
    for overlay in ["udp", "vxlan"] {
        let name = support::unique("solo");
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "name: {name}\ncluster:\n  overlay: {overlay}\n  registry: etcd\n  etcd: {{endpoints: [\"{ETCD}\"]}}\nnodes: [{{name: n1}}, {{name: n2}}]\npods:\n  - {{name: p, node: n2, containers: [{{name: c, command: [sleep, infinity]}}]}}\n"
            ),
        )
        .expect("topology");
        a.ok(bin, &["up", file.to_str().expect("path")]);
        let subnets = || {
            etcdctl(
                &a,
                &[
                    "get",
                    "--prefix",
                    "--keys-only",
                    "/coreos.com/network/subnets/",
                ],
            )
            .unwrap_or_default()
        };
        wait_or(
            Duration::from_secs(10),
            "both nodes' leases in etcd",
            || subnets().contains("10.244.1.0-24") && subnets().contains("10.244.2.0-24"),
            subnets,
        );
        let config = etcdctl(
            &a,
            &["get", "--print-value-only", "/coreos.com/network/config"],
        )
        .expect("config");
        let config: serde_json::Value = serde_json::from_str(config.trim()).expect("config JSON");
        assert_eq!(config["Network"], "10.244.0.0/16");
        assert_eq!(config["Backend"]["Type"], overlay);
        let out = a.run(bin, &["down", &name, "--json"]);
        assert!(out.status.success());
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(
            report["removed"][0]["etcd"]["outcome"], "removed",
            "{report}"
        );
        let left = etcdctl(&a, &["get", "--prefix", "--keys-only", "/"]).expect("etcdctl");
        assert!(left.trim().is_empty(), "left in etcd: {left}");
    }
}
