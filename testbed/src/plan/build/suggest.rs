//! Advice computed from the file's own values: a network of the same size
//! that the others leave free, a larger network at the same address, a node
//! subnet length that fits the nodes and their pods, a range at the top of
//! the LAN for external IPs. Pure functions; messages use them in "e.g.".

use crate::topology::decode::derived_lb_cidr;
use overlay::Ipv4Net;
use std::net::Ipv4Addr;

/// How many candidates a search looks at before it gives up.
const MAX_TRIES: u64 = 1 << 16;

/// The private range (RFC 1918) that holds `net`, else the whole space.
fn space_of(net: Ipv4Net) -> Ipv4Net {
    [
        Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8),
        Ipv4Net::new(Ipv4Addr::new(172, 16, 0, 0), 12),
        Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16),
    ]
    .into_iter()
    .find(|s| s.covers(&net))
    .unwrap_or(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0))
}

/// The first network of `net`'s size, from `net` upwards (wrapping inside
/// the private range that holds it), that shares no address with `avoid`.
pub(super) fn free_like(net: Ipv4Net, avoid: &[Ipv4Net]) -> Option<Ipv4Net> {
    let space = space_of(net);
    let len = net.prefix_len();
    let count = space.subnet_count(len);
    let start = space.offset_of(net.network()).unwrap_or(0) / net.size();
    (0..count.min(MAX_TRIES))
        .filter_map(|k| space.subnet(len, (start + k) % count))
        .find(|c| !avoid.iter().any(|a| a.overlaps(c)))
}

/// `net` made larger (prefix `len`, at most `net`'s own) at the same
/// address, or, when that would share addresses with `avoid`, the first
/// free network of that size.
pub(super) fn widened(net: Ipv4Net, len: u8, avoid: &[Ipv4Net]) -> Option<Ipv4Net> {
    let wide = Ipv4Net::new(net.network(), len.min(net.prefix_len()));
    free_like(wide, avoid)
}

/// The smallest prefix length whose network has at least `hosts` host
/// addresses, if any.
pub(super) fn len_for_hosts(hosts: u64) -> Option<u8> {
    (0..=32u8)
        .rev()
        .find(|&l| Ipv4Net::new(Ipv4Addr::UNSPECIFIED, l).host_count() >= hosts)
}

/// Pods a node subnet of prefix `len` holds (its first address is the
/// bridge's).
pub(super) fn pods_per_subnet(len: u8) -> u64 {
    Ipv4Net::new(Ipv4Addr::UNSPECIFIED, len)
        .host_count()
        .saturating_sub(1)
}

/// Node subnets a pod network holds with prefix `len` (flannel leaves the
/// first and last unused).
pub(super) fn subnets_in(pod_cidr: Ipv4Net, len: u8) -> u64 {
    if len > 30 || len < pod_cidr.prefix_len() + 2 {
        return 0;
    }
    pod_cidr.subnet_count(len).saturating_sub(2)
}

/// The node subnet length closest to `len` (longer first, then shorter)
/// that gives `nodes` nodes a subnet of at least `pods` pods each in
/// `pod_cidr`.
pub(super) fn subnet_len_for(pod_cidr: Ipv4Net, len: u8, nodes: u64, pods: u64) -> Option<u8> {
    let fits = |l: u8| subnets_in(pod_cidr, l) >= nodes && pods_per_subnet(l) >= pods;
    ((len + 1)..=30).chain((0..len).rev()).find(|&l| fits(l))
}

/// The prefix length of a pod network that holds `nodes` subnets of prefix
/// `len`.
pub(super) fn pod_len_for(len: u8, nodes: u64) -> u8 {
    (0..=len.saturating_sub(2))
        .rev()
        .find(|&p| (1u64 << (len - p)).saturating_sub(2) >= nodes)
        .unwrap_or(0)
}

/// Addresses of `range` that are host addresses of `lan` (two networks
/// either nest or share nothing).
pub(super) fn hosts_of(range: Ipv4Net, lan: Ipv4Net) -> u64 {
    if range.covers(&lan) {
        return lan.host_count();
    }
    if !lan.covers(&range) {
        return 0;
    }
    let edges = [lan.network(), lan.broadcast()];
    let not_hosts = edges
        .iter()
        .filter(|ip| range.contains(**ip) && !lan.is_host(**ip))
        .count() as u64;
    range.size() - not_hosts
}

/// The smallest range at the top of `lan` with `wanted` external IPs that
/// still leaves `machines` addresses for nodes and hosts.
pub(super) fn top_range(lan: Ipv4Net, wanted: u64, machines: u64) -> Option<Ipv4Net> {
    (lan.prefix_len()..=32)
        .rev()
        .filter_map(|l| lan.subnet(l, lan.subnet_count(l).saturating_sub(1)))
        .find(|r| hosts_of(*r, lan) >= wanted)
        .filter(|r| lan.host_count() - hosts_of(*r, lan) >= machines)
}

