//! `testbed exec`: runs a command in exactly the namespaces a container of
//! a pod or host gets (its network namespace, a UTS namespace with its
//! hostname, a mount namespace with its hosts file and that container's
//! volumes, its environment and working directory), with the caller's
//! standard streams, and returns its exit status.
//!
//! Targets: `POD` (a pod name unique across namespaces, or a host name),
//! `NAMESPACE/POD`, or `host:HOST` (a host, when a pod has the same name).
//! Without a container name the first container is used, as `kubectl exec`
//! does; a host without containers gets its namespaces and hosts file only.
//!
//! While the command runs, the calling process ignores SIGINT and SIGQUIT
//! (as `system(3)` does): Ctrl-C goes to the command, which shares the
//! caller's process group, and `exec` returns what it did about it.
#![allow(unsafe_code)] // SIGINT/SIGQUIT ignored around a foreground command (`sigaction`).

use super::launch::{self, LaunchError, Mode};
use super::Sandbox;
use crate::diag::did_you_mean;
use crate::plan::types::ContainerPlan;
use crate::plan::Plan;
use crate::topology::model::RestartPolicy;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No pod or host has that name.
    #[error("there is no pod or host `{target}`{hint}")]
    NoSuchTarget {
        /// The target as given.
        target: String,
        /// `; did you mean ...?`, if something is close.
        hint: String,
    },
    /// Several pods (or a pod and a host) have that name.
    #[error("`{target}` is ambiguous: it names {}; write {}", .candidates.join(", "), .forms.join(" or "))]
    Ambiguous {
        /// The target as given.
        target: String,
        /// `pod default/web`, `host web`.
        candidates: Vec<String>,
        /// `default/web`, `host:web`.
        forms: Vec<String>,
    },
    /// The pod or host has no container of that name.
    #[error("{owner} has no container `{container}`{}", if .available.is_empty() { String::new() } else { format!(" (it has {})", .available.join(", ")) })]
    NoSuchContainer {
        /// `pod `web``.
        owner: String,
        /// The container asked for.
        container: String,
        /// Its containers.
        available: Vec<String>,
    },
    /// The command could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// Waiting for the command failed.
    #[error("waiting for the command: {0}")]
    Wait(io::Error),
}

impl ExecError {
    /// Whether the command line named what the testbed does not have (a
    /// pod, host or container: exit 2) rather than the command failing.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ExecError::NoSuchTarget { .. }
                | ExecError::Ambiguous { .. }
                | ExecError::NoSuchContainer { .. }
        )
    }
}

/// Runs `argv` in `container` (default: the first) of `target`; returns its
/// exit code, or 128 + the signal that killed it.
pub fn exec(
    plan: &Plan,
    target: &str,
    container: Option<&str>,
    argv: &[String],
) -> Result<i32, ExecError> {
    let sandbox = resolve(plan, target)?;
    let bare;
    let chosen: &ContainerPlan = match container {
        Some(name) => sandbox
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ExecError::NoSuchContainer {
                owner: launch::quoted(&sandbox),
                container: name.to_string(),
                available: sandbox
                    .containers
                    .iter()
                    .map(|c| format!("`{}`", c.name))
                    .collect(),
            })?,
        None => match sandbox.containers.first() {
            Some(c) => c,
            None => {
                bare = ContainerPlan {
                    name: String::new(),
                    command: Vec::new(),
                    env: Default::default(),
                    working_dir: None,
                    restart_policy: RestartPolicy::Never,
                    mounts: Vec::new(),
                    ready_tcp: None,
                    log: String::new(),
                };
                &bare
            }
        },
    };
    let who = match chosen.name.as_str() {
        "" => launch::quoted(&sandbox),
        name => launch::who(&sandbox, name),
    };
    let prepared = launch::prepare(&sandbox, chosen, argv, Mode::Attached, who)?;
    let _quiet = IgnoreInterrupts::new();
    let mut child = launch::start(prepared)?;
    let status = child.wait().map_err(ExecError::Wait)?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The pod or host `target` names: `NAMESPACE/POD`, `host:HOST`, or a bare
