//! A pure, deterministic link-impairment engine: the netem-like delay,
//! jitter, loss, duplication, reordering and rate limiting that the UDP
//! overlay daemon applies to every packet, one [`Impairer`] per node and
//! direction.
//!
//! Unlike the kernel's netem, the engine is reproducible: the same seed, the
//! same stream and the same packet sequence give the same fate for every
//! packet. It never reads a clock or does I/O; the caller says when a packet
//! arrived and is told when to send it (or that it is lost).
//!
//! # Determinism
//!
//! Every packet passed to [`Impairer::admit`] consumes exactly
//! [`DRAWS_PER_PACKET`] numbers from the engine's generator, always in the
//! same order (loss, duplicate, reorder, jitter), whether or not the
//! corresponding impairment is set and whether or not the packet is dropped.
//! The draws for the k-th packet admitted are therefore a function of
//! `(seed, stream, k)` alone, and so is each decision made from a single draw:
//!
//! - the set of lost packets (by sequence number) is identical across runs
//!   with the same seed, stream and loss share, and does not change when
//!   delay, jitter, duplication, reordering or the rate are changed (live or
//!   between runs);
//! - likewise which packets are duplicated, which are reordered and each
//!   packet's jitter offset depend only on `(seed, stream, k)` and their own
//!   setting.
//!
//! A delivery time additionally depends on the arrival times and, with a rate
//! limit, on the sizes of the earlier packets (they share the queue).
//!
//! # Random numbers
//!
//! The generator is xoshiro256** (Blackman and Vigna, 2018), seeded from
//! SplitMix64 (Steele, Lea and Flood, 2014) as its authors recommend; both are
//! written out below so the sequence cannot change under us with a
//! dependency. A `(seed, stream)` pair is turned into a generator by
//! [`Xoshiro256StarStar::for_stream`]. Decisions use integer arithmetic only:
//! a draw `r` maps onto `0..n` as `(r * n) >> 64` (Lemire's multiply-shift,
//! bias below `n / 2^64`).

use serde::{Deserialize, Serialize};

/// Parts per million meaning "always" (100%).
pub const PPM: u32 = 1_000_000;

/// Random numbers drawn for every packet, whatever is configured.
pub const DRAWS_PER_PACKET: u64 = 4;

/// One direction's impairments (all optional; zero means off).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Impairment {
    /// Constant delay added to every packet, after the rate queue.
    pub delay_us: u64,
    /// Uniform jitter in `[-jitter_us, +jitter_us]` added to `delay_us`; the
    /// sum is clamped at 0. As with netem, jitter may reorder packets.
    pub jitter_us: u64,
    /// Parts per million of packets dropped (1% = 10_000).
    pub loss_ppm: u32,
    /// Parts per million of delivered packets delivered twice.
    pub duplicate_ppm: u32,
    /// Parts per million of delivered packets sent at once, without delay and
    /// jitter (netem's `reorder`); the rest are delayed. Only meaningful with
    /// delay or jitter.
    pub reorder_ppm: u32,
    /// Link rate in bits per second; 0 = unlimited. A packet occupies the link
    /// for `len * 8 / rate` seconds and queues behind the packets before it.
    pub rate_bps: u64,
}

/// A share above 100%.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {value} ppm, more than {PPM} (100%)")]
pub struct ImpairmentError {
    /// The camelCase field name, as in topology files.
    pub field: &'static str,
    /// The value given.
    pub value: u32,
}

impl Impairment {
    /// Whether nothing observable is configured: every packet would be
    /// delivered once, at once. A reorder share without delay or jitter is
    /// such a no-op.
    pub fn is_noop(&self) -> bool {
        self.delay_us == 0
            && self.jitter_us == 0
            && self.loss_ppm == 0
            && self.duplicate_ppm == 0
            && self.rate_bps == 0
    }

    /// Rejects shares above 100% ([`Impairer`] treats them as 100%).
    pub fn validate(&self) -> Result<(), ImpairmentError> {
        for (field, value) in [
            ("lossPpm", self.loss_ppm),
            ("duplicatePpm", self.duplicate_ppm),
            ("reorderPpm", self.reorder_ppm),
        ] {
            if value > PPM {
                return Err(ImpairmentError { field, value });
            }
        }
        Ok(())
    }
}

