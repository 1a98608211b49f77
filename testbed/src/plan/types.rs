//! The plan: the complete desired state of a testbed as plain data. Every
//! namespace, interface, address, route, sysctl and process is named here;
//! applying the plan creates exactly this, and reading the kernel back gives
//! this shape again.

use crate::topology::model::{Registry, RestartPolicy};
use crate::topology::units::{Duration, Percent, Rate};
use overlay::{Backend, Ipv4Net, Lease, NetworkConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// The version of the plan's layout.
pub const PLAN_VERSION: u32 = 1;

/// The whole desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The layout version of this document.
    pub version: u32,
    /// The testbed's name.
    pub name: String,
    /// The seed of every random choice.
    pub seed: u64,
    /// The prefix of every network namespace (`tb-NAME`).
    pub prefix: String,
    /// Where the running testbed keeps its state (plan, logs, volumes).
    pub state_dir: String,
    /// Cluster-wide settings, defaults resolved.
    pub cluster: ClusterPlan,
    /// The real machines the testbed is spread over (`machines:`); absent
    /// for a testbed on one machine.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub machines: Vec<MachinePlan>,
    /// When this plan is one machine's share of a testbed spread over
    /// several (`plan::machines::restrict`): that machine. Its nodes, hosts
    /// and pods are only that machine's; the services, the DNS records and
    /// the nodes' routes still name every machine's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub machine: Option<String>,
    /// The LAN the nodes and hosts share.
    pub fabric: Fabric,
    /// The nodes.
    pub nodes: Vec<NodePlan>,
    /// The hosts outside the cluster.
    pub hosts: Vec<HostPlan>,
    /// Every pod, controller pods included.
    pub pods: Vec<PodPlan>,
    /// Every service, resolved.
    pub services: Vec<proxy::Service>,
    /// Names and addresses for the hosts files.
    pub dns: Dns,
}

/// Cluster-wide settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    /// The overlay network.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Ipv4Net,
    /// Node subnet length.
    pub subnet_len: u8,
    /// Where cluster IPs come from.
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: Ipv4Net,
    /// The LAN.
    #[serde(rename = "underlayCIDR")]
    pub underlay_cidr: Ipv4Net,
    /// External IPs of LoadBalancer services.
    #[serde(rename = "loadBalancerCIDR")]
    pub load_balancer_cidr: Ipv4Net,
    /// The underlay MTU.
    pub mtu: u32,
    /// The MTU of pod interfaces and node bridges (underlay minus the
    /// backend's encapsulation).
    pub pod_mtu: u32,
    /// The overlay backend.
    pub overlay: Backend,
    /// The service proxy mode.
    pub proxy: proxy::Mode,
    /// The overlay's flannel network configuration.
    pub network_config: NetworkConfig,
    /// The size in bytes at which each container's log is cut and rotated
    /// (`cluster.containerLogMaxSize`). A plan written before the field
    /// existed reads as the default, 10 MiB.
    #[serde(default = "default_container_log_max_bytes")]
    pub container_log_max_bytes: u64,
    /// How long a node may be unreachable before the controller evicts its
    /// pods (`cluster.podEvictionTimeout`). An older plan reads as 5 s.
    #[serde(default = "default_pod_eviction_timeout")]
    pub pod_eviction_timeout: Duration,
    /// Where the shared state is kept; absent when it is the default,
    /// `file`.
    #[serde(skip_serializing_if = "Registry::is_file", default)]
    pub registry: Registry,
    /// How to reach etcd (`registry: etcd` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub etcd: Option<EtcdPlan>,
}

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdPlan {
    /// Its client URLs, as the file wrote them.
    pub endpoints: Vec<String>,
    /// The key prefix of flannel's layout (`/coreos.com/network` unless
    /// the file says otherwise).
    pub prefix: String,
}

/// A real machine that carries a share of the testbed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePlan {
    /// Its name.
    pub name: String,
    /// Its address on the network that joins the machines.
    pub address: Ipv4Addr,
}

