//! The results of checks and how they are shown: one line per check
//! (`PASS`, `FAIL`, `WARN`) with the wrong pairs under it and matrices as
//! grids; the JSON document (`testbed.check/1`, no timings, so the same
//! cluster gives the same bytes); JUnit XML; and the exit code. Pure.

use super::{Expect, Level, Outcome, Port, Probe};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The JSON document's schema.
pub const SCHEMA: &str = "testbed.check/1";

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every pair as expected.
    Pass,
    /// An error-level check with a wrong pair.
    Fail,
    /// A warning-level check with a wrong pair.
    Warn,
}

/// One probe's pair and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairResult {
    /// The source.
    pub from: String,
    /// The target.
    pub to: String,
    /// What was probed: `tcp/80`, `udp/53`, `http/8080/`, `icmp`.
    pub port: String,
    /// What was expected: `allow`, `deny`, `drop`, `reject`.
    pub expected: Expect,
    /// What came back: `ok`, `refused`, `timeout`, `wrongBody`, `error`.
    pub actual: String,
    /// The error's text, for `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A matrix's reachability table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// The sources (rows), in plan order.
    pub rows: Vec<String>,
    /// The targets (columns), in plan order.
    pub columns: Vec<String>,
    /// One string per row: '.' reachable, 'X' not, '-' left out (itself).
    pub cells: Vec<String>,
    /// The table the check expects, if it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Vec<String>>,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// The check.
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// Rounds of probes it took (allow: until it passed; deny: over its
    /// `for`).
    pub attempts: u32,
    /// Every pair, in order, with its outcome.
    pub pairs: Vec<PairResult>,
    /// A matrix's table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<Table>,
}

/// What `testbed check --json` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// `testbed.check/1`.
    pub schema: &'static str,
    /// The testbed.
    pub testbed: String,
    /// Every check run, in file order.
    pub checks: Vec<CheckResult>,
}

/// `tcp/80`, `http/8080/path`, `icmp`.
pub fn port_text(p: &Port) -> String {
    match p {
        Port::Tcp(n) => format!("tcp/{n}"),
        Port::Udp(n) => format!("udp/{n}"),
        Port::Http { port, path } => format!("http/{port}{path}"),
        Port::Icmp => "icmp".into(),
    }
}

/// An outcome's name and, for errors, its text.
pub fn outcome_text(o: &Outcome) -> (String, Option<String>) {
    match o {
        Outcome::Ok => ("ok".into(), None),
        Outcome::Refused => ("refused".into(), None),
        Outcome::Timeout => ("timeout".into(), None),
        Outcome::WrongBody => ("wrongBody".into(), None),
        Outcome::Error(e) => ("error".into(), Some(e.clone())),
    }
}

/// A pair's result.
pub fn pair(p: &Probe, expected: Expect, outcome: &Outcome) -> PairResult {
    let (actual, error) = outcome_text(outcome);
    PairResult {
        from: p.from.clone(),
        to: p.to.clone(),
        port: port_text(&p.port),
        expected,
        actual,
        error,
    }
}

/// The status of a check of `level` that was `right` or not.
pub fn status(level: Level, right: bool) -> Status {
    match (right, level) {
        (true, _) => Status::Pass,
        (false, Level::Error) => Status::Fail,
        (false, Level::Warning) => Status::Warn,
    }
}

/// The exit code of a run: 0 every check passed, 1 an error-level check
/// failed, 3 only warnings failed.
pub fn exit_code(results: &[CheckResult]) -> u8 {
    if results.iter().any(|r| r.status == Status::Fail) {
        1
    } else if results.iter().any(|r| r.status == Status::Warn) {
        3
    } else {
        0
    }
}