/// What happens to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The packet is lost.
    Drop,
    /// Send the packet at `at_us` (absolute, on the caller's clock; never
    /// before the packet arrived), `copies` times (1, or 2 when duplicated;
    /// both copies at the same time).
    Deliver { at_us: u64, copies: u8 },
}

/// One direction's impairment engine: the configuration, the generator's
/// position and the rate queue's backlog.
#[derive(Clone, Debug)]
pub struct Impairer {
    cfg: Impairment,
    rng: Xoshiro256StarStar,
    packets: u64,
    /// The link is busy until `busy_us + busy_frac / rate_bps` µs
    /// (`busy_frac < rate_bps`), so that pacing accumulates no rounding error.
    busy_us: u64,
    busy_frac: u64,
}

impl Impairer {
    /// An engine applying `cfg`, drawing from the generator of
    /// `(seed, stream)`. `stream` separates independent sequences derived from
    /// one topology seed (e.g. node index * 2 + direction).
    pub fn new(cfg: Impairment, seed: u64, stream: u64) -> Impairer {
        Impairer {
            cfg,
            rng: Xoshiro256StarStar::for_stream(seed, stream),
            packets: 0,
            busy_us: 0,
            busy_frac: 0,
        }
    }

    /// The fate of one packet of `len` bytes arriving at `now_us` (monotonic).
    ///
    /// In order: the packet is lost with `loss_ppm` (a lost packet neither
    /// occupies the rate queue nor is duplicated); otherwise it departs the
    /// rate queue at `max(now, end of the previous departure) + len * 8 / rate`
    /// (at once when unlimited), then is delayed by `delay ± jitter` (clamped
    /// at 0) unless it is one of the `reorder_ppm` sent without delay, and is
    /// delivered twice with `duplicate_ppm` (the copy does not occupy the rate
    /// queue). Times are rounded up to whole microseconds.
    pub fn admit(&mut self, now_us: u64, len: usize) -> Fate {
        // Fixed count, fixed order: see the module documentation.
        let r_loss = self.rng.next_u64();
        let r_duplicate = self.rng.next_u64();
        let r_reorder = self.rng.next_u64();
        let r_jitter = self.rng.next_u64();
        self.packets += 1;

        if chance(r_loss, self.cfg.loss_ppm) {
            return Fate::Drop;
        }
        let departs = self.serialise(now_us, len);
        let at_us = if chance(r_reorder, self.cfg.reorder_ppm) {
            departs
        } else {
            departs.saturating_add(self.delay(r_jitter))
        };
        let copies = if chance(r_duplicate, self.cfg.duplicate_ppm) {
            2
        } else {
            1
        };
        Fate::Deliver { at_us, copies }
    }

    /// Changes the configuration live. The generator keeps its position (the
    /// next packet is still packet number [`Impairer::packets`]), and fates
    /// already given stand: packets queue behind the rate queue's backlog at
    /// the new rate; when the rate becomes unlimited the backlog is forgotten.
    pub fn set(&mut self, cfg: Impairment) {
        let (old, new) = (self.cfg.rate_bps, cfg.rate_bps);
        if new == 0 {
            self.busy_us = 0;
            self.busy_frac = 0;
        } else if old == 0 {
            self.busy_frac = 0;
        } else if old != new {
            // The same fraction of a microsecond, in the new unit; < new.
            self.busy_frac =
                (u128::from(self.busy_frac) * u128::from(new) / u128::from(old)) as u64;
        }
        self.cfg = cfg;
    }

    /// The configuration in force.
    pub fn config(&self) -> &Impairment {
        &self.cfg
    }

    /// Whether the configuration is a no-op ([`Impairment::is_noop`]): the
    /// caller may skip [`Impairer::admit`]. Skipped packets do not advance the
    /// generator, so if the configuration may later change live and packet
    /// numbers must stay aligned with a run configured from the start, call
    /// `admit` anyway (it costs four generator steps).
    pub fn is_noop(&self) -> bool {
        self.cfg.is_noop()
    }

