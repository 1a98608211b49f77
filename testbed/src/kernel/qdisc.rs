//! Link impairments through the kernel's queueing disciplines: a root `tbf`
//! for a bandwidth limit, a root `netem` for delay, jitter, loss,
//! duplication, reordering (and a rate of its own). rtnetlink has no
//! builders for either, so the `RTM_NEWQDISC` messages are put together here
//! from the kernel's option structs (`include/uapi/linux/pkt_sched.h`). Each
//! request goes to the namespace of the handle it is made on.

use crate::plan::types::LinkPlan;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NlasIterator, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Error, Handle};

/// `TCA_OPTIONS`, the attribute carrying a qdisc's own options.
const TCA_OPTIONS: u16 = 2;

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
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
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
fn tbf_sizes(bytes_ps: u64) -> (u32, u32) {
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
fn tbf_options(rate_bps: u64) -> Vec<TcOption> {
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
fn netem_options(imp: &LinkPlan) -> Vec<u8> {
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

/// A root qdisc message for interface `ifindex`; the kernel picks the handle.
fn root_message(ifindex: u32, attributes: Vec<TcAttribute>) -> TcMessage {
    let mut msg = TcMessage::default();
    msg.header.index = ifindex as i32;
    msg.header.parent = TcHandle::ROOT;
    msg.header.handle = TcHandle::UNSPEC;
    msg.attributes = attributes;
    msg
}

/// Sends `msg` with `flags` (and `NLM_F_REQUEST|NLM_F_ACK`) and waits for
/// the acknowledgement, returning the kernel's error if there is one.
async fn send(h: &Handle, msg: RouteNetlinkMessage, flags: u16) -> Result<(), Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut responses = h.clone().request(req)?;
    while let Some(m) = responses.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(Error::NetlinkError(e));
            }
        }
    }
    Ok(())
}

/// Creates a root qdisc; fails if the interface already has one.
async fn create_root(h: &Handle, ifindex: u32, attributes: Vec<TcAttribute>) -> Result<(), Error> {
    let msg = RouteNetlinkMessage::NewQueueDiscipline(root_message(ifindex, attributes));
    send(h, msg, NLM_F_CREATE | NLM_F_EXCL).await
}

/// The kernel's errno in a netlink error, positive.
fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Whether the kernel knows qdisc `kind` ("netem", "tbf"): asks to create
/// it as `ifindex`'s root without options. `ENOENT` ("unknown qdisc kind",
/// after the kernel has tried to load its module) means no; anything else
/// (`EINVAL` for the missing options) means yes; a qdisc that needs no
/// options is created, and deleted again. `ifindex` must have no root qdisc
/// of its own (a fresh device has the default one), or the kernel answers
/// `EEXIST` before looking the kind up.
pub async fn probe(h: &Handle, ifindex: u32, kind: &str) -> Result<bool, Error> {
    match create_root(h, ifindex, vec![TcAttribute::Kind(kind.to_string())]).await {
        Ok(()) => {
            let del = RouteNetlinkMessage::DelQueueDiscipline(root_message(ifindex, vec![]));
            send(h, del, 0).await?;
            Ok(true)
        }
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
        Err(e) if errno(&e).is_some() => Ok(true),
        Err(e) => Err(e),
    }
}

/// A root tbf qdisc limiting `ifindex` to `rate_bps` bits/s (at least 8),
/// with a burst of 4 ms at that rate (at least two full frames) and a queue
/// of another 50 ms.
pub async fn add_tbf(h: &Handle, ifindex: u32, rate_bps: u64) -> Result<(), Error> {
    if rate_bps < 8 {
        return Err(Error::InvalidNla(format!(
            "tbf rate {rate_bps} bit/s: at least 8 bit/s (1 byte/s)"
        )));
    }
    let attrs = vec![
        TcAttribute::Kind("tbf".to_string()),
        TcAttribute::Options(tbf_options(rate_bps)),
    ];
    create_root(h, ifindex, attrs).await
}

