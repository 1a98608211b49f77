//! The supervisor in real namespaces: restart policies, readiness inside
//! the pod's namespace, one supervisor per testbed, back-off.

use super::*;
use crate::runtime::status::wait_ready;
use crate::runtime::testutil::{load_plan, Netns, TempDir};
use crate::topology::model::RestartPolicy;
use std::fs;

/// Runs a supervisor in a thread; dropping it stops it (and its
/// containers), also when a test fails.
struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Result<(), SuperviseError>>>,
    state_dir: PathBuf,
}

impl Running {
    fn start(plan: &Plan) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let plan = plan.clone();
        let state_dir = PathBuf::from(&plan.state_dir);
        let flag = stop.clone();
        let handle = thread::spawn(move || run_until(&plan, &flag));
        Running {
            stop,
            handle: Some(handle),
            state_dir,
        }
    }

    fn stop(&mut self) -> Result<(), SuperviseError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h.join().expect("supervisor thread panicked"),
            None => Ok(()),
        }
    }

    /// Polls the status until `f` holds for the named container.
    fn wait_for(
        &self,
        container: &str,
        what: &str,
        f: impl Fn(&ContainerStatus) -> bool,
    ) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(s) = status::read(&self.state_dir) {
                let c = s
                    .containers
                    .iter()
                    .find(|c| c.container == container)
                    .expect("container in status")
                    .clone();
                if f(&c) {
                    return c;
                }
                assert!(
                    Instant::now() < deadline,
                    "{container}: never {what}: {c:?}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "no status in {}",
                self.state_dir.display()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn alive(pid: i32) -> bool {
    // A reaped process is gone; a zombie would still count, but the
    // supervisor reaps what it started.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn restart_policies_are_followed_and_recorded() {
    let ns = Netns::new();
    let dir = TempDir::new();
    let plan = load_plan(
        r#"
name: sup
nodes: [{name: n1}]
pods:
  - name: web
    containers:
      - name: always
        command: [sleep, infinity]
      - name: never
        command: [sh, -c, "exit 3"]
        restartPolicy: Never
      - name: done
        command: ["true"]
        restartPolicy: OnFailure
      - name: retry
        command: [sh, -c, "exit 1"]
        restartPolicy: OnFailure
"#,
        &dir,
        Some(&ns),
    );
    let mut sup = Running::start(&plan);
    let first = sup.wait_for("always", "running", |c| {
        c.state == State::Running && c.ready
    });
    assert_eq!(first.restarts, 0);
    let pid = first.pid.expect("pid");
    assert!(alive(pid));
    assert_eq!(
        pids::supervisor(&sup.state_dir).map(|p| p as u32),
        Some(std::process::id()),
        "the pid file is locked and names the supervisor"
    );

    // Killed, it comes back: restarts 1, a new pid, the signal recorded.
    nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let again = sup.wait_for("always", "restarted", |c| {
        c.restarts == 1 && c.state == State::Running
    });
    assert_ne!(again.pid, Some(pid));
    assert_eq!(again.last_exit, Some(Exit::Signal(libc::SIGKILL)));

    // Never: stays failed with its exit code. OnFailure: a success
    // stays exited, a failure is retried with a growing delay.
    let never = sup.wait_for("never", "failed", |c| c.state == State::Failed);
    assert_eq!(never.last_exit, Some(Exit::Code(3)));
    let done = sup.wait_for("done", "exited", |c| c.state == State::Exited);
    assert_eq!(done.last_exit, Some(Exit::Code(0)));
    sup.wait_for("retry", "retried", |c| c.restarts >= 2);
    thread::sleep(Duration::from_millis(500));
    let s = status::read(&sup.state_dir).unwrap();
    let never = s
        .containers
        .iter()
        .find(|c| c.container == "never")
        .unwrap();
    assert_eq!((never.restarts, never.state), (0, State::Failed));
    let done = s.containers.iter().find(|c| c.container == "done").unwrap();
    assert_eq!((done.restarts, done.state), (0, State::Exited));

    // `up` would report the failed container.
    let err = wait_ready(&sup.state_dir, Instant::now() + Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pod web container never: exited with code 3 (restarted 0 times), not restarted, see log"), "{err}");
    assert!(!err.contains("container always"), "{err}");

    // Stopping ends every container and the lock.
    let pid = status::read(&sup.state_dir).unwrap().containers[0]
        .pid
        .unwrap();
    sup.stop().expect("supervisor ran");
    assert!(!alive(pid), "container {pid} still runs after stop");
    let s = status::read(&sup.state_dir).unwrap();
    assert!(s.stopping);
    assert!(s.containers.iter().all(|c| c.pid.is_none()));
    assert_eq!(pids::supervisor(&sup.state_dir).map(|p| p as u32), None);
}

#[test]
fn readiness_is_checked_inside_the_network_namespace() {
    let ns = Netns::new();
    let dir = TempDir::new();
    // A port nothing listens on in this (the root) namespace.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let plan = load_plan(
        &format!(
            r#"
name: ready
nodes: [{{name: n1}}]
pods:
  - name: web
    containers:
      - name: server
        command: [python3, -c, "import socket, time; time.sleep(1); s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); s.listen(); print('listening', flush=True); time.sleep(3600)"]
        ready: {{tcp: {port}}}
      - name: plain
        command: [sleep, infinity]
"#
        ),
        &dir,
        Some(&ns),
    );
    let sup = Running::start(&plan);
    let early = sup.wait_for("server", "running", |c| c.state == State::Running);
    assert!(!early.ready, "ready before it listens");
    let err = wait_ready(&sup.state_dir, Instant::now() + Duration::from_millis(300))
        .unwrap_err()
        .to_string();
    assert!(
            err.contains(&format!("pod web container server: running (pid {}) but not accepting connections on tcp port {port} yet", early.pid.unwrap())),
            "{err}"
        );
    let status =
        wait_ready(&sup.state_dir, Instant::now() + Duration::from_secs(15)).expect("ready");
    assert!(status.containers.iter().all(|c| c.ready));
    // The listener is in the pod's namespace, not here.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(fs::read_to_string(&plan.pods[0].containers[0].log)
        .unwrap()
        .contains("listening"));
}

#[test]
fn a_second_supervisor_is_refused() {
    let ns = Netns::new();
    let dir = TempDir::new();
    let plan = load_plan(
            "name: two\nnodes: [{name: n1}]\npods: [{name: p, containers: [{name: c, command: [sleep, infinity]}]}]\n",
            &dir,
            Some(&ns),
        );
    let sup = Running::start(&plan);
    sup.wait_for("c", "running", |c| c.state == State::Running);
    let err = run_until(&plan, &AtomicBool::new(true)).unwrap_err();
    assert!(
        matches!(err, SuperviseError::AlreadyRunning { pid, .. } if pid == std::process::id()),
        "{err}"
    );
}

#[test]
fn back_off_doubles_to_ten_seconds_and_resets_after_a_long_run() {
    let mut d = BACKOFF_MIN;
    let mut delays = Vec::new();
    for _ in 0..10 {
        let (delay, next) = backoff(d, Duration::from_millis(5));
        delays.push(delay.as_millis());
        d = next;
    }
    assert_eq!(
        delays,
        [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
    );
    assert_eq!(backoff(d, Duration::from_secs(10)).0, BACKOFF_MIN);
    assert!(should_restart(
        RestartPolicy::OnFailure,
        Some(Exit::Signal(9))
    ));
    assert!(should_restart(RestartPolicy::OnFailure, None));
    assert!(!should_restart(
        RestartPolicy::OnFailure,
        Some(Exit::Code(0))
    ));
    assert!(should_restart(RestartPolicy::Always, Some(Exit::Code(0))));
    assert!(!should_restart(RestartPolicy::Never, Some(Exit::Code(1))));
}
