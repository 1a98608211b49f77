//! Applies a plan to the kernel. Namespaces are created in parallel threads,
//! each opening a netlink socket inside the namespace it made; requests on
//! one socket are pipelined. First the machines (`machines`: the fabric,
//! nodes and hosts, in concurrent stages: bridges and loopbacks; uplinks;
//! addresses, routes and the overlay; kernel impairments), then the pods
//! (`pods`) in batches: a batch's namespaces are made, wired to their nodes'
//! bridges and configured, and their descriptors closed before the next
//! batch, so that 10,000 pods need no more open files than a few thousand.
//! A failure removes every namespace created, and with them every
//! interface: nothing half-built remains.

mod live;
mod machines;
mod pods;

#[cfg(test)]
mod tests;

pub use live::{add_pods, remove_pods, set_impairment, set_link};

use crate::kernel::netns::{self, Netns, NetnsError};
use crate::plan::types::Route;
use crate::plan::Plan;
use rtnetlink::Handle;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Why applying a plan failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A namespace could not be made.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink request failed.
    #[error(
        "{what} in namespace `{netns}`: {source}{}",
        feature_hint(what, source)
    )]
    Netlink {
        /// What was being done.
        what: String,
        /// Where.
        netns: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// The plan asks for something this build cannot create yet.
    #[error("{0}")]
    Unsupported(String),
    /// The async runtime could not start.
    #[error("cannot start the netlink runtime: {0}")]
    Runtime(std::io::Error),
}

/// Names the missing kernel feature when the kernel refuses a device type.
fn feature_hint(what: &str, e: &rtnetlink::Error) -> String {
    let unsupported =
        matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EOPNOTSUPP);
    if !unsupported {
        return String::new();
    }
    let (module, option) = if what.contains("bridge") {
        ("bridge", "CONFIG_BRIDGE")
    } else if what.contains("vxlan") {
        ("vxlan", "CONFIG_VXLAN")
    } else if what.contains("uplink") || what.contains("interface") {
        ("veth", "CONFIG_VETH")
    } else {
        return " (the kernel does not support this)".into();
    };
    format!(" (the kernel lacks the `{module}` device type: `modprobe {module}`, or a kernel built with {option})")
}

/// How long each phase took.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Creating the namespaces.
    pub namespaces: Duration,
    /// Configuring links, addresses and routes.
    pub configure: Duration,
}

/// One namespace to create and the sysctls to set inside it.
struct NsSpec {
    name: String,
    sysctls: Vec<(String, String)>,
}

/// A created namespace with a netlink handle whose socket lives inside it.
pub(super) struct Ns {
    pub(super) netns: Netns,
    pub(super) handle: Handle,
}

