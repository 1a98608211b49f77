//! The UDP ports on loopback: replies from the address sent to, spread and
//! affinity, idle sessions, refusing backends, endpoint updates, shutdown,
//! and the bound on sessions (the least recently used one evicted).

use super::super::{Balancer, Config, PortSpec, Proxy};
use super::sys::MAX_DATAGRAM;
use super::*;
use crate::{Protocol, SessionAffinity};
use std::time::Instant;

const ID: &str = "kube-system/dns:53/UDP";

/// A backend that answers every datagram with "name:payload".
async fn echo(name: &'static str) -> SocketAddrV4 {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind backend");
    let addr = v4(s.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let mut out = format!("{name}:").into_bytes();
            out.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&out, from).await;
        }
    });
    addr
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("not IPv4"),
    }
}

async fn start(
    seed: u64,
    idle: Duration,
    affinity: SessionAffinity,
    endpoints: Vec<SocketAddrV4>,
) -> (Proxy, u16) {
    let config = Config {
        seed,
        udp_idle: idle,
        ..Config::default()
    };
    let spec = PortSpec {
        id: ID.to_string(),
        protocol: Protocol::UDP,
        listen: 0,
        affinity,
        endpoints,
    };
    let proxy = Proxy::start(config, vec![spec])
        .await
        .expect("proxy starts");
    let port = proxy.local_port(ID).expect("port");
    (proxy, port)
}

/// Sends `msg` to `to` and returns the answer and where it came from.
async fn ask(client: &UdpSocket, to: SocketAddrV4, msg: &str) -> Option<(String, SocketAddr)> {
    client.send_to(msg.as_bytes(), to).await.expect("send");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    match tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from)),
        _ => None,
    }
}

