//! One LAN spanning two emulated machines (`support::machines`): on each, a
//! fabric namespace with a bridge and a leaf attached to it, joined by the
//! span device that `testbed::kernel::span` makes from inside the machine's
//! network namespace. The leaves reach each other (ARP included, full-size
//! frames at the LAN's MTU); the machines' own namespaces gain no link,
//! address, route or rule, only the span's UDP socket, which goes with the
//! fabric; the test host's root namespace is unchanged. Without the flood
//! entries the leaves cannot reach each other. Two testbeds on one machine
//! share the port's socket, not a VNI; a failed join leaves no device. A
//! dropped machine ends what runs on it.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use support::machines::{pair, Machine};
use support::snapshot;
use testbed::kernel::netns::Netns;
use testbed::plan::span::{self, SpanPlan};

const FABRIC: &str = "fab";
const LEAF: &str = "leaf";

/// A fabric with bridge `lan0` and a leaf at `10.99.0.N/24` on it, made
/// with `ip` on machine `m`, every LAN interface at MTU `mtu`.
fn lan(m: &Machine, n: u8, mtu: u32) {
    let mtu = mtu.to_string();
    for args in [
        vec!["netns", "add", FABRIC],
        vec!["netns", "add", LEAF],
        vec!["-n", FABRIC, "link", "set", "lo", "up"],
        vec![
            "-n", FABRIC, "link", "add", "lan0", "mtu", &mtu, "type", "bridge",
        ],
        vec!["-n", FABRIC, "link", "set", "lan0", "up"],
        vec![
            "-n", FABRIC, "link", "add", "up0", "mtu", &mtu, "type", "veth", "peer", "name",
            "eth0", "netns", LEAF,
        ],
        vec!["-n", FABRIC, "link", "set", "up0", "master", "lan0", "up"],
        vec![
            "-n",
            LEAF,
            "addr",
            "add",
            &format!("10.99.0.{n}/24"),
            "dev",
            "eth0",
        ],
        vec!["-n", LEAF, "link", "set", "eth0", "up"],
    ] {
        m.ok("ip", &args);
    }
}

/// Joins machine `m`'s fabric to the span `plan`, from inside `m`'s
/// network namespace, as `up` will on a real machine.
fn join(m: &Machine, plan: &SpanPlan) {
    try_join(m, FABRIC, plan)
        .unwrap_or_else(|e| panic!("joining the span on machine {}: {e}", m.pid()));
}

/// Joins `m`'s fabric namespace `fabric` (bridge `lan0`) to `plan`.
fn try_join(m: &Machine, fabric: &str, plan: &SpanPlan) -> Result<(), String> {
    let file = std::fs::File::open(m.path(&format!("/run/netns/{fabric}"))).expect("fabric");
    let fabric = Netns {
        name: fabric.into(),
        file,
    };
    m.in_netns(|| testbed::kernel::span::apply(&fabric, "lan0", plan))
        .map_err(|e| e.to_string())
}

/// The UDP sockets listening on `m`.
fn udp_listeners(m: &Machine) -> String {
    m.ok("ss", &["-H", "-u", "-l", "-n"])
}

