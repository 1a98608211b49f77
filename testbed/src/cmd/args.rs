//! The command line's shape: every subcommand and its arguments, as clap
//! parses them (values are checked by their parsers: units, names, modes).
//! What each subcommand does is in its own file beside this one.

use super::common::parse_duration;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

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
        fault: super::control::FaultCmd,
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
        diff: Option<super::results::ResultsCmd>,
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
        /// (its nodes, their pods, its hosts, its part of the LAN).
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
        /// The machine whose share this is (a testbed spread over
        /// `machines:`): refused when this machine runs another's.
        #[arg(long, value_name = "NAME")]
        machine: Option<String>,
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
        /// The log of the container's previous run (before its last
        /// restart) instead of the current one.
        #[arg(short, long, conflicts_with = "follow")]
        previous: bool,
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
    Serve(super::serve::ServeArgs),
    /// Run one traffic generator from a network namespace and print its
    /// samples as JSON lines (for benchmarks).
    #[command(hide = true)]
    Generate(super::serve::GenerateArgs),
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
