//! The etcd subnet store against a real etcd (root only): each test starts
//! Debian's `etcd` (package `etcd-server`) in a network namespace of its own
//! (`etcd-<pid>-<tag>`, loopback only, data in a private temporary
//! directory) and talks to it from a thread inside that namespace. The
//! server is killed by pid and the namespace deleted by name on drop.
#![cfg(feature = "etcd")]

use overlay::etcd::{EtcdError, EtcdStore, LeaseEvent, LeaseView, LeaseWatch, DEFAULT_PREFIX};
use overlay::network::{Backend, NetworkConfig};
use overlay::registry::{LeaseAttrs, RegistryError, SubnetStore};
use overlay::Ipv4Net;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT_URL: &str = "http://127.0.0.1:2379";
/// A second address of the same server, for a client whose path a test cuts.
const SIDE_URL: &str = "http://127.0.0.2:2379";
const TIMEOUT: Duration = Duration::from_secs(3);

/// Returns from the test when not root or without etcd (failures under `CI`).
macro_rules! require_etcd {
    () => {
        if !overlay::require_root(module_path!()) || !etcd_installed(module_path!()) {
            return;
        }
    };
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether `etcd` and `etcdctl` are installed; under `CI` their absence fails.
fn etcd_installed(test: &str) -> bool {
    let found = [("etcd", "--version"), ("etcdctl", "version")]
        .iter()
        .all(|(b, arg)| {
            Command::new(b)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    assert!(
        found || !ci(),
        "{test} needs etcd and etcdctl: apt-get install etcd-server etcd-client"
    );
    if !found {
        eprintln!("skipped {test}: etcd not installed (apt-get install etcd-server etcd-client)");
    }
    found
}

/// An etcd server alone in a namespace of its own.
struct Etcd {
    ns: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Etcd {
    /// Creates the namespace and starts etcd in it; waits until it answers.
    fn start(tag: &str) -> Etcd {
        let ns = format!("etcd-{}-{tag}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &ns]);
        let mut e = Etcd {
            ns,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        run("ip", &["-n", &e.ns, "link", "set", "lo", "up"]);
        e.spawn();
        e
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (or restarts) the server on the same data.
    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let data = self.data_dir();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "etcd",
                "--name",
                "t",
                "--data-dir",
            ])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("{CLIENT_URL},{SIDE_URL}"),
                "--advertise-client-urls",
                CLIENT_URL,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "t=http://127.0.0.1:2380",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ctl(&["endpoint", "health"]).0 {
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (by pid), keeping its data.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Runs `etcdctl` (v3 API) inside the namespace: success and stdout.
    fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "etcdctl",
                "--endpoints",
                CLIENT_URL,
            ])
            .args(["--command-timeout", "2s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Cuts (or restores) the path to [`SIDE_URL`]: TCP resets both ways.
    fn cut_side(&self, cut: bool) {
        let nft = |cmd: &str| run("ip", &["netns", "exec", &self.ns, "nft", cmd]);
        if !cut {
            return nft("delete table ip cut");
        }
        nft("add table ip cut");
        nft("add chain ip cut out { type filter hook output priority 0 ; }");
        nft("add rule ip cut out ip daddr 127.0.0.2 tcp dport 2379 reject with tcp reset");
        nft("add rule ip cut out ip saddr 127.0.0.2 tcp sport 2379 reject with tcp reset");
    }

    /// Runs `f` in a thread inside the namespace (a store it connects talks
    /// to etcd from there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.ns)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: a valid namespace fd; it moves this thread only.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn connect() -> EtcdStore {
    EtcdStore::connect(&[CLIENT_URL.to_string()], DEFAULT_PREFIX, TIMEOUT).unwrap()
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn attrs(ip: [u8; 4]) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: Ipv4Addr::from(ip),
        backend_type: "udp".into(),
        backend_data: serde_json::Value::Null,
    }
}

fn subnets(store: &EtcdStore) -> Vec<Ipv4Net> {
    store.leases().unwrap().iter().map(|l| l.subnet).collect()
}

/// Waits up to `within` for `cond`.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// Reads events into `view` until `cond` holds on it (at most `within`).
fn follow_until(
    w: &mut LeaseWatch,
    view: &mut LeaseView,
    within: Duration,
    cond: impl Fn(&LeaseView) -> bool,
) -> Vec<LeaseEvent> {
    let end = Instant::now() + within;
    let mut seen = Vec::new();
    while !cond(view) {
        let left = end.saturating_duration_since(Instant::now());
        match w.recv_timeout(left) {
            Ok(ev) => {
                view.apply(ev.clone());
                seen.push(ev);
            }
            Err(e) => panic!("{e:?}: the view is {:?} after {seen:?}", view.scan()),
        }
    }
    seen
}

fn view_subnets(v: &LeaseView) -> Vec<Ipv4Net> {
    v.scan().leases.iter().map(|l| l.subnet).collect()
}

/// The configuration is stored as flannel reads it and read back.
#[test]
fn config_round_trip_and_flannel_layout() {
    require_etcd!();
    let etcd = Etcd::start("layout");
    let cfg = NetworkConfig::new(net("10.244.0.0/16"), 24, Backend::Vxlan).unwrap();
    let c = cfg.clone();
    etcd.run(move || {
        let s = connect();
        s.set_network_config(&c).unwrap();
        assert_eq!(s.network_config().unwrap(), c);
        let mut vx = attrs([10, 0, 0, 1]);
        vx.backend_type = "vxlan".into();
        vx.backend_data = serde_json::json!({"VNI": 1, "VtepMAC": "02:00:00:00:00:01"});
        s.put_lease(net("10.244.1.0/24"), &vx).unwrap();
        std::mem::forget(s); // keeps the lease: etcdctl looks after it
    });
    let (ok, out) = etcd.ctl(&["get", "--prefix", "/coreos.com/network"]);
    assert!(ok, "{}", etcd.log());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "/coreos.com/network/config",
            r#"{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.254.0","Backend":{"Type":"vxlan"}}"#,
            "/coreos.com/network/subnets/10.244.1.0-24",
            r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#,
        ]
    );
    // The lease is bound to an etcd lease with the TTL (flannel's 24 h).
    let (_, json) = etcd.ctl(&[
        "get",
        "/coreos.com/network/subnets/10.244.1.0-24",
        "-w",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let id = v["kvs"][0]["lease"].as_i64().unwrap();
    assert_ne!(id, 0, "bound to an etcd lease");
    let (_, ttl) = etcd.ctl(&["lease", "timetolive", &format!("{id:x}")]);
    assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");
}

/// A subnet leased by one node is refused to another; the holder renews it
/// and takes it back after a restart (same PublicIP); revoke frees it.
#[test]
fn a_lease_is_created_only_if_absent() {
    require_etcd!();
    let etcd = Etcd::start("absent");
    etcd.run(|| {
        let (a, b) = (connect(), connect());
        let sub = net("10.244.1.0/24");
        a.put_lease(sub, &attrs([10, 0, 0, 1])).unwrap();
        let err = b.put_lease(sub, &attrs([10, 0, 0, 2])).unwrap_err();
        let RegistryError::Remote { message, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(
            message.contains("already leased to 10.0.0.1") && message.contains(CLIENT_URL),
            "{message}"
        );
        // Still the first holder's.
        let leases = b.leases().unwrap();
        assert_eq!(leases[0].attrs.public_ip, Ipv4Addr::new(10, 0, 0, 1));
        // The holder renews and updates it; the revision follows changes.
        let r0 = b.revision();
        a.put_lease(sub, &attrs([10, 0, 0, 1])).unwrap();
        assert_eq!(b.revision(), r0, "a renewal changes nothing");
        let mut moved = attrs([10, 0, 0, 1]);
        moved.backend_type = "host-gw".into();
        a.put_lease(sub, &moved).unwrap();
        assert_eq!(b.leases().unwrap()[0].attrs.backend_type, "host-gw");
        assert_ne!(b.revision(), r0);
        // The same node after a restart (a new store, same PublicIP) takes it back.
        drop(a);
        let a2 = connect();
        a2.put_lease(sub, &attrs([10, 0, 0, 1])).unwrap();
        assert_eq!(b.leases().unwrap()[0].attrs.backend_type, "udp");
        a2.revoke(sub).unwrap();
        assert!(subnets(&b).is_empty());
        b.put_lease(sub, &attrs([10, 0, 0, 2])).unwrap();
        assert_eq!(
            a2.leases().unwrap()[0].attrs.public_ip,
            Ipv4Addr::new(10, 0, 0, 2)
        );
    });
}

/// Leases bound to a 2 s etcd lease: one whose owner stops renewing it
/// (the store is dropped, as when its node dies) expires; one renewed stays.
#[test]
fn leases_expire_unless_renewed() {
    require_etcd!();
    let etcd = Etcd::start("ttl");
    etcd.run(|| {
        let ttl = Duration::from_secs(2);
        let kept = connect().with_ttl(ttl);
        let dying = connect().with_ttl(ttl);
        kept.put_lease(net("10.244.1.0/24"), &attrs([10, 0, 0, 1]))
            .unwrap();
        dying
            .put_lease(net("10.244.2.0/24"), &attrs([10, 0, 0, 2]))
            .unwrap();
        drop(dying);
        assert_eq!(subnets(&kept).len(), 2, "not yet expired");
        assert!(
            eventually(Duration::from_secs(8), || subnets(&kept).len() == 1),
            "the unrenewed lease expires"
        );
        // Three TTLs later the renewed one is still there.
        std::thread::sleep(3 * ttl);
        assert_eq!(subnets(&kept), [net("10.244.1.0/24")]);
    });
}

/// The watch reports a new lease, a revoked one and an expired one as they
/// happen.
#[test]
fn the_watch_sees_new_revoked_and_expired_leases() {
    require_etcd!();
    let etcd = Etcd::start("watch");
    etcd.run(|| {
        let s = connect().with_ttl(Duration::from_secs(2));
        let (a, b) = (net("10.244.1.0/24"), net("10.244.2.0/24"));
        s.put_lease(a, &attrs([10, 0, 0, 1])).unwrap();
        let mut w = s.watch(16);
        let mut v = LeaseView::new();
        follow_until(&mut w, &mut v, TIMEOUT, |v| view_subnets(v) == [a]);
        // New.
        let other = connect().with_ttl(Duration::from_secs(2));
        other.put_lease(b, &attrs([10, 0, 0, 2])).unwrap();
        let evs = follow_until(&mut w, &mut v, TIMEOUT, |v| view_subnets(v) == [a, b]);
        assert!(
            matches!(&evs[..], [LeaseEvent::Put(l)] if l.record.subnet == b),
            "{evs:?}"
        );
        // Revoked.
        s.revoke(a).unwrap();
        let evs = follow_until(&mut w, &mut v, TIMEOUT, |v| view_subnets(v) == [b]);
        assert!(matches!(&evs[..], [LeaseEvent::Removed { subnet, .. }] if *subnet == a));
        // Expired: its owner is gone.
        drop(other);
        let evs = follow_until(&mut w, &mut v, Duration::from_secs(10), |v| {
            view_subnets(v).is_empty()
        });
        assert!(matches!(&evs[..], [LeaseEvent::Removed { subnet, .. }] if *subnet == b));
    });
}

/// A watch serves as the udp data path's lease source: its udp leases as
/// they change, without a request to etcd per look.
#[test]
fn a_watch_is_a_lease_source_for_the_udp_daemon() {
    require_etcd!();
    let etcd = Etcd::start("source");
    etcd.run(|| {
        let s = connect();
        let (a, b) = (net("10.244.1.0/24"), net("10.244.2.0/24"));
        s.put_lease(a, &attrs([10, 0, 0, 1])).unwrap();
        let mut vx = attrs([10, 0, 0, 2]);
        vx.backend_type = "vxlan".into();
        s.put_lease(b, &vx).unwrap();
        let mut source = overlay::registry::udp_leases(s.watch(16).into_source());
        let one = vec![(a, Ipv4Addr::new(10, 0, 0, 1))];
        assert!(eventually(TIMEOUT, || source().leases == one));
        s.revoke(a).unwrap();
        assert!(eventually(TIMEOUT, || source().leases.is_empty()));
    });
}

/// A running watch whose stream breaks while leases change and the history
/// is compacted: it reports the break, keeps the leases it knew, and when
/// etcd is reachable again lists again (it cannot resume) and reports the
/// leases as they are.
#[test]
fn a_running_watch_relists_after_a_compaction_it_missed() {
    require_etcd!();
    let etcd = Etcd::start("relist");
    let (a, b) = (net("10.244.1.0/24"), net("10.244.2.0/24"));
    let (s, mut w, mut v) = etcd.run(move || {
        let s = connect();
        s.put_lease(a, &attrs([10, 0, 0, 1])).unwrap();
        let watcher = EtcdStore::connect(&[SIDE_URL.into()], DEFAULT_PREFIX, TIMEOUT).unwrap();
        let mut w = watcher.watch(16);
        let mut v = LeaseView::new();
        follow_until(&mut w, &mut v, TIMEOUT, |v| view_subnets(v) == [a]);
        (s, w, v)
    });
    etcd.cut_side(true);
    let evs = follow_until(&mut w, &mut v, Duration::from_secs(10), |v| {
        v.lost().is_some()
    });
    assert!(matches!(evs.last(), Some(LeaseEvent::Lost { error }) if error.contains(SIDE_URL)));
    let s = etcd.run(move || {
        s.put_lease(b, &attrs([10, 0, 0, 2])).unwrap();
        s.revoke(a).unwrap();
        s.compact().unwrap();
        s
    });
    assert_eq!(view_subnets(&v), [a], "the last known leases stay");
    etcd.cut_side(false);
    let evs = follow_until(&mut w, &mut v, Duration::from_secs(15), |v| {
        v.lost().is_none() && view_subnets(v) == [b]
    });
    assert!(
        evs.iter().any(|e| matches!(e, LeaseEvent::Listed(_))),
        "listed again: {evs:?}"
    );
    drop(s);
}

/// A watch that resumes from a revision whose history was compacted lists
/// again and reports the state as it is; a watch whose etcd went away and
/// came back catches up.
#[test]
fn the_watch_relists_after_compaction_and_resumes_after_a_break() {
    require_etcd!();
    let mut etcd = Etcd::start("compact");
    let (a, b, c) = (
        net("10.244.1.0/24"),
        net("10.244.2.0/24"),
        net("10.244.3.0/24"),
    );
    let (mut w, mut v, s) = etcd.run(move || {
        let s = connect();
        s.put_lease(a, &attrs([10, 0, 0, 1])).unwrap();
        let seen = s.list().unwrap().revision;
        // Changes the watcher (last at `seen`) missed, then compaction.
        s.put_lease(b, &attrs([10, 0, 0, 2])).unwrap();
        s.revoke(a).unwrap();
        s.compact().unwrap();
        let mut w = s.watch_from(seen, 16);
        let mut v = LeaseView::new();
        let evs = follow_until(&mut w, &mut v, TIMEOUT, |v| view_subnets(v) == [b]);
        assert!(matches!(&evs[..], [LeaseEvent::Listed(_)]), "{evs:?}");
        (w, v, s)
    });
    // etcd goes away: the watch says so, keeps the leases, and catches up
    // when etcd is back.
    etcd.kill();
    let evs = follow_until(&mut w, &mut v, TIMEOUT, |v| v.lost().is_some());
    assert!(
        matches!(evs.last(), Some(LeaseEvent::Lost { error }) if error.contains(CLIENT_URL)),
        "{evs:?}"
    );
    assert_eq!(view_subnets(&v), [b]);
    etcd.spawn();
    etcd.run(move || {
        s.put_lease(c, &attrs([10, 0, 0, 3])).unwrap();
        follow_until(&mut w, &mut v, Duration::from_secs(15), |v| {
            view_subnets(v) == [b, c] && v.lost().is_none()
        });
    });
}

/// Without a reachable etcd, connecting fails within its timeout and names
/// the endpoints.
#[test]
fn connecting_to_a_dead_endpoint_fails_in_time() {
    require_etcd!();
    let etcd = Etcd::start("dead");
    etcd.run(|| {
        let dead = vec![
            "http://127.0.0.1:2999".to_string(),
            "http://127.0.0.2:2999".to_string(),
        ];
        let started = Instant::now();
        let err = EtcdStore::connect(&dead, DEFAULT_PREFIX, Duration::from_secs(1))
            .err()
            .expect("no etcd there");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
        assert!(matches!(err, EtcdError::Unreachable { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("http://127.0.0.1:2999, http://127.0.0.2:2999"),
            "{msg}"
        );
        // An endpoint that accepts connections but never answers: the
        // timeout, not the kernel, ends the attempt.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = format!("http://{}", silent.local_addr().unwrap());
        let started = Instant::now();
        let err = EtcdStore::connect(
            std::slice::from_ref(&silent),
            DEFAULT_PREFIX,
            Duration::from_secs(1),
        )
        .err()
        .expect("no answer there");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "took {took:?}"
        );
        assert!(err.to_string().contains(&silent), "{err}");
        // A dead endpoint beside a live one: the live one serves.
        let mixed = [dead[0].clone(), CLIENT_URL.to_string()];
        let s = EtcdStore::connect(&mixed, DEFAULT_PREFIX, TIMEOUT).unwrap();
        for i in 0..10u8 {
            s.put_lease(net(&format!("10.244.{i}.0/24")), &attrs([10, 0, 0, i]))
                .unwrap();
        }
        assert_eq!(s.leases().unwrap().len(), 10);
        let none = EtcdStore::connect(&[], DEFAULT_PREFIX, TIMEOUT).err();
        assert!(matches!(none, Some(EtcdError::NoEndpoints)));
        let bad = EtcdStore::connect(&[CLIENT_URL.into()], "relative", TIMEOUT).err();
        assert!(matches!(bad, Some(EtcdError::Prefix(_))), "{bad:?}");
    });
}

/// Held keys live as long as their store's session: listed under their
/// prefix, kept past several TTLs while the store lives, gone at once when
/// released, and gone after the TTL when the store is dropped (its owner
/// died). Plain keys stay until deleted by prefix.
#[test]
fn held_keys_live_as_long_as_the_session() {
    require_etcd!();
    let etcd = Etcd::start("held");
    etcd.run(|| {
        let ttl = Duration::from_secs(2);
        let a = connect().with_ttl(ttl);
        let b = connect().with_ttl(ttl);
        let keys = |s: &EtcdStore| -> Vec<String> {
            let l = s.list_prefix("/testbed/t/").unwrap();
            assert!(l.revision > 0);
            l.kvs.into_iter().map(|(k, _)| k).collect()
        };
        a.put_held("/testbed/t/machines/a", b"{\"n\":1}").unwrap();
        a.put_held("/testbed/t/machines/a", b"{\"n\":2}").unwrap();
        b.put_held("/testbed/t/machines/b", b"{}").unwrap();
        a.put_raw("/testbed/t/config", b"x").unwrap();
        a.put_raw("/testbed/other", b"y").unwrap();
        assert_eq!(
            keys(&a),
            [
                "/testbed/t/config",
                "/testbed/t/machines/a",
                "/testbed/t/machines/b"
            ]
        );
        let l = a.list_prefix("/testbed/t/machines/a").unwrap();
        assert_eq!(l.kvs[0].1, b"{\"n\":2}".to_vec(), "the last value written");
        std::thread::sleep(3 * ttl);
        assert_eq!(keys(&a).len(), 3, "kept alive past three TTLs");
        assert!(!a.refresh_held().unwrap(), "the session is not lost");
        a.release_held().unwrap();
        assert_eq!(keys(&b), ["/testbed/t/config", "/testbed/t/machines/b"]);
        drop(b);
        assert!(
            eventually(Duration::from_secs(8), || keys(&a) == ["/testbed/t/config"]),
            "a dropped store's held key expires"
        );
        assert_eq!(a.delete_prefix("/testbed/t/").unwrap(), 1);
        assert!(keys(&a).is_empty());
        assert_eq!(a.get_raw("/testbed/other").unwrap(), Some(b"y".to_vec()));
    });
}
