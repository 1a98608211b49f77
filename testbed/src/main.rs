//! The `testbed` command line: the edge where errors become messages and
//! exit codes (0 ok, 1 runtime failure, 2 bad input).
#![forbid(unsafe_code)]

use clap::Parser;
use cmd::args::{Cli, Command};
use std::process::ExitCode;

mod cmd;

// What the subcommands share, at the crate root where they look for it.
pub(crate) use cmd::common::{
    checked_name, load, one_testbed, print, running_plan, target_name, target_plan, Failure,
};

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
    testbed::daemons::seal_machine_netns();
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

/// One arm per subcommand: each hands its arguments (one clap struct per
/// subcommand, `cmd::args`) to its `cmd` module.
fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Validate(a) => cmd::offline::validate(a),
        Command::Plan(a) => cmd::offline::plan(a),
        Command::Rules(a) => cmd::offline::rules(a),
        Command::Graph(a) => cmd::offline::graph(a),
        Command::Completions(a) => cmd::offline::completions(a),
        Command::Man => cmd::offline::man(),
        Command::Up(a) => cmd::lifecycle::up(a),
        Command::Down(a) => cmd::lifecycle::down(a),
        Command::Ls(a) => cmd::inspect::ls(a),
        Command::Inspect(a) => cmd::inspect::inspect(a),
        Command::Status(a) => cmd::inspect::status(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Exec(a) => cmd::exec::exec(a),
        Command::Logs(a) => cmd::exec::logs(a),
        Command::Impair(a) => cmd::control::impair(a),
        Command::Fault(a) => cmd::control::fault(a),
        Command::Scale(a) => cmd::control::scale(a),
        Command::Apply(a) => cmd::control::apply(a),
        Command::Events(a) => cmd::events::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Results(a) => cmd::results::run(a),
        Command::Serve(a) => cmd::serve::serve(a),
        Command::Generate(a) => cmd::serve::generate(a),
        Command::Supervise(a) => cmd::daemons::supervise(a),
        Command::ProxyDaemon(a) => cmd::daemons::proxy(a),
        Command::OverlayDaemon(a) => cmd::daemons::overlay(a),
    }
}
