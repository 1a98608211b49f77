//! Real testbeds on this machine (root, as in CI): packets between pods,
//! nodes and hosts over host-gw and vxlan; the root namespace untouched;
//! failed `up`s leave nothing; teardown without any state; two testbeds side
//! by side; `verify` finds no drift after `up` and finds a deleted route.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use support::{ok, tcp_roundtrip, testbed, Testbed};

const TWO_NODES: &str = "
cluster: {overlay: OVERLAY}
nodes: [{name: node1}, {name: node2}]
hosts: [{name: client}]
pods:
  - {name: a, node: node1, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: b, node: node1, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: c, node: node2, containers: [{name: c, command: [sleep, infinity]}]}
";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn connectivity(overlay: &str) {
    let tb = Testbed::new("net", &TWO_NODES.replace("OVERLAY", overlay)).up();
    // Pods get .2, .3 on node1 and .2 on node2, in order.
    let (a, b, c) = (
        tb.ns("pod.default.a"),
        tb.ns("pod.default.b"),
        tb.ns("pod.default.c"),
    );
    tcp_roundtrip(&b, addr("10.244.1.3:7001"), &a).expect("same-node pod to pod");
    tcp_roundtrip(&c, addr("10.244.2.2:7002"), &a).expect("cross-node pod to pod");
    tcp_roundtrip(&a, addr("10.244.1.2:7003"), &c).expect("cross-node, the other way");
    tcp_roundtrip(&c, addr("10.244.2.2:7004"), &tb.ns("node.node1"))
        .expect("node to a pod on another node");
    tcp_roundtrip(
        &tb.ns("node.node1"),
        addr("192.168.96.1:7005"),
        &tb.ns("host.client"),
    )
    .expect("host to node");
    let report = ok(&["verify", &tb.name]);
    assert!(report.contains("the kernel matches the plan"), "{report}");
}

#[test]
fn pods_nodes_and_hosts_talk_over_host_gw() {
    connectivity("host-gw");
}

#[test]
fn pods_talk_across_nodes_over_vxlan() {
    connectivity("vxlan");
}

#[test]
fn verify_finds_a_deleted_route_and_a_changed_mtu() {
    let tb = Testbed::new("drift", &TWO_NODES.replace("OVERLAY", "host-gw")).up();
    let del = Command::new("ip")
        .args(["-n", &tb.ns("node.node1"), "route", "del", "10.244.2.0/24"])
        .status()
        .expect("ip runs");
    assert!(del.success());
    let mtu = Command::new("ip")
        .args([
            "-n",
            &tb.ns("pod.default.a"),
            "link",
            "set",
            "eth0",
            "mtu",
            "1400",
        ])
        .status()
        .expect("ip runs");
    assert!(mtu.success());
    let out = testbed(&["verify", &tb.name]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{}: route 10.244.2.0/24 via 192.168.96.2 dev eth0 missing",
            tb.ns("node.node1")
        )),
        "{text}"
    );
    assert!(
        text.contains("interface eth0: mtu 1400 (want 1500)"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn the_root_namespace_is_never_touched() {
    let before = support::root_snapshot();
    let tb = Testbed::new("root", &TWO_NODES.replace("OVERLAY", "vxlan")).up();
    let during = support::root_snapshot();
    ok(&["down", &tb.name]);
    let after = support::root_snapshot();
    assert_eq!(before, during, "up changed the root namespace");
    assert_eq!(before, after, "down changed the root namespace");
}

#[test]
fn a_failing_up_leaves_nothing() {
    // A program that does not exist: refused before anything is built.
    let tb = Testbed::new(
        "fail",
        "
cluster: {overlay: host-gw}
nodes: [{name: n1}]
pods: [{name: p, containers: [{name: c, command: [no-such-program-here]}]}]
",
    );
    let out = testbed(&["up", tb.file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("command `no-such-program-here` not found in PATH"),
        "{err}"
    );
    assert_eq!(support::leftovers(&tb.name), Vec::<String>::new());

    // A failure after the namespaces exist: everything is rolled back.
    let tb = Testbed::new("fail", &TWO_NODES.replace("OVERLAY", "host-gw"));
    let out = Command::new(support::bin())
        .args(["up", tb.file.to_str().expect("path")])
        .env("TESTBED_FAIL_AT", "configure")
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("failing on purpose"));
    assert_eq!(support::leftovers(&tb.name), Vec::<String>::new());
}

#[test]
fn down_works_without_state_after_kill_9() {
    let tb = Testbed::new("kill", &TWO_NODES.replace("OVERLAY", "host-gw")).up();
    // Kill every process of the testbed (the supervisor and what runs in its
    // namespaces), and lose its state directory.
    let mut pids: Vec<i32> = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let in_ours = netns.is_some_and(|_| {
            std::fs::read_dir("/run/netns").is_ok_and(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("tb-{}.", tb.name))
                    })
                    .any(|e| {
                        use std::os::unix::fs::MetadataExt;
                        let a = std::fs::metadata(e.path()).map(|m| m.ino()).ok();
                        let b = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                            .map(|m| m.ino())
                            .ok();
                        a.is_some() && a == b
                    })
            })
        });
        let supervisor =
            String::from_utf8_lossy(&cmdline).contains(&format!("supervise\0{}", tb.name));
        if in_ours || supervisor {
            pids.push(pid);
        }
    }
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // The state directory is a tmpfs of its own: losing it is unmounting
    // it and removing the directory.
    let state = format!("/run/testbed/{}", tb.name);
    assert!(std::path::Path::new(&state).is_dir(), "state dir existed");
    let _ = nix::mount::umount2(state.as_str(), nix::mount::MntFlags::MNT_DETACH);
    std::fs::remove_dir_all(&state).expect("state dir removed");
    ok(&["down", &tb.name]);
    assert_eq!(support::leftovers(&tb.name), Vec::<String>::new());
}

#[test]
fn two_testbeds_run_side_by_side() {
    let one = Testbed::new("one", &TWO_NODES.replace("OVERLAY", "host-gw")).up();
    let two = Testbed::new("two", &TWO_NODES.replace("OVERLAY", "vxlan")).up();
    // The same addresses, in separate worlds.
    tcp_roundtrip(
        &one.ns("pod.default.c"),
        addr("10.244.2.2:7101"),
        &one.ns("pod.default.a"),
    )
    .expect("first");
    tcp_roundtrip(
        &two.ns("pod.default.c"),
        addr("10.244.2.2:7102"),
        &two.ns("pod.default.a"),
    )
    .expect("second");
    ok(&["down", &one.name]);
    assert_eq!(support::leftovers(&one.name), Vec::<String>::new());
    assert!(
        ok(&["verify", &two.name]).contains("matches"),
        "removing one must not touch the other"
    );
    tcp_roundtrip(
        &two.ns("pod.default.c"),
        addr("10.244.2.2:7103"),
        &two.ns("pod.default.a"),
    )
    .expect("second, still");
}

#[test]
fn up_is_idempotent_and_refuses_a_changed_file() {
    let tb = Testbed::new("idem", &TWO_NODES.replace("OVERLAY", "host-gw")).up();
    let again = testbed(&["up", tb.file.to_str().expect("path")]);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up"));
    let changed = std::env::temp_dir().join(format!("testbed-tests/{}-changed.yaml", tb.name));
    let text = std::fs::read_to_string(&tb.file)
        .expect("topology")
        .replace("name: client", "name: other");
    std::fs::write(&changed, text).expect("write");
    let out = testbed(&["up", changed.to_str().expect("path")]);
    let _ = std::fs::remove_file(&changed);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running with a different topology")
    );
}
