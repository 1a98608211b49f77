//! The `testbed` command line: the edge where errors become messages and
//! exit codes (0 ok, 1 runtime failure, 2 bad input).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use testbed::{diag, graph, plan::render, LoadError, Loaded};

/// Declarative network emulation: a Kubernetes-style cluster out of Linux
/// network namespaces, from one YAML file.
#[derive(Parser)]
#[command(name = "testbed", version, about, long_about = None)]
struct Cli {
    /// More log output (-v: debug, -vv: trace); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a topology file and report every problem in it.
    Validate {
        /// The topology file.
        file: PathBuf,
        /// Print the result (and every problem) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the complete desired state a topology file describes.
    Plan {
        /// The topology file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Yaml)]
        format: PlanFormat,
        /// Shorthand for `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Draw a topology: nodes, pods, hosts, bridges, links and services.
    Graph {
        /// The topology file.
        file: PathBuf,
        /// Output format (svg opens in any browser).
        #[arg(long, value_enum, default_value_t = GraphFormat::Svg)]
        format: GraphFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Yaml,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
}

/// A failure and the exit code it maps to.
enum Failure {
    /// The input is bad: exit 2 (the message is already printed).
    BadInput,
    /// Something else failed: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput) => ExitCode::from(2),
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads a topology; problems are printed to stderr and map to exit 2.
fn load(file: &std::path::Path) -> Result<Loaded, Failure> {
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
        Err(e @ LoadError::Read { .. }) => {
            eprint!("{}", e.render());
            Err(Failure::BadInput)
        }
        Err(e) => {
            eprint!("{}", e.render());
            Err(Failure::BadInput)
        }
    }
}

fn print(text: &str) -> Result<(), Failure> {
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

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Validate { file, json } => validate(&file, json),
        Command::Plan { file, format, json } => {
            let loaded = load(&file)?;
            let text = match (format, json) {
                (_, true) | (PlanFormat::Json, _) => render::to_json(&loaded.plan),
                (PlanFormat::Yaml, false) => render::plan_yaml(&loaded.plan),
            }
            .context("printing the plan")?;
            print(&text)
        }
        Command::Graph { file, format } => {
            let loaded = load(&file)?;
            let text = match format {
                GraphFormat::Dot => graph::dot(&loaded.plan),
                GraphFormat::Mermaid => graph::mermaid(&loaded.plan),
                GraphFormat::Svg => graph::svg(&loaded.plan),
            };
            print(&text)
        }
    }
}

fn validate(file: &std::path::Path, json: bool) -> Result<(), Failure> {
    if !json {
        let loaded = load(file)?;
        let p = &loaded.plan;
        return print(&format!(
            "{}: ok: testbed `{}` with {} nodes, {} hosts, {} pods and {} services\n",
            file.display(),
            p.name,
            p.nodes.len(),
            p.hosts.len(),
            p.pods.len(),
            p.services.len()
        ));
    }
    #[derive(serde::Serialize)]
    struct Report<'a> {
        file: String,
        valid: bool,
        diagnostics: &'a [diag::Diagnostic],
    }
    let result = testbed::load(file);
    let (valid, diags) = match &result {
        Ok(l) => (true, l.warnings.as_slice()),
        Err(LoadError::Invalid { diagnostics, .. }) => (false, diagnostics.as_slice()),
        Err(e @ LoadError::Read { .. }) => {
            eprint!("{}", e.render());
            return Err(Failure::BadInput);
        }
    };
    let report = Report {
        file: file.display().to_string(),
        valid,
        diagnostics: diags,
    };
    print(&render::to_json(&report).context("printing the report")?)?;
    if valid {
        Ok(())
    } else {
        Err(Failure::BadInput)
    }
}
