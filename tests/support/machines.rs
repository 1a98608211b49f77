//! Emulated machines for tests that span several: each is a network and a
//! mount namespace of its own, held by a `sleep` process, with a private
//! tmpfs on `/run` (so its `/run/netns` and `/run/testbed` are its own) and
//! loopback up; [`pair`] joins two by a veth pair, `eth0` on each, as their
//! physical network (192.0.2.1/24 and 192.0.2.2/24). A command runs "on" a
//! machine ([`Machine::run`]) in both its namespaces; code of the test runs
//! in its network namespace with [`Machine::in_netns`], and reaches its
//! files through [`Machine::path`]. Nothing is named on the test host: a
//! machine's namespaces, and every namespace named under its `/run/netns`,
//! go when its holder is killed on drop.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// One emulated machine.
pub struct Machine {
    /// Its address on the physical network, once joined.
    pub address: std::net::Ipv4Addr,
    holder: Child,
    net: File,
    mnt: File,
}

impl Machine {
    /// A new machine with loopback up and nothing else.
    pub fn new() -> Machine {
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: only system calls between fork and exec, with static
        // strings: no allocation, no lock.
        unsafe {
            cmd.pre_exec(|| {
                let check = |r: libc::c_int| {
                    if r != 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                };
                check(libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS))?;
                check(libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"mode=755".as_ptr().cast(),
                ))
            });
        }
        let mut holder = cmd.spawn().expect("starting a machine's holder process");
        let pid = holder.id();
        let open = |kind: &str| File::open(format!("/proc/{pid}/ns/{kind}"));
        let (net, mnt) = match (open("net"), open("mnt")) {
            (Ok(net), Ok(mnt)) => (net, mnt),
            (Err(e), _) | (_, Err(e)) => {
                let _ = holder.kill();
                let _ = holder.wait();
                panic!("machine {pid}'s namespaces: {e}");
            }
        };
        let m = Machine {
            address: std::net::Ipv4Addr::UNSPECIFIED,
            net,
            mnt,
            holder,
        };
        m.ok("ip", &["link", "set", "lo", "up"]);
        m
    }

    /// The holder's pid: `/proc/PID/ns/net` is the machine's namespace.
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// Path `p` (absolute) as the machine sees it, e.g. one of its named
    /// namespaces, `/run/netns/X`.
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.pid()))
    }

    /// `program args` as a command that runs on the machine (in its
    /// network and mount namespaces).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let (net, mnt) = (self.net.as_raw_fd(), self.mnt.as_raw_fd());
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null());
        // SAFETY: setns only, between fork and exec; the child is
        // single-threaded, as entering a mount namespace requires.
        unsafe {
            cmd.pre_exec(move || {
                for (fd, kind) in [(net, libc::CLONE_NEWNET), (mnt, libc::CLONE_NEWNS)] {
                    if libc::setns(fd, kind) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs `program args` on the machine (in its network and mount
    /// namespaces) and returns its output whatever its status.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} on machine {}: {e}", self.pid()))
    }

    /// Runs `program args` on the machine, failing the test if it fails;
    /// returns its standard output.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "on machine {}: {program} {args:?} failed ({}): {}{}",
            self.pid(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside the machine's network namespace (its
    /// mount namespace stays the test's: use [`Machine::path`] for files).
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(self.net.try_clone().expect("machine namespace"), f)
    }

    /// Runs `f` on a thread inside the machine's named network namespace
    /// `name` (its `/run/netns/NAME`). Sockets made there stay there.
    pub fn in_named_netns<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path(&format!("/run/netns/{name}"));
        let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        in_ns(file, f)
    }

    /// The machine's links, addresses, routes and rules, as text to compare.
    pub fn network_state(&self) -> String {
        [
            &["-d", "link", "show"][..],
            &["addr", "show"],
            &["-4", "route", "show", "table", "all"],
            &["-4", "rule", "show"],
        ]
        .iter()
        .map(|args| format!("## ip {}\n{}", args.join(" "), self.ok("ip", args)))
        .collect()
    }
}

/// Runs `f` on a thread inside network namespace `net`.
fn in_ns<T: Send>(net: File, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(net.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("entering a machine's namespace");
            f()
        })
        .join()
        .expect("thread on a machine")
    })
}

impl Machine {
    /// The inodes of the machine's network and mount namespaces and of
    /// every namespace named in its `/run/netns`.
    fn namespaces(&self) -> HashSet<u64> {
        let mut out: HashSet<u64> = [&self.net, &self.mnt]
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.ino())
            .collect();
        if let Ok(dir) = std::fs::read_dir(self.path("/run/netns")) {
            out.extend(
                dir.flatten()
                    .filter_map(|e| std::fs::metadata(e.path()).ok())
                    .map(|m| m.ino()),
            );
        }
        out
    }

    /// Kills (by pid) every process in one of `namespaces` but the holder:
    /// what a test left running on the machine (a testbed it did not take
    /// down: its supervisor, daemons and containers). Returns how many.
    fn kill_inside(&self, namespaces: &HashSet<u64>) -> usize {
        let holder = self.pid() as i32;
        let inside = |pid: i32| {
            ["net", "mnt"].iter().any(|kind| {
                std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
                    .is_ok_and(|m| namespaces.contains(&m.ino()))
            })
        };
        let pids: Vec<i32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&pid| pid != holder && inside(pid))
            .collect();
        for &pid in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        pids.len()
    }
}

impl Drop for Machine {
    /// Ends what runs on the machine, then the holder: its namespaces, and
    /// every namespace named under its `/run`, go with the last process.
    /// A test that brings a testbed up on a machine should still take it
    /// down (a guard dropped first): this is the safety net.
    fn drop(&mut self) {
        let namespaces = self.namespaces();
        for _ in 0..5 {
            if self.kill_inside(&namespaces) == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Two machines whose `eth0` share a network: 192.0.2.1/24 and
/// 192.0.2.2/24, MTU 1500.
pub fn pair() -> (Machine, Machine) {
    let mut a = Machine::new();
    let mut b = Machine::new();
    let peer_ns = b.pid().to_string();
    a.ok(
        "ip",
        &[
            "link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", "eth0", "netns",
            &peer_ns,
        ],
    );
    for (m, addr) in [(&mut a, "192.0.2.1"), (&mut b, "192.0.2.2")] {
        // No IPv6 link-local address: its duplicate address detection would
        // change the machine's state by itself while a test compares it.
        m.ok("ip", &["link", "set", "eth0", "addrgenmode", "none"]);
        m.ok("ip", &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        m.ok("ip", &["link", "set", "eth0", "up"]);
        m.address = addr.parse().expect("an address");
    }
    // Settled: both ends have a carrier.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for m in [&a, &b] {
        while !m
            .ok("ip", &["-br", "link", "show", "eth0"])
            .contains(" UP ")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "machine {}'s eth0 has no carrier",
                m.pid()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    (a, b)
}
