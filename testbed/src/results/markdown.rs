//! The texts people read: `summary.md` (an experiment on its own: what
//! ran, each workload's figures with the combinations side by side, each
//! fault's recovery, the seeds, the plots) and what `testbed results`
//! prints for an experiment or one run.

use super::summary::{CombinationSummary, Summary};
use super::{Percentiles, RunRecord};
use std::fmt::Write as _;

/// `x` milliseconds, short (`1.25 ms`, `3.1 s`).
pub fn ms(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.1} s", x / 1000.0)
    } else if x >= 100.0 {
        format!("{x:.0} ms")
    } else {
        format!("{x:.2} ms")
    }
}

/// A recovery time, or `never`.
pub fn recovery(r: Option<f64>) -> String {
    r.map_or_else(|| "never".to_string(), ms)
}

/// `n` of `of` as a percentage.
fn percent(rate: f64) -> String {
    format!("{:.2}%", 100.0 * rate)
}

/// `refused 3, timeout 2` (`-` when none failed).
fn failed(f: &std::collections::BTreeMap<String, u64>) -> String {
    if f.is_empty() {
        return "-".into();
    }
    f.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A markdown table cell (pipes escaped, no line breaks).
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A relative link's target: directory names hold `%XX` escapes
/// ([`super::combination_dir`]), which a link must keep literal.
fn link(path: &str) -> String {
    path.replace('%', "%25")
}

/// `summary.md` of the experiment run `id`.
pub fn summary_md(s: &Summary, id: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Experiment `{}`, run {id}\n", s.experiment);
    if s.interrupted {
        o.push_str("**Interrupted**: the experiment was stopped before its end; the runs below are those that were made.\n\n");
    }
    let runs: usize = s.combinations.iter().map(|c| c.runs.len()).sum();
    let _ = writeln!(
        o,
        "{} combination(s), {runs} run(s). {}\n",
        s.combinations.len(),
        if s.verified {
            "Every run's cluster came back to its plan after its faults (verified)."
        } else {
            "**Not verified**: a run's cluster did not come back to its plan (see the runs)."
        }
    );
    o.push_str("## Runs\n\n| # | combination | rep | seed | verified | directory |\n|---|---|---|---|---|---|\n");
    for (i, c) in s.combinations.iter().enumerate() {
        for r in &c.runs {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | [{}]({}/run.json){} |",
                i + 1,
                cell(&c.name),
                r.rep,
                r.seed,
                if r.verified { "yes" } else { "**no**" },
                cell(&r.dir),
                link(&r.dir),
                if r.interrupted { " (interrupted)" } else { "" }
            );
        }
    }
    for w in &s.workloads {
        workload_table(&mut o, s, w);
    }
    faults_table(&mut o, s);
    o.push_str("\n## Plots\n\n![latency distribution per combination](plots/latency.svg)\n\n![success rate per combination](plots/success.svg)\n\n![recovery time per fault](plots/recovery.svg)\n\nEach run's workloads over time (latency, success rate, fault windows shaded):\n\n");
    let _ = writeln!(
        o,
        "| combination | rep | {} |\n|---|---|{}",
        s.workloads.join(" | "),
        "---|".repeat(s.workloads.len())
    );
    for c in &s.combinations {
        for r in &c.runs {
            let plots: Vec<String> = s
                .workloads
                .iter()
                .map(|w| format!("[{w}]({}/plots/{w}.svg)", link(&r.dir)))
                .collect();
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                cell(&c.name),
                r.rep,
                plots.join(" | ")
            );
        }
    }
    o
}

/// A table's header: `first`, then one column per combination.
fn header(o: &mut String, s: &Summary, first: &str) {
    let head: Vec<String> = s
        .combinations
        .iter()
        .enumerate()
        .map(|(i, c)| format!("#{} {}", i + 1, cell(&c.name)))
        .collect();
    let _ = writeln!(
        o,
        "| {first} | {} |\n|---|{}",
        head.join(" | "),
        "---|".repeat(head.len())
    );
}

/// The table of workload `w`: one column per combination.
fn workload_table(o: &mut String, s: &Summary, w: &str) {
    let _ = writeln!(o, "\n## Workload `{w}`\n");
    header(o, s, &format!("`{w}`"));
    type Row = (&'static str, fn(&CombinationSummary, &str) -> String);
    let rows: [Row; 9] = [
        ("sent", |c, w| {
            find(c, w).map_or("-".into(), |x| x.sent.to_string())
        }),
        ("ok", |c, w| {
            find(c, w).map_or("-".into(), |x| x.ok.to_string())
        }),
        ("success", |c, w| {
            find(c, w).map_or("-".into(), |x| percent(x.success_rate))
        }),
        ("failed", |c, w| {
            find(c, w).map_or("-".into(), |x| failed(&x.failed))
        }),
        ("latency p50", |c, w| pct_of(c, w, |p| p.p50)),
        ("latency p90", |c, w| pct_of(c, w, |p| p.p90)),
        ("latency p99", |c, w| pct_of(c, w, |p| p.p99)),
        ("latency max", |c, w| pct_of(c, w, |p| p.max)),
        ("throughput /s", |c, w| {
            find(c, w).map_or("-".into(), |x| format!("{:.1}", x.throughput))
        }),
    ];
    for (name, f) in rows {
        let cells: Vec<String> = s.combinations.iter().map(|c| cell(&f(c, w))).collect();
        let _ = writeln!(o, "| {name} | {} |", cells.join(" | "));
    }
}

fn find<'a>(c: &'a CombinationSummary, w: &str) -> Option<&'a super::summary::PooledWorkload> {
    c.workloads.iter().find(|x| x.name == w)
}

