//! The supervisor's status file, `STATE_DIR/status.json`, as data: per
//! container of every pod and host its pid, state, restarts, last exit and
//! readiness, and how to describe it. The supervisor (`runtime::supervise`)
//! writes it, [`crate::state::files::status`] reads and writes it, `up`
//! waits on it (`runtime::status::wait_ready`), `status` shows it.

use serde::{Deserialize, Serialize};

/// What a container belongs to: a pod or a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    /// A pod on a node.
    Pod,
    /// A machine on the LAN outside the cluster.
    Host,
}

/// `pod web-0`, `pod other/web-0` (outside `default`), `host h1`.
pub fn owner_label(kind: OwnerKind, namespace: Option<&str>, name: &str) -> String {
    match (kind, namespace) {
        (OwnerKind::Host, _) => format!("host {name}"),
        (OwnerKind::Pod, Some(ns)) if ns != "default" => format!("pod {ns}/{name}"),
        (OwnerKind::Pod, _) => format!("pod {name}"),
    }
}

/// The whole status file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The testbed's name.
    pub name: String,
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// Whether the supervisor is stopping (or has stopped) its containers.
    pub stopping: bool,
    /// Every container of every pod, then of every host, in plan order.
    pub containers: Vec<ContainerStatus>,
}

/// One container's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Pod or host.
    pub kind: OwnerKind,
    /// The pod's namespace (pods only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub namespace: Option<String>,
    /// The pod's or host's name.
    pub owner: String,
    /// The container's name.
    pub container: String,
    /// Its process, while it runs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<i32>,
    /// When that process started (clock ticks after boot, as
    /// `/proc/PID/stat` says): with the pid, it names the process for
    /// sure, so a supervisor started again can take it over.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_time: Option<u64>,
    /// What it is doing.
    pub state: State,
    /// How often it was started again.
    pub restarts: u32,
    /// How its last run ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_exit: Option<Exit>,
    /// Whether it runs and its readiness check passed (at once for
    /// containers without one).
    pub ready: bool,
    /// Its readiness check: a TCP port on 127.0.0.1 in its network namespace.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ready_tcp: Option<u16>,
    /// Why its last start failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Its log file.
    pub log: String,
}

/// What a container is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its process runs.
    Running,
    /// Not running, to be started (again) after a back-off.
    Waiting,
    /// Ended with exit code 0 and stays ended (by its restart policy).
    Exited,
    /// Ended otherwise (or could not start) and stays ended.
    Failed,
}

/// How a process ended. As JSON an object with exactly one field: `code`,
/// `signal` or `unknown` (true).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ExitRepr", into = "ExitRepr")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It ended while no supervisor was its parent (it was taken over by a
    /// supervisor started again), so how is unknown; counts as a failure.
    Unknown,
}

/// [`Exit`] as JSON.
#[derive(Serialize, Deserialize)]
struct ExitRepr {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    unknown: Option<bool>,
}

impl From<Exit> for ExitRepr {
    fn from(e: Exit) -> ExitRepr {
        let none = ExitRepr {
            code: None,
            signal: None,
            unknown: None,
        };
        match e {
            Exit::Code(c) => ExitRepr {
                code: Some(c),
                ..none
            },
            Exit::Signal(s) => ExitRepr {
                signal: Some(s),
                ..none
            },
            Exit::Unknown => ExitRepr {
                unknown: Some(true),
                ..none
            },
        }
    }
}

impl TryFrom<ExitRepr> for Exit {
    type Error = &'static str;
    fn try_from(r: ExitRepr) -> Result<Exit, Self::Error> {
        match (r.code, r.signal, r.unknown) {
            (Some(c), None, None) => Ok(Exit::Code(c)),
            (None, Some(s), None) => Ok(Exit::Signal(s)),
            (None, None, Some(true)) => Ok(Exit::Unknown),
            _ => Err("an exit is exactly one of `code`, `signal` or `unknown: true`"),
        }
    }
}

impl Exit {
    /// Whether this is exit code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
            Exit::Unknown => write!(
                f,
                "ended (how is unknown: it was started by an earlier supervisor)"
            ),
        }
    }
}

impl ContainerStatus {
    /// `pod web-0 container http`.
    pub fn label(&self) -> String {
        format!(
            "{} container {}",
            owner_label(self.kind, self.namespace.as_deref(), &self.owner),
            self.container
        )
    }

