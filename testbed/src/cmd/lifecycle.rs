//! `testbed up` and `testbed down`: bring a testbed up (with progress on a
//! terminal, and what happened when it was running already) and remove
//! testbeds.

use super::args::{DownArgs, UpArgs};
use crate::{load, print, target_name, Failure};
use anyhow::Context;
use std::path::Path;
use testbed::plan::machines::ShareError;
use testbed::plan::render;
use testbed::state::TestbedName;

/// `testbed up FILE [--timeout D] [--overlay O] [--machine M] [--json]`.
pub fn up(args: UpArgs) -> Result<(), Failure> {
    use std::io::IsTerminal;
    let UpArgs {
        file,
        timeout,
        json,
        overlay,
        machine,
    } = args;
    let overlay: Option<overlay::Backend> = overlay.map(Into::into);
    let machine = machine.as_deref();
    let loaded = load_for_up(&file, overlay, machine)?;
    let plan = &loaded.plan;
    let started = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut progress = |msg: &str| {
        if tty {
            eprint!("\r\x1b[2K{}: {msg}", plan.name);
        }
        tracing::info!("{msg}");
    };
    let spec = testbed::controller::spec::Spec {
        file: file.display().to_string(),
        source: loaded.source.clone(),
        overlay,
        machine: machine.map(str::to_string),
    };
    let outcome = testbed::lifecycle::up(&spec, plan, timeout, &mut progress);
    if tty {
        eprint!("\r\x1b[2K");
    }
    tell_outcome(&plan.name, outcome, started)?;
    let summary = testbed::report::summary(plan);
    let text = if json {
        render::to_json(&summary).context("printing")?
    } else {
        summary.to_string()
    };
    print(&text)
}

/// Loads `file` for `up`: the share of `machine` if the topology is spread
/// over machines, with the overlay backend `overlay` if given (exit 2 if it
/// does not fit the topology).
fn load_for_up(
    file: &Path,
    overlay: Option<overlay::Backend>,
    machine: Option<&str>,
) -> Result<testbed::Loaded, Failure> {
    let mut loaded = for_machine(load(file)?, machine)?;
    if let Some(backend) = overlay {
        loaded = loaded.with_overlay(backend).map_err(|e| {
            eprint!("{}", e.render());
            Failure::BadInput
        })?;
    }
    Ok(loaded)
}

/// Tells on stderr what `up` of testbed `name`, started at `started`, did:
/// it was up already, its supervisor was started again, or it came up;
/// a conflict with what runs is bad input (exit 2), other errors fail.
fn tell_outcome(
    name: &str,
    outcome: Result<testbed::lifecycle::UpOutcome, testbed::lifecycle::UpError>,
    started: std::time::Instant,
) -> Result<(), Failure> {
    match outcome {
        Ok(testbed::lifecycle::UpOutcome::AlreadyUp(impaired)) => {
            eprintln!("{} is already up with this topology; nothing changed", name);
            if !impaired.is_empty() {
                eprintln!(
                    "note: the impairments of {} were changed with `testbed impair` and stay as they are; `testbed down {}` and `up` again to return to the file's",
                    impaired.join(", "),
                    name
                );
            }
        }
        Ok(testbed::lifecycle::UpOutcome::SupervisorRestarted(impaired)) => {
            eprintln!(
                "{}'s supervisor was not running: started it again; it took over the running containers and everything is ready",
                name
            );
            if !impaired.is_empty() {
                eprintln!(
                    "note: the impairments of {} were changed with `testbed impair` and stay as they are",
                    impaired.join(", ")
                );
            }
        }
        Ok(testbed::lifecycle::UpOutcome::Started(t)) => {
            tracing::debug!(namespaces = ?t.namespaces, configure = ?t.configure, "applied");
            eprintln!("{} is up in {:.2}s", name, started.elapsed().as_secs_f64());
        }
        Err(e @ testbed::lifecycle::UpError::Conflict(_)) => {
            eprintln!("error: {e}");
            return Err(Failure::BadInput);
        }
        Err(e) => return Err(Failure::Runtime(anyhow::Error::new(e))),
    }
    Ok(())
}

/// A topology spread over machines is brought up one machine's share at a
/// time, `--machine NAME` on each: the plan becomes that share. Without
/// `--machine` such a topology is refused, as is `--machine` on a
/// one-machine topology or naming no machine of it (exit 2, nothing made).
fn for_machine(loaded: testbed::Loaded, machine: Option<&str>) -> Result<testbed::Loaded, Failure> {
    let plan = &loaded.plan;
    let names: Vec<&str> = plan.machines.iter().map(|m| m.name.as_str()).collect();
    let Some(machine) = machine else {
        if !names.is_empty() {
            eprintln!(
                "error: `{}` is spread over the machines {}: run `testbed up FILE --machine NAME` on each machine to build its share",
                plan.name,
                names.join(", ")
            );
            return Err(Failure::BadInput);
        }
        return Ok(loaded);
    };
    loaded.for_machine(machine).map_err(|e| {
        match &e {
            testbed::LoadError::Share(ShareError::NoMachines(_)) => {
                eprintln!("error: {e}; leave out --machine")
            }
            _ => eprintln!("error: {e}"),
        }
        Failure::BadInput
    })
}

