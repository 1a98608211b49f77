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

/// One arm per subcommand, each handing its arguments to its `cmd` module:
/// a flat table, longer than a function should be only because clap's
/// variants are destructured field by field (as youki's `main` does).
fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Validate { file, json } => cmd::offline::validate(&file, json),
        Command::Plan { file, format, json } => cmd::offline::plan(&file, format, json),
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
            machine,
            keep_logs,
            json,
        } => cmd::lifecycle::down(target, all, machine.as_deref(), keep_logs.as_deref(), json),
        Command::Ls { json } => cmd::inspect::ls(json),
        Command::Inspect {
            target,
            json,
            rules,
        } => cmd::inspect::inspect(&target, json, rules),
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
        Command::Status { target, json } => cmd::inspect::status(target, json),
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
            previous,
        } => {
            let plan = one_testbed(testbed)?;
            let how = cmd::exec::LogsHow {
                follow,
                tail,
                previous,
            };
            cmd::exec::logs(&plan, &target, container.as_deref(), how)
        }
        Command::ProxyDaemon { name, node } => cmd::daemons::proxy(&name, &node),
        Command::OverlayDaemon { name, node } => cmd::daemons::overlay(&name, &node),
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
        } => cmd::control::fault(testbed, fault, json),
        Command::Scale {
            testbed,
            rc,
            replicas,
            json,
        } => cmd::control::scale(testbed, rc, replicas, json),
        Command::Apply {
            file,
            dry_run,
            json,
        } => cmd::control::apply(&file, dry_run, json),
        Command::Events {
            target,
            follow,
            json,
        } => cmd::events::run(target, follow, json),
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
        Command::Completions { shell } => cmd::offline::completions(shell),
        Command::Man => cmd::offline::man(),
        Command::Serve(args) => cmd::serve::serve(args),
        Command::Generate(args) => cmd::serve::generate(args),
        Command::Check {
            target,
            checks,
            only,
            json,
            junit,
        } => cmd::check::run(
            target,
            cmd::check::Args {
                checks: checks.as_deref(),
                only: only.as_deref(),
                json,
                junit: junit.as_deref(),
            },
        ),
        Command::Supervise { name } => cmd::daemons::supervise(&name),
        Command::Rules {
            file,
            mode,
            without,
            json,
        } => cmd::offline::rules(&file, mode.as_deref(), without, json),
        Command::Graph { file, format } => cmd::offline::graph(&file, format),
    }
}
