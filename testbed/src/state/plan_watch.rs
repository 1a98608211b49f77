//! Following a running testbed's plan file (`plan.json`), which the
//! controller replaces (atomically, by rename) whenever the desired state
//! changes: readers in other threads and processes (the endpoint follower,
//! the userspace proxies) look at its identity cheaply and read it again
//! only when it changed.

use crate::plan::Plan;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The identity of a file replaced by rename (inode, modification time,
/// size), to tell cheaply whether it changed.
#[derive(Debug)]
pub struct FileIdentity {
    path: PathBuf,
    seen: Option<(u64, i64, i64, u64)>,
}

impl FileIdentity {
    /// Follows `path`; the first [`FileIdentity::changed`] says yes.
    pub fn new(path: PathBuf) -> Self {
        FileIdentity { path, seen: None }
    }

    /// Whether the file changed since the last call (a missing file has
    /// not).
    pub fn changed(&mut self) -> bool {
        let Ok(m) = std::fs::metadata(&self.path) else {
            return false;
        };
        let id = (m.ino(), m.mtime(), m.mtime_nsec(), m.len());
        let changed = self.seen != Some(id);
        self.seen = Some(id);
        changed
    }
}

/// A plan file and the version of it last read.
#[derive(Debug)]
pub struct PlanWatch {
    file: FileIdentity,
}

impl PlanWatch {
    /// Watches `path`; the first [`PlanWatch::changed`] reads it.
    pub fn new(path: PathBuf) -> Self {
        PlanWatch {
            file: FileIdentity::new(path),
        }
    }

    /// The plan, if the file changed since the last call and parses.
    pub fn changed(&mut self) -> Option<Plan> {
        if !self.file.changed() {
            return None;
        }
        super::files::JsonFile::<Plan>::new(self.file.path.clone(), "plan", true)
            .read()
            .ok()
    }
}
