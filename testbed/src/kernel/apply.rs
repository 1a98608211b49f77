//! Applies a plan to the kernel: creates every namespace (in parallel
//! threads, each opening a netlink socket inside the namespace it made), then
//! configures them in three concurrent stages: bridges and loopbacks; veth
//! pairs (the fabric making every machine's uplink, each node its pods'
//! interfaces); addresses, routes and the overlay. A failure removes every
//! namespace created, and with them every interface: nothing half-built
//! remains.

use crate::kernel::netns::{self, Netns, NetnsError};
use crate::kernel::{links, qdisc};
use crate::plan::state::{kernel_impaired, needs_netem};
use crate::plan::types::{LinkPlan, NodePlan, Route};
use crate::plan::Plan;
use futures::future::try_join_all;
use overlay::Backend;
use rtnetlink::Handle;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
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
struct Ns {
    netns: Netns,
    handle: Handle,
}

fn specs(plan: &Plan) -> Vec<NsSpec> {
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
    for p in plan.pods.iter().filter(|p| p.owns_netns) {
        out.push(NsSpec {
            name: p.netns.clone(),
            sysctls: Vec::new(),
        });
    }
    out
}

/// Every namespace a plan creates.
pub fn namespaces(plan: &Plan) -> Vec<String> {
    specs(plan).into_iter().map(|s| s.name).collect()
}

