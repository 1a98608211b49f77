//! The command line's shape: every subcommand and its arguments (one
//! struct each), as clap parses them; typed values (units, the overlay,
//! the proxy mode, shells) are checked by their parsers, names by the
//! subcommands that take them.
//! What each subcommand does is in its own file beside this one.

use super::common::parse_duration;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use testbed::topology::units::{Duration, Percent, Rate};

/// Declarative network emulation: a Kubernetes-style cluster out of Linux
/// network namespaces, from one YAML file.
#[derive(Parser)]
#[command(name = "testbed", version, about, long_about = None)]
pub(crate) struct Cli {
    /// More log output (-v: debug, -vv: trace); logs go to stderr.
    /// `RUST_LOG` (e.g. `RUST_LOG=testbed::controller=debug`) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Only errors in the log output.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run reachability checks against a running testbed (the topology's
    /// `checks:`, or a file of them): exit 0 all pass, 1 an error-level
    /// check failed, 3 only warnings failed, 2 bad input.
    Check(CheckArgs),
    /// Run an experiment (not built yet: --dry-run prints its schedule).
    Run(RunArgs),
    /// Break a running testbed on purpose (node-down, link-down, partition,
    /// kill, delete) or undo it (node-up, link-up, clear).
    Fault(FaultArgs),
    /// Set the number of pods of a replication controller of a running testbed.
    Scale(ScaleArgs),
    /// Change a running testbed to a new version of its file: prints the
    /// difference, then changes only what differs.
    Apply(ApplyArgs),
    /// Summarize recorded results (`results/<experiment>/<run-id>` or one
    /// run's directory), or `diff` two of them.
    Results(ResultsArgs),
    /// What a testbed's controller did and saw: pods made, ready, evicted,
    /// nodes NotReady, faults, drift repaired, apply steps.
    Events(EventsArgs),
    /// Check a topology file and report every problem in it.
    Validate(ValidateArgs),
    /// Print the complete desired state a topology file describes.
    Plan(PlanArgs),
    /// Build a topology for real (needs root); returns when everything is ready.
    Up(UpArgs),
    /// Remove a testbed and everything it owns, even after a crash (needs root).
    Down(DownArgs),
    /// List the testbeds on this machine.
    Ls(LsArgs),
    /// Read a testbed's live kernel state back, in the plan's shape.
    Inspect(InspectArgs),
    /// Compare a testbed's live kernel state with its plan; exits 1 and lists
    /// every difference if they differ.
    Verify(VerifyArgs),
    /// Show a testbed's nodes, hosts, pods (phase, restarts) and services.
    Status(StatusArgs),
    /// Run a command in exactly the namespaces a container of a pod (or a host) gets.
    Exec(ExecArgs),
    /// Print a container's log.
    Logs(LogsArgs),
    /// Change the link impairments of a node of a running testbed (udp overlay).
    Impair(ImpairArgs),
    /// Print shell completions: `testbed completions bash >
    /// /etc/bash_completion.d/testbed` (also zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the manual page (roff): `testbed man | man -l -`.
    Man,
    /// Serve answers that name this pod, for the generators of experiments
    /// (a container command: `[testbed, serve, --http, "80"]`).
    Serve(super::serve::ServeArgs),
    /// Run one traffic generator from a network namespace and print its
    /// samples as JSON lines (for benchmarks).
    #[command(hide = true)]
    Generate(super::serve::GenerateArgs),
    /// Run the overlay daemon of a node in the foreground (`up` starts it).
    #[command(hide = true)]
    OverlayDaemon(OverlayDaemonArgs),
    /// Run the userspace service proxy of a node in the foreground (`up`
    /// starts it).
    #[command(hide = true)]
    ProxyDaemon(ProxyDaemonArgs),
    /// Run the supervisor of a testbed in the foreground (`up` starts it).
    #[command(hide = true)]
    Supervise(SuperviseArgs),
    /// Print the service rules every node gets (iptables-restore or nft input).
    Rules(RulesArgs),
    /// Draw a topology: nodes, pods, hosts, bridges, links and services.
    Graph(GraphArgs),
}

/// `--overlay`: the overlay backends.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OverlayArg {
    Udp,
    Vxlan,
    HostGw,
}

impl From<OverlayArg> for overlay::Backend {
    fn from(a: OverlayArg) -> Self {
        match a {
            OverlayArg::Udp => overlay::Backend::Udp,
            OverlayArg::Vxlan => overlay::Backend::Vxlan,
            OverlayArg::HostGw => overlay::Backend::HostGw,
        }
    }
}

/// `--mode`: the service proxy modes.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ProxyModeArg {
    Iptables,
    Nftables,
    Userspace,
}

