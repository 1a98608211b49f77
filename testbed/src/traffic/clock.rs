//! Waking at send times with microsecond precision inside a tokio
//! current-thread runtime: tokio's own timer rounds to whole milliseconds,
//! so the wait is a `timerfd` (nanosecond-resolution, no timer slack)
//! registered with the runtime's reactor, re-armed for every deadline. A
//! wait also looks at the caller's stop flag at least every [`STOP_POLL`].
#![allow(unsafe_code)] // a timerfd registered with the runtime by its raw descriptor.

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// How often a wait looks at the stop flag.
pub const STOP_POLL: Duration = Duration::from_millis(20);

/// The instant of a send `at_us` microseconds after `t0`.
pub fn deadline(t0: Instant, at_us: u64) -> Instant {
    t0 + Duration::from_micros(at_us)
}

/// Microseconds from `t0` to `at` (0 before `t0`).
pub fn micros_since(t0: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(t0).as_micros()).unwrap_or(u64::MAX)
}

/// When the next wake-up is due: the deadline, or sooner to look at the
/// stop flag; `None` when the deadline has come.
pub fn next_wake(now: Instant, deadline: Instant) -> Option<Instant> {
    (now < deadline).then(|| deadline.min(now + STOP_POLL))
}

/// A `timerfd` the reactor can watch.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A precise clock for one generator (created inside the runtime).
pub struct Clock {
    fd: AsyncFd<Timer>,
}

impl Clock {
    /// A clock on `CLOCK_MONOTONIC` (the clock of `Instant`).
    pub fn new() -> io::Result<Clock> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Clock {
            fd: register(Timer(fd))?,
        })
    }

    /// Waits until `deadline`: `true` when it came, `false` when `stop` was
    /// set first.
    pub async fn wait_until(&self, deadline: Instant, stop: &AtomicBool) -> io::Result<bool> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let now = Instant::now();
            let Some(wake) = next_wake(now, deadline) else {
                return Ok(true);
            };
            // A zero expiration would disarm the timer: at least 1 ns.
            let delay = (wake - now).max(Duration::from_nanos(1));
            self.fd.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from(delay)),
                TimerSetTimeFlags::empty(),
            )?;
            self.expired().await?;
        }
    }

    /// Waits for the armed timer to expire (and consumes the expiry).
    async fn expired(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                fd.get_ref().0.wait().map_err(|e| match e {
                    nix::errno::Errno::EAGAIN => io::ErrorKind::WouldBlock.into(),
                    e => io::Error::from(e),
                })
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Registers `fd` with the current runtime's reactor.
pub(super) fn register<T: std::os::fd::AsRawFd>(fd: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor, which stays open and the same for
    // the life of the `AsyncFd` that takes ownership of it.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_times_become_deadlines_and_wakes_poll_the_stop_flag() {
        let t0 = Instant::now();
        let d = deadline(t0, 1_500);
        assert_eq!(d - t0, Duration::from_micros(1_500));
        assert_eq!(micros_since(t0, d), 1_500);
        assert_eq!(micros_since(d, t0), 0, "before t0");
        assert_eq!(next_wake(t0, d), Some(d));
        assert_eq!(next_wake(d, d), None);
        assert_eq!(next_wake(d + Duration::from_micros(1), d), None);
        let far = deadline(t0, 10_000_000);
        assert_eq!(next_wake(t0, far), Some(t0 + STOP_POLL));
    }

    #[test]
    fn the_clock_wakes_at_the_deadline_and_stops_when_told() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let clock = Clock::new().unwrap();
            let go = AtomicBool::new(false);
            let d = Instant::now() + Duration::from_millis(30);
            assert!(clock.wait_until(d, &go).await.unwrap());
            assert!(Instant::now() >= d);
            let stopped = AtomicBool::new(true);
            let far = Instant::now() + Duration::from_secs(60);
            assert!(!clock.wait_until(far, &stopped).await.unwrap());
        });
    }
}
