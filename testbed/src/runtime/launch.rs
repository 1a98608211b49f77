//! Starting one container: a process that, between `fork` and `exec`,
//!
//! 1. starts a session of its own (`setsid`), so signals to the supervisor's
//!    process group or terminal do not reach it and it outlives a
//!    `kill -9` of the supervisor (only for containers; `exec` stays in the
//!    caller's process group so Ctrl-C reaches it);
//! 2. resets every signal to its default action;
//! 3. enters the pod's network namespace (`/run/netns/NETNS`, opened
//!    before `fork`);
//! 4. unshares a UTS namespace and sets the pod's hostname;
//! 5. unshares a mount namespace, makes `/` recursively private, and mounts
//!    the hosts file on `/etc/hosts` and each volume on its mount path (see
//!    [`super::mounts`] for mount paths that do not exist on the host);
//! 6. changes to its working directory (default `/`), which is created in
//!    the container's view when missing, as Kubernetes does;
//!
//! then `exec`s the command with exactly the planned environment plus
//! `PATH` (the caller's `PATH`, else the usual system one), `HOME` (`/root`)
//! and `HOSTNAME` (the pod's hostname) when the plan does not set them.
//! A container's stdin is `/dev/null`, its stdout and stderr are appended to
//! its log file.
//!
//! The program is looked up before `fork`, in the container's `PATH` and
//! with its volumes mapped to their directories, so that a missing command is
//! a clear error (`container `x` of pod `y`: command `foo` not found`)
//! rather than an exit code 127 in a log. [`check`] does that for a whole
//! plan, for `up` to report before starting anything.

use super::basens::BaseMounts;
use super::child::{self, cstring, Exec, ReportPipe, Script, Step};
use super::mounts::{self, Kind, MountError, Want};
use super::{OwnerKind, Sandbox, NETNS_DIR};
use crate::plan::types::ContainerPlan;
use crate::plan::Plan;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tracing::{debug, info};

/// `PATH` when neither the plan nor the caller gives one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The scratch directory (under the state directory) mirrors of directories
/// are staged on; see [`super::mounts`].
pub const STAGE_DIR: &str = "mnt";

/// Why a container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The command is empty.
    #[error("{who}: no command given")]
    EmptyCommand {
        /// `container `x` of pod `y``.
        who: String,
    },
    /// The program is nowhere on the container's `PATH`.
    #[error("{who}: command `{command}` not found{searched}")]
    CommandNotFound {
        /// `container `x` of pod `y``.
        who: String,
        /// The program as written.
        command: String,
        /// ` in PATH ...` when `PATH` was searched.
        searched: String,
    },
    /// The program exists but cannot be executed.
    #[error("{who}: command `{command}` ({path}) is not an executable file")]
    NotExecutable {
        /// `container `x` of pod `y``.
        who: String,
        /// The program as written.
        command: String,
        /// Where it was found.
        path: String,
    },
    /// The network namespace cannot be opened.
    #[error("{who}: cannot open network namespace {path}: {source} (is the testbed up?)")]
    Netns {
        /// `container `x` of pod `y``.
        who: String,
        /// `/run/netns/NAME`.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The log file cannot be opened.
    #[error("{who}: cannot open log file {path}: {source}")]
    Log {
        /// `container `x` of pod `y``.
        who: String,
        /// The log file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The mounts cannot be planned.
    #[error("{who}: {source}")]
    Mount {
        /// `container `x` of pod `y``.
        who: String,
        /// The cause.
        source: MountError,
    },
    /// A string (argument, environment, hostname) has a NUL byte.
    #[error("{who}: {what} contains a NUL byte")]
    Nul {
        /// `container `x` of pod `y``.
        who: String,
        /// Which string.
        what: String,
    },
    /// A step between `fork` and `exec` failed.
    #[error("{who}: {step}: {source}")]
    Setup {
        /// `container `x` of pod `y``.
        who: String,
        /// The step.
        step: String,
        /// The cause.
        source: io::Error,
    },
    /// `fork` or `exec` failed.
    #[error("{who}: cannot start `{command}`: {source}")]
    Spawn {
        /// `container `x` of pod `y``.
        who: String,
        /// The program.
        command: String,
        /// The cause.
        source: io::Error,
    },
}

/// Every problem [`check`] found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct CheckError {
    /// The problems.
    pub problems: Vec<LaunchError>,
}

