//! Backend choice for one service port: a deterministic shuffle of the
//! endpoints, round-robin over it, and optional client-IP affinity.
//!
//! Everything here is synchronous and free of I/O, clocks (the caller passes
//! `now`) and hash-map iteration order, so the same seed, port id, endpoints
//! and call sequence always give the same sequence of picks.

use crate::SessionAffinity;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Affinity entries are swept for staleness once the table reaches this size
/// (and then at twice the size that survived the previous sweep).
const MIN_SWEEP_AT: usize = 64;

use crate::fnv1a;

/// The shuffle's generator: the project's one SplitMix64.
pub use overlay::rng::SplitMix64;

/// Where one client is pinned, and since when it was last used.
#[derive(Clone, Copy, Debug)]
struct Sticky {
    backend: SocketAddrV4,
    last_used: Instant,
}

/// The backend chooser of one service port.
#[derive(Clone, Debug)]
pub struct Balancer {
    id: String,
    seed: u64,
    order: Vec<SocketAddrV4>,
    next: usize,
    affinity: SessionAffinity,
    affinity_timeout: Duration,
    sticky: BTreeMap<Ipv4Addr, Sticky>,
    sweep_at: usize,
}

impl Balancer {
    /// A balancer for port `id` over `endpoints` (their input order and
    /// duplicates do not matter).
    pub fn new(
        id: &str,
        seed: u64,
        endpoints: Vec<SocketAddrV4>,
        affinity: SessionAffinity,
        affinity_timeout: Duration,
    ) -> Self {
        let mut b = Balancer {
            id: id.to_string(),
            seed: seed ^ fnv1a(id.as_bytes()),
            order: Vec::new(),
            next: 0,
            affinity,
            affinity_timeout,
            sticky: BTreeMap::new(),
            sweep_at: MIN_SWEEP_AT,
        };
        b.set_endpoints(endpoints);
        b
    }

    /// The port id this balancer serves.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The backends in round-robin order.
    pub fn order(&self) -> &[SocketAddrV4] {
        &self.order
    }

    /// The number of backends.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are no backends.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether `backend` is currently one of the endpoints.
    pub fn contains(&self, backend: SocketAddrV4) -> bool {
        self.order.contains(&backend)
    }

    /// Replaces the endpoints: a fresh deterministic shuffle of the new set
    /// (the same set always gives the same order), the round-robin position
    /// back at 0, and affinity entries of backends that left dropped.
    pub fn set_endpoints(&mut self, mut endpoints: Vec<SocketAddrV4>) {
        endpoints.sort();
        endpoints.dedup();
        let mut rng = SplitMix64::new(self.seed);
        for i in (1..endpoints.len()).rev() {
            let j = rng.below(i + 1);
            endpoints.swap(i, j);
        }
        self.order = endpoints;
        self.next = 0;
        let order = &self.order;
        self.sticky.retain(|_, s| order.contains(&s.backend));
    }

    /// The backend for a new connection (or UDP session) from `client`, or
    /// `None` when there are no endpoints.
    pub fn pick(&mut self, client: Ipv4Addr, now: Instant) -> Option<SocketAddrV4> {
        if self.order.is_empty() {
            return None;
        }
        let sticky = self.affinity == SessionAffinity::ClientIP;
        if sticky {
            let timeout = self.affinity_timeout;
            if let Some(s) = self.sticky.get_mut(&client) {
                let fresh = now.saturating_duration_since(s.last_used) < timeout;
                if fresh && self.order.contains(&s.backend) {
                    s.last_used = now;
                    return Some(s.backend);
                }
            }
        }
        let backend = self.order[self.next % self.order.len()];
        self.next = (self.next + 1) % self.order.len();
        if sticky {
            self.sticky.insert(
                client,
                Sticky {
                    backend,
                    last_used: now,
                },
            );
            self.sweep(now);
        }
        Some(backend)
    }

    /// Reports that `backend` refused a connection: clients pinned to it
    /// lose their affinity, and the next round-robin pick is not it (unless
    /// it is the only backend).
    pub fn failed(&mut self, backend: SocketAddrV4) {
        self.sticky.retain(|_, s| s.backend != backend);
        if self.order.len() > 1 && self.order[self.next % self.order.len()] == backend {
            self.next = (self.next + 1) % self.order.len();
        }
    }

