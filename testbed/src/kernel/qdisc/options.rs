//! The bytes of qdisc options, pure: `tbf`'s and `netem`'s from a link
//! plan, as the kernel's option structs (`include/uapi/linux/pkt_sched.h`)
//! lay them out, and `tbf`'s rate read back from a dump. Unit-tested here;
//! `super` sends and reads them.

use crate::plan::types::LinkPlan;
use rtnetlink::packet_core::{DefaultNla, Nla, NlasIterator};
use rtnetlink::packet_route::tc::{TcAttribute, TcOption};

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;

const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;

/// `TC_LINKLAYER_ETHERNET`, what `tc` puts in a rate spec: sizes are
/// counted as they are, no ATM cells, and no rate table is needed.
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// Two full-size Ethernet frames: the smallest tbf burst we configure.
const MIN_BURST: u64 = 2 * 1514;
/// How long a full tbf queue takes to drain.
const TBF_LATENCY_NS: u64 = 50_000_000;
/// netem's queue, in packets. `tc`'s default of 1000 drops packets as soon as
/// a delayed link carries more than 1000 packets per delay (12 Mbit/s at
/// 1 s, 120 Mbit/s at 100 ms), well inside what a testbed link carries.
const NETEM_LIMIT: u32 = 10_000;

/// Nanoseconds in psched ticks, the unit of the older option fields
/// (`PSCHED_TICKS2NS(x)` is `x << PSCHED_SHIFT`, `PSCHED_SHIFT` being 6).
fn ns_to_ticks(ns: u64) -> u32 {
    u32::try_from(ns >> 6).unwrap_or(u32::MAX)
}

/// A share in millionths (1% = 10 000) as the kernel's probability: a u32
/// out of `u32::MAX`.
fn probability(millionths: u32) -> u32 {
    let p = u64::from(millionths.min(1_000_000)) * u64::from(u32::MAX) / 1_000_000;
    u32::try_from(p).unwrap_or(u32::MAX)
}

/// One netlink attribute, padded to 4 bytes.
pub(super) fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// `struct tc_ratespec` for `bytes_ps` bytes/s (saturated; the full rate
/// then goes in a `*_RATE64` attribute).
fn ratespec(bytes_ps: u64) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[1] = TC_LINKLAYER_ETHERNET;
    let rate = u32::try_from(bytes_ps).unwrap_or(u32::MAX);
    r[8..12].copy_from_slice(&rate.to_ne_bytes());
    r
}

/// tbf's sizes for a rate of `bytes_ps` bytes/s: the burst (4 ms worth, at
/// least two full frames) and the queue limit in bytes (the burst plus
/// 50 ms worth), as `tc qdisc add … tbf burst B latency 50ms` computes it.
pub(super) fn tbf_sizes(bytes_ps: u64) -> (u32, u32) {
    let burst = (bytes_ps / 250).max(MIN_BURST);
    let queued = u128::from(bytes_ps) * u128::from(TBF_LATENCY_NS) / 1_000_000_000;
    let limit = u128::from(burst) + queued;
    (
        u32::try_from(burst).unwrap_or(u32::MAX),
        u32::try_from(limit).unwrap_or(u32::MAX),
    )
}

/// tbf's options for `rate_bps` bits/s: `TCA_TBF_PARMS` (`struct
/// tc_tbf_qopt`: rate, peakrate (none), limit, buffer, mtu), `TCA_TBF_BURST`
/// (which the kernel prefers to `buffer`, a time in ticks) and, when the
/// rate does not fit the u32 of the rate spec, `TCA_TBF_RATE64`.
pub(super) fn tbf_options(rate_bps: u64) -> Vec<TcOption> {
    let bytes_ps = rate_bps / 8;
    let (burst, limit) = tbf_sizes(bytes_ps);
    let buffer_ns = u128::from(burst) * 1_000_000_000 / u128::from(bytes_ps.max(1));
    let buffer = ns_to_ticks(u64::try_from(buffer_ns).unwrap_or(u64::MAX));
    let mut parms = Vec::with_capacity(36);
    parms.extend_from_slice(&ratespec(bytes_ps));
    parms.extend_from_slice(&[0u8; 12]); // no peak rate
    parms.extend_from_slice(&limit.to_ne_bytes());
    parms.extend_from_slice(&buffer.to_ne_bytes());
    parms.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only with a peak rate
    let mut opts = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms)),
        TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
    ];
    if bytes_ps > u64::from(u32::MAX) {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            bytes_ps.to_ne_bytes().to_vec(),
        )));
    }
    opts
}

