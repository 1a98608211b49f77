//! The figures drawn from a run's raw samples: nearest-rank percentiles,
//! each workload's summary and each fault's recovery time. Pure.

use super::{FaultRecord, Percentiles, WorkloadSummary};
use crate::experiment::{Workload, WorkloadKind};
use crate::traffic::{Sample, SampleOutcome};
use std::collections::BTreeMap;

/// How long every send of the affected workloads must succeed for a fault
/// to count as recovered from, microseconds.
pub const RECOVERED_FOR_US: u64 = 1_000_000;

/// Nearest-rank percentiles of `values` (`None` when empty): the p-th
/// percentile is the smallest value with at least p% of the values at or
/// below it (the value of rank `ceil(p / 100 * n)` in ascending order).
pub fn percentiles(values: &[f64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |p: u64| {
        let r = (p * v.len() as u64).div_ceil(100).max(1);
        v[(r - 1) as usize]
    };
    Some(Percentiles {
        p50: rank(50),
        p90: rank(90),
        p99: rank(99),
        max: v[v.len() - 1],
    })
}

/// Sorts samples by send time (scheduled, then actual; the workload and
/// source break ties), as several generators' samples come interleaved.
pub fn sort_samples(samples: &mut [Sample]) {
    samples.sort_by(|a, b| {
        (a.send_us, a.sent_us, &a.workload, &a.source).cmp(&(
            b.send_us,
            b.sent_us,
            &b.workload,
            &b.source,
        ))
    });
}

/// The summary of workload `w` from the run's samples (those of other
/// workloads are ignored).
pub fn summarize(w: &Workload, samples: &[Sample]) -> WorkloadSummary {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.workload == w.name).collect();
    let mut failed = BTreeMap::new();
    let mut backends = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut bytes: u64 = 0;
    for s in &mine {
        if s.outcome == SampleOutcome::Ok {
            latencies.push(s.latency_us as f64 / 1000.0);
            if let Some(b) = &s.backend {
                *backends.entry(b.clone()).or_insert(0) += 1;
            }
        } else {
            *failed.entry(s.outcome.as_str().to_string()).or_insert(0) += 1;
        }
        bytes = bytes.saturating_add(s.bytes);
    }
    let jitter: Vec<f64> = mine
        .iter()
        .map(|s| s.sent_us.saturating_sub(s.send_us) as f64)
        .collect();
    let secs = w.duration.as_secs_f64();
    let per_second = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let throughput = match w.kind {
        WorkloadKind::TcpStream => per_second(bytes as f64),
        _ => per_second(latencies.len() as f64),
    };
    WorkloadSummary {
        name: w.name.clone(),
        sent: mine.len() as u64,
        ok: latencies.len() as u64,
        failed,
        latency_ms: percentiles(&latencies),
        throughput,
        backends,
        jitter_us: percentiles(&jitter),
    }
}

/// A fault as the runner saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultInput {
    /// When it was injected, milliseconds from the start of the workloads.
    pub at_ms: f64,
    /// When it was undone (`None`: at the end of the run).
    pub until_ms: Option<f64>,
    /// What it was, target resolved (`kill pod shop/web-1`).
    pub spec: String,
    /// The controller's answer when it refused (`None`: accepted).
    pub error: Option<String>,
}

/// Each fault with its recovery, in the order given. `samples` must be
/// sorted ([`sort_samples`]).
///
/// Affected workloads: those with a failed send (by actual send time) from
/// the fault's `at` on, before the next fault's `at`. The recovery runs from
/// `at` to the first send of the first stretch, after the last failure of
/// the affected workloads, in which every one of their sends succeeded and
/// whose sends span at least [`RECOVERED_FOR_US`]. `None` when no such
/// stretch comes before the end of the samples, 0 when no workload was
/// affected.
pub fn faults(faults: &[FaultInput], samples: &[Sample]) -> Vec<FaultRecord> {
    faults
        .iter()
        .map(|f| {
            let from_us = ms_to_us(f.at_ms);
            let next_us = faults
                .iter()
                .filter(|o| o.at_ms > f.at_ms)
                .map(|o| ms_to_us(o.at_ms))
                .min()
                .unwrap_or(u64::MAX);
            let affected: Vec<String> = samples
                .iter()
                .filter(|s| s.sent_us >= from_us && s.sent_us < next_us)
                .filter(|s| s.outcome != SampleOutcome::Ok)
                .map(|s| s.workload.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let recovery_ms = if affected.is_empty() {
                Some(0.0)
            } else {
                recovered_at(samples, &affected, from_us)
                    .map(|t| t.saturating_sub(from_us) as f64 / 1000.0)
            };
            FaultRecord {
                at: f.at_ms,
                until: f.until_ms,
                spec: f.spec.clone(),
                recovery_ms,
                affected,
                error: f.error.clone(),
            }
        })
        .collect()
}

/// The send time (µs) that starts the first all-ok stretch of at least
/// [`RECOVERED_FOR_US`] among the sends of `affected` made from `from_us`
/// on, after one of them failed.
fn recovered_at(samples: &[Sample], affected: &[String], from_us: u64) -> Option<u64> {
    let mut mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent_us >= from_us && affected.contains(&s.workload))
        .collect();
    mine.sort_by_key(|s| s.sent_us);
    let mut failed_once = false;
    let mut streak: Option<u64> = None;
    for s in mine {
        if s.outcome != SampleOutcome::Ok {
            failed_once = true;
            streak = None;
            continue;
        }
        if !failed_once {
            continue;
        }
        let start = *streak.get_or_insert(s.sent_us);
        if s.sent_us - start >= RECOVERED_FOR_US {
            return Some(start);
        }
    }
    None
}

/// Milliseconds (non-negative, finite) to whole microseconds.
fn ms_to_us(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1000.0).round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests;
