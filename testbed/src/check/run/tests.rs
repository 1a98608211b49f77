//! Tests of the run semantics: which outcomes pass which expectation
//! (pure), and retries, holding periods and parallel probes against real
//! namespaces (as root).

use super::*;
use crate::check::probe::testnet::Net;
use crate::check::Port;
use std::time::Duration;

#[test]
fn each_expectation_passes_exactly_its_outcomes() {
    let all = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::WrongBody,
        Outcome::Error("HTTP 404".into()),
    ];
    let table = [
        (Expect::Allow, [true, false, false, false, false]),
        (Expect::Deny, [false, true, true, false, false]),
        (Expect::Drop, [false, false, true, false, false]),
        (Expect::Reject, [false, true, false, false, false]),
    ];
    for (expect, want) in table {
        for (o, w) in all.iter().zip(want) {
            assert_eq!(passes(expect, o), w, "{expect:?} {o:?}");
        }
    }
}

#[test]
fn parallel_keeps_the_order_and_does_every_item_once() {
    let items: Vec<usize> = (0..1000).collect();
    let calls = AtomicUsize::new(0);
    let out = parallel(&items, |&i| {
        calls.fetch_add(1, Ordering::Relaxed);
        i * 2
    });
    assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::Relaxed), 1000);
    assert!(parallel(&[] as &[u8], |_| 0).is_empty());
}

#[test]
fn no_probes_is_no_attempt() {
    let r = run_pair(&[], Expect::Allow, Duration::ZERO, Duration::ZERO, None);
    assert_eq!(r.attempts, 0);
    assert!(r.results.is_empty());
}

/// Opens a listener on `b`'s `port` after `after`, kept until the test ends.
fn listen_later(net: &Net, port: u16, after: Duration) -> std::thread::JoinHandle<()> {
    let b = crate::kernel::netns::Netns::open(&net.b).unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let at = std::net::SocketAddr::from((crate::check::probe::testnet::B, port));
        let l = b
            .run_in(move || std::net::TcpListener::bind(at).unwrap())
            .unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(l);
    })
}

#[test]
fn an_allow_is_retried_until_a_late_listener_answers() {
    let Some(net) = Net::new("allow_retry") else {
        return;
    };
    let p = net.probe(Port::Tcp(7101));
    let _late = listen_later(&net, 7101, Duration::from_millis(500));
    let r = run_pair(
        std::slice::from_ref(&p),
        Expect::Allow,
        Duration::from_secs(3),
        Duration::ZERO,
        None,
    );
    assert_eq!(r.results, vec![(p, Outcome::Ok)]);
    assert!(r.attempts > 1, "{r:?}");
}

#[test]
fn an_allow_that_never_passes_reports_its_last_failure() {
    let Some(net) = Net::new("allow_fails") else {
        return;
    };
    let _up = net.listen(7201);
    let probes = [net.probe(Port::Tcp(7201)), net.probe(Port::Tcp(7202))];
    let r = run_pair(
        &probes,
        Expect::Allow,
        Duration::from_millis(700),
        Duration::ZERO,
        None,
    );
    let outcomes: Vec<_> = r.results.iter().map(|(_, o)| o.clone()).collect();
    assert_eq!(outcomes, [Outcome::Ok, Outcome::Refused]);
    assert!(r.attempts > 1, "{r:?}");
}

#[test]
fn a_deny_holds_over_rounds_and_fails_when_a_listener_appears() {
    let Some(net) = Net::new("deny_hold") else {
        return;
    };
    let hold = Duration::from_secs(1);
    let closed = net.probe(Port::Tcp(7302));
    let r = run_pair(
        std::slice::from_ref(&closed),
        Expect::Deny,
        Duration::ZERO,
        hold,
        None,
    );
    assert_eq!(r.results, vec![(closed.clone(), Outcome::Refused)]);
    assert!(r.attempts > 1, "held over several rounds: {r:?}");
    // A reject holds too; a drop fails in its first round.
    let reject = run_pair(
        std::slice::from_ref(&closed),
        Expect::Reject,
        Duration::ZERO,
        Duration::ZERO,
        None,
    );
    assert_eq!(
        (reject.attempts, reject.results[0].1.clone()),
        (1, Outcome::Refused)
    );
    let drop = run_pair(
        std::slice::from_ref(&closed),
        Expect::Drop,
        Duration::ZERO,
        hold,
        None,
    );
    assert_eq!(
        (drop.attempts, drop.results[0].1.clone()),
        (1, Outcome::Refused)
    );

    let p = net.probe(Port::Tcp(7301));
    let _late = listen_later(&net, 7301, Duration::from_millis(500));
    let r = run_pair(
        std::slice::from_ref(&p),
        Expect::Deny,
        Duration::ZERO,
        hold,
        None,
    );
    assert_eq!(r.results, vec![(p, Outcome::Ok)], "{r:?}");
    assert!(r.attempts > 1, "passed rounds before the listener: {r:?}");
}

#[test]
fn a_matrix_probes_every_cell_once_in_order() {
    let Some(net) = Net::new("matrix_run") else {
        return;
    };
    let listeners: Vec<_> = (0..100).step_by(2).map(|k| net.listen(7400 + k)).collect();
    let probes: Vec<_> = (0..100).map(|k| net.probe(Port::Tcp(7400 + k))).collect();
    let got = run_matrix(&probes, Duration::from_secs(1));
    for (k, (p, o)) in got.iter().enumerate() {
        assert_eq!(p, &probes[k]);
        let want = if k % 2 == 0 {
            Outcome::Ok
        } else {
            Outcome::Refused
        };
        assert_eq!(o, &want, "port {}", 7400 + k);
    }
    drop(listeners);
}
