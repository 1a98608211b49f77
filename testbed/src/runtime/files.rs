//! The files a testbed's containers need before any of them starts: the
//! state directory, every pod's and host's hosts file, every volume's
//! directory and every container's log directory. `prepare` is idempotent:
//! it creates what is missing, rewrites a hosts file only when its text
//! changed, and never truncates a log or empties a volume.
//!
//! Every path it writes must lie inside the plan's state directory; a plan
//! that says otherwise (a hand-edited `plan.json`) is refused, so this never
//! writes anywhere else on the host.

use crate::plan::hosts::HostsFiles;
use crate::plan::Plan;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tracing::debug;

/// Why the state files could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file system operation failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done (`create directory`, `write`).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The state directory is not an absolute path below `/`.
    #[error("state directory `{0}` must be an absolute path below / without `..`")]
    BadStateDir(String),
    /// A path of the plan lies outside the state directory.
    #[error("{path} is not inside the state directory {state_dir}; refusing to write it")]
    Outside {
        /// The path.
        path: String,
        /// The state directory.
        state_dir: String,
    },
}

/// The resolver configuration every container sees, under the state
/// directory. Names come from `/etc/hosts`; the testbed has no DNS server, so
/// lookups that fall through to DNS (an IPv6 lookup of a name that has only an
/// IPv4 entry, a name that does not exist) must fail at once instead of
/// waiting for the host's name servers, which pods cannot reach.
pub use crate::layout::RESOLV_CONF;

const RESOLV_TEXT: &str =
    "# written by testbed: names come from /etc/hosts; there is no DNS server\n\
nameserver 127.0.0.1\noptions timeout:1 attempts:1 ndots:0\n";

/// Creates the state directory tree of `plan`: hosts files (from
/// [`Plan::hosts_file`]), the resolver configuration, volume directories and
/// log directories.
pub fn prepare(plan: &Plan) -> Result<(), FilesError> {
    let state = state_dir(&plan.state_dir)?;
    crate::state::create_private_dir(state).map_err(|source| FilesError::Io {
        what: "create directory",
        path: state.to_path_buf(),
        source,
    })?;
    write_if_changed(&state.join(RESOLV_CONF), RESOLV_TEXT)?;
    let mut hosts = HostsFiles::new(plan);
    let mut placed = Placed::default();
    for pod in &plan.pods {
        let text = hosts.text(&pod.namespace, &pod.hostname, pod.ip);
        placed.place(&inside(state, &pod.hosts_file)?, text)?;
        for v in &pod.volumes {
            mkdir(&inside(state, &v.path)?)?;
        }
        for c in &pod.containers {
            log_dir(state, &c.log)?;
        }
    }
    for host in &plan.hosts {
        let text = hosts.text("default", &host.name, Some(host.ip));
        placed.place(&inside(state, &host.hosts_file)?, text)?;
        for c in &host.containers {
            log_dir(state, &c.log)?;
        }
    }
    debug!(state_dir = %plan.state_dir, "state files prepared");
    Ok(())
}

/// Hosts files written so far, by text: the first file of a text is
/// written, every other one is a hard link to it, so that thousands of pods
/// of one namespace share one file's bytes.
#[derive(Default)]
struct Placed {
    /// By the address of the shared text (kept alive here): its first
    /// file and that file's inode.
    first: HashMap<usize, (PathBuf, u64, Arc<str>)>,
}

impl Placed {
    fn place(&mut self, path: &Path, text: Arc<str>) -> Result<(), FilesError> {
        let key = Arc::as_ptr(&text) as *const u8 as usize;
        let io = |what, source| FilesError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
        let Some((first, inode, _)) = self.first.get(&key) else {
            write_if_changed(path, &text)?;
            let inode = fs::metadata(path).map_err(|e| io("read", e))?.ino();
            self.first.insert(key, (path.to_path_buf(), inode, text));
            return Ok(());
        };
        match fs::metadata(path) {
            Ok(m) if m.ino() == *inode => Ok(()),
            // A file of its own: rewritten in place if it differs (a
            // running container has it bind-mounted).
            Ok(_) => write_if_changed(path, &text),
            Err(_) => {
                if let Some(dir) = path.parent() {
                    mkdir(dir)?;
                }
                fs::hard_link(first, path).map_err(|e| io("link", e))
            }
        }
    }
}

