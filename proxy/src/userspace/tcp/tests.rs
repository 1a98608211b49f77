//! The TCP ports on loopback: backend order, refusals, half-closes, the
//! relay both ways, endpoint swaps, shutdown, and the bounds (connections
//! per port, idle timeout).

use super::super::{Balancer, Config, PortSpec, Proxy};
use super::*;
use crate::{Protocol, SessionAffinity};
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID: &str = "default/web:80/TCP";

/// A backend that answers every connection with its name and closes.
async fn name_server(name: &'static str) -> (SocketAddrV4, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = v4(l.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    (addr, task)
}

/// A backend that reads until EOF, then echoes everything and closes.
async fn echo_after_eof_server() -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = v4(l.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                if s.read_to_end(&mut all).await.is_ok() {
                    let _ = s.write_all(&all).await;
                }
            });
        }
    });
    addr
}

/// A backend that echoes as it reads, prefixed by nothing.
async fn live_echo_server() -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = v4(l.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
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

/// A port on 127.0.0.1 that refuses connections.
fn refusing_port() -> SocketAddrV4 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    v4(l.local_addr().expect("addr"))
}

fn spec(endpoints: Vec<SocketAddrV4>) -> PortSpec {
    PortSpec {
        id: ID.to_string(),
        protocol: Protocol::TCP,
        listen: 0,
        affinity: SessionAffinity::None,
        endpoints,
    }
}

fn config(seed: u64) -> Config {
    Config {
        seed,
        ..Config::default()
    }
}

async fn start(seed: u64, endpoints: Vec<SocketAddrV4>) -> (Proxy, SocketAddrV4) {
    let proxy = Proxy::start(config(seed), vec![spec(endpoints)])
        .await
        .expect("proxy starts");
    let port = proxy.local_port(ID).expect("port");
    (proxy, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

async fn fetch(addr: SocketAddrV4) -> io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_in_balancer_order_and_reproducible() {
    let mut names = BTreeMap::new();
    let mut endpoints = Vec::new();
    for name in ["a", "b", "c"] {
        let (addr, _) = name_server(name).await;
        names.insert(addr, name.to_string());
        endpoints.push(addr);
    }
    let seed = 77;
    let expected_order: Vec<String> = Balancer::new(
        ID,
        seed,
        endpoints.clone(),
        SessionAffinity::None,
        Duration::ZERO,
    )
    .order()
    .iter()
    .map(|a| names[a].clone())
    .collect();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (proxy, addr) = start(seed, endpoints.clone()).await;
        let mut seen = Vec::new();
        for _ in 0..30 {
            seen.push(fetch(addr).await.expect("answer through the proxy"));
        }
        proxy.shutdown().await;
        runs.push(seen);
    }
    assert_eq!(runs[0], runs[1], "same seed, same sequence");
    for (i, name) in runs[0].iter().enumerate() {
        assert_eq!(*name, expected_order[i % 3], "connection {i}");
    }
    for n in ["a", "b", "c"] {
        assert_eq!(runs[0].iter().filter(|s| *s == n).count(), 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_backend_is_skipped() {
    let (a, _) = name_server("a").await;
    let (b, _) = name_server("b").await;
    let dead = refusing_port();
    // A seed where the dead backend comes first, so the skip is exercised.
    let seed = (0..1000)
        .find(|&s| {
            Balancer::new(
                ID,
                s,
                vec![a, b, dead],
                SessionAffinity::None,
                Duration::ZERO,
            )
            .order()[0]
                == dead
        })
        .expect("some seed puts it first");
    let (proxy, addr) = start(seed, vec![a, b, dead]).await;
    let mut counts = BTreeMap::new();
    for _ in 0..12 {
        let name = fetch(addr).await.expect("no client-visible error");
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.values().all(|&c| c >= 4), "{counts:?}");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoints_resets_quickly() {
    for endpoints in [vec![], vec![refusing_port(), refusing_port()]] {
        let (proxy, addr) = start(1, endpoints).await;
        // The kernel completes the handshake; the reset may then beat
        // tokio's check of the connect result.
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
            Err(e) => panic!("connect: {e}"),
        };
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
            .await
            .expect("closed within 1 s");
        match r {
            Ok(0) => {}
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            Ok(n) => panic!("unexpected {n} bytes"),
        }
        drop(proxy);
    }
}

async fn half_close_roundtrip(addr: SocketAddrV4) {
    let data: Vec<u8> = (0..8 << 20)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await.expect("send all");
        w.shutdown().await.expect("shutdown(Write)");
        w
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut back))
        .await
        .expect("done in time")
        .expect("read all");
    let _w = writer.await.expect("writer");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_all_bytes_through_proxy() {
    let backend = echo_after_eof_server().await;
    let (proxy, addr) = start(3, vec![backend]).await;
    half_close_roundtrip(addr).await;
    drop(proxy);
}

/// The relay itself, with splice and with the copy fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_both_ways_half_close() {
    for zero_copy in [true, false] {
        let backend = echo_after_eof_server().await;
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = v4(front.local_addr().expect("addr"));
        let relayer = tokio::spawn(async move {
            let (c, _) = front.accept().await.expect("accept");
            let b = TcpStream::connect(backend).await.expect("connect");
            relay(&c, &b, zero_copy, Duration::from_secs(60)).await
        });
        half_close_roundtrip(addr).await;
        let (up, down) = relayer.await.expect("task").expect("relay ok");
        assert_eq!((up, down), (8 << 20, 8 << 20), "zero_copy {zero_copy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_endpoint_swap() {
    let echo = live_echo_server().await;
    let (other, _) = name_server("other").await;
    let (proxy, addr) = start(5, vec![echo]).await;
    // An open connection through the old endpoint…
    let mut open = TcpStream::connect(addr).await.expect("connect");
    open.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping");
    assert!(proxy.set_endpoints(ID, vec![other]));
    assert!(!proxy.set_endpoints("nope", vec![]));
    // …new connections go to the new one…
    for _ in 0..3 {
        assert_eq!(fetch(addr).await.expect("answer"), "other");
    }
    // …and the old connection still works.
    open.write_all(b"pong").await.expect("write");
    open.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"pong");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_listener_and_connections() {
    let echo = live_echo_server().await;
    let (proxy, addr) = start(5, vec![echo]).await;
    let mut open = TcpStream::connect(addr).await.expect("connect");
    open.write_all(b"x").await.expect("write");
    let mut buf = [0u8; 1];
    open.read_exact(&mut buf).await.expect("echo");
    proxy.shutdown().await;
    let r = tokio::time::timeout(Duration::from_secs(1), open.read(&mut buf))
        .await
        .expect("closed within 1 s");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "listener gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_error_names_port() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut s = spec(vec![]);
    s.listen = port;
    let err = match Proxy::start(Config::default(), vec![s]).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("bound a taken port"),
    };
    assert!(
        err.starts_with(&format!("binding 0.0.0.0:{port} for {ID}: ")),
        "{err}"
    );
    let dup = Proxy::start(Config::default(), vec![spec(vec![]), spec(vec![])]).await;
    assert!(matches!(dup, Err(ProxyError::DuplicateId(_))));
}

/// A backend that echoes as it reads and reports each connection's end.
async fn reporting_echo_server() -> (SocketAddrV4, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = v4(l.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = tx.send(());
            });
        }
    });
    (addr, rx)
}

