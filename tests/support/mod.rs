//! Helpers for tests that build real testbeds: the `testbed` binary, unique
//! names, a guard that tears a testbed down even when the test fails, TCP
//! round trips between namespaces, and a snapshot of the root namespace.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The `testbed` binary that `cargo test --workspace` built beside this test.
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/debug");
    let bin = dir.join("testbed");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        bin.display()
    );
    bin
}

/// Runs `testbed ARGS`.
pub fn testbed(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("testbed runs")
}

/// Runs `testbed ARGS` and fails the test if it fails.
pub fn ok(args: &[&str]) -> String {
    let out = testbed(args);
    assert!(
        out.status.success(),
        "testbed {args:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A testbed name unique to this process and call (at most 12 characters).
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag.chars().take(4).collect();
    format!("{tag}{:x}{n}", std::process::id() & 0xffff)
}

/// A running testbed that is torn down when dropped, even on a panic.
pub struct Testbed {
    /// Its name.
    pub name: String,
    /// Its topology file.
    pub file: PathBuf,
}

impl Testbed {
    /// Writes `body` (a topology without its `name:` line) to a temporary
    /// file named for a fresh unique testbed.
    pub fn new(tag: &str, body: &str) -> Testbed {
        let name = unique(tag);
        let dir = std::env::temp_dir().join("testbed-tests");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, format!("name: {name}\n{body}")).expect("write topology");
        Testbed { name, file }
    }

    /// `testbed up FILE`, which must succeed.
    pub fn up(self) -> Testbed {
        ok(&[
            "up",
            self.file.to_str().expect("utf-8 path"),
            "--timeout",
            "30s",
        ]);
        self
    }

    /// The plan's namespace of a pod or machine, e.g. `pod.default.web`.
    pub fn ns(&self, rest: &str) -> String {
        format!("tb-{}.{rest}", self.name)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let out = testbed(&["down", &self.name]);
        if !out.status.success() {
            eprintln!(
                "cleanup of {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// Listens on `addr` inside `server_ns`, connects from `client_ns`, and
/// checks that a message goes there and back. Returns the error text if the
/// connection fails.
pub fn tcp_roundtrip(server_ns: &str, addr: SocketAddr, client_ns: &str) -> Result<(), String> {
    let listener = in_netns(server_ns, move || TcpListener::bind(addr))
        .map_err(|e| format!("bind {addr}: {e}"))?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        s.write_all(&buf)
    });
    let reply = in_netns(client_ns, move || -> std::io::Result<[u8; 5]> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        Ok(buf)
    })
    .map_err(|e| format!("{client_ns} -> {addr}: {e}"))?;
    server
        .join()
        .map_err(|_| "server panicked".to_string())?
        .map_err(|e| e.to_string())?;
    if &reply != b"hello" {
        return Err(format!("garbled reply {reply:?}"));
    }
    Ok(())
}

/// The root namespace's network state: links, addresses, routes, rules,
/// firewall rules and the network sysctls, as text to compare.
pub fn root_snapshot() -> String {
    let mut out = String::new();
    for args in [
        &["-d", "link", "show"][..],
        &["addr", "show"],
        &["route", "show", "table", "all"],
        &["rule", "show"],
        &["neigh", "show", "nud", "permanent"],
    ] {
        let o = Command::new("ip").args(args).output().expect("ip runs");
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    for (cmd, args) in [
        ("iptables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        if let Ok(o) = Command::new(cmd).args(args).output() {
            // iptables-save prints the time it ran; that line is not state.
            let text: String = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            out.push_str(&text);
        }
    }
    out.push_str(&sysctls(Path::new("/proc/sys/net/ipv4")));
    out
}

fn sysctls(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        // Counters and random values change by themselves.
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains("random") || name == "neigh" || name == "route" {
            continue;
        }
        if p.is_dir() {
            out.push_str(&sysctls(&p));
        } else if let Ok(v) = std::fs::read_to_string(&p) {
            out.push_str(&format!("{}={}", p.display(), v));
        }
    }
    out
}

/// What testbed `name` left on the machine: its namespaces and its state
/// directory.
pub fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("tb-{name}.");
    let mut found: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    if std::path::Path::new(&format!("/run/testbed/{name}")).exists() {
        found.push(format!("/run/testbed/{name}"));
    }
    found
}

/// The pid of testbed `name`'s daemon of `kind` (`overlay-daemon`,
/// `proxy-daemon`) for `node`, found by its pid file.
pub fn daemon_pid(name: &str, kind: &str, node: &str) -> Option<i32> {
    use testbed::state::pids::{holder, pid_path, DaemonKind};
    let kind = match kind {
        "overlay-daemon" => DaemonKind::Overlay,
        "proxy-daemon" => DaemonKind::Proxy,
        other => panic!("no daemon kind {other}"),
    };
    let dir = testbed::state::TestbedName::new(name).ok()?.dir();
    holder(&pid_path(&dir, kind, Some(node))).map(|id| id.pid)
}
