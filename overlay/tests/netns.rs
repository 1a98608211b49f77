//! The UDP overlay daemon between two real network namespaces (root only).
//!
//! Each test builds two "nodes" `ovl-<pid>-<tag>-a` and `-b`, joined by a veth
//! pair (the underlay, 10.200.0.1 and 10.200.0.2), each with a persistent TUN
//! `flannel0` holding its subnet's first address (10.244.1.0 and 10.244.2.0)
//! and the route of the whole network 10.244.0.0/16, and runs a daemon per
//! node in a thread inside the node's namespace. The namespaces are removed
//! by exact name in a `Drop` guard.

use overlay::daemon::{self, DaemonConfig, DaemonError, ImpairSetting, LeaseSource};
use overlay::impair::Impairment;
use overlay::packet;
use overlay::registry::{self, FileStore, LeaseAttrs, SubnetStore};
use overlay::stats::{Stats, StatsSnapshot};
use overlay::Ipv4Net;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NET: &str = "10.244.0.0/16";
const A_PUB: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B_PUB: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const A_TUN: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 0);
const B_TUN: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 0);

/// Returns from the test when not root (a failure under `CI`).
macro_rules! require_root {
    () => {
        if !overlay::require_root(module_path!()) {
            return;
        }
    };
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into namespace `ns`.
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: a valid namespace fd; affects this thread only.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
}

/// Runs `f` in a thread inside `ns` (sockets it makes stay in `ns`).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap()
}

/// A namespace, deleted by name on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

type Leases = Arc<Mutex<Vec<(Ipv4Net, Ipv4Addr)>>>;

struct Daemon {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), DaemonError>>>,
    stats: Arc<Stats>,
}

impl Daemon {
    fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn shutdown(&mut self) -> Result<(), DaemonError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Options of one daemon.
#[derive(Clone)]
struct Opts {
    egress: Option<ImpairSetting>,
    impair_file: Option<PathBuf>,
    workers: usize,
    offload: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            egress: None,
            impair_file: None,
            workers: 2,
            offload: true,
        }
    }
}

