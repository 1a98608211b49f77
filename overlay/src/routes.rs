//! Longest-prefix-match routing from overlay destinations to the public
//! (underlay) address of the node whose lease covers them.
//!
//! The table keeps one hash map per prefix length in use, probed from the
//! longest length to the shortest: a lookup costs one hash probe per distinct
//! length (in a flannel network every lease has the same length, so one),
//! whatever the number of leases, and allocates nothing. The hash is a
//! multiplicative one on the masked address, not SipHash: the keys are not
//! attacker-chosen (they are the registry's leases).

use crate::cidr::Ipv4Net;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

/// A fast hasher for `u32` keys (Fibonacci multiplication, high bits folded
/// down so that the low bits hashbrown indexes by are well mixed).
#[derive(Default, Clone, Copy)]
pub struct U32Hasher(u64);

impl Hasher for U32Hasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

type FastMap<V> = HashMap<u32, V, BuildHasherDefault<U32Hasher>>;

#[derive(Clone, Debug)]
struct Level {
    len: u8,
    mask: u32,
    routes: FastMap<Ipv4Addr>,
}

/// A longest-prefix-match table of IPv4 prefixes to next hops.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Non-empty levels, longest prefix first.
    levels: Vec<Level>,
    count: usize,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// A table of `(prefix, next hop)` pairs; a prefix given twice keeps the
    /// last next hop.
    pub fn from_routes<I: IntoIterator<Item = (Ipv4Net, Ipv4Addr)>>(routes: I) -> RouteTable {
        let mut t = RouteTable::new();
        for (net, hop) in routes {
            t.insert(net, hop);
        }
        t
    }

    /// Adds or replaces the route for `net`; returns the next hop it replaced.
    pub fn insert(&mut self, net: Ipv4Net, hop: Ipv4Addr) -> Option<Ipv4Addr> {
        let len = net.prefix_len();
        let i = match self.levels.binary_search_by(|l| len.cmp(&l.len)) {
            Ok(i) => i,
            Err(i) => {
                self.levels.insert(
                    i,
                    Level {
                        len,
                        mask: mask(len),
                        routes: FastMap::default(),
                    },
                );
                i
            }
        };
        let old = self.levels[i].routes.insert(u32::from(net.network()), hop);
        if old.is_none() {
            self.count += 1;
        }
        old
    }

    /// Removes the route for exactly `net`; returns its next hop.
    pub fn remove(&mut self, net: &Ipv4Net) -> Option<Ipv4Addr> {
        let len = net.prefix_len();
        let i = self.levels.binary_search_by(|l| len.cmp(&l.len)).ok()?;
        let old = self.levels[i].routes.remove(&u32::from(net.network()))?;
        self.count -= 1;
        if self.levels[i].routes.is_empty() {
            self.levels.remove(i);
        }
        Some(old)
    }

    /// The next hop of the longest prefix covering `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.lookup_u32(u32::from(dst))
    }

    /// [`RouteTable::lookup`] on a host-order address.
    #[inline]
    pub fn lookup_u32(&self, dst: u32) -> Option<Ipv4Addr> {
        for level in &self.levels {
            if let Some(hop) = level.routes.get(&(dst & level.mask)) {
                return Some(*hop);
            }
        }
        None
    }

    /// The longest prefix covering `dst` and its next hop.
    pub fn lookup_prefix(&self, dst: Ipv4Addr) -> Option<(Ipv4Net, Ipv4Addr)> {
        let d = u32::from(dst);
        self.levels.iter().find_map(|l| {
            l.routes
                .get(&(d & l.mask))
                .map(|hop| (Ipv4Net::new(Ipv4Addr::from(d & l.mask), l.len), *hop))
        })
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every route, longest prefixes first (in no particular order within a length).
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Net, Ipv4Addr)> + '_ {
        self.levels.iter().flat_map(|l| {
            l.routes
                .iter()
                .map(move |(a, h)| (Ipv4Net::new(Ipv4Addr::from(*a), l.len), *h))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::from_routes([
            (net("10.244.0.0/16"), ip("192.168.0.1")),
            (net("10.244.2.0/24"), ip("192.168.0.2")),
            (net("10.244.2.128/25"), ip("192.168.0.3")),
            (net("0.0.0.0/0"), ip("192.168.0.9")),
        ]);
        assert_eq!(t.len(), 4);
        assert_eq!(t.lookup(ip("10.244.2.200")), Some(ip("192.168.0.3")));
        assert_eq!(t.lookup(ip("10.244.2.1")), Some(ip("192.168.0.2")));
        assert_eq!(t.lookup(ip("10.244.3.1")), Some(ip("192.168.0.1")));
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(ip("192.168.0.9")));
        assert_eq!(
            t.lookup_prefix(ip("10.244.2.1")),
            Some((net("10.244.2.0/24"), ip("192.168.0.2")))
        );
        assert_eq!(t.remove(&net("10.244.2.128/25")), Some(ip("192.168.0.3")));
        assert_eq!(t.lookup(ip("10.244.2.200")), Some(ip("192.168.0.2")));
        assert_eq!(t.remove(&net("0.0.0.0/0")), Some(ip("192.168.0.9")));
        assert_eq!(t.lookup(ip("8.8.8.8")), None);
        assert_eq!(t.remove(&net("0.0.0.0/0")), None);
        assert_eq!(
            t.insert(net("10.244.0.0/16"), ip("192.168.0.5")),
            Some(ip("192.168.0.1"))
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.iter().count(), 2);
        assert_eq!(t.lookup(ip("10.244.3.1")), Some(ip("192.168.0.5")));
        let host = RouteTable::from_routes([(net("10.1.1.1/32"), ip("1.1.1.1"))]);
        assert_eq!(host.lookup(ip("10.1.1.1")), Some(ip("1.1.1.1")));
        assert_eq!(host.lookup(ip("10.1.1.2")), None);
    }

    /// Random tables against a linear scan.
    #[test]
    fn matches_a_linear_scan() {
        let mut s = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..50 {
            let mut t = RouteTable::new();
            let mut list: Vec<(Ipv4Net, Ipv4Addr)> = Vec::new();
            for _ in 0..(next() % 200) {
                // Cluster the prefixes so that they nest often.
                let addr = 0x0af4_0000 | (next() as u32 & 0x0000_ffff);
                let len = [8u8, 16, 20, 24, 24, 24, 26, 32][(next() % 8) as usize];
                let n = Ipv4Net::new(Ipv4Addr::from(addr), len);
                let hop = Ipv4Addr::from(next() as u32);
                t.insert(n, hop);
                list.retain(|(m, _)| *m != n);
                list.push((n, hop));
            }
            for _ in 0..(next() % 20) {
                if list.is_empty() {
                    break;
                }
                let (n, hop) = list.remove((next() as usize) % list.len());
                assert_eq!(t.remove(&n), Some(hop));
            }
            assert_eq!(t.len(), list.len());
            for _ in 0..2000 {
                let d = Ipv4Addr::from(0x0af4_0000 | (next() as u32 & 0x0000_ffff));
                let expect = list
                    .iter()
                    .filter(|(n, _)| n.contains(d))
                    .max_by_key(|(n, _)| n.prefix_len())
                    .map(|(_, h)| *h);
                assert_eq!(t.lookup(d), expect, "{d}");
            }
        }
    }
}