/// The table of a matrix from its outcomes (`Ok` reachable), row by row;
/// pairs left out show as '-'.
pub fn table(
    rows: &[String],
    columns: &[String],
    outcomes: &[(Probe, Outcome)],
    expected: Option<Vec<String>>,
) -> Table {
    // Each pair's outcome looked up once (the first probe of a pair
    // counts), not searched for per cell: a 100 x 100 matrix is 10,000
    // cells of 10,000 outcomes.
    let mut by_pair: HashMap<(&str, &str), &Outcome> = HashMap::with_capacity(outcomes.len());
    for (p, o) in outcomes {
        by_pair.entry((p.from.as_str(), p.to.as_str())).or_insert(o);
    }
    let cells = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| match by_pair.get(&(r.as_str(), c.as_str())) {
                    Some(Outcome::Ok) => '.',
                    Some(_) => 'X',
                    None => '-',
                })
                .collect()
        })
        .collect();
    Table {
        rows: rows.to_vec(),
        columns: columns.to_vec(),
        cells,
        expected,
    }
}

/// Whether a table matches what is expected of it ('-' cells are not
/// compared).
pub fn table_matches(t: &Table) -> bool {
    let Some(want) = &t.expected else {
        return true;
    };
    want.len() == t.cells.len()
        && want.iter().zip(&t.cells).all(|(w, h)| {
            w.len() == h.len()
                && w.chars()
                    .zip(h.chars())
                    .all(|(a, b)| a == b || b == '-' || a == '-')
        })
}

/// The text `testbed check` prints.
pub fn text(results: &[CheckResult]) -> String {
    let mut out = String::new();
    for r in results {
        let word = match r.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
        };
        let _ = writeln!(out, "{word}  {}", r.name);
        if r.status != Status::Pass {
            for p in r.pairs.iter().filter(|p| !right(p)) {
                let err = p
                    .error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "      {} -> {} {}: expected {}, got {}{err}",
                    p.from,
                    p.to,
                    p.port,
                    expect_word(p.expected),
                    p.actual
                );
            }
        }
        if let Some(t) = &r.table {
            out.push_str(&grid(t));
        }
    }
    out
}

fn expect_word(e: Expect) -> &'static str {
    match e {
        Expect::Allow => "allow",
        Expect::Deny => "deny",
        Expect::Drop => "drop",
        Expect::Reject => "reject",
    }
}

/// Whether a pair's outcome is what was expected of it.
fn right(p: &PairResult) -> bool {
    match p.expected {
        Expect::Allow => p.actual == "ok",
        Expect::Deny => p.actual == "refused" || p.actual == "timeout",
        Expect::Drop => p.actual == "timeout",
        Expect::Reject => p.actual == "refused",
    }
}

