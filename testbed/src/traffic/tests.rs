//! Namespace tests of the generators (as root): each kind from `a` against
//! `testbed serve` in `b` (all ok, the right backend), against nothing
//! (refused) and against a firewall that drops (timeout); the cap on sends
//! in flight, `stop`, and a stream whose server goes away.

use super::serve::{ServeConfig, Server};
use super::*;
use crate::check::probe::testnet::{Net, B};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const NAME: &str = "shop/web-1";
const HTTP: u16 = 8080;
const TCP: u16 = 8081;
const UDP: u16 = 8082;
const STREAM: u16 = 8083;

/// `testbed serve` running in `b` until the returned flag is set.
fn serve(net: &Net) -> Arc<AtomicBool> {
    let config = ServeConfig {
        name: NAME.into(),
        bind: B,
        http: Some(HTTP),
        tcp: Some(TCP),
        udp: Some(UDP),
        stream: Some(STREAM),
    };
    let server = Netns::open(&net.b)
        .unwrap()
        .run_in(|| Server::bind(&config))
        .unwrap()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || server.run(&flag).unwrap());
    stop
}

/// A generator of `count` sends of `kind` at `rate` from `a` to `b`'s `port`.
fn gen(net: &Net, kind: WorkloadKind, port: u16, count: u64, rate: u32) -> Generator {
    Generator {
        workload: "w".into(),
        kind,
        source: format!("host {}", net.a),
        netns: net.a.clone(),
        addr: B,
        port,
        path: "/".into(),
        sends: Sends {
            name: "w".into(),
            count,
            start_us: 0,
            first_us: Vec::new(),
            rate,
            phase_ppm: 0,
        },
        timeout: Duration::from_millis(300),
        streams: 2,
    }
}

/// Runs `g` to its end.
fn go(g: &Generator) -> Vec<Sample> {
    let t0 = Instant::now() + Duration::from_millis(20);
    run(g, t0, &AtomicBool::new(false)).unwrap()
}

/// How many samples had each outcome and backend.
fn tally(samples: &[Sample]) -> BTreeMap<(SampleOutcome, Option<String>), usize> {
    let mut t = BTreeMap::new();
    for s in samples {
        *t.entry((s.outcome, s.backend.clone())).or_default() += 1;
    }
    t
}

fn only(
    outcome: SampleOutcome,
    backend: Option<&str>,
    n: usize,
) -> BTreeMap<(SampleOutcome, Option<String>), usize> {
    BTreeMap::from([((outcome, backend.map(String::from)), n)])
}

const KINDS: [(WorkloadKind, u16); 4] = [
    (WorkloadKind::Http, HTTP),
    (WorkloadKind::TcpConnect, TCP),
    (WorkloadKind::UdpEcho, UDP),
    (WorkloadKind::Ping, 0),
];

#[test]
fn every_kind_is_answered_by_serve_and_names_the_backend() {
    let Some(net) = Net::new("traffic_ok") else {
        return;
    };
    let stop = serve(&net);
    for (kind, port) in KINDS {
        let samples = go(&gen(&net, kind, port, 40, 200));
        let backend = (kind != WorkloadKind::Ping).then_some(NAME);
        assert_eq!(
            tally(&samples),
            only(SampleOutcome::Ok, backend, 40),
            "{kind:?}"
        );
        for (k, s) in samples.iter().enumerate() {
            assert_eq!(s.send_us, k as u64 * 5_000, "{kind:?}: in send order");
            assert!(s.sent_us >= s.send_us && s.bytes > 0, "{kind:?}: {s:?}");
        }
    }
    // Streams: one sample per stream and send time; once connected, ok with
    // bytes from the named server.
    let samples = go(&gen(&net, WorkloadKind::TcpStream, STREAM, 40, 100));
    assert_eq!(samples.len(), 80);
    let later: Vec<_> = samples
        .into_iter()
        .filter(|s| s.send_us >= 100_000)
        .collect();
    assert_eq!(tally(&later), only(SampleOutcome::Ok, Some(NAME), 60));
    assert!(later.iter().map(|s| s.bytes).sum::<u64>() >= 2 * 20 * 1024);
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn nothing_listening_is_refused() {
    let Some(net) = Net::new("traffic_refused") else {
        return;
    };
    // The kernel sends at most 6 unreachables to a host in a burst, then
    // one a second: udpEcho sends past those time out (as in experiments).
    net.in_b("sysctl", &["-qw", "net.ipv4.icmp_ratelimit=0"]);
    net.in_b(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-p",
            "icmp",
            "--icmp-type",
            "echo-request",
            "-j",
            "REJECT",
        ],
    );
    for (kind, port) in KINDS {
        let samples = go(&gen(&net, kind, port, 10, 100));
        assert_eq!(
            tally(&samples),
            only(SampleOutcome::Refused, None, 10),
            "{kind:?}"
        );
    }
    let samples = go(&gen(&net, WorkloadKind::TcpStream, STREAM, 10, 20));
    let later: Vec<_> = samples
        .into_iter()
        .filter(|s| s.send_us >= 100_000)
        .collect();
    assert_eq!(tally(&later), only(SampleOutcome::Refused, None, 16));
}

