//! The open loop of the `http`, `tcpConnect`, `udpEcho` and `ping`
//! generators: send k starts at `t0 + at_us(k)` (woken by `clock`) as a
//! task of its own, whether or not earlier sends were answered; at most
//! [`MAX_IN_FLIGHT`] wait at once (a send over the cap is recorded as
//! `error` without being sent). When `stop` is set, sends still waiting are
//! dropped (they have no outcome) and the samples so far are returned.

use super::clock::{deadline, micros_since, Clock, STOP_POLL};
use super::ping::Pinger;
use super::{send, Generator, Measured, Sample, SampleOutcome};
use crate::experiment::WorkloadKind;
use std::cell::Cell;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::task::JoinHandle;

/// The most sends of one generator waiting for their answers at once.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Counts a send in flight until it is dropped.
struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    /// A place among the sends in flight, if there is one under `cap`.
    fn take(count: &Rc<Cell<usize>>, cap: usize) -> Option<InFlight> {
        (count.get() < cap).then(|| {
            count.set(count.get() + 1);
            InFlight(Rc::clone(count))
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The sample of send `k` of `g` that started at `sent`.
fn sample(g: &Generator, t0: Instant, k: u64, sent: Instant, m: Measured) -> Sample {
    Sample {
        workload: g.workload.clone(),
        source: g.source.clone(),
        send_us: g.sends.at_us(k),
        sent_us: micros_since(t0, sent),
        latency_us: u64::try_from(m.latency.as_micros()).unwrap_or(u64::MAX),
        outcome: m.outcome,
        bytes: m.bytes,
        backend: m.backend,
    }
}

/// Send `k` of `g`, measured.
async fn one(g: Rc<Generator>, pinger: Option<Rc<Pinger>>, k: u64) -> Measured {
    let to = SocketAddrV4::new(g.addr, g.port);
    match (g.kind, pinger) {
        (WorkloadKind::Http, _) => send::http_get(to, &g.path, g.timeout).await,
        (WorkloadKind::UdpEcho, _) => send::udp_echo(to, k, g.timeout).await,
        (WorkloadKind::Ping, Some(p)) => p.echo(g.addr, k, g.timeout).await,
        _ => send::tcp_connect(to, g.timeout).await,
    }
}

/// Runs a send-per-sample generator (inside its namespace and `LocalSet`).
pub async fn run(g: &Generator, t0: Instant, stop: &AtomicBool) -> std::io::Result<Vec<Sample>> {
    run_capped(g, t0, stop, MAX_IN_FLIGHT).await
}

/// [`run`] with at most `cap` sends in flight.
pub(super) async fn run_capped(
    g: &Generator,
    t0: Instant,
    stop: &AtomicBool,
    cap: usize,
) -> std::io::Result<Vec<Sample>> {
    let clock = Clock::new()?;
    let shared = Rc::new(g.clone());
    let (pinger, receiver) = match g.kind {
        WorkloadKind::Ping => {
            let (p, task) = Pinger::start()?;
            (Some(p), Some(task))
        }
        _ => (None, None),
    };
    let in_flight = Rc::new(Cell::new(0));
    let mut samples = Vec::new();
    let mut tasks: Vec<JoinHandle<Sample>> = Vec::new();
    for k in 0..g.sends.count {
        if !clock
            .wait_until(deadline(t0, g.sends.at_us(k)), stop)
            .await?
        {
            break;
        }
        let Some(place) = InFlight::take(&in_flight, cap) else {
            let now = Instant::now();
            samples.push(sample(
                g,
                t0,
                k,
                now,
                Measured::failed(SampleOutcome::Error, now),
            ));
            continue;
        };
        let (shared, pinger) = (Rc::clone(&shared), pinger.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let sent = Instant::now();
            let m = one(Rc::clone(&shared), pinger, k).await;
            drop(place);
            sample(&shared, t0, k, sent, m)
        }));
    }
    while in_flight.get() > 0 && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(STOP_POLL / 4).await;
    }
    for task in tasks {
        if task.is_finished() {
            if let Ok(s) = task.await {
                samples.push(s);
            }
        } else {
            task.abort();
        }
    }
    if let Some(r) = receiver {
        r.abort();
    }
    samples.sort_by_key(|s| s.send_us);
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_in_flight_are_capped_and_given_back() {
        let count = Rc::new(Cell::new(0));
        let a = InFlight::take(&count, 2).unwrap();
        let b = InFlight::take(&count, 2).unwrap();
        assert!(InFlight::take(&count, 2).is_none());
        assert_eq!(count.get(), 2);
        drop(a);
        let c = InFlight::take(&count, 2);
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(count.get(), 0);
    }
}