/// Sends a `size`-byte UDP datagram, never fragmented (DF), from the leaf
/// of `from` to `to` on the leaf of `server`, and checks that it comes back
/// whole.
fn exchange(from: &Machine, server: &Machine, to: &str, size: usize) -> Result<(), String> {
    let to: SocketAddr = to.parse().expect("address");
    let wait = Some(Duration::from_secs(3));
    let echo = server
        .in_named_netns(LEAF, || UdpSocket::bind(to))
        .map_err(|e| format!("binding {to}: {e}"))?;
    echo.set_read_timeout(wait).map_err(|e| e.to_string())?;
    let client = from
        .in_named_netns(LEAF, || UdpSocket::bind("0.0.0.0:0"))
        .map_err(|e| e.to_string())?;
    client.set_read_timeout(wait).map_err(|e| e.to_string())?;
    let df: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: a plain int option on a socket this function owns.
    let r = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&df as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setting DF: {}", std::io::Error::last_os_error());
    std::thread::scope(|s| {
        let echoer = s.spawn(|| {
            let mut buf = [0u8; 2048];
            let (n, peer) = echo.recv_from(&mut buf)?;
            echo.send_to(&buf[..n], peer)
        });
        let sent = vec![0x5a_u8; size];
        client
            .send_to(&sent, to)
            .map_err(|e| format!("sending {size} bytes to {to}: {e}"))?;
        let mut buf = [0u8; 2048];
        let got = client.recv(&mut buf);
        echoer
            .join()
            .expect("echo thread")
            .map_err(|e| format!("{to} received nothing: {e}"))?;
        match got {
            Ok(n) if buf[..n] == sent[..] => Ok(()),
            Ok(n) => Err(format!("{n} bytes came back of {size}")),
            Err(e) => Err(format!("no answer from {to}: {e}")),
        }
    })
}

/// Two machines, each with its LAN and the span (with its flood entries
/// when `flood`); the machines' network state before the span was made.
fn spanned(name: &str, flood: bool) -> ((Machine, Machine), [String; 2]) {
    let (a, b) = pair();
    let port = span::DEFAULT_PORT;
    let mut plans = [
        span::plan(name, a.address, &[b.address], port, 1500).expect("plan"),
        span::plan(name, b.address, &[a.address], port, 1500).expect("plan"),
    ];
    if !flood {
        for p in &mut plans {
            p.fdb.clear();
        }
    }
    let mut before = [String::new(), String::new()];
    for (i, m) in [&a, &b].into_iter().enumerate() {
        lan(m, i as u8 + 1, plans[i].mtu);
        before[i] = m.network_state();
        join(m, &plans[i]);
    }
    ((a, b), before)
}

