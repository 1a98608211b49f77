//! What every subcommand shares: the failure that becomes an exit code,
//! loading a topology (problems printed, exit 2), printing to stdout (a
//! closed pipe is not a failure), and the testbed and node names of the
//! command line, checked before they reach a path.

use std::io::Write;
use testbed::state::TestbedName;
use testbed::{diag, Loaded};

/// A failure and the exit code it maps to.
pub(crate) enum Failure {
    /// The input is bad: exit 2 (the message is already printed).
    BadInput,
    /// Something else failed: exit 1.
    Runtime(anyhow::Error),
    /// The outcome is printed already; exit with this code.
    Reported(u8),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// Loads a topology; problems are printed to stderr and map to exit 2.
pub(crate) fn load(file: &std::path::Path) -> Result<Loaded, Failure> {
    let started = std::time::Instant::now();
    let result = testbed::load(file);
    tracing::debug!(file = %file.display(), elapsed = ?started.elapsed(), "loaded topology");
    match result {
        Ok(loaded) => {
            if !loaded.warnings.is_empty() {
                eprint!(
                    "{}",
                    diag::render(
                        &file.display().to_string(),
                        &loaded.source,
                        &loaded.warnings
                    )
                );
            }
            Ok(loaded)
        }
        Err(e) => {
            eprint!("{}", e.render());
            Err(Failure::BadInput)
        }
    }
}

pub(crate) fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`testbed plan x | head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Runtime(
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<testbed::topology::units::Duration>()
        .map(|d| std::time::Duration::from_micros(d.0))
        .map_err(|e| e.to_string())
}

/// A testbed named on the command line: a topology file, or the name of a
/// running testbed (whose plan is in its state directory).
pub(crate) fn target_plan(target: &str) -> Result<testbed::plan::Plan, Failure> {
    let path = std::path::Path::new(target);
    if path.is_file() {
        return Ok(load(path)?.plan);
    }
    let name = checked_name(target)?;
    running_plan(&name)
}

/// The plan of running testbed `name`.
pub(crate) fn running_plan(name: &TestbedName) -> Result<testbed::plan::Plan, Failure> {
    testbed::lifecycle::running_plan(name).ok_or_else(|| {
        Failure::Runtime(anyhow::anyhow!(
            "no running testbed named `{name}`; `testbed ls` lists them"
        ))
    })
}

/// The name a command line target stands for, without needing its state.
pub(crate) fn target_name(target: &str) -> Result<TestbedName, Failure> {
    let path = std::path::Path::new(target);
    if path.is_file() {
        let plan = load(path)?.plan;
        return checked_name(&plan.name);
    }
    checked_name(target)
}

/// A testbed name from the command line, checked before it reaches any
/// path: a bad one is exit 2.
pub(crate) fn checked_name(name: &str) -> Result<TestbedName, Failure> {
    TestbedName::new(name).map_err(|e| {
        eprintln!(
            "error: {e}\n  = help: {}; or give the path of a topology file",
            testbed::state::NameError::RULE
        );
        Failure::BadInput
    })
}

/// A node name from the command line (the daemons' argument), checked as
/// the file checks names.
pub(crate) fn checked_node(node: &str) -> Result<(), Failure> {
    let ok = !node.is_empty()
        && node.len() <= 63
        && node.starts_with(|c: char| c.is_ascii_lowercase())
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        return Ok(());
    }
    eprintln!(
        "error: `{}` is not a node name: a name is lowercase letters, digits and `-`, starting with a letter",
        node.escape_default()
    );
    Err(Failure::BadInput)
}

/// The plan of the testbed a command names, or of the only one running.
pub(crate) fn one_testbed(target: Option<String>) -> Result<testbed::plan::Plan, Failure> {
    if let Some(t) = target {
        return target_plan(&t);
    }
    let running: Vec<TestbedName> = testbed::kernel::teardown::testbeds()
        .into_iter()
        .filter(|n| testbed::lifecycle::running_plan(n).is_some())
        .collect();
    match running.as_slice() {
        [one] => running_plan(one),
        [] => Err(Failure::Runtime(anyhow::anyhow!(
            "no testbed is running; `testbed up FILE` starts one"
        ))),
        many => Err(Failure::Runtime(anyhow::anyhow!(
            "{} testbeds are running ({}); name one with --testbed",
            many.len(),
            many.iter()
                .map(TestbedName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
