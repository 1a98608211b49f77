//! Tests of the watcher: the notification filter on hand-made messages, and
//! real namespaces (as root) changed with `ip`.

use super::*;
use crate::kernel::testutil::ip;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One netlink message of `kind` with `payload`.
fn msg(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut m = (len as u32).to_ne_bytes().to_vec();
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(payload);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

fn ndmsg(family: u8, state: u16) -> Vec<u8> {
    let mut nd = vec![family, 0, 0, 0, 3, 0, 0, 0];
    nd.extend_from_slice(&state.to_ne_bytes());
    nd.extend_from_slice(&[0, 1]);
    nd
}

#[test]
fn only_changes_of_the_watched_kinds_count() {
    const RTM_NEWROUTE: u16 = 24;
    const NUD_REACHABLE: u16 = 0x02;
    const NUD_STALE: u16 = 0x04;
    const AF_BRIDGE: u8 = 7;
    assert!(relevant(&msg(RTM_NEWROUTE, &[0; 12])));
    // Links: any change but a bridge's report on its port.
    const RTM_NEWLINK: u16 = 16;
    let mut ifinfo = [0u8; 16];
    assert!(relevant(&msg(RTM_NEWLINK, &ifinfo)));
    ifinfo[0] = AF_BRIDGE;
    assert!(!relevant(&msg(RTM_NEWLINK, &ifinfo)));
    assert!(relevant(&msg(RTM_NEWNEIGH, &ndmsg(AF_INET, NUD_PERMANENT))));
    assert!(relevant(&msg(RTM_DELNEIGH, &ndmsg(AF_INET, NUD_FAILED))));
    // The ARP cache at work, and bridge FDB learning: not drift.
    assert!(!relevant(&msg(
        RTM_NEWNEIGH,
        &ndmsg(AF_INET, NUD_REACHABLE)
    )));
    assert!(!relevant(&msg(RTM_DELNEIGH, &ndmsg(AF_INET, NUD_STALE))));
    assert!(!relevant(&msg(
        RTM_NEWNEIGH,
        &ndmsg(AF_BRIDGE, NUD_PERMANENT)
    )));
    // A relevant message after noise in the same datagram.
    let two = [
        msg(RTM_NEWNEIGH, &ndmsg(AF_INET, NUD_STALE)),
        msg(RTM_NEWROUTE, &[0; 12]),
    ]
    .concat();
    assert!(relevant(&two));
    assert!(!relevant(&[]));
}

#[test]
fn what_does_not_parse_counts_as_a_change() {
    let good = msg(RTM_NEWNEIGH, &ndmsg(AF_INET, 0x02));
    assert!(relevant(&good[..10]), "truncated header");
    assert!(relevant(&good[..20]), "truncated body");
    let mut short = good.clone();
    short[0] = 4; // a length below the header's
    assert!(relevant(&short));
    let mut long = good;
    long[0] = 200; // past the end
    assert!(relevant(&long));
}

/// A namespace with a veth pair, an address and a route, deleted on drop.
struct Ns(String);

impl Ns {
    fn new() -> Ns {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = Ns(format!(
            "tbw-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        ip(&["netns", "add", &ns.0]);
        ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        ns.ip(&["link", "set", "v0", "up"]);
        ns.ip(&["link", "set", "v1", "up"]);
        ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "v0"]);
        ns.ip(&["route", "add", "10.78.0.0/24", "via", "10.77.0.2"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        ip(&[&["-n", self.0.as_str()], args].concat());
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_deleted_route_is_reported_once_and_quiet_is_quiet() {
    let (a, b) = (Ns::new(), Ns::new());
    let mut w = Watcher::new().unwrap();
    w.add(&a.0).unwrap();
    w.add(&b.0).unwrap();
    assert_eq!(w.watched().count(), 2);
    assert!(
        w.wait(Duration::from_millis(200)).is_empty(),
        "nothing changed"
    );
    a.ip(&["route", "del", "10.78.0.0/24"]);
    assert_eq!(
        w.wait(Duration::from_secs(1)),
        BTreeSet::from([a.0.clone()])
    );
    assert!(
        w.wait(Duration::from_millis(200)).is_empty(),
        "reported once"
    );
    // Several changes in both, seen in one answer when the caller was busy.
    a.ip(&["link", "set", "v1", "mtu", "1400"]);
    b.ip(&["addr", "del", "10.77.0.1/24", "dev", "v0"]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        w.wait(Duration::from_secs(1)),
        BTreeSet::from([a.0.clone(), b.0.clone()])
    );
    // A namespace no longer watched is not reported.
    w.remove(&b.0);
    b.ip(&["link", "set", "v1", "down"]);
    assert!(w.wait(Duration::from_millis(200)).is_empty());
}

#[test]
fn arp_traffic_is_not_a_change_but_a_deleted_permanent_neighbour_is() {
    let a = Ns::new();
    let mut w = Watcher::new().unwrap();
    a.ip(&[
        "neigh",
        "add",
        "10.77.0.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "v0",
        "nud",
        "permanent",
    ]);
    w.add(&a.0).unwrap();
    // v0 and v1 are the two ends of one veth in one namespace: v0's address
    // is resolved from v1 over ARP (a neighbour entry comes and changes).
    a.ip(&["addr", "add", "10.77.0.2/24", "dev", "v1"]);
    assert_eq!(
        w.wait(Duration::from_secs(1)),
        BTreeSet::from([a.0.clone()])
    );
    a.ip(&[
        "neigh",
        "add",
        "10.77.0.5",
        "dev",
        "v0",
        "nud",
        "reachable",
        "lladdr",
        "02:00:00:00:00:05",
    ]);
    a.ip(&[
        "neigh",
        "change",
        "10.77.0.5",
        "dev",
        "v0",
        "nud",
        "stale",
        "lladdr",
        "02:00:00:00:00:05",
    ]);
    assert!(
        w.wait(Duration::from_millis(300)).is_empty(),
        "ARP cache noise"
    );
    a.ip(&["neigh", "del", "10.77.0.9", "dev", "v0"]);
    assert_eq!(
        w.wait(Duration::from_secs(1)),
        BTreeSet::from([a.0.clone()])
    );
}

#[test]
fn an_overflowing_socket_marks_its_namespace_changed() {
    let a = Ns::new();
    let mut w = Watcher::new().unwrap();
    w.add(&a.0).unwrap();
    // Far more notifications than a receive buffer holds, while nobody
    // reads: ARP-cache noise fills the buffer, and the one real change (a
    // route deleted) that comes after it is dropped. Only the overflow
    // (ENOBUFS) tells that something may have changed.
    let mut batch: String = (0..900)
        .map(|i| {
            format!(
                "neigh add 10.77.{}.{} lladdr 02:00:00:00:00:01 dev v0 nud reachable\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    batch.push_str("route del 10.78.0.0/24\n");
    let mut child = Command::new("ip")
        .args(["-n", &a.0, "-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        w.wait(Duration::from_secs(1)),
        BTreeSet::from([a.0.clone()])
    );
    assert!(w.wait(Duration::from_millis(200)).is_empty(), "drained");
}

#[test]
fn a_waker_ends_a_wait_early() {
    let w = Watcher::new().unwrap();
    let waker = w.waker();
    let started = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        waker.wake();
    });
    assert!(w.wait(Duration::from_secs(60)).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "woken, not timed out"
    );
    t.join().unwrap();
}