/// Where the new process's standard streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A container: own session, stdin `/dev/null`, output appended to its log.
    Detached,
    /// `exec`: the caller's process group and standard streams.
    Attached,
}

/// A process ready to start, with what is needed to explain a failure.
pub(crate) struct Prepared {
    /// What it executes, and its standard streams.
    exec: Exec,
    /// Open files its standard streams are (kept open until it started).
    _stdio: Vec<File>,
    /// The mount namespace to make the container's from (see
    /// [`super::basens`]); without it, the caller's.
    base_mounts: Option<std::os::fd::RawFd>,
    /// What the child runs between `fork` and `exec`.
    steps: Vec<Step>,
    /// The pod's network namespace, open until the child has entered it.
    _netns: File,
    report: ReportPipe,
    descriptions: Vec<String>,
    who: String,
    program: String,
}

/// `container `x` of pod `y``.
pub fn who(sandbox: &Sandbox, container: &str) -> String {
    format!("container `{container}` of {}", quoted(sandbox))
}

/// `pod `y``, `pod `ns/y``, `host `h``.
pub(crate) fn quoted(sandbox: &Sandbox) -> String {
    match (sandbox.kind, sandbox.namespace) {
        (OwnerKind::Host, _) => format!("host `{}`", sandbox.name),
        (OwnerKind::Pod, Some(ns)) if ns != "default" => format!("pod `{ns}/{}`", sandbox.name),
        (OwnerKind::Pod, _) => format!("pod `{}`", sandbox.name),
    }
}

/// Starts `container` of `sandbox` as a detached container process. The
/// caller owns the child: it must reap it (`waitpid`).
pub fn spawn(
    sandbox: &Sandbox,
    container: &ContainerPlan,
    base: Option<&BaseMounts>,
) -> Result<i32, LaunchError> {
    let who = who(sandbox, &container.name);
    let mut prepared = prepare(sandbox, container, &container.command, Mode::Detached, who)?;
    if let Some(base) = base {
        prepared.base_mounts = Some(base.fd());
    }
    let pid = start_detached(prepared)?;
    info!(pid, container = %container.name, owner = %sandbox, "container started");
    Ok(pid)
}