    /// How many packets have been admitted (lost ones included).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The time the packet's last bit leaves the rate queue.
    fn serialise(&mut self, now_us: u64, len: usize) -> u64 {
        let rate = self.cfg.rate_bps;
        if rate == 0 {
            return now_us;
        }
        let (start_us, start_frac) = if (now_us, 0) >= (self.busy_us, self.busy_frac) {
            (now_us, 0)
        } else {
            (self.busy_us, self.busy_frac)
        };
        // Bits * 1e6 / rate µs, kept exact as whole µs plus a remainder.
        let work = (len as u128) * 8 * 1_000_000 + u128::from(start_frac);
        let whole = u64::try_from(work / u128::from(rate)).unwrap_or(u64::MAX);
        self.busy_us = start_us.saturating_add(whole);
        self.busy_frac = (work % u128::from(rate)) as u64;
        self.busy_us.saturating_add(u64::from(self.busy_frac > 0))
    }

    /// `delay + uniform[-jitter, +jitter]`, clamped to `0..=u64::MAX`.
    fn delay(&self, r: u64) -> u64 {
        let (delay, jitter) = (self.cfg.delay_us, self.cfg.jitter_us);
        if jitter == 0 {
            return delay;
        }
        let span = 2 * u128::from(jitter) + 1;
        let offset = below(r, span) as i128 - i128::from(jitter);
        (i128::from(delay) + offset).clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// `r` mapped onto `0..n` (multiply-shift); uniform up to `n / 2^64`.
fn below(r: u64, n: u128) -> u128 {
    // n < 2^65 here (2 * jitter + 1): r * n may need 129 bits, so above 2^64
    // split n into its high and low 64-bit halves to stay exact.
    if n <= 1 << 64 {
        (u128::from(r) * n) >> 64
    } else {
        let (hi, lo) = (n >> 64, n & u128::from(u64::MAX));
        u128::from(r) * hi + ((u128::from(r) * lo) >> 64)
    }
}

/// Whether a draw falls in a share of `ppm` parts per million (>= 100% always).
fn chance(r: u64, ppm: u32) -> bool {
    below(r, u128::from(PPM)) < u128::from(ppm)
}

pub use crate::rng::{SplitMix64, Xoshiro256StarStar};

#[cfg(test)]
mod tests {
    use super::*;

    const N: u64 = 100_000;

    fn run(imp: &mut Impairer, n: u64, len: usize) -> Vec<Fate> {
        (0..n).map(|k| imp.admit(k * 100, len)).collect()
    }

    fn lost(fates: &[Fate]) -> Vec<usize> {
        (0..fates.len())
            .filter(|&k| fates[k] == Fate::Drop)
            .collect()
    }

    /// Asserts `count` successes of `n` trials at `ppm` lie within 5 standard
    /// deviations of the binomial mean (a false failure about 1 in 1.7 million).
    fn assert_share(what: &str, count: u64, n: u64, ppm: u32) {
        let p = f64::from(ppm) / f64::from(PPM);
        let mean = n as f64 * p;
        let bound = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - mean).abs() <= bound,
            "{what}: {count} of {n}, expected {mean} ± {bound}"
        );
    }

    fn all_on() -> Impairment {
        Impairment {
            delay_us: 20_000,
            jitter_us: 5_000,
            loss_ppm: 100_000,
            duplicate_ppm: 20_000,
            reorder_ppm: 250_000,
            rate_bps: 100_000_000,
        }
    }

    #[test]
    fn pinned_draw_order() {
        // Which of the first 10 packets are lost at 50% follows from the
        // first draw of each group of four; pinned so a change in the order
        // or count of draws is caught.
        let mut rng = Xoshiro256StarStar::for_stream(42, 0);
        let expected: Vec<usize> = (0..10)
            .filter(|_| {
                let r = rng.next_u64();
                for _ in 1..DRAWS_PER_PACKET {
                    rng.next_u64();
                }
                chance(r, PPM / 2)
            })
            .collect();
        let cfg = Impairment {
            loss_ppm: PPM / 2,
            ..all_on()
        };
        let mut imp = Impairer::new(cfg, 42, 0);
        assert_eq!(lost(&run(&mut imp, 10, 1000)), expected);
        assert_eq!(expected, [0, 5, 6, 7]); // cross-checked with an independent implementation
    }

