//! `testbed run FILE [--dry-run [--json]] [--only PARAM=VALUE] [--repeat N]
//! [--results DIR]`: reads an experiment and prints its schedule
//! (combinations in order, seeds, each workload's sends, the timeline with
//! picked targets), or runs it with progress on the terminal. SIGINT ends
//! the run under way cleanly (its testbed removed, the runs made
//! summarised) and exits 130.

use super::args::RunArgs;
use crate::Failure;
use testbed::experiment::schedule::{self, Options, Schedule};
use testbed::experiment::Experiment;
use testbed::runner::{self as run, Progress};

/// Runs `testbed run`.
pub fn run(args: RunArgs) -> Result<(), Failure> {
    let exp = testbed::experiment::spec::read(&args.file).map_err(|e| {
        eprint!("{}", e.render());
        Failure::BadInput
    })?;
    let mut only = Vec::new();
    for o in &args.only {
        let Some((k, v)) = o.split_once('=') else {
            eprintln!("error: --only `{o}` is not PARAM=VALUE, e.g. --only proxy=nftables");
            return Err(Failure::BadInput);
        };
        only.push((k.to_string(), v.to_string()));
    }
    if args.repeat == Some(0) {
        eprintln!("error: --repeat must be at least 1");
        return Err(Failure::BadInput);
    }
    let opts = Options {
        only,
        repeat: args.repeat,
    };
    let sched = schedule::schedule(&exp, &opts).map_err(|e| {
        eprintln!("error: {e}");
        Failure::BadInput
    })?;
    if !args.dry_run {
        return execute(&exp, &sched, &args);
    }
    if args.json {
        let v = serde_json::json!({"schema": "testbed.schedule/1", "schedule": sched});
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)?
        );
    } else {
        print!("{}", text(&sched));
    }
    Ok(())
}

/// Runs the experiment.
fn execute(exp: &Experiment, sched: &Schedule, args: &RunArgs) -> Result<(), Failure> {
    use std::io::IsTerminal;
    if !nix::unistd::geteuid().is_root() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "testbed run needs root: run it with sudo"
        )));
    }
    let stop = testbed::signals::stop_on_signals()
        .map_err(|(sig, e)| anyhow::anyhow!("handling {sig}: {e}"))?;
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    let mut progress = |p: &Progress<'_>| {
        let head = format!("[{}/{}] {} rep-{}", p.index, p.total, p.combination, p.rep);
        if tty {
            eprint!("\r\x1b[2K{head}: {}", p.what);
        } else if head != last {
            eprintln!("{head}");
            last = head;
        }
        tracing::info!(run = p.index, what = p.what, "experiment");
    };
    let opts = run::Options {
        results: args.results.to_path_buf(),
        up_timeout: args.timeout,
    };
    let result = run::run_all(exp, sched, &opts, stop, &mut progress);
    if tty {
        eprint!("\r\x1b[2K");
    }
    match result {
        Ok(out) => {
            let verified = out.runs.iter().filter(|r| r.verified.ok).count();
            println!(
                "{}: {} of {} runs made, {verified} verified back at their plan; results in {}",
                exp.name,
                out.runs.len(),
                sched.runs.len(),
                out.dir.display()
            );
            if out.interrupted {
                eprintln!("interrupted: the summary covers the runs made");
                return Err(Failure::Reported(130));
            }
            Ok(())
        }
        Err(e) if e.is_bad_input() => {
            eprintln!("error: {e}");
            Err(Failure::BadInput)
        }
        Err(e) => Err(Failure::Runtime(anyhow::Error::new(e))),
    }
}

/// The schedule as text.
fn text(s: &Schedule) -> String {
    let ms = |us: u64| format!("{}.{:03}s", us / 1_000_000, us / 1_000 % 1_000);
    let mut out = format!(
        "experiment {}: {} combination(s), {} run(s)\n",
        s.experiment,
        s.combinations.len(),
        s.runs.len()
    );
    for r in &s.runs {
        out.push_str(&format!(
            "{} rep-{} seed {}\n",
            r.combination, r.rep, r.seed
        ));
        for w in &r.workloads {
            let first: Vec<String> = w.first_us.iter().map(|t| ms(*t)).collect();
            out.push_str(&format!(
                "  workload {}: {} sends at {}/s, first {}{}\n",
                w.name,
                w.count,
                w.rate,
                first.join(" "),
                if w.count > w.first_us.len() as u64 {
                    " ..."
                } else {
                    ""
                }
            ));
        }
        for t in &r.timeline {
            let until = t
                .until_us
                .map_or(String::new(), |u| format!(" until {}", ms(u)));
            out.push_str(&format!("  at {}{until}: {}\n", ms(t.at_us), t.what));
        }
    }
    out
}
