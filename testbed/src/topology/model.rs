//! The topology as the user wrote it, decoded and typed, with every value
//! remembering where in the file it came from (`Sp`), and whether the file
//! wrote it at all (`Origin`).

use crate::diag::At;
use crate::topology::units::{Duration, Percent, Rate, Size};
use overlay::{Backend, Ipv4Net};
use proxy::{Mode, Protocol, ServiceType, SessionAffinity};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Its position and field path: the value's own text when the file wrote
    /// it; otherwise the text it was derived from, or the smallest enclosing
    /// thing the file wrote (see `Origin`).
    pub at: At,
    /// Whether the file wrote it.
    pub origin: Origin,
}

/// Whether a value was written in the file, and if not, where it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// Written in the file.
    #[default]
    Written,
    /// Not written: the format's default. `at` is the smallest enclosing
    /// thing the file wrote (the `cluster:` key, the entry).
    Default,
    /// Not written: computed from another field; `at` is that field's value.
    Derived {
        /// The field it was derived from, e.g. `underlayCIDR`.
        from: String,
        /// How, e.g. `as its top /28`.
        how: String,
    },
}

impl<T> Sp<T> {
    /// A value the file wrote at `at`.
    pub fn new(value: T, at: At) -> Sp<T> {
        Sp {
            value,
            at,
            origin: Origin::Written,
        }
    }

    /// A default the file did not write; `at` is the smallest enclosing
    /// thing it did write.
    pub fn defaulted(value: T, at: At) -> Sp<T> {
        Sp {
            value,
            at,
            origin: Origin::Default,
        }
    }

    /// A value the file did not write, computed from `source` (the field
    /// `from`) as `how` says. Derived from a default, it is a default.
    pub fn derived<U>(value: T, source: &Sp<U>, from: &str, how: impl Into<String>) -> Sp<T> {
        let origin = match source.origin {
            Origin::Written => Origin::Derived {
                from: from.to_string(),
                how: how.into(),
            },
            _ => Origin::Default,
        };
        Sp {
            value,
            at: source.at.clone(),
            origin,
        }
    }

    /// Whether the file wrote this value.
    pub fn is_written(&self) -> bool {
        self.origin == Origin::Written
    }

    /// How a message names the field `field` holding this value: "`mtu`"
    /// when the file wrote it, "`mtu` (not set: the default)" or
    /// "`loadBalancerCIDR` (not set: derived from `underlayCIDR` as its top
    /// /28)" when it did not.
    pub fn named(&self, field: &str) -> String {
        match &self.origin {
            Origin::Written => format!("`{field}`"),
            Origin::Default => format!("`{field}` (not set: the default)"),
            Origin::Derived { from, how } => {
                format!("`{field}` (not set: derived from `{from}` {how})")
            }
        }
    }
}

/// A whole topology file.
#[derive(Clone, Debug)]
pub struct Topology {
    /// The testbed's name; prefixes every kernel object.
    pub name: Sp<String>,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Cluster-wide settings, defaults filled in.
    pub cluster: Cluster,
    /// The cluster's machines.
    pub nodes: Vec<Machine>,
    /// Machines on the LAN outside the cluster.
    pub hosts: Vec<Machine>,
    /// Pods, those of replication controllers expanded after the explicit ones.
    pub pods: Vec<Pod>,
    /// Replication controllers.
    pub controllers: Vec<Controller>,
    /// Services.
    pub services: Vec<Service>,
    /// Reachability checks (`testbed check`); not part of the plan.
    pub checks: Vec<crate::topology::checks::Check>,
    /// The real machines the testbed is spread over (`machines:`); empty for
    /// a testbed on one machine.
    pub machines: Vec<RealMachine>,
    /// Where the `machines:` key is, when the file has one.
    pub machines_at: Option<At>,
}

/// One real machine (or VM) that carries a share of the testbed.
#[derive(Clone, Debug)]
pub struct RealMachine {
    /// Its name, which nodes and hosts name in `machine:`.
    pub name: Sp<String>,
    /// Its address on the real network.
    pub address: Sp<Ipv4Addr>,
    /// Where the entry is.
    pub at: At,
}

/// Where the state the machines share is kept (`cluster.registry`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// A directory of files on the machine (`/run/testbed/NAME/registry`).
    #[default]
    File,
    /// An etcd cluster (`cluster.etcd`), in flannel's layout.
    Etcd,
}

impl Registry {
    /// Whether this is the default, the file registry.
    pub fn is_file(&self) -> bool {
        *self == Registry::File
    }
}

/// How to reach etcd (`cluster.etcd`).
#[derive(Clone, Debug)]
pub struct Etcd {
    /// Its client URLs, `http://A.B.C.D:PORT` or `https://...`.
    pub endpoints: Vec<Sp<String>>,
    /// How many endpoints the file listed, valid or not.
    pub listed: usize,
    /// The key prefix of flannel's layout (default `/coreos.com/network`).
    pub prefix: Sp<String>,
    /// Where the `etcd:` key is.
    pub at: At,
}