/// The smallest LAN at `lan`'s address (or free of `avoid`) that holds
/// `machines` nodes and hosts beside its external IPs: the derived top range
/// when `lb` is `None`, else `lb` itself.
pub(super) fn lan_for(
    lan: Ipv4Net,
    lb: Option<Ipv4Net>,
    machines: u64,
    avoid: &[Ipv4Net],
) -> Option<Ipv4Net> {
    (0..lan.prefix_len()).rev().find_map(|l| {
        let wide = widened(lan, l, avoid)?;
        let range = lb.unwrap_or_else(|| derived_lb_cidr(wide));
        let room = wide.host_count().saturating_sub(hosts_of(range, wide));
        (room >= machines && wide.covers(&range)).then_some(wide)
    })
}

/// A larger LAN at `lan`'s address (or free of `avoid`) and a range at its
/// top with `wanted` external IPs, leaving `machines` addresses.
pub(super) fn lan_with_range(
    lan: Ipv4Net,
    wanted: u64,
    machines: u64,
    avoid: &[Ipv4Net],
) -> Option<(Ipv4Net, Ipv4Net)> {
    (0..lan.prefix_len()).rev().find_map(|l| {
        let wide = widened(lan, l, avoid)?;
        Some((wide, top_range(wide, wanted, machines)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_free_network_of_the_same_size() {
        let avoid = [net("10.244.0.0/16"), net("10.96.0.0/24")];
        assert_eq!(
            free_like(net("10.96.0.0/16"), &avoid),
            Some(net("10.97.0.0/16"))
        );
        assert_eq!(
            free_like(net("10.96.0.0/16"), &[]),
            Some(net("10.96.0.0/16"))
        );
        // Wraps inside its private range.
        let avoid = [net("10.255.0.0/16")];
        assert_eq!(
            free_like(net("10.255.0.0/16"), &avoid),
            Some(net("10.0.0.0/16"))
        );
        assert_eq!(free_like(net("10.0.0.0/8"), &[net("10.1.0.0/16")]), None);
        let got = free_like(net("192.168.96.0/24"), &[net("192.168.0.0/17")]);
        assert_eq!(got, Some(net("192.168.128.0/24")));
    }

    #[test]
    fn sizes_that_fit() {
        assert_eq!(len_for_hosts(254), Some(24));
        assert_eq!(len_for_hosts(255), Some(23));
        assert_eq!(pods_per_subnet(24), 253);
        assert_eq!(subnets_in(net("10.244.0.0/22"), 24), 2);
        assert_eq!(subnets_in(net("10.244.0.0/22"), 25), 6);
        // 4 nodes of 10 pods in a /22: a /25 is the nearest that fits.
        assert_eq!(subnet_len_for(net("10.244.0.0/22"), 24, 4, 10), Some(25));
        // 300 pods a node: nothing in a /22 holds 4 such nodes.
        assert_eq!(subnet_len_for(net("10.244.0.0/22"), 24, 4, 300), None);
        // 300 pods a node on 2 nodes of a /16: a /23.
        assert_eq!(subnet_len_for(net("10.244.0.0/16"), 24, 2, 300), Some(23));
        assert_eq!(pod_len_for(24, 4), 21);
        assert_eq!(pod_len_for(24, 254), 16);
        assert_eq!(pod_len_for(24, 255), 15);
    }

    #[test]
    fn host_addresses_of_a_range() {
        let lan = net("10.77.0.0/24");
        assert_eq!(hosts_of(net("10.77.0.240/28"), lan), 15);
        assert_eq!(hosts_of(net("10.77.0.0/28"), lan), 15);
        assert_eq!(hosts_of(net("10.77.0.16/28"), lan), 16);
        assert_eq!(hosts_of(net("10.77.0.255/32"), lan), 0);
        assert_eq!(hosts_of(net("10.77.0.0/16"), lan), 254);
        assert_eq!(hosts_of(net("10.78.0.0/28"), lan), 0);
        assert_eq!(hosts_of(net("10.77.0.0/24"), net("10.77.0.0/31")), 2);
        // The same as counting one by one.
        for len in 24..=32u8 {
            for i in [0u64, 1, 7] {
                let Some(r) = lan.subnet(len, i.min(lan.subnet_count(len) - 1)) else {
                    continue;
                };
                let slow = (0..r.size())
                    .filter_map(|k| r.nth(k))
                    .filter(|ip| lan.is_host(*ip))
                    .count();
                assert_eq!(hosts_of(r, lan), slow as u64, "{r}");
            }
        }
    }

    #[test]
    fn ranges_on_the_lan() {
        let lan = net("10.77.0.0/24");
        assert_eq!(top_range(lan, 15, 2), Some(net("10.77.0.240/28")));
        assert_eq!(top_range(lan, 16, 2), Some(net("10.77.0.224/27")));
        assert_eq!(top_range(lan, 1, 2), Some(net("10.77.0.254/31")));
        assert_eq!(top_range(lan, 200, 100), None);
        // 250 machines do not fit a /24 beside its top /28; a /23 holds them.
        assert_eq!(lan_for(lan, None, 250, &[]), Some(net("10.77.0.0/23")));
        assert_eq!(
            lan_with_range(net("10.77.0.0/28"), 20, 10, &[]),
            Some((net("10.77.0.0/26"), net("10.77.0.32/27")))
        );
        let lb = net("10.77.0.0/25");
        assert_eq!(lan_for(lan, Some(lb), 200, &[]), Some(net("10.77.0.0/23")));
    }
}
