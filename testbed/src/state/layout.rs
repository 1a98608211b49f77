//! The state directory's layout, in one place: every file and directory a
//! testbed keeps under `/run/testbed/NAME/`, by name. The modules that read
//! and write them take their names (and their paths, below) from here;
//! nothing else spells a file of the state directory.
//!
//! ```text
//! /run/testbed/NAME/
//!   plan.json        the plan the testbed runs (live changes included)
//!   spec.json        the file as last given (`up`, `apply`)
//!   live.json        the controller's live changes (faults, pins, ...)
//!   status.json      the supervisor's report of every container
//!   events.jsonl     the controller's events (and events.jsonl.1)
//!   cluster.json     a share's view of the other machines (etcd)
//!   control.sock     the controller's socket
//!   supervisor.log   the controller's own log
//!   registry/        the file subnet registry (flannel's layout)
//!   overlay/         the udp daemons' logs, counters and impairments
//!   pods/NS/POD/     a pod's files, volumes and container logs
//! ```

use std::path::{Path, PathBuf};

/// The plan the testbed runs.
pub const PLAN_FILE: &str = "plan.json";
/// The topology file as last given, with the command line's choices.
pub const SPEC_FILE: &str = "spec.json";
/// The controller's live changes.
pub const LIVE_FILE: &str = "live.json";
/// The supervisor's report of every container.
pub const STATUS_FILE: &str = "status.json";
/// The controller's events (rotated to `events.jsonl.1`).
pub const EVENTS_FILE: &str = "events.jsonl";
/// A machine's share's view of the other machines.
pub const VIEW_FILE: &str = "cluster.json";
/// The controller's control socket.
pub const SOCKET: &str = "control.sock";
/// The controller's (supervisor's) own log.
pub const SUPERVISOR_LOG: &str = "supervisor.log";
/// The file subnet registry.
pub const REGISTRY_DIR: &str = "registry";
/// The udp overlay daemons' logs, counters and impairments.
pub const OVERLAY_DIR: &str = "overlay";

/// The plan file of the testbed whose state directory is `dir`.
pub fn plan(dir: &Path) -> PathBuf {
    dir.join(PLAN_FILE)
}

/// Its registry directory.
pub fn registry(dir: &Path) -> PathBuf {
    dir.join(REGISTRY_DIR)
}

/// Its overlay directory.
pub fn overlay(dir: &Path) -> PathBuf {
    dir.join(OVERLAY_DIR)
}
