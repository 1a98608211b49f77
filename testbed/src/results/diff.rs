//! `testbed results diff A B`: two results (experiment run directories, or
//! two runs' directories) compared run by run (same combination and
//! repetition; two single runs are compared with each other whatever their
//! names). What the seed determines (`seeded` of `run.json`) must be equal:
//! each difference is listed by run and field. Measured values are shown
//! with their change. Runs found on one side only count as a difference
//! (the schedule the seed fixes differs).

use super::summary::{read_experiment, read_runs};
use super::{files, markdown, ResultsError, RunRecord};
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// The diff's JSON schema.
pub const DIFF_SCHEMA: &str = "testbed.diff/1";

/// Two results compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// [`DIFF_SCHEMA`].
    pub schema: String,
    /// The first directory.
    pub a: String,
    /// The second.
    pub b: String,
    /// Every seeded quantity of every run is equal and both sides have the
    /// same runs (exit 0; otherwise exit 1).
    pub seeded_equal: bool,
    /// The runs compared, in A's order.
    pub runs: Vec<RunDiff>,
    /// Runs only A has (`<combination>/rep-<r>`).
    pub only_in_a: Vec<String>,
    /// Runs only B has.
    pub only_in_b: Vec<String>,
}

/// One run of A against its match in B.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDiff {
    /// `<combination>/rep-<r>` (A's, when two single runs are compared).
    pub run: String,
    /// The seeded fields that differ.
    pub seeded: Vec<FieldDiff>,
    /// The measured values, each with its change.
    pub measured: Vec<Change>,
}

/// A seeded field that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDiff {
    /// Its path in `run.json` (`seeded.balancerOrder["default/web:80/tcp"]`).
    pub field: String,
    /// A's value as JSON (absent: A lacks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    /// B's value as JSON (absent: B lacks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
}

/// A measured value on both sides.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// What (`http.latencyMs.p50`, `fault 1 recoveryMs`).
    pub what: String,
    /// A's value (absent: none, e.g. never recovered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<f64>,
    /// B's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<f64>,
    /// `b - a`, when both have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
    /// `(b - a) / a * 100`, when both have one and `a` is not 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_percent: Option<f64>,
}

/// The runs of the results in `dir`, and whether it is a single run.
pub fn load(dir: &Path) -> Result<(Vec<RunRecord>, bool), ResultsError> {
    if !dir.is_dir() {
        return Err(ResultsError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    if dir.join("summary.json").exists() {
        let s = read_experiment(dir)?;
        return Ok((read_runs(dir, &s)?, false));
    }
    if dir.join("run.json").exists() {
        return Ok((vec![files::read_run(dir)?], true));
    }
    Err(ResultsError::NotResults {
        path: dir.to_path_buf(),
    })
}

/// Compares the results in `a` and `b`.
pub fn diff_dirs(a: &Path, b: &Path) -> Result<Diff, ResultsError> {
    let (ra, single_a) = load(a)?;
    let (rb, single_b) = load(b)?;
    let mut d = diff(&ra, &rb, single_a && single_b);
    d.a = a.display().to_string();
    d.b = b.display().to_string();
    Ok(d)
}

fn key(r: &RunRecord) -> String {
    files::run_dir(&r.combination, r.rep).display().to_string()
}

/// Compares runs `a` with `b` (`pair_singles`: one run on each side,
/// compared whatever their names).
pub fn diff(a: &[RunRecord], b: &[RunRecord], pair_singles: bool) -> Diff {
    let mut runs = Vec::new();
    let (mut only_in_a, mut only_in_b) = (Vec::new(), Vec::new());
    if pair_singles && a.len() == 1 && b.len() == 1 {
        runs.push(run_diff(&a[0], &b[0]));
    } else {
        for x in a {
            match b.iter().find(|y| key(y) == key(x)) {
                Some(y) => runs.push(run_diff(x, y)),
                None => only_in_a.push(key(x)),
            }
        }
        only_in_b = b
            .iter()
            .filter(|y| !a.iter().any(|x| key(x) == key(y)))
            .map(key)
            .collect();
    }
    let seeded_equal =
        runs.iter().all(|r| r.seeded.is_empty()) && only_in_a.is_empty() && only_in_b.is_empty();
    Diff {
        schema: DIFF_SCHEMA.to_string(),
        a: String::new(),
        b: String::new(),
        seeded_equal,
        runs,
        only_in_a,
        only_in_b,
    }
}

fn run_diff(a: &RunRecord, b: &RunRecord) -> RunDiff {
    let mut seeded = Vec::new();
    let (va, vb) = (
        serde_json::to_value(&a.seeded).unwrap_or_default(),
        serde_json::to_value(&b.seeded).unwrap_or_default(),
    );
    leaves("seeded", Some(&va), Some(&vb), &mut seeded);
    if a.seed != b.seed {
        seeded.insert(
            0,
            FieldDiff {
                field: "seed".into(),
                a: Some(a.seed.to_string()),
                b: Some(b.seed.to_string()),
            },
        );
    }
    RunDiff {
        run: key(a),
        seeded,
        measured: measured(a, b),
    }
}

/// Whether `v` is compared as one value: a scalar, or a list of scalars.
fn is_leaf(v: &Value) -> bool {
    match v {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().all(|x| !x.is_object() && !x.is_array()),
        _ => true,
    }
}

/// Appends the differing leaves of `a` and `b` under `path`.
fn leaves(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldDiff>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let sub = if k.chars().all(|c| c.is_ascii_alphanumeric()) {
                    format!("{path}.{k}")
                } else {
                    format!("{path}[{}]", Value::String(k.clone()))
                };
                leaves(&sub, x.get(k), y.get(k), out);
            }
        }
        (Some(x @ Value::Array(xs)), Some(y @ Value::Array(ys))) if !is_leaf(x) || !is_leaf(y) => {
            for i in 0..xs.len().max(ys.len()) {
                leaves(&format!("{path}[{i}]"), xs.get(i), ys.get(i), out);
            }
        }
        (x, y) if x != y => out.push(FieldDiff {
            field: path.to_string(),
            a: x.map(Value::to_string),
            b: y.map(Value::to_string),
        }),
        _ => {}
    }
}

