//! Containers launched into real namespaces: what they see, and how their
//! failures are reported.

use super::*;
use crate::runtime::files;
use crate::runtime::testutil::{load_plan, Netns, TempDir};
use std::os::unix::fs::MetadataExt;

fn topo(unique: &str, existing: &str) -> String {
    format!(
        r#"
name: launch
nodes: [{{name: n1}}]
pods:
  - name: web
    volumes: [{{name: shared}}, {{name: other}}]
    containers:
      - name: probe
        command: [sh, -c, 'hostname; echo "hosts:"; cat /etc/hosts; echo "pwd=$(pwd)"; echo "net=$(readlink /proc/self/ns/net)"; echo "greeting=$GREETING"; echo "err-line" >&2; echo written-by-probe > /{unique}/from-probe; echo into-existing > {existing}/from-probe; ls /usr/bin/env /proc/self/status > /dev/null && echo "root-ok"; echo "session=$(cut -d" " -f6 /proc/$$/stat) pid=$$"; echo "nsfs=$(grep -c " - nsfs " /proc/self/mountinfo)"; echo "umask=$(umask)"']
        env: {{GREETING: hello world}}
        workingDir: /var/tmp/{unique}-wd
        volumeMounts:
          - {{name: shared, mountPath: /{unique}}}
          - {{name: other, mountPath: {existing}}}
      - name: reader
        command: [sh, -c, 'cat /{unique}/from-probe']
        volumeMounts: [{{name: shared, mountPath: /{unique}}}]
      - name: envdump
        command: [env]
        env: {{A: "1", B: two words}}
      - name: missing
        command: [tbrt-no-such-command, x]
"#
    )
}

/// Waits (at most 20 s) for child `pid` and returns its exit code.
fn wait_pid(pid: i32) -> Option<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(..)) => return None,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "child {pid} did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn log_of(plan: &Plan, c: usize) -> String {
    fs::read_to_string(&plan.pods[0].containers[c].log).unwrap_or_default()
}

#[test]
fn a_container_sees_its_namespaces_hosts_file_volumes_env_and_logs() {
    let ns = Netns::new();
    let dir = TempDir::new();
    let unique = format!("tbrt-vol-{}", dir.unique());
    let existing = dir.path().join("existing");
    fs::create_dir_all(&existing).unwrap();
    fs::write(existing.join("host-file"), "host").unwrap();
    let plan = load_plan(
        &topo(&unique, &existing.display().to_string()),
        &dir,
        Some(&ns),
    );
    files::prepare(&plan).unwrap();
    let sandbox = Sandbox::pod(&plan, &plan.pods[0]);
    let my_hostname = nix::unistd::gethostname().unwrap();

    let base = BaseMounts::create(Path::new(&plan.state_dir)).expect("base mount namespace");
    let probe = spawn(&sandbox, &plan.pods[0].containers[0], Some(&base)).expect("spawn probe");
    assert_eq!(wait_pid(probe), Some(0), "log: {}", log_of(&plan, 0));
    let log = log_of(&plan, 0);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "web", "hostname; log: {log}");
    let hosts = plan.hosts_file("default", "web", plan.pods[0].ip);
    assert!(
        log.contains(&format!("hosts:\n{hosts}")),
        "/etc/hosts; log: {log}"
    );
    assert!(
        log.contains(&format!("pwd=/var/tmp/{unique}-wd\n")),
        "{log}"
    );
    assert!(log.contains("greeting=hello world\n"), "{log}");
    assert!(log.contains("err-line\n"), "stderr in the log: {log}");
    assert!(
        log.contains("root-ok\n"),
        "/ still shows the host's files: {log}"
    );
    let netns_inode = fs::metadata(format!("/run/netns/{}", ns.name))
        .unwrap()
        .ino();
    let my_inode = fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_ne!(netns_inode, my_inode);
    assert!(log.contains(&format!("net=net:[{netns_inode}]\n")), "{log}");
    // It leads a session of its own: signals to the supervisor's group
    // or a hangup of its terminal do not reach it.
    let session = log
        .lines()
        .find_map(|l| l.strip_prefix("session="))
        .expect("session line");
    let (sid, pid) = session.split_once(" pid=").expect("sid and pid");
    assert_eq!(sid, pid, "{log}");
    assert_ne!(sid, nix::unistd::getsid(None).unwrap().to_string());
    // Made from the base mount namespace: no copy of any network
    // namespace mount (the test's own is mounted in the host's), and
    // the usual umask, not the testbed's own 077.
    assert!(log.contains("nsfs=0\n"), "{log}");
    assert!(log.contains("umask=0022\n"), "{log}");

    // The volumes hold what the container wrote; the host's / and
    // /var/tmp do not have the mount point or the working directory, the
    // existing directory it was mounted over is unchanged.
    let shared = &plan.pods[0].volumes[0].path;
    let other = &plan.pods[0].volumes[1].path;
    assert_eq!(
        fs::read_to_string(format!("{shared}/from-probe")).unwrap(),
        "written-by-probe\n"
    );
    assert_eq!(
        fs::read_to_string(format!("{other}/from-probe")).unwrap(),
        "into-existing\n"
    );
    assert!(!Path::new(&format!("/{unique}")).exists());
    assert!(!Path::new(&format!("/var/tmp/{unique}-wd")).exists());
    assert!(!existing.join("from-probe").exists());
    assert!(existing.join("host-file").exists());
    assert_eq!(nix::unistd::gethostname().unwrap(), my_hostname);

    // A second container of the pod sees the same volume.
    let reader = spawn(&sandbox, &plan.pods[0].containers[1], None).expect("spawn reader");
    assert_eq!(wait_pid(reader), Some(0));
    assert_eq!(log_of(&plan, 1), "written-by-probe\n");

    // The environment is exactly the planned one plus the defaults.
    let envdump = spawn(&sandbox, &plan.pods[0].containers[2], None).expect("spawn env");
    assert_eq!(wait_pid(envdump), Some(0));
    let mut vars: Vec<String> = log_of(&plan, 2).lines().map(String::from).collect();
    vars.sort();
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    assert_eq!(
        vars,
        vec![
            "A=1".to_string(),
            "B=two words".into(),
            "HOME=/root".into(),
            "HOSTNAME=web".into(),
            format!("PATH={path}"),
            "TESTBED_POD=default/web".into(),
        ]
    );

    // Logs are appended to, not truncated.
    let again = spawn(&sandbox, &plan.pods[0].containers[1], None).expect("spawn reader again");
    assert_eq!(wait_pid(again), Some(0));
    assert_eq!(log_of(&plan, 1), "written-by-probe\nwritten-by-probe\n");
}

