//! The `cluster` section: its fields, their defaults and their limits, and
//! the defaults that are derived from what the file did write (the external
//! IPs' range from the LAN, the node subnet length from the pod network).

use super::{Decoder, Obj};
use crate::topology::model::*;
use crate::topology::units::{Duration, Size};
use overlay::{Backend, Ipv4Net};
use proxy::Mode;

/// The defaults of the `cluster` section.
pub mod defaults {
    use overlay::Ipv4Net;
    use std::net::Ipv4Addr;

    /// `cluster.podCIDR`: 10.244.0.0/16.
    pub fn pod_cidr() -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16)
    }
    /// `cluster.subnetLen` (for a podCIDR of /22 or larger; see
    /// `derived_subnet_len`).
    pub const SUBNET_LEN: u8 = 24;
    /// `cluster.serviceCIDR`: 10.96.0.0/16.
    pub fn service_cidr() -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16)
    }
    /// `cluster.underlayCIDR`: 192.168.96.0/24.
    pub fn underlay_cidr() -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(192, 168, 96, 0), 24)
    }
    /// `cluster.mtu`.
    pub const MTU: u32 = 1500;
    /// `cluster.containerLogMaxSize`, in bytes (10Mi, kubelet's default).
    pub const CONTAINER_LOG_MAX_SIZE: u64 = 10 << 20;
    /// `cluster.podEvictionTimeout`, in microseconds (5 s: a small
    /// stand-in for Kubernetes' five minutes).
    pub const POD_EVICTION_TIMEOUT_US: u64 = 5_000_000;
}

/// Limits of `cluster.mtu`.
pub const MTU_RANGE: (u32, u32) = (576, 9000);
/// Limits of `cluster.podEvictionTimeout`, in microseconds (100 ms to 1 h).
pub const MIN_EVICTION_TIMEOUT_US: u64 = 100_000;
/// See [`MIN_EVICTION_TIMEOUT_US`].
pub const MAX_EVICTION_TIMEOUT_US: u64 = 3_600_000_000;
/// The smallest `cluster.containerLogMaxSize`, in bytes (4Ki).
pub const MIN_CONTAINER_LOG_MAX_SIZE: u64 = 4 << 10;

/// The external IPs' range when the file sets none: the top /28 of the LAN,
/// but never more than its top quarter (a /28 LAN gets its top /30, a /29
/// its top /31), so that nodes and hosts keep most of a small LAN. For the
/// default LAN this is the format's default, `192.168.96.240/28`.
pub fn derived_lb_cidr(underlay: Ipv4Net) -> Ipv4Net {
    let len = (underlay.prefix_len() + 2).clamp(28, 32);
    let last = underlay.subnet_count(len).saturating_sub(1);
    underlay.subnet(len, last).unwrap_or(underlay)
}

/// How `derived_lb_cidr` chose its range, for messages.
pub fn lb_derivation(underlay: Ipv4Net) -> String {
    let len = derived_lb_cidr(underlay).prefix_len();
    if len == 28 {
        "as its top /28".into()
    } else {
        format!("as its top quarter, a /{len}")
    }
}

/// flannel's `SubnetLen` when none is configured: 24 for a network of /22
/// or larger, else the network's prefix length + 2 (four subnets).
pub fn derived_subnet_len(pod_cidr: Ipv4Net) -> u8 {
    let p = pod_cidr.prefix_len();
    if p <= 22 {
        defaults::SUBNET_LEN
    } else {
        (p + 2).min(32)
    }
}

const CLUSTER: &[&str] = &[
    "podCIDR",
    "subnetLen",
    "serviceCIDR",
    "underlayCIDR",
    "loadBalancerCIDR",
    "mtu",
    "overlay",
    "proxy",
    "containerLogMaxSize",
    "podEvictionTimeout",
    "registry",
    "etcd",
];

