//! `testbed exec` and `testbed logs`: a command in a pod's or host's
//! container, and a container's log (followed with `-f`). A pod, host or
//! container the testbed does not have is bad input (exit 2, with the
//! closest name); `exec` exits with the command's own code.

use super::args::{ExecArgs, LogsArgs};
use crate::{one_testbed, print, Failure};
use anyhow::Context;
use testbed::runtime::exec::{self, ExecError};

/// Bad input (exit 2) or a failure of the command.
fn failure(e: ExecError, what: &str) -> Failure {
    if e.is_bad_input() {
        eprintln!("error: {e}");
        Failure::BadInput
    } else {
        Failure::Runtime(anyhow::Error::new(e).context(what.to_string()))
    }
}

/// `testbed exec [-t NAME] TARGET [-c CONTAINER] -- COMMAND...`: runs the
/// command in the container (default: the first) of `TARGET`.
pub fn exec(args: ExecArgs) -> Result<(), Failure> {
    let ExecArgs {
        testbed,
        target,
        container,
        command,
    } = args;
    let plan = one_testbed(testbed)?;
    let code = exec::exec(&plan, &target, container.as_deref(), &command)
        .map_err(|e| failure(e, "exec"))?;
    match code {
        0 => Ok(()),
        code => Err(Failure::Reported(u8::try_from(code).unwrap_or(1))),
    }
}

/// Prints the log of `container` (default: the first) of `target` (its
/// last `tail` lines), and what comes after it with `follow`; with
/// `previous`, what its previous run wrote.
pub fn logs(args: LogsArgs) -> Result<(), Failure> {
    let plan = one_testbed(args.testbed.clone())?;
    let container = args.container.as_deref();
    let sandbox = exec::resolve(&plan, &args.target).map_err(|e| failure(e, "logs"))?;
    let c = match container {
        Some(name) => sandbox.containers.iter().find(|c| c.name == name),
        None => sandbox.containers.first(),
    };
    let Some(c) = c else {
        let e = ExecError::NoSuchContainer {
            owner: sandbox.to_string(),
            container: container.unwrap_or("").to_string(),
            available: sandbox.containers.iter().map(|c| c.name.clone()).collect(),
        };
        return Err(failure(e, "logs"));
    };
    if args.previous {
        return previous_log(&c.log, &c.name, &sandbox.to_string(), args.tail);
    }
    follow_log(&c.log, args.follow, args.tail)
}

/// Prints what the previous run of container `name` of `owner` wrote (its
/// last `tail` lines); exit 1 when it has not been started again.
fn previous_log(log: &str, name: &str, owner: &str, tail: Option<usize>) -> Result<(), Failure> {
    let path = testbed::runtime::logs::previous(std::path::Path::new(log));
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("error: container `{name}` of {owner} has not been started again: it has no previous run");
            return Err(Failure::Reported(1));
        }
        Err(e) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "reading {}: {e}",
                path.display()
            )))
        }
    };
    let shown = match tail {
        Some(n) => testbed::runtime::logs::last_lines(&data, n),
        None => &data[..],
    };
    print(&String::from_utf8_lossy(shown))
}

fn follow_log(path: &str, follow: bool, tail: Option<usize>) -> Result<(), Failure> {
    use testbed::runtime::logs;
    let path = std::path::Path::new(path);
    let (mut follower, shown) =
        logs::Follower::start(path).with_context(|| format!("reading {}", path.display()))?;
    let shown = match tail {
        Some(n) => logs::last_lines(&shown, n),
        None => &shown[..],
    };
    print(&String::from_utf8_lossy(shown))?;
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let more = follower.poll().context("reading the log")?;
        if !more.is_empty() {
            print(&String::from_utf8_lossy(&more))?;
        }
    }
}