/// Checks every container of `plan` can be started as far as that is known
/// before the testbed exists: a command is given and its program is found
/// (in the container's `PATH`, with its volumes mapped).
pub fn check(plan: &Plan) -> Result<(), CheckError> {
    let mut problems = Vec::new();
    for sandbox in Sandbox::all(plan) {
        for c in sandbox.containers {
            let who = who(&sandbox, &c.name);
            let env = environment(&sandbox, c, Mode::Detached);
            if let Err(e) = resolve_program(&who, &c.command, &env, c) {
                problems.push(e);
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckError { problems })
    }
}

/// Builds the command for `argv` in `container`'s namespaces, mounts,
/// environment and working directory.
pub(crate) fn prepare(
    sandbox: &Sandbox,
    container: &ContainerPlan,
    argv: &[String],
    mode: Mode,
    who: String,
) -> Result<Prepared, LaunchError> {
    let env = environment(sandbox, container, mode);
    let program = resolve_program(&who, argv, &env, container)?;
    let nul = |what: &str| LaunchError::Nul {
        who: who.clone(),
        what: what.to_string(),
    };

    let netns_path = format!("{NETNS_DIR}/{}", sandbox.netns);
    let netns = File::open(&netns_path).map_err(|source| LaunchError::Netns {
        who: who.clone(),
        path: netns_path.clone(),
        source,
    })?;

    let state = Path::new(sandbox.state_dir);
    let stage = state.join(STAGE_DIR);
    fs::create_dir_all(&stage).map_err(|source| LaunchError::Mount {
        who: who.clone(),
        source: MountError::Io {
            what: "create",
            path: stage.display().to_string(),
            source,
        },
    })?;
    let working_dir = container.working_dir.as_deref().unwrap_or("/");
    let mut wants = vec![
        Want {
            target: "/etc/hosts".into(),
            kind: Kind::File,
            source: Some(sandbox.hosts_file.to_string()),
        },
        Want {
            target: "/etc/resolv.conf".into(),
            kind: Kind::File,
            source: Some(state.join(super::files::RESOLV_CONF).display().to_string()),
        },
    ];
    wants.extend(container.mounts.iter().map(|m| Want {
        target: m.target.clone(),
        kind: Kind::Dir,
        source: Some(m.source.clone()),
    }));
    wants.push(Want {
        target: working_dir.to_string(),
        kind: Kind::Dir,
        source: None,
    });
    let mount_plan = mounts::plan(&wants, &stage, state).map_err(|source| LaunchError::Mount {
        who: who.clone(),
        source,
    })?;

    let report = ReportPipe::new().map_err(|source| LaunchError::Spawn {
        who: who.clone(),
        command: argv.first().cloned().unwrap_or_default(),
        source,
    })?;

    let mut script = Script::default();
    if mode == Mode::Detached {
        script.push(Step::Setsid, "starting a session");
    }
    script.push(Step::ResetSignals, "resetting signal actions");
    script.push(
        Step::Setns {
            fd: netns.as_raw_fd(),
            nstype: libc::CLONE_NEWNET,
        },
        format!("entering network namespace {netns_path}"),
    );
    script.push(Step::Umask { mask: 0o022 }, "setting the umask");
    script.push(
        Step::Unshare {
            flags: libc::CLONE_NEWUTS | libc::CLONE_NEWNS,
        },
        "creating UTS and mount namespaces",
    );
    script.push(
        Step::Sethostname {
            name: cstring(sandbox.hostname).ok_or_else(|| nul("the hostname"))?,
        },
        format!("setting the hostname to {}", sandbox.hostname),
    );
    script.push(
        Step::Mount {
            source: None,
            target: cstring("/").ok_or_else(|| nul("/"))?,
            fstype: None,
            flags: libc::MS_REC | libc::MS_PRIVATE,
            data: None,
        },
        "making / private",
    );
    // Copies of the testbeds' namespace mounts (when not made from the
    // base namespace) would pin those namespaces while this runs.
    script.push(
        Step::UmountQuiet {
            target: cstring(NETNS_DIR).ok_or_else(|| nul(NETNS_DIR))?,
        },
        "dropping the namespace mounts",
    );
    script.extend(mount_plan.script);
    script.push(
        Step::Chdir {
            path: cstring(working_dir).ok_or_else(|| nul("the working directory"))?,
        },
        format!("changing to the working directory {working_dir}"),
    );
    let (steps, descriptions) = script.split();

    if argv.iter().any(|a| a.contains('\0')) {
        return Err(nul("an argument"));
    }
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in &env {
        if k.contains('\0') || k.contains('=') || v.contains('\0') {
            return Err(nul(&format!("environment variable `{k}`")));
        }
        envp.push(cstring(format!("{k}={v}")).ok_or_else(|| nul("the environment"))?);
    }
    let stdio_files = match mode {
        Mode::Detached => {
            let log_err = |source| LaunchError::Log {
                who: who.clone(),
                path: container.log.clone(),
                source,
            };
            let log = open_log(&container.log, state).map_err(log_err)?;
            let null = File::open("/dev/null").map_err(log_err)?;
            vec![null, log]
        }
        Mode::Attached => Vec::new(),
    };
    let stdio = match stdio_files.as_slice() {
        [null, log] => [null.as_raw_fd(), log.as_raw_fd(), log.as_raw_fd()],
        _ => [0, 1, 2],
    };
    let exec = Exec {
        program: cstring(program.as_os_str().as_encoded_bytes())
            .ok_or_else(|| nul("the program's path"))?,
        argv: argv
            .iter()
            .map(|a| cstring(a.as_str()).ok_or_else(|| nul("an argument")))
            .collect::<Result<_, _>>()?,
        env: envp,
        stdio,
    };
    debug!(%who, program = %program.display(), "prepared");
    Ok(Prepared {
        exec,
        _stdio: stdio_files,
        base_mounts: None,
        steps,
        _netns: netns,
        report,
        descriptions,
        who,
        program: argv[0].clone(),
    })
}

/// The steps of `prepared`, with the entry into the base mount namespace
/// right before the container's own mount namespace is made.
fn steps_of(prepared: &mut Prepared) -> Vec<Step> {
    let mut steps = std::mem::take(&mut prepared.steps);
    if let Some(fd) = prepared.base_mounts {
        let at = steps
            .iter()
            .position(|s| matches!(s, Step::Unshare { .. }))
            .unwrap_or(0);
        steps.insert(
            at,
            Step::Setns {
                fd,
                nstype: libc::CLONE_NEWNS,
            },
        );
        prepared
            .descriptions
            .insert(at, "entering the base mount namespace".into());
    }
    steps
}

/// Why a start failed: the `(step, errno)` the child reported (a step, or
/// the `exec` after them), else `spawn`'s own error.
fn explain(prepared: &Prepared, report: Option<(usize, i32)>, source: io::Error) -> LaunchError {
    match report {
        Some((step, errno)) if step < prepared.descriptions.len() => LaunchError::Setup {
            who: prepared.who.clone(),
            step: prepared.descriptions[step].clone(),
            source: io::Error::from_raw_os_error(errno),
        },
        Some((_, errno)) => LaunchError::Spawn {
            who: prepared.who.clone(),
            command: prepared.program.clone(),
            source: io::Error::from_raw_os_error(errno),
        },
        None => LaunchError::Spawn {
            who: prepared.who.clone(),
            command: prepared.program.clone(),
            source,
        },
    }
}

/// Starts a prepared container (see [`child::spawn_vm`]); returns its pid.
pub(crate) fn start_detached(mut prepared: Prepared) -> Result<i32, LaunchError> {
    let steps = steps_of(&mut prepared);
    let started = child::spawn_vm(&steps, &prepared.exec, prepared.report.write.as_raw_fd());
    let report = child::read_report(&prepared.report.read);
    let pid = started.map_err(|e| explain(&prepared, report, e))?;
    // The child has executed its program, or failed and reported why
    // (CLONE_VFORK): then it has exited, and is reaped here.
    if report.is_some() {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(explain(&prepared, report, io::Error::other("failed")));
    }
    Ok(pid)
}

/// Starts a prepared command attached to the caller (`testbed exec`).
pub(crate) fn start(mut prepared: Prepared) -> Result<Child, LaunchError> {
    let steps = steps_of(&mut prepared);
    let exec = &prepared.exec;
    let mut command = Command::new(std::ffi::OsStr::from_bytes(exec.program.as_bytes()));
    command
        .arg0(std::ffi::OsStr::from_bytes(
            exec.argv.first().map_or(&b""[..], |a| a.as_bytes()),
        ))
        .args(
            exec.argv
                .iter()
                .skip(1)
                .map(|a| std::ffi::OsStr::from_bytes(a.as_bytes())),
        )
        .env_clear()
        .envs(exec.env.iter().filter_map(|kv| {
            let (k, v) = kv
                .to_bytes()
                .split_at(kv.to_bytes().iter().position(|b| *b == b'=')?);
            Some((
                std::ffi::OsStr::from_bytes(k),
                std::ffi::OsStr::from_bytes(&v[1..]),
            ))
        }))
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let report = prepared.report.write.as_raw_fd();
    // SAFETY: the closure only walks prepared steps making raw system calls
    // (async-signal-safe); it allocates nothing.
    unsafe {
        command.pre_exec(move || child::run(&steps, report));
    }
    let result = command.spawn();
    drop(command);
    result.map_err(|e| explain(&prepared, child::read_report(&prepared.report.read), e))
}

/// The container's environment: as planned, plus `PATH`, `HOME` and
/// `HOSTNAME` when missing (and `TERM` from the caller for `exec`).
pub(crate) fn environment(
    sandbox: &Sandbox,
    container: &ContainerPlan,
    mode: Mode,
) -> BTreeMap<String, String> {
    let mut env = container.env.clone();
    env.entry("PATH".into()).or_insert_with(|| {
        std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.to_string())
    });
    env.entry("HOME".into()).or_insert_with(|| "/root".into());
    env.entry("HOSTNAME".into())
        .or_insert_with(|| sandbox.hostname.to_string());
    if mode == Mode::Attached {
        if let Ok(term) = std::env::var("TERM") {
            env.entry("TERM".into()).or_insert(term);
        }
    }
    env
}

