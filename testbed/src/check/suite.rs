//! Running a list of checks against a running testbed's plan: each is
//! resolved to its probes, run (`run`), and judged (`report`); `--only`
//! picks checks by a glob on their names.

use super::report::{self, CheckResult, Status};
use super::{resolve, run, Check, CheckKind, Expect, Outcome, Probe, Resolved};
use crate::plan::Plan;
use std::time::Duration;

/// How long one probe of a matrix waits.
const MATRIX_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether `name` matches `glob` (`*` any run of characters, `?` one).
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn go(g: &[char], n: &[char]) -> bool {
        match (g.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&g[1..], n) || (!n.is_empty() && go(g, &n[1..])),
            (Some('?'), Some(_)) => go(&g[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&g[1..], &n[1..]),
            _ => false,
        }
    }
    let g: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&g, &n)
}

/// Runs the checks of `checks` that `only` picks (all without it), in
/// order. A check that cannot be resolved (it names what this testbed does
/// not have) fails with that error as its one pair.
pub fn run_checks(plan: &Plan, checks: &[Check], only: Option<&str>) -> Vec<CheckResult> {
    run_checks_with(plan, checks, only, &super::probe::probe)
}

/// [`run_checks`] with probes sent by `prober` (e.g. through another
/// machine for sources there).
pub fn run_checks_with(
    plan: &Plan,
    checks: &[Check],
    only: Option<&str>,
    prober: run::Prober<'_>,
) -> Vec<CheckResult> {
    checks
        .iter()
        .filter(|c| only.is_none_or(|g| glob_match(g, &c.name)))
        .map(|c| run_one(plan, c, prober))
        .collect()
}

/// Resolves and runs one check, and judges it.
fn run_one(plan: &Plan, c: &Check, prober: run::Prober<'_>) -> CheckResult {
    let resolved = match resolve::resolve(plan, c) {
        Ok(r) => r,
        Err(e) => return unresolved(c, e),
    };
    match &c.kind {
        CheckKind::Pair {
            expect,
            within,
            hold,
            body,
            ..
        } => run_pair(
            c,
            &resolved,
            *expect,
            (*within, *hold),
            body.as_deref(),
            prober,
        ),
        CheckKind::Matrix { expect_table, .. } => run_matrix(c, &resolved, expect_table, prober),
    }
}

/// The result of a check that cannot be resolved: failed (or warned), with
/// the reason as its one pair.
fn unresolved(c: &Check, e: resolve::Unresolvable) -> CheckResult {
    CheckResult {
        name: c.name.clone(),
        status: report::status(c.level, false),
        attempts: 0,
        pairs: vec![report::PairResult {
            from: String::new(),
            to: String::new(),
            port: String::new(),
            expected: Expect::Allow,
            actual: "error".into(),
            error: Some(e.0),
        }],
        table: None,
    }
}

/// Runs a pair check's probes until they all give `expect` (or the time
/// runs out) and judges them.
fn run_pair(
    c: &Check,
    resolved: &Resolved,
    expect: Expect,
    times: (Duration, Duration),
    body: Option<&str>,
    prober: run::Prober<'_>,
) -> CheckResult {
    let r = run::run_pair_with(&resolved.probes, expect, times, body, prober);
    let right = r.results.iter().all(|(_, o)| run::passes(expect, o));
    CheckResult {
        name: c.name.clone(),
        status: report::status(c.level, right),
        attempts: r.attempts,
        pairs: pairs(&r.results, expect),
        table: None,
    }
}

/// Runs a matrix check's probes once each and judges the table against
/// `expect_table`.
fn run_matrix(
    c: &Check,
    resolved: &Resolved,
    expect_table: &Option<Vec<String>>,
    prober: run::Prober<'_>,
) -> CheckResult {
    let outcomes = run::run_matrix_with(&resolved.probes, MATRIX_TIMEOUT, prober);
    let table = report::table(
        &resolved.rows,
        &resolved.columns,
        &outcomes,
        expect_table.clone(),
    );
    let right = report::table_matches(&table);
    let mut result = CheckResult {
        name: c.name.clone(),
        status: report::status(c.level, right),
        attempts: 1,
        pairs: Vec::new(),
        table: Some(table),
    };
    // Without an expected table the grid is the result; with one,
    // the pairs that differ from it are the failure's detail.
    if result.status != Status::Pass {
        result.pairs = differing_pairs(resolved, &outcomes, expect_table);
    }
    result
}

/// The pairs of a matrix whose outcome differs from the expected table,
/// each with the expectation it missed.
fn differing_pairs(
    resolved: &Resolved,
    outcomes: &[(Probe, Outcome)],
    expect_table: &Option<Vec<String>>,
) -> Vec<report::PairResult> {
    pairs(outcomes, Expect::Allow)
        .into_iter()
        .zip(outcomes)
        .filter(|(_, (p, o))| {
            expected_cell(&resolved.rows, &resolved.columns, expect_table, p)
                .is_some_and(|want| want != matches!(o, Outcome::Ok))
        })
        .map(|(mut pr, (p, _))| {
            let want = expected_cell(&resolved.rows, &resolved.columns, expect_table, p);
            pr.expected = if want == Some(true) {
                Expect::Allow
            } else {
                Expect::Deny
            };
            pr
        })
        .collect()
}

/// Whether the expected table says `p`'s pair is reachable.
fn expected_cell(
    rows: &[String],
    columns: &[String],
    table: &Option<Vec<String>>,
    p: &Probe,
) -> Option<bool> {
    let r = rows.iter().position(|x| *x == p.from)?;
    let c = columns.iter().position(|x| *x == p.to)?;
    match table.as_ref()?.get(r)?.chars().nth(c)? {
        '.' => Some(true),
        'X' => Some(false),
        _ => None,
    }
}

fn pairs(results: &[(Probe, Outcome)], expect: Expect) -> Vec<report::PairResult> {
    results
        .iter()
        .map(|(p, o)| report::pair(p, expect, o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_pick_names() {
        assert!(glob_match("*", "web-from-clients"));
        assert!(glob_match("web-*", "web-from-clients"));
        assert!(glob_match("*-clients", "web-from-clients"));
        assert!(glob_match("w?b-*", "web-x"));
        assert!(!glob_match("db-*", "web-x"));
        assert!(!glob_match("web", "web-x"));
        assert!(glob_match("", ""));
    }
}