fn default_pod_eviction_timeout() -> Duration {
    Duration(crate::topology::decode::defaults::POD_EVICTION_TIMEOUT_US)
}

fn default_container_log_max_bytes() -> u64 {
    crate::topology::decode::defaults::CONTAINER_LOG_MAX_SIZE
}

/// The shared LAN: a bridge in a namespace of its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fabric {
    /// The namespace.
    pub netns: String,
    /// The LAN bridge.
    pub bridge: Iface,
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Iface {
    /// Its name (at most 15 characters).
    pub name: String,
    /// Its MAC address, locally administered (none for TUN devices).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<Mac>,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub addresses: Vec<IfAddr>,
}

/// A veth pair: one end in the machine's or pod's namespace, the other
/// enslaved to a bridge in the namespace above it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Veth {
    /// The inner end (`eth0`).
    #[serde(flatten)]
    pub inner: Iface,
    /// The namespace of the outer end.
    pub peer_netns: String,
    /// The outer end.
    pub peer: Iface,
    /// The bridge the outer end is a port of.
    pub peer_master: String,
}

/// A route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The destination: a prefix, or `default`.
    pub dst: String,
    /// The gateway.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<Ipv4Addr>,
    /// The output device.
    pub dev: String,
    /// Whether the gateway is reachable without a connected route.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub onlink: bool,
}

/// A permanent neighbour (ARP) entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Neighbour {
    /// The IP address.
    pub ip: Ipv4Addr,
    /// Its MAC address.
    pub mac: Mac,
    /// The device.
    pub dev: String,
}

/// A bridge forwarding-database entry pointing a MAC at a remote VTEP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FdbEntry {
    /// The remote VTEP's MAC.
    pub mac: Mac,
    /// The remote node's underlay address.
    pub dst: Ipv4Addr,
    /// The vxlan device.
    pub dev: String,
}

/// A node: a machine of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    /// Its name.
    pub name: String,
    /// Its labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub labels: BTreeMap<String, String>,
    /// Its namespace.
    pub netns: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
    /// The real machine it runs on (multi-machine testbeds only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub machine: Option<String>,
    /// Its link to the LAN.
    pub uplink: Veth,
    /// Its pod subnet lease.
    pub lease: Lease,
    /// The pod bridge (like cni0).
    pub bridge: Iface,
    /// The overlay device, if the backend has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub overlay: Option<OverlayDevice>,
    /// Routes beyond the connected ones.
    pub routes: Vec<Route>,
    /// Permanent neighbour entries (vxlan).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub neighbours: Vec<Neighbour>,
    /// Forwarding-database entries (vxlan).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fdb: Vec<FdbEntry>,
    /// Sysctls set inside the namespace.
    pub sysctls: BTreeMap<String, String>,
    /// Impairments of its link.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<LinkPlan>,
}

/// A node's overlay device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayDevice {
    /// The device.
    #[serde(flatten)]
    pub iface: Iface,
    /// The UDP port encapsulated packets use.
    pub port: u16,
    /// The VXLAN network identifier (vxlan only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vni: Option<u32>,
}

/// A machine on the LAN outside the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPlan {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
    /// The real machine it runs on (multi-machine testbeds only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub machine: Option<String>,
    /// Its link to the LAN.
    pub uplink: Veth,
    /// Impairments of its link.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<LinkPlan>,
    /// The hosts file its containers see.
    pub hosts_file: String,
    /// Its processes.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub containers: Vec<ContainerPlan>,
}

