//! The span: how one testbed's LAN becomes one Ethernet segment across
//! several machines. Each machine's fabric namespace gets a vxlan device,
//! a port of its LAN bridge, whose UDP socket lives in the machine's root
//! namespace (the only thing the span opens there); broadcast and unknown
//! frames are copied to every peer machine (head-end replication: one
//! all-zeros FDB entry per peer), known unicast goes to the machine that
//! the device learned the MAC behind. Pure: this module only decides;
//! `kernel::span` makes it.
//!
//! - **VNI**: the first 32 bits of SHA-256 of `testbed-span:NAME`, reduced
//!   into 2..=16,777,215 (VNI 0 is reserved, 1 is the in-node vxlan
//!   overlay's). Every machine computes the same VNI for a testbed, and
//!   testbeds sharing machines and a port get different VNIs (the UDP
//!   socket is shared per port; the VNI tells their frames apart). A
//!   collision is refused by the kernel when the device is made.
//! - **Port**: [`DEFAULT_PORT`] = 4790 + 10 = 4800, clear of the vxlan
//!   ports in use elsewhere: 8472 (Linux's default and flannel's), 4789
//!   (IANA VXLAN, e.g. Docker, Calico) and 4790 (IANA VXLAN-GPE), which are
//!   refused.
//! - **MTU**: the LAN's MTU is the underlay's less [`OVERHEAD`] (50 bytes:
//!   outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14), e.g. 1450 on a
//!   1500-byte network; every interface on the LAN must use it.

use crate::plan::types::{FdbEntry, Iface, Mac};
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;

/// The span device's name inside the fabric namespace.
pub const DEVICE: &str = "span0";

/// The default UDP port of the span (4790 + 10).
pub const DEFAULT_PORT: u16 = 4800;

/// Ports a span refuses: other vxlan users' (Linux and flannel 8472, IANA
/// VXLAN 4789, IANA VXLAN-GPE 4790).
pub const RESERVED_PORTS: [u16; 3] = [8472, 4789, 4790];

/// Bytes a frame grows by crossing the span over IPv4.
pub const OVERHEAD: u32 = 50;

/// The smallest LAN MTU a span allows (IPv4's minimum).
const MIN_LAN_MTU: u32 = 576;

/// The span device of one machine.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanPlan {
    /// The vxlan device in the fabric namespace (no MAC: the kernel picks
    /// one; MTU: the LAN's).
    pub device: Iface,
    /// Its VXLAN network identifier.
    pub vni: u32,
    /// Its UDP port, on every machine.
    pub port: u16,
    /// This machine's address: the outer source of its frames.
    pub local: Ipv4Addr,
    /// One all-zeros entry per peer machine: broadcast and unknown unicast
    /// go to all of them.
    pub fdb: Vec<FdbEntry>,
    /// The MTU every interface on the LAN must use.
    pub mtu: u32,
}

/// Why a span cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    /// The port is another vxlan user's, or zero.
    #[error("UDP port {0} cannot carry the span: 0, 8472 (Linux and flannel vxlan), 4789 (IANA VXLAN) and 4790 (VXLAN-GPE) are refused; the default is 4800")]
    Port(u16),
    /// An address no machine can have.
    #[error("{0} is not a machine's unicast address")]
    Address(Ipv4Addr),
    /// A peer is this machine, or given twice.
    #[error("peer {0} is this machine or is listed twice")]
    Peer(Ipv4Addr),
    /// The underlay's MTU leaves too little for the LAN.
    #[error("an underlay MTU of {0} leaves less than {MIN_LAN_MTU} bytes for the LAN after the span's {OVERHEAD}")]
    Mtu(u32),
}

/// The VNI of testbed `name`'s span (see the module comment).
pub fn vni(name: &str) -> u32 {
    let digest = Sha256::digest(format!("testbed-span:{name}").as_bytes());
    let word = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    2 + word % (0x00ff_ffff - 1)
}

/// The LAN's MTU over an underlay of `underlay_mtu` bytes.
pub fn lan_mtu(underlay_mtu: u32) -> Result<u32, SpanError> {
    underlay_mtu
        .checked_sub(OVERHEAD)
        .filter(|m| *m >= MIN_LAN_MTU)
        .ok_or(SpanError::Mtu(underlay_mtu))
}

fn unicast(a: Ipv4Addr) -> Result<Ipv4Addr, SpanError> {
    if a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast() {
        return Err(SpanError::Address(a));
    }
    Ok(a)
}