/// Two nodes. Field order matters: daemons stop before the namespaces go.
struct Pair {
    da: Option<Daemon>,
    db: Option<Daemon>,
    leases: Leases,
    a: String,
    b: String,
    /// A private directory (removed on drop) for stats and registry files.
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    _nb: Netns,
    _na: Netns,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl Pair {
    /// Two nodes with the underlay and TUNs set up, no daemon yet; the lease
    /// list holds both nodes.
    fn new(tag: &str) -> Pair {
        let id = format!(
            "ovl-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst),
            tag
        );
        let (a, b) = (format!("{id}-a"), format!("{id}-b"));
        ip(&["netns", "add", &a]);
        let na = Netns(a.clone());
        ip(&["netns", "add", &b]);
        let nb = Netns(b.clone());
        ip(&[
            "-n", &a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b,
        ]);
        for (ns, dev, addr, tun) in [(&a, "va", A_PUB, A_TUN), (&b, "vb", B_PUB, B_TUN)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            in_ns(ns, || overlay::tun::create_persistent("flannel0")).unwrap();
            ip(&["-n", ns, "link", "set", "flannel0", "mtu", "1472", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{tun}/32"),
                "dev",
                "flannel0",
            ]);
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                NET,
                "dev",
                "flannel0",
                "src",
                &tun.to_string(),
            ]);
        }
        let tmp = tempfile::Builder::new().prefix(&id).tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Pair {
            da: None,
            db: None,
            leases: Arc::new(Mutex::new(vec![
                (net("10.244.1.0/24"), A_PUB),
                (net("10.244.2.0/24"), B_PUB),
            ])),
            a,
            b,
            dir,
            _tmp: tmp,
            _nb: nb,
            _na: na,
        }
    }

    fn start(&self, node: char, opts: Opts) -> Daemon {
        // The port of a daemon just stopped can still be held for a moment
        // by a child another test thread is forking (it holds copies of
        // every descriptor until it executes): try again briefly.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let leases = self.leases.clone();
            let source: LeaseSource = Box::new(move || leases.lock().unwrap().clone().into());
            match self.try_start_with(node, opts.clone(), source) {
                Ok(d) => return d,
                Err(e) if e.contains("AddrInUse") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("daemon ended: {e}"),
            }
        }
    }

    /// Starts node `node`'s daemon with its own lease source.
    fn start_with(&self, node: char, opts: Opts, leases: LeaseSource) -> Daemon {
        self.try_start_with(node, opts, leases)
            .unwrap_or_else(|e| panic!("daemon ended: {e}"))
    }

    /// Starts node `node`'s daemon; the error of one that ends at once.
    fn try_start_with(
        &self,
        node: char,
        opts: Opts,
        leases: LeaseSource,
    ) -> Result<Daemon, String> {
        let (ns, public, subnet) = match node {
            'a' => (self.a.clone(), A_PUB, net("10.244.1.0/24")),
            _ => (self.b.clone(), B_PUB, net("10.244.2.0/24")),
        };
        let stats_file = self.dir.join(format!(
            "{node}-{}.stats.json",
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let cfg = DaemonConfig {
            tun: "flannel0".into(),
            bind: SocketAddrV4::new(public, daemon::DEFAULT_PORT),
            network: net(NET),
            own_subnet: subnet,
            leases,
            impair_egress: opts.egress,
            impair_ingress: None,
            impair_file: opts.impair_file,
            stats_file: Some(stats_file.clone()),
            workers: opts.workers,
        };
        let run_opts = daemon::RunOptions {
            offload: opts.offload,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::new(8));
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            enter(&ns);
            daemon::run_with_options(cfg, &stop2, stats2, run_opts)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stats_file.exists() {
            if thread.is_finished() {
                return Err(format!("{:?}", thread.join().unwrap().err()));
            }
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Daemon {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    fn start_both(&mut self) {
        self.start_both_with(true);
    }

    fn start_both_with(&mut self, offload: bool) {
        let opts = Opts {
            offload,
            ..Opts::default()
        };
        self.da = Some(self.start('a', opts.clone()));
        self.db = Some(self.start('b', opts));
    }

    fn da(&self) -> &Daemon {
        self.da.as_ref().unwrap()
    }
    fn db(&self) -> &Daemon {
        self.db.as_ref().unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        drop(self.da.take());
        drop(self.db.take());
    }
}

fn udp_in(ns: &str, bind: SocketAddrV4) -> UdpSocket {
    in_ns(ns, move || UdpSocket::bind(bind).unwrap())
}

/// Receives datagrams on `s` in a thread until none came for `idle`.
fn collect(s: UdpSocket, idle: Duration) -> JoinHandle<Vec<Vec<u8>>> {
    s.set_read_timeout(Some(idle)).unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    })
}

fn tcp_listener_in(ns: &str, bind: SocketAddrV4) -> TcpListener {
    in_ns(ns, move || TcpListener::bind(bind).unwrap())
}

fn tcp_connect_in(ns: &str, to: SocketAddrV4, timeout: Duration) -> std::io::Result<TcpStream> {
    in_ns(ns, move || {
        TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)
    })
}

/// Sends `bytes` over TCP from node a to node b; returns the rate in Gbit/s.
fn tcp_transfer(p: &Pair, port: u16, bytes: usize) -> f64 {
    let l = tcp_listener_in(&p.b, SocketAddrV4::new(B_TUN, port));
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        let mut sum = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                sum = sum.wrapping_add(u64::from(*b) * ((total + i) as u64 % 7 + 1));
            }
            total += n;
        }
        s.write_all(&(total as u64).to_be_bytes()).unwrap();
        s.write_all(&sum.to_be_bytes()).unwrap();
        (total, sum)
    });
    let mut c =
        tcp_connect_in(&p.a, SocketAddrV4::new(B_TUN, port), Duration::from_secs(3)).unwrap();
    let chunk: Vec<u8> = (0..256 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let mut expect_sum = 0u64;
    let mut sent = 0usize;
    let start = Instant::now();
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        c.write_all(&chunk[..n]).unwrap();
        for (i, b) in chunk[..n].iter().enumerate() {
            expect_sum = expect_sum.wrapping_add(u64::from(*b) * ((sent + i) as u64 % 7 + 1));
        }
        sent += n;
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = [0u8; 16];
    c.read_exact(&mut reply).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let (total, sum) = server.join().unwrap();
    assert_eq!(total, bytes);
    assert_eq!(sum, expect_sum, "the bytes arrived intact and in order");
    assert_eq!(
        u64::from_be_bytes(reply[..8].try_into().unwrap()),
        bytes as u64
    );
    bytes as f64 * 8.0 / secs / 1e9
}