/// Cluster-wide settings.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The `cluster:` key, when the file has one: where errors about a
    /// default of this section point when nothing closer was written.
    pub at: Option<At>,
    /// The overlay network (flannel's `Network`).
    pub pod_cidr: Sp<Ipv4Net>,
    /// Each node's subnet length (flannel's `SubnetLen`).
    pub subnet_len: Sp<u8>,
    /// Where cluster IPs come from.
    pub service_cidr: Sp<Ipv4Net>,
    /// The LAN of nodes and hosts.
    pub underlay_cidr: Sp<Ipv4Net>,
    /// External IPs of LoadBalancer services, inside the underlay.
    pub lb_cidr: Sp<Ipv4Net>,
    /// The underlay MTU.
    pub mtu: Sp<u32>,
    /// The overlay backend.
    pub overlay: Sp<Backend>,
    /// The service proxy mode.
    pub proxy: Sp<Mode>,
    /// The size at which a container's log is cut (kubelet's
    /// `containerLogMaxSize`).
    pub container_log_max_size: Sp<Size>,
    /// How long a node may be unreachable before the controller evicts its
    /// pods (`podEvictionTimeout`).
    pub pod_eviction_timeout: Sp<Duration>,
    /// Where the shared state is kept.
    pub registry: Sp<Registry>,
    /// How to reach etcd, when the file says.
    pub etcd: Option<Etcd>,
}

/// Labels, as key/value pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels {
    /// The pairs, sorted by key.
    pub map: BTreeMap<String, String>,
    /// Where the mapping is.
    pub at: At,
}

impl Labels {
    /// Whether every pair of `selector` is among these labels.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector.map.iter().all(|(k, v)| self.map.get(k) == Some(v))
    }
}

/// Impairments of a machine's link to the LAN, both directions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Link {
    /// Added one-way delay.
    pub delay: Option<Sp<Duration>>,
    /// Random variation of the delay.
    pub jitter: Option<Sp<Duration>>,
    /// Share of packets dropped.
    pub loss: Option<Sp<Percent>>,
    /// Share of packets sent twice.
    pub duplicate: Option<Sp<Percent>>,
    /// Share of packets sent at once, ahead of delayed ones.
    pub reorder: Option<Sp<Percent>>,
    /// Bandwidth limit.
    pub rate: Option<Sp<Rate>>,
    /// Where the `link` mapping is.
    pub at: At,
}

/// A node or a host.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Its name (nodes and hosts share one name space).
    pub name: Sp<String>,
    /// Labels (nodes only).
    pub labels: Labels,
    /// Link impairments.
    pub link: Option<Link>,
    /// Containers (hosts only).
    pub containers: Vec<Container>,
    /// The real machine it runs on (`machine:`), when the file says.
    pub machine: Option<Sp<String>>,
    /// Where the entry is.
    pub at: At,
}

/// A pod's network mode, as in Docker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// Own namespace on the node's bridge.
    Bridge,
    /// The node's own namespace.
    Host,
    /// Own namespace, loopback only.
    None,
    /// The namespace of another pod of the same namespace.
    Container(String),
}

/// A pod.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Its name.
    pub name: Sp<String>,
    /// Its Kubernetes-style namespace.
    pub namespace: Sp<String>,
    /// The node it must run on, if pinned.
    pub node: Option<Sp<String>>,
    /// Its labels.
    pub labels: Labels,
    /// Its network mode.
    pub network: Sp<Network>,
    /// A pinned IP.
    pub ip: Option<Sp<Ipv4Addr>>,
    /// Names of its shared directories.
    pub volumes: Vec<Sp<String>>,
    /// Its containers.
    pub containers: Vec<Container>,
    /// Where the entry (or the controller's template) is.
    pub at: At,
    /// The replication controller that owns it.
    pub owner: Option<String>,
}

/// When a container is started again after it exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RestartPolicy {
    /// After every exit.
    Always,
    /// After a non-zero exit.
    OnFailure,
    /// Never.
    Never,
}

/// A container: one process tree in its pod's namespaces.
#[derive(Clone, Debug)]
pub struct Container {
    /// Its name, unique in the pod.
    pub name: Sp<String>,
    /// The program and its arguments.
    pub command: Sp<Vec<String>>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The working directory.
    pub working_dir: Option<Sp<String>>,
    /// The restart policy.
    pub restart_policy: RestartPolicy,
    /// Volumes mounted into it.
    pub mounts: Vec<Mount>,
    /// A TCP port that must accept connections before the pod is ready.
    pub ready_tcp: Option<Sp<u16>>,
    /// Where the entry is.
    pub at: At,
}

/// A volume mount.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The pod volume.
    pub name: Sp<String>,
    /// Where it appears in the container.
    pub path: Sp<String>,
}

/// A replication controller.
#[derive(Clone, Debug)]
pub struct Controller {
    /// Its name; its pods are `<name>-<i>`.
    pub name: Sp<String>,
    /// Its namespace, and its pods'.
    pub namespace: Sp<String>,
    /// How many pods.
    pub replicas: Sp<u32>,
    /// The selector; must match the template.
    pub selector: Labels,
    /// The pod template (its name is the controller's).
    pub template: Pod,
    /// Where the entry is.
    pub at: At,
}

/// A service.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its name.
    pub name: Sp<String>,
    /// Its namespace.
    pub namespace: Sp<String>,
    /// Which pods serve it.
    pub selector: Labels,
    /// How it is exposed.
    pub kind: Sp<ServiceType>,
    /// A pinned cluster IP.
    pub cluster_ip: Option<Sp<Ipv4Addr>>,
    /// Client affinity.
    pub affinity: SessionAffinity,
    /// Its ports.
    pub ports: Vec<Port>,
    /// Where the entry is.
    pub at: At,
}

/// A service port.
#[derive(Clone, Debug)]
pub struct Port {
    /// Its name (required when a service has several).
    pub name: Option<Sp<String>>,
    /// The port on the cluster IP.
    pub port: Sp<u16>,
    /// The port on the pods (defaults to `port`).
    pub target_port: Sp<u16>,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// A pinned node port.
    pub node_port: Option<Sp<u16>>,
    /// Where the entry is.
    pub at: At,
}