/// name that is exactly one pod (in any namespace) or host.
pub fn resolve<'a>(plan: &'a Plan, target: &str) -> Result<Sandbox<'a>, ExecError> {
    let not_found = |names: Vec<String>| {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        ExecError::NoSuchTarget {
            target: target.to_string(),
            hint: did_you_mean(target, &refs)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default(),
        }
    };
    if let Some(host) = target.strip_prefix("host:") {
        return plan
            .hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| Sandbox::host(plan, h))
            .ok_or_else(|| {
                not_found(
                    plan.hosts
                        .iter()
                        .map(|h| format!("host:{}", h.name))
                        .collect(),
                )
            });
    }
    if let Some((ns, name)) = target.split_once('/') {
        return plan
            .pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
            .map(|p| Sandbox::pod(plan, p))
            .ok_or_else(|| {
                not_found(
                    plan.pods
                        .iter()
                        .map(|p| format!("{}/{}", p.namespace, p.name))
                        .collect(),
                )
            });
    }
    let mut found: Vec<Sandbox> = plan
        .pods
        .iter()
        .filter(|p| p.name == target)
        .map(|p| Sandbox::pod(plan, p))
        .chain(
            plan.hosts
                .iter()
                .filter(|h| h.name == target)
                .map(|h| Sandbox::host(plan, h)),
        )
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(not_found(
            plan.pods
                .iter()
                .map(|p| p.name.clone())
                .chain(plan.hosts.iter().map(|h| h.name.clone()))
                .collect(),
        )),
        _ => Err(ExecError::Ambiguous {
            target: target.to_string(),
            candidates: found
                .iter()
                .map(|s| match s.namespace {
                    Some(ns) => format!("pod {ns}/{}", s.name),
                    None => format!("host {}", s.name),
                })
                .collect(),
            forms: found
                .iter()
                .map(|s| match s.namespace {
                    Some(ns) => format!("`{ns}/{}`", s.name),
                    None => format!("`host:{}`", s.name),
                })
                .collect(),
        }),
    }
}

/// How many `exec`s run, and the SIGINT and SIGQUIT actions from before the
/// first one, restored after the last.
static INTERRUPTS: Mutex<(usize, Option<(SigAction, SigAction)>)> = Mutex::new((0, None));

/// Ignores SIGINT and SIGQUIT in this process while it lives.
struct IgnoreInterrupts;

