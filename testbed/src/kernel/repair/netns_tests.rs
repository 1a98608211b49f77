//! Drift repair on a real testbed (as root): the kernel side of a small
//! plan is applied under a unique name, broken by hand with `ip`, and
//! `repairs` + `apply_fixes` must bring `diff(desired, observe)` back to
//! empty. Torn down on drop, also when a test fails.

use super::super::{repairs, Fix};
use super::apply_fixes;
use crate::kernel::{apply, observe, teardown};
use crate::plan::state::{desired, diff, KernelState};
use crate::plan::Plan;
use crate::state::TestbedName;
use std::sync::atomic::{AtomicU32, Ordering};

const TOPOLOGY: &str = "
cluster: {overlay: host-gw}
nodes: [{name: n1}, {name: n2}]
hosts: [{name: h}]
pods:
  - {name: a, node: n1, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: b, node: n2, containers: [{name: c, command: [sleep, infinity]}]}
";

/// The kernel side of [`TOPOLOGY`] under a unique name, torn down on drop.
struct Bed {
    name: TestbedName,
    plan: Plan,
}

impl Bed {
    fn new() -> Bed {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("kr{:x}x{n}", std::process::id() & 0xfffff);
        let plan = match crate::load_str("t.yaml", format!("name: {name}\n{TOPOLOGY}")) {
            Ok(l) => l.plan,
            Err(e) => panic!("{}", e.render()),
        };
        let bed = Bed {
            name: TestbedName::new(&name).unwrap(),
            plan,
        };
        apply::apply(&bed.plan).unwrap();
        bed
    }

    fn ns(&self, rest: &str) -> String {
        format!("{}.{rest}", self.plan.prefix)
    }

    fn observe(&self) -> KernelState {
        let names: Vec<String> = desired(&self.plan).into_keys().collect();
        observe::observe(&names, &["net.ipv4.ip_forward"]).unwrap()
    }

    /// Repairs every namespace once from one observation; returns what was
    /// done.
    fn repair(&self, want: &KernelState) -> Vec<String> {
        let have = self.observe();
        let mut done = Vec::new();
        for (ns, w) in want {
            let fixes = repairs(w, &have[ns]);
            done.extend(apply_fixes(ns, &fixes, &self.plan).unwrap());
        }
        done
    }

    fn ip(&self, args: &[&str]) {
        crate::kernel::testutil::ip(args)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Err(e) = teardown::teardown(&self.name, &mut |_| {}) {
            eprintln!("teardown of {}: {e}", self.name.as_str());
        }
    }
}

#[test]
fn drift_is_repaired_until_the_kernel_matches_the_plan() {
    let bed = Bed::new();
    let want = desired(&bed.plan);
    assert_eq!(diff(&want, &bed.observe()), Vec::<String>::new());
    let (pod_a, node1, fabric) = (bed.ns("pod.default.a"), bed.ns("node.n1"), bed.ns("fabric"));
    let b = &bed.plan.pods[1].interface.as_ref().unwrap().peer.name;
    let n2_port = &bed.plan.nodes[1].uplink.peer.name;

    // A pod's default route, another pod's veth (from the node's side), an
    // MTU, a bridge port taken off the LAN, a link down, a node's route and
    // a sysctl.
    bed.ip(&["-n", &pod_a, "route", "del", "default"]);
    bed.ip(&["-n", &bed.ns("node.n2"), "link", "del", b]);
    bed.ip(&["-n", &node1, "link", "set", "cni0", "mtu", "1400"]);
    bed.ip(&["-n", &fabric, "link", "set", n2_port, "nomaster"]);
    bed.ip(&["-n", &bed.ns("host.h"), "link", "set", "eth0", "down"]);
    bed.ip(&["-n", &node1, "route", "del", "10.244.2.0/24"]);
    bed.ip(&[
        "netns",
        "exec",
        &node1,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=0",
    ]);
    let broken = diff(&want, &bed.observe());
    assert!(broken.len() >= 7, "{broken:#?}");

    let done = bed.repair(&want);
    assert!(
        done.contains(&"route default via 10.244.1.1 dev eth0 restored".to_string()),
        "{done:#?}"
    );
    assert!(done.contains(&format!("{b} recreated")), "{done:#?}");
    assert!(
        done.contains(&"cni0 mtu 1500 (was 1400)".to_string()),
        "{done:#?}"
    );
    assert_eq!(
        diff(&want, &bed.observe()),
        Vec::<String>::new(),
        "{done:#?}"
    );
    // Nothing left to do, and the pods talk again.
    assert_eq!(bed.repair(&want), Vec::<String>::new());
    pods_talk(&bed);
}

