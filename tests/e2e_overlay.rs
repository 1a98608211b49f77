//! The overlay between nodes, for real: pods on different nodes talk TCP and
//! UDP over each backend; the udp overlay's data path answers unleased
//! addresses with ICMP, drops foreign and malformed datagrams and counts
//! them, follows the registry live, and applies impairments reproducibly
//! from the seed.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use support::{daemon_pid, in_netns, ok, tcp_roundtrip, Testbed};

const TOPO: &str = "
seed: SEED
cluster: {overlay: OVERLAY}
nodes:
  - {name: node1LINK}
  - {name: node2}
pods:
  - {name: a, node: node1, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: c, node: node2, containers: [{name: c, command: [sleep, infinity]}]}
";

fn topo(overlay: &str, seed: u64, link: &str) -> String {
    TOPO.replace("OVERLAY", overlay)
        .replace("SEED", &seed.to_string())
        .replace(
            "LINK",
            &if link.is_empty() {
                String::new()
            } else {
                format!(", link: {{{link}}}")
            },
        )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Sends `n` numbered datagrams from `client_ns` to `to` (bound in
/// `server_ns`) and returns the numbers that arrived. The receiver reads
/// while the sender sends, and neighbours are resolved first, so that no
/// socket buffer or ARP queue is what drops packets.
fn udp_numbers(server_ns: &str, to: SocketAddr, client_ns: &str, n: u32) -> Vec<u32> {
    let sock = in_netns(server_ns, move || UdpSocket::bind(to)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            if len == 4 {
                got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
        }
        got
    });
    in_netns(client_ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("client socket");
        // Resolve the path (ARP on both bridges) with a datagram that is
        // not counted.
        s.send_to(&[0xff], to).expect("warm-up");
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..n {
            s.send_to(&i.to_be_bytes(), to).expect("send");
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let mut got = receiver.join().expect("receiver");
    got.sort_unstable();
    got.dedup();
    got
}

fn cross_node(overlay: &str) {
    let tb = Testbed::new("ov", &topo(overlay, 1, "")).up();
    let (a, c) = (tb.ns("pod.default.a"), tb.ns("pod.default.c"));
    tcp_roundtrip(&c, addr("10.244.2.2:7201"), &a).expect("TCP node1 pod -> node2 pod");
    tcp_roundtrip(&a, addr("10.244.1.2:7202"), &c).expect("TCP node2 pod -> node1 pod");
    let got = udp_numbers(&c, addr("10.244.2.2:7203"), &a, 200);
    assert_eq!(
        got.len(),
        200,
        "UDP over {overlay}: {} of 200 arrived",
        got.len()
    );
    assert!(ok(&["verify", &tb.name]).contains("matches"));
}

#[test]
fn pods_talk_across_nodes_over_udp() {
    cross_node("udp");
}

#[test]
fn pods_talk_across_nodes_over_vxlan() {
    cross_node("vxlan");
}

#[test]
fn pods_talk_across_nodes_over_host_gw() {
    cross_node("host-gw");
}

fn stats(tb: &Testbed, node: &str) -> serde_json::Value {
    let path = format!("/run/testbed/{}/overlay/{node}.stats.json", tb.name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("stats JSON")
}

fn wait_stat(tb: &Testbed, node: &str, key: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = stats(tb, node);
        let n = find_counter(&v, key).unwrap_or(0);
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A counter anywhere in the stats document, by its key.
fn find_counter(v: &serde_json::Value, key: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .and_then(|x| x.as_u64())
            .or_else(|| m.values().find_map(|x| find_counter(x, key))),
        _ => None,
    }
}

#[test]
fn the_udp_data_path_guards_itself() {
    let tb = Testbed::new(
        "grd",
        &format!("{}hosts: [{{name: outsider}}]\n", topo("udp", 1, "")),
    )
    .up();
    let (a, c) = (tb.ns("pod.default.a"), tb.ns("pod.default.c"));

    // An address in the pod network that no node holds: refused at once.
    let started = Instant::now();
    let err = in_netns(&a, || {
        std::net::TcpStream::connect_timeout(&addr("10.244.77.7:80"), Duration::from_secs(3))
    })
    .expect_err("no lease, no connection");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}: {err}",
        started.elapsed()
    );
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH)
        ),
        "expected an ICMP unreachable, got {err}"
    );
    assert!(wait_stat(&tb, "node1", "icmpUnreachableSent", 1) >= 1);

    // A well-formed encapsulated packet from a machine that holds no lease.
    let packet = ipv4_udp([10, 244, 1, 9], [10, 244, 2, 2], b"forged");
    in_netns(&tb.ns("host.outsider"), move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("socket");
        for _ in 0..3 {
            s.send_to(&packet, "192.168.96.2:8285").expect("send");
        }
    });
    assert!(
        wait_stat(&tb, "node2", "foreignSource", 3) >= 3,
        "{}",
        stats(&tb, "node2")
    );

    // Garbage from a lease holder: counted, and traffic goes on.
    in_netns(&tb.ns("node.node1"), || {
        let s = UdpSocket::bind("192.168.96.1:0").expect("socket");
        let mut x: u32 = 12345;
        for len in 0..200usize {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = s.send_to(&junk, "192.168.96.2:8285");
        }
    });
    assert!(
        wait_stat(&tb, "node2", "malformed", 1) >= 1,
        "{}",
        stats(&tb, "node2")
    );
    tcp_roundtrip(&c, addr("10.244.2.2:7301"), &a).expect("traffic after the garbage");

    // Issue 9: a 33-byte TCP packet (13 bytes of TCP header) from a lease
    // holder once panicked node2's receive workers, and traffic stopped.
    // Sent from many source ports, so that every worker's socket gets some:
    // the same daemon goes on (not restarted), and so does traffic.
    let pid = daemon_pid(&tb.name, "overlay-daemon", "node2").expect("node2's daemon");
    let short = ipv4_short_tcp([10, 244, 1, 2], [10, 244, 2, 2]);
    in_netns(&tb.ns("node.node1"), move || {
        for _ in 0..32 {
            let s = UdpSocket::bind("192.168.96.1:0").expect("socket");
            for _ in 0..4 {
                s.send_to(&short, "192.168.96.2:8285").expect("send");
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    tcp_roundtrip(&c, addr("10.244.2.2:7304"), &a).expect("traffic after short TCP packets");
    assert_eq!(
        daemon_pid(&tb.name, "overlay-daemon", "node2"),
        Some(pid),
        "node2's daemon was restarted"
    );

    // The registry is followed live: without node2's lease node1 cannot
    // reach it; with the lease back it can, without restarting anything.
    let lease = format!("/run/testbed/{}/registry/subnets/10.244.2.0-24", tb.name);
    let text = std::fs::read_to_string(&lease).expect("node2's lease");
    std::fs::remove_file(&lease).expect("revoke");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        tcp_roundtrip(&c, addr("10.244.2.2:7302"), &a).is_err(),
        "reached a node without a lease"
    );
    std::fs::write(&lease, &text).expect("lease back");
    std::thread::sleep(Duration::from_millis(700));
    tcp_roundtrip(&c, addr("10.244.2.2:7303"), &a).expect("reachable again once the lease is back");

    // Issue 9: an unreadable lease file keeps the lease it held (it once
    // emptied the daemons' whole lease set), and `status` names it.
    std::fs::write(&lease, "{\"PublicIP\": ").expect("corrupt the lease");
    std::thread::sleep(Duration::from_millis(700));
    tcp_roundtrip(&c, addr("10.244.2.2:7305"), &a).expect("the last good lease is kept");
    let status = ok(&["status", &tb.name]);
    assert!(
        status.contains("lease file") && status.contains("10.244.2.0-24"),
        "{status}"
    );
    std::fs::write(&lease, &text).expect("lease back");
}

/// A valid IPv4 header with total length 33 and 13 bytes of a TCP header.
fn ipv4_short_tcp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = ipv4_udp(src, dst, b"")[..20].to_vec();
    p[2..4].copy_from_slice(&33u16.to_be_bytes());
    p[9] = 6;
    p[10..12].fill(0);
    let ck = ip_checksum(&p);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p.extend_from_slice(&[0x1f, 0x90, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50]);
    p
}

/// The checksum of a 20-byte IPv4 header whose checksum field is 0.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet with a correct header checksum.
fn ipv4_udp(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let ck = ip_checksum(&p);
    p[10] = (ck >> 8) as u8;
    p[11] = ck as u8;
    let ulen = 8 + payload.len();
    p.extend_from_slice(&[0x1f, 0x90, 0x1f, 0x90, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    p.extend_from_slice(payload);
    p
}

fn lost(seed: u64) -> Vec<u32> {
    let tb = Testbed::new("loss", &topo("udp", seed, "loss: 10%")).up();
    let got = udp_numbers(
        &tb.ns("pod.default.c"),
        addr("10.244.2.2:7401"),
        &tb.ns("pod.default.a"),
        2000,
    );
    (0..2000).filter(|i| !got.contains(i)).collect()
}

#[test]
fn loss_is_reproducible_from_the_seed() {
    let first = lost(7);
    let second = lost(7);
    let other = lost(8);
    let share = first.len() as f64 / 2000.0;
    assert!((0.07..0.13).contains(&share), "10% loss lost {share}");
    assert_eq!(first, second, "the same seed must lose the same packets");
    assert_ne!(first, other, "another seed must lose other packets");
}

fn rtt(tb: &Testbed) -> Duration {
    let srv = in_netns(&tb.ns("pod.default.c"), || {
        UdpSocket::bind("10.244.2.2:7501")
    })
    .expect("bind");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        srv.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        for _ in 0..20 {
            let Ok((n, from)) = srv.recv_from(&mut buf) else {
                return;
            };
            let _ = srv.send_to(&buf[..n], from);
        }
    });
    let samples = in_netns(&tb.ns("pod.default.a"), || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("socket");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..20u8 {
            let t = Instant::now();
            s.send_to(&[i], "10.244.2.2:7501").expect("send");
            if s.recv_from(&mut buf).is_ok() {
                out.push(t.elapsed());
            }
        }
        out
    });
    let _ = echo.join();
    let mut samples = samples;
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn delay_adds_to_the_round_trip() {
    let base = rtt(&Testbed::new("rtt", &topo("udp", 1, "")).up());
    let delayed = rtt(&Testbed::new("rtt", &topo("udp", 1, "delay: 20ms")).up());
    // The node's link is crossed twice per round trip: out and back.
    let added = delayed.saturating_sub(base);
    assert!(
        added >= Duration::from_millis(38) && added <= Duration::from_millis(55),
        "20 ms each way added {added:?} (base {base:?}, delayed {delayed:?})"
    );
}

#[test]
fn impairments_change_live() {
    let tb = Testbed::new("live", &topo("udp", 1, "")).up();
    ok(&["impair", &tb.name, "node1", "--loss", "100%"]);
    std::thread::sleep(Duration::from_millis(800));
    let got = udp_numbers(
        &tb.ns("pod.default.c"),
        addr("10.244.2.2:7601"),
        &tb.ns("pod.default.a"),
        50,
    );
    assert!(got.is_empty(), "100% loss let {} through", got.len());
    // `up` of the same file again is not a conflict: it says the live
    // impairments stay.
    let again = support::testbed(&["up", tb.file.to_str().expect("path")]);
    let said = String::from_utf8_lossy(&again.stderr).to_string();
    assert_eq!(again.status.code(), Some(0), "{said}");
    assert!(
        said.contains("already up") && said.contains("impairments of node1"),
        "{said}"
    );
    ok(&["impair", &tb.name, "node1", "--clear"]);
    std::thread::sleep(Duration::from_millis(800));
    let got = udp_numbers(
        &tb.ns("pod.default.c"),
        addr("10.244.2.2:7602"),
        &tb.ns("pod.default.a"),
        50,
    );
    assert_eq!(got.len(), 50);
}

#[test]
fn the_kernel_limits_rates_and_refuses_what_it_cannot_do() {
    // A rate alone: tbf on both ends of the host's link, visible to verify.
    let tb = Testbed::new(
        "tbf",
        "
cluster: {overlay: host-gw}
nodes: [{name: node1}]
hosts: [{name: client, link: {rate: 20mbit}}]
",
    )
    .up();
    assert!(ok(&["verify", &tb.name]).contains("matches"));
    let state = ok(&["inspect", &tb.name, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&state).expect("inspect JSON");
    let qdisc = |ns: &str, link: &str| {
        let named = |list: &serde_json::Value, name: &str| {
            list.as_array()
                .and_then(|l| l.iter().find(|x| x["name"] == name))
                .cloned()
                .unwrap_or_default()
        };
        named(&named(&v["namespaces"], ns)["links"], link)["qdisc"].clone()
    };
    assert_eq!(
        qdisc(&tb.ns("host.client"), "eth0"),
        "tbf 20mbit",
        "{state}"
    );
    assert_eq!(qdisc(&tb.ns("fabric"), "h-client"), "tbf 20mbit", "{state}");
    // Through the limit: about 20 Mbit/s from the host to the node.
    let node = tb.ns("node.node1");
    let client = tb.ns("host.client");
    let listener =
        in_netns(&node, || std::net::TcpListener::bind("192.168.96.1:7701")).expect("bind");
    let sink = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let elapsed = in_netns(&client, || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect("192.168.96.1:7701").expect("connect");
        let chunk = vec![7u8; 65536];
        let started = Instant::now();
        for _ in 0..(5_000_000 / 65536) {
            s.write_all(&chunk).expect("write");
        }
        drop(s);
        started.elapsed()
    });
    let bytes = sink.join().expect("sink");
    let mbit = bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    assert!(
        (13.0..27.0).contains(&mbit),
        "20mbit link carried {mbit:.1} Mbit/s"
    );

    // Anything but a rate needs netem. A kernel without it refuses clearly,
    // naming it and the way out, and nothing is left; a kernel with it
    // carries netem on both ends of node1's link, and its delay.
    let tb = Testbed::new("nonet", &topo("host-gw", 1, "delay: 10ms"));
    let out = support::testbed(&["up", tb.file.to_str().expect("path"), "--timeout", "30s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("netem qdisc (sch_netem)") && err.contains("cluster.overlay: udp"),
            "{err}"
        );
        assert_eq!(support::leftovers(&tb.name), Vec::<String>::new());
        return;
    }
    assert!(ok(&["verify", &tb.name]).contains("matches"));
    for (ns, dev) in [(tb.ns("node.node1"), "eth0"), (tb.ns("fabric"), "n-node1")] {
        let tc = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "tc", "qdisc", "show", "dev", dev])
            .output()
            .expect("tc runs");
        let shown = String::from_utf8_lossy(&tc.stdout);
        assert!(
            shown.contains("qdisc netem") && shown.contains("delay 10ms"),
            "{ns} {dev}: {shown}"
        );
    }
    // Each end delays what it sends: 10 ms out and 10 ms back.
    let base = rtt(&Testbed::new("nonet", &topo("host-gw", 1, "")).up());
    let delayed = rtt(&tb);
    let added = delayed.saturating_sub(base);
    assert!(
        added >= Duration::from_millis(19) && added <= Duration::from_millis(32),
        "10 ms each way added {added:?} (base {base:?}, delayed {delayed:?})"
    );
}