/// Writes a per-namespace sysctl from a thread inside the namespace. Only
/// `net.ipv4.*`/`net.ipv6.*` keys are accepted: they are per namespace, so
/// the host's values are never touched.
fn write_sysctl(ns: &str, key: &str, value: &str) -> Result<(), NetnsError> {
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
            std::thread::spawn(move || {
                let _enter = rt.enter();
                let mut made = Vec::new();
                for spec in group {
                    let netns = match netns::create_here(&spec.name) {
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
    let started = Instant::now();
    let (made, err) = create_namespaces(specs(plan), rt.handle(), 4);
    let mut timings = Timings {
        namespaces: started.elapsed(),
        ..Timings::default()
    };
    let result = match err {
        Some(e) => Err(e),
        // A test hook: fail after the namespaces exist, to prove rollback.
        None if std::env::var("TESTBED_FAIL_AT").is_ok_and(|v| v == "configure") => Err(
            ApplyError::Unsupported("failing on purpose (TESTBED_FAIL_AT=configure)".into()),
        ),
        None => {
            let started = Instant::now();
            let by_name: HashMap<&str, &Ns> =
                made.iter().map(|n| (n.netns.name.as_str(), n)).collect();
            let r = rt.block_on(configure(plan, &by_name));
            timings.configure = started.elapsed();
            r
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "apply failed; removing what was created");
        for ns in &made {
            if let Err(d) = netns::delete(&ns.netns.name) {
                tracing::warn!(error = %d, "rollback");
            }
        }
        return Err(e);
    }
    Ok(timings)
}

fn nl(what: String, netns: &str) -> impl FnOnce(rtnetlink::Error) -> ApplyError + '_ {
    move |source| ApplyError::Netlink {
        what,
        netns: netns.to_string(),
        source,
    }
}

async fn configure(plan: &Plan, ns: &HashMap<&str, &Ns>) -> Result<(), ApplyError> {
    let get = |name: &str| -> Result<&Ns, ApplyError> {
        ns.get(name)
            .copied()
            .ok_or_else(|| ApplyError::Unsupported(format!("namespace `{name}` was not created")))
    };
    let fabric = get(&plan.fabric.netns)?;

    // Stage 1: bridges and loopbacks.
    let lan = async {
        links::add_bridge(&fabric.handle, &plan.fabric.bridge)
            .await
            .map_err(nl("creating the LAN bridge".into(), &fabric.netns.name))
    };
    let bridges = try_join_all(plan.nodes.iter().map(|n| async move {
        let h = &get(&n.netns)?.handle;
        links::add_bridge(h, &n.bridge)
            .await
            .map_err(nl(format!("creating bridge {}", n.bridge.name), &n.netns))
    }));
    let loopbacks = try_join_all(ns.values().map(|n| async move {
        links::set_up(&n.handle, "lo")
            .await
            .map_err(nl("bringing up lo".into(), &n.netns.name))
    }));
    let (lan_idx, bridge_idx, _) = futures::try_join!(lan, bridges, loopbacks)?;

    let bridge_idx = &bridge_idx;

    // Stage 2: veth pairs. The fabric makes every uplink; each node makes
    // its pods' interfaces. Requests on one handle are pipelined.
    let fd = |name: &str| -> Result<RawFd, ApplyError> { Ok(get(name)?.netns.file.as_raw_fd()) };
    let uplinks = try_join_all(
        plan.nodes
            .iter()
            .map(|n| (&n.uplink, n.netns.as_str()))
            .chain(plan.hosts.iter().map(|h| (&h.uplink, h.netns.as_str())))
            .map(|(up, machine)| async move {
                let peer_fd = fd(machine)?;
                links::add_veth(&fabric.handle, &up.peer, Some(lan_idx), &up.inner, peer_fd)
                    .await
                    .map_err(nl(
                        format!("creating uplink {} for {machine}", up.peer.name),
                        &fabric.netns.name,
                    ))
            }),
    );
    let pod_links = try_join_all(
        plan.pods
            .iter()
            .filter_map(|p| p.interface.as_ref().map(|i| (p, i)))
            .map(|(p, i)| {
                let node_idx = plan.nodes.iter().position(|n| n.name == p.node);
                async move {
                    let n = node_idx
                        .and_then(|k| plan.nodes.get(k).map(|n| (k, n)))
                        .ok_or_else(|| {
                            ApplyError::Unsupported(format!("pod {} has no node", p.name))
                        })?;
                    let h = &get(&n.1.netns)?.handle;
                    let peer_fd = fd(&p.netns)?;
                    links::add_veth(h, &i.peer, Some(bridge_idx[n.0]), &i.inner, peer_fd)
                        .await
                        .map_err(nl(
                            format!(
                                "creating interface {} of pod {}/{}",
                                i.peer.name, p.namespace, p.name
                            ),
                            &n.1.netns,
                        ))?;
                    links::set_hairpin(h, &i.peer.name).await.map_err(nl(
                        format!("setting hairpin mode on {}", i.peer.name),
                        &n.1.netns,
                    ))
                }
            }),
    );
    futures::try_join!(uplinks, pod_links)?;

    // Stage 3: addresses, routes and the overlay.
    let nodes = try_join_all(
        plan.nodes
            .iter()
            .zip(bridge_idx.iter())
            .map(|(n, &br)| async move {
                let ns = get(&n.netns)?;
                configure_node(plan, n, ns, br).await
            }),
    );
    let hosts = try_join_all(plan.hosts.iter().map(|m| async move {
        let h = &get(&m.netns)?.handle;
        let eth = uplink_up(h, &m.netns).await?;
        for a in &m.uplink.inner.addresses {
            links::add_address(h, eth, *a)
                .await
                .map_err(nl(format!("adding {a} to eth0"), &m.netns))?;
        }
        Ok::<(), ApplyError>(())
    }));
    let pods = try_join_all(plan.pods.iter().filter(|p| p.interface.is_some()).map(
        |p| async move {
            let h = &get(&p.netns)?.handle;
            let eth = uplink_up(h, &p.netns).await?;
            for a in p.interface.iter().flat_map(|i| &i.inner.addresses) {
                links::add_address(h, eth, *a)
                    .await
                    .map_err(nl(format!("adding {a} to eth0"), &p.netns))?;
            }
            for r in &p.routes {
                links::add_route(h, r, eth)
                    .await
                    .map_err(nl(route_text(r), &p.netns))?;
            }
            Ok::<(), ApplyError>(())
        },
    ));
    futures::try_join!(nodes, hosts, pods)?;

    // Stage 4: link impairments the kernel applies (the udp overlay applies
    // its nodes' in its own data path).
    try_join_all(
        kernel_impaired(plan)
            .into_iter()
            .map(|(machine, netns, up, link)| async move {
                let inner = get(netns)?;
                impair_link(machine, netns, &inner.handle, &up.inner.name, link).await?;
                impair_link(
                    machine,
                    &fabric.netns.name,
                    &fabric.handle,
                    &up.peer.name,
                    link,
                )
                .await
            }),
    )
    .await?;
    Ok(())
}

/// One end of an impaired link: netem when anything but a rate is asked
/// (the kernel must have it), tbf for a rate alone.
async fn impair_link(
    machine: &str,
    ns: &str,
    h: &Handle,
    dev: &str,
    link: &LinkPlan,
) -> Result<(), ApplyError> {
    let idx = links::index(h, dev)
        .await
        .map_err(nl(format!("finding {dev}"), ns))?;
    if needs_netem(link) {
        let known = qdisc::probe(h, idx, "netem")
            .await
            .map_err(nl("asking the kernel for netem".into(), ns))?;
        if !known {
            return Err(ApplyError::Unsupported(format!(
                "the link impairments of `{machine}` need the kernel's netem qdisc (sch_netem), and this kernel has none; impairments of nodes are applied without the kernel with `cluster.overlay: udp`, and a rate alone uses tbf"
            )));
        }
        qdisc::add_netem(h, idx, link)
            .await
            .map_err(nl(format!("adding netem to {dev} of {machine}"), ns))
    } else if let Some(rate) = link.rate {
        qdisc::add_tbf(h, idx, rate.0)
            .await
            .map_err(nl(format!("adding tbf to {dev} of {machine}"), ns))
    } else {
        Ok(())
    }
}

/// Finds `eth0` (made by the namespace above) and brings it up.
async fn uplink_up(h: &Handle, ns: &str) -> Result<u32, ApplyError> {
    let eth = links::index(h, "eth0")
        .await
        .map_err(nl("finding eth0".into(), ns))?;
    links::set_index_up(h, eth)
        .await
        .map_err(nl("bringing up eth0".into(), ns))?;
    Ok(eth)
}

fn route_text(r: &Route) -> String {
    match r.via {
        Some(via) => format!("adding route {} via {via} dev {}", r.dst, r.dev),
        None => format!("adding route {} dev {}", r.dst, r.dev),
    }
}

/// A node's addresses, its overlay device and routes. The overlay backend is
/// the pluggable part: host-gw needs only routes, vxlan a device with
/// neighbour and FDB entries, udp a daemon (not built yet).
async fn configure_node(
    plan: &Plan,
    n: &NodePlan,
    node_ns: &Ns,
    bridge: u32,
) -> Result<(), ApplyError> {
    let h = &node_ns.handle;
    let ns = n.netns.as_str();
    let eth = uplink_up(h, ns).await?;
    for a in &n.uplink.inner.addresses {
        links::add_address(h, eth, *a)
            .await
            .map_err(nl(format!("adding {a} to eth0"), ns))?;
    }
    for a in &n.bridge.addresses {
        links::add_address(h, bridge, *a)
            .await
            .map_err(nl(format!("adding {a} to {}", n.bridge.name), ns))?;
    }
    let mut devices: HashMap<String, u32> =
        HashMap::from([("eth0".to_string(), eth), (n.bridge.name.clone(), bridge)]);
    match (plan.cluster.overlay, &n.overlay) {
        (Backend::HostGw, _) => {}
        (Backend::Udp, Some(dev)) => {
            // A persistent TUN device, made from inside the node's namespace;
            // the node's overlay daemon attaches to it.
            let name = dev.iface.name.clone();
            node_ns
                .netns
                .run_in(move || overlay::tun::create_persistent(&name))?
                .map_err(|e| {
                    ApplyError::Netns(NetnsError::Sys {
                        what: "creating the TUN device",
                        name: format!("{ns}: {}", dev.iface.name),
                        source: e,
                    })
                })?;
            let idx = links::index(h, &dev.iface.name)
                .await
                .map_err(nl(format!("finding {}", dev.iface.name), ns))?;
            links::set_mtu_up(h, idx, dev.iface.mtu)
                .await
                .map_err(nl(format!("bringing up {}", dev.iface.name), ns))?;
            for a in &dev.iface.addresses {
                links::add_address(h, idx, *a)
                    .await
                    .map_err(nl(format!("adding {a} to {}", dev.iface.name), ns))?;
            }
            devices.insert(dev.iface.name.clone(), idx);
        }
        (Backend::Vxlan, Some(dev)) => {
            let idx = links::add_vxlan(h, &dev.iface, dev.vni.unwrap_or(1), eth, n.ip, dev.port)
                .await
                .map_err(nl(format!("creating vxlan device {}", dev.iface.name), ns))?;
            for a in &dev.iface.addresses {
                links::add_address(h, idx, *a)
                    .await
                    .map_err(nl(format!("adding {a} to {}", dev.iface.name), ns))?;
            }
            devices.insert(dev.iface.name.clone(), idx);
        }
        (backend, _) => {
            return Err(ApplyError::Unsupported(format!(
                "the {backend} overlay cannot be applied yet"
            )));
        }
    }
    let dev = |name: &str| {
        devices
            .get(name)
            .copied()
            .ok_or_else(|| ApplyError::Unsupported(format!("no device `{name}` in {ns}")))
    };
    for nb in &n.neighbours {
        links::add_neighbour(h, dev(&nb.dev)?, nb.ip, nb.mac)
            .await
            .map_err(nl(format!("adding neighbour {} on {}", nb.ip, nb.dev), ns))?;
    }
    for f in &n.fdb {
        links::add_fdb(h, dev(&f.dev)?, f.mac, f.dst)
            .await
            .map_err(nl(format!("adding FDB entry {} -> {}", f.mac, f.dst), ns))?;
    }
    for r in &n.routes {
        links::add_route(h, r, dev(&r.dev)?)
            .await
            .map_err(nl(route_text(r), ns))?;
    }
    Ok(())
}