impl IgnoreInterrupts {
    fn new() -> Self {
        let mut g = INTERRUPTS.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
            // SAFETY: installs SIG_IGN; no handler code runs.
            let old = unsafe {
                (
                    sigaction(Signal::SIGINT, &ignore),
                    sigaction(Signal::SIGQUIT, &ignore),
                )
            };
            if let (Ok(int), Ok(quit)) = old {
                g.1 = Some((int, quit));
            }
        }
        g.0 += 1;
        IgnoreInterrupts
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        let mut g = INTERRUPTS.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        if g.0 == 0 {
            if let Some((int, quit)) = g.1.take() {
                // SAFETY: restores the actions that were installed before.
                unsafe {
                    let _ = sigaction(Signal::SIGINT, &int);
                    let _ = sigaction(Signal::SIGQUIT, &quit);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::files;
    use crate::runtime::testutil::{load_plan, Netns, TempDir};
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    const TOPO: &str = r#"
name: ex
nodes: [{name: n1}]
hosts:
  - name: box
  - name: dup
pods:
  - name: web
    volumes: [{name: data}]
    containers:
      - name: main
        command: [sleep, infinity]
        env: {WHO: main}
        workingDir: /tmp
      - name: side
        command: [sleep, infinity]
        env: {WHO: side}
        volumeMounts: [{name: data, mountPath: /tbrt-exec-data}]
  - name: web
    namespace: other
    containers: [{name: main, command: [sleep, infinity]}]
  - name: dup
    containers: [{name: main, command: [sleep, infinity]}]
"#;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exec_runs_in_the_containers_namespaces_and_returns_the_exit_code() {
        let ns = Netns::new();
        let dir = TempDir::new();
        let plan = load_plan(TOPO, &dir, Some(&ns));
        files::prepare(&plan).unwrap();
        let inode = fs::metadata(format!("/run/netns/{}", ns.name))
            .unwrap()
            .ino();
        assert_ne!(inode, fs::metadata("/proc/self/ns/net").unwrap().ino());

        let check = format!(
            r#"[ "$(hostname)" = web ] && [ "$(readlink /proc/self/ns/net)" = "net:[{inode}]" ] && grep -q "written by testbed" /etc/hosts && [ "$WHO" = main ] && [ "$PWD" = /tmp ]"#
        );
        assert_eq!(exec(&plan, "default/web", None, &sh(&check)).unwrap(), 0);
        // The same check fails where it should: not vacuous.
        assert_eq!(
            exec(&plan, "default/web", Some("side"), &sh(&check)).unwrap(),
            1
        );
        assert_eq!(exec(&plan, "default/web", None, &sh("exit 7")).unwrap(), 7);
        assert_eq!(
            exec(&plan, "default/web", None, &sh("kill -9 $$")).unwrap(),
            128 + 9
        );

        // The chosen container's volume is mounted.
        assert_eq!(
            exec(
                &plan,
                "default/web",
                Some("side"),
                &sh("echo hi > /tbrt-exec-data/f && [ \"$WHO\" = side ]")
            )
            .unwrap(),
            0
        );
        assert_eq!(
            fs::read_to_string(format!("{}/f", plan.pods[0].volumes[0].path)).unwrap(),
            "hi\n"
        );

        // A host without containers: its hostname and hosts file.
        let ip = plan.hosts[0].ip;
        assert!(plan
            .hosts_file("default", "box", Some(ip))
            .contains(&format!("{ip}\tbox\n")));
        let check =
            format!("[ \"$(hostname)\" = box ] && grep -q '^{ip}[[:space:]]box$' /etc/hosts");
        assert_eq!(exec(&plan, "box", None, &sh(&check)).unwrap(), 0);
        assert_eq!(
            exec(&plan, "box", None, &sh(&check.replace("box ]", "web ]"))).unwrap(),
            1
        );
    }

    #[test]
    fn targets_and_containers_are_resolved_or_clearly_refused() {
        let dir = TempDir::new();
        let plan = load_plan(TOPO, &dir, None);
        assert_eq!(
            resolve(&plan, "other/web").unwrap().namespace,
            Some("other")
        );
        assert_eq!(resolve(&plan, "box").unwrap().name, "box");
        assert_eq!(resolve(&plan, "host:dup").unwrap().namespace, None);
        assert_eq!(
            resolve(&plan, "default/dup").unwrap().namespace,
            Some("default")
        );
        let err = resolve(&plan, "web").unwrap_err().to_string();
        assert_eq!(err, "`web` is ambiguous: it names pod default/web, pod other/web; write `default/web` or `other/web`");
        let err = resolve(&plan, "dup").unwrap_err().to_string();
        assert!(
            err.contains("pod default/dup, host dup; write `default/dup` or `host:dup`"),
            "{err}"
        );
        let err = resolve(&plan, "wbe").unwrap_err().to_string();
        assert_eq!(err, "there is no pod or host `wbe`; did you mean `web`?");
        assert!(resolve(&plan, "x/web").is_err());
        let err = exec(&plan, "other/web", Some("nope"), &sh("true"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "pod `other/web` has no container `nope` (it has `main`)"
        );
        let err = exec(&plan, "other/web", None, &["tbrt-nope".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("container `main` of pod `other/web`: command `tbrt-nope` not found"),
            "{err}"
        );
        let err = exec(&plan, "other/web", None, &[]).unwrap_err().to_string();
        assert!(err.contains("no command given"), "{err}");
    }
}