/// The machines' namespaces: the fabric's, the nodes', the hosts'.
fn machine_specs(plan: &Plan) -> Vec<NsSpec> {
    let mut out = vec![NsSpec {
        name: plan.fabric.netns.clone(),
        sysctls: Vec::new(),
    }];
    for n in &plan.nodes {
        out.push(NsSpec {
            name: n.netns.clone(),
            sysctls: n
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
    }
    for h in &plan.hosts {
        out.push(NsSpec {
            name: h.netns.clone(),
            sysctls: Vec::new(),
        });
    }
    out
}

/// The pods' own namespaces.
fn pod_specs(plan: &Plan) -> Vec<NsSpec> {
    plan.pods
        .iter()
        .filter(|p| p.owns_netns)
        .map(|p| pod_spec(&p.netns))
        .collect()
}

/// A pod's namespace. It announces its address whenever `eth0` comes up
/// (`arp_notify`, a gratuitous ARP): a pod made while the testbed runs may
/// get an address another pod had a moment ago, and a link taken down and
/// up again (a fault) left its neighbours with a failed entry for it.
fn pod_spec(netns: &str) -> NsSpec {
    NsSpec {
        name: netns.to_string(),
        sysctls: vec![("net.ipv4.conf.all.arp_notify".into(), "1".into())],
    }
}

/// Every namespace a plan creates.
pub fn namespaces(plan: &Plan) -> Vec<String> {
    machine_specs(plan)
        .into_iter()
        .chain(pod_specs(plan))
        .map(|s| s.name)
        .collect()
}

/// Pods configured per batch: each holds two descriptors until its batch
/// is done.
const POD_BATCH: usize = 2048;

/// Writes a per-namespace sysctl from a thread inside the namespace. Only
/// `net.ipv4.*`/`net.ipv6.*` keys are accepted: they are per namespace, so
/// the host's values are never touched.
pub(crate) fn write_sysctl(ns: &str, key: &str, value: &str) -> Result<(), NetnsError> {
    if !(key.starts_with("net.ipv4.") || key.starts_with("net.ipv6."))
        || key.contains("..")
        || key.contains('/')
    {
        return Err(NetnsError::Sys {
            what: "refusing a sysctl that is not per namespace",
            name: format!("{ns}: {key}"),
            source: std::io::Error::other("only net.ipv4.* and net.ipv6.* are set"),
        });
    }
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| NetnsError::Sys {
        what: "setting sysctl",
        name: format!("{ns}: {key}"),
        source: e,
    })
}

/// Creates the namespaces on `threads` threads; returns those made, and the
/// first error if any.
fn create_namespaces(
    specs: Vec<NsSpec>,
    rt: &tokio::runtime::Handle,
    threads: usize,
    anchor: Option<&std::path::Path>,
) -> (Vec<Ns>, Option<ApplyError>) {
    let chunk = specs.len().div_ceil(threads.max(1)).max(1);
    let mut groups: Vec<Vec<NsSpec>> = Vec::new();
    let mut rest = specs;
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        groups.push(rest);
        rest = tail;
    }
    let workers: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let rt = rt.clone();
            let anchor = anchor.map(|a| a.to_path_buf());
            std::thread::spawn(move || {
                let _enter = rt.enter();
                let mut made = Vec::new();
                for spec in group {
                    let netns = match netns::create_here(&spec.name, anchor.as_deref()) {
                        Ok(n) => n,
                        Err(e) => return (made, Some(ApplyError::Netns(e))),
                    };
                    let connection = rtnetlink::new_connection().map_err(|e| NetnsError::Sys {
                        what: "opening netlink in",
                        name: spec.name.clone(),
                        source: e,
                    });
                    let (conn, handle, _) = match connection {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = netns::delete(&spec.name);
                            return (made, Some(ApplyError::Netns(e)));
                        }
                    };
                    rt.spawn(conn);
                    made.push(Ns { netns, handle });
                    for (k, v) in &spec.sysctls {
                        if let Err(e) = write_sysctl(&spec.name, k, v) {
                            return (made, Some(ApplyError::Netns(e)));
                        }
                    }
                }
                (made, None)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut first_err = None;
    for w in workers {
        match w.join() {
            Ok((made, err)) => {
                all.extend(made);
                if first_err.is_none() {
                    first_err = err;
                }
            }
            Err(_) => {
                first_err.get_or_insert(ApplyError::Unsupported(
                    "a namespace-creating thread panicked".into(),
                ));
            }
        }
    }
    (all, first_err)
}

/// Applies `plan`. On failure every namespace created is removed again.
pub fn apply(plan: &Plan) -> Result<Timings, ApplyError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ApplyError::Runtime)?;
    netns::prepare_dir()?;
    let machines = machine_specs(plan);
    // Two descriptors per namespace held at once (its file and a netlink
    // socket inside it): the machines' for the whole apply, one batch of
    // pods' at a time.
    raise_fd_limit(((machines.len() + POD_BATCH) * 2 + 1024) as u64);
    let mut timings = Timings::default();
    let mut created: Vec<String> = Vec::new();
    let result = apply_all(plan, &rt, machines, &mut created, &mut timings);
    if let Err(e) = result {
        tracing::warn!(error = %e, "apply failed; removing what was created");
        for name in &created {
            if let Err(d) = netns::delete(name) {
                tracing::warn!(error = %d, "rollback");
            }
        }
        return Err(e);
    }
    Ok(timings)
}