impl Decoder<'_> {
    /// A network the file wrote, if it did and it is valid; `example` is
    /// what the field would be without it.
    fn cidr(&mut self, obj: &Obj, key: &str, example: Ipv4Net) -> Option<Sp<Ipv4Net>> {
        let (n, p) = obj.get(key)?;
        let help = format!(
            "write an IPv4 network as ADDRESS/LENGTH with the host bits zero, e.g. {example}"
        );
        self.parsed::<Ipv4Net>(n, &p, &format!("`{key}`"), &help)
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
        // A default points at the `cluster:` key, or at the file's top.
        let written = node.map(|_| {
            let mut at = top.key_at("cluster");
            at.pos.len = "cluster".len();
            at
        });
        let here = written.clone().unwrap_or_else(|| top.key_at("cluster"));

        let pod_cidr = self
            .cidr(&obj, "podCIDR", defaults::pod_cidr())
            .unwrap_or_else(|| Sp::defaulted(defaults::pod_cidr(), here.clone()));
        let len = derived_subnet_len(pod_cidr.value);
        let help = format!(
            "subnetLen is a prefix length from {} (podCIDR's + 2) up to 30, e.g. {len}",
            pod_cidr.value.prefix_len() + 2,
        );
        let subnet_len = obj
            .get("subnetLen")
            .and_then(|(n, p)| self.int(n, &p, "`subnetLen`", 0, 32, &help))
            .map(|s| Sp::new(s.value as u8, s.at))
            .unwrap_or_else(|| {
                let how = if len == defaults::SUBNET_LEN {
                    "as flannel does: 24 for a /22 or larger"
                } else {
                    "as flannel does: its prefix length + 2"
                };
                Sp::derived(len, &pod_cidr, "podCIDR", how)
            });
        let underlay_cidr = self
            .cidr(&obj, "underlayCIDR", defaults::underlay_cidr())
            .unwrap_or_else(|| Sp::defaulted(defaults::underlay_cidr(), here.clone()));
        let top_28 = derived_lb_cidr(underlay_cidr.value);
        let lb_cidr = self
            .cidr(&obj, "loadBalancerCIDR", top_28)
            .unwrap_or_else(|| {
                let how = lb_derivation(underlay_cidr.value);
                Sp::derived(top_28, &underlay_cidr, "underlayCIDR", how)
            });
        Cluster {
            at: written,
            pod_cidr,
            subnet_len,
            service_cidr: self
                .cidr(&obj, "serviceCIDR", defaults::service_cidr())
                .unwrap_or_else(|| Sp::defaulted(defaults::service_cidr(), here.clone())),
            underlay_cidr,
            lb_cidr,
            mtu: self
                .mtu(&obj)
                .unwrap_or_else(|| Sp::defaulted(defaults::MTU, here.clone())),
            overlay: self
                .overlay(&obj)
                .unwrap_or_else(|| Sp::defaulted(Backend::Udp, here.clone())),
            proxy: self
                .proxy(&obj)
                .unwrap_or_else(|| Sp::defaulted(Mode::Iptables, here.clone())),
            container_log_max_size: self.log_max_size(&obj).unwrap_or_else(|| {
                Sp::defaulted(Size(defaults::CONTAINER_LOG_MAX_SIZE), here.clone())
            }),
            pod_eviction_timeout: self.eviction_timeout(&obj).unwrap_or_else(|| {
                Sp::defaulted(Duration(defaults::POD_EVICTION_TIMEOUT_US), here.clone())
            }),
            registry: self.registry(&obj, &here),
            etcd: self.etcd(&obj),
        }
    }

    fn mtu(&mut self, obj: &Obj) -> Option<Sp<u32>> {
        let (n, p) = obj.get("mtu")?;
        self.int(
            n,
            &p,
            "`mtu`",
            i64::from(MTU_RANGE.0),
            i64::from(MTU_RANGE.1),
            "the underlay MTU is from 576 to 9000 bytes; 1500 is Ethernet's",
        )
        .map(|s| Sp::new(s.value as u32, s.at))
    }

    fn overlay(&mut self, obj: &Obj) -> Option<Sp<Backend>> {
        let (n, p) = obj.get("overlay")?;
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
    }

    fn proxy(&mut self, obj: &Obj) -> Option<Sp<Mode>> {
        let (n, p) = obj.get("proxy")?;
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
    }

    fn eviction_timeout(&mut self, obj: &Obj) -> Option<Sp<Duration>> {
        let (n, p) = obj.get("podEvictionTimeout")?;
        let t = self.parsed::<Duration>(
            n,
            &p,
            "`podEvictionTimeout`",
            "a duration is a number and a unit: us, ms or s, e.g. 5s",
        )?;
        if !(MIN_EVICTION_TIMEOUT_US..=MAX_EVICTION_TIMEOUT_US).contains(&t.value.0) {
            self.err(
                &t.at,
                format!("`podEvictionTimeout` {} is out of range", t.value),
                format!(
                    "the time a node may be unreachable before its pods are evicted is from {} to {}; the default is {}",
                    Duration(MIN_EVICTION_TIMEOUT_US),
                    Duration(MAX_EVICTION_TIMEOUT_US),
                    Duration(defaults::POD_EVICTION_TIMEOUT_US)
                ),
            );
            return None;
        }
        Some(t)
    }

    fn log_max_size(&mut self, obj: &Obj) -> Option<Sp<Size>> {
        let (n, p) = obj.get("containerLogMaxSize")?;
        let size = self.parsed::<Size>(
            n,
            &p,
            "`containerLogMaxSize`",
            "a size is a whole number and a binary unit: Ki, Mi or Gi (or KiB, MiB, GiB), or a number of bytes, e.g. 10Mi",
        )?;
        if size.value.0 < MIN_CONTAINER_LOG_MAX_SIZE {
            self.err(
                &size.at,
                format!(
                    "`containerLogMaxSize` {} is below the smallest size, {}",
                    size.value,
                    Size(MIN_CONTAINER_LOG_MAX_SIZE)
                ),
                format!(
                    "a log is cut at this size, so it must hold more than a few lines: use {} or more, e.g. {} (the default)",
                    Size(MIN_CONTAINER_LOG_MAX_SIZE),
                    Size(defaults::CONTAINER_LOG_MAX_SIZE)
                ),
            );
            return None;
        }
        Some(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn derived_defaults_keep_the_contracts_values() {
        // The format's loadBalancerCIDR default is what the default LAN gives.
        let lb = derived_lb_cidr(defaults::underlay_cidr());
        assert_eq!(lb.to_string(), "192.168.96.240/28");
        assert_eq!(derived_subnet_len(defaults::pod_cidr()), 24);
        assert_eq!(defaults::pod_cidr().to_string(), "10.244.0.0/16");
        assert_eq!(defaults::service_cidr().to_string(), "10.96.0.0/16");
        assert_eq!(defaults::underlay_cidr().to_string(), "192.168.96.0/24");
    }

    #[test]
    fn load_balancer_range_is_the_top_28_or_the_top_quarter() {
        let cases = [
            ("10.77.0.0/24", "10.77.0.240/28"),
            ("10.0.0.0/8", "10.255.255.240/28"),
            ("10.77.0.0/26", "10.77.0.48/28"),
            ("10.77.0.0/27", "10.77.0.24/29"),
            ("10.77.0.0/28", "10.77.0.12/30"),
            ("10.77.0.0/29", "10.77.0.6/31"),
            ("10.77.0.0/30", "10.77.0.3/32"),
            ("10.77.0.0/32", "10.77.0.0/32"),
        ];
        for (lan, lb) in cases {
            let got = derived_lb_cidr(net(lan));
            assert_eq!(got.to_string(), lb, "{lan}");
            assert!(net(lan).covers(&got), "{lan}");
        }
        assert_eq!(lb_derivation(net("10.77.0.0/24")), "as its top /28");
        assert_eq!(
            lb_derivation(net("10.77.0.0/28")),
            "as its top quarter, a /30"
        );
    }

    #[test]
    fn subnet_length_follows_flannel() {
        assert_eq!(derived_subnet_len(net("10.0.0.0/8")), 24);
        assert_eq!(derived_subnet_len(net("10.244.0.0/22")), 24);
        assert_eq!(derived_subnet_len(net("10.244.0.0/23")), 25);
        assert_eq!(derived_subnet_len(net("10.244.0.0/24")), 26);
        assert_eq!(derived_subnet_len(net("10.244.0.0/28")), 30);
        assert_eq!(derived_subnet_len(net("10.244.0.0/32")), 32);
    }

    /// Examples in the help of a malformed address come from the file's own
    /// networks, not the defaults.
    #[test]
    fn examples_follow_the_files_networks() {
        let yaml = "name: t
cluster: {podCIDR: 10.1.0.0/16, serviceCIDR: 10.2.0.0/16, subnetLen: 25}
nodes: [{name: n1}]
pods: [{name: a, ip: nonsense, containers: [{name: c, command: [sleep, infinity]}]}]
services: [{name: s, clusterIP: nonsense, selector: {app: a}, ports: [{port: 80}]}]
";
        let Err(crate::LoadError::Invalid { diagnostics, .. }) =
            crate::load_str("t.yaml", yaml.to_string())
        else {
            panic!("accepted");
        };
        let help = |path: &str| {
            let d = diagnostics.iter().find(|d| d.path == path).expect(path);
            d.help.clone().unwrap_or_default()
        };
        assert!(
            help("pods[0].ip").ends_with("e.g. 10.1.0.178"),
            "{}",
            help("pods[0].ip")
        );
        assert!(help("services[0].clusterIP").ends_with("e.g. 10.2.0.10"));
    }
}
