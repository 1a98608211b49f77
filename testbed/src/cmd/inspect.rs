//! The subcommands that read running testbeds: `ls`, `status`,
//! `inspect` (the live kernel state, or the installed rules).

use super::args::{InspectArgs, LsArgs, StatusArgs};
use super::common::{print, running_plan, target_name, target_plan, Failure};
use anyhow::Context;
use testbed::plan::render;

pub(crate) fn observe(
    plan: &testbed::plan::Plan,
) -> Result<testbed::plan::state::KernelState, Failure> {
    super::verify::observe(plan, &testbed::plan::state::desired(plan))
}

/// `testbed ls [--json]`.
pub(crate) fn ls(args: LsArgs) -> Result<(), Failure> {
    let json = args.json;
    let list = testbed::report::list();
    let text = if json {
        render::to_json(&list).context("printing")?
    } else {
        testbed::report::list_table(&list)
    };
    print(&text)
}

/// `testbed status [NAME] [--json]`: every testbed's (or one's) report.
pub(crate) fn status(args: StatusArgs) -> Result<(), Failure> {
    let StatusArgs { target, json } = args;
    let names = match target {
        Some(t) => vec![target_name(&t)?],
        None => testbed::kernel::teardown::testbeds(),
    };
    let mut reports = Vec::new();
    for n in names {
        reports.push(testbed::report::status(&running_plan(&n)?));
    }
    let text = if json {
        render::to_json(&reports).context("printing")?
    } else {
        reports
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    print(&text)
}

/// `testbed inspect NAME [--rules] [--json]`: the live kernel state read
/// back in the plan's shape (YAML), or the rules every node has installed.
pub(crate) fn inspect(args: InspectArgs) -> Result<(), Failure> {
    let InspectArgs {
        target,
        json,
        rules,
    } = args;
    let plan = target_plan(&target)?;
    if rules {
        let rules =
            testbed::report::inspect::installed(&plan).context("reading the installed rules")?;
        if json {
            return print(&render::to_json(&rules).context("printing the rules")?);
        }
        return print(&rules.iter().map(|r| r.to_string()).collect::<String>());
    }
    let have = testbed::report::inspect::kernel(&plan.name, &observe(&plan)?);
    let text = if json {
        render::to_json(&have)
    } else {
        render::to_yaml(&have)
    };
    print(&text.context("printing the state")?)
}