    /// Whether `up` need not wait for it any more: it runs and is ready, or
    /// it ended successfully for good.
    pub fn settled(&self) -> bool {
        match self.state {
            State::Running => self.ready,
            State::Exited => true,
            State::Waiting | State::Failed => false,
        }
    }

    /// One line on where it stands, for messages:
    /// `pod web-0 container http: exited with code 127 (restarted 3 times), see log /run/...`.
    pub fn describe(&self) -> String {
        let restarted = match self.restarts {
            1 => " (restarted once)".to_string(),
            n => format!(" (restarted {n} times)"),
        };
        let ended = match (&self.error, self.last_exit) {
            (Some(e), _) => format!("could not start: {e}"),
            (None, Some(exit)) => exit.to_string(),
            (None, None) => "not started yet".to_string(),
        };
        let what = match self.state {
            State::Running if self.ready => format!("running (pid {}), ready", self.pid.unwrap_or(0)),
            State::Running => match self.ready_tcp {
                Some(port) => format!(
                    "running (pid {}) but not accepting connections on tcp port {port} yet{restarted}",
                    self.pid.unwrap_or(0)
                ),
                None => format!("running (pid {}), not ready yet", self.pid.unwrap_or(0)),
            },
            State::Waiting => format!("{ended}{restarted}, waiting to be started again"),
            State::Exited | State::Failed => format!("{ended}{restarted}, not restarted"),
        };
        format!("{}: {what}, see log {}", self.label(), self.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_objects_with_one_field() {
        for (exit, json) in [
            (Exit::Code(3), r#"{"code":3}"#),
            (Exit::Signal(9), r#"{"signal":9}"#),
            (Exit::Unknown, r#"{"unknown":true}"#),
        ] {
            assert_eq!(serde_json::to_string(&exit).unwrap(), json);
            assert_eq!(serde_json::from_str::<Exit>(json).unwrap(), exit);
        }
        assert!(serde_json::from_str::<Exit>(r#"{"code":1,"signal":9}"#).is_err());
        assert!(serde_json::from_str::<Exit>(r#"{"unknown":false}"#).is_err());
    }

    fn container(state: State, ready: bool) -> ContainerStatus {
        ContainerStatus {
            kind: OwnerKind::Pod,
            namespace: Some("default".into()),
            owner: "web-0".into(),
            container: "http".into(),
            pid: None,
            start_time: None,
            state,
            restarts: 3,
            last_exit: Some(Exit::Code(127)),
            ready,
            ready_tcp: Some(8080),
            error: None,
            log: "/run/testbed/x/pods/default/web-0/logs/http.log".into(),
        }
    }

    #[test]
    fn descriptions_name_the_container_its_exit_restarts_and_log() {
        let c = container(State::Waiting, false);
        assert_eq!(
            c.describe(),
            "pod web-0 container http: exited with code 127 (restarted 3 times), waiting to be started again, see log /run/testbed/x/pods/default/web-0/logs/http.log"
        );
        let mut c = container(State::Running, false);
        c.pid = Some(42);
        c.restarts = 0;
        assert!(c
            .describe()
            .contains("running (pid 42) but not accepting connections on tcp port 8080 yet"));
        let mut c = container(State::Failed, false);
        c.last_exit = Some(Exit::Signal(9));
        c.namespace = Some("other".into());
        c.restarts = 1;
        assert!(c.describe().starts_with("pod other/web-0 container http: killed by signal 9 (SIGKILL) (restarted once), not restarted"));
        assert!(!container(State::Running, false).settled());
        assert!(container(State::Running, true).settled());
        assert!(container(State::Exited, false).settled());
        assert!(!container(State::Failed, false).settled());
    }

    #[test]
    fn the_file_round_trips_and_is_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let status = Status {
            name: "x".into(),
            supervisor_pid: 1,
            stopping: false,
            containers: vec![container(State::Running, true)],
        };
        let file = crate::state::files::status(dir.path());
        file.write(&status).unwrap();
        assert_eq!(file.read().unwrap(), status);
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(
            text.contains("\"lastExit\": {\n        \"code\": 127"),
            "{text}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            [crate::layout::STATUS_FILE],
            "no temporary file is left"
        );
    }
}
