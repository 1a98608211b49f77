//! Link impairments through the kernel's queueing disciplines: a root `tbf`
//! for a bandwidth limit, a root `netem` for delay, jitter, loss,
//! duplication, reordering (and a rate of its own). rtnetlink has no
//! builders for either, so the `RTM_NEWQDISC` messages are put together here
//! around the option bytes of [`options`]. Each request goes to the
//! namespace of the handle it is made on.

use crate::plan::types::LinkPlan;
use futures::{StreamExt, TryStreamExt};
use options::{netem_options, option_bytes, tbf_options, tbf_rate};
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Error, Handle};

mod options;

/// `TCA_OPTIONS`, the attribute carrying a qdisc's own options.
const TCA_OPTIONS: u16 = 2;

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

/// Removes `ifindex`'s own root qdisc (the default one comes back); none
/// is not an error.
pub async fn del_root(h: &Handle, ifindex: u32) -> Result<(), Error> {
    let del = RouteNetlinkMessage::DelQueueDiscipline(root_message(ifindex, vec![]));
    match send(h, del, 0).await {
        Err(e) if matches!(errno(&e), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
        r => r,
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
    use super::options::tbf_sizes;
    use super::*;
    use crate::topology::units::{Duration, Percent, Rate};
    use nix::sched::{setns, CloneFlags};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
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

    /// `tc QDISC-ARGS` on `va` in `a`: whether it succeeded, and its stderr.
    fn tc(pair: &Pair, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &pair.a, "tc", "qdisc"])
            .args(args)
            .output()
            .expect("running tc");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Whether this kernel has netem, asked through `tc` rather than the
    /// code under test: a netem root on `va`, deleted again. Any failure but
    /// "unknown qdisc kind" fails the test.
    fn tc_has_netem(pair: &Pair) -> bool {
        let (added, err) = tc(pair, &["add", "dev", "va", "root", "netem", "delay", "1ms"]);
        if !added {
            assert!(err.contains("qdisc kind is unknown"), "tc: {err}");
            return false;
        }
        let (deleted, err) = tc(pair, &["del", "dev", "va", "root"]);
        assert!(deleted, "tc: {err}");
        true
    }

    /// The median of 11 UDP round trips from `a` to `b`.
    fn udp_rtt(pair: &Pair) -> std::time::Duration {
        let server = in_ns(&pair.b, || UdpSocket::bind((B_IP, 0)).expect("bind"));
        let port = server.local_addr().expect("addr").port();
        let echo = std::thread::spawn(move || {
            server
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = [0u8; 8];
            for _ in 0..11 {
                let (n, from) = server.recv_from(&mut buf).expect("datagram");
                server.send_to(&buf[..n], from).expect("echo");
            }
        });
        let mut samples = in_ns(&pair.a, move || {
            let s = UdpSocket::bind((A_IP, 0)).expect("bind");
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = [0u8; 8];
            (0..11u8)
                .map(|i| {
                    let t = Instant::now();
                    s.send_to(&[i], (B_IP, port)).expect("send");
                    s.recv_from(&mut buf).expect("echoed");
                    t.elapsed()
                })
                .collect::<Vec<_>>()
        });
        echo.join().expect("echo server");
        samples.sort();
        samples[samples.len() / 2]
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
        // Either answer is right, if it is this kernel's.
        assert_eq!(netem, tc_has_netem(&pair), "netem, as tc finds it");
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
    fn netem_is_installed_with_its_delay_or_refused_as_unknown() {
        let pair = Pair::new();
        let has_netem = tc_has_netem(&pair);
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
        if !has_netem {
            // The kernel's error as it is (what `up` turns into a refusal
            // naming sch_netem), and nothing installed.
            assert_eq!(res.as_ref().map_err(errno), Err(Some(libc::ENOENT)));
            let after = with_netlink(&pair.a, "va", |h, i| async move { root(&h, i).await });
            assert_eq!(after.expect("root"), Some(("noqueue".to_string(), None)));
            return;
        }
        // The kernel took every option as encoded: tc reads them back.
        res.expect("add_netem");
        let shown = tc_show(&pair.a, "va");
        for want in ["qdisc netem", "delay 20ms", "loss 1%", "rate 10Mbit"] {
            assert!(shown.contains(want), "{want}: {shown}");
        }
        let (deleted, err) = tc(&pair, &["del", "dev", "va", "root"]);
        assert!(deleted, "tc: {err}");
        // A delay alone adds itself to the round trip, once: only `a`'s
        // side of the link delays.
        let base = udp_rtt(&pair);
        let delay = LinkPlan {
            delay: Some(Duration(20_000)),
            ..LinkPlan::default()
        };
        let read = with_netlink(&pair.a, "va", move |h, i| async move {
            add_netem(&h, i, &delay).await.expect("add_netem");
            root(&h, i).await.expect("root")
        });
        assert_eq!(read.map(|(kind, _)| kind).as_deref(), Some("netem"));
        let delayed = udp_rtt(&pair);
        let added = delayed.saturating_sub(base);
        assert!(
            added >= std::time::Duration::from_millis(19)
                && added <= std::time::Duration::from_millis(30),
            "20 ms of netem added {added:?} (base {base:?}, delayed {delayed:?})"
        );
    }
}
