//! `testbed verify NAME [--watch]`: the testbed's kernel objects against its
//! desired state (the plan with the faults in force: a link a fault holds
//! down is meant to be down). With `--watch`, differences are printed as
//! they come and go, with the time, until interrupted.

use super::args::VerifyArgs;
use crate::Failure;
use anyhow::Context;
use std::collections::BTreeSet;
use std::time::Duration;
use testbed::plan::state::{diff, KernelState};
use testbed::plan::Plan;

/// How often `--watch` looks.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Reads the kernel state of the namespaces `want` names and of every
/// other namespace of the testbed.
pub fn observe(plan: &Plan, want: &KernelState) -> Result<KernelState, Failure> {
    Ok(testbed::controller::verify::observe(plan, want).context("reading the kernel state")?)
}

/// The kernel state `plan` describes with the faults of its testbed.
fn wanted(plan: &Plan) -> KernelState {
    testbed::controller::verify::wanted(plan)
}

/// `testbed verify NAME [--watch | --json]`.
pub fn run(args: VerifyArgs) -> Result<(), Failure> {
    let plan = crate::target_plan(&args.target)?;
    if args.watch {
        watch(plan)
    } else {
        once(&plan, args.json)
    }
}

/// Compares once; exit 1 with every difference if there is one (as text,
/// or a `VerifyReport` with `json`).
fn once(plan: &Plan, json: bool) -> Result<(), Failure> {
    let want = wanted(plan);
    let have = observe(plan, &want)?;
    let diffs = diff(&want, &have);
    let matches = diffs.is_empty();
    if json {
        let report = testbed::report::VerifyReport {
            testbed: plan.name.clone(),
            matches,
            namespaces: have.len(),
            differences: diffs,
        };
        crate::print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).context("printing")?
        ))?;
    } else if matches {
        crate::print(&format!(
            "{}: the kernel matches the plan ({} namespaces)\n",
            plan.name,
            have.len()
        ))?;
    } else {
        crate::print(&diffs.iter().map(|d| format!("{d}\n")).collect::<String>())?;
    }
    if matches {
        Ok(())
    } else {
        Err(Failure::Reported(1))
    }
}

/// Prints differences as they appear (`+`) and go (`-`), until the testbed
/// is gone (exit 0) or the command is interrupted.
fn watch(plan: Plan) -> Result<(), Failure> {
    let dir = std::path::PathBuf::from(&plan.state_dir);
    let mut source = testbed::state::plan_watch::PlanWatch::new(testbed::state::layout::plan(&dir));
    let mut plan = plan;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    crate::print(&format!("{}: watching (Ctrl-C ends)\n", plan.name))?;
    loop {
        if let Some(p) = source.changed() {
            plan = p;
        }
        if !dir.exists() {
            return crate::print(&format!("{}: the testbed is gone\n", plan.name));
        }
        let want = wanted(&plan);
        let have = observe(&plan, &want)?;
        let now: BTreeSet<String> = diff(&want, &have).into_iter().collect();
        let stamp = testbed::controller::events::rfc3339_ms(testbed::controller::run::now_ms());
        let mut out = String::new();
        for d in now.difference(&seen) {
            out.push_str(&format!("{stamp} + {d}\n"));
        }
        for d in seen.difference(&now) {
            out.push_str(&format!("{stamp} - {d}\n"));
        }
        crate::print(&out)?;
        seen = now;
        std::thread::sleep(WATCH_EVERY);
    }
}