    #[test]
    fn same_seed_and_stream_same_fates() {
        let a = run(&mut Impairer::new(all_on(), 7, 3), N, 1200);
        let b = run(&mut Impairer::new(all_on(), 7, 3), N, 1200);
        assert_eq!(a, b);
        let c = run(&mut Impairer::new(all_on(), 8, 3), N, 1200);
        assert_ne!(lost(&a), lost(&c));
        let d = run(&mut Impairer::new(all_on(), 7, 2), N, 1200);
        assert_ne!(lost(&a), lost(&d));
        assert_ne!(lost(&c), lost(&d));
    }

    #[test]
    fn lost_set_ignores_other_settings() {
        let only_loss = Impairment {
            loss_ppm: 100_000,
            ..Impairment::default()
        };
        let a = lost(&run(&mut Impairer::new(only_loss, 7, 3), N, 1200));
        let b = lost(&run(&mut Impairer::new(all_on(), 7, 3), N, 1200));
        assert_eq!(a, b);
        // Duplicated packets likewise do not depend on the loss share.
        let dup = |loss_ppm| {
            let cfg = Impairment {
                loss_ppm,
                duplicate_ppm: 50_000,
                ..Impairment::default()
            };
            run(&mut Impairer::new(cfg, 7, 3), N, 1200)
        };
        let (without, with) = (dup(0), dup(100_000));
        for (x, y) in without.iter().zip(&with) {
            if let Fate::Deliver { copies, .. } = y {
                assert!(matches!(x, Fate::Deliver { copies: c, .. } if c == copies));
            }
        }
    }

    #[test]
    fn loss_share() {
        for ppm in [100_000, 10_000, 500_000] {
            let cfg = Impairment {
                loss_ppm: ppm,
                ..Impairment::default()
            };
            let fates = run(&mut Impairer::new(cfg, 42, 0), N, 100);
            assert_share("loss", lost(&fates).len() as u64, N, ppm);
        }
        let never = Impairment::default();
        let always = Impairment {
            loss_ppm: PPM,
            ..Impairment::default()
        };
        assert!(lost(&run(&mut Impairer::new(never, 1, 0), N, 100)).is_empty());
        assert_eq!(
            lost(&run(&mut Impairer::new(always, 1, 0), N, 100)).len(),
            N as usize
        );
    }

    #[test]
    fn duplicate_share() {
        let cfg = Impairment {
            duplicate_ppm: 50_000,
            loss_ppm: 100_000,
            ..Impairment::default()
        };
        let fates = run(&mut Impairer::new(cfg, 42, 1), N, 100);
        let delivered = fates.iter().filter(|f| **f != Fate::Drop).count() as u64;
        let twice = fates
            .iter()
            .filter(|f| matches!(f, Fate::Deliver { copies: 2, .. }))
            .count() as u64;
        assert!(fates
            .iter()
            .all(|f| matches!(f, Fate::Drop | Fate::Deliver { copies: 1 | 2, .. })));
        assert_share("duplicate", twice, delivered, 50_000);
    }

    #[test]
    fn reorder_share() {
        let cfg = Impairment {
            delay_us: 10_000,
            reorder_ppm: 250_000,
            ..Impairment::default()
        };
        let mut imp = Impairer::new(cfg, 42, 2);
        let mut immediate = 0;
        for k in 0..N {
            let now = k * 100;
            match imp.admit(now, 100) {
                Fate::Deliver { at_us, copies: 1 } if at_us == now => immediate += 1,
                Fate::Deliver { at_us, copies: 1 } => assert_eq!(at_us, now + 10_000),
                other => panic!("{other:?}"),
            }
        }
        assert_share("reorder", immediate, N, 250_000);
    }

