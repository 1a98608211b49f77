//! The testbed's own life as a user and an operator see it: names from the
//! command line never reach a path unchecked; a dead supervisor is noticed
//! and `up` starts it again, taking over the running containers, while a
//! process merely named like it is never taken for it; the state directory
//! is private and logs are capped; and thousands of pods come up and go
//! down at the first call.

mod support;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{ok, status, testbed, wait_for, Testbed};

/// Runs `testbed ARGS` in a throwaway mount namespace whose `/run` is a
/// fresh tmpfs holding canaries, and reports its exit code, its stderr and
/// which canaries are left: whatever the command does with the name, it
/// cannot touch the real `/run`.
fn in_private_run(args: &[&str]) -> (i32, String, String) {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/testbed/keep /run/netns; \
         echo x > /run/canary; echo x > /run/testbed/keep/plan.json; set +e; \
         err=$('{bin}' {args} 2>&1 >/dev/null); rc=$?; printf '%s\n' \"$err\" >&2; \
         echo rc=$rc; ls /run/canary /run/testbed/keep/plan.json 2>/dev/null; true",
        bin = support::bin().display(),
        args = quoted.join(" ")
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .expect("unshare runs (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let rc = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rc="))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no exit code: {stdout} {:?}", out));
    (
        rc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout,
    )
}

#[test]
fn names_from_the_command_line_never_reach_a_path() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (a private mount namespace per command)"
    );
    let bad = [
        "..",
        "",
        ".",
        "./",
        "x/../..",
        "/",
        "../../etc",
        "a/b",
        "Upper",
    ];
    for name in bad {
        let commands: Vec<Vec<&str>> = vec![
            vec!["down", name],
            vec!["status", name],
            vec!["inspect", name],
            vec!["verify", name],
            vec!["impair", name, "node1", "--delay", "1ms"],
            vec!["exec", "-t", name, "p", "--", "true"],
            vec!["logs", "-t", name, "p"],
            vec!["supervise", name],
            vec!["overlay-daemon", name, "node1"],
            vec!["proxy-daemon", name, "node1"],
        ];
        for args in commands {
            let (rc, stderr, left) = in_private_run(&args);
            assert_eq!(rc, 2, "testbed {args:?}: exit {rc}, {stderr}");
            assert!(
                stderr.contains("is not a testbed name"),
                "testbed {args:?}: {stderr}"
            );
            assert!(
                left.contains("/run/canary") && left.contains("/run/testbed/keep/plan.json"),
                "testbed {args:?} removed files under /run: {left}"
            );
        }
    }
    // A node name with a path in it is refused by the daemons as well.
    let (rc, stderr, _) = in_private_run(&["overlay-daemon", "demo", "../x"]);
    assert_eq!(rc, 2, "{stderr}");
}

fn container(st: &Value, pod: &str) -> Value {
    st["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == pod)
        .and_then(|p| p["containers"][0].as_object().cloned())
        .map(Value::Object)
        .unwrap_or_else(|| panic!("no pod {pod} in {st}"))
}

/// `ls --json`'s entry for `tb`.
fn listed(tb: &Testbed) -> Value {
    let ls: Value = serde_json::from_str(&ok(&["ls", "--json"])).expect("ls JSON");
    ls.as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == tb.name.as_str()))
        .cloned()
        .expect("listed")
}

fn kill(pid: i64) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