#[test]
fn tcp_and_udp_cross_the_overlay() {
    traffic(true);
}

#[test]
fn tcp_and_udp_cross_the_overlay_without_offloads() {
    traffic(false);
}

fn traffic(offload: bool) {
    require_root!();
    let mut p = Pair::new(if offload { "traffic" } else { "plain" });
    p.start_both_with(offload);
    // TCP both ways: 64 MiB a -> b, and a small echo b -> a.
    let gbps = tcp_transfer(&p, 5001, 64 << 20);
    eprintln!("TCP a -> b over the overlay: {gbps:.2} Gbit/s");
    let l = tcp_listener_in(&p.a, SocketAddrV4::new(A_TUN, 5002));
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let mut c =
        tcp_connect_in(&p.b, SocketAddrV4::new(A_TUN, 5002), Duration::from_secs(3)).unwrap();
    c.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    t.join().unwrap();

    // UDP: 200 datagrams of several sizes a -> b, all arrive intact.
    let rx = collect(
        udp_in(&p.b, SocketAddrV4::new(B_TUN, 5003)),
        Duration::from_millis(500),
    );
    let tx = udp_in(&p.a, SocketAddrV4::new(A_TUN, 0));
    for i in 0..200u32 {
        let len = [4usize, 100, 1000, 1444][i as usize % 4];
        let mut msg = vec![(i % 251) as u8; len];
        msg[..4].copy_from_slice(&i.to_be_bytes());
        tx.send_to(&msg, SocketAddrV4::new(B_TUN, 5003)).unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut seen = [false; 200];
    for d in rx.join().unwrap() {
        let i = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
        assert_eq!(d.len(), [4usize, 100, 1000, 1444][i % 4]);
        assert!(d[4..].iter().all(|&x| x == (i % 251) as u8));
        assert!(!seen[i], "datagram {i} twice");
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s));

    // Let the stats files catch up, then check both views.
    std::thread::sleep(Duration::from_millis(600));
    let (sa, sb) = (p.da().snapshot(), p.db().snapshot());
    assert!(sa.tun_to_udp.packets >= 200 + (64 << 20) / 1432);
    assert!(sb.udp_to_tun.packets >= 200 + (64 << 20) / 1432);
    assert_eq!(
        sb.drops.foreign_source + sb.drops.malformed + sb.drops.send_error,
        0
    );
    assert_eq!(sa.drops.send_error + sa.drops.tun_write_error, 0);
    assert_eq!(sa.leases, 2);
    eprintln!(
        "a: {} packets in {} sendmmsg calls ({:.1}/call), {} TUN reads; b: {} packets in {} recvmmsg calls ({:.1}/call)",
        sa.tun_to_udp.packets,
        sa.udp_send_calls,
        sa.tun_to_udp.packets as f64 / sa.udp_send_calls.max(1) as f64,
        sa.tun_reads,
        sb.udp_to_tun.packets,
        sb.udp_recv_calls,
        sb.udp_to_tun.packets as f64 / sb.udp_recv_calls.max(1) as f64,
    );
    // The stats file holds the same kind of snapshot.
    let file = std::fs::read_dir(&p.dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("b-"))
        .unwrap()
        .path();
    let from_file: StatsSnapshot =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(from_file.udp_to_tun.packets > 0);
    assert_eq!(from_file.workers, 2);
    assert_eq!(from_file.offload, offload);
}

#[test]
fn unleased_address_gets_icmp_unreachable_quickly() {
    require_root!();
    let mut p = Pair::new("unreach");
    p.start_both();
    let start = Instant::now();
    let err = tcp_connect_in(
        &p.a,
        SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 1), 80),
        Duration::from_secs(3),
    )
    .expect_err("no lease covers 10.244.9.1");
    let took = start.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    // A UDP socket with IP_RECVERR sees the error too.
    let s = udp_in(&p.a, SocketAddrV4::new(A_TUN, 0));
    let on: libc::c_int = 1;
    // SAFETY: a c_int option.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            (&on as *const libc::c_int).cast(),
            4,
        )
    };
    s.connect(SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 1), 53))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send(b"x").unwrap();
    let mut buf = [0u8; 16];
    let e = s.recv(&mut buf).expect_err("an ICMP error, not data");
    assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
    // (The counters are updated just after the ICMP is written.)
    std::thread::sleep(Duration::from_millis(50));
    let sa = p.da().snapshot();
    assert!(
        sa.drops.no_route >= 2 && sa.icmp_unreachable_sent >= 2,
        "{sa:?}"
    );
}