/// A table as a grid: a header of column numbers, one line per row.
fn grid(t: &Table) -> String {
    let width = t.rows.iter().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (k, c) in t.columns.iter().enumerate() {
        let _ = writeln!(out, "      {:>width$}  [{k}] {c}", "");
    }
    for (r, cells) in t.rows.iter().zip(&t.cells) {
        let _ = writeln!(out, "      {r:>width$}  {cells}");
    }
    if let Some(want) = &t.expected {
        if !table_matches(t) {
            let _ = writeln!(out, "      expected:");
            for (r, w) in t.rows.iter().zip(want) {
                let _ = writeln!(out, "      {r:>width$}  {w}");
            }
        }
    }
    out
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testsuite>`, one `<testcase>` per check, the wrong
/// pairs in its `<failure>` (of type `warning` for a warning-level check).
pub fn junit(testbed: &str, results: &[CheckResult]) -> String {
    let failures = results.iter().filter(|r| r.status != Status::Pass).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
        xml(&format!("testbed check {testbed}")),
        results.len()
    );
    for r in results {
        let _ = write!(
            out,
            "  <testcase classname=\"testbed.check\" name=\"{}\"",
            xml(&r.name)
        );
        if r.status == Status::Pass {
            out.push_str("/>\n");
            continue;
        }
        let wrong: Vec<String> = r
            .pairs
            .iter()
            .filter(|p| !right(p))
            .map(|p| {
                format!(
                    "{} -> {} {}: expected {}, got {}",
                    p.from,
                    p.to,
                    p.port,
                    expect_word(p.expected),
                    p.actual
                )
            })
            .collect();
        let kind = if r.status == Status::Warn {
            "warning"
        } else {
            "error"
        };
        let _ = writeln!(
            out,
            ">\n    <failure type=\"{kind}\" message=\"{} wrong pairs\">{}</failure>\n  </testcase>",
            wrong.len(),
            xml(&wrong.join("\n"))
        );
    }
    out.push_str("</testsuite>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn probe(from: &str, to: &str) -> Probe {
        Probe {
            from: from.into(),
            netns: "x".into(),
            to: to.into(),
            addr: Ipv4Addr::new(10, 0, 0, 1),
            port: Port::Tcp(80),
        }
    }

    fn result(name: &str, status: Status, actual: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            status,
            attempts: 1,
            pairs: vec![PairResult {
                from: "pod a".into(),
                to: "pod <b>".into(),
                port: "tcp/80".into(),
                expected: Expect::Allow,
                actual: actual.into(),
                error: None,
            }],
            table: None,
        }
    }

    #[test]
    fn exit_codes_follow_the_worst_status() {
        let pass = result("p", Status::Pass, "ok");
        let warn = result("w", Status::Warn, "timeout");
        let fail = result("f", Status::Fail, "refused");
        assert_eq!(exit_code(std::slice::from_ref(&pass)), 0);
        assert_eq!(exit_code(&[pass.clone(), warn.clone()]), 3);
        assert_eq!(exit_code(&[warn, fail, pass]), 1);
    }

    #[test]
    fn text_and_junit_name_the_wrong_pairs() {
        let rs = [
            result("good", Status::Pass, "ok"),
            result("bad", Status::Fail, "timeout"),
        ];
        let t = text(&rs);
        assert!(t.contains("PASS  good") && t.contains("FAIL  bad"), "{t}");
        assert!(
            t.contains("pod a -> pod <b> tcp/80: expected allow, got timeout"),
            "{t}"
        );
        let j = junit("tb", &rs);
        assert!(j.contains("tests=\"2\" failures=\"1\""), "{j}");
        assert!(
            j.contains("<testcase classname=\"testbed.check\" name=\"good\"/>"),
            "{j}"
        );
        assert!(j.contains("pod &lt;b&gt;"), "{j}");
        assert!(!j.contains("pod <b>"), "escaped: {j}");
    }

    #[test]
    fn tables_compare_with_their_expectation() {
        let rows = vec!["a".to_string(), "b".to_string()];
        let outcomes = vec![
            (probe("a", "b"), Outcome::Ok),
            (probe("b", "a"), Outcome::Timeout),
        ];
        let t = table(
            &rows,
            &rows,
            &outcomes,
            Some(vec!["-.".into(), "X-".into()]),
        );
        assert_eq!(t.cells, ["-.", "X-"]);
        assert!(table_matches(&t));
        let t = table(
            &rows,
            &rows,
            &outcomes,
            Some(vec!["..".into(), "..".into()]),
        );
        assert!(!table_matches(&t));
        assert!(text(&[CheckResult {
            name: "m".into(),
            status: Status::Fail,
            attempts: 1,
            pairs: vec![],
            table: Some(t),
        }])
        .contains("expected:"));
    }

    #[test]
    fn large_tables_place_every_outcome_in_its_cell() {
        // 120 x 120 outcomes in reverse order, unreachable where (i + j) % 7
        // == 0, a pair given twice (the first counts) and one left out.
        let labels: Vec<String> = (0..120).map(|i| format!("pod p{i}")).collect();
        let mut outcomes = Vec::new();
        for (i, r) in labels.iter().enumerate().rev() {
            for (j, c) in labels.iter().enumerate().rev() {
                if (i, j) == (5, 6) {
                    continue;
                }
                let o = if (i + j) % 7 == 0 {
                    Outcome::Refused
                } else {
                    Outcome::Ok
                };
                outcomes.push((probe(r, c), o));
            }
        }
        outcomes.insert(0, (probe("pod p1", "pod p2"), Outcome::Timeout));
        let t = table(&labels, &labels, &outcomes, None);
        for (i, row) in t.cells.iter().enumerate() {
            for (j, cell) in row.chars().enumerate() {
                let want = match (i, j) {
                    (5, 6) => '-',
                    (1, 2) => 'X',
                    _ if (i + j) % 7 == 0 => 'X',
                    _ => '.',
                };
                assert_eq!(cell, want, "row {i} column {j}");
            }
        }
    }
}