/// netem's `TCA_OPTIONS` payload: unlike other qdiscs', a bare `struct
/// tc_netem_qopt` (latency, limit, loss, gap, duplicate, jitter) followed by
/// the nested attributes. Delay and jitter go both in ticks (the struct) and
/// in nanoseconds (`TCA_NETEM_LATENCY64`/`JITTER64`, which kernels since 4.15
/// use instead). Reordering is `tc`'s `reorder P gap 1`: each packet leaves
/// undelayed with probability P (so it needs a delay to show). Jitter is
/// uniform (no distribution table). The rate is netem's own.
pub(super) fn netem_options(imp: &LinkPlan) -> Vec<u8> {
    let latency_ns = imp.delay.map_or(0, |d| d.0.saturating_mul(1000));
    let jitter_ns = imp.jitter.map_or(0, |d| d.0.saturating_mul(1000));
    let reorder = imp.reorder.map_or(0, |p| probability(p.0));
    let mut out = Vec::new();
    for field in [
        ns_to_ticks(latency_ns),
        NETEM_LIMIT,
        imp.loss.map_or(0, |p| probability(p.0)),
        u32::from(reorder > 0), // gap
        imp.duplicate.map_or(0, |p| probability(p.0)),
        ns_to_ticks(jitter_ns),
    ] {
        out.extend_from_slice(&field.to_ne_bytes());
    }
    let as_i64 = |ns: u64| i64::try_from(ns).unwrap_or(i64::MAX).to_ne_bytes();
    if latency_ns > 0 {
        out.extend(nla(TCA_NETEM_LATENCY64, &as_i64(latency_ns)));
    }
    if jitter_ns > 0 {
        out.extend(nla(TCA_NETEM_JITTER64, &as_i64(jitter_ns)));
    }
    if reorder > 0 {
        // struct tc_netem_reorder: probability, correlation
        let mut r = reorder.to_ne_bytes().to_vec();
        r.extend_from_slice(&0u32.to_ne_bytes());
        out.extend(nla(TCA_NETEM_REORDER, &r));
    }
    if let Some(rate) = imp.rate {
        let bytes_ps = rate.0 / 8;
        // struct tc_netem_rate: rate, packet_overhead, cell_size, cell_overhead
        let mut r = u32::try_from(bytes_ps)
            .unwrap_or(u32::MAX)
            .to_ne_bytes()
            .to_vec();
        r.extend_from_slice(&[0u8; 12]);
        out.extend(nla(TCA_NETEM_RATE, &r));
        if bytes_ps > u64::from(u32::MAX) {
            out.extend(nla(TCA_NETEM_RATE64, &bytes_ps.to_ne_bytes()));
        }
    }
    out
}

/// The nested attributes of a dumped qdisc's options. netlink-packet-route
/// does not know tbf, so it keeps the whole `TCA_OPTIONS` as one opaque
/// attribute.
pub(super) fn option_bytes(attrs: &[TcAttribute]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in attrs {
        if let TcAttribute::Options(opts) = a {
            for o in opts {
                if let TcOption::Other(n) = o {
                    let mut v = vec![0u8; n.value_len()];
                    n.emit_value(&mut v);
                    out.extend(v);
                }
            }
        }
    }
    out
}

