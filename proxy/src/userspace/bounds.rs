//! The proxy's resource bounds: how many TCP connections and UDP sessions
//! each port may hold (scaled down so that all ports together fit in the
//! process's descriptor budget), what hitting a bound counts, and the rate
//! limit of the log lines that report it. Pure: the caller passes the time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Descriptors one relayed TCP connection holds: two sockets, two pipes.
pub const FDS_PER_TCP_CONNECTION: u64 = 6;
/// Descriptors one UDP session holds: its socket to the backend.
pub const FDS_PER_UDP_SESSION: u64 = 1;
/// Descriptors of a TCP port besides its connections: the listener, and a
/// connection being refused (accepted, then reset at once).
pub const FDS_PER_TCP_PORT: u64 = 2;
/// Descriptors of a UDP port besides its sessions: the listener, and the
/// sockets of the sessions one wake-up of the listener evicted, which close
/// once their tasks have been cancelled (at most one per datagram of a
/// batch).
pub const FDS_PER_UDP_PORT: u64 = 65;
/// Descriptors kept out of the per-port bounds for everything else the
/// process opens: standard streams, the runtime's epoll and wake-up
/// descriptors, log and state files, `iptables-restore`'s pipes.
pub const RESERVED_FDS: u64 = 64;
/// At most one log line per bound and port in this many milliseconds; the
/// line says how many events it stands for.
pub const LOG_INTERVAL_MS: u64 = 10_000;

/// The bounds every port of one protocol gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBounds {
    /// Concurrent TCP connections per TCP port.
    pub tcp_connections: usize,
    /// UDP sessions per UDP port.
    pub udp_sessions: usize,
    /// Whether the configured bounds were lowered to fit the budget.
    pub scaled: bool,
}

/// The per-port bounds for `tcp_ports` TCP and `udp_ports` UDP ports: the
/// configured `tcp_max` and `udp_max`, or, when the ports together could
/// need more descriptors than `budget` leaves after the reserve and the
/// ports' own ([`FDS_PER_TCP_PORT`], [`FDS_PER_UDP_PORT`]), both lowered by
/// the same factor so that they fit (never below one).
pub fn port_bounds(
    tcp_max: usize,
    udp_max: usize,
    budget: Option<u64>,
    tcp_ports: usize,
    udp_ports: usize,
) -> PortBounds {
    let unscaled = PortBounds {
        tcp_connections: tcp_max,
        udp_sessions: udp_max,
        scaled: false,
    };
    let Some(budget) = budget else {
        return unscaled;
    };
    let (tcp_ports, udp_ports) = (tcp_ports as u128, udp_ports as u128);
    let fixed = u128::from(RESERVED_FDS)
        + tcp_ports * u128::from(FDS_PER_TCP_PORT)
        + udp_ports * u128::from(FDS_PER_UDP_PORT);
    let available = u128::from(budget).saturating_sub(fixed);
    let want = tcp_ports * tcp_max as u128 * u128::from(FDS_PER_TCP_CONNECTION)
        + udp_ports * udp_max as u128 * u128::from(FDS_PER_UDP_SESSION);
    if want <= available {
        return unscaled;
    }
    let scale = |max: usize| {
        let v = (max as u128 * available / want).max(1);
        usize::try_from(v).unwrap_or(usize::MAX)
    };
    PortBounds {
        tcp_connections: scale(tcp_max),
        udp_sessions: scale(udp_max),
        scaled: true,
    }
}

/// What the bounds of one port did since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoundCounts {
    /// UDP sessions ended to make room for a new client.
    pub udp_evicted: u64,
    /// TCP connections reset because the port held its maximum.
    pub tcp_refused: u64,
    /// TCP connections closed after the idle timeout.
    pub tcp_idle_closed: u64,
}

/// One bound's counter and the rate limit of its log line.
#[derive(Debug, Default)]
pub(crate) struct Bound {
    total: AtomicU64,
    /// The earliest time (ms of the port's clock) of the next log line.
    next_log_ms: AtomicU64,
    /// Events since the last log line.
    unlogged: AtomicU64,
}

impl Bound {
    /// Counts one event at `now_ms`; `Some((events, total))` when it may be
    /// logged: the events since the last line (this one included) and all
    /// so far.
    pub(crate) fn hit(&self, now_ms: u64) -> Option<(u64, u64)> {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let next = self.next_log_ms.load(Ordering::Relaxed);
        let due = now_ms >= next
            && self
                .next_log_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(LOG_INTERVAL_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        due.then(|| (self.unlogged.swap(0, Ordering::Relaxed), total))
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_fit_the_budget() {
        // No budget, or one that suffices: as configured.
        let b = port_bounds(1024, 1024, None, 100, 100);
        assert_eq!(
            (b.tcp_connections, b.udp_sessions, b.scaled),
            (1024, 1024, false)
        );
        let need =
            RESERVED_FDS + 3 * FDS_PER_TCP_PORT + 2 * FDS_PER_UDP_PORT + 3 * 1024 * 6 + 2 * 1024;
        let b = port_bounds(1024, 1024, Some(need), 3, 2);
        assert_eq!(
            (b.tcp_connections, b.udp_sessions, b.scaled),
            (1024, 1024, false)
        );
        // One less: both lowered, and what they need fits.
        for (budget, tcp, udp) in [(need - 1, 3, 2), (20_000, 40, 10), (1_048_576, 500, 500)] {
            let b = port_bounds(1024, 1024, Some(budget), tcp, udp);
            assert!(b.scaled, "{budget} {tcp} {udp}");
            let used = RESERVED_FDS
                + tcp as u64 * FDS_PER_TCP_PORT
                + udp as u64 * FDS_PER_UDP_PORT
                + (tcp * b.tcp_connections) as u64 * FDS_PER_TCP_CONNECTION
                + (udp * b.udp_sessions) as u64 * FDS_PER_UDP_SESSION;
            assert!(used <= budget, "{b:?} uses {used} of {budget}");
            assert!(b.tcp_connections < 1024 && b.udp_sessions < 1024, "{b:?}");
        }
        // A budget too small for anything still leaves one per port.
        let b = port_bounds(1024, 1024, Some(10), 5, 5);
        assert_eq!((b.tcp_connections, b.udp_sessions), (1, 1));
    }

    #[test]
    fn a_flood_logs_once_per_interval_with_the_count() {
        let b = Bound::default();
        assert_eq!(b.hit(0), Some((1, 1)), "the first event is logged");
        for t in 1..1000 {
            assert_eq!(b.hit(t), None);
        }
        assert_eq!(b.hit(LOG_INTERVAL_MS), Some((1000, 1001)));
        assert_eq!(b.hit(LOG_INTERVAL_MS + 1), None);
        assert_eq!(b.total(), 1002);
    }
}
