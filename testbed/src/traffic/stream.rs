//! The `tcpStream` generator: `streams` (at most `MAX_IN_FLIGHT`) long-lived
//! connections to a server that sends continuously (`testbed serve --stream`:
//! a `pod NAME` line, then data), opened at the workload's start, each
//! reconnected [`RECONNECT_WAIT`] after it breaks or fails to connect.
//!
//! **A sample** is taken at every send time, one per stream: `bytes` is what
//! the stream received since its previous sample, `latency_us` the age of
//! its newest byte (since it connected, when none came yet), `backend` the
//! name in the current connection's greeting. The outcome: `ok` when the
//! stream is connected and bytes arrived within `timeout`; `timeout` when
//! connected without a byte for `timeout`, or not connected yet; otherwise
//! why the last connection failed or broke (`refused` for a refused
//! connect, `error` for a stream closed by the server).

use super::clock::{deadline, micros_since, Clock};
use super::send::outcome_of;
use super::{wire, Generator, Sample, SampleOutcome, MAX_IN_FLIGHT};
use std::cell::RefCell;
use std::net::{SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a stream waits before it reconnects.
pub const RECONNECT_WAIT: Duration = Duration::from_millis(100);
/// The most of a greeting that is looked at for the backend's name.
const MAX_GREETING: usize = 512;

/// What one stream has seen, shared by its task and the sampler.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamState {
    /// Whether a connection is open.
    pub connected: bool,
    /// When the current connection (or attempt) started.
    pub since: Instant,
    /// Bytes received over every connection.
    pub received: u64,
    /// When the newest byte of the current connection arrived.
    pub last_byte: Option<Instant>,
    /// Why the last connection failed or broke.
    pub broke: Option<SampleOutcome>,
    /// The current connection's backend.
    pub backend: Option<String>,
}

impl StreamState {
    /// A stream starting to connect at `now`.
    pub fn new(now: Instant) -> Self {
        StreamState {
            connected: false,
            since: now,
            received: 0,
            last_byte: None,
            broke: None,
            backend: None,
        }
    }
}

/// The outcome, bytes and latency of a sample of `s` at `now`, when
/// `counted` bytes were counted by earlier samples (see the module).
pub fn sample_of(
    s: &StreamState,
    counted: u64,
    now: Instant,
    timeout: Duration,
) -> (SampleOutcome, u64, Duration) {
    let bytes = s.received.saturating_sub(counted);
    let newest = s.last_byte.unwrap_or(s.since);
    let age = now.saturating_duration_since(newest);
    let outcome = match (s.connected, s.broke) {
        (true, _) if s.last_byte.is_some() && age < timeout => SampleOutcome::Ok,
        (true, _) | (false, None) => SampleOutcome::Timeout,
        (false, Some(why)) => why,
    };
    let latency = if s.connected { age } else { Duration::ZERO };
    (outcome, bytes, latency)
}

/// Keeps one stream to `to` open until the task is dropped.
async fn keep_open(to: SocketAddrV4, timeout: Duration, state: Rc<RefCell<StreamState>>) {
    loop {
        state.borrow_mut().since = Instant::now();
        let connect = tokio::time::timeout(timeout, TcpStream::connect(SocketAddr::V4(to))).await;
        let mut stream = match connect {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                state.borrow_mut().broke = Some(outcome_of(&e));
                tokio::time::sleep(RECONNECT_WAIT).await;
                continue;
            }
            Err(_) => {
                state.borrow_mut().broke = Some(SampleOutcome::Timeout);
                continue;
            }
        };
        {
            let mut s = state.borrow_mut();
            s.connected = true;
            s.since = Instant::now();
            s.last_byte = None;
            s.backend = None;
        }
        let mut greeting = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let why = loop {
            match stream.read(&mut buf).await {
                Ok(0) => break SampleOutcome::Error,
                Err(e) => break outcome_of(&e),
                Ok(n) => {
                    let mut s = state.borrow_mut();
                    s.received += n as u64;
                    s.last_byte = Some(Instant::now());
                    if s.backend.is_none() && greeting.len() < MAX_GREETING {
                        greeting.extend_from_slice(buf.get(..n).unwrap_or_default());
                        s.backend = wire::read_pod_line(&greeting).map(|(name, _)| name);
                    }
                }
            }
        };
        {
            let mut s = state.borrow_mut();
            s.connected = false;
            s.broke = Some(why);
        }
        tokio::time::sleep(RECONNECT_WAIT).await;
    }
}