async fn start_with(config: Config, endpoints: Vec<SocketAddrV4>) -> (Proxy, SocketAddrV4) {
    let proxy = Proxy::start(config, vec![spec(endpoints)])
        .await
        .expect("proxy starts");
    let port = proxy.local_port(ID).expect("port");
    (proxy, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Sends `msg` and reads its echo.
async fn echo_once(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
    assert_eq!(buf, msg);
    Ok(())
}

/// Whether the peer closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_are_reset() {
    let (echo, _) = reporting_echo_server().await;
    let config = Config {
        tcp_max_connections: 2,
        ..Config::default()
    };
    let (proxy, addr) = start_with(config, vec![echo]).await;
    let mut open = Vec::new();
    for i in 0..2u8 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        echo_once(&mut s, &[i]).await.expect("within the bound");
        open.push(s);
    }
    // The third is accepted by the kernel, then reset at once.
    for _ in 0..3 {
        match TcpStream::connect(addr).await {
            Ok(mut s) => {
                let r = echo_once(&mut s, b"x").await;
                assert!(r.is_err(), "a connection beyond the bound was relayed");
                assert!(closed_within(&mut s, Duration::from_secs(1)).await);
            }
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        }
    }
    assert_eq!(proxy.counts(ID).map(|c| c.tcp_refused), Some(3));
    // The open ones still work, and a closed one makes room.
    echo_once(&mut open[0], b"still").await.expect("open one");
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        // Until the closed one is counted out, a reset may beat the connect.
        if let Ok(mut s) = TcpStream::connect(addr).await {
            if echo_once(&mut s, b"room").await.is_ok() {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no room made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_both_sides() {
    let (echo, mut ended) = reporting_echo_server().await;
    let idle = Duration::from_millis(500);
    let config = Config {
        tcp_idle: idle,
        ..Config::default()
    };
    let (proxy, addr) = start_with(config, vec![echo]).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // Traffic every 100 ms keeps it open well past `idle`…
    for i in 0..8u8 {
        echo_once(&mut s, &[i]).await.expect("kept open by traffic");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.counts(ID).map(|c| c.tcp_idle_closed), Some(0));
    // …silence closes it: the client sees the end, the backend too.
    assert!(closed_within(&mut s, idle * 4).await, "client side open");
    tokio::time::timeout(Duration::from_secs(1), ended.recv())
        .await
        .expect("backend side closed");
    assert_eq!(proxy.counts(ID).map(|c| c.tcp_idle_closed), Some(1));
    drop(proxy);
}

/// The idle timeout holds for the splice relay and the copying one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_ends_when_idle() {
    for zero_copy in [true, false] {
        let (backend, _) = reporting_echo_server().await;
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = v4(front.local_addr().expect("addr"));
        let relayer = tokio::spawn(async move {
            let (c, _) = front.accept().await.expect("accept");
            let b = TcpStream::connect(backend).await.expect("connect");
            relay(&c, &b, zero_copy, Duration::from_millis(400)).await
        });
        let mut s = TcpStream::connect(addr).await.expect("connect");
        for _ in 0..4 {
            echo_once(&mut s, b"abc").await.expect("echo");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = tokio::time::timeout(Duration::from_secs(2), relayer)
            .await
            .expect("relay ended")
            .expect("task");
        let e = r.expect_err("idle is an error");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "zero_copy {zero_copy}");
    }
}
