//! The `testbed` command line: the edge where errors become messages and
//! exit codes (0 ok, 1 runtime failure, 2 bad input).
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use testbed::state::TestbedName;
use testbed::{diag, graph, plan::render, LoadError, Loaded};

mod cmd;

/// Declarative network emulation: a Kubernetes-style cluster out of Linux
/// network namespaces, from one YAML file.
#[derive(Parser)]
#[command(name = "testbed", version, about, long_about = None)]
struct Cli {
    /// More log output (-v: debug, -vv: trace); logs go to stderr.
    /// `RUST_LOG` (e.g. `RUST_LOG=testbed::controller=debug`) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors in the log output.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run reachability checks against a running testbed (the topology's
    /// `checks:`, or a file of them): exit 0 all pass, 1 an error-level
    /// check failed, 3 only warnings failed, 2 bad input.
    Check {
        /// The testbed's name or topology file (optional when only one runs).
        target: Option<String>,
        /// A file of checks (`checks:` at its top) instead of the topology's.
        #[arg(long)]
        checks: Option<PathBuf>,
        /// Only the checks whose names match this glob (`*`, `?`).
        #[arg(long)]
        only: Option<String>,
        /// Print JSON (`testbed.check/1`).
        #[arg(long)]
        json: bool,
        /// Also write JUnit XML to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Run an experiment (not built yet: --dry-run prints its schedule).
    Run {
        /// The experiment file.
        file: PathBuf,
        /// Print the runs it would make, their seeds, send times and
        /// fault targets, without running anything.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON (`testbed.schedule/1`).
        #[arg(long)]
        json: bool,
        /// Only the combinations with PARAM=VALUE (PARAM the field's path or
        /// its last segment); may be repeated.
        #[arg(long)]
        only: Vec<String>,
        /// Run each combination this many times instead of `repeat`.
        #[arg(long)]
        repeat: Option<u32>,
        /// Where results go: `DIR/<experiment>/<run-id>/`.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// How long bringing one run's testbed up may take.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Break a running testbed on purpose (node-down, link-down, partition,
    /// kill, delete) or undo it (node-up, link-up, clear).
    Fault {
        /// The testbed's name or topology file (optional when only one runs).
        #[arg(short = 't', long = "testbed", global = true)]
        testbed: Option<String>,
        /// Print the controller's reply as JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        fault: cmd::control::FaultCmd,
    },
    /// Set the number of pods of a replication controller of a running testbed.
    Scale {
        /// The testbed's name or topology file (optional when only one runs).
        #[arg(short = 't', long = "testbed")]
        testbed: Option<String>,
        /// The replication controller (NAME or NAMESPACE/NAME).
        rc: String,
        /// The number of pods.
        replicas: u32,
        /// Print the controller's reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a running testbed to a new version of its file: prints the
    /// difference, then changes only what differs.
    Apply {
        /// The new topology file (same `name`).
        file: PathBuf,
        /// Only print the difference.
        #[arg(long)]
        dry_run: bool,
        /// Print the difference as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Summarize recorded results (`results/<experiment>/<run-id>` or one
    /// run's directory), or `diff` two of them.
    #[command(args_conflicts_with_subcommands = true)]
    Results {
        /// An experiment's run directory or one run's directory.
        path: Option<PathBuf>,
        /// Print JSON (the summary or run record; `testbed.diff/1`).
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        diff: Option<cmd::results::ResultsCmd>,
    },
    /// What a testbed's controller did and saw: pods made, ready, evicted,
    /// nodes NotReady, faults, drift repaired, apply steps.
    Events {
        /// The testbed's name or topology file (optional when only one runs).
        target: Option<String>,
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
    /// Build a topology for real (needs root); returns when everything is ready.
    Up {
        /// The topology file.
        file: PathBuf,
        /// How long to wait for every container to start and pass its ready check.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Use this overlay backend instead of the file's `cluster.overlay`.
        #[arg(long, value_parser = ["udp", "vxlan", "host-gw"])]
        overlay: Option<String>,
        /// Build this machine's share of a topology spread over `machines:`
        /// (not built yet: refused).
        #[arg(long, value_name = "NAME")]
        machine: Option<String>,
    },
    /// Remove a testbed and everything it owns, even after a crash (needs root).
    Down {
        /// The testbed's name, or its topology file.
        target: Option<String>,
        /// Remove every testbed on this machine.
        #[arg(long, conflicts_with = "target")]
        all: bool,
        /// First copy the logs (containers', daemons', the controller's
        /// events) to DIR/<testbed>/.
        #[arg(long, value_name = "DIR")]
        keep_logs: Option<PathBuf>,
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the testbeds on this machine.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read a testbed's live kernel state back, in the plan's shape.
    Inspect {
        /// The testbed's name, or its topology file.
        target: String,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
        /// Print instead the service rules installed in every node, as the
        /// kernel reports them (iptables-save or nft list).
        #[arg(long)]
        rules: bool,
    },
    /// Compare a testbed's live kernel state with its plan; exits 1 and lists
    /// every difference if they differ.
    Verify {
        /// The testbed's name, or its topology file.
        target: String,
        /// Keep watching: print differences as they come (+) and go (-).
        #[arg(long)]
        watch: bool,
        /// Print the comparison as JSON (not with --watch).
        #[arg(long, conflicts_with = "watch")]
        json: bool,
    },
    /// Show a testbed's nodes, hosts, pods (phase, restarts) and services.
    Status {
        /// The testbed's name or topology file; all testbeds when absent.
        target: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in exactly the namespaces a container of a pod (or a host) gets.
    Exec {
        /// The testbed's name or topology file (optional when only one runs).
        #[arg(short = 't', long = "testbed")]
        testbed: Option<String>,
        /// POD, NAMESPACE/POD, or host:NAME (or a host's name).
        target: String,
        /// The container (default: the first).
        #[arg(short, long)]
        container: Option<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a container's log.
    Logs {
        /// The testbed's name or topology file (optional when only one runs).
        #[arg(short = 't', long = "testbed")]
        testbed: Option<String>,
        /// POD, NAMESPACE/POD, or host:NAME (or a host's name).
        target: String,
        /// The container (default: the first).
        #[arg(short, long)]
        container: Option<String>,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines of what is there (then, with -f, what
        /// comes).
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Change the link impairments of a node of a running testbed (udp overlay).
    Impair {
        /// The testbed's name or topology file.
        target: String,
        /// The node.
        machine: String,
        /// Added one-way delay, e.g. 10ms.
        #[arg(long)]
        delay: Option<String>,
        /// Delay variation, e.g. 2ms.
        #[arg(long)]
        jitter: Option<String>,
        /// Share of packets dropped, e.g. 1%.
        #[arg(long)]
        loss: Option<String>,
        /// Share of packets duplicated, e.g. 0.1%.
        #[arg(long)]
        duplicate: Option<String>,
        /// Share of packets sent ahead of delayed ones, e.g. 5%.
        #[arg(long)]
        reorder: Option<String>,
        /// Bandwidth limit, e.g. 100mbit.
        #[arg(long)]
        rate: Option<String>,
        /// Remove every impairment of the machine.
        #[arg(long)]
        clear: bool,
        /// Print the machine's impairments in force, changing nothing.
        #[arg(long, conflicts_with_all = ["delay", "jitter", "loss", "duplicate", "reorder", "rate", "clear"])]
        show: bool,
        /// Print the impairments (after the change) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions: `testbed completions bash >
    /// /etc/bash_completion.d/testbed` (also zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `testbed man | man -l -`.
    Man,
    /// Serve answers that name this pod, for the generators of experiments
    /// (a container command: `[testbed, serve, --http, "80"]`).
    Serve(cmd::serve::ServeArgs),
    /// Run one traffic generator from a network namespace and print its
    /// samples as JSON lines (for benchmarks).
    #[command(hide = true)]
    Generate(cmd::serve::GenerateArgs),
    /// Run the overlay daemon of a node in the foreground (`up` starts it).
    #[command(hide = true)]
    OverlayDaemon {
        /// The testbed's name.
        name: String,
        /// The node.
        node: String,
    },
    /// Run the userspace service proxy of a node in the foreground (`up`
    /// starts it).
    #[command(hide = true)]
    ProxyDaemon {
        /// The testbed's name.
        name: String,
        /// The node.
        node: String,
    },
    /// Run the supervisor of a testbed in the foreground (`up` starts it).
    #[command(hide = true)]
    Supervise {
        /// The testbed's name.
        name: String,
    },
    /// Print the service rules every node gets (iptables-restore or nft input).
    Rules {
        /// The topology file.
        file: PathBuf,
        /// The proxy mode (default: the file's `cluster.proxy`).
        #[arg(long, value_parser = ["iptables", "nftables", "userspace"])]
        mode: Option<String>,
        /// Print instead the transaction that takes this pod's endpoints out,
        /// as when it stops being ready (repeatable).
        #[arg(long, value_name = "POD")]
        without: Vec<String>,
        /// Print a JSON object (`mode`, `without`, `rules`).
        #[arg(long)]
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
    /// The outcome is printed already; exit with this code.
    Reported(u8),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// Logs to stderr: warnings by default, `-q` errors only, `-v` debug,
/// `-vv` trace; `RUST_LOG` filters instead when set; colour only on a
/// terminal and without `NO_COLOR`.
fn init_logs(verbose: u8, quiet: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("warning: RUST_LOG `{spec}`: {e}; using `{level}`");
            EnvFilter::new(level)
        }),
        _ => EnvFilter::new(level),
    };
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    // Everything the testbed writes (plans with the containers' environments,
    // logs, pid files) is for root alone; containers get the usual 022.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    init_logs(cli.verbose, cli.quiet);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput) => ExitCode::from(2),
        Err(Failure::Reported(code)) => ExitCode::from(code),
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
        Command::Up {
            file,
            timeout,
            json,
            overlay,
            machine,
        } => cmd::lifecycle::up(&file, timeout, json, overlay.as_deref(), machine.as_deref()),
        Command::Down {
            target,
            all,
            keep_logs,
            json,
        } => cmd::lifecycle::down(target, all, keep_logs.as_deref(), json),
        Command::Ls { json } => ls(json),
        Command::Inspect {
            target,
            json,
            rules: true,
        } => {
            let plan = target_plan(&target)?;
            let rules = testbed::report::inspect::installed(&plan)
                .context("reading the installed rules")?;
            if json {
                return print(&render::to_json(&rules).context("printing the rules")?);
            }
            print(&rules.iter().map(|r| r.to_string()).collect::<String>())
        }
        Command::Inspect { target, json, .. } => {
            let plan = target_plan(&target)?;
            let have = testbed::report::inspect::kernel(&plan.name, &observe(&plan)?);
            let text = if json {
                render::to_json(&have)
            } else {
                render::to_yaml(&have)
            };
            print(&text.context("printing the state")?)
        }
        Command::Verify {
            target,
            watch,
            json,
        } => {
            let plan = target_plan(&target)?;
            if watch {
                cmd::verify::watch(plan)
            } else {
                cmd::verify::once(&plan, json)
            }
        }
        Command::Status { target, json } => status(target, json),
        Command::Exec {
            testbed,
            target,
            container,
            command,
        } => {
            let plan = one_testbed(testbed)?;
            cmd::exec::exec(&plan, &target, container.as_deref(), &command)
        }
        Command::Logs {
            testbed,
            target,
            container,
            follow,
            tail,
        } => {
            let plan = one_testbed(testbed)?;
            cmd::exec::logs(&plan, &target, container.as_deref(), follow, tail)
        }
        Command::ProxyDaemon { name, node } => {
            let name = checked_name(&name)?;
            checked_node(&node)?;
            let plan = running_plan(&name)?;
            testbed::services::userspace::run_daemon(&plan, &node).context("userspace proxy")?;
            Ok(())
        }
        Command::OverlayDaemon { name, node } => {
            let name = checked_name(&name)?;
            checked_node(&node)?;
            let plan = running_plan(&name)?;
            testbed::overlay_run::run_daemon(&plan, &node).context("overlay daemon")?;
            Ok(())
        }
        Command::Impair {
            target,
            machine,
            delay,
            jitter,
            loss,
            duplicate,
            reorder,
            rate,
            clear,
            show,
            json,
        } => {
            let link = cmd::control::LinkArgs {
                delay,
                jitter,
                loss,
                duplicate,
                reorder,
                rate,
            };
            cmd::control::impair(&target, &machine, link, clear, show, json)
        }
        Command::Fault {
            testbed,
            json,
            fault,
        } => {
            let plan = one_testbed(testbed)?;
            let name = checked_name(&plan.name)?;
            let req = cmd::control::fault_request(fault, &plan)?;
            cmd::control::send(&name, &req, json)?;
            Ok(())
        }
        Command::Scale {
            testbed,
            rc,
            replicas,
            json,
        } => {
            let plan = one_testbed(testbed)?;
            let name = checked_name(&plan.name)?;
            let req = testbed::controller::control::Request::Scale { rc, replicas };
            cmd::control::send(&name, &req, json)?;
            Ok(())
        }
        Command::Apply {
            file,
            dry_run,
            json,
        } => cmd::control::apply(&file, dry_run, json),
        Command::Events {
            target,
            follow,
            json,
        } => {
            let plan = one_testbed(target)?;
            let name = checked_name(&plan.name)?;
            cmd::events::run(&name, follow, json)
        }
        Command::Run {
            file,
            dry_run,
            json,
            only,
            repeat,
            results,
            timeout,
        } => cmd::run::run(cmd::run::Args {
            file: &file,
            dry_run,
            json,
            only: &only,
            repeat,
            results: &results,
            up_timeout: timeout,
        }),
        Command::Results { path, json, diff } => match (diff, path) {
            (Some(d), _) => cmd::results::diff(d, json),
            (None, Some(p)) => cmd::results::show(&p, json),
            (None, None) => {
                eprintln!("error: give a results directory, or `diff A B`");
                Err(Failure::BadInput)
            }
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "testbed", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .context("writing the manual page")?;
            print(&String::from_utf8_lossy(&out))
        }
        Command::Serve(args) => cmd::serve::serve(args),
        Command::Generate(args) => cmd::serve::generate(args),
        Command::Check {
            target,
            checks,
            only,
            json,
            junit,
        } => {
            let plan = one_testbed(target)?;
            let name = checked_name(&plan.name)?;
            let args = cmd::check::Args {
                checks: checks.as_deref(),
                only: only.as_deref(),
                json,
                junit: junit.as_deref(),
            };
            cmd::check::run(&name, &plan, args)
        }
        Command::Supervise { name } => {
            let name = checked_name(&name)?;
            testbed::controller::run::run_from_state(&name).context("controller")?;
            Ok(())
        }
        Command::Rules {
            file,
            mode,
            without,
            json,
        } => {
            let mut plan = load(&file)?.plan;
            match mode.as_deref() {
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
        Err(e @ LoadError::Read { .. }) => {
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

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<testbed::topology::units::Duration>()
        .map(|d| std::time::Duration::from_micros(d.0))
        .map_err(|e| e.to_string())
}

/// A testbed named on the command line: a topology file, or the name of a
/// running testbed (whose plan is in its state directory).
fn target_plan(target: &str) -> Result<testbed::plan::Plan, Failure> {
    let path = std::path::Path::new(target);
    if path.is_file() {
        return Ok(load(path)?.plan);
    }
    let name = checked_name(target)?;
    running_plan(&name)
}

/// The plan of running testbed `name`.
fn running_plan(name: &TestbedName) -> Result<testbed::plan::Plan, Failure> {
    testbed::lifecycle::running_plan(name).ok_or_else(|| {
        Failure::Runtime(anyhow::anyhow!(
            "no running testbed named `{name}`; `testbed ls` lists them"
        ))
    })
}

/// The name a command line target stands for, without needing its state.
fn target_name(target: &str) -> Result<TestbedName, Failure> {
    let path = std::path::Path::new(target);
    if path.is_file() {
        let plan = load(path)?.plan;
        return checked_name(&plan.name);
    }
    checked_name(target)
}

/// A testbed name from the command line, checked before it reaches any
/// path: a bad one is exit 2.
fn checked_name(name: &str) -> Result<TestbedName, Failure> {
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
fn checked_node(node: &str) -> Result<(), Failure> {
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

fn observe(plan: &testbed::plan::Plan) -> Result<testbed::plan::state::KernelState, Failure> {
    cmd::verify::observe(plan, &testbed::plan::state::desired(plan))
}

fn ls(json: bool) -> Result<(), Failure> {
    let list = testbed::report::list();
    let text = if json {
        render::to_json(&list).context("printing")?
    } else {
        testbed::report::list_table(&list)
    };
    print(&text)
}

/// The plan of the testbed a command names, or of the only one running.
fn one_testbed(target: Option<String>) -> Result<testbed::plan::Plan, Failure> {
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

/// Prints a log (its rotated part first) and, with `follow`, what is
/// appended to it, across rotations.
fn status(target: Option<String>, json: bool) -> Result<(), Failure> {
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
