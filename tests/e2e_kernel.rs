//! Real testbeds on this machine (root, as in CI): packets between pods,
//! nodes and hosts over host-gw and vxlan; the root namespace untouched by
//! every overlay and proxy mode (and the snapshot that shows it, checked to
//! see changes and to fail when a tool does);
//! failed `up`s leave nothing; teardown without any state; two testbeds side
//! by side; `verify` finds no drift after `up` and finds a deleted route.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use support::{ok, snapshot, tcp_roundtrip, tcp_through, testbed, Testbed};

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
    // The controller repairs drift within tens of milliseconds: hold it
    // stopped while verify looks (and let it go on afterwards, also when
    // the test fails).
    let st: serde_json::Value =
        serde_json::from_str(&ok(&["status", &tb.name, "--json"])).expect("status JSON");
    let pid = st[0]["supervisor"]["pid"]
        .as_i64()
        .expect("the supervisor's pid") as i32;
    let pid = nix::unistd::Pid::from_raw(pid);
    struct Resume(nix::unistd::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let _resume = Resume(pid);
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

/// Two nodes, a host behind a 100 Mbit/s link (tbf on both ends), a pod on
/// each node, and a NodePort service for the one on node2 (`web`, serving on
/// 8080 what the test listens with).
const WITH_SERVICE: &str = "
cluster: {overlay: OVERLAY, proxy: PROXY}
nodes: [{name: node1}, {name: node2}]
hosts: [{name: client, link: {rate: 100mbit}}]
pods:
  - {name: a, node: node1, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: web, node: node2, labels: {app: web}, containers: [{name: c, command: [sleep, infinity]}]}
services:
  - {name: web, type: NodePort, clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080, nodePort: 30080}]}
";

/// The root namespace's links, addresses, routes, rules, neighbours,
/// netfilter state and sysctls are the same before `up`, while the testbed
/// runs (after traffic through its service, and after a live impairment
/// change where the overlay takes one), and after `down`.
fn root_untouched(overlay: &str, proxy: &str) {
    let before = snapshot::root_snapshot();
    let tb = Testbed::new(
        "root",
        &WITH_SERVICE
            .replace("OVERLAY", overlay)
            .replace("PROXY", proxy),
    )
    .up();
    if overlay == "udp" {
        ok(&["impair", &tb.name, "node1", "--delay", "1ms"]);
    }
    let web = tb.ns("pod.default.web");
    tcp_through(
        &web,
        addr("0.0.0.0:8080"),
        &tb.ns("pod.default.a"),
        addr("10.96.0.10:80"),
    )
    .expect("cluster IP from a pod");
    tcp_through(
        &web,
        addr("0.0.0.0:8080"),
        &tb.ns("host.client"),
        addr("192.168.96.1:30080"),
    )
    .expect("node port from a host");
    let during = snapshot::root_snapshot();
    ok(&["down", &tb.name]);
    let after = snapshot::root_snapshot();
    snapshot::assert_same_state(&before, &during, &format!("up ({overlay}, {proxy})"));
    snapshot::assert_same_state(
        &before,
        &after,
        &format!("up and down ({overlay}, {proxy})"),
    );
}

#[test]
fn the_root_namespace_is_never_touched_udp_iptables() {
    root_untouched("udp", "iptables");
}

#[test]
fn the_root_namespace_is_never_touched_udp_nftables() {
    root_untouched("udp", "nftables");
}

#[test]
fn the_root_namespace_is_never_touched_udp_userspace() {
    root_untouched("udp", "userspace");
}

#[test]
fn the_root_namespace_is_never_touched_vxlan_iptables() {
    root_untouched("vxlan", "iptables");
}

#[test]
fn the_root_namespace_is_never_touched_host_gw_nftables() {
    root_untouched("host-gw", "nftables");
}

/// A network namespace of a test's own (not a testbed's), with loopback
/// up, deleted on drop.
struct Scratch(String);