/// Creates and configures the machines, then the pods batch by batch;
/// records every namespace it made in `created`.
fn apply_all(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    machines: Vec<NsSpec>,
    created: &mut Vec<String>,
    timings: &mut Timings,
) -> Result<(), ApplyError> {
    let anchor = netns::Anchor::create(&format!("{}.anchor", plan.prefix))?;
    let started = Instant::now();
    let (made, err) = create_namespaces(machines, rt.handle(), 4, Some(anchor.path()));
    created.extend(made.iter().map(|n| n.netns.name.clone()));
    timings.namespaces += started.elapsed();
    if let Some(e) = err {
        return Err(e);
    }
    let started = Instant::now();
    let by_name: HashMap<&str, &Ns> = made.iter().map(|n| (n.netns.name.as_str(), n)).collect();
    let bridges = rt.block_on(machines::configure(plan, &by_name))?;
    timings.configure += started.elapsed();
    let mut rest = pod_specs(plan);
    while !rest.is_empty() {
        let later = rest.split_off(POD_BATCH.min(rest.len()));
        let started = Instant::now();
        let (batch, err) = create_namespaces(rest, rt.handle(), 4, Some(anchor.path()));
        created.extend(batch.iter().map(|n| n.netns.name.clone()));
        timings.namespaces += started.elapsed();
        if let Some(e) = err {
            return Err(e);
        }
        let started = Instant::now();
        let pods: HashMap<&str, &Ns> = batch.iter().map(|n| (n.netns.name.as_str(), n)).collect();
        rt.block_on(pods::configure(plan, &by_name, &bridges, &pods))?;
        timings.configure += started.elapsed();
        // The batch's descriptors close here.
        drop(pods);
        drop(batch);
        rest = later;
    }
    Ok(())
}

/// Raises this process's open-file limit to at least `needed` (root may
/// raise the hard limit too, up to the kernel's `fs.nr_open`). A limit that
/// cannot be raised is left as it is: opening will then fail with a clear
/// EMFILE.
pub fn raise_fd_limit(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= needed {
        return;
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let want = needed.min(ceiling.max(hard));
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)) {
        tracing::debug!(error = %e, want, "raising the open-file limit");
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(want), hard);
    }
    tracing::debug!(limit = ?getrlimit(Resource::RLIMIT_NOFILE), "open-file limit");
}

pub(super) fn nl(what: String, netns: &str) -> impl FnOnce(rtnetlink::Error) -> ApplyError + '_ {
    move |source| ApplyError::Netlink {
        what,
        netns: netns.to_string(),
        source,
    }
}

pub(super) fn route_text(r: &Route) -> String {
    match r.via {
        Some(via) => format!("adding route {} via {via} dev {}", r.dst, r.dev),
        None => format!("adding route {} dev {}", r.dst, r.dev),
    }
}

/// Finds `eth0` (made by the namespace above) and brings it up, without
/// an IPv6 link-local address (see [`crate::kernel::links::no_ipv6_addresses`]).
pub(super) async fn uplink_up(h: &Handle, ns: &str) -> Result<u32, ApplyError> {
    use crate::kernel::links;
    let eth = links::index(h, "eth0")
        .await
        .map_err(nl("finding eth0".into(), ns))?;
    links::no_ipv6_addresses(h, eth)
        .await
        .map_err(nl("setting eth0's IPv6 address generation".into(), ns))?;
    links::set_index_up(h, eth)
        .await
        .map_err(nl("bringing up eth0".into(), ns))?;
    Ok(eth)
}

/// Gives `eth0` its `addresses`, brings it up as [`uplink_up`] does, then
/// adds `routes` (all through `eth0`); returns its index. The addresses
/// come before the link is up: with `arp_notify` (set in pods made while
/// the testbed runs) the kernel announces them as the link comes up, so
/// that neighbours that knew an address with another pod's MAC learn the
/// new one at once.
pub(crate) async fn configure_eth0(
    h: &Handle,
    ns: &str,
    addresses: &[crate::plan::types::IfAddr],
    routes: &[Route],
) -> Result<u32, ApplyError> {
    use crate::kernel::links;
    // The addresses before the link comes up: with `arp_notify` (set in
    // pods made while the testbed runs) the kernel announces them as the
    // link comes up, so that neighbours that knew an address with another
    // pod's MAC learn the new one at once.
    let eth = links::index(h, "eth0")
        .await
        .map_err(nl("finding eth0".into(), ns))?;
    for a in addresses {
        links::add_address(h, eth, *a)
            .await
            .map_err(nl(format!("adding {a} to eth0"), ns))?;
    }
    uplink_up(h, ns).await?;
    for r in routes {
        links::add_route(h, r, eth)
            .await
            .map_err(nl(route_text(r), ns))?;
    }
    Ok(eth)
}

pub(crate) use machines::uplink;
pub(crate) use pods::pod_interface;