    #[test]
    fn delay_and_jitter_bounds() {
        let (delay, jitter) = (5_000, 2_000);
        let cfg = Impairment {
            delay_us: delay,
            jitter_us: jitter,
            ..Impairment::default()
        };
        let mut imp = Impairer::new(cfg, 42, 3);
        let (mut lo, mut hi, mut sum) = (u64::MAX, 0, 0u64);
        let mut overtaken = false;
        let mut last = 0;
        for k in 0..N {
            let now = 1_000_000 + k * 100;
            let Fate::Deliver { at_us, copies: 1 } = imp.admit(now, 100) else {
                panic!("not delivered once");
            };
            assert!((now + delay - jitter..=now + delay + jitter).contains(&at_us));
            lo = lo.min(at_us - now);
            hi = hi.max(at_us - now);
            sum += at_us - now;
            overtaken |= at_us < last;
            last = at_us;
        }
        // Both ends are reached, the mean is the delay, and (as with netem)
        // jitter reorders packets.
        assert_eq!((lo, hi), (delay - jitter, delay + jitter));
        let mean = sum as f64 / N as f64;
        let sd_of_mean = (((2 * jitter + 1).pow(2) - 1) as f64 / 12.0 / N as f64).sqrt();
        assert!(
            (mean - delay as f64).abs() < 5.0 * sd_of_mean,
            "mean {mean}"
        );
        assert!(overtaken);
    }

    #[test]
    fn jitter_larger_than_delay_clamps_at_zero() {
        let cfg = Impairment {
            delay_us: 1_000,
            jitter_us: 5_000,
            ..Impairment::default()
        };
        let mut imp = Impairer::new(cfg, 42, 4);
        let mut at_once = 0;
        for k in 0..N {
            let now = k * 100;
            let Fate::Deliver { at_us, .. } = imp.admit(now, 100) else {
                panic!("dropped");
            };
            assert!((now..=now + 6_000).contains(&at_us));
            at_once += u64::from(at_us == now);
        }
        // Offsets -5000..=-1000 all clamp: 4001 of 10001 values.
        assert_share("clamped", at_once, N, (4001u64 * 1_000_000 / 10_001) as u32);
    }

    #[test]
    fn rate_paces_a_burst() {
        // 1250 bytes = 10_000 bits at 10 Mbit/s = 1 ms each.
        let cfg = Impairment {
            rate_bps: 10_000_000,
            ..Impairment::default()
        };
        let mut imp = Impairer::new(cfg.clone(), 42, 5);
        let t0 = 5_000_000;
        for k in 1..=1000 {
            assert_eq!(
                imp.admit(t0, 1250),
                Fate::Deliver {
                    at_us: t0 + k * 1000,
                    copies: 1
                }
            );
        }
        // An idle link serialises a packet and nothing more.
        let later = t0 + 10_000_000;
        assert_eq!(
            imp.admit(later, 1250),
            Fate::Deliver {
                at_us: later + 1000,
                copies: 1
            }
        );
        // The delay comes after the queue.
        imp.set(Impairment {
            delay_us: 300,
            ..cfg
        });
        assert_eq!(
            imp.admit(later, 1250),
            Fate::Deliver {
                at_us: later + 2000 + 300,
                copies: 1
            }
        );
    }

    #[test]
    fn rate_accumulates_no_rounding_error() {
        // 100 bytes at 3 Mbit/s = 266.67 µs; 3000 of them = exactly 0.8 s.
        let cfg = Impairment {
            rate_bps: 3_000_000,
            ..Impairment::default()
        };
        let mut imp = Impairer::new(cfg, 42, 6);
        let mut last = 0;
        for k in 1..=3000u64 {
            let Fate::Deliver { at_us, .. } = imp.admit(0, 100) else {
                panic!("dropped");
            };
            assert_eq!(at_us, (k * 800).div_ceil(3));
            assert!(at_us > last);
            last = at_us;
        }
        assert_eq!(last, 800_000);
    }

    #[test]
    fn lost_packets_do_not_occupy_the_link() {
        let cfg = Impairment {
            rate_bps: 10_000_000,
            loss_ppm: PPM,
            ..Impairment::default()
        };
        let mut imp = Impairer::new(cfg.clone(), 42, 7);
        assert!(run(&mut imp, 100, 1250).iter().all(|f| *f == Fate::Drop));
        imp.set(Impairment { loss_ppm: 0, ..cfg });
        assert_eq!(
            imp.admit(10_000, 1250),
            Fate::Deliver {
                at_us: 11_000,
                copies: 1
            }
        );
    }