/// A pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPlan {
    /// Its name.
    pub name: String,
    /// Its Kubernetes-style namespace.
    pub namespace: String,
    /// The node it runs on.
    pub node: String,
    /// The replication controller that owns it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<String>,
    /// Its labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub labels: BTreeMap<String, String>,
    /// Its network mode: bridge, host, none or container:POD.
    pub network: String,
    /// The network namespace its containers run in.
    pub netns: String,
    /// Whether the testbed creates `netns` for this pod (bridge and none).
    pub owns_netns: bool,
    /// Its IP, if it has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ip: Option<Ipv4Addr>,
    /// Its interface (bridge pods).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interface: Option<Veth>,
    /// Its routes (bridge pods).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub routes: Vec<Route>,
    /// The hostname its containers see.
    pub hostname: String,
    /// The hosts file its containers see.
    pub hosts_file: String,
    /// Its shared directories.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub volumes: Vec<VolumePlan>,
    /// Its processes.
    pub containers: Vec<ContainerPlan>,
}

/// A pod volume: a directory under the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePlan {
    /// Its name.
    pub name: String,
    /// The directory.
    pub path: String,
}

/// A container: a process with its own UTS and mount namespaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPlan {
    /// Its name.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub working_dir: Option<String>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Bind mounts of volumes.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub mounts: Vec<MountPlan>,
    /// Readiness: a TCP port that must accept connections.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ready_tcp: Option<u16>,
    /// Where stdout and stderr go.
    pub log: String,
}

/// A bind mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPlan {
    /// The directory mounted.
    pub source: String,
    /// Where it appears.
    pub target: String,
}

/// Link impairments of a machine, both directions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkPlan {
    /// Added delay.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delay: Option<Duration>,
    /// Delay variation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub jitter: Option<Duration>,
    /// Share dropped.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loss: Option<Percent>,
    /// Share duplicated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duplicate: Option<Percent>,
    /// Share reordered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reorder: Option<Percent>,
    /// Bandwidth limit.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rate: Option<Rate>,
}

/// Names and addresses, rendered into each pod's and host's hosts file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    /// Qualified names, the same for everyone: `svc.ns.svc`, `svc.ns`,
    /// `pod.ns.pod`, and node and host names.
    pub records: Vec<Record>,
    /// Bare names as seen from each namespace: services, then pods of that
    /// namespace, then nodes and hosts.
    pub bare: BTreeMap<String, Vec<Record>>,
}

/// One name and its address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The name.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A locally administered unicast MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let mut out = [0u8; 6];
        if parts.len() != 6 {
            return Err(format!("`{s}` is not a MAC address"));
        }
        for (o, p) in out.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16).map_err(|_| format!("`{s}` is not a MAC address"))?;
        }
        Ok(Mac(out))
    }
}

/// An interface address with its prefix length (`10.244.1.1/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfAddr {
    /// The address.
    pub ip: Ipv4Addr,
    /// The prefix length of the connected network.
    pub prefix_len: u8,
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

impl std::str::FromStr for IfAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not ADDRESS/LENGTH");
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        Ok(IfAddr {
            ip: ip.parse().map_err(|_| bad())?,
            prefix_len: len,
        })
    }
}

serde_as_text!(Mac, IfAddr);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::plan;

    #[test]
    fn container_log_size_is_planned_in_bytes() {
        let p = plan("name: t\nnodes: [{name: n1}]\n");
        assert_eq!(p.cluster.container_log_max_bytes, 10 << 20);
        let p = plan("name: t\ncluster: {containerLogMaxSize: 64Ki}\nnodes: [{name: n1}]\n");
        assert_eq!(p.cluster.container_log_max_bytes, 64 << 10);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["cluster"]["containerLogMaxBytes"], 65536);
    }

    /// A plan.json written before `containerLogMaxBytes` existed still reads,
    /// with the default.
    #[test]
    fn an_older_plan_without_the_log_size_reads_as_the_default() {
        let p = plan("name: t\ncluster: {containerLogMaxSize: 4Ki}\nnodes: [{name: n1}]\n");
        let mut json = serde_json::to_value(&p).unwrap();
        let cluster = json["cluster"].as_object_mut().unwrap();
        assert!(cluster.remove("containerLogMaxBytes").is_some());
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back.cluster.container_log_max_bytes, 10 << 20);
    }
}
