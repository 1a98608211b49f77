use super::*;
use crate::results::testutil::{sample, series, workload};
use SampleOutcome::{Ok as OK, Refused, Timeout};

fn fault(at_ms: f64) -> FaultInput {
    FaultInput {
        at_ms,
        until_ms: None,
        spec: format!("kill pod shop/web-{at_ms}"),
        error: None,
    }
}

#[test]
fn nearest_rank_percentiles() {
    assert_eq!(percentiles(&[]), None);
    let p = percentiles(&[4.0, 1.0, 3.0, 2.0]).unwrap();
    assert_eq!((p.p50, p.p90, p.p99, p.max), (2.0, 4.0, 4.0, 4.0));
    let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    let p = percentiles(&hundred).unwrap();
    assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
    let p = percentiles(&[7.5]).unwrap();
    assert_eq!((p.p50, p.p99), (7.5, 7.5));
}

#[test]
fn a_workload_summary_counts_outcomes_latency_and_backends() {
    let w = workload("http", WorkloadKind::Http, 2);
    let mut samples = vec![
        sample("http", 0, OK, 1000),
        sample("http", 100, OK, 3000),
        sample("http", 200, Refused, 10),
        sample("http", 300, Timeout, 1_000_000),
        sample("ping", 300, OK, 1),
    ];
    samples[1].sent_us = samples[1].send_us + 700;
    let s = summarize(&w, &samples);
    assert_eq!((s.sent, s.ok), (4, 2));
    assert_eq!(s.failed.get("refused"), Some(&1));
    assert_eq!(s.failed.get("timeout"), Some(&1));
    assert_eq!(s.latency_ms.unwrap().p50, 1.0);
    assert_eq!(s.latency_ms.unwrap().max, 3.0);
    assert_eq!(s.throughput, 1.0, "2 ok over 2 s");
    assert_eq!(s.backends.values().sum::<u64>(), 2);
    assert_eq!(s.jitter_us.unwrap().max, 700.0);
    let stream = summarize(&workload("http", WorkloadKind::TcpStream, 2), &samples);
    assert_eq!(stream.throughput, 24.0 / 2.0, "bytes per second");
    let none = summarize(&workload("other", WorkloadKind::Http, 2), &samples);
    assert_eq!(
        (none.sent, none.latency_ms, none.jitter_us),
        (0, None, None)
    );
}

#[test]
fn samples_sort_by_send_time_across_generators() {
    let mut s = vec![
        sample("b", 300, OK, 1),
        sample("a", 100, OK, 1),
        sample("a", 200, OK, 1),
    ];
    sort_samples(&mut s);
    let order: Vec<u64> = s.iter().map(|s| s.send_us).collect();
    assert_eq!(order, vec![100_000, 200_000, 300_000]);
}

#[test]
fn recovery_runs_to_the_start_of_a_second_of_successes() {
    // Failing from 2.0 s to 2.9 s: the first ok send after that is at 3.0 s
    // (sent at 3.00005 s), and ok sends continue past 4.0 s.
    let s = series("http", 0, 6000, (2000, 3000));
    let r = faults(&[fault(2000.0)], &s);
    assert_eq!(r[0].affected, vec!["http".to_string()]);
    assert_eq!(r[0].recovery_ms, Some(1000.05));
}

#[test]
fn recovery_is_none_when_the_workload_never_recovers() {
    // Fails from 2 s to the end; then a run whose last stretch of
    // successes is shorter than a second.
    let s = series("http", 0, 6000, (2000, 6000));
    assert_eq!(faults(&[fault(1500.0)], &s)[0].recovery_ms, None);
    let s = series("http", 0, 6000, (2000, 5200));
    assert_eq!(faults(&[fault(1500.0)], &s)[0].recovery_ms, None);
}

#[test]
fn recovery_is_zero_when_nothing_was_affected() {
    let s = series("http", 0, 6000, (0, 0));
    let r = faults(&[fault(1000.0)], &s);
    assert_eq!((r[0].recovery_ms, r[0].affected.len()), (Some(0.0), 0));
}

#[test]
fn only_failures_before_the_next_fault_make_a_workload_affected() {
    // `a` fails after the first fault, `b` only after the second.
    let mut s = series("a", 0, 8000, (1000, 2000));
    s.extend(series("b", 0, 8000, (5000, 5500)));
    super::sort_samples(&mut s);
    let r = faults(&[fault(1000.0), fault(5000.0)], &s);
    assert_eq!(r[0].affected, vec!["a".to_string()]);
    assert_eq!(r[0].recovery_ms, Some(1000.05));
    assert_eq!(r[1].affected, vec!["b".to_string()]);
    assert_eq!(r[1].recovery_ms, Some(500.05));
}

#[test]
fn every_affected_workload_must_succeed_together() {
    // Both fail after the fault; `b` recovers a second later than `a`.
    let mut s = series("a", 0, 8000, (1000, 2000));
    s.extend(series("b", 0, 8000, (1000, 3000)));
    super::sort_samples(&mut s);
    let r = faults(&[fault(1000.0)], &s);
    assert_eq!(r[0].affected.len(), 2);
    assert_eq!(r[0].recovery_ms, Some(2000.05));
}