/// A valid inner UDP packet 10.244.1.0:4000 -> 10.244.2.0:port (checksum 0).
fn inner_udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&4000u16.to_be_bytes());
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut out = vec![0u8; 20 + udp.len()];
    packet::build_ipv4(&mut out, A_TUN, B_TUN, packet::PROTO_UDP, 64, &udp).unwrap();
    out
}

#[test]
fn foreign_sources_and_malformed_datagrams_are_dropped_and_counted() {
    require_root!();
    let mut p = Pair::new("hostile");
    ip(&["-n", &p.a, "addr", "add", "10.200.0.3/24", "dev", "va"]);
    p.start_both();
    let rx = udp_in(&p.b, SocketAddrV4::new(B_TUN, 5010));
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let b_daemon = SocketAddrV4::new(B_PUB, daemon::DEFAULT_PORT);

    // From an address that holds no lease: dropped, counted.
    let foreign = udp_in(&p.a, SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 3), 0));
    foreign
        .send_to(&inner_udp(5010, b"spoofed"), b_daemon)
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        rx.recv(&mut buf).is_err(),
        "a foreign datagram was delivered"
    );
    assert_eq!(p.db().snapshot().drops.foreign_source, 1);
    // The same datagram from a lease holder's address is delivered.
    let holder = udp_in(&p.a, SocketAddrV4::new(A_PUB, 0));
    holder
        .send_to(&inner_udp(5010, b"genuine"), b_daemon)
        .unwrap();
    let n = recv_retrying(&rx, &mut buf);
    assert_eq!(&buf[..n], b"genuine");

    // Random datagrams from the lease holder's address while TCP runs.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let noise = std::thread::spawn(move || {
        let mut s = 0x0123_4567_89ab_cdefu64;
        let mut sent = 0u64;
        let mut buf = [0u8; 1500];
        while !stop2.load(Ordering::Relaxed) && sent < 20_000 {
            for _ in 0..50 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let len = (s % 1500) as usize;
                for b in buf[..len].iter_mut() {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    *b = s as u8;
                }
                // Every fourth looks like IPv4 to get past the first check.
                if sent % 4 == 0 && len > 0 {
                    buf[0] = 0x45;
                }
                holder.send_to(&buf[..len], b_daemon).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        sent
    });
    let gbps = tcp_transfer(&p, 5011, 16 << 20);
    stop.store(true, Ordering::Relaxed);
    let sent = noise.join().unwrap();
    eprintln!("TCP under {sent} malformed datagrams: {gbps:.2} Gbit/s");
    std::thread::sleep(Duration::from_millis(100));
    let sb = p.db().snapshot();
    assert_eq!(
        sb.drops.malformed + sb.drops.wrong_destination,
        sent,
        "{sb:?}"
    );
    assert_eq!(sb.drops.foreign_source, 1);
}

#[test]
fn a_lease_added_later_becomes_reachable() {
    require_root!();
    let mut p = Pair::new("late");
    p.leases.lock().unwrap().retain(|(_, ip)| *ip == A_PUB);
    p.start_both();
    let to = SocketAddrV4::new(B_TUN, 5020);
    let l = tcp_listener_in(&p.b, to);
    let err = tcp_connect_in(&p.a, to, Duration::from_secs(2)).expect_err("no lease for b yet");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH));
    p.leases.lock().unwrap().push((net("10.244.2.0/24"), B_PUB));
    let added = Instant::now();
    let c = loop {
        match tcp_connect_in(&p.a, to, Duration::from_secs(2)) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    added.elapsed() < Duration::from_secs(2),
                    "still unreachable: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    eprintln!("reachable {:?} after the lease was added", added.elapsed());
    drop(c);
    drop(l);
    // And gone again when the lease goes.
    p.leases.lock().unwrap().retain(|(_, ip)| *ip == A_PUB);
    std::thread::sleep(Duration::from_millis(400));
    let err = tcp_connect_in(&p.a, to, Duration::from_secs(2)).expect_err("lease gone");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH));
}

