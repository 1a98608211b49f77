//! The state directory's layout, in one place: every file and directory a
//! testbed keeps under `/run/testbed/NAME/`, by name, and the paths built
//! from them. Pure names, no I/O and no dependencies, so that the planner
//! (which writes the pods' and hosts' paths into the plan) and `state`
//! (which reads and writes the files, typed) take them from the same
//! place; nothing else spells a file of the state directory.
//!
//! ```text
//! /run/testbed/NAME/
//!   plan.json        the plan the testbed runs (live changes included)
//!   spec.json        the file as last given (`up`, `apply`)
//!   live.json        the controller's live changes (faults, pins, ...)
//!   status.json      the supervisor's report of every container
//!   events.jsonl     the controller's events (and events.jsonl.1)
//!   cluster.json     a share's view of the other machines (etcd)
//!   endpoints.json   the ready pods the kernel's service rules hold
//!   control.sock     the controller's socket
//!   supervisor.log   the controller's own log
//!   supervisor.pid   its pid file (locked while it runs)
//!   resolv.conf      the resolver file every container gets
//!   mnt/             where containers' mounts are staged
//!   registry/        the file subnet registry (flannel's layout)
//!   overlay/NODE.*   a udp daemon's log, pid, counters (.stats.json)
//!                    and impairments (.impair.json)
//!   proxy/NODE.*     a userspace proxy's log, pid, readiness
//!                    (.listening) and programmed endpoints
//!                    (.endpoints.json)
//!   pods/NS/POD/     a pod's hosts file, volumes/ and logs/CONTAINER.log
//!   hosts/HOST/      the same for a host
//! ```

use std::path::{Path, PathBuf};

/// Where running testbeds keep their state.
pub const ROOT: &str = "/run/testbed";

/// The plan the testbed runs.
pub const PLAN_FILE: &str = "plan.json";
/// The topology file as last given, with the command line's choices.
pub const SPEC_FILE: &str = "spec.json";
/// The controller's live changes.
pub const LIVE_FILE: &str = "live.json";
/// The supervisor's report of every container.
pub const STATUS_FILE: &str = "status.json";
/// The controller's events.
pub const EVENTS_FILE: &str = "events.jsonl";
/// The controller's older events (the events file, rotated once).
pub const ROTATED_EVENTS_FILE: &str = "events.jsonl.1";
/// A machine's share's view of the other machines.
pub const VIEW_FILE: &str = "cluster.json";
/// The ready pods the kernel's service rules (iptables, nftables) hold.
pub const ENDPOINTS_FILE: &str = "endpoints.json";
/// The controller's control socket.
pub const SOCKET: &str = "control.sock";
/// The controller's (supervisor's) own log.
pub const SUPERVISOR_LOG: &str = "supervisor.log";
/// The supervisor's pid file.
pub const SUPERVISOR_PID: &str = "supervisor.pid";
/// The resolver file bind-mounted on every container's `/etc/resolv.conf`.
pub const RESOLV_CONF: &str = "resolv.conf";
/// Where the containers' mounts are staged before they enter them.
pub const STAGE_DIR: &str = "mnt";
/// The file subnet registry.
pub const REGISTRY_DIR: &str = "registry";
/// The udp overlay daemons' logs, pids, counters and impairments.
pub const OVERLAY_DIR: &str = "overlay";
/// The userspace proxies' logs, pids, readiness and endpoints.
pub const PROXY_DIR: &str = "proxy";
/// The pods' directories (by namespace, then pod).
pub const PODS_DIR: &str = "pods";
/// The hosts' directories.
pub const HOSTS_DIR: &str = "hosts";

/// The state directory of the testbed `name` (a checked name: see
/// `state::TestbedName`), as the plan writes it.
pub fn state_dir(name: &str) -> String {
    format!("{ROOT}/{name}")
}

/// The directory of pod `namespace/pod` in the state directory `state_dir`.
pub fn pod_dir(state_dir: &str, namespace: &str, pod: &str) -> String {
    format!("{state_dir}/{PODS_DIR}/{namespace}/{pod}")
}

/// The directory of host `host` in the state directory `state_dir`.
pub fn host_dir(state_dir: &str, host: &str) -> String {
    format!("{state_dir}/{HOSTS_DIR}/{host}")
}