/// The span of a machine's share (`plan::machines::restrict`): this
/// machine's address, every other machine's as peers, the default port,
/// over an underlay as large as the LAN plus the span's overhead. `None`
/// for a plan that is not a share.
pub fn of_share(p: &crate::plan::Plan) -> Option<Result<SpanPlan, SpanError>> {
    let me = p.machine.as_ref()?;
    let local = p.machines.iter().find(|m| &m.name == me)?.address;
    let peers: Vec<Ipv4Addr> = p
        .machines
        .iter()
        .filter(|m| &m.name != me)
        .map(|m| m.address)
        .collect();
    Some(plan(
        &p.name,
        local,
        &peers,
        DEFAULT_PORT,
        p.cluster.mtu + OVERHEAD,
    ))
}

/// Plans testbed `name`'s span on the machine at `local`, whose peers are
/// `peers` (every other machine's address), on UDP `port` over an underlay
/// of `underlay_mtu` bytes. No peers is allowed: a span of one machine.
pub fn plan(
    name: &str,
    local: Ipv4Addr,
    peers: &[Ipv4Addr],
    port: u16,
    underlay_mtu: u32,
) -> Result<SpanPlan, SpanError> {
    if port == 0 || RESERVED_PORTS.contains(&port) {
        return Err(SpanError::Port(port));
    }
    let local = unicast(local)?;
    let mtu = lan_mtu(underlay_mtu)?;
    let mut fdb: Vec<FdbEntry> = Vec::with_capacity(peers.len());
    for &p in peers {
        let p = unicast(p)?;
        if p == local || fdb.iter().any(|f| f.dst == p) {
            return Err(SpanError::Peer(p));
        }
        fdb.push(FdbEntry {
            mac: Mac([0; 6]),
            dst: p,
            dev: DEVICE.to_string(),
        });
    }
    Ok(SpanPlan {
        device: Iface {
            name: DEVICE.to_string(),
            mac: None,
            mtu,
            addresses: Vec::new(),
        },
        vni: vni(name),
        port,
        local,
        fdb,
        mtu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn plans_one_flood_entry_per_peer() {
        let p = plan(
            "demo",
            ip("192.0.2.1"),
            &[ip("192.0.2.2"), ip("192.0.2.3")],
            DEFAULT_PORT,
            1500,
        )
        .unwrap();
        assert_eq!(p.device.name, "span0");
        assert_eq!(p.device.mtu, 1450);
        assert_eq!(p.mtu, 1450);
        assert_eq!(p.port, 4800);
        assert_eq!(p.local, ip("192.0.2.1"));
        let dsts: Vec<_> = p.fdb.iter().map(|f| f.dst).collect();
        assert_eq!(dsts, [ip("192.0.2.2"), ip("192.0.2.3")]);
        assert!(p
            .fdb
            .iter()
            .all(|f| f.mac == Mac([0; 6]) && f.dev == "span0"));
    }

    #[test]
    fn vni_is_deterministic_distinct_and_in_range() {
        assert_eq!(vni("demo"), vni("demo"));
        assert_eq!(
            plan("demo", ip("10.0.0.1"), &[], 4800, 1500).unwrap().vni,
            plan("demo", ip("10.0.0.2"), &[], 4800, 1500).unwrap().vni,
            "every machine of a testbed computes the same VNI"
        );
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let v = vni(&format!("tb{i}"));
            assert!((2..=0x00ff_ffff).contains(&v), "{v}");
            seen.insert(v);
        }
        assert!(seen.len() >= 1999, "VNIs collide too often: {}", seen.len());
        // Pinned: a change would split machines running different builds.
        // (computed independently with Python's hashlib).
        assert_eq!(vni("demo"), 8_465_288);
    }

    #[test]
    fn refuses_reserved_ports() {
        for port in [0, 8472, 4789, 4790] {
            assert_eq!(
                plan("d", ip("10.0.0.1"), &[], port, 1500),
                Err(SpanError::Port(port))
            );
        }
        assert!(plan("d", ip("10.0.0.1"), &[], 4791, 1500).is_ok());
    }

    #[test]
    fn refuses_bad_addresses_and_peers() {
        let a = ip("10.0.0.1");
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255"] {
            assert_eq!(
                plan("d", ip(bad), &[], 4800, 1500),
                Err(SpanError::Address(ip(bad)))
            );
            assert_eq!(
                plan("d", a, &[ip(bad)], 4800, 1500),
                Err(SpanError::Address(ip(bad)))
            );
        }
        assert_eq!(plan("d", a, &[a], 4800, 1500), Err(SpanError::Peer(a)));
        let b = ip("10.0.0.2");
        assert_eq!(plan("d", a, &[b, b], 4800, 1500), Err(SpanError::Peer(b)));
    }

    #[test]
    fn lan_mtu_is_underlay_less_overhead() {
        assert_eq!(lan_mtu(1500), Ok(1450));
        assert_eq!(lan_mtu(9000), Ok(8950));
        assert_eq!(lan_mtu(626), Ok(576));
        assert_eq!(lan_mtu(625), Err(SpanError::Mtu(625)));
        assert_eq!(lan_mtu(10), Err(SpanError::Mtu(10)));
    }
}