#[test]
fn a_deleted_pod_eth0_and_a_machine_uplink_are_recreated() {
    let bed = Bed::new();
    let want = desired(&bed.plan);
    bed.ip(&["-n", &bed.ns("pod.default.a"), "link", "del", "eth0"]);
    bed.ip(&["-n", &bed.ns("node.n2"), "link", "del", "eth0"]);
    let done = bed.repair(&want);
    // Each pair is made again once, from whichever side comes first.
    let port = &bed.plan.pods[0].interface.as_ref().unwrap().peer.name;
    let uplink = &bed.plan.nodes[1].uplink.peer.name;
    assert_eq!(
        done,
        [format!("{uplink} recreated"), format!("{port} recreated")]
    );
    assert_eq!(
        diff(&want, &bed.observe()),
        Vec::<String>::new(),
        "{done:#?}"
    );
    pods_talk(&bed);
}

#[test]
fn a_link_wanted_down_is_set_down_and_kept_down() {
    let bed = Bed::new();
    let pod_a = bed.ns("pod.default.a");
    let mut want = desired(&bed.plan);
    want.get_mut(&pod_a)
        .and_then(|s| s.links.get_mut("eth0"))
        .unwrap()
        .up = false;
    let done = bed.repair(&want);
    assert_eq!(done, ["eth0 set down"]);
    let have = bed.observe();
    assert!(!have[&pod_a].links["eth0"].up);
    assert_eq!(repairs(&want[&pod_a], &have[&pod_a]), Vec::<Fix>::new());
    // Back up when the fault is gone, with the route the kernel dropped.
    let done = bed.repair(&desired(&bed.plan));
    assert_eq!(
        done,
        [
            "eth0 set up",
            "route default via 10.244.1.1 dev eth0 restored"
        ]
    );
    pods_talk(&bed);
}

#[test]
fn a_bridge_cannot_be_recreated_and_says_so() {
    let bed = Bed::new();
    let node1 = bed.ns("node.n1");
    bed.ip(&["-n", &node1, "link", "del", "cni0"]);
    let want = desired(&bed.plan);
    let fixes = repairs(&want[&node1], &bed.observe()[&node1]);
    let err = apply_fixes(&node1, &fixes, &bed.plan).unwrap_err();
    assert!(err.to_string().contains("cannot recreate cni0"), "{err}");
}

/// Pod a (node n1) reaches pod b (node n2) over TCP.
fn pods_talk(bed: &Bed) {
    use std::io::{Read, Write};
    let (a, b) = (bed.ns("pod.default.a"), bed.ns("pod.default.b"));
    let ip = bed.plan.pods[1].ip.unwrap();
    let listener = crate::kernel::netns::Netns::open(&b)
        .unwrap()
        .run_in(move || std::net::TcpListener::bind((ip, 7100)).unwrap())
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hi").unwrap();
    });
    let got = crate::kernel::netns::Netns::open(&a)
        .unwrap()
        .run_in(move || {
            let to = std::net::SocketAddr::from((ip, 7100));
            let mut s =
                std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(3))?;
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).map(|()| buf)
        })
        .unwrap();
    assert_eq!(&got.unwrap(), b"hi");
    server.join().unwrap();
}