/// Finds the program of `argv` as the container will see it: a path with a
/// `/` taken as is (relative to the working directory), a bare name searched
/// in `PATH`. Paths inside the container's volumes are checked in the
/// volume's directory. Returns the path inside the container.
pub(crate) fn resolve_program(
    who: &str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    container: &ContainerPlan,
) -> Result<PathBuf, LaunchError> {
    let Some(cmd) = argv.first().filter(|c| !c.is_empty()) else {
        return Err(LaunchError::EmptyCommand {
            who: who.to_string(),
        });
    };
    let cwd = Path::new(container.working_dir.as_deref().unwrap_or("/"));
    let host = |p: &Path| -> PathBuf {
        container
            .mounts
            .iter()
            .filter(|m| p.starts_with(&m.target))
            .max_by_key(|m| m.target.len())
            .map(|m| {
                let rel = p.strip_prefix(&m.target).unwrap_or(Path::new(""));
                Path::new(&m.source).join(rel)
            })
            .unwrap_or_else(|| p.to_path_buf())
    };
    let not_executable = |p: &Path| LaunchError::NotExecutable {
        who: who.to_string(),
        command: cmd.clone(),
        path: p.display().to_string(),
    };
    if cmd.contains('/') {
        let p = cwd.join(cmd);
        return match probe(&host(&p)) {
            Found::Executable => Ok(p),
            Found::Other => Err(not_executable(&p)),
            Found::Nothing => Err(LaunchError::CommandNotFound {
                who: who.to_string(),
                command: cmd.clone(),
                searched: String::new(),
            }),
        };
    }
    let path = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
    let mut other = None;
    for dir in path.split(':') {
        let p = cwd.join(if dir.is_empty() { "." } else { dir }).join(cmd);
        match probe(&host(&p)) {
            Found::Executable => return Ok(p),
            Found::Other => {
                other.get_or_insert(p);
            }
            Found::Nothing => {}
        }
    }
    match other {
        Some(p) => Err(not_executable(&p)),
        None => Err(LaunchError::CommandNotFound {
            who: who.to_string(),
            command: cmd.clone(),
            searched: format!(" in PATH {path}"),
        }),
    }
}

enum Found {
    Executable,
    Other,
    Nothing,
}

fn probe(p: &Path) -> Found {
    match fs::metadata(p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Found::Executable,
        Ok(_) => Found::Other,
        Err(_) => Found::Nothing,
    }
}

/// Opens (creating) the log file for appending, creating its directory when
/// it lies inside the state directory.
fn open_log(log: &str, state: &Path) -> io::Result<File> {
    let path = Path::new(log);
    if let Some(dir) = path.parent() {
        if dir.starts_with(state) {
            fs::create_dir_all(dir)?;
        }
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
}

#[cfg(test)]
mod tests {
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
            err.starts_with("container `missing` of pod `web`: command `tbrt-no-such-command` not found in PATH"),
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
        // Its child was reaped: none is left waiting.
        assert!(matches!(
            nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
            Err(nix::errno::Errno::ECHILD) | Ok(nix::sys::wait::WaitStatus::StillAlive)
        ));
    }
}
