//! The project's one back-off: a pause that doubles after each failure up
//! to a ceiling and starts again from the floor after a success. Pure (no
//! clock, no sleeping): the caller sleeps, or schedules its retry, for what
//! [`Backoff::failed`] returns. The etcd client, the lease keeper and the
//! watch, the endpoint follower, the userspace proxies and the supervisor's
//! restarts all pace themselves with it.

use std::time::Duration;

/// A doubling pause between `min` and `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max` (`max` below `min` is `min`).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff::resume(min, max, min)
    }

    /// Goes on from a pause of `next` (kept within `min..=max`).
    pub fn resume(min: Duration, max: Duration, next: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: next.clamp(min, max),
        }
    }

    /// Something failed: the pause to wait now; the next one doubles.
    pub fn failed(&mut self) -> Duration {
        let now = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        now
    }

    /// Something succeeded: the next failure waits `min` again.
    pub fn succeeded(&mut self) {
        self.next = self.min;
    }

    /// The pause the next failure gets.
    pub fn next(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_the_ceiling_and_start_again_after_a_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let got: Vec<_> = (0..6).map(|_| b.failed()).collect();
        assert_eq!(
            got,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        b.succeeded();
        assert_eq!(b.failed(), ms(100));
        assert_eq!(b.next(), ms(200));
        let mut r = Backoff::resume(ms(100), ms(1000), ms(5000));
        assert_eq!(r.failed(), ms(1000), "kept within its bounds");
        let mut odd = Backoff::new(ms(50), ms(10));
        assert_eq!((odd.failed(), odd.failed()), (ms(50), ms(50)));
        let mut huge = Backoff::resume(ms(1), Duration::MAX, Duration::MAX);
        assert_eq!(huge.failed(), Duration::MAX, "no overflow");
    }
}