/// The packet that stopped the overlay (issue 9): a valid IPv4 header for
/// b's subnet with total length 33, so 13 bytes of TCP header.
fn short_tcp() -> Vec<u8> {
    let mut tcp = [0u8; 13];
    tcp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5099u16.to_be_bytes());
    tcp[12] = 0x50;
    let mut out = vec![0u8; 33];
    packet::build_ipv4(&mut out, A_TUN, B_TUN, packet::PROTO_TCP, 64, &tcp).unwrap();
    out
}

/// Issue 9, defect 2: a 33-byte TCP packet from a lease holder panicked
/// b's receive workers (the coalescer read the flags byte after checking
/// only the data offset's), and traffic a -> b stopped while the daemon
/// lived on. Sent from many source ports, so that every worker's socket
/// gets one; the daemon must go on and carry a transfer.
#[test]
fn a_short_tcp_packet_from_a_lease_holder_does_not_stop_traffic() {
    require_root!();
    let mut p = Pair::new("short");
    p.start_both();
    let b_daemon = SocketAddrV4::new(B_PUB, daemon::DEFAULT_PORT);
    let pkt = short_tcp();
    let before = p.db().snapshot();
    for _ in 0..32 {
        let s = udp_in(&p.a, SocketAddrV4::new(A_PUB, 0));
        for _ in 0..4 {
            s.send_to(&pkt, b_daemon).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.db().running(), "b's daemon ended");
    let gbps = tcp_transfer(&p, 5060, 8 << 20);
    eprintln!("TCP after 128 short TCP packets: {gbps:.2} Gbit/s");
    let after = p.db().snapshot();
    assert!(after.udp_to_tun.packets >= before.udp_to_tun.packets + 128);
    assert!(p.db().running());
}

/// A panic in a thread of the daemon (here the control thread, in the
/// lease source it calls every 200 ms, which panics on its 5th call) ends
/// the daemon promptly with the panic as its error; its threads have all
/// ended (`run` returns only then: its sockets and queues are closed, so a
/// new daemon can bind the same port and attach the same device at once),
/// and the new one carries traffic.
#[test]
fn a_panicking_thread_ends_the_daemon_and_it_can_start_again() {
    require_root!();
    let mut p = Pair::new("panic");
    p.db = Some(p.start('b', Opts::default()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (leases, counter) = (p.leases.clone(), calls.clone());
    let mut d = p.start_with(
        'a',
        Opts::default(),
        Box::new(move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 4 {
                panic!("lease source failed");
            }
            leases.lock().unwrap().clone().into()
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while d.running() {
        assert!(Instant::now() < deadline, "the daemon did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ended = Instant::now();
    match d.shutdown() {
        Err(DaemonError::Panicked { thread, message }) => {
            assert_eq!(thread, "ovl-control");
            assert_eq!(message, "lease source failed");
        }
        other => panic!("expected the panic, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // Started again, as the supervisor would.
    p.da = Some(p.start('a', Opts::default()));
    eprintln!("restarted {:?} after the panic", ended.elapsed());
    tcp_transfer(&p, 5061, 1 << 20);
}

/// Issue 9, defect 8: a lease file that becomes unreadable keeps the lease
/// it held (traffic to that node goes on) and is reported in the daemon's
/// stats; once removed, the lease goes.
#[test]
fn an_unreadable_lease_file_keeps_its_lease_and_is_reported() {
    require_root!();
    let mut p = Pair::new("badlease");
    let store = FileStore::new(p.dir.join("registry"));
    for (subnet, ip) in [("10.244.1.0/24", A_PUB), ("10.244.2.0/24", B_PUB)] {
        let attrs = LeaseAttrs {
            public_ip: ip,
            backend_type: "udp".into(),
            backend_data: serde_json::Value::Null,
        };
        store.put_lease(net(subnet), &attrs).unwrap();
    }
    let source = |store: &FileStore| -> LeaseSource {
        let store = store.clone();
        Box::new(registry::udp_leases(move || store.scan()))
    };
    p.da = Some(p.start_with('a', Opts::default(), source(&store)));
    p.db = Some(p.start_with('b', Opts::default(), source(&store)));
    tcp_transfer(&p, 5070, 1 << 20);
    let b_file = p.dir.join("registry/subnets/10.244.2.0-24");
    std::fs::write(&b_file, "{\"PublicIP\": ").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sa = p.da().snapshot();
    assert_eq!(sa.leases, 2, "{sa:?}");
    assert_eq!(sa.bad_leases.len(), 1, "{sa:?}");
    assert_eq!(sa.bad_leases[0].file, b_file.display().to_string());
    tcp_transfer(&p, 5071, 1 << 20);
    // Removed: the lease goes, and so does the report.
    std::fs::remove_file(&b_file).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sa = p.da().snapshot();
    assert_eq!((sa.leases, sa.bad_leases.len()), (1, 0), "{sa:?}");
}

/// Sends `count` numbered datagrams a -> b; returns the numbers that arrived.
fn numbered_run(p: &Pair, port: u16, count: u32) -> Vec<u32> {
    let rx = collect(
        udp_in(&p.b, SocketAddrV4::new(B_TUN, port)),
        Duration::from_millis(300),
    );
    let tx = udp_in(&p.a, SocketAddrV4::new(A_TUN, 0));
    for i in 0..count {
        tx.send_to(&i.to_be_bytes(), SocketAddrV4::new(B_TUN, port))
            .unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let mut got: Vec<u32> = rx
        .join()
        .unwrap()
        .iter()
        .map(|d| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    got.sort_unstable();
    got
}

#[test]
fn seeded_loss_loses_the_same_packets_every_run() {
    require_root!();
    let mut p = Pair::new("loss");
    p.db = Some(p.start('b', Opts::default()));
    let loss = Impairment {
        loss_ppm: 100_000,
        ..Default::default()
    };
    let run = |seed: u64, port: u16| {
        let mut d = p.start(
            'a',
            Opts {
                egress: Some((loss.clone(), seed, 7)),
                ..Default::default()
            },
        );
        let got = numbered_run(&p, port, 1000);
        let snap = d.snapshot();
        d.shutdown().unwrap();
        assert_eq!(
            snap.drops.impaired_loss as usize,
            1000 - got.len(),
            "{snap:?}"
        );
        let lost: Vec<u32> = (0..1000)
            .filter(|i| got.binary_search(i).is_err())
            .collect();
        lost
    };
    let first = run(42, 5030);
    let second = run(42, 5031);
    let other = run(43, 5032);
    eprintln!(
        "seed 42 lost {} of 1000: {:?}...",
        first.len(),
        &first[..10.min(first.len())]
    );
    assert!((50..=150).contains(&first.len()), "lost {}", first.len());
    assert_eq!(first, second, "the same seed loses the same packets");
    assert_ne!(first, other, "another seed loses other packets");
}

/// Round trip of a small UDP echo b <- a, in microseconds (median of 20).
fn udp_rtt_us(p: &Pair, port: u16) -> u64 {
    let echo = udp_in(&p.b, SocketAddrV4::new(B_TUN, port));
    echo.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                echo.send_to(&buf[..n], from).unwrap();
            }
        }
    });
    let c = udp_in(&p.a, SocketAddrV4::new(A_TUN, 0));
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..20u32 {
        let start = Instant::now();
        c.send_to(&i.to_be_bytes(), SocketAddrV4::new(B_TUN, port))
            .unwrap();
        loop {
            let n = recv_retrying(&c, &mut buf);
            if n == 4 && buf[..4] == i.to_be_bytes() {
                break;
            }
        }
        rtts.push(start.elapsed().as_micros() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    rtts.sort_unstable();
    rtts[rtts.len() / 2]
}

#[test]
fn delay_set_live_through_the_impair_file_adds_to_the_rtt() {
    require_root!();
    let mut p = Pair::new("delay");
    let file = p.dir.join("a.impair.json");
    p.db = Some(p.start('b', Opts::default()));
    p.da = Some(p.start(
        'a',
        Opts {
            egress: Some((Impairment::default(), 1, 0)),
            impair_file: Some(file.clone()),
            ..Default::default()
        },
    ));
    let base = udp_rtt_us(&p, 5040);
    std::fs::write(
        &file,
        r#"{"egress": {"delayUs": 20000}, "ingress": {"delayUs": 5000}}"#,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let delayed = udp_rtt_us(&p, 5041);
    eprintln!("median RTT {base} us without delay, {delayed} us with 20 ms + 5 ms");
    assert!(base < 5_000, "base RTT {base} us");
    assert!(
        (25_000..40_000).contains(&delayed),
        "RTT {delayed} us with 25 ms of delay"
    );
    assert!(p.da().snapshot().delayed >= 40);
    // Removing the file clears the impairments.
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let after = udp_rtt_us(&p, 5042);
    assert!(after < 5_000, "RTT {after} us after clearing");
}

/// Not a test: TCP throughput a -> b for 3 s with one or four streams
/// (`cargo test --release -p overlay --test netns throughput -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a test: run by hand with --ignored --nocapture (bench/overlay.py is the benchmark)"]
fn throughput() {
    require_root!();
    for offload in [false, true] {
        throughput_mode(offload);
    }
    // The kernel's vxlan between the same kind of namespaces, as reference.
    let p = Pair::new("vxlan");
    for (ns, dev, local, remote, addr) in [
        (&p.a, "va", A_PUB, B_PUB, "10.245.0.1/24"),
        (&p.b, "vb", B_PUB, A_PUB, "10.245.0.2/24"),
    ] {
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "4789",
            "local",
            &local.to_string(),
            "remote",
            &remote.to_string(),
            "dev",
            dev,
        ]);
        ip(&["-n", ns, "link", "set", "vx0", "mtu", "1450", "up"]);
        ip(&["-n", ns, "addr", "add", addr, "dev", "vx0"]);
    }
    let dst = Ipv4Addr::new(10, 245, 0, 2);
    for streams in [1usize, 4] {
        let gbps = tcp_streams(
            &p,
            dst,
            5300 + 10 * streams as u16,
            streams,
            Duration::from_secs(3),
        );
        eprintln!("vxlan, {streams} stream(s): {gbps:.2} Gbit/s");
    }
}

/// `streams` TCP streams a -> `dst` for `dur`; the total rate in Gbit/s.
fn tcp_streams(p: &Pair, dst: Ipv4Addr, port0: u16, streams: usize, dur: Duration) -> f64 {
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for k in 0..streams {
        let port = port0 + k as u16;
        let l = tcp_listener_in(&p.b, SocketAddrV4::new(dst, port));
        servers.push(std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        }));
        let mut c =
            tcp_connect_in(&p.a, SocketAddrV4::new(dst, port), Duration::from_secs(3)).unwrap();
        clients.push(std::thread::spawn(move || {
            let buf = vec![7u8; 1 << 20];
            let start = Instant::now();
            while start.elapsed() < dur {
                c.write_all(&buf).unwrap();
            }
            drop(c);
            start.elapsed()
        }));
    }
    let secs = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .max()
        .unwrap()
        .as_secs_f64();
    let total: u64 = servers.into_iter().map(|s| s.join().unwrap()).sum();
    total as f64 * 8.0 / secs / 1e9
}

/// UDP receive-buffer errors in namespace `ns` (/proc/net/snmp).
fn udp_rcvbuf_errors(ns: &str) -> u64 {
    let text = in_ns(ns, || {
        std::fs::read_to_string("/proc/self/net/snmp").unwrap()
    });
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}

fn throughput_mode(offload: bool) {
    let mut p = Pair::new("speed");
    p.start_both_with(offload);
    for streams in [1usize, 4] {
        let before = (p.da().snapshot(), p.db().snapshot());
        let errs = (udp_rcvbuf_errors(&p.a), udp_rcvbuf_errors(&p.b));
        let gbps = tcp_streams(
            &p,
            B_TUN,
            5100 + 10 * streams as u16,
            streams,
            Duration::from_secs(3),
        );
        let errs = (
            udp_rcvbuf_errors(&p.a) - errs.0,
            udp_rcvbuf_errors(&p.b) - errs.1,
        );
        let (a, b) = (p.da().snapshot(), p.db().snapshot());
        let pk = a.tun_to_udp.packets - before.0.tun_to_udp.packets;
        eprintln!(
            "offload {offload}, {streams} stream(s): {gbps:.2} Gbit/s; a sent {pk} datagrams in {} sendmmsg ({:.1}/call); b: {} recvmmsg ({:.1}/call); UDP rcvbuf errors a {} b {}; drops a {} b {}",
            a.udp_send_calls - before.0.udp_send_calls,
            pk as f64 / (a.udp_send_calls - before.0.udp_send_calls).max(1) as f64,
            b.udp_recv_calls - before.1.udp_recv_calls,
            (b.udp_to_tun.packets - before.1.udp_to_tun.packets) as f64
                / (b.udp_recv_calls - before.1.udp_recv_calls).max(1) as f64,
            errs.0,
            errs.1,
            a.drops.total() - a.drops.tun_not_ipv4,
            b.drops.total() - b.drops.tun_not_ipv4,
        );
    }
}

/// `recv` that goes on after a signal: a socket with a read timeout
/// returns EINTR for any handled signal, even with SA_RESTART (the test
/// process shares its signals with everything it runs).
fn recv_retrying(s: &std::net::UdpSocket, buf: &mut [u8]) -> usize {
    loop {
        match s.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.unwrap(),
        }
    }
}

/// The standalone `overlayd`, a process in a node's namespace, ended with
/// SIGTERM (by pid) on drop.
struct Overlayd(std::process::Child);

impl Overlayd {
    /// Starts it in `ns` for `subnet` behind `public`, reading the flannel
    /// lease files under `leases`, writing its counters to `stats`, and
    /// waits for its first counters.
    fn start(
        ns: &str,
        public: Ipv4Addr,
        subnet: &str,
        leases: &std::path::Path,
        stats: &std::path::Path,
    ) -> Overlayd {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_overlayd")])
            .args(["--public-ip", &public.to_string(), "--network", NET])
            .args(["--subnet", subnet, "--workers", "1"])
            .arg("--leases-dir")
            .arg(leases)
            .arg("--stats")
            .arg(stats)
            .spawn()
            .expect("starting overlayd");
        let mut d = Overlayd(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stats.exists() {
            assert!(
                d.0.try_wait().unwrap().is_none(),
                "overlayd in {ns} ended at once"
            );
            assert!(Instant::now() < deadline, "overlayd in {ns} did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Ends it with SIGTERM; its exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.0.id()).expect("a pid");
        // SAFETY: signals our own child, which is not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.0.wait().expect("waiting for overlayd")
    }
}

impl Drop for Overlayd {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// The `overlayd` binary on its own: started in each node's namespace with
/// a directory of flannel-layout lease files (`subnets/<net>-<len>`), it
/// carries datagrams between the nodes' overlay addresses, ends cleanly on
/// SIGTERM (exit 0), and refuses a subnet outside its network (exit 2).
#[test]
fn the_overlayd_binary_carries_traffic_from_lease_files() {
    require_root!();
    let p = Pair::new("bin");
    let leases = p.dir.join("registry");
    std::fs::create_dir_all(leases.join("subnets")).unwrap();
    for (file, public) in [("10.244.1.0-24", A_PUB), ("10.244.2.0-24", B_PUB)] {
        let lease = format!(r#"{{"PublicIP":"{public}","BackendType":"udp","BackendData":null}}"#);
        std::fs::write(leases.join("subnets").join(file), lease).unwrap();
    }
    let a_stats = p.dir.join("a.json");
    let b_stats = p.dir.join("b.json");
    let mut da = Overlayd::start(&p.a, A_PUB, "10.244.1.0/24", &leases, &a_stats);
    let mut db = Overlayd::start(&p.b, B_PUB, "10.244.2.0/24", &leases, &b_stats);
    // Leases are read every 200 ms: the first datagrams may find none yet.
    let rx = collect(
        udp_in(&p.b, SocketAddrV4::new(B_TUN, 5101)),
        Duration::from_millis(800),
    );
    let tx = udp_in(&p.a, SocketAddrV4::new(A_TUN, 0));
    for _ in 0..50 {
        let _ = tx.send_to(b"through overlayd", SocketAddrV4::new(B_TUN, 5101));
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = rx.join().unwrap();
    assert!(
        got.iter().any(|d| d == b"through overlayd"),
        "no datagram crossed ({} received)",
        got.len()
    );
    assert!(da.stop().success(), "overlayd a did not end cleanly");
    assert!(db.stop().success(), "overlayd b did not end cleanly");
    let bad = Command::new(env!("CARGO_BIN_EXE_overlayd"))
        .args(["--public-ip", "10.200.0.1", "--network", NET])
        .args(["--subnet", "10.99.0.0/24"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not inside --network"));
}
