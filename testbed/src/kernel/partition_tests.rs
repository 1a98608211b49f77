//! Tests of LAN partitions: the script, and three namespaces on a bridge in
//! a fourth (as root), cut and healed.

use super::*;
use crate::kernel::testutil::ip;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn pair(a: &str, b: &str) -> (String, String) {
    (a.into(), b.into())
}

#[test]
fn the_script_replaces_the_table_with_each_pair_both_ways() {
    let s = ruleset(&[pair("n-n1", "n-n2"), pair("n-n3", "n-n1")]).unwrap();
    assert_eq!(
        s,
        "table bridge testbed_faults\n\
         delete table bridge testbed_faults\n\
         table bridge testbed_faults {\n\
         \tset cuts {\n\
         \t\ttype ifname . ifname\n\
         \t\telements = { \"n-n1\" . \"n-n2\", \"n-n1\" . \"n-n3\", \"n-n2\" . \"n-n1\", \"n-n3\" . \"n-n1\" }\n\
         \t}\n\
         \tchain forward {\n\
         \t\ttype filter hook forward priority 0; policy accept;\n\
         \t\tiifname . oifname @cuts drop\n\
         \t}\n\
         }\n"
    );
    // The same cuts in another order or twice: the same script.
    let again = ruleset(&[
        pair("n-n1", "n-n3"),
        pair("n-n2", "n-n1"),
        pair("n-n1", "n-n2"),
    ])
    .unwrap();
    assert_eq!(again, s);
}

#[test]
fn no_cuts_only_removes_the_table() {
    assert_eq!(
        ruleset(&[]).unwrap(),
        "table bridge testbed_faults\ndelete table bridge testbed_faults\n"
    );
}

#[test]
fn names_that_are_not_interface_names_never_reach_the_script() {
    for bad in [
        "",
        "a-name-of-16-chr",
        "x\" drop; flush ruleset",
        "a b",
        "a\nb",
        "é",
    ] {
        let err = ruleset(&[pair("n-n1", bad)]).unwrap_err();
        assert!(matches!(err, PartitionError::BadPort(_)), "{bad:?}: {err}");
    }
    let err = ruleset(&[pair("n-n1", "n-n1")]).unwrap_err();
    assert!(matches!(err, PartitionError::SamePort(_)), "{err}");
}

/// A bridge `lan0` in namespace `fabric` with ports `pa`, `pb`, `pc`, each
/// the peer of `eth0` in a namespace of its own (10.79.0.1-3/24); removed
/// on drop.
struct Lan {
    fabric: String,
    ends: [String; 3],
}

const PORTS: [&str; 3] = ["pa", "pb", "pc"];

impl Lan {
    fn new() -> Lan {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "tbp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let lan = Lan {
            fabric: format!("{id}-f"),
            ends: ["a", "b", "c"].map(|x| format!("{id}-{x}")),
        };
        ip(&["netns", "add", &lan.fabric]);
        for e in &lan.ends {
            ip(&["netns", "add", e]);
        }
        let f = lan.fabric.as_str();
        ip(&["-n", f, "link", "add", "lan0", "type", "bridge"]);
        ip(&["-n", f, "link", "set", "lan0", "up"]);
        for (k, (port, e)) in PORTS.iter().zip(&lan.ends).enumerate() {
            ip(&[
                "-n", f, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", e,
            ]);
            ip(&["-n", f, "link", "set", port, "master", "lan0", "up"]);
            ip(&[
                "-n",
                e,
                "addr",
                "add",
                &format!("10.79.0.{}/24", k + 1),
                "dev",
                "eth0",
            ]);
            ip(&["-n", e, "link", "set", "eth0", "up"]);
            ip(&["-n", e, "link", "set", "lo", "up"]);
        }
        lan
    }

    /// Whether machine `from` (0-2) reaches machine `to` over TCP within
    /// `patience`.
    fn reaches(&self, from: usize, to: usize, patience: Duration) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::new(10, 79, 0, to as u8 + 1), 7200 + from as u16));
        let listener = Netns::open(&self.ends[to])
            .unwrap()
            .run_in(move || TcpListener::bind(addr).unwrap())
            .unwrap();
        let deadline = Instant::now() + patience;
        let client = Netns::open(&self.ends[from]).unwrap();
        loop {
            let ok = client
                .run_in(move || {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                })
                .unwrap();
            if ok || Instant::now() >= deadline {
                drop(listener);
                return ok;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.ends.iter().chain([&self.fabric]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn a_cut_separates_two_ports_both_ways_and_clearing_heals_it() {
    let lan = Lan::new();
    let quick = Duration::ZERO;
    let heal = Duration::from_secs(5);
    assert!(
        lan.reaches(0, 1, heal) && lan.reaches(1, 0, heal),
        "before any cut"
    );
    set_cuts(&lan.fabric, &[pair("pa", "pb")]).unwrap();
    assert!(!lan.reaches(0, 1, quick), "A reached B across the cut");
    assert!(!lan.reaches(1, 0, quick), "B reached A across the cut");
    assert!(lan.reaches(0, 2, heal), "A to C");
    assert!(lan.reaches(1, 2, heal), "B to C");
    // Replaced, not added to: now only A-C is cut.
    set_cuts(&lan.fabric, &[pair("pc", "pa")]).unwrap();
    assert!(lan.reaches(0, 1, heal), "A to B after the cut moved");
    assert!(!lan.reaches(2, 0, quick), "C reached A across the new cut");
    set_cuts(&lan.fabric, &[]).unwrap();
    assert!(lan.reaches(2, 0, heal), "C to A once cleared");
    let out = Netns::open(&lan.fabric)
        .unwrap()
        .command("nft", &["list", "tables"], None)
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "the table is gone"
    );
    // Clearing again is no error.
    set_cuts(&lan.fabric, &[]).unwrap();
}

#[test]
fn a_missing_fabric_namespace_is_a_clear_error() {
    let err = set_cuts("tbp-no-such-namespace", &[pair("pa", "pb")]).unwrap_err();
    assert!(err.to_string().contains("tbp-no-such-namespace"), "{err}");
}
