//! `testbed run FILE --dry-run [--json] [--only PARAM=VALUE] [--repeat N]`:
//! reads an experiment and prints its schedule (combinations in order,
//! seeds, each workload's sends, the timeline with picked targets).
//! Running experiments is not built yet: without `--dry-run` it exits 2.

use crate::Failure;
use std::path::Path;
use testbed::experiment::schedule::{self, Options, Schedule};

/// What the command line asked for.
pub struct Args<'a> {
    /// The experiment file.
    pub file: &'a Path,
    /// Only print the schedule.
    pub dry_run: bool,
    /// Print JSON (`testbed.schedule/1`).
    pub json: bool,
    /// `PARAM=VALUE` filters.
    pub only: &'a [String],
    /// Another number of repetitions.
    pub repeat: Option<u32>,
}

/// Runs `testbed run`.
pub fn run(args: Args<'_>) -> Result<(), Failure> {
    let exp = testbed::experiment::spec::read(args.file).map_err(|e| {
        eprint!("{}", e.render());
        Failure::BadInput
    })?;
    let mut only = Vec::new();
    for o in args.only {
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
        eprintln!(
            "error: running experiments is not built yet; `testbed run {} --dry-run` shows what would run ({} runs)",
            args.file.display(),
            sched.runs.len()
        );
        return Err(Failure::BadInput);
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