async fn client_on(ip: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind((ip, 0)).await.expect("bind client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_from_the_address_sent_to() {
    let a = echo("a").await;
    let (proxy, port) = start(1, Duration::from_secs(30), SessionAffinity::None, vec![a]).await;
    let client = client_on(Ipv4Addr::LOCALHOST).await;
    // 127.0.0.2 is local too, but not the source the kernel would choose
    // for a reply to 127.0.0.1: only IP_PKTINFO gets this right.
    for dst in [
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(127, 0, 0, 3),
    ] {
        let to = SocketAddrV4::new(dst, port);
        let (answer, from) = ask(&client, to, "hi").await.expect("answer");
        assert_eq!(answer, "a:hi");
        assert_eq!(from, SocketAddr::V4(to));
    }
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_and_keep_their_backend() {
    let eps = vec![echo("a").await, echo("b").await];
    let names = |addr: SocketAddrV4| if addr == eps[0] { "a" } else { "b" };
    let order = Balancer::new(ID, 4, eps.clone(), SessionAffinity::None, Duration::ZERO)
        .order()
        .to_vec();
    let (proxy, port) = start(
        4,
        Duration::from_secs(30),
        SessionAffinity::None,
        eps.clone(),
    )
    .await;
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let c1 = client_on(Ipv4Addr::LOCALHOST).await;
    let c2 = client_on(Ipv4Addr::LOCALHOST).await;
    for i in 0..5 {
        let (r1, _) = ask(&c1, to, &format!("{i}")).await.expect("answer 1");
        assert_eq!(r1, format!("{}:{i}", names(order[0])));
        let (r2, _) = ask(&c2, to, &format!("{i}")).await.expect("answer 2");
        assert_eq!(r2, format!("{}:{i}", names(order[1])));
    }
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_spans_client_ports() {
    let eps = vec![echo("a").await, echo("b").await, echo("c").await];
    let (proxy, port) = start(4, Duration::from_secs(30), SessionAffinity::ClientIP, eps).await;
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut first = Vec::new();
    for ip in [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 5)] {
        let mut answers = Vec::new();
        for _ in 0..3 {
            // A new client port each time: a new session, same client IP.
            let c = client_on(ip).await;
            let (r, _) = ask(&c, to, "x").await.expect("answer");
            answers.push(r);
        }
        assert!(
            answers.iter().all(|r| *r == answers[0]),
            "{ip}: {answers:?}"
        );
        first.push(answers[0].clone());
    }
    assert_ne!(first[0], first[1], "two client IPs, two backends");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_ends() {
    let eps = vec![echo("a").await, echo("b").await];
    let idle = Duration::from_millis(300);
    let (proxy, port) = start(2, idle, SessionAffinity::None, eps).await;
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let c = client_on(Ipv4Addr::LOCALHOST).await;
    let (first, _) = ask(&c, to, "1").await.expect("answer");
    let backend = first.split(':').next().map(str::to_string);
    // Traffic every 150 ms keeps the session (and its backend) for well
    // over `idle`…
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (r, _) = ask(&c, to, "k").await.expect("answer");
        assert_eq!(
            r.split(':').next().map(str::to_string),
            backend,
            "round {i}"
        );
    }
    // …silence ends it, and the next datagram is a new round-robin pick.
    tokio::time::sleep(idle * 2).await;
    let (r, _) = ask(&c, to, "2").await.expect("answer");
    assert_ne!(r.split(':').next().map(str::to_string), backend);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_backend_moves_the_session() {
    let live = echo("live").await;
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        v4(s.local_addr().expect("addr"))
    };
    let seed = (0..1000)
        .find(|&s| {
            Balancer::new(
                ID,
                s,
                vec![live, dead],
                SessionAffinity::None,
                Duration::ZERO,
            )
            .order()[0]
                == dead
        })
        .expect("some seed puts it first");
    let (proxy, port) = start(
        seed,
        Duration::from_secs(30),
        SessionAffinity::None,
        vec![live, dead],
    )
    .await;
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let c = client_on(Ipv4Addr::LOCALHOST).await;
    // The first datagram goes to the dead backend and is lost; the
    // refusal ends that session, so a retry reaches the live one.
    assert_eq!(ask(&c, to, "1").await, None);
    let mut answered = None;
    for _ in 0..3 {
        if let Some((r, _)) = ask(&c, to, "2").await {
            answered = Some(r);
            break;
        }
    }
    assert_eq!(answered.as_deref(), Some("live:2"));
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_follow_endpoint_updates() {
    let a = echo("a").await;
    let b = echo("b").await;
    let (proxy, port) = start(2, Duration::from_secs(30), SessionAffinity::None, vec![a]).await;
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let c = client_on(Ipv4Addr::LOCALHOST).await;
    assert_eq!(ask(&c, to, "1").await.map(|r| r.0).as_deref(), Some("a:1"));
    assert!(proxy.set_endpoints(ID, vec![b]));
    assert_eq!(ask(&c, to, "2").await.map(|r| r.0).as_deref(), Some("b:2"));
    assert!(proxy.set_endpoints(ID, vec![]));
    assert_eq!(ask(&c, to, "3").await, None, "no endpoints: dropped");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_listener_and_sessions() {
    let a = echo("a").await;
    let (proxy, port) = start(1, Duration::from_secs(30), SessionAffinity::None, vec![a]).await;
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let c = client_on(Ipv4Addr::LOCALHOST).await;
    assert!(ask(&c, to, "1").await.is_some(), "a live session");
    proxy.shutdown().await;
    // Without SO_REUSEADDR this bind only works once the port is free.
    std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("port released");
}

/// A backend that answers every datagram with the port it came from: one
/// per session socket of the proxy.
async fn port_reporter() -> SocketAddrV4 {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind backend");
    let addr = v4(s.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64];
        while let Ok((_, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(from.port().to_string().as_bytes(), from).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_used_session_makes_room() {
    let backend = port_reporter().await;
    let config = Config {
        udp_max_sessions: 2,
        ..Config::default()
    };
    let spec = PortSpec {
        id: ID.to_string(),
        protocol: Protocol::UDP,
        listen: 0,
        affinity: SessionAffinity::None,
        endpoints: vec![backend],
    };
    let proxy = Proxy::start(config, vec![spec]).await.expect("starts");
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, proxy.local_port(ID).expect("port"));
    let c1 = client_on(Ipv4Addr::LOCALHOST).await;
    let c2 = client_on(Ipv4Addr::LOCALHOST).await;
    let c3 = client_on(Ipv4Addr::LOCALHOST).await;
    let via =
        |r: Option<(String, SocketAddr)>| -> u16 { r.expect("answer").0.parse().expect("a port") };
    let p1 = via(ask(&c1, to, "1").await);
    let p2 = via(ask(&c2, to, "2").await);
    assert_ne!(p1, p2, "a socket per session");
    // c1 again: now c2 is the least recently used.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(via(ask(&c1, to, "1").await), p1);
    assert_eq!(proxy.counts(ID).map(|c| c.udp_evicted), Some(0));
    // A third client evicts c2's session, and its socket is closed…
    tokio::time::sleep(Duration::from_millis(5)).await;
    let p3 = via(ask(&c3, to, "3").await);
    assert_eq!(proxy.counts(ID).map(|c| c.udp_evicted), Some(1));
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, p2)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the evicted session's socket is open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // …while c1 and c3 keep theirs.
    assert_eq!(via(ask(&c1, to, "1").await), p1);
    assert_eq!(via(ask(&c3, to, "3").await), p3);
    assert_eq!(proxy.counts(ID).map(|c| c.udp_evicted), Some(1));
    // c2 comes back with a new session (evicting the oldest again).
    let p2_again = via(ask(&c2, to, "2").await);
    assert_ne!(p2_again, p2);
    assert_eq!(proxy.counts(ID).map(|c| c.udp_evicted), Some(2));
    // A flood of new client ports never holds more than the bound.
    for _ in 0..50 {
        let c = client_on(Ipv4Addr::LOCALHOST).await;
        assert!(ask(&c, to, "f").await.is_some());
    }
    assert_eq!(proxy.counts(ID).map(|c| c.udp_evicted), Some(52));
    drop(proxy);
}
