//! `testbed check NAME [--checks FILE] [--only GLOB] [--json] [--junit
//! FILE]`: runs reachability checks against a running testbed. Exit 0 when
//! every check passes, 1 when an error-level check fails, 3 when only
//! warnings fail, 2 for bad input.

use super::args::CheckArgs;
use crate::Failure;
use anyhow::Context;
use testbed::check::{report, suite};

/// `testbed check [NAME]`: runs the checks of the testbed named (or the only one running).
pub fn run(args: CheckArgs) -> Result<(), Failure> {
    let plan = &crate::one_testbed(args.target.clone())?;
    let name = &crate::checked_name(&plan.name)?;
    let spec = testbed::controller::spec::read(&name.dir())
        .context("reading the testbed's file")?
        .load()
        .map_err(|e| {
            eprint!("{}", e.render());
            Failure::BadInput
        })?;
    let checks = match args.checks.as_deref() {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                eprintln!("error: cannot read {}: {e}", file.display());
                Failure::BadInput
            })?;
            let known = testbed::check::spec::Known::of_topology(&spec.topology);
            testbed::check::spec::read_file(&text, &file.display().to_string(), Some(&known))
                .map_err(|e| {
                    eprint!("{}", e.render());
                    Failure::BadInput
                })?
        }
        None => spec.topology.checks.clone(),
    };
    if checks.is_empty() {
        eprintln!(
            "error: no checks: the topology has no `checks:` list; give one with --checks FILE"
        );
        return Err(Failure::BadInput);
    }
    if let Some(glob) = args.only.as_deref() {
        if !checks.iter().any(|c| suite::glob_match(glob, &c.name)) {
            eprintln!("error: no check matches `{glob}`");
            return Err(Failure::BadInput);
        }
    }
    // On a machine's share, checks are about the whole testbed: probes
    // from another machine's namespaces are sent there (through etcd).
    let results = match plan
        .machine
        .as_ref()
        .and_then(|_| testbed::controller::remote::whole_live(plan))
    {
        Some(whole) => {
            let prober = testbed::controller::remote::prober(plan, &whole);
            suite::run_checks_with(&whole, &checks, args.only.as_deref(), &prober)
        }
        None => suite::run_checks(plan, &checks, args.only.as_deref()),
    };
    if let Some(path) = args.junit.as_deref() {
        testbed::state::write_report(path, report::junit(name.as_str(), &results).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let out = if args.json {
        let doc = report::CheckReport {
            schema: report::SCHEMA,
            testbed: name.to_string(),
            checks: results.clone(),
        };
        serde_json::to_string_pretty(&doc).context("printing")? + "\n"
    } else {
        report::text(&results)
    };
    crate::print(&out)?;
    match report::exit_code(&results) {
        0 => Ok(()),
        code => Err(Failure::Reported(code)),
    }
}