/// tbf's rate in bits/s from its dumped options.
pub(super) fn tbf_rate(options: &[u8]) -> Option<u64> {
    let mut rate = None;
    let mut rate64 = None;
    for a in NlasIterator::new(options).flatten() {
        let v = a.value();
        match a.kind() {
            TCA_TBF_PARMS if v.len() >= 12 => {
                rate = Some(u64::from(u32::from_ne_bytes(v[8..12].try_into().ok()?)));
            }
            TCA_TBF_RATE64 if v.len() >= 8 => {
                rate64 = Some(u64::from_ne_bytes(v[0..8].try_into().ok()?));
            }
            _ => {}
        }
    }
    rate64.or(rate).map(|b| b.saturating_mul(8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::units::{Duration, Percent, Rate};

    #[test]
    fn tbf_options_encode_rate_and_sizes() {
        let raw = |opts: Vec<TcOption>| -> Vec<(u16, Vec<u8>)> {
            opts.iter()
                .map(|o| {
                    let mut v = vec![0u8; o.value_len()];
                    o.emit_value(&mut v);
                    (o.kind(), v)
                })
                .collect()
        };
        let u32_at = |v: &[u8], at: usize| u32::from_ne_bytes(v[at..at + 4].try_into().unwrap());
        let opts = raw(tbf_options(20_000_000));
        assert_eq!(opts.len(), 2);
        let (kind, parms) = &opts[0];
        assert_eq!((*kind, parms.len()), (TCA_TBF_PARMS, 36));
        assert_eq!(parms[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(u32_at(parms, 8), 2_500_000); // rate, bytes/s
        assert_eq!(u32_at(parms, 20), 0); // peak rate
        assert_eq!(u32_at(parms, 24), 135_000); // limit
        assert_eq!(u32_at(parms, 28), 4_000_000 >> 6); // buffer: 4 ms in ticks
        assert_eq!(opts[1], (TCA_TBF_BURST, 10_000u32.to_ne_bytes().to_vec()));
        // Small rates get two frames of burst.
        assert_eq!(tbf_sizes(1000).0, 3028);
        // 100 Gbit/s does not fit the rate spec's u32 bytes/s.
        let opts = raw(tbf_options(100_000_000_000));
        assert_eq!(u32_at(&opts[0].1, 8), u32::MAX);
        assert_eq!(
            opts[2],
            (TCA_TBF_RATE64, 12_500_000_000u64.to_ne_bytes().to_vec())
        );
        let mut dumped = Vec::new();
        for (k, v) in &opts {
            dumped.extend(nla(*k, v));
        }
        assert_eq!(tbf_rate(&dumped), Some(100_000_000_000));
    }

    #[test]
    fn netem_options_encode_the_plan() {
        let imp = LinkPlan {
            delay: Some(Duration(20_000)),
            jitter: Some(Duration(2_000)),
            loss: Some(Percent(10_000)),
            duplicate: Some(Percent(1_000_000)),
            reorder: Some(Percent(250_000)),
            rate: Some(Rate(10_000_000)),
        };
        let v = netem_options(&imp);
        let u32_at = |at: usize| u32::from_ne_bytes(v[at..at + 4].try_into().unwrap());
        assert_eq!(u32_at(0), 20_000_000 >> 6); // latency, ticks
        assert_eq!(u32_at(4), NETEM_LIMIT);
        assert_eq!(u32_at(8), 42_949_672); // 1%
        assert_eq!(u32_at(12), 1); // gap
        assert_eq!(u32_at(16), u32::MAX); // 100%
        assert_eq!(u32_at(20), 2_000_000 >> 6); // jitter, ticks
        let attrs: Vec<(u16, Vec<u8>)> = NlasIterator::new(&v[24..])
            .map(|a| {
                let a = a.expect("well-formed attribute");
                (a.kind(), a.value().to_vec())
            })
            .collect();
        let mut reorder = (u32::MAX / 4).to_ne_bytes().to_vec();
        reorder.extend([0u8; 4]);
        let mut rate = 1_250_000u32.to_ne_bytes().to_vec();
        rate.extend([0u8; 12]);
        assert_eq!(
            attrs,
            vec![
                (TCA_NETEM_LATENCY64, 20_000_000i64.to_ne_bytes().to_vec()),
                (TCA_NETEM_JITTER64, 2_000_000i64.to_ne_bytes().to_vec()),
                (TCA_NETEM_REORDER, reorder),
                (TCA_NETEM_RATE, rate),
            ]
        );
        // Nothing asked, nothing but the struct.
        assert_eq!(netem_options(&LinkPlan::default()).len(), 24);
    }
}