impl Scratch {
    fn new() -> Scratch {
        let name = format!("tbsnap-{}", support::unique("snap"));
        let added = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip runs");
        assert!(added.success(), "ip netns add {name}");
        let ns = Scratch(name);
        // No duplicate address detection: a link-local address that stops
        // being tentative would change the snapshot by itself.
        sh(
            &ns.0,
            "ip link set lo up && echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
        );
        ns
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs shell `script` in namespace `ns`; it must succeed.
fn sh(ns: &str, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_network_snapshot_sees_every_kind_of_change() {
    // Proof that the comparison above can fail: in a namespace of its own,
    // each kind of state the snapshot claims to cover is changed in turn,
    // and each change must show.
    let ns = Scratch::new();
    let mut last = snapshot::netns_snapshot(&ns.0);
    assert_eq!(
        last,
        snapshot::netns_snapshot(&ns.0),
        "stable when nothing changes"
    );
    for change in [
        "ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up",
        "ip addr add 10.9.9.1/24 dev d0",
        "ip route add 10.8.0.0/16 via 10.9.9.2",
        "ip rule add from 10.7.0.0/16 table 7",
        "ip neigh add 10.9.9.3 lladdr 02:00:00:00:00:03 dev d0 nud permanent",
        "iptables -t nat -A POSTROUTING -s 10.9.9.0/24 -j MASQUERADE",
        "iptables -t raw -N TB-SNAP",
        "nft add table inet tbsnap",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "echo 2 > /proc/sys/net/ipv4/conf/d0/rp_filter",
        "ip -6 route add 2001:db8::/64 dev d0",
        "ip -6 rule add from 2001:db8:1::/48 table 7",
        "ip6tables -t mangle -A PREROUTING -j ACCEPT",
        "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        sh(&ns.0, change);
        let now = snapshot::netns_snapshot(&ns.0);
        assert!(last != now, "the snapshot missed `{change}`");
        last = now;
    }
}

#[test]
fn the_network_snapshot_fails_when_a_tool_fails() {
    let missing = std::panic::catch_unwind(|| {
        snapshot::tool_output(None, "testbed-no-such-tool", &[]);
    });
    assert!(missing.is_err(), "a missing tool must fail the snapshot");
    let failing = std::panic::catch_unwind(|| {
        snapshot::tool_output(None, "ip", &["no-such-object"]);
    });
    assert!(failing.is_err(), "a tool's error must fail the snapshot");
    // In a namespace that does not exist, every tool fails.
    let gone = std::panic::catch_unwind(|| {
        snapshot::netns_snapshot("tbsnap-no-such-namespace");
    });
    assert!(gone.is_err());
}

#[test]
fn topologies_that_root_runs_are_in_private_directories() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Root runs the commands a topology file names. A file under a fixed
    // path (`/tmp/testbed-tests/NAME.yaml`, as these tests once used) lets
    // any local user who creates that directory first write the file, or
    // point it elsewhere with a symlink: each testbed's file must be alone
    // in a fresh directory of root's, which no one else can enter.
    let one = Testbed::new("priv", "nodes: [{name: n1}]\n");
    let two = Testbed::new("priv", "nodes: [{name: n1}]\n");
    let dirs: Vec<_> = [&one, &two]
        .iter()
        .map(|tb| tb.file.parent().expect("a directory").to_path_buf())
        .collect();
    assert_ne!(dirs[0], dirs[1], "a directory per testbed");
    for (tb, dir) in [&one, &two].iter().zip(&dirs) {
        assert_eq!(dir, tb.dir.path());
        let meta = std::fs::symlink_metadata(dir).expect("exists");
        assert!(meta.is_dir() && !meta.file_type().is_symlink(), "{dir:?}");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700, "{dir:?}");
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        let names: Vec<_> = std::fs::read_dir(dir)
            .expect("readable")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(names, std::slice::from_ref(&tb.file), "nothing else in it");
    }
    drop(one);
    assert!(!dirs[0].exists(), "removed with its testbed");
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
    // A failure after the namespaces exist is rolled back too: see
    // `kernel::apply::tests` (a plan the kernel refuses half-way).
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
    let changed = tb.dir.path().join(format!("{}-changed.yaml", tb.name));
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
