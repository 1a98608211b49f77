//! What running a check means: the probes of a pair check are sent in
//! parallel (a bounded number at a time), an `allow` retried until every
//! probe passed or `within` ran out, a `deny`, `drop` or `reject` repeated
//! for `hold` and failed by its first violation; a matrix probed once.
//! Whether an outcome satisfies an expectation is [`passes`], pure.

use super::probe::probe;
use super::{Expect, Outcome, Probe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The most probes in flight at a time.
pub const PARALLEL: usize = 64;
/// How long one probe waits for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a round of probes starts (at most).
pub const ROUND_EVERY: Duration = Duration::from_millis(200);

/// What running a pair check gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairRun {
    /// How many rounds of probes were sent.
    pub attempts: u32,
    /// Every probe with its outcome, in the order given: for `allow` each
    /// probe's last outcome (`ok` once it passed); otherwise the last
    /// round's (the one that violated the expectation, if one did).
    pub results: Vec<(Probe, Outcome)>,
}

/// Whether one probe's outcome is what `expect` asks: `allow` wants `ok`,
/// `drop` a timeout, `reject` a refusal, `deny` either of the two. A wrong
/// body or an HTTP error status means the target answered (so it is not
/// denied), and an error proves nothing: both fail every expectation.
pub fn passes(expect: Expect, outcome: &Outcome) -> bool {
    match expect {
        Expect::Allow => *outcome == Outcome::Ok,
        Expect::Deny => matches!(outcome, Outcome::Refused | Outcome::Timeout),
        Expect::Drop => *outcome == Outcome::Timeout,
        Expect::Reject => *outcome == Outcome::Refused,
    }
}

/// Runs a pair check's probes: an `allow` retries each failing probe
/// every [`ROUND_EVERY`] until it passes or `within` runs out; a `deny`,
/// `drop` or `reject` probes all of them every [`ROUND_EVERY`] for `hold`
/// and stops at the first round in which one does not pass. At least one
/// round is always run (none when there are no probes).
pub fn run_pair(
    probes: &[Probe],
    expect: Expect,
    within: Duration,
    hold: Duration,
    body: Option<&str>,
) -> PairRun {
    run_pair_with(probes, expect, (within, hold), body, &probe)
}

/// What sends one probe: [`probe`] from this machine's namespaces, or one
/// that hands probes from another machine's namespaces to that machine.
pub type Prober<'a> = &'a (dyn Fn(&Probe, Duration, Option<&str>) -> Outcome + Sync);

/// [`run_pair`] with probes sent by `prober`; `(within, hold)`.
pub fn run_pair_with(
    probes: &[Probe],
    expect: Expect,
    (within, hold): (Duration, Duration),
    body: Option<&str>,
    prober: Prober<'_>,
) -> PairRun {
    if probes.is_empty() {
        return PairRun {
            attempts: 0,
            results: Vec::new(),
        };
    }
    if expect == Expect::Allow {
        retry(probes, within, body, prober)
    } else {
        hold_for(probes, expect, hold, body, prober)
    }
}

/// Probes each of `probes` once, in parallel: the cells of a matrix.
pub fn run_matrix(probes: &[Probe], timeout: Duration) -> Vec<(Probe, Outcome)> {
    run_matrix_with(probes, timeout, &probe)
}

/// [`run_matrix`] with probes sent by `prober`.
pub fn run_matrix_with(
    probes: &[Probe],
    timeout: Duration,
    prober: Prober<'_>,
) -> Vec<(Probe, Outcome)> {
    let outcomes = parallel(probes, |p| prober(p, timeout, None));
    probes.iter().cloned().zip(outcomes).collect()
}

/// `allow`: rounds over the probes that have not passed yet.
fn retry(probes: &[Probe], within: Duration, body: Option<&str>, prober: Prober<'_>) -> PairRun {
    let deadline = Instant::now() + within;
    let mut outcomes = vec![Outcome::Timeout; probes.len()];
    let mut pending: Vec<usize> = (0..probes.len()).collect();
    let mut attempts = 0;
    loop {
        let round = Instant::now();
        attempts += 1;
        let left = deadline.saturating_duration_since(round);
        let timeout = PROBE_TIMEOUT.min(left).max(ROUND_EVERY);
        let got = parallel(&pending, |&i| prober(&probes[i], timeout, body));
        for (&i, outcome) in pending.iter().zip(got) {
            outcomes[i] = outcome;
        }
        pending.retain(|&i| !passes(Expect::Allow, &outcomes[i]));
        if pending.is_empty() || !wait_for_next(round, deadline) {
            break;
        }
    }
    PairRun {
        attempts,
        results: probes.iter().cloned().zip(outcomes).collect(),
    }
}

/// `deny`, `drop`, `reject`: rounds over every probe until `hold` has
/// passed or one round violates `expect`.
fn hold_for(
    probes: &[Probe],
    expect: Expect,
    hold: Duration,
    body: Option<&str>,
    prober: Prober<'_>,
) -> PairRun {
    let end = Instant::now() + hold;
    let mut attempts = 0;
    loop {
        let round = Instant::now();
        attempts += 1;
        let outcomes = parallel(probes, |p| prober(p, PROBE_TIMEOUT, body));
        let violated = outcomes.iter().any(|o| !passes(expect, o));
        if violated || !wait_for_next(round, end) {
            return PairRun {
                attempts,
                results: probes.iter().cloned().zip(outcomes).collect(),
            };
        }
    }
}

/// Sleeps until the round after the one started at `round` is due, and
/// says whether it starts before `end`.
fn wait_for_next(round: Instant, end: Instant) -> bool {
    let next = (round + ROUND_EVERY).max(Instant::now());
    if next >= end {
        return false;
    }
    std::thread::sleep(next.saturating_duration_since(Instant::now()));
    true
}

/// `f` of every item, computed by at most [`PARALLEL`] threads at a time,
/// in the items' order. If no thread can be started the work is done on
/// the calling thread.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (1..PARALLEL.min(items.len()))
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        let mut all = work();
        for w in workers {
            // A probe does not panic; if one did, its items are redone
            // below rather than lost.
            all.extend(w.join().unwrap_or_default());
        }
        all
    });
    all.sort_by_key(|(i, _)| *i);
    let mut out = Vec::with_capacity(items.len());
    let mut got = all.into_iter().peekable();
    for (i, item) in items.iter().enumerate() {
        match got.next_if(|(j, _)| *j == i) {
            Some((_, r)) => out.push(r),
            None => out.push(f(item)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