/// The hosts file of a pod or host whose directory is `owner_dir`.
pub fn hosts_file(owner_dir: &str) -> String {
    format!("{owner_dir}/hosts")
}

/// Volume `volume` of a pod or host whose directory is `owner_dir`.
pub fn volume(owner_dir: &str, volume: &str) -> String {
    format!("{owner_dir}/volumes/{volume}")
}

/// The log of container `container` of a pod or host whose directory is
/// `owner_dir`.
pub fn container_log(owner_dir: &str, container: &str) -> String {
    format!("{owner_dir}/logs/{container}.log")
}

/// The plan file of the testbed whose state directory is `dir`.
pub fn plan(dir: &Path) -> PathBuf {
    dir.join(PLAN_FILE)
}

/// Its status file.
pub fn status(dir: &Path) -> PathBuf {
    dir.join(STATUS_FILE)
}

/// Its registry directory.
pub fn registry(dir: &Path) -> PathBuf {
    dir.join(REGISTRY_DIR)
}

/// Its overlay directory.
pub fn overlay(dir: &Path) -> PathBuf {
    dir.join(OVERLAY_DIR)
}

/// Its userspace proxies' directory.
pub fn proxy(dir: &Path) -> PathBuf {
    dir.join(PROXY_DIR)
}

/// The log of node `node`'s udp daemon.
pub fn overlay_log(dir: &Path, node: &str) -> PathBuf {
    overlay(dir).join(format!("{node}.log"))
}

/// The counters node `node`'s udp daemon writes.
pub fn overlay_stats(dir: &Path, node: &str) -> PathBuf {
    overlay(dir).join(format!("{node}.stats.json"))
}

/// The impairments node `node`'s udp daemon follows.
pub fn overlay_impairments(dir: &Path, node: &str) -> PathBuf {
    overlay(dir).join(format!("{node}.impair.json"))
}

/// The log of node `node`'s userspace proxy.
pub fn proxy_log(dir: &Path, node: &str) -> PathBuf {
    proxy(dir).join(format!("{node}.log"))
}

/// The file node `node`'s userspace proxy writes once it listens.
pub fn proxy_listening(dir: &Path, node: &str) -> PathBuf {
    proxy(dir).join(format!("{node}.listening"))
}

/// The ready pods a data path holds: the kernel rules' (`node` None) or
/// node `node`'s userspace proxy's.
pub fn endpoints(dir: &Path, node: Option<&str>) -> PathBuf {
    match node {
        None => dir.join(ENDPOINTS_FILE),
        Some(n) => proxy(dir).join(format!("{n}.endpoints.json")),
    }
}

/// The pid file of the supervisor.
pub fn supervisor_pid(dir: &Path) -> PathBuf {
    dir.join(SUPERVISOR_PID)
}

/// The pid file of a node's daemon whose files are in `daemon_dir`
/// ([`OVERLAY_DIR`] or [`PROXY_DIR`]).
pub fn daemon_pid(dir: &Path, daemon_dir: &str, node: &str) -> PathBuf {
    dir.join(daemon_dir).join(format!("{node}.pid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_side_paths_are_the_state_directory_s() {
        let dir = state_dir("lab");
        assert_eq!(dir, "/run/testbed/lab");
        let pod = pod_dir(&dir, "default", "web-0");
        assert_eq!(pod, "/run/testbed/lab/pods/default/web-0");
        assert_eq!(host_dir(&dir, "h1"), "/run/testbed/lab/hosts/h1");
        assert_eq!(hosts_file(&pod), format!("{pod}/hosts"));
        assert_eq!(volume(&pod, "data"), format!("{pod}/volumes/data"));
        assert_eq!(container_log(&pod, "c"), format!("{pod}/logs/c.log"));
        let d = Path::new(&dir);
        assert_eq!(
            endpoints(d, Some("n1")),
            Path::new("/run/testbed/lab/proxy/n1.endpoints.json")
        );
        assert_eq!(
            daemon_pid(d, OVERLAY_DIR, "n1"),
            Path::new("/run/testbed/lab/overlay/n1.pid")
        );
    }
}
