//! Helpers for tests that build real testbeds: the `testbed` binary, unique
//! names, private directories for the files root runs, a guard that tears a
//! testbed down even when the test fails, TCP round trips between
//! namespaces, (in `snapshot`) the network state of a namespace, and (in
//! `machines`) emulated machines for tests that span several.
#![allow(dead_code)]

pub mod machines;
pub mod snapshot;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
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

/// A private directory for files that root reads or runs (topologies): a
/// random name made by `mkdir(2)`, so never an existing path or a planted
/// symlink (another name is tried instead), mode 0700, removed with its
/// contents on drop.
pub fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("testbed-tests-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("a private temporary directory")
}

/// A running testbed that is torn down when dropped, even on a panic.
pub struct Testbed {
    /// Its name.
    pub name: String,
    /// Its topology file, in `dir`.
    pub file: PathBuf,
    /// The private directory holding the file (and any other the test
    /// writes for this testbed).
    pub dir: tempfile::TempDir,
}

impl Testbed {
    /// Writes `body` (a topology without its `name:` line) to a file of a
    /// private directory, for a fresh unique testbed.
    pub fn new(tag: &str, body: &str) -> Testbed {
        let name = unique(tag);
        let dir = private_dir();
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, format!("name: {name}\n{body}")).expect("write topology");
        Testbed { name, file, dir }
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
    }
}

/// The repository's root (examples live under `topologies/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Brings example `topologies/EXAMPLE.yaml` up under a unique name (its
/// `name:` line replaced), as it is otherwise; torn down when dropped.
pub fn example_up(example: &str) -> Testbed {
    let text = std::fs::read_to_string(repo().join(format!("topologies/{example}.yaml")))
        .expect("example topology");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("name:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let tag: String = example
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .collect();
    let tb = Testbed::new(&format!("x{tag}"), &body);
    let out = testbed(&["up", tb.file.to_str().expect("utf-8"), "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "up {example}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tb
}

/// `testbed check NAME --checks topologies/checks/EXAMPLE.yaml --json` of
/// running example `tb`: its exit code and the report (stderr appended
/// when it failed, for the assertion's message).
pub fn check_example(tb: &Testbed, example: &str) -> (Option<i32>, String) {
    let file = repo().join(format!("topologies/checks/{example}.yaml"));
    let out = testbed(&[
        "check",
        &tb.name,
        "--checks",
        file.to_str().expect("utf-8"),
        "--json",
    ]);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code(), text)
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
    tcp_through(server_ns, addr, client_ns, addr)
}

/// Like [`tcp_roundtrip`], but the client connects to `to` (a service's
/// address, say) while the server listens on `listen`.
/// Binds `addr`, trying again for up to 2 s while it is in use: a listener
/// this process just closed on the same port can still be held for a moment
/// by a child another test thread is starting (it holds copies of every
/// descriptor until it executes).
pub fn bind_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

pub fn tcp_through(
    server_ns: &str,
    listen: SocketAddr,
    client_ns: &str,
    to: SocketAddr,
) -> Result<(), String> {
    let listener = in_netns(server_ns, move || bind_again(listen))
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        s.write_all(&buf)
    });
    let reply = in_netns(client_ns, move || -> std::io::Result<[u8; 5]> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"hello")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        Ok(buf)
    })
    .map_err(|e| format!("{client_ns} -> {to}: {e}"))?;
    server
        .join()
        .map_err(|_| "server panicked".to_string())?
        .map_err(|e| e.to_string())?;
    if &reply != b"hello" {
        return Err(format!("garbled reply {reply:?}"));
    }
    Ok(())
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
    holder(&pid_path(&dir, kind, node)).map(|id| id.pid)
}

/// `testbed status NAME --json` of `tb`: its one report.
pub fn status(tb: &Testbed) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["status", &tb.name, "--json"])).expect("status JSON");
    v[0].clone()
}

/// Polls `tb`'s status (20 s at most) until `f` holds; returns that status.
pub fn wait_for(
    tb: &Testbed,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = status(tb);
        if f(&st) {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
