//! IPv4 prefixes (`10.244.0.0/16`): parsing, containment, overlap and
//! address arithmetic. Only IPv4 exists in version 1 of the topology format.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: an address whose host bits are all zero, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: u32,
    len: u8,
}

/// Why a text is not an IPv4 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not in ADDRESS/LENGTH form, e.g. 10.244.0.0/16")]
    Form(String),
    #[error("`{0}` is an IPv6 prefix; only IPv4 is supported")]
    Ipv6(String),
    #[error("`{0}` is not an IPv4 address")]
    Address(String),
    #[error("prefix length `{0}` is not a number from 0 to 32")]
    Length(String),
    #[error("`{given}` has host bits set; the network is {network}")]
    HostBits { given: String, network: Ipv4Net },
}

impl Ipv4Net {
    /// The network `addr/len`; host bits of `addr` are cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Ipv4Net {
        let len = len.min(32);
        Ipv4Net {
            addr: u32::from(addr) & mask(len),
            len,
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The number of addresses, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// The last address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr | !mask(self.len))
    }

    /// The `n`-th address counting from the network address, if inside.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(self.addr.wrapping_add(n as u32)))
    }

    /// The offset of `ip` from the network address, if `ip` is inside.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| u64::from(u32::from(ip).wrapping_sub(self.addr)))
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == self.addr
    }

    /// Whether `ip` is a usable host address: inside, and neither the network
    /// nor the broadcast address (a /31 or /32 has only usable addresses).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.len >= 31 || (ip != self.network() && ip != self.broadcast()))
    }

    /// The number of usable host addresses.
    pub fn host_count(&self) -> u64 {
        if self.len >= 31 {
            self.size()
        } else {
            self.size() - 2
        }
    }

    /// Whether `other` lies entirely inside this network.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        other.len >= self.len && self.contains(other.network())
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The `i`-th subnet of length `len` inside this network.
    pub fn subnet(&self, len: u8, i: u64) -> Option<Ipv4Net> {
        if len < self.len || len > 32 || i >= 1u64 << (len - self.len) {
            return None;
        }
        let step = 1u64 << (32 - u32::from(len));
        let addr = u64::from(self.addr) + i * step;
        Some(Ipv4Net {
            addr: addr as u32,
            len,
        })
    }

    /// How many subnets of length `len` fit.
    pub fn subnet_count(&self, len: u8) -> u64 {
        if len < self.len || len > 32 {
            0
        } else {
            1u64 << (len - self.len)
        }
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;

    /// Parses `A.B.C.D/LEN`; host bits must be zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            if s.contains(':') {
                CidrError::Ipv6(s.to_string())
            } else {
                CidrError::Form(s.to_string())
            }
        })?;
        if addr.contains(':') {
            return Err(CidrError::Ipv6(s.to_string()));
        }
        let ip: Ipv4Addr = addr
            .parse()
            .map_err(|_| CidrError::Address(addr.to_string()))?;
        let len: u8 = match len.parse() {
            Ok(n) if n <= 32 && !len.starts_with('+') => n,
            _ => return Err(CidrError::Length(len.to_string())),
        };
        let net = Ipv4Net::new(ip, len);
        if net.network() != ip {
            return Err(CidrError::HostBits {
                given: s.to_string(),
                network: net,
            });
        }
        Ok(net)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let n: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.244.0.0/16");
        assert_eq!(n.size(), 65536);
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 244, 255, 255));
        assert_eq!(n.subnet(24, 1).unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(n.subnet_count(24), 256);
        assert!(n.subnet(24, 256).is_none());
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(matches!(
            "10.244.1.0/16".parse::<Ipv4Net>(),
            Err(CidrError::HostBits { .. })
        ));
        assert!(matches!(
            "fd00::/8".parse::<Ipv4Net>(),
            Err(CidrError::Ipv6(_))
        ));
        assert!(matches!(
            "10.0.0.0".parse::<Ipv4Net>(),
            Err(CidrError::Form(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Ipv4Net>(),
            Err(CidrError::Length(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Ipv4Net>(),
            Err(CidrError::Address(_))
        ));
    }

    #[test]
    fn overlap_and_hosts() {
        let a: Ipv4Net = "192.168.96.0/24".parse().unwrap();
        let b: Ipv4Net = "192.168.96.240/28".parse().unwrap();
        assert!(a.covers(&b) && a.overlaps(&b) && b.overlaps(&a) && !b.covers(&a));
        assert!(!a.is_host(a.network()) && !a.is_host(a.broadcast()));
        assert!(a.is_host(Ipv4Addr::new(192, 168, 96, 1)));
        assert_eq!(a.host_count(), 254);
    }
}
