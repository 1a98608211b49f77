//! `testbed run` on real testbeds: a short experiment (two combinations,
//! two repetitions, a fault, a check and an exec step) writes the whole
//! result layout; `results diff` finds no difference in what the seed
//! determines between two runs of the same file, and finds one when the
//! seed differs; SIGINT ends an experiment with its testbed removed and a
//! readable partial result.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{testbed, Testbed};

const TOPOLOGY: &str = "
nodes: [{name: n1}, {name: n2}]
pods:
  - {name: client, node: n1, containers: [{name: c, command: [sleep, infinity]}]}
replicationControllers:
  - name: web
    replicas: 2
    selector: {app: web}
    template:
      labels: {app: web}
      containers: [{name: serve, command: [testbed, serve, --http, '8080', --udp, '9000'], ready: {tcp: 8080}}]
services:
  - {name: web, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
  - {name: echo, selector: {app: web}, ports: [{port: 9000, targetPort: 9000, protocol: UDP}]}
checks:
  - {name: web-from-client, from: pod client, to: service web, port: http/80}
";

/// An experiment on `tb`'s topology, written beside it.
fn experiment(tb: &Testbed, name: &str, body: &str) -> PathBuf {
    let topo = tb.file.file_name().and_then(|f| f.to_str()).expect("name");
    let file = tb.dir.path().join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!("experiment: {name}\ntopology: {topo}\n{body}"),
    )
    .expect("write experiment");
    file
}

const SHORT: &str = "
workloads:
  - {name: http, kind: http, from: pod client, to: service web, rate: 50/s, duration: 3s, timeout: 500ms}
  - {name: ping, kind: ping, from: pod client, to: {rc: web}, rate: 10/s, duration: 3s, timeout: 500ms}
timeline:
  - {at: 1s, fault: {kill: {pick: {rc: web}}}}
  - {at: 2s, check: web-from-client}
  - {at: 2500ms, exec: {pod: client, command: [ip, route]}}
";