fn pct_of(c: &CombinationSummary, w: &str, f: fn(&Percentiles) -> f64) -> String {
    find(c, w)
        .and_then(|x| x.latency_ms.as_ref().map(|p| ms(f(p))))
        .unwrap_or_else(|| "-".into())
}

/// The recovery table: one row per fault, one column per combination, the
/// repetitions' recoveries in order.
fn faults_table(o: &mut String, s: &Summary) {
    let n = s
        .combinations
        .iter()
        .map(|c| c.faults.len())
        .max()
        .unwrap_or(0);
    o.push_str("\n## Recovery after each fault\n\n");
    if n == 0 {
        o.push_str("The timeline has no faults.\n");
        return;
    }
    o.push_str("From the fault to the moment after which every send of the affected workloads succeeded for at least one second, per repetition (`never`: not within the run).\n\n");
    header(o, s, "fault");
    for f in 0..n {
        let spec = s
            .combinations
            .iter()
            .find_map(|c| c.faults.get(f))
            .map_or(String::new(), |x| x.spec.clone());
        let cells: Vec<String> = s
            .combinations
            .iter()
            .map(|c| {
                c.faults.get(f).map_or("-".into(), |x| {
                    x.runs
                        .iter()
                        .map(|r| recovery(r.recovery_ms))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            })
            .collect();
        let _ = writeln!(o, "| {}: {} | {} |", f + 1, cell(&spec), cells.join(" | "));
    }
}

/// What `testbed results` prints for an experiment.
pub fn summary_text(s: &Summary, id: &str) -> String {
    let mut o = String::new();
    let runs: usize = s.combinations.iter().map(|c| c.runs.len()).sum();
    let _ = writeln!(
        o,
        "experiment {} (run {id}): {} combination(s), {runs} run(s){}{}",
        s.experiment,
        s.combinations.len(),
        if s.verified {
            ", all verified"
        } else {
            ", NOT all verified"
        },
        if s.interrupted { ", INTERRUPTED" } else { "" }
    );
    for c in &s.combinations {
        let seeds: Vec<String> = c.runs.iter().map(|r| r.seed.to_string()).collect();
        let _ = writeln!(o, "\n{} (seeds {})", c.name, seeds.join(", "));
        for w in &c.workloads {
            let lat = w
                .latency_ms
                .as_ref()
                .map_or("no ok sends".into(), latency_line);
            let _ = writeln!(
                o,
                "  {:<14} sent {:>7}  ok {:>7} ({})  {lat}",
                w.name,
                w.sent,
                w.ok,
                percent(w.success_rate)
            );
        }
        for f in &c.faults {
            let r: Vec<String> = f.runs.iter().map(|r| recovery(r.recovery_ms)).collect();
            let _ = writeln!(o, "  fault {}: recovery {}", f.spec, r.join(", "));
        }
    }
    o
}

fn latency_line(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  max {}",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.max)
    )
}

/// What `testbed results` prints for one run.
pub fn run_text(r: &RunRecord) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "experiment {}, {} rep {} (seed {}){}\n  testbed {} on kernel {} ({} cpus), started {}",
        r.experiment,
        r.combination,
        r.rep,
        r.seed,
        if r.interrupted { ", INTERRUPTED" } else { "" },
        r.meta.testbed,
        r.meta.kernel,
        r.meta.cpus,
        r.meta.started
    );
    for w in &r.workloads {
        let lat = w
            .latency_ms
            .as_ref()
            .map_or("no ok sends".into(), latency_line);
        let _ = writeln!(
            o,
            "  {:<14} sent {:>7}  ok {:>7}  failed: {}  {lat}",
            w.name,
            w.sent,
            w.ok,
            failed(&w.failed)
        );
    }
    for f in &r.faults {
        let err = f
            .error
            .as_ref()
            .map_or(String::new(), |e| format!(" (refused: {e})"));
        let _ = writeln!(
            o,
            "  fault at {}: {}{err}: recovery {}",
            ms(f.at),
            f.spec,
            recovery(f.recovery_ms)
        );
    }
    for c in &r.checks {
        let _ = writeln!(o, "  check {} at {}: {}", c.name, ms(c.at as f64), c.status);
    }
    let _ = writeln!(
        o,
        "  verified: {}",
        if r.verified.ok {
            format!("yes, after {}", ms(r.verified.after_ms as f64))
        } else {
            format!("NO: {}", r.verified.differences.join("; "))
        }
    );
    o
}