#[test]
fn a_dead_supervisor_is_noticed_and_up_takes_over_its_containers() {
    let tb = Testbed::new(
        "sup",
        "
cluster: {overlay: host-gw}
nodes: [{name: n1}]
pods:
  - {name: steady, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: web, containers: [{name: c, command: [python3, -m, http.server, '8080'], workingDir: /tmp, ready: {tcp: 8080}}]}
",
    )
    .up();
    let st = status(&tb);
    assert_eq!(st["supervisor"]["running"], true, "{st}");
    let sup = st["supervisor"]["pid"].as_i64().expect("supervisor pid");
    let steady = container(&st, "steady")["pid"].as_i64().expect("pid");
    let web = container(&st, "web")["pid"].as_i64().expect("pid");

    // A process that merely calls itself `testbed supervise NAME` (as a
    // user's could) is not the supervisor.
    let mut impostor = Command::new("bash")
        .args([
            "-c",
            "exec -a testbed sh -c 'sleep 600; true' supervise \"$0\"",
            &tb.name,
        ])
        .process_group(0)
        .spawn()
        .expect("impostor");
    let impostor_pid = impostor.id() as i32;
    kill(sup);
    let st = wait_for(&tb, "the supervisor to be seen gone", |st| {
        st["supervisor"]["running"] == false
    });
    assert!(st["supervisor"].get("pid").is_none(), "{st}");
    let listed = listed(&tb);
    assert_eq!(listed["state"], "stopped", "{listed}");
    let table = ok(&["status", &tb.name]);
    assert!(table.contains("supervisor not running"), "{table}");

    // `up` of the same file starts it again; it takes the running
    // containers over instead of starting them anew.
    let out = testbed(&["up", tb.file.to_str().expect("path"), "--timeout", "30s"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("started it again"), "{said}");
    let st = status(&tb);
    assert_eq!(st["supervisor"]["running"], true, "{st}");
    assert_ne!(st["supervisor"]["pid"].as_i64(), Some(sup));
    assert_eq!(container(&st, "steady")["pid"].as_i64(), Some(steady));
    assert_eq!(container(&st, "web")["pid"].as_i64(), Some(web));
    assert_eq!(container(&st, "web")["ready"], true, "{st}");
    assert_eq!(container(&st, "steady")["restarts"], 0);

    // It keeps them: a killed one is started again, its end recorded as
    // unknown (it was not the new supervisor's child).
    kill(steady);
    let st = wait_for(&tb, "the taken-over container to restart", |st| {
        let c = container(st, "steady");
        c["restarts"] == 1 && c["state"] == "running"
    });
    assert_eq!(
        container(&st, "steady")["lastExit"]["unknown"],
        true,
        "{st}"
    );

    // `down` ends the testbed's processes only: the impostor runs on.
    ok(&["down", &tb.name]);
    assert!(
        impostor.try_wait().expect("impostor status").is_none(),
        "down killed a process that is not the testbed's"
    );
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(impostor_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = impostor.wait();
}

/// Every directory and file under `dir`, with its mode.
fn modes(dir: &Path, out: &mut Vec<(String, u32, bool)>) {
    for e in std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
    {
        let meta = std::fs::symlink_metadata(e.path()).expect("metadata");
        out.push((
            e.path().display().to_string(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            modes(&e.path(), out);
        }
    }
}

#[test]
fn state_is_private_and_logs_are_capped() {
    let tb = Testbed::new(
        "logs",
        "
cluster: {overlay: host-gw, containerLogMaxSize: 16Ki}
nodes: [{name: n1}]
pods:
  - name: chatty
    containers:
      - name: c
        command: [sh, -c, 'i=0; while [ $i -lt 4000 ]; do echo \"line $i of a container that prints too much\"; i=$((i+1)); done; echo last-line; exec sleep infinity']
",
    )
    .up();
    let dir = Path::new("/run/testbed").join(&tb.name);
    assert_eq!(
        std::fs::metadata("/run/testbed")
            .expect("root")
            .permissions()
            .mode()
            & 0o077,
        0,
        "/run/testbed is private"
    );
    let mut all = Vec::new();
    modes(&dir, &mut all);
    assert!(all.len() > 5, "{all:?}");
    let open: Vec<_> = all.iter().filter(|(_, m, _)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
    let plan = dir.join("plan.json");
    assert_eq!(
        std::fs::metadata(&plan).expect("plan").permissions().mode() & 0o777,
        0o600
    );

    // About 190 KB printed; the log is rotated within a second or two and
    // holds at most its cap in each of its two parts.
    let log = dir.join("pods/default/chatty/logs/c.log");
    let rotated = dir.join("pods/default/chatty/logs/c.log.1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let old = std::fs::metadata(&rotated).map(|m| m.len()).unwrap_or(0);
        let printed = std::fs::read_to_string(&rotated).unwrap_or_default()
            + &std::fs::read_to_string(&log).unwrap_or_default();
        if old > 0 && size <= 16 * 1024 && printed.contains("last-line") {
            assert!(old <= 16 * 1024, "rotated part of {old} bytes");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log not capped: {size} bytes, rotated {old}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // `logs` shows the tail, across the two parts.
    let shown = ok(&["logs", "-t", &tb.name, "chatty"]);
    assert!(
        shown.ends_with("last-line\n"),
        "{}",
        &shown[shown.len().saturating_sub(200)..]
    );
    assert!(shown.len() <= 32 * 1024, "{} bytes shown", shown.len());
    assert!(shown.contains("line 3999 of"), "the newest lines are kept");
    // `--tail N`: the last N lines, across the two parts as well.
    let tail = ok(&["logs", "-t", &tb.name, "chatty", "--tail", "2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(
        tail.ends_with("last-line\n") && tail.contains("line 3999 of"),
        "{tail}"
    );

    // `down --keep-logs DIR` copies the logs out before everything goes.
    let kept = tb.dir.path().join("kept");
    let json = ok(&[
        "down",
        &tb.name,
        "--keep-logs",
        kept.to_str().expect("utf-8"),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["removed"][0]["testbed"], tb.name.as_str(), "{v:#}");
    assert!(
        v["removed"][0]["keptFiles"].as_u64().expect("keptFiles") >= 3,
        "{v:#}"
    );
    let logs = kept.join(&tb.name).join("pods/default/chatty/logs");
    let text = std::fs::read_to_string(logs.join("c.log.1")).expect("the kept rotated log")
        + &std::fs::read_to_string(logs.join("c.log")).expect("the kept log");
    assert!(text.contains("last-line"), "{text}");
    assert!(kept.join(&tb.name).join("events.jsonl").is_file());
    assert!(!dir.exists(), "the state directory is gone");
}

#[test]
fn thousands_of_pods_come_up_and_go_down_at_the_first_call() {
    // 2,500 pods on 20 nodes: the size at which the first `down` used to
    // give up on processes that were still exiting, and removed nothing.
    let mut body = String::from("cluster: {overlay: host-gw}\nnodes:\n");
    for n in 1..=20 {
        body.push_str(&format!("  - name: node{n}\n"));
    }
    body.push_str("pods:\n");
    for p in 0..2500 {
        body.push_str(&format!(
            "  - {{name: p{p}, containers: [{{name: c, command: [sleep, infinity]}}]}}\n"
        ));
    }
    let tb = Testbed::new("many", &body);
    ok(&["up", tb.file.to_str().expect("path"), "--timeout", "300s"]);
    let listed = listed(&tb);
    assert_eq!(listed["namespaces"], 2521, "{listed}");
    assert_eq!(listed["state"], "running", "{listed}");
    let out = testbed(&["down", &tb.name]);
    assert!(
        out.status.success(),
        "the first down failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2521 network namespaces and 2501 processes")
    );
    assert_eq!(support::leftovers(&tb.name), Vec::<String>::new());
}

/// A cgroup (v1 freezer) holding one process frozen: a frozen process
/// does not act on SIGKILL until it is thawed, which makes it a process
/// that is slow to exit, or one that survives SIGKILL, on demand.
struct Frozen {
    dir: std::path::PathBuf,
}

impl Frozen {
    fn new(pid: i64) -> Frozen {
        let root = Path::new("/sys/fs/cgroup/freezer");
        assert!(
            root.join("cgroup.procs").exists(),
            "this test needs the cgroup v1 freezer (the CI machines have it, ../shared/README.md)"
        );
        let dir = root.join(format!("testbed-test-{}-{pid}", std::process::id()));
        std::fs::create_dir(&dir).expect("freezer cgroup");
        let frozen = Frozen { dir };
        std::fs::write(frozen.dir.join("cgroup.procs"), pid.to_string()).expect("move");
        std::fs::write(frozen.dir.join("freezer.state"), "FROZEN").expect("freeze");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(frozen.dir.join("freezer.state")).unwrap_or_default()
            != "FROZEN\n"
        {
            assert!(Instant::now() < deadline, "not frozen");
            std::thread::sleep(Duration::from_millis(10));
        }
        frozen
    }

    fn thaw(&self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The pid of pod `pod`'s container, from the supervisor's status file.
fn container_pid(tb: &Testbed, pod: &str) -> i64 {
    let text = std::fs::read_to_string(format!("/run/testbed/{}/status.json", tb.name))
        .expect("status file");
    let v: Value = serde_json::from_str(&text).expect("status JSON");
    v["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["owner"] == pod)
        .and_then(|c| c["pid"].as_i64())
        .unwrap_or_else(|| panic!("no running container of {pod} in {v}"))
}

const ONE_POD: &str = "
cluster: {overlay: host-gw}
nodes: [{name: n1}]
pods:
  - {name: p, containers: [{name: c, command: [sleep, infinity]}]}
  - {name: q, containers: [{name: c, command: [sleep, infinity]}]}
";

#[test]
fn down_waits_for_a_process_that_is_slow_to_exit() {
    let tb = Testbed::new("slow", ONE_POD).up();
    let pid = container_pid(&tb, "p");
    let frozen = Frozen::new(pid);
    // Released 6 s after `down` killed it: longer than the 5 s `down` used
    // to wait before giving up and removing nothing.
    let thawer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(6));
        frozen.thaw();
        frozen
    });
    let out = testbed(&["down", &tb.name]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the first down failed: {said}");
    assert!(
        said.contains("waiting for 1 process to exit"),
        "progress: {said}"
    );
    assert_eq!(support::leftovers(&tb.name), Vec::<String>::new());
    drop(thawer.join());
}

#[test]
fn down_names_a_process_that_survives_sigkill_and_removes_everything_else() {
    let tb = Testbed::new("stuck", ONE_POD).up();
    let pid = container_pid(&tb, "q");
    let frozen = Frozen::new(pid);
    let out = testbed(&["down", &tb.name]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("processes [{pid}]")) && said.contains("did not exit"),
        "{said}"
    );
    assert_eq!(
        support::leftovers(&tb.name),
        Vec::<String>::new(),
        "everything but the survivor is removed"
    );
    // Thawed, it acts on the SIGKILL it got.
    frozen.thaw();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(Instant::now() < deadline, "{pid} still runs after thawing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `logs --previous` shows what the run before the last restart wrote, and
/// only that; `logs` still shows every run; a container never started
/// again has no previous run (exit 1); `--previous` with `-f` is refused.
#[test]
fn logs_previous_shows_the_run_before_the_last_restart() {
    let tb = Testbed::new(
        "prev",
        "
cluster: {overlay: host-gw}
nodes: [{name: n1}]
pods:
  - name: flaky
    volumes: [{name: count}]
    containers:
      - name: c
        restartPolicy: Always
        volumeMounts: [{name: count, mountPath: /count}]
        command: [sh, -c, 'n=$(cat /count/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /count/n; echo run-$n; if [ $n -lt 3 ]; then exit 1; fi; exec sleep infinity']
  - name: steady
    containers: [{name: c, command: [sh, -c, 'echo once; exec sleep infinity']}]
",
    )
    .up();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(&["logs", "-t", &tb.name, "flaky"]).contains("run-3") {
        assert!(Instant::now() < deadline, "the third run never came");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        ok(&["logs", "-t", &tb.name, "flaky", "--previous"]),
        "run-2\n"
    );
    assert_eq!(
        ok(&["logs", "-t", &tb.name, "flaky"]),
        "run-1\nrun-2\nrun-3\n"
    );
    assert_eq!(
        ok(&["logs", "-t", &tb.name, "flaky", "-p", "--tail", "1"]),
        "run-2\n"
    );
    let out = testbed(&["logs", "-t", &tb.name, "steady", "--previous"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no previous run"));
    let out = testbed(&["logs", "-t", &tb.name, "flaky", "-p", "-f"]);
    assert_eq!(out.status.code(), Some(2));
}
