//! The check declarations' types: who probes whom, on what, expecting
//! what.

use std::net::Ipv4Addr;
use std::time::Duration;

/// Who sends or receives, as a check names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `pod NAME[.NAMESPACE]`.
    Pod {
        /// The pod.
        name: String,
        /// Its namespace (`default` when not written).
        namespace: String,
    },
    /// `host NAME`.
    Host(String),
    /// `node NAME`.
    Node(String),
    /// `service NAME[.NAMESPACE]`: its cluster IP (`to` only).
    Service {
        /// The service.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// `nodePort SERVICE[.NAMESPACE] via NODE` (`to` only).
    NodePort {
        /// The service.
        name: String,
        /// Its namespace.
        namespace: String,
        /// The node whose LAN address is probed.
        node: String,
    },
    /// `external SERVICE[.NAMESPACE]`: its LoadBalancer IP (`to` only).
    External {
        /// The service.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// `address A.B.C.D` (`to` only).
    Address(Ipv4Addr),
    /// `{pods: {LABELS}}`: every pod with these labels.
    Pods(std::collections::BTreeMap<String, String>),
    /// `{rc: NAME}`: the pods of a replication controller (of `default`).
    Rc(String),
    /// `{allPods: true}`.
    AllPods,
    /// `{allNodes: true}`.
    AllNodes,
    /// `{allHosts: true}`.
    AllHosts,
}

/// What is probed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Port {
    /// `tcp/N`: a TCP connection.
    Tcp(u16),
    /// `udp/N`: a datagram that is answered.
    Udp(u16),
    /// `http/N[/path]`: an HTTP GET answered with a 2xx or 3xx status.
    Http {
        /// The port.
        port: u16,
        /// The path (`/` when not written).
        path: String,
    },
    /// `icmp`: an echo request answered (the default).
    Icmp,
}

/// What a check expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Reachable (retried until it passes or `within` runs out).
    Allow,
    /// Not reachable, either way (dropped or rejected), for `for`.
    Deny,
    /// Dropped: every probe times out.
    Drop,
    /// Rejected: every probe is refused.
    Reject,
}

/// How a failed check counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fails the run (exit 1).
    Error,
    /// Reported; exit 3 when only warnings failed.
    Warning,
}

/// One declared check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Its name (a DNS label, unique).
    pub name: String,
    /// What it checks.
    pub kind: CheckKind,
    /// How a failure counts.
    pub level: Level,
}

/// A pair check or a matrix.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// From every source to every target, expecting `expect`.
    Pair {
        /// Who sends (several: one probe each).
        from: Endpoint,
        /// Who receives.
        to: Endpoint,
        /// What is probed; `None`: ICMP, or a service target's first port.
        port: Option<Port>,
        /// What is expected.
        expect: Expect,
        /// Allow: retried until this runs out.
        within: Duration,
        /// Deny, drop, reject: must hold this long.
        hold: Duration,
        /// HTTP only: the body contains this.
        body: Option<String>,
    },
    /// Every source to every target: a reachability table.
    Matrix {
        /// The rows.
        from: Endpoint,
        /// The columns.
        to: Endpoint,
        /// What is probed.
        port: Option<Port>,
        /// Leave out a source probing itself.
        ignore_self: bool,
        /// The expected table ('.' reachable, 'X' not), rows = from.
        expect_table: Option<Vec<String>>,
    },
}