#[test]
fn dropped_sends_time_out_without_holding_back_the_next() {
    let Some(net) = Net::new("traffic_timeout") else {
        return;
    };
    let _stop = serve(&net);
    net.in_b("iptables", &["-A", "INPUT", "-p", "tcp", "-j", "DROP"]);
    net.in_b("iptables", &["-A", "INPUT", "-p", "udp", "-j", "DROP"]);
    net.in_b("iptables", &["-A", "INPUT", "-p", "icmp", "-j", "DROP"]);
    for (kind, port) in KINDS {
        let g = gen(&net, kind, port, 10, 100);
        let samples = go(&g);
        assert_eq!(
            tally(&samples),
            only(SampleOutcome::Timeout, None, 10),
            "{kind:?}"
        );
        for s in &samples {
            assert!(s.latency_us >= 300_000, "{kind:?}: {s:?}");
            // Open loop: a closed loop would start send k after k timeouts.
            assert!(s.sent_us - s.send_us < 300_000, "{kind:?}: {s:?}");
        }
    }
    let samples = go(&gen(&net, WorkloadKind::TcpStream, STREAM, 10, 20));
    assert_eq!(tally(&samples), only(SampleOutcome::Timeout, None, 20));
}

#[test]
fn sends_over_the_cap_are_errors_and_stop_ends_a_run_early() {
    let Some(net) = Net::new("traffic_cap") else {
        return;
    };
    net.in_b("iptables", &["-A", "INPUT", "-p", "udp", "-j", "DROP"]);
    let g = gen(&net, WorkloadKind::UdpEcho, UDP, 30, 1000);
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let samples = Netns::open(&net.a)
        .unwrap()
        .run_in(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, generate::run_capped(&g, t0, &stop, 10))
        })
        .unwrap()
        .unwrap();
    let t = tally(&samples);
    assert_eq!(t.get(&(SampleOutcome::Timeout, None)), Some(&10), "{t:?}");
    assert_eq!(t.get(&(SampleOutcome::Error, None)), Some(&20), "{t:?}");
    // A long run stopped after 200 ms returns what it has.
    let g = gen(&net, WorkloadKind::Http, HTTP, 100_000, 100);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        flag.store(true, Ordering::Relaxed);
    });
    let samples = run(&g, Instant::now(), &stop).unwrap();
    stopper.join().unwrap();
    assert!(samples.len() < 100, "{} samples", samples.len());
}

#[test]
fn a_stream_whose_server_goes_away_breaks_then_is_refused() {
    let Some(net) = Net::new("traffic_stream") else {
        return;
    };
    let stop = serve(&net);
    let g = gen(&net, WorkloadKind::TcpStream, STREAM, 100, 100);
    let flag = Arc::clone(&stop);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(250));
        flag.store(true, Ordering::Relaxed);
    });
    let samples = go(&g);
    stopper.join().unwrap();
    let ok_early = samples
        .iter()
        .filter(|s| (50_000..200_000).contains(&s.send_us))
        .all(|s| s.outcome == SampleOutcome::Ok);
    assert!(ok_early, "{samples:?}");
    let late: Vec<_> = samples.iter().filter(|s| s.send_us >= 700_000).collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|s| s.outcome == SampleOutcome::Refused),
        "{late:?}"
    );
}