/// `testbed down [NAME|FILE|--all] [--machine M] [--keep-logs DIR] [--json]`.
pub fn down(args: DownArgs) -> Result<(), Failure> {
    use std::io::IsTerminal;
    let DownArgs {
        target,
        all,
        machine,
        keep_logs,
        json,
    } = args;
    let (machine, keep_logs) = (machine.as_deref(), keep_logs.as_deref());
    let names = down_targets(all, target)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "testbed down needs root: run it with sudo"
        )));
    }
    // Each testbed's plan, read before its state goes: a share of a
    // testbed in etcd cleans there after.
    let plans: Vec<Option<testbed::plan::Plan>> =
        names.iter().map(testbed::lifecycle::running_plan).collect();
    if let Some(m) = machine {
        check_machine(m, &plans)?;
    }
    let tty = std::io::stderr().is_terminal();
    let mut removed = Vec::new();
    for (n, plan) in names.into_iter().zip(plans) {
        removed.push(remove(&n, plan, keep_logs, tty)?);
    }
    if json {
        let doc = testbed::report::DownReport { removed };
        print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).context("printing")?
        ))?;
    }
    Ok(())
}

/// The testbeds `down` removes: every one with `--all`, else the one
/// `target` names (exit 2 if none is named).
fn down_targets(all: bool, target: Option<String>) -> Result<Vec<TestbedName>, Failure> {
    Ok(match (all, target) {
        (true, _) => testbed::kernel::teardown::testbeds(),
        (false, Some(t)) => vec![target_name(&t)?],
        (false, None) => {
            eprintln!("error: name a testbed (or its topology file), or use --all");
            return Err(Failure::BadInput);
        }
    })
}

/// With `--machine m`: every running testbed in `plans` is `m`'s share
/// (exit 2, nothing removed, otherwise).
fn check_machine(m: &str, plans: &[Option<testbed::plan::Plan>]) -> Result<(), Failure> {
    for p in plans.iter().flatten() {
        if p.machine.as_deref() != Some(m) {
            eprintln!(
                "error: this machine runs {} of `{}`, not `{m}`'s: nothing was removed",
                p.machine
                    .as_deref()
                    .map_or("the whole".to_string(), |x| format!("`{x}`'s share")),
                p.name
            );
            return Err(Failure::BadInput);
        }
    }
    Ok(())
}

/// Removes testbed `n`, whose running plan is `plan`: keeps its logs under
/// `keep_logs` if given, tears it down (with progress on a terminal when
/// `tty`), and leaves etcd for a share. Returns what was removed.
fn remove(
    n: &TestbedName,
    plan: Option<testbed::plan::Plan>,
    keep_logs: Option<&Path>,
    tty: bool,
) -> Result<testbed::report::Removed, Failure> {
    let kept = match keep_logs {
        Some(dir) => keep_logs_of(n, dir)?,
        None => None,
    };
    let mut progress = |msg: &str| {
        if tty {
            eprint!("\r\x1b[2K{n}: {msg}");
        } else {
            eprintln!("{n}: {msg}");
        }
    };
    let result = testbed::kernel::teardown::teardown(n, &mut progress);
    if tty {
        eprint!("\r\x1b[2K");
    }
    let r = result.with_context(|| format!("removing {n}"))?;
    eprintln!(
        "{n}: removed {} network namespaces and {} processes",
        r.namespaces, r.processes
    );
    let etcd = plan.as_ref().and_then(testbed::cluster::leave::after_down);
    match &etcd {
        Some(left) if left.outcome == testbed::cluster::leave::Outcome::Unreachable => {
            eprintln!("{n}: warning: {left}")
        }
        Some(left) => eprintln!("{n}: {left}"),
        None => {}
    }
    Ok(testbed::report::Removed {
        testbed: n.to_string(),
        namespaces: r.namespaces,
        processes: r.processes,
        kept_logs: kept.as_ref().map(|k| k.0.clone()),
        kept_files: kept.map(|k| k.1),
        machine: plan.as_ref().and_then(|p| p.machine.clone()),
        etcd,
    })
}

/// Copies testbed `n`'s logs to `dir`/NAME; where they went and how many
/// files, or None (with a note) if it has no state directory.
fn keep_logs_of(n: &TestbedName, dir: &Path) -> Result<Option<(String, usize)>, Failure> {
    let to = dir.join(n.as_str());
    if !n.dir().is_dir() {
        eprintln!("{n}: no state directory (gone after a crash?): no logs to keep");
        return Ok(None);
    }
    let files = testbed::state::keep::keep_logs(&n.dir(), &to)
        .with_context(|| format!("keeping the logs of {n} in {}", to.display()))?;
    eprintln!("{n}: kept {files} log files in {}", to.display());
    Ok(Some((to.display().to_string(), files)))
}