/// The measured values of both runs, each workload's then each fault's.
fn measured(a: &RunRecord, b: &RunRecord) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |what: String, x: Option<f64>, y: Option<f64>| {
        let change = x.zip(y).map(|(x, y)| y - x);
        let change_percent = x
            .zip(y)
            .filter(|(x, _)| *x != 0.0)
            .map(|(x, y)| (y - x) / x * 100.0);
        out.push(Change {
            what,
            a: x,
            b: y,
            change,
            change_percent,
        });
    };
    let mut names: Vec<&str> = a.workloads.iter().map(|w| w.name.as_str()).collect();
    names.extend(
        b.workloads
            .iter()
            .map(|w| w.name.as_str())
            .filter(|n| !a.workloads.iter().any(|w| w.name == *n)),
    );
    for n in names {
        let (x, y) = (
            a.workloads.iter().find(|w| w.name == n),
            b.workloads.iter().find(|w| w.name == n),
        );
        push(
            format!("{n}.sent"),
            x.map(|w| w.sent as f64),
            y.map(|w| w.sent as f64),
        );
        push(
            format!("{n}.ok"),
            x.map(|w| w.ok as f64),
            y.map(|w| w.ok as f64),
        );
        type Pick = fn(&super::Percentiles) -> f64;
        let parts: [(&str, Pick); 4] = [
            ("p50", |p| p.p50),
            ("p90", |p| p.p90),
            ("p99", |p| p.p99),
            ("max", |p| p.max),
        ];
        for (part, f) in parts {
            let lat =
                |w: Option<&super::WorkloadSummary>| w.and_then(|w| w.latency_ms.as_ref()).map(f);
            push(format!("{n}.latencyMs.{part}"), lat(x), lat(y));
        }
        push(
            format!("{n}.throughput"),
            x.map(|w| w.throughput),
            y.map(|w| w.throughput),
        );
    }
    for i in 0..a.faults.len().max(b.faults.len()) {
        let rec = |r: &RunRecord| r.faults.get(i).and_then(|f| f.recovery_ms);
        push(format!("fault {}.recoveryMs", i + 1), rec(a), rec(b));
    }
    out
}

/// The diff as text.
pub fn render(d: &Diff) -> String {
    let mut o = String::new();
    let differing = d.runs.iter().filter(|r| !r.seeded.is_empty()).count();
    let _ = writeln!(o, "A: {}\nB: {}", d.a, d.b);
    if d.seeded_equal {
        let _ = writeln!(o, "seeded quantities: equal in all {} run(s)", d.runs.len());
    } else {
        let _ = writeln!(
            o,
            "seeded quantities: DIFFER ({differing} of {} run(s) compared; {} only in A, {} only in B)",
            d.runs.len(),
            d.only_in_a.len(),
            d.only_in_b.len()
        );
    }
    for r in &d.runs {
        let _ = writeln!(o, "\n{}", r.run);
        for f in &r.seeded {
            let none = || "(absent)".to_string();
            let _ = writeln!(
                o,
                "  SEEDED DIFFERS {}:\n    A: {}\n    B: {}",
                f.field,
                f.a.clone().unwrap_or_else(none),
                f.b.clone().unwrap_or_else(none)
            );
        }
        for c in &r.measured {
            let v = |x: Option<f64>| x.map_or("-".to_string(), number);
            let change = match (c.change, c.change_percent) {
                (Some(0.0), _) => String::new(),
                (Some(ch), Some(p)) => format!("  ({}{}, {p:+.1}%)", sign(ch), number(ch)),
                (Some(ch), None) => format!("  ({}{})", sign(ch), number(ch)),
                _ => String::new(),
            };
            let what = if c.what.ends_with("recoveryMs") {
                let r = |x: Option<f64>| markdown::recovery(x);
                format!("  {:<28} {} -> {}", c.what, r(c.a), r(c.b))
            } else {
                format!("  {:<28} {} -> {}", c.what, v(c.a), v(c.b))
            };
            let _ = writeln!(o, "{what}{change}");
        }
    }
    for (side, runs) in [("A", &d.only_in_a), ("B", &d.only_in_b)] {
        for r in runs.iter() {
            let _ = writeln!(o, "only in {side}: {r}");
        }
    }
    o
}

/// A whole number as such, others with three decimals.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

fn sign(x: f64) -> &'static str {
    if x > 0.0 {
        "+"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests;
