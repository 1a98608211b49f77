//! The process side of a running testbed: the files its containers need
//! (`files`), starting one container in its pod's namespaces (`launch`, with
//! the mount plan in `mounts`), the supervisor that keeps every container of
//! the plan running and reports on it (`supervise`, `status`), and running a
//! command beside a container (`exec`).
//!
//! A container here is a process, not an image: it sees the host's
//! filesystem, with its own network namespace (the pod's, from
//! `/run/netns/<name>`), its own UTS namespace (the pod's hostname) and its
//! own mount namespace (the pod's hosts file on `/etc/hosts`, its volumes on
//! their mount paths). Nothing here changes the host's filesystem outside the
//! state directory, or touches a process it did not start.

pub mod basens;
mod child;
pub mod exec;
pub mod files;
pub mod launch;
pub mod logs;
pub mod mounts;
mod probe;
mod procs;
mod program;
pub mod status;
pub mod supervise;

#[cfg(test)]
mod testutil;

use crate::plan::types::{ContainerPlan, HostPlan, PodPlan};
use crate::plan::Plan;
use std::fmt;

pub use crate::kernel::netns::NETNS_DIR;

/// What a container belongs to (a pod or a host), and how to name it.
pub use crate::state::status::{owner_label, OwnerKind};

/// Everything the containers of one pod or host share: the network namespace
/// they enter, the hostname they see, their hosts file, and the state
/// directory of the testbed (for scratch mounts).
#[derive(Clone, Debug)]
pub struct Sandbox<'a> {
    /// Pod or host.
    pub kind: OwnerKind,
    /// The pod's Kubernetes-style namespace (`None` for hosts).
    pub namespace: Option<&'a str>,
    /// The pod's or host's name.
    pub name: &'a str,
    /// The network namespace (a name under `/run/netns`).
    pub netns: &'a str,
    /// The hostname its containers see.
    pub hostname: &'a str,
    /// The hosts file bind-mounted on `/etc/hosts`.
    pub hosts_file: &'a str,
    /// The testbed's state directory.
    pub state_dir: &'a str,
    /// Its containers.
    pub containers: &'a [ContainerPlan],
}

impl<'a> Sandbox<'a> {
    /// The sandbox of a pod.
    pub fn pod(plan: &'a Plan, pod: &'a PodPlan) -> Self {
        Sandbox {
            kind: OwnerKind::Pod,
            namespace: Some(&pod.namespace),
            name: &pod.name,
            netns: &pod.netns,
            hostname: &pod.hostname,
            hosts_file: &pod.hosts_file,
            state_dir: &plan.state_dir,
            containers: &pod.containers,
        }
    }

    /// The sandbox of a host (its hostname is its name).
    pub fn host(plan: &'a Plan, host: &'a HostPlan) -> Self {
        Sandbox {
            kind: OwnerKind::Host,
            namespace: None,
            name: &host.name,
            netns: &host.netns,
            hostname: &host.name,
            hosts_file: &host.hosts_file,
            state_dir: &plan.state_dir,
            containers: &host.containers,
        }
    }

    /// `NAMESPACE/NAME` of a pod, `host:NAME` of a host.
    pub fn key(&self) -> String {
        match (self.kind, self.namespace) {
            (OwnerKind::Pod, Some(ns)) => format!("{ns}/{}", self.name),
            _ => format!("host:{}", self.name),
        }
    }

    /// Every pod's and host's sandbox in the plan, pods first, in plan order.
    pub fn all(plan: &'a Plan) -> Vec<Sandbox<'a>> {
        plan.pods
            .iter()
            .map(|p| Sandbox::pod(plan, p))
            .chain(plan.hosts.iter().map(|h| Sandbox::host(plan, h)))
            .collect()
    }
}

/// A sandbox that owns its data, for the supervisor, whose plan changes
/// while it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedSandbox {
    /// Pod or host.
    pub kind: OwnerKind,
    /// The pod's Kubernetes-style namespace (`None` for hosts).
    pub namespace: Option<String>,
    /// The pod's or host's name.
    pub name: String,
    /// The network namespace.
    pub netns: String,
    /// The hostname its containers see.
    pub hostname: String,
    /// The hosts file.
    pub hosts_file: String,
    /// The testbed's state directory.
    pub state_dir: String,
    /// Its containers.
    pub containers: Vec<ContainerPlan>,
}

impl OwnedSandbox {
    /// A copy of `s`.
    pub fn of(s: &Sandbox<'_>) -> Self {
        OwnedSandbox {
            kind: s.kind,
            namespace: s.namespace.map(String::from),
            name: s.name.to_string(),
            netns: s.netns.to_string(),
            hostname: s.hostname.to_string(),
            hosts_file: s.hosts_file.to_string(),
            state_dir: s.state_dir.to_string(),
            containers: s.containers.to_vec(),
        }
    }

    /// The borrowed form.
    pub fn view(&self) -> Sandbox<'_> {
        Sandbox {
            kind: self.kind,
            namespace: self.namespace.as_deref(),
            name: &self.name,
            netns: &self.netns,
            hostname: &self.hostname,
            hosts_file: &self.hosts_file,
            state_dir: &self.state_dir,
            containers: &self.containers,
        }
    }

    /// `NAMESPACE/NAME` of a pod, `host:NAME` of a host.
    pub fn key(&self) -> String {
        self.view().key()
    }
}

/// `pod web-0`, `pod other/web-0` (namespaces other than `default`), or
/// `host client`, as messages name them.
impl fmt::Display for Sandbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", owner_label(self.kind, self.namespace, self.name))
    }
}
