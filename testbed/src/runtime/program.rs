//! What a container executes: its program, looked up before anything starts
//! in the container's `PATH` with its volumes mapped to their directories
//! (so that a missing command is a clear error, `command `foo` not found`,
//! rather than an exit code 127 in a log), and its environment (as planned,
//! plus `PATH`, `HOME` and `HOSTNAME` when missing, and `TESTBED_POD`, the
//! pod's `NAMESPACE/NAME` or `host:NAME`, which `testbed serve` answers
//! with). A bare `testbed` is the launching testbed binary itself, not a
//! `testbed` found in `PATH` (which sudo resets; and versions could differ).

use super::launch::{LaunchError, Mode};
use super::Sandbox;
use crate::plan::types::ContainerPlan;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `PATH` when neither the plan nor the caller gives one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The variable that names a container's pod (or host).
pub const POD_VAR: &str = "TESTBED_POD";

/// The container's environment: as planned, plus `PATH`, `HOME`,
/// `HOSTNAME` and [`POD_VAR`] when missing (and `TERM` from the caller for
/// `exec`).
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
    env.entry(POD_VAR.into()).or_insert_with(|| sandbox.key());
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
    if let Some(p) = own_binary(cmd, std::env::current_exe().ok()) {
        if matches!(probe(&p), Found::Executable) {
            return Ok(p);
        }
    }
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

/// The program of a bare `testbed` command: `exe` (the running binary),
/// when it is a `testbed` binary (not, say, a test harness).
pub(crate) fn own_binary(cmd: &str, exe: Option<PathBuf>) -> Option<PathBuf> {
    let exe = exe.filter(|_| cmd == "testbed")?;
    (exe.file_name()? == "testbed" && exe.is_absolute()).then_some(exe)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_testbed_is_the_running_testbed_binary() {
        let exe = || Some(PathBuf::from("/work/target/release/testbed"));
        assert_eq!(own_binary("testbed", exe()), exe());
        // Only the bare name; only a testbed binary; only a known one.
        assert_eq!(own_binary("./testbed", exe()), None);
        assert_eq!(own_binary("/usr/bin/testbed", exe()), None);
        assert_eq!(own_binary("testbedx", exe()), None);
        let harness = Some(PathBuf::from("/work/target/debug/deps/testbed-0123abcd"));
        assert_eq!(own_binary("testbed", harness), None);
        let deleted = Some(PathBuf::from("/work/target/debug/testbed (deleted)"));
        assert_eq!(own_binary("testbed", deleted), None);
        assert_eq!(own_binary("testbed", Some(PathBuf::from("testbed"))), None);
        assert_eq!(own_binary("testbed", None), None);
    }
}