    /// Drops expired affinity entries once the table has grown enough, so it
    /// stays bounded by the clients seen within one affinity timeout.
    fn sweep(&mut self, now: Instant) {
        if self.sticky.len() < self.sweep_at {
            return;
        }
        let timeout = self.affinity_timeout;
        self.sticky
            .retain(|_, s| now.saturating_duration_since(s.last_used) < timeout);
        self.sweep_at = (self.sticky.len() * 2).max(MIN_SWEEP_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u8) -> Vec<SocketAddrV4> {
        (1..=n)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 8080))
            .collect()
    }

    fn client(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 1, i)
    }

    const ID: &str = "default/web:80/TCP";
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix_known_values() {
        // Reference outputs of splitmix64 seeded with 1234567.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn same_inputs_same_picks() {
        let now = Instant::now();
        let run = || {
            let mut b = Balancer::new(ID, 42, eps(5), SessionAffinity::None, HOUR);
            let mut picks = Vec::new();
            for i in 0..23 {
                picks.push(b.pick(client(i), now));
                if i == 7 {
                    b.failed(eps(5)[2]);
                }
                if i == 15 {
                    b.set_endpoints(eps(4));
                }
            }
            picks
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().all(Option::is_some));
    }

    #[test]
    fn input_order_and_duplicates_do_not_matter() {
        let mut shuffled = eps(5);
        shuffled.reverse();
        shuffled.push(shuffled[1]);
        let a = Balancer::new(ID, 7, eps(5), SessionAffinity::None, HOUR);
        let b = Balancer::new(ID, 7, shuffled, SessionAffinity::None, HOUR);
        assert_eq!(a.order(), b.order());
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn seeds_and_ids_change_the_order() {
        let orders: Vec<Vec<SocketAddrV4>> = (0..8)
            .map(|seed| {
                Balancer::new(ID, seed, eps(5), SessionAffinity::None, HOUR)
                    .order()
                    .to_vec()
            })
            .collect();
        // 8 seeds over 120 permutations: at least some must differ.
        let distinct: std::collections::BTreeSet<_> = orders.iter().collect();
        assert!(
            distinct.len() >= 4,
            "only {} distinct orders",
            distinct.len()
        );
        assert_ne!(orders[0], orders[1]);
        // Another port id with the same seeds mostly shuffles differently.
        let differ = (0..8)
            .filter(|&seed| {
                let other = Balancer::new(
                    "default/api:80/TCP",
                    seed,
                    eps(5),
                    SessionAffinity::None,
                    HOUR,
                );
                other.order() != orders[seed as usize].as_slice()
            })
            .count();
        assert!(differ >= 4, "only {differ} of 8 differ");
        // Not simply the sorted order for every seed.
        assert!(orders.iter().any(|o| *o != eps(5)));
    }

    #[test]
    fn round_robin_is_a_permutation_per_cycle() {
        let now = Instant::now();
        for seed in 0..20 {
            let mut b = Balancer::new(ID, seed, eps(5), SessionAffinity::None, HOUR);
            let order = b.order().to_vec();
            let mut sorted_order = order.clone();
            sorted_order.sort();
            assert_eq!(sorted_order, eps(5));
            for _cycle in 0..3 {
                let picks: Vec<_> = (0..5).filter_map(|i| b.pick(client(i), now)).collect();
                assert_eq!(picks, order, "seed {seed}");
            }
        }
    }

    #[test]
    fn no_endpoints_no_pick() {
        let mut b = Balancer::new(ID, 1, vec![], SessionAffinity::ClientIP, HOUR);
        assert!(b.is_empty());
        assert_eq!(b.pick(client(1), Instant::now()), None);
        b.set_endpoints(eps(1));
        assert_eq!(b.pick(client(1), Instant::now()), Some(eps(1)[0]));
    }

    #[test]
    fn affinity_sticks_until_timeout_and_refreshes() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut b = Balancer::new(ID, 3, eps(3), SessionAffinity::ClientIP, timeout);
        let first = b.pick(client(1), t0);
        // Other clients advance the round robin; client 1 keeps its backend.
        let second = b.pick(client(2), t0);
        assert_ne!(first, second);
        for s in 1..=25 {
            // Used every 5 s: each use refreshes, so it never expires.
            assert_eq!(b.pick(client(1), t0 + Duration::from_secs(5 * s)), first);
        }
        // Idle for the timeout: it is re-picked round-robin.
        let late = t0 + Duration::from_secs(125 + 10);
        let expected = b.order()[b.next];
        assert_eq!(b.pick(client(1), late), Some(expected));
        assert_ne!(Some(expected), first, "test setup: should move on");
    }

    #[test]
    fn without_affinity_a_client_rotates() {
        let now = Instant::now();
        let mut b = Balancer::new(ID, 3, eps(3), SessionAffinity::None, HOUR);
        let picks: Vec<_> = (0..3).filter_map(|_| b.pick(client(1), now)).collect();
        assert_eq!(picks, b.order());
    }

    #[test]
    fn failed_skips_and_drops_affinity() {
        let now = Instant::now();
        let mut b = Balancer::new(ID, 9, eps(4), SessionAffinity::ClientIP, HOUR);
        let order = b.order().to_vec();
        assert_eq!(b.pick(client(1), now), Some(order[0]));
        b.failed(order[0]);
        // Client 1 lost its pin and gets the next one.
        assert_eq!(b.pick(client(1), now), Some(order[1]));
        assert_eq!(b.pick(client(1), now), Some(order[1]));

        // A failure of the backend that is next in line skips it.
        let mut b = Balancer::new(ID, 9, eps(4), SessionAffinity::None, HOUR);
        assert_eq!(b.pick(client(1), now), Some(order[0]));
        b.failed(order[1]);
        assert_eq!(b.pick(client(1), now), Some(order[2]));

        // A caller trying at most len backends reaches every one of them.
        let mut b = Balancer::new(ID, 9, eps(4), SessionAffinity::None, HOUR);
        let mut tried = Vec::new();
        for _ in 0..b.len() {
            let p = b
                .pick(client(1), now)
                .unwrap_or_else(|| panic!("a backend"));
            tried.push(p);
            b.failed(p);
        }
        tried.sort();
        assert_eq!(tried, eps(4));

        // With one backend, it is still offered.
        let mut b = Balancer::new(ID, 9, eps(1), SessionAffinity::None, HOUR);
        b.failed(eps(1)[0]);
        assert_eq!(b.pick(client(1), now), Some(eps(1)[0]));
    }

    #[test]
    fn set_endpoints_reshuffles_resets_and_drops_leavers() {
        let now = Instant::now();
        let mut b = Balancer::new(ID, 5, eps(5), SessionAffinity::ClientIP, HOUR);
        let fresh = Balancer::new(ID, 5, eps(3), SessionAffinity::ClientIP, HOUR);
        // Pin five clients, one per backend.
        let pins: Vec<_> = (1..=5).map(|c| (c, b.pick(client(c), now))).collect();
        b.set_endpoints(eps(3));
        // Same order as a balancer built on the new set directly.
        assert_eq!(b.order(), fresh.order());
        assert_eq!(b.next, 0);
        let kept: Vec<_> = pins
            .iter()
            .filter(|(_, p)| p.is_some_and(|p| eps(3).contains(&p)))
            .collect();
        assert_eq!(kept.len(), 3);
        for (c, p) in &kept {
            assert_eq!(b.pick(client(*c), now), *p, "client {c} keeps its pin");
        }
        // Clients of backends that left restart from position 0.
        let moved: Vec<_> = pins
            .iter()
            .filter(|(_, p)| !p.is_some_and(|p| eps(3).contains(&p)))
            .map(|(c, _)| b.pick(client(*c), now))
            .collect();
        assert_eq!(moved, vec![Some(fresh.order()[0]), Some(fresh.order()[1])]);
    }

    #[test]
    fn affinity_table_is_swept() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        let mut b = Balancer::new(ID, 5, eps(2), SessionAffinity::ClientIP, timeout);
        for i in 0..=255u8 {
            b.pick(Ipv4Addr::new(10, 1, 0, i), t0);
        }
        let later = t0 + Duration::from_secs(2);
        for i in 0..=255u8 {
            b.pick(Ipv4Addr::new(10, 2, 0, i), later);
        }
        assert_eq!(b.sticky.len(), 256);
        assert!(b.sticky.keys().all(|ip| ip.octets()[1] == 2));
    }
}