/// A root netem qdisc on `ifindex` with `imp`'s delay, jitter, loss,
/// duplication and reordering, and its rate (netem's own rate: clear it to
/// shape with [`add_tbf`] instead). The kernel's error as it is: `ENOENT`
/// when it has no netem.
pub async fn add_netem(h: &Handle, ifindex: u32, imp: &LinkPlan) -> Result<(), Error> {
    let attrs = vec![
        TcAttribute::Kind("netem".to_string()),
        TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, netem_options(imp))),
    ];
    create_root(h, ifindex, attrs).await
}

/// The nested attributes of a dumped qdisc's options. netlink-packet-route
/// does not know tbf, so it keeps the whole `TCA_OPTIONS` as one opaque
/// attribute.
fn option_bytes(attrs: &[TcAttribute]) -> Vec<u8> {
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
fn tbf_rate(options: &[u8]) -> Option<u64> {
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

/// The root qdisc kind of `ifindex` and, for tbf, its rate in bits/s.
pub async fn root(h: &Handle, ifindex: u32) -> Result<Option<(String, Option<u64>)>, Error> {
    Ok(roots(h).await?.remove(&ifindex))
}

/// The root qdisc of every interface of the namespace, by interface index,
/// from one dump: kind and, for tbf, the rate in bits/s.
pub async fn roots(
    h: &Handle,
) -> Result<std::collections::HashMap<u32, (String, Option<u64>)>, Error> {
    let mut dump = h.qdisc().get().execute();
    let mut found = std::collections::HashMap::new();
    while let Some(msg) = dump.try_next().await? {
        if msg.header.parent != TcHandle::ROOT {
            continue;
        }
        let kind = msg.attributes.iter().find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        });
        if let Some(kind) = kind {
            let rate = (kind == "tbf")
                .then(|| tbf_rate(&option_bytes(&msg.attributes)))
                .flatten();
            found.entry(msg.header.index as u32).or_insert((kind, rate));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::units::{Duration, Percent, Rate};
    use nix::sched::{setns, CloneFlags};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    const A_IP: &str = "10.231.7.1";
    const B_IP: &str = "10.231.7.2";

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Two namespaces joined by a veth (`va` in `a`, `vb` in `b`), removed
    /// again when dropped.
    struct Pair {
        a: String,
        b: String,
    }

    impl Pair {
        fn new() -> Pair {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let id = std::process::id();
            let pair = Pair {
                a: format!("qd-{id}-{n}-a"),
                b: format!("qd-{id}-{n}-b"),
            };
            ip(&["netns", "add", &pair.a]);
            ip(&["netns", "add", &pair.b]);
            let (a, b) = (pair.a.as_str(), pair.b.as_str());
            ip(&[
                "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b,
            ]);
            ip(&["-n", a, "addr", "add", &format!("{A_IP}/24"), "dev", "va"]);
            ip(&["-n", b, "addr", "add", &format!("{B_IP}/24"), "dev", "vb"]);
            ip(&["-n", a, "link", "set", "va", "up"]);
            ip(&["-n", b, "link", "set", "vb", "up"]);
            pair
        }
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            for ns in [&self.a, &self.b] {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }

    /// Runs `f` on a thread that has entered namespace `ns`.
    fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(crate::kernel::netns::path(ns)).expect("opening netns");
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    /// Runs `f` with a netlink connection opened inside namespace `ns`, on
    /// the index of its interface `dev`.
    fn with_netlink<T, F>(
        ns: &str,
        dev: &'static str,
        f: impl FnOnce(Handle, u32) -> F + Send + 'static,
    ) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        in_ns(ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let (conn, h, _) = rtnetlink::new_connection().expect("netlink");
                tokio::spawn(conn);
                let index = crate::kernel::links::index(&h, dev).await.expect("index");
                f(h, index).await
            })
        })
    }

    /// Bits/s of a TCP transfer from `a` to `b`, as received during `secs`.
    fn throughput(pair: &Pair, secs: f64) -> f64 {
        let listener = in_ns(&pair.b, || TcpListener::bind((B_IP, 0)).expect("bind"));
        let port = listener.local_addr().expect("addr").port();
        let receiver = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 16];
            let mut n = s.read(&mut buf).expect("first read") as u64;
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < secs {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k as u64,
                }
            }
            n as f64 * 8.0 / start.elapsed().as_secs_f64()
        });
        let sender = in_ns(&pair.a, move || {
            let mut s = TcpStream::connect((B_IP, port)).expect("connect");
            std::thread::spawn(move || {
                s.set_write_timeout(Some(std::time::Duration::from_secs(1)))
                    .expect("timeout");
                let buf = vec![0x5au8; 1 << 16];
                let start = Instant::now();
                while start.elapsed().as_secs_f64() < secs + 3.0 && s.write_all(&buf).is_ok() {}
            })
        });
        let bps = receiver.join().expect("receiver");
        sender.join().expect("sender");
        bps
    }

    fn tc_show(ns: &str, dev: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev])
            .output()
            .expect("running tc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn probe_tells_known_kinds() {
        let pair = Pair::new();
        let (tbf, netem, bogus, pfifo, after) = with_netlink(&pair.a, "va", |h, i| async move {
            (
                probe(&h, i, "tbf").await.expect("probe tbf"),
                probe(&h, i, "netem").await.expect("probe netem"),
                probe(&h, i, "nosuchqdisc").await.expect("probe bogus"),
                probe(&h, i, "pfifo").await.expect("probe pfifo"),
                root(&h, i).await.expect("root"),
            )
        });
        assert!(tbf, "tbf is known");
        assert!(!netem, "this kernel has no netem");
        assert!(!bogus);
        // pfifo needs no options: probing creates it, and deletes it again.
        assert!(pfifo);
        assert_eq!(after, Some(("noqueue".to_string(), None)));
    }

    #[test]
    fn tbf_limits_a_tcp_transfer() {
        let pair = Pair::new();
        let unshaped = throughput(&pair, 0.5);
        let (added, read) = with_netlink(&pair.a, "va", |h, i| async move {
            let added = add_tbf(&h, i, 20_000_000).await;
            (added, root(&h, i).await.expect("root"))
        });
        added.expect("add_tbf");
        let (kind, rate) = read.expect("a root qdisc");
        assert_eq!(kind, "tbf");
        let rate = rate.expect("tbf rate") as f64;
        assert!((rate - 20e6).abs() <= 0.2e6, "rate read back {rate}");

        let tc = tc_show(&pair.a, "va");
        let (burst, limit) = tbf_sizes(20_000_000 / 8);
        assert_eq!((burst, limit), (10_000, 135_000));
        assert!(tc.contains("qdisc tbf"), "{tc}");
        assert!(tc.contains("rate 20Mbit"), "{tc}");
        assert!(tc.contains("burst 10000b"), "{tc}");
        assert!(tc.contains("lat 50ms"), "{tc}");

        let shaped = throughput(&pair, 2.0);
        println!("unshaped {unshaped:.0} bit/s, shaped {shaped:.0} bit/s\n{tc}");
        assert!(unshaped > 40e6, "unshaped {unshaped}");
        assert!(
            (shaped - 20e6).abs() <= 0.35 * 20e6,
            "shaped transfer at {shaped} bit/s"
        );
        // A second root qdisc is refused: the caller replaces nothing by accident.
        let again = with_netlink(&pair.a, "va", |h, i| async move {
            add_tbf(&h, i, 1_000_000).await
        });
        assert_eq!(again.as_ref().map_err(errno), Err(Some(libc::EEXIST)));
    }

    #[test]
    fn netem_reports_the_kernels_error() {
        let pair = Pair::new();
        let imp = LinkPlan {
            delay: Some(Duration(20_000)),
            jitter: Some(Duration(2_000)),
            loss: Some(Percent(10_000)),
            duplicate: None,
            reorder: Some(Percent(250_000)),
            rate: Some(Rate(10_000_000)),
        };
        let res = with_netlink(&pair.a, "va", move |h, i| async move {
            add_netem(&h, i, &imp).await
        });
        assert_eq!(res.as_ref().map_err(errno), Err(Some(libc::ENOENT)));
    }

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
