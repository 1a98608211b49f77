//! `testbed results PATH [--json]` and `testbed results diff A B [--json]`:
//! read recorded results (an experiment's run directory or one run's) and
//! print them, or compare two. Exit 0, 1 when `diff` finds a seeded
//! quantity that differs, 2 for bad input.

use super::args::ResultsArgs;
use crate::Failure;
use std::path::Path;
use testbed::results::{self, diff, markdown, ResultsError};

/// `results diff`.
#[derive(clap::Subcommand)]
pub enum ResultsCmd {
    /// Compare two results (experiment run directories or runs): exit 0
    /// when everything the seed determines is equal, 1 when not.
    Diff {
        /// The first (`results/<experiment>/<run-id>` or a run's directory).
        a: std::path::PathBuf,
        /// The second.
        b: std::path::PathBuf,
    },
}

fn bad(e: ResultsError) -> Failure {
    eprintln!("error: {e}");
    Failure::BadInput
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(anyhow::Error::from)?;
    println!("{text}");
    Ok(())
}

/// `testbed results PATH` or `testbed results diff A B`.
pub fn run(args: ResultsArgs) -> Result<(), Failure> {
    match (args.diff, args.path) {
        (Some(d), _) => diff(d, args.json),
        (None, Some(p)) => show(&p, args.json),
        (None, None) => {
            eprintln!("error: give a results directory, or `diff A B`");
            Err(Failure::BadInput)
        }
    }
}

/// `testbed results PATH`: the experiment's summary, or the run's record.
fn show(path: &Path, json: bool) -> Result<(), Failure> {
    // `.` or `../x` name their directory by its real name.
    let id = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !path.is_dir() {
        eprintln!("error: {}: no such directory", path.display());
        return Err(Failure::BadInput);
    }
    if path.join("summary.json").exists() {
        let s = results::read_experiment(path).map_err(bad)?;
        return if json {
            print_json(&s)
        } else {
            print!("{}", markdown::summary_text(&s, &id));
            Ok(())
        };
    }
    if path.join("run.json").exists() {
        let r = results::read_run(path).map_err(bad)?;
        return if json {
            print_json(&r)
        } else {
            print!("{}", markdown::run_text(&r));
            Ok(())
        };
    }
    Err(bad(ResultsError::NotResults {
        path: path.to_path_buf(),
    }))
}

/// `testbed results diff A B`.
fn diff(cmd: ResultsCmd, json: bool) -> Result<(), Failure> {
    let ResultsCmd::Diff { a, b } = cmd;
    let d = diff::diff_dirs(&a, &b).map_err(bad)?;
    if json {
        print_json(&d)?;
    } else {
        print!("{}", diff::render(&d));
    }
    if d.seeded_equal {
        Ok(())
    } else {
        Err(Failure::Reported(1))
    }
}
