//! The subcommands that need no running testbed and no root: `validate`,
//! `plan`, `rules`, `graph`, and the command line's own `completions` and
//! `man`.

use super::args::{
    Cli, CompletionsArgs, GraphArgs, GraphFormat, PlanArgs, PlanFormat, RulesArgs, ValidateArgs,
};
use super::common::{load, print, Failure};
use anyhow::Context;
use testbed::{graph, plan::render, LoadError};

/// `testbed validate FILE [--json]`.
pub(crate) fn validate(args: ValidateArgs) -> Result<(), Failure> {
    let ValidateArgs { file, json } = args;
    let file = file.as_path();
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
pub(crate) fn plan(args: PlanArgs) -> Result<(), Failure> {
    let PlanArgs { file, format, json } = args;
    let loaded = load(&file)?;
    let text = match (format, json) {
        (_, true) | (PlanFormat::Json, _) => render::to_json(&loaded.plan),
        (PlanFormat::Yaml, false) => render::plan_yaml(&loaded.plan),
    }
    .context("printing the plan")?;
    print(&text)
}

/// `testbed rules FILE [--mode M] [--without POD...] [--json]`.
pub(crate) fn rules(args: RulesArgs) -> Result<(), Failure> {
    let RulesArgs {
        file,
        mode,
        without,
        json,
    } = args;
    let mut plan = load(&file)?.plan;
    if let Some(mode) = mode {
        plan.cluster.proxy = mode.into();
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
pub(crate) fn graph(args: GraphArgs) -> Result<(), Failure> {
    let GraphArgs { file, format } = args;
    let loaded = load(&file)?;
    let text = match format {
        GraphFormat::Dot => graph::dot(&loaded.plan),
        GraphFormat::Mermaid => graph::mermaid(&loaded.plan),
        GraphFormat::Svg => graph::svg(&loaded.plan),
    };
    print(&text)
}

/// `testbed completions SHELL`.
pub(crate) fn completions(args: CompletionsArgs) -> Result<(), Failure> {
    let shell = args.shell;
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
