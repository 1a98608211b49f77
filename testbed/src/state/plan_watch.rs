//! Following a running testbed's plan file (`plan.json`), which the
//! controller replaces (atomically, by rename) whenever the desired state
//! changes: readers in other threads and processes (the endpoint follower,
//! the userspace proxies) look at its identity cheaply and read it again
//! only when it changed.

use crate::plan::Plan;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A plan file and the version of it last read.
#[derive(Debug)]
pub struct PlanWatch {
    path: PathBuf,
    seen: Option<(u64, i64, i64, u64)>,
}

impl PlanWatch {
    /// Watches `path`; the first [`PlanWatch::changed`] reads it.
    pub fn new(path: PathBuf) -> Self {
        PlanWatch { path, seen: None }
    }

    /// The plan, if the file changed since the last call and parses.
    pub fn changed(&mut self) -> Option<Plan> {
        let m = std::fs::metadata(&self.path).ok()?;
        let id = (m.ino(), m.mtime(), m.mtime_nsec(), m.len());
        if self.seen == Some(id) {
            return None;
        }
        let text = std::fs::read_to_string(&self.path).ok()?;
        let plan = serde_json::from_str(&text).ok()?;
        self.seen = Some(id);
        Some(plan)
    }
}