impl From<ProxyModeArg> for proxy::Mode {
    fn from(a: ProxyModeArg) -> Self {
        match a {
            ProxyModeArg::Iptables => proxy::Mode::Iptables,
            ProxyModeArg::Nftables => proxy::Mode::Nftables,
            ProxyModeArg::Userspace => proxy::Mode::Userspace,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PlanFormat {
    Yaml,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
}

/// The arguments of `testbed check`.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// The testbed's name or topology file (optional when only one runs).
    pub(crate) target: Option<String>,
    /// A file of checks (`checks:` at its top) instead of the topology's.
    #[arg(long)]
    pub(crate) checks: Option<PathBuf>,
    /// Only the checks whose names match this glob (`*`, `?`).
    #[arg(long)]
    pub(crate) only: Option<String>,
    /// Print JSON (`testbed.check/1`).
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write JUnit XML to this file.
    #[arg(long)]
    pub(crate) junit: Option<PathBuf>,
}

/// The arguments of `testbed run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The experiment file.
    pub(crate) file: PathBuf,
    /// Print the runs it would make, their seeds, send times and
    /// fault targets, without running anything.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON (`testbed.schedule/1`).
    #[arg(long)]
    pub(crate) json: bool,
    /// Only the combinations with PARAM=VALUE (PARAM the field's path or
    /// its last segment); may be repeated.
    #[arg(long)]
    pub(crate) only: Vec<String>,
    /// Run each combination this many times instead of `repeat`.
    #[arg(long)]
    pub(crate) repeat: Option<u32>,
    /// Where results go: `DIR/<experiment>/<run-id>/`.
    #[arg(long, default_value = "results")]
    pub(crate) results: PathBuf,
    /// How long bringing one run's testbed up may take.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub(crate) timeout: std::time::Duration,
}

/// The arguments of `testbed fault`.
#[derive(clap::Args)]
pub(crate) struct FaultArgs {
    /// The testbed's name or topology file (optional when only one runs).
    #[arg(short = 't', long = "testbed", global = true)]
    pub(crate) testbed: Option<String>,
    /// Print the controller's reply as JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) fault: super::control::FaultCmd,
}

/// The arguments of `testbed scale`.
#[derive(clap::Args)]
pub(crate) struct ScaleArgs {
    /// The testbed's name or topology file (optional when only one runs).
    #[arg(short = 't', long = "testbed")]
    pub(crate) testbed: Option<String>,
    /// The replication controller (NAME or NAMESPACE/NAME).
    pub(crate) rc: String,
    /// The number of pods.
    pub(crate) replicas: u32,
    /// Print the controller's reply as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed apply`.
#[derive(clap::Args)]
pub(crate) struct ApplyArgs {
    /// The new topology file (same `name`).
    pub(crate) file: PathBuf,
    /// Only print the difference.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print the difference as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed results`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ResultsArgs {
    /// An experiment's run directory or one run's directory.
    pub(crate) path: Option<PathBuf>,
    /// Print JSON (the summary or run record; `testbed.diff/1`).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) diff: Option<super::results::ResultsCmd>,
}

/// The arguments of `testbed events`.
#[derive(clap::Args)]
pub(crate) struct EventsArgs {
    /// The testbed's name or topology file (optional when only one runs).
    pub(crate) target: Option<String>,
    /// Keep printing new events.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed validate`.
#[derive(clap::Args)]
pub(crate) struct ValidateArgs {
    /// The topology file.
    pub(crate) file: PathBuf,
    /// Print the result (and every problem) as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed plan`.
#[derive(clap::Args)]
pub(crate) struct PlanArgs {
    /// The topology file.
    pub(crate) file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Yaml)]
    pub(crate) format: PlanFormat,
    /// Shorthand for `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub(crate) json: bool,
}

/// The arguments of `testbed up`.
#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// The topology file.
    pub(crate) file: PathBuf,
    /// How long to wait for every container to start and pass its ready check.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) timeout: std::time::Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Use this overlay backend instead of the file's `cluster.overlay`.
    #[arg(long, value_enum)]
    pub(crate) overlay: Option<OverlayArg>,
    /// Build this machine's share of a topology spread over `machines:`
    /// (its nodes, their pods, its hosts, its part of the LAN).
    #[arg(long, value_name = "NAME")]
    pub(crate) machine: Option<String>,
}

/// The arguments of `testbed down`.
#[derive(clap::Args)]
pub(crate) struct DownArgs {
    /// The testbed's name, or its topology file.
    pub(crate) target: Option<String>,
    /// Remove every testbed on this machine.
    #[arg(long, conflicts_with = "target")]
    pub(crate) all: bool,
    /// The machine whose share this is (a testbed spread over
    /// `machines:`): refused when this machine runs another's.
    #[arg(long, value_name = "NAME")]
    pub(crate) machine: Option<String>,
    /// First copy the logs (containers', daemons', the controller's
    /// events) to DIR/<testbed>/.
    #[arg(long, value_name = "DIR")]
    pub(crate) keep_logs: Option<PathBuf>,
    /// Print what was removed as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed ls`.
#[derive(clap::Args)]
pub(crate) struct LsArgs {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed inspect`.
#[derive(clap::Args)]
pub(crate) struct InspectArgs {
    /// The testbed's name, or its topology file.
    pub(crate) target: String,
    /// Print JSON instead of YAML.
    #[arg(long)]
    pub(crate) json: bool,
    /// Print instead the service rules installed in every node, as the
    /// kernel reports them (iptables-save or nft list).
    #[arg(long)]
    pub(crate) rules: bool,
}

/// The arguments of `testbed verify`.
#[derive(clap::Args)]
pub(crate) struct VerifyArgs {
    /// The testbed's name, or its topology file.
    pub(crate) target: String,
    /// Keep watching: print differences as they come (+) and go (-).
    #[arg(long)]
    pub(crate) watch: bool,
    /// Print the comparison as JSON (not with --watch).
    #[arg(long, conflicts_with = "watch")]
    pub(crate) json: bool,
}

/// The arguments of `testbed status`.
#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// The testbed's name or topology file; all testbeds when absent.
    pub(crate) target: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed exec`.
#[derive(clap::Args)]
pub(crate) struct ExecArgs {
    /// The testbed's name or topology file (optional when only one runs).
    #[arg(short = 't', long = "testbed")]
    pub(crate) testbed: Option<String>,
    /// POD, NAMESPACE/POD, or host:NAME (or a host's name).
    pub(crate) target: String,
    /// The container (default: the first).
    #[arg(short, long)]
    pub(crate) container: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

/// The arguments of `testbed logs`.
#[derive(clap::Args)]
pub(crate) struct LogsArgs {
    /// The testbed's name or topology file (optional when only one runs).
    #[arg(short = 't', long = "testbed")]
    pub(crate) testbed: Option<String>,
    /// POD, NAMESPACE/POD, or host:NAME (or a host's name).
    pub(crate) target: String,
    /// The container (default: the first).
    #[arg(short, long)]
    pub(crate) container: Option<String>,
    /// Keep printing what is appended.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Only the last N lines of what is there (then, with -f, what
    /// comes).
    #[arg(long, value_name = "N")]
    pub(crate) tail: Option<usize>,
    /// The log of the container's previous run (before its last
    /// restart) instead of the current one.
    #[arg(short, long, conflicts_with = "follow")]
    pub(crate) previous: bool,
}

/// The arguments of `testbed impair`.
#[derive(clap::Args)]
pub(crate) struct ImpairArgs {
    /// The testbed's name or topology file.
    pub(crate) target: String,
    /// The node.
    pub(crate) machine: String,
    /// Added one-way delay, e.g. 10ms.
    #[arg(long)]
    pub(crate) delay: Option<Duration>,
    /// Delay variation, e.g. 2ms.
    #[arg(long)]
    pub(crate) jitter: Option<Duration>,
    /// Share of packets dropped, e.g. 1%.
    #[arg(long)]
    pub(crate) loss: Option<Percent>,
    /// Share of packets duplicated, e.g. 0.1%.
    #[arg(long)]
    pub(crate) duplicate: Option<Percent>,
    /// Share of packets sent ahead of delayed ones, e.g. 5%.
    #[arg(long)]
    pub(crate) reorder: Option<Percent>,
    /// Bandwidth limit, e.g. 100mbit.
    #[arg(long)]
    pub(crate) rate: Option<Rate>,
    /// Remove every impairment of the machine.
    #[arg(long)]
    pub(crate) clear: bool,
    /// Print the machine's impairments in force, changing nothing.
    #[arg(long, conflicts_with_all = ["delay", "jitter", "loss", "duplicate", "reorder", "rate", "clear"])]
    pub(crate) show: bool,
    /// Print the impairments (after the change) as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed completions`.
#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    pub(crate) shell: clap_complete::Shell,
}

/// The arguments of `testbed overlay-daemon`.
#[derive(clap::Args)]
pub(crate) struct OverlayDaemonArgs {
    /// The testbed's name.
    pub(crate) name: String,
    /// The node.
    pub(crate) node: String,
}

/// The arguments of `testbed proxy-daemon`.
#[derive(clap::Args)]
pub(crate) struct ProxyDaemonArgs {
    /// The testbed's name.
    pub(crate) name: String,
    /// The node.
    pub(crate) node: String,
}

/// The arguments of `testbed supervise`.
#[derive(clap::Args)]
pub(crate) struct SuperviseArgs {
    /// The testbed's name.
    pub(crate) name: String,
}

/// The arguments of `testbed rules`.
#[derive(clap::Args)]
pub(crate) struct RulesArgs {
    /// The topology file.
    pub(crate) file: PathBuf,
    /// The proxy mode (default: the file's `cluster.proxy`).
    #[arg(long, value_enum)]
    pub(crate) mode: Option<ProxyModeArg>,
    /// Print instead the transaction that takes this pod's endpoints out,
    /// as when it stops being ready (repeatable).
    #[arg(long, value_name = "POD")]
    pub(crate) without: Vec<String>,
    /// Print a JSON object (`mode`, `without`, `rules`).
    #[arg(long)]
    pub(crate) json: bool,
}

/// The arguments of `testbed graph`.
#[derive(clap::Args)]
pub(crate) struct GraphArgs {
    /// The topology file.
    pub(crate) file: PathBuf,
    /// Output format (svg opens in any browser).
    #[arg(long, value_enum, default_value_t = GraphFormat::Svg)]
    pub(crate) format: GraphFormat,
}
