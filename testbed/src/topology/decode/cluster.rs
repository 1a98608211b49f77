//! The `cluster` section: its fields, their defaults and their limits.

use super::{Decoder, Obj};
use crate::topology::model::*;
use overlay::{Backend, Ipv4Net};
use proxy::Mode;
use std::net::Ipv4Addr;

/// The defaults of the `cluster` section.
pub mod defaults {
    /// `cluster.podCIDR`.
    pub const POD_CIDR: &str = "10.244.0.0/16";
    /// `cluster.subnetLen`.
    pub const SUBNET_LEN: u8 = 24;
    /// `cluster.serviceCIDR`.
    pub const SERVICE_CIDR: &str = "10.96.0.0/16";
    /// `cluster.underlayCIDR`.
    pub const UNDERLAY_CIDR: &str = "192.168.96.0/24";
    /// `cluster.loadBalancerCIDR`.
    pub const LB_CIDR: &str = "192.168.96.240/28";
    /// `cluster.mtu`.
    pub const MTU: u32 = 1500;
}

/// Limits of `cluster.mtu`.
pub const MTU_RANGE: (u32, u32) = (576, 9000);

const CLUSTER: &[&str] = &[
    "podCIDR",
    "subnetLen",
    "serviceCIDR",
    "underlayCIDR",
    "loadBalancerCIDR",
    "mtu",
    "overlay",
    "proxy",
];

impl Decoder<'_> {
    fn cidr(&mut self, obj: &Obj, key: &str, default: &str) -> Sp<Ipv4Net> {
        let parsed = obj.get(key).and_then(|(n, p)| {
            self.parsed::<Ipv4Net>(n, &p, &format!("`{key}`"), "write an IPv4 network as ADDRESS/LENGTH with the host bits zero, e.g. 10.244.0.0/16")
        });
        parsed.unwrap_or_else(|| {
            let value = default
                .parse()
                .unwrap_or(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0));
            Sp::new(value, obj.key_at(key))
        })
    }

    pub(super) fn cluster(&mut self, top: &Obj) -> Cluster {
        let (node, path) = match top.get("cluster") {
            Some((n, p)) => (Some(n), p),
            None => (None, "cluster".to_string()),
        };
        let obj = node
            .and_then(|n| self.obj(n, &path, "`cluster`", CLUSTER))
            .unwrap_or(Obj {
                entries: &[],
                path: path.clone(),
                pos: top.key_at("cluster").pos,
            });
        let subnet_len = obj
            .get("subnetLen")
            .and_then(|(n, p)| {
                self.int(
                    n,
                    &p,
                    "`subnetLen`",
                    0,
                    32,
                    "subnetLen is a prefix length from 2 more than podCIDR's up to 30, e.g. 24",
                )
            })
            .map(|s| Sp::new(s.value as u8, s.at))
            .unwrap_or_else(|| Sp::new(defaults::SUBNET_LEN, obj.key_at("subnetLen")));
        let mtu = obj
            .get("mtu")
            .and_then(|(n, p)| {
                self.int(
                    n,
                    &p,
                    "`mtu`",
                    i64::from(MTU_RANGE.0),
                    i64::from(MTU_RANGE.1),
                    "the underlay MTU is from 576 to 9000 bytes; 1500 is Ethernet's",
                )
            })
            .map(|s| Sp::new(s.value as u32, s.at))
            .unwrap_or_else(|| Sp::new(defaults::MTU, obj.key_at("mtu")));
        let overlay = obj
            .get("overlay")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`overlay`",
                    &[
                        ("udp", Backend::Udp),
                        ("vxlan", Backend::Vxlan),
                        ("host-gw", Backend::HostGw),
                    ],
                )
            })
            .unwrap_or_else(|| Sp::new(Backend::Udp, obj.key_at("overlay")));
        let proxy = obj
            .get("proxy")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`proxy`",
                    &[
                        ("iptables", Mode::Iptables),
                        ("nftables", Mode::Nftables),
                        ("userspace", Mode::Userspace),
                    ],
                )
            })
            .unwrap_or_else(|| Sp::new(Mode::Iptables, obj.key_at("proxy")));
        Cluster {
            pod_cidr: self.cidr(&obj, "podCIDR", defaults::POD_CIDR),
            subnet_len,
            service_cidr: self.cidr(&obj, "serviceCIDR", defaults::SERVICE_CIDR),
            underlay_cidr: self.cidr(&obj, "underlayCIDR", defaults::UNDERLAY_CIDR),
            lb_cidr: self.cidr(&obj, "loadBalancerCIDR", defaults::LB_CIDR),
            mtu,
            overlay,
            proxy,
        }
    }
}
