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
#![allow(unsafe_code)] // the setup steps run between fork and exec (`pre_exec`).

use super::basens::BaseMounts;
use super::child::{self, cstring, Exec, ReportPipe, Script, Step};
use super::mounts::{self, Kind, MountError, Want};
pub use super::program::DEFAULT_PATH;
use super::program::{environment, resolve_program};
use super::{OwnerKind, Sandbox, NETNS_DIR};
use crate::plan::types::ContainerPlan;
use crate::plan::Plan;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tracing::{debug, info};

/// The scratch directory (under the state directory) mirrors of directories
/// are staged on; see [`super::mounts`].
pub use crate::layout::STAGE_DIR;

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
    let netns_path = format!("{NETNS_DIR}/{}", sandbox.netns);
    let netns = File::open(&netns_path).map_err(|source| LaunchError::Netns {
        who: who.clone(),
        path: netns_path.clone(),
        source,
    })?;
    let script = setup_script(sandbox, container, mode, &netns, &netns_path, &who)?;
    let (steps, descriptions) = script.split();
    let report = ReportPipe::new().map_err(|source| LaunchError::Spawn {
        who: who.clone(),
        command: argv.first().cloned().unwrap_or_default(),
        source,
    })?;
    let stdio_files = match mode {
        Mode::Detached => {
            let log_err = |source| LaunchError::Log {
                who: who.clone(),
                path: container.log.clone(),
                source,
            };
            let state = Path::new(sandbox.state_dir);
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
    let exec = exec_of(&program, argv, &env, stdio, &who)?;
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

/// The mounts a container gets: the hosts file, the resolver
/// configuration, its volumes, its working directory (see [`mounts`]).
fn mount_script(
    sandbox: &Sandbox,
    container: &ContainerPlan,
    who: &str,
) -> Result<Script, LaunchError> {
    let mount_err = |source| LaunchError::Mount {
        who: who.to_string(),
        source,
    };
    let state = Path::new(sandbox.state_dir);
    let stage = state.join(STAGE_DIR);
    fs::create_dir_all(&stage).map_err(|source| {
        mount_err(MountError::Io {
            what: "create",
            path: stage.display().to_string(),
            source,
        })
    })?;
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
        target: container.working_dir.as_deref().unwrap_or("/").to_string(),
        kind: Kind::Dir,
        source: None,
    });
    Ok(mounts::plan(&wants, &stage, state)
        .map_err(mount_err)?
        .script)
}

/// Every step between `fork` and `exec` (see the module's list).
fn setup_script(
    sandbox: &Sandbox,
    container: &ContainerPlan,
    mode: Mode,
    netns: &File,
    netns_path: &str,
    who: &str,
) -> Result<Script, LaunchError> {
    let nul = |what: &str| LaunchError::Nul {
        who: who.to_string(),
        what: what.to_string(),
    };
    let working_dir = container.working_dir.as_deref().unwrap_or("/");
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
    script.extend(mount_script(sandbox, container, who)?);
    script.push(
        Step::Chdir {
            path: cstring(working_dir).ok_or_else(|| nul("the working directory"))?,
        },
        format!("changing to the working directory {working_dir}"),
    );
    Ok(script)
}

/// What the new process executes: `program` with `argv` and exactly
/// `env`, as C strings (none may hold a NUL byte).
fn exec_of(
    program: &Path,
    argv: &[String],
    env: &std::collections::BTreeMap<String, String>,
    stdio: [std::os::fd::RawFd; 3],
    who: &str,
) -> Result<Exec, LaunchError> {
    let nul = |what: &str| LaunchError::Nul {
        who: who.to_string(),
        what: what.to_string(),
    };
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in env {
        if k.contains('=') {
            return Err(nul(&format!("environment variable `{k}`")));
        }
        envp.push(
            cstring(format!("{k}={v}"))
                .ok_or_else(|| nul(&format!("environment variable `{k}`")))?,
        );
    }
    Ok(Exec {
        program: cstring(program.as_os_str().as_encoded_bytes())
            .ok_or_else(|| nul("the program's path"))?,
        argv: argv
            .iter()
            .map(|a| cstring(a.as_str()).ok_or_else(|| nul("an argument")))
            .collect::<Result<_, _>>()?,
        env: envp,
        stdio,
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
mod tests;
