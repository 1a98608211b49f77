//! Test helpers: real network namespaces and temporary state directories
//! that are removed by name when the test ends, also when it panics.

use crate::plan::Plan;
use crate::runtime::files;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// `ip netns add` sets up /run/netns on first use; keep calls apart.
static IP_NETNS: Mutex<()> = Mutex::new(());

/// `tbrt-PID-N`, unique in this test run.
pub fn unique() -> String {
    format!(
        "tbrt-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn ip(args: &[&str]) -> bool {
    let _g = IP_NETNS.lock().unwrap_or_else(|e| e.into_inner());
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace `/run/netns/tbrt-PID-N` with loopback up, deleted
/// (by that name) on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique();
        assert!(ip(&["netns", "add", &name]), "ip netns add {name}");
        let ns = Netns { name };
        assert!(
            ip(&["-n", &ns.name, "link", "set", "lo", "up"]),
            "lo up in {}",
            ns.name
        );
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !ip(&["netns", "delete", &self.name]) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}

/// A directory `/tmp/tbrt-PID-N`, removed on drop.
pub struct TempDir {
    path: PathBuf,
    unique: String,
}

impl TempDir {
    pub fn new() -> TempDir {
        let unique = unique();
        let path = PathBuf::from(format!("/tmp/{unique}"));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path, unique }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// The unique part of its name.
    pub fn unique(&self) -> &str {
        &self.unique
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Plans `yaml` with its state directory under `dir` and, with `netns`,
/// every namespace of the plan replaced by that one.
pub fn load_plan(yaml: &str, dir: &TempDir, netns: Option<&Netns>) -> Plan {
    let mut plan = match crate::load_str("test.yaml", yaml.to_string()) {
        Ok(l) => l.plan,
        Err(e) => panic!("{}", e.render()),
    };
    files::relocate(&mut plan, &format!("{}/state", dir.path_str()));
    if let Some(ns) = netns {
        plan.fabric.netns = ns.name.clone();
        for n in &mut plan.nodes {
            n.netns = ns.name.clone();
        }
        for h in &mut plan.hosts {
            h.netns = ns.name.clone();
        }
        for p in &mut plan.pods {
            p.netns = ns.name.clone();
        }
    }
    plan
}