#[test]
fn a_missing_command_is_a_clear_error_before_anything_starts() {
    let ns = Netns::new();
    let dir = TempDir::new();
    let plan = load_plan(&topo("tbrt-unused", "/tmp"), &dir, Some(&ns));
    files::prepare(&plan).unwrap();
    let sandbox = Sandbox::pod(&plan, &plan.pods[0]);
    let err = spawn(&sandbox, &plan.pods[0].containers[3], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "container `missing` of pod `web`: command `tbrt-no-such-command` not found in PATH"
        ),
        "{err}"
    );
    assert!(
        !Path::new(&plan.pods[0].containers[3].log).exists(),
        "nothing was started"
    );

    let err = check(&plan).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.to_string().contains("`tbrt-no-such-command` not found"),
        "{err}"
    );

    let mut plan2 = plan.clone();
    plan2.pods[0].containers[3].command = vec![plan.pods[0].hosts_file.clone()];
    let err = check(&plan2).unwrap_err().to_string();
    assert!(err.contains("is not an executable file"), "{err}");
    plan2.pods[0].containers[3].command = vec!["sh".into()];
    check(&plan2).expect("every command is found");
}

#[test]
fn a_missing_network_namespace_is_reported() {
    let dir = TempDir::new();
    let plan = load_plan(&topo("tbrt-unused", "/tmp"), &dir, None);
    files::prepare(&plan).unwrap();
    let sandbox = Sandbox::pod(&plan, &plan.pods[0]);
    let err = spawn(&sandbox, &plan.pods[0].containers[2], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot open network namespace /run/netns/tb-launch.pod.default.web"),
        "{err}"
    );
    assert!(err.contains("is the testbed up?"), "{err}");
}

#[test]
fn a_failing_setup_step_is_named() {
    let ns = Netns::new();
    let dir = TempDir::new();
    let plan = load_plan(&topo("tbrt-unused", "/tmp"), &dir, Some(&ns));
    files::prepare(&plan).unwrap();
    let mut sandbox = Sandbox::pod(&plan, &plan.pods[0]);
    let long = "h".repeat(100); // longer than HOST_NAME_MAX (64)
    sandbox.hostname = &long;
    let err = spawn(&sandbox, &plan.pods[0].containers[2], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("setting the hostname to {long}: Invalid argument")),
        "{err}"
    );
}

#[test]
fn a_program_the_kernel_cannot_execute_is_reported_and_reaped() {
    use std::os::unix::fs::PermissionsExt;
    let ns = Netns::new();
    let dir = TempDir::new();
    let mut plan = load_plan(&topo("tbrt-unused", "/tmp"), &dir, Some(&ns));
    files::prepare(&plan).unwrap();
    // Executable, but neither an ELF file nor a script.
    let bogus = dir.path().join("bogus");
    fs::write(&bogus, [0u8, 1, 2, 3]).unwrap();
    fs::set_permissions(&bogus, fs::Permissions::from_mode(0o755)).unwrap();
    plan.pods[0].containers[2].command = vec![bogus.display().to_string()];
    let sandbox = Sandbox::pod(&plan, &plan.pods[0]);
    let err = spawn(&sandbox, &plan.pods[0].containers[2], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot start") && err.contains("Exec format error"),
        "{err}"
    );
    // Its child was reaped: this thread (which made it) has no child left,
    // not even a zombie. (Not `waitpid(None)`: that would reap the children
    // of tests running beside this one.)
    let tid = nix::unistd::gettid();
    let children =
        fs::read_to_string(format!("/proc/self/task/{tid}/children")).expect("children file");
    assert_eq!(children.trim(), "", "children left: {children}");
}
