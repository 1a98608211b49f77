//! A two-machine network for the namespace tests of probes and runs:
//! namespaces `…-a` (10.77.0.1/24) and `…-b` (10.77.0.2/24) joined by a
//! veth, with unique names, removed on drop; and servers started inside
//! `b`.

use crate::check::{Port, Probe};
use crate::kernel::netns::Netns;
use crate::kernel::testutil::ip;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The address of `a`.
pub const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The address of `b`.
pub const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// Two namespaces joined by a veth.
pub struct Net {
    /// The sender's namespace.
    pub a: String,
    /// The target's namespace.
    pub b: String,
}

impl Net {
    /// Creates them, or `None` when not root (outside CI; under CI the test
    /// fails instead of skipping).
    pub fn new(test: &str) -> Option<Net> {
        if !overlay::require_root(test) {
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "tbc-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let net = Net {
            a: format!("{id}-a"),
            b: format!("{id}-b"),
        };
        ip(&["netns", "add", &net.a]);
        ip(&["netns", "add", &net.b]);
        ip(&[
            "-n", &net.a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &net.b,
        ]);
        for (ns, addr) in [(&net.a, A), (&net.b, B)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Some(net)
    }

    /// A probe from `a` to `b` on `port`.
    pub fn probe(&self, port: Port) -> Probe {
        Probe {
            from: format!("host {}", self.a),
            netns: self.a.clone(),
            to: format!("address {B}"),
            addr: B,
            port,
        }
    }

    /// Runs `program args` in `b`, failing the test if it fails.
    pub fn in_b(&self, program: &str, args: &[&str]) {
        let out = Netns::open(&self.b)
            .unwrap()
            .command(program, args, None)
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A TCP listener on `b`'s `port` (it accepts nothing: the kernel
    /// completes connections).
    pub fn listen(&self, port: u16) -> TcpListener {
        let at = SocketAddr::from((B, port));
        Netns::open(&self.b)
            .unwrap()
            .run_in(move || TcpListener::bind(at).unwrap())
            .unwrap()
    }

    /// A UDP echo server on `b`'s `port`, for the rest of the test.
    pub fn udp_echo(&self, port: u16) {
        let at = SocketAddr::from((B, port));
        let sock = Netns::open(&self.b)
            .unwrap()
            .run_in(move || UdpSocket::bind(at).unwrap())
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        });
    }

    /// An HTTP server on `b`'s `port`, for the rest of the test: `/` is
    /// `200` with body `hello from b`, anything else `404`.
    pub fn http(&self, port: u16) {
        let listener = self.listen(port);
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut req = [0u8; 4096];
                let n = conn.read(&mut req).unwrap_or(0);
                let answer = if req[..n].starts_with(b"GET / ") {
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from b\n"
                } else {
                    "HTTP/1.0 404 Not Found\r\n\r\nno such page\n"
                };
                let _ = conn.write_all(answer.as_bytes());
            }
        });
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}