/// Runs `testbed run FILE ARGS... --results DIR` and returns the
/// experiment's run directory.
fn run(file: &Path, results: &Path, args: &[&str]) -> PathBuf {
    let mut all = vec![
        "run",
        file.to_str().expect("utf-8"),
        "--results",
        results.to_str().expect("utf-8"),
    ];
    all.extend(args);
    let out = testbed(&all);
    assert!(
        out.status.success(),
        "testbed {all:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    only_dir(&results.join(file.file_stem().expect("stem")))
}

/// The one directory in `dir`.
fn only_dir(dir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn svgs(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("entry").path();
        let text = std::fs::read_to_string(&p).expect("svg");
        assert!(
            text.trim_start().starts_with("<svg") || text.trim_start().starts_with("<?xml"),
            "{}",
            p.display()
        );
        assert!(text.trim_end().ends_with("</svg>"), "{}", p.display());
        n += 1;
    }
    n
}

fn no_namespaces_of(name: &str) {
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("tb-{name}.")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_short_experiment_writes_the_whole_layout() {
    let tb = Testbed::new("exl", TOPOLOGY);
    let file = experiment(
        &tb,
        "layout",
        &format!("seed: 3\nrepeat: 2\nparams:\n  cluster.proxy: [iptables, nftables]\n{SHORT}"),
    );
    let results = tb.dir.path().join("results");
    let dir = run(&file, &results, &[]);
    no_namespaces_of(&tb.name);
    let summary = json(&dir.join("summary.json"));
    assert_eq!(summary["interrupted"], false, "{summary:#}");
    // Readable by the user who ran it with sudo, and by CI steps.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&results), 0o755);
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(&dir.join("summary.md")), 0o644);
    assert_eq!(mode(&dir.join("proxy=nftables/rep-1/samples.csv")), 0o644);
    let md = std::fs::read_to_string(dir.join("summary.md")).expect("summary.md");
    assert!(
        md.contains("proxy=iptables") && md.contains("proxy=nftables"),
        "{md}"
    );
    assert!(svgs(&dir.join("plots")) >= 2);
    for combo in ["proxy=iptables", "proxy=nftables"] {
        for rep in 0..2 {
            let r = dir.join(combo).join(format!("rep-{rep}"));
            let v = json(&r.join("run.json"));
            assert_eq!(v["schema"], "testbed.run/1");
            assert_eq!(v["seed"], 3 + rep);
            assert_eq!(v["rep"], rep);
            assert_eq!(
                v["params"]["cluster.proxy"],
                combo.trim_start_matches("proxy=")
            );
            assert_eq!(v["meta"]["topologySha256"].as_str().map(str::len), Some(64));
            let http = &v["workloads"][0];
            assert_eq!(http["sent"], 150, "{v:#}");
            assert!(http["ok"].as_u64().expect("ok") >= 100, "{v:#}");
            let backends = http["backends"].as_object().expect("backends");
            assert_eq!(backends.len(), 2, "both web pods answered: {v:#}");
            assert!(v["faults"][0]["spec"]
                .as_str()
                .expect("spec")
                .starts_with("kill pod default/web-"));
            assert_eq!(v["checks"][0]["status"], "pass", "{v:#}");
            assert_eq!(v["verified"]["ok"], true, "{v:#}");
            let csv = std::fs::read_to_string(r.join("samples.csv")).expect("samples.csv");
            // http: 150 sends; ping: 30 to each of the two web pods.
            assert_eq!(csv.lines().count(), 1 + 150 + 60, "{}", &csv[..200]);
            let events = std::fs::read_to_string(r.join("events.jsonl")).expect("events");
            assert!(events.contains("\"faultInjected\""));
            assert_eq!(json(&r.join("checks.json"))["schema"], "testbed.check/1");
            let junit = std::fs::read_to_string(r.join("junit.xml")).expect("junit");
            assert!(junit.contains("<testsuite") && junit.contains("web-from-client"));
            let exec = std::fs::read_dir(r.join("exec")).expect("exec/").count();
            assert_eq!(exec, 1);
            assert!(svgs(&r.join("plots")) >= 2);
        }
    }
    let out = testbed(&["results", dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("proxy=nftables"));
}

#[test]
fn results_diff_separates_what_the_seed_determines() {
    // node2's link impaired (in the udp overlay's own engine): its fates are
    // seeded too.
    let topology = TOPOLOGY.replace("{name: n2}", "{name: n2, link: {delay: 1ms, loss: 0.1%}}");
    let tb = Testbed::new("exd", &topology);
    let body = |seed: u32| format!("seed: {seed}\nparams:\n  cluster.proxy: [userspace]\n{SHORT}");
    let a = experiment(&tb, "diffa", &body(5));
    let b = experiment(&tb, "diffb", &body(5));
    let c = experiment(&tb, "diffc", &body(6));
    let results = tb.dir.path().join("results");
    let (ra, rb, rc) = (
        run(&a, &results, &[]),
        run(&b, &results, &[]),
        run(&c, &results, &[]),
    );
    let diff = |x: &Path, y: &Path| {
        let out = testbed(&[
            "results",
            "diff",
            x.to_str().expect("utf-8"),
            y.to_str().expect("utf-8"),
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = diff(&ra, &rb);
    assert_eq!(code, Some(0), "the same seed: {out}");
    let seeded = json(&ra.join("proxy=userspace/rep-0/run.json"))["seeded"].clone();
    assert!(
        !seeded["balancerOrder"]
            .as_object()
            .expect("order")
            .is_empty()
            && !seeded["impairmentFates"]
                .as_object()
                .expect("fates")
                .is_empty(),
        "{seeded:#}"
    );
    let (code, out) = diff(&ra, &rc);
    assert_eq!(code, Some(1), "another seed: {out}");
    for field in ["seed", "balancerOrder", "impairmentFates", "schedule"] {
        assert!(out.contains(field), "no {field} in: {out}");
    }
    no_namespaces_of(&tb.name);
}

#[test]
fn sigint_ends_an_experiment_with_nothing_left_behind() {
    let tb = Testbed::new("exi", TOPOLOGY);
    let file = experiment(
        &tb,
        "stopped",
        "repeat: 3\nworkloads:\n  - {name: http, kind: http, from: pod client, to: service web, rate: 20/s, duration: 60s}\n",
    );
    let results = tb.dir.path().join("results");
    let mut child = std::process::Command::new(support::bin())
        .args(["run", file.to_str().expect("utf-8"), "--results"])
        .arg(&results)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("testbed run");
    let client = format!("/run/netns/tb-{}.pod.default.client", tb.name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(&client).exists() {
        assert!(Instant::now() < deadline, "the testbed never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("testbed run did not end within 60 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    no_namespaces_of(&tb.name);
    let dir = only_dir(&results.join("stopped"));
    let summary = json(&dir.join("summary.json"));
    assert_eq!(summary["interrupted"], true, "{summary:#}");
    let r = json(&dir.join("default").join("rep-0").join("run.json"));
    assert_eq!(r["interrupted"], true);
    let sent = r["workloads"][0]["sent"].as_u64().expect("sent");
    assert!(sent > 0 && sent < 1200, "sent {sent}");
    assert!(!dir.join("default").join("rep-1").exists());
}

#[test]
fn the_proxy_modes_example_runs_as_the_ci_smoke_test() {
    // The example and its topology, copied under a unique testbed name.
    let dir = support::repo().join("topologies/experiments");
    let topo = std::fs::read_to_string(dir.join("proxy-modes.topology.yaml")).expect("topology");
    let body: String = topo
        .lines()
        .filter(|l| !l.starts_with("name:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let tb = Testbed::new("exp", &body);
    let exp = std::fs::read_to_string(dir.join("proxy-modes.yaml"))
        .expect("experiment")
        .replace(
            "topology: proxy-modes.topology.yaml",
            &format!(
                "topology: {}",
                tb.file.file_name().and_then(|f| f.to_str()).expect("name")
            ),
        );
    let file = tb.dir.path().join("proxy-modes.yaml");
    std::fs::write(&file, exp).expect("write");
    let results = tb.dir.path().join("results");
    let dir = run(
        &file,
        &results,
        &["--only", "proxy=iptables", "--repeat", "1"],
    );
    let r = json(&dir.join("proxy=iptables").join("rep-0").join("run.json"));
    let http = &r["workloads"][0];
    assert_eq!(http["sent"], 750, "{r:#}");
    assert!(http["ok"].as_u64().expect("ok") > 600, "{r:#}");
    assert_eq!(r["checks"][0]["status"], "pass", "{r:#}");
    assert_eq!(r["verified"]["ok"], true, "{r:#}");
    no_namespaces_of(&tb.name);
}

#[test]
fn bad_runs_and_a_running_topology_are_refused_before_anything_is_built() {
    let tb = Testbed::new("exb", TOPOLOGY);
    let results = tb.dir.path().join("results");
    let args = |file: &Path| {
        vec![
            "run".to_string(),
            file.to_str().expect("utf-8").to_string(),
            "--results".to_string(),
            results.to_str().expect("utf-8").to_string(),
        ]
    };
    let run = |file: &Path| {
        let a = args(file);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        testbed(&a)
    };
    // A workload a combination cannot resolve (a pod target needs a port):
    // found when every run is planned, before the first testbed is built.
    let bad = experiment(
        &tb,
        "unresolved",
        "workloads:\n  - {name: t, kind: tcpConnect, from: pod client, to: {rc: web}, rate: 5/s, duration: 1s}\n",
    );
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a port"),
        "{out:?}"
    );
    no_namespaces_of(&tb.name);
    assert!(!results.exists(), "nothing written");
    // The topology's testbed is up: an experiment builds its own.
    let tb = tb.up();
    let good = experiment(&tb, "busy", SHORT);
    let out = run(&good);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`testbed down"),
        "{out:?}"
    );
    assert!(!results.exists(), "nothing written");
}