    #[test]
    fn rate_change_keeps_the_backlog() {
        let cfg = Impairment {
            rate_bps: 3_000_000,
            ..Impairment::default()
        };
        let mut imp = Impairer::new(cfg, 42, 8);
        imp.admit(0, 100); // busy until 266 2/3 µs
        imp.set(Impairment {
            rate_bps: 6_000_000,
            ..Impairment::default()
        });
        // 2/3 µs left over + 133 1/3 µs = 400 µs.
        assert_eq!(
            imp.admit(0, 100),
            Fate::Deliver {
                at_us: 400,
                copies: 1
            }
        );
        imp.set(Impairment::default());
        assert_eq!(
            imp.admit(0, 100),
            Fate::Deliver {
                at_us: 0,
                copies: 1
            }
        );
    }

    #[test]
    fn set_keeps_the_generator_position() {
        let first = Impairment {
            loss_ppm: 300_000,
            jitter_us: 1_000,
            delay_us: 2_000,
            ..Impairment::default()
        };
        let second = Impairment {
            loss_ppm: 300_000,
            jitter_us: 4_000,
            delay_us: 10_000,
            duplicate_ppm: 100_000,
            ..Impairment::default()
        };
        let mut changed = Impairer::new(first.clone(), 9, 1);
        let a1 = run(&mut changed, 500, 100);
        changed.set(second.clone());
        assert_eq!(changed.config(), &second);
        assert_eq!(changed.packets(), 500);
        let a2: Vec<Fate> = (500..1000).map(|k| changed.admit(k * 100, 100)).collect();

        let b = run(&mut Impairer::new(second, 9, 1), 1000, 100);
        assert_eq!(a2, b[500..]);
        // The loss share did not change, so neither did any lost packet.
        let c = run(&mut Impairer::new(first, 9, 1), 1000, 100);
        assert_eq!(lost(&a1), lost(&c[..500]));
        assert_eq!(lost(&a2), lost(&c[500..]));
    }

    #[test]
    fn noop_detection() {
        assert!(Impairer::new(Impairment::default(), 1, 0).is_noop());
        let reorder_only = Impairment {
            reorder_ppm: 500_000,
            ..Impairment::default()
        };
        assert!(reorder_only.is_noop());
        let mut imp = Impairer::new(reorder_only, 1, 0);
        for k in 0..1000 {
            assert_eq!(
                imp.admit(k, 1500),
                Fate::Deliver {
                    at_us: k,
                    copies: 1
                }
            );
        }
        for cfg in [
            Impairment {
                delay_us: 1,
                ..Impairment::default()
            },
            Impairment {
                jitter_us: 1,
                ..Impairment::default()
            },
            Impairment {
                loss_ppm: 1,
                ..Impairment::default()
            },
            Impairment {
                duplicate_ppm: 1,
                ..Impairment::default()
            },
            Impairment {
                rate_bps: 1,
                ..Impairment::default()
            },
        ] {
            assert!(!cfg.is_noop(), "{cfg:?}");
            let mut imp = Impairer::new(Impairment::default(), 1, 0);
            imp.set(cfg);
            assert!(!imp.is_noop());
        }
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let cfg = Impairment {
            delay_us: u64::MAX,
            jitter_us: u64::MAX,
            rate_bps: 1,
            duplicate_ppm: u32::MAX,
            ..Impairment::default()
        };
        let mut imp = Impairer::new(cfg, 0, u64::MAX);
        for _ in 0..100 {
            match imp.admit(u64::MAX - 5, usize::MAX) {
                Fate::Deliver { at_us, copies: 2 } => assert!(at_us >= u64::MAX - 5),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn validation_and_serde() {
        assert!(all_on().validate().is_ok());
        let err = Impairment {
            reorder_ppm: PPM + 1,
            ..Impairment::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "reorderPpm is 1000001 ppm, more than 1000000 (100%)"
        );

        let json = serde_json::to_string(&all_on()).unwrap();
        assert_eq!(
            json,
            r#"{"delayUs":20000,"jitterUs":5000,"lossPpm":100000,"duplicatePpm":20000,"reorderPpm":250000,"rateBps":100000000}"#
        );
        assert_eq!(serde_json::from_str::<Impairment>(&json).unwrap(), all_on());
        let partial: Impairment = serde_json::from_str(r#"{"lossPpm":10000}"#).unwrap();
        assert_eq!(
            partial,
            Impairment {
                loss_ppm: 10_000,
                ..Impairment::default()
            }
        );
        assert!(serde_json::from_str::<Impairment>(r#"{"loss":1}"#).is_err());
    }
}
