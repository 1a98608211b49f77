//! The subcommands that need no running testbed and no root: `validate`,
//! `plan`, `rules`, `graph`, and the command line's own `completions` and
//! `man`.

use super::args::{Cli, GraphFormat, PlanFormat};
use super::common::{load, print, Failure};
use anyhow::Context;
use std::path::Path;
use testbed::{graph, plan::render, LoadError};

pub(crate) fn validate(file: &std::path::Path, json: bool) -> Result<(), Failure> {
    if !json {
        let loaded = load(file)?;
        let report = testbed::report::validate::validation(
            &file.display().to_string(),
            Some(&loaded.plan),
            &loaded.warnings,
        );
        return print(&report.to_string());
    }
    let result = testbed::load(file);
    let (plan, diags) = match &result {
        Ok(l) => (Some(&l.plan), l.warnings.as_slice()),
        Err(LoadError::Invalid { diagnostics, .. }) => (None, diagnostics.as_slice()),
        Err(e @ (LoadError::Read { .. } | LoadError::Share(_))) => {
            eprint!("{}", e.render());
            return Err(Failure::BadInput);
        }
    };
    let report = testbed::report::validate::validation(&file.display().to_string(), plan, diags);
    print(&render::to_json(&report).context("printing the report")?)?;
    if report.valid {
        Ok(())
    } else {
        Err(Failure::BadInput)
    }
}

/// `testbed plan FILE [--format yaml|json]`.
pub(crate) fn plan(file: &Path, format: PlanFormat, json: bool) -> Result<(), Failure> {
    let loaded = load(file)?;
    let text = match (format, json) {
        (_, true) | (PlanFormat::Json, _) => render::to_json(&loaded.plan),
        (PlanFormat::Yaml, false) => render::plan_yaml(&loaded.plan),
    }
    .context("printing the plan")?;
    print(&text)
}

/// `testbed rules FILE [--mode M] [--without POD...] [--json]`.
pub(crate) fn rules(
    file: &Path,
    mode: Option<&str>,
    without: Vec<String>,
    json: bool,
) -> Result<(), Failure> {
    let mut plan = load(file)?.plan;
    match mode {
        Some("nftables") => plan.cluster.proxy = proxy::Mode::Nftables,
        Some("userspace") => plan.cluster.proxy = proxy::Mode::Userspace,
        Some(_) => plan.cluster.proxy = proxy::Mode::Iptables,
        None => {}
    }
    if let Some(pod) = without
        .iter()
        .find(|w| !plan.pods.iter().any(|p| &&p.name == w))
    {
        eprintln!(
            "error: --without {pod}: {} has no pod named `{pod}`\n  help: name a pod of the file (testbed plan {0} lists them)",
            file.display()
        );
        return Err(Failure::Reported(2));
    }
    let rules = testbed::services::rendered(&plan, &without);
    if json {
        let report = testbed::report::RulesReport {
            mode: plan.cluster.proxy,
            without,
            rules,
        };
        print(&(serde_json::to_string_pretty(&report).context("printing")? + "\n"))
    } else {
        print(&rules)
    }
}

/// `testbed graph FILE [--format dot|mermaid|svg]`.
pub(crate) fn graph(file: &Path, format: GraphFormat) -> Result<(), Failure> {
    let loaded = load(file)?;
    let text = match format {
        GraphFormat::Dot => graph::dot(&loaded.plan),
        GraphFormat::Mermaid => graph::mermaid(&loaded.plan),
        GraphFormat::Svg => graph::svg(&loaded.plan),
    };
    print(&text)
}

/// `testbed completions SHELL`.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "testbed", &mut std::io::stdout());
    Ok(())
}

/// `testbed man`.
pub(crate) fn man() -> Result<(), Failure> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("writing the manual page")?;
    print(&String::from_utf8_lossy(&out))
}