#[test]
fn leaves_on_two_machines_share_one_lan() {
    let host_before = snapshot::root_snapshot();
    let name = support::unique("span");
    {
        let ((a, b), before) = spanned(&name, true);
        let vni = span::vni(&name).to_string();
        for (m, before) in [(&a, &before[0]), (&b, &before[1])] {
            // The device is in the fabric, not on the machine.
            let dev = m.ok("ip", &["-n", FABRIC, "-d", "link", "show", "span0"]);
            assert!(dev.contains(&format!("vxlan id {vni}")), "{dev}");
            assert!(dev.contains("dstport 4800"), "{dev}");
            assert!(
                dev.contains("master lan0") && dev.contains("mtu 1450"),
                "{dev}"
            );
            let machine_now = m.network_state();
            assert_eq!(
                &machine_now, before,
                "the machine's links, addresses, routes or rules changed"
            );
            assert!(!machine_now.contains("span0"));
            let udp = udp_listeners(m);
            assert!(
                udp.contains(":4800 "),
                "no span socket on the machine: {udp}"
            );
            let fdb = m.ok("bridge", &["-n", FABRIC, "fdb", "show", "dev", "span0"]);
            let peer = if std::ptr::eq(m, &a) {
                b.address
            } else {
                a.address
            };
            assert!(
                fdb.contains(&format!("00:00:00:00:00:00 dst {peer} ")),
                "{fdb}"
            );
            // Nothing of the fabric listens in the fabric.
            assert_eq!(
                m.ok("ip", &["netns", "exec", FABRIC, "ss", "-H", "-uln"]),
                ""
            );
        }
        // Both ways (ARP first: broadcast crosses the span).
        exchange(&a, &b, "10.99.0.2:7000", 64).expect("leaf A to leaf B");
        exchange(&b, &a, "10.99.0.1:7000", 64).expect("leaf B to leaf A");
        let b_mac = b.ok("ip", &["-n", LEAF, "-br", "link", "show", "eth0"]);
        let b_mac = b_mac.split_whitespace().nth(2).expect("a MAC").to_string();
        let neigh = a.ok("ip", &["-n", LEAF, "neigh", "show", "10.99.0.2"]);
        assert!(
            neigh.contains(&b_mac),
            "ARP did not resolve B's leaf: {neigh}"
        );
        // A full-size packet at the LAN's MTU (1450 = 1422 + 28), whole.
        exchange(&a, &b, "10.99.0.2:7001", 1422).expect("a 1450-byte packet");
        // Deleting the fabric removes the device and the machine's socket.
        a.ok("ip", &["netns", "del", FABRIC]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while udp_listeners(&a).contains(":4800 ") {
            assert!(
                Instant::now() < deadline,
                "the span's socket outlived the fabric: {}",
                udp_listeners(&a)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(a.network_state(), before[0]);
    }
    snapshot::assert_same_state(
        &host_before,
        &snapshot::root_snapshot(),
        "the root namespace",
    );
}

#[test]
fn without_flood_entries_the_leaves_cannot_meet() {
    let (machines, _) = spanned(&support::unique("spnf"), false);
    let (a, b) = (&machines.0, &machines.1);
    assert!(
        exchange(a, b, "10.99.0.2:7000", 64).is_err(),
        "the leaves met without flood entries: the span test proves nothing"
    );
    let neigh = a.ok("ip", &["-n", LEAF, "neigh", "show", "10.99.0.2"]);
    assert!(!neigh.contains("lladdr"), "{neigh}");
}

#[test]
fn testbeds_on_one_machine_share_the_port_and_not_the_vni() {
    let name = support::unique("spnv");
    let (machines, _) = spanned(&name, true);
    let a = &machines.0;
    a.ok("ip", &["netns", "add", "fab2"]);
    // No bridge yet: refused, and no device left behind.
    let other = span::plan(&format!("{name}x"), a.address, &[], 4800, 1500).unwrap();
    let err = try_join(a, "fab2", &other).expect_err("a span without its bridge");
    assert!(err.contains("finding bridge lan0"), "{err}");
    let left = a.run("ip", &["-n", "fab2", "link", "show", "span0"]);
    assert!(!left.status.success(), "a half-made device was left behind");
    a.ok(
        "ip",
        &["-n", "fab2", "link", "add", "lan0", "type", "bridge"],
    );
    // The same testbed name: the same VNI on the same port, refused.
    let same = span::plan(&name, a.address, &[machines.1.address], 4800, 1500).unwrap();
    let err = try_join(a, "fab2", &same).expect_err("a second device with one VNI and port");
    assert!(err.contains(&format!("VNI {}", same.vni)), "{err}");
    let left = a.run("ip", &["-n", "fab2", "link", "show", "span0"]);
    assert!(!left.status.success(), "a refused device was left behind");
    // Another testbed: another VNI, the same socket.
    assert_ne!(other.vni, same.vni);
    try_join(a, "fab2", &other).expect("a second testbed on the port");
    assert_eq!(udp_listeners(a).matches(":4800 ").count(), 1);
    // The first testbed's fabric goes; the second's socket stays.
    a.ok("ip", &["netns", "del", FABRIC]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        udp_listeners(a).contains(":4800 "),
        "the shared socket closed"
    );
}

#[test]
fn a_dropped_machine_ends_what_runs_on_it() {
    let m = Machine::new();
    m.ok("ip", &["netns", "add", "x"]);
    m.ok(
        "sh",
        &[
            "-c",
            "ip netns exec x sleep 1000 </dev/null >/dev/null 2>&1 &",
        ],
    );
    // The background `ip netns exec` enters the namespace a moment later.
    let started = Instant::now();
    let pid: u32 = loop {
        let pids = m.ok("ip", &["netns", "pids", "x"]);
        if let Ok(pid) = pids.trim().parse() {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the sleep never ran in x: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(m);
    let deadline = Instant::now() + Duration::from_secs(5);
    // Gone, or a zombie its new parent has not reaped yet.
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(
            Instant::now() < deadline,
            "process {pid} outlived its machine"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
