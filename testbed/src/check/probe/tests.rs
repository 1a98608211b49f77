//! Namespace tests of probes (as root): each kind of probe from `a` to `b`
//! answered, refused and unanswered.

use super::testnet::{Net, B};
use super::*;
use std::time::Duration;

const T: Duration = Duration::from_millis(400);

#[test]
fn tcp_reaches_a_listener_is_refused_by_a_closed_port_and_times_out_when_dropped() {
    let Some(net) = Net::new("tcp_probe") else {
        return;
    };
    let _l = net.listen(7001);
    let _dropped = net.listen(7003);
    net.in_b(
        "iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "7003", "-j", "DROP"],
    );
    net.in_b(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "7004",
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-host-unreachable",
        ],
    );
    assert_eq!(probe(&net.probe(Port::Tcp(7001)), T, None), Outcome::Ok);
    assert_eq!(
        probe(&net.probe(Port::Tcp(7002)), T, None),
        Outcome::Refused
    );
    assert_eq!(
        probe(&net.probe(Port::Tcp(7003)), T, None),
        Outcome::Timeout
    );
    assert_eq!(
        probe(&net.probe(Port::Tcp(7004)), T, None),
        Outcome::Refused
    );
}

#[test]
fn udp_is_answered_by_an_echo_server_and_refused_by_a_closed_port() {
    let Some(net) = Net::new("udp_probe") else {
        return;
    };
    net.udp_echo(5301);
    net.in_b(
        "iptables",
        &["-A", "INPUT", "-p", "udp", "--dport", "5303", "-j", "DROP"],
    );
    assert_eq!(probe(&net.probe(Port::Udp(5301)), T, None), Outcome::Ok);
    assert_eq!(
        probe(&net.probe(Port::Udp(5302)), T, None),
        Outcome::Refused
    );
    assert_eq!(
        probe(&net.probe(Port::Udp(5303)), T, None),
        Outcome::Timeout
    );
}

#[test]
fn http_checks_the_status_and_the_body() {
    let Some(net) = Net::new("http_probe") else {
        return;
    };
    net.http(8080);
    let _silent = net.listen(8081);
    let get = |port: u16, path: &str| {
        net.probe(Port::Http {
            port,
            path: path.into(),
        })
    };
    assert_eq!(probe(&get(8080, "/"), T, None), Outcome::Ok);
    assert_eq!(probe(&get(8080, "/"), T, Some("from b")), Outcome::Ok);
    assert_eq!(
        probe(&get(8080, "/"), T, Some("from c")),
        Outcome::WrongBody
    );
    assert_eq!(
        probe(&get(8080, "/missing"), T, None),
        Outcome::Error("HTTP 404".into())
    );
    // Connected, never answered: a timeout.
    assert_eq!(probe(&get(8081, "/"), T, None), Outcome::Timeout);
    assert_eq!(probe(&get(8082, "/"), T, None), Outcome::Refused);
    assert!(matches!(
        probe(&get(8080, "/a b"), T, None),
        Outcome::Error(e) if e.contains("not a request path")
    ));
}

#[test]
fn icmp_is_answered_ignored_and_rejected() {
    let Some(net) = Net::new("icmp_probe") else {
        return;
    };
    let p = net.probe(Port::Icmp);
    assert_eq!(probe(&p, T, None), Outcome::Ok);
    // Many at once from one namespace: each finds its own reply.
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16).map(|_| s.spawn(|| probe(&p, T, None))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes, vec![Outcome::Ok; 16]);
    net.in_b("sysctl", &["-qw", "net.ipv4.icmp_echo_ignore_all=1"]);
    assert_eq!(probe(&p, T, None), Outcome::Timeout);
    net.in_b("sysctl", &["-qw", "net.ipv4.icmp_echo_ignore_all=0"]);
    net.in_b(
        "iptables",
        &[
            "-A",
            "INPUT",
            "-p",
            "icmp",
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-host-prohibited",
        ],
    );
    assert_eq!(probe(&p, T, None), Outcome::Refused);
}

#[test]
fn an_address_without_a_route_is_refused_and_a_missing_namespace_an_error() {
    let Some(net) = Net::new("noroute_probe") else {
        return;
    };
    let mut p = net.probe(Port::Tcp(80));
    p.addr = Ipv4Addr::new(192, 0, 2, 1);
    assert_eq!(probe(&p, T, None), Outcome::Refused);
    p.port = Port::Icmp;
    assert_eq!(probe(&p, T, None), Outcome::Refused);
    p.netns = format!("{}-missing", net.a);
    assert!(
        matches!(probe(&p, T, None), Outcome::Error(e) if e.contains(&p.netns)),
        "a missing namespace"
    );
    assert_eq!(B, net.probe(Port::Icmp).addr);
}