/// Runs a `tcpStream` generator (inside its namespace and `LocalSet`).
pub async fn run(g: &Generator, t0: Instant, stop: &AtomicBool) -> std::io::Result<Vec<Sample>> {
    let clock = Clock::new()?;
    let to = SocketAddrV4::new(g.addr, g.port);
    if g.streams as usize > MAX_IN_FLIGHT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} streams: at most {MAX_IN_FLIGHT}", g.streams),
        ));
    }
    let mut samples = Vec::new();
    if g.sends.count == 0
        || !clock
            .wait_until(deadline(t0, g.sends.start_us), stop)
            .await?
    {
        return Ok(samples);
    }
    let now = Instant::now();
    let streams: Vec<_> = (0..g.streams.max(1))
        .map(|_| {
            let state = Rc::new(RefCell::new(StreamState::new(now)));
            let task = tokio::task::spawn_local(keep_open(to, g.timeout, Rc::clone(&state)));
            (state, task)
        })
        .collect();
    let mut counted = vec![0u64; streams.len()];
    for k in 0..g.sends.count {
        let send_us = g.sends.at_us(k);
        if !clock.wait_until(deadline(t0, send_us), stop).await? {
            break;
        }
        let now = Instant::now();
        for ((state, _), counted) in streams.iter().zip(counted.iter_mut()) {
            let s = state.borrow();
            let (outcome, bytes, latency) = sample_of(&s, *counted, now, g.timeout);
            *counted = s.received;
            samples.push(Sample {
                workload: g.workload.clone(),
                source: g.source.clone(),
                send_us,
                sent_us: micros_since(t0, now),
                latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                outcome,
                bytes,
                backend: s.backend.clone(),
            });
        }
    }
    for (_, task) in streams {
        task.abort();
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn a_stream_sample_counts_new_bytes_and_judges_their_age() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut s = StreamState::new(t);
        // Connecting, nothing failed yet.
        assert_eq!(
            sample_of(&s, 0, t + ms(10), T),
            (SampleOutcome::Timeout, 0, Duration::ZERO)
        );
        s.connected = true;
        s.since = t + ms(20);
        s.received = 1000;
        s.last_byte = Some(t + ms(30));
        s.backend = Some("web-1".into());
        assert_eq!(
            sample_of(&s, 0, t + ms(40), T),
            (SampleOutcome::Ok, 1000, ms(10))
        );
        // No new bytes, but fresh enough; then too old.
        assert_eq!(
            sample_of(&s, 1000, t + ms(500), T),
            (SampleOutcome::Ok, 0, ms(470))
        );
        assert_eq!(
            sample_of(&s, 1000, t + ms(530), T).0,
            SampleOutcome::Timeout
        );
        // Connected without a byte for longer than the timeout.
        s.last_byte = None;
        assert_eq!(
            sample_of(&s, 1000, t + ms(600), T),
            (SampleOutcome::Timeout, 0, ms(580))
        );
        // Broken: why it broke.
        s.connected = false;
        s.broke = Some(SampleOutcome::Refused);
        assert_eq!(
            sample_of(&s, 1000, t + ms(700), T),
            (SampleOutcome::Refused, 0, Duration::ZERO)
        );
        // A counter that went backwards never underflows.
        assert_eq!(sample_of(&s, 5000, t, T).1, 0);
    }
}
