//! Test helpers: real network namespaces and private temporary state
//! directories, removed when the test ends, also when it panics.

use crate::plan::Plan;
use crate::runtime::files;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// `ip netns add` sets up /run/netns on first use; keep calls apart.
static IP_NETNS: Mutex<()> = Mutex::new(());

/// `tbrt-PID-N`, unique in this test run: names of network namespaces
/// (`/run/netns`, which only root can write), never of paths under /tmp.
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

/// A private directory for a test's files, which root then reads and runs:
/// created by `mkdir(2)` under a random name (`TMP/tbrt-XXXXXX`, never an
/// existing path or a planted symlink: another name is tried instead), mode
/// 0700, removed with its contents on drop.
pub struct TempDir {
    dir: tempfile::TempDir,
    unique: String,
}

impl TempDir {
    pub fn new() -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("tbrt-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .expect("create a private temp dir");
        let unique = dir
            .path()
            .file_name()
            .expect("a temp dir has a name")
            .to_string_lossy()
            .into_owned();
        TempDir { dir, unique }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    /// Its random name, unique on this machine while it exists.
    pub fn unique(&self) -> &str {
        &self.unique
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

/// Paths planted in the temporary directory by a test, removed on drop.
struct Planted(Vec<std::path::PathBuf>);

impl Drop for Planted {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
        }
    }
}

#[test]
fn a_temp_dir_is_new_private_and_never_a_planted_path() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Any local user can create paths in the temporary directory before a
    // test does. At the names a predictable scheme would use next
    // (`TMP/tbrt-PID-N`, as this helper once did), plant directories holding
    // a script and symlinks to another directory: the helper must use none
    // of them. TMP is where the helper creates its directories (`TMPDIR`,
    // else /tmp), so the planted names are where they would be looked for.
    let victim = tempfile::tempdir().unwrap();
    let next = COUNTER.load(Ordering::SeqCst);
    let tmp = std::env::temp_dir();
    let mut planted = Planted(Vec::new());
    for k in 0..64 {
        let p = tmp.join(format!("tbrt-{}-{}", std::process::id(), next + k));
        if k % 2 == 0 {
            std::os::unix::fs::symlink(victim.path(), &p).unwrap();
        } else {
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("run.sh"), "planted").unwrap();
        }
        planted.0.push(p);
    }
    let dir = TempDir::new();
    let other = TempDir::new();
    assert_ne!(dir.path(), other.path());
    assert!(
        !planted.0.iter().any(|p| p == dir.path()),
        "{}",
        dir.path_str()
    );
    let meta = std::fs::symlink_metadata(dir.path()).unwrap();
    assert!(meta.is_dir() && !meta.file_type().is_symlink());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a fresh, empty directory"
    );
    std::fs::write(dir.path().join("topology.yaml"), "name: x\n").unwrap();
    assert_eq!(
        std::fs::read_dir(victim.path()).unwrap().count(),
        0,
        "wrote through a planted symlink"
    );
    for p in planted.0.iter().filter(|p| p.is_dir() && !p.is_symlink()) {
        let names: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["run.sh"], "{}", p.display());
    }
    let path = dir.path().to_path_buf();
    drop(dir);
    assert!(!path.exists(), "removed on drop");
}