/// Moves every path of `plan` that lies under its state directory to the
/// same place under `new_state_dir`, and makes that the state directory.
/// (Tests run under a temporary directory this way.)
pub fn relocate(plan: &mut Plan, new_state_dir: &str) {
    let old = plan.state_dir.clone();
    let new = new_state_dir.trim_end_matches('/').to_string();
    let move_path = |p: &mut String| {
        if let Some(rest) = p.strip_prefix(&old) {
            if rest.is_empty() || rest.starts_with('/') {
                *p = format!("{new}{rest}");
            }
        }
    };
    for pod in &mut plan.pods {
        move_path(&mut pod.hosts_file);
        for v in &mut pod.volumes {
            move_path(&mut v.path);
        }
        for c in &mut pod.containers {
            move_path(&mut c.log);
            for m in &mut c.mounts {
                move_path(&mut m.source);
            }
        }
    }
    for host in &mut plan.hosts {
        move_path(&mut host.hosts_file);
        for c in &mut host.containers {
            move_path(&mut c.log);
            for m in &mut c.mounts {
                move_path(&mut m.source);
            }
        }
    }
    plan.state_dir = new;
}

/// The state directory, checked: absolute, not `/`, no `..`.
pub(crate) fn state_dir(dir: &str) -> Result<&Path, FilesError> {
    let p = Path::new(dir);
    let normal = p.is_absolute()
        && p.components().count() > 1
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if normal {
        Ok(p)
    } else {
        Err(FilesError::BadStateDir(dir.to_string()))
    }
}

/// `path`, if it lies strictly inside `state` (component-wise, no `..`).
pub(crate) fn inside(state: &Path, path: &str) -> Result<PathBuf, FilesError> {
    let p = Path::new(path);
    let ok = p != state
        && p.starts_with(state)
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(FilesError::Outside {
            path: path.to_string(),
            state_dir: state.display().to_string(),
        })
    }
}

/// Creates the directory of the log file `log` (not the file: containers
/// append to it, and it is created when the first one starts).
fn log_dir(state: &Path, log: &str) -> Result<(), FilesError> {
    let log = inside(state, log)?;
    match log.parent() {
        Some(dir) => mkdir(dir),
        None => Ok(()),
    }
}

/// `mkdir -p`.
pub(crate) fn mkdir(dir: &Path) -> Result<(), FilesError> {
    fs::create_dir_all(dir).map_err(|source| FilesError::Io {
        what: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `text` to `path` (creating its directory) unless it holds exactly
/// that already. The file is rewritten in place rather than replaced, so
/// containers that have it bind-mounted as `/etc/hosts` see the new text.
fn write_if_changed(path: &Path, text: &str) -> Result<(), FilesError> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        mkdir(dir)?;
    }
    fs::write(path, text).map_err(|source| FilesError::Io {
        what: "write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testutil::{load_plan, TempDir};

    const TOPO: &str = r#"
name: files
nodes: [{name: n1}]
hosts:
  - name: box
    containers: [{name: main, command: [sleep, infinity]}]
pods:
  - name: web
    volumes: [{name: data}]
    containers:
      - name: a
        command: [sleep, infinity]
        volumeMounts: [{name: data, mountPath: /data}]
"#;

    #[test]
    fn prepare_writes_hosts_files_and_directories_idempotently() {
        let dir = TempDir::new();
        let plan = load_plan(TOPO, &dir, None);
        prepare(&plan).expect("prepare");
        let pod = &plan.pods[0];
        let hosts = fs::read_to_string(&pod.hosts_file).expect("pod hosts file");
        assert_eq!(hosts, plan.hosts_file("default", "web", pod.ip));
        assert!(hosts.contains("\tweb"), "{hosts}");
        let host = &plan.hosts[0];
        let hosts = fs::read_to_string(&host.hosts_file).expect("host hosts file");
        assert_eq!(hosts, plan.hosts_file("default", "box", Some(host.ip)));
        assert!(Path::new(&pod.volumes[0].path).is_dir());
        assert!(Path::new(&pod.containers[0].log).parent().unwrap().is_dir());
        assert!(Path::new(&host.containers[0].log)
            .parent()
            .unwrap()
            .is_dir());
        assert!(pod.hosts_file.starts_with(&dir.path_str()));

        // A second run keeps what is there: volume contents and logs.
        fs::write(format!("{}/kept", pod.volumes[0].path), "x").unwrap();
        fs::write(&pod.containers[0].log, "log line\n").unwrap();
        prepare(&plan).expect("prepare again");
        assert_eq!(
            fs::read_to_string(format!("{}/kept", pod.volumes[0].path)).unwrap(),
            "x"
        );
        assert_eq!(
            fs::read_to_string(&pod.containers[0].log).unwrap(),
            "log line\n"
        );
    }

    #[test]
    fn paths_outside_the_state_dir_are_refused() {
        let dir = TempDir::new();
        let mut plan = load_plan(TOPO, &dir, None);
        plan.pods[0].volumes[0].path = format!("{}/../escape", plan.state_dir);
        let err = prepare(&plan).unwrap_err().to_string();
        assert!(err.contains("not inside the state directory"), "{err}");
        plan.state_dir = "/".into();
        assert!(matches!(prepare(&plan), Err(FilesError::BadStateDir(_))));
    }
}
