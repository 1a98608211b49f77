//! Containers in real testbeds: names resolve inside pods, every network
//! mode behaves as Docker's does, volumes are shared, restart policies are
//! honoured, and every example topology comes up, matches its plan and goes
//! away without a trace.

mod support;

use serde_json::Value;
use support::{ok, status, testbed, wait_for, Testbed};

fn exec(tb: &Testbed, target: &str, cmd: &[&str]) -> (i32, String) {
    exec_in(tb, target, None, cmd)
}

fn exec_in(tb: &Testbed, target: &str, container: Option<&str>, cmd: &[&str]) -> (i32, String) {
    let mut args = vec!["exec", "-t", &tb.name, target];
    if let Some(c) = container {
        args.extend(["-c", c]);
    }
    args.push("--");
    args.extend_from_slice(cmd);
    let out = testbed(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn plan(tb: &Testbed) -> Value {
    serde_json::from_str(&ok(&["plan", "--json", tb.file.to_str().expect("path")]))
        .expect("plan JSON")
}

const APP: &str = "
cluster: {overlay: host-gw}
nodes: [{name: node1}, {name: node2}]
hosts:
  - name: client
    containers: [{name: main, command: [sleep, infinity]}]
pods:
  - name: web
    node: node1
    labels: {app: web}
    containers:
      - {name: http, command: [python3, -m, http.server, '8080'], workingDir: /tmp, ready: {tcp: 8080}}
  - name: sidecar
    network: 'container:web'
    containers: [{name: main, command: [sleep, infinity]}]
  - name: hostnet
    node: node2
    network: host
    containers: [{name: main, command: [sleep, infinity]}]
  - name: isolated
    network: none
    containers: [{name: main, command: [sleep, infinity]}]
  - name: vols
    node: node2
    volumes: [{name: data}]
    containers:
      - name: writer
        command: [sh, -c, 'echo \"$GREETING\" > /data/greeting; exec sleep infinity']
        env: {GREETING: hello-volume}
        volumeMounts: [{name: data, mountPath: /data}]
      - name: reader
        command: [sleep, infinity]
        volumeMounts: [{name: data, mountPath: /shared}]
  - name: other
    namespace: team
    containers: [{name: main, command: [sleep, infinity]}]
services:
  - name: web
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
";

#[test]
fn names_modes_and_volumes() {
    let tb = Testbed::new("app", APP).up();
    let p = plan(&tb);
    let svc_ip = p["services"][0]["clusterIP"]
        .as_str()
        .expect("cluster IP")
        .to_string();
    let pod_ip = |name: &str| {
        p["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .find(|x| x["name"] == name)
            .expect("pod")["ip"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let resolve = |from: &str, name: &str| {
        let (code, out) = exec(&tb, from, &["getent", "ahostsv4", name]);
        assert_eq!(code, 0, "{from} cannot resolve {name}");
        out.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    // Services, pods, nodes and hosts by name, qualified and bare.
    assert_eq!(resolve("vols", "web.default.svc"), svc_ip);
    assert_eq!(resolve("vols", "web.default"), svc_ip);
    assert_eq!(
        resolve("vols", "web"),
        svc_ip,
        "a bare name is the service first"
    );
    assert_eq!(resolve("vols", "web.default.pod"), pod_ip("web"));
    assert_eq!(resolve("vols", "vols"), pod_ip("vols"));
    assert_eq!(resolve("vols", "node2"), "192.168.96.2");
    assert_eq!(resolve("vols", "client"), "192.168.96.239");
    assert_eq!(resolve("team/other", "web.default.svc"), svc_ip);
    let (code, _) = exec(&tb, "team/other", &["getent", "ahostsv4", "web"]);
    assert_eq!(
        code, 2,
        "a bare name is looked up in the asker's own namespace"
    );
    let (code, _) = exec(&tb, "team/other", &["getent", "ahostsv4", "vols"]);
    assert_eq!(code, 2, "pods of another namespace are not bare names");
    assert_eq!(
        resolve("client", "web.default.svc"),
        svc_ip,
        "hosts resolve too"
    );
    // Hostnames.
    assert_eq!(exec(&tb, "vols", &["hostname"]).1.trim(), "vols");
    assert_eq!(exec(&tb, "client", &["hostname"]).1.trim(), "client");

    // A pod to another pod by name, across nodes.
    let (code, body) = exec(
        &tb,
        "vols",
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "http://web.default.pod:8080/",
        ],
    );
    assert_eq!(code, 0, "curl across nodes by name");
    assert!(body.contains("Directory listing"), "{body}");

    // container:web shares web's address and ports.
    let (code, _) = exec(
        &tb,
        "sidecar",
        &["curl", "-s", "--max-time", "5", "http://127.0.0.1:8080/"],
    );
    assert_eq!(code, 0, "the sidecar reaches web on localhost");
    let (_, addrs) = exec(&tb, "sidecar", &["cat", "/proc/net/fib_trie"]);
    assert!(
        addrs.contains(&pod_ip("web")),
        "the sidecar has web's address"
    );

    // none: only loopback. host: the node's interfaces.
    let (_, dev) = exec(&tb, "isolated", &["cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"]);
    let (_, dev) = exec(&tb, "hostnet", &["cat", "/proc/net/dev"]);
    assert!(dev.contains("cni0") && dev.contains("eth0"), "{dev}");

    // A volume shared by two containers, at different paths; env reached it.
    let (code, out) = exec_in(&tb, "vols", Some("reader"), &["cat", "/shared/greeting"]);
    assert_eq!((code, out.trim()), (0, "hello-volume"));
    let (code, out) = exec_in(&tb, "vols", Some("writer"), &["cat", "/data/greeting"]);
    assert_eq!((code, out.trim()), (0, "hello-volume"));
    // Mount paths that do not exist on the host are not created there.
    assert!(
        !std::path::Path::new("/shared").exists(),
        "/shared appeared on the host"
    );

    // A pod, host or container the testbed does not have is bad input
    // (exit 2, with the closest name), for exec and logs alike; the
    // command's own code comes back as it is.
    assert_eq!(exec(&tb, "isolatd", &["true"]).0, 2);
    assert_eq!(exec_in(&tb, "vols", Some("nope"), &["true"]).0, 2);
    assert_eq!(exec(&tb, "vols", &["sh", "-c", "exit 7"]).0, 7);
    let out = testbed(&["logs", "-t", &tb.name, "isolatd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean `isolated`"),
        "{out:?}"
    );
    let out = testbed(&["logs", "-t", &tb.name, "vols", "-c", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // The kernel still matches the plan with everything running.
    assert!(ok(&["verify", &tb.name]).contains("matches"));
    let v: Value = serde_json::from_str(&ok(&["verify", &tb.name, "--json"])).expect("JSON");
    assert_eq!(v["matches"], true, "{v:#}");
    assert!(v["namespaces"].as_u64().expect("namespaces") > 5, "{v:#}");
}

fn container(st: &Value, owner: &str, name: &str) -> Value {
    ["pods", "hosts"]
        .iter()
        .filter_map(|kind| st[kind].as_array())
        .flatten()
        .filter(|o| o["name"] == owner)
        .filter_map(|o| o["containers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {owner}/{name} in {st}"))
}

#[test]
fn restart_policies_are_honoured() {
    let tb = Testbed::new(
        "rst",
        "
cluster: {overlay: host-gw}
nodes: [{name: n1}]
pods:
  - name: p
    containers:
      - {name: always, command: [sleep, infinity]}
      - {name: never, command: [sleep, infinity], restartPolicy: Never}
      - {name: onfail, command: [sleep, infinity], restartPolicy: OnFailure}
",
    )
    .up();
    let st = status(&tb);
    let kill = |c: &Value| {
        let pid = c["pid"].as_i64().expect("running pid") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        pid
    };
    let old = kill(&container(&st, "p", "always"));
    kill(&container(&st, "p", "never"));
    kill(&container(&st, "p", "onfail"));
    let st = wait_for(&tb, "restarts", |st| {
        let a = container(st, "p", "always");
        let o = container(st, "p", "onfail");
        a["restarts"] == 1
            && a["state"] == "running"
            && o["restarts"] == 1
            && o["state"] == "running"
    });
    assert_ne!(
        container(&st, "p", "always")["pid"].as_i64(),
        Some(i64::from(old))
    );
    let never = container(&st, "p", "never");
    assert_eq!(never["restarts"], 0);
    assert_eq!(never["state"], "failed", "{never}");
    let table = ok(&["status", &tb.name]);
    assert!(table.contains("Failed"), "{table}");
}

#[test]
fn every_example_comes_up_works_and_goes_away() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("topologies/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("example");
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("name:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let tb = Testbed::new("ex", &body);
        let out = testbed(&["up", tb.file.to_str().expect("path"), "--timeout", "60s"]);
        let spread = testbed::load(&file).expect("valid").plan.machines;
        if !spread.is_empty() {
            // A topology spread over machines is brought up one share per
            // machine (`--machine`), which is not built yet: `up` refuses
            // it, exit 2, with nothing made.
            assert_eq!(out.status.code(), Some(2), "{}", file.display());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("--machine NAME"), "{}: {err}", file.display());
            drop(tb);
            continue;
        }
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            ok(&["verify", &tb.name]).contains("matches"),
            "{}",
            file.display()
        );
        // Every pod with an address resolves every other pod by qualified name.
        let p = plan(&tb);
        let pods = p["pods"].as_array().expect("pods");
        if let Some(asker) = pods.iter().find(|x| x["network"] == "bridge") {
            let target = format!(
                "{}/{}",
                asker["namespace"].as_str().unwrap_or(""),
                asker["name"].as_str().unwrap_or("")
            );
            for other in pods.iter().filter(|x| x["ip"].is_string()) {
                let name = format!(
                    "{}.{}.pod",
                    other["name"].as_str().unwrap_or(""),
                    other["namespace"].as_str().unwrap_or("")
                );
                let (code, out) = exec(&tb, &target, &["getent", "ahostsv4", &name]);
                assert_eq!(code, 0, "{}: {name}", file.display());
                assert!(
                    out.starts_with(other["ip"].as_str().unwrap_or("?")),
                    "{}: {name} -> {out}",
                    file.display()
                );
            }
        }
        let name = tb.name.clone();
        drop(tb);
        assert_eq!(
            support::leftovers(&name),
            Vec::<String>::new(),
            "{}",
            file.display()
        );
    }
}
