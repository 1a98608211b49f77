//! Makes the fixes of [`super::repairs`] in one namespace over rtnetlink.
//! Adding what is already there and deleting what is already gone count as
//! done, so that fixes computed from a slightly stale observation (or made
//! twice) do no harm. A missing veth end is recreated with both ends, from
//! the plan, by the helpers `up` uses (`apply::pod_interface`,
//! `apply::uplink`); recreating a pair whose two ends exist again (the
//! other namespace's fix made it) does nothing.

use super::Fix;
use crate::kernel::apply::{self, ApplyError};
use crate::kernel::links;
use crate::kernel::netns::{Netns, NetnsError};
use crate::plan::types::{PodPlan, Veth};
use crate::plan::Plan;
use rtnetlink::Handle;
use std::os::fd::AsRawFd;
use tokio::runtime::Runtime;

/// Why fixes could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Recreating a link failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The runtime could not start.
    #[error("cannot start the netlink runtime: {0}")]
    Runtime(std::io::Error),
    /// A link the testbed cannot make again while it runs.
    #[error("cannot recreate {link} in `{netns}`: only the veth pairs of pods and machines are recreated live (`testbed down` and `up` rebuild the rest)")]
    CannotRecreate {
        /// The namespace.
        netns: String,
        /// The link.
        link: String,
    },
    /// A netlink request failed.
    #[error("{what} in `{netns}`: {source}")]
    Netlink {
        /// The fix.
        what: String,
        /// Where.
        netns: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// Some fixes failed; the others were made.
    #[error("in `{netns}`, {} of the repairs failed: {}", errors.len(), errors.join("; "))]
    Incomplete {
        /// The namespace.
        netns: String,
        /// What was done.
        done: Vec<String>,
        /// What failed, and why.
        errors: Vec<String>,
    },
}

/// Makes `fixes` (from [`super::repairs`]) in namespace `netns`, each
/// independently: returns what was done (the fixes' texts), or
/// [`RepairError::Incomplete`] with what was done and what failed. `plan`
/// says how to recreate a link.
pub fn apply_fixes(netns: &str, fixes: &[Fix], plan: &Plan) -> Result<Vec<String>, RepairError> {
    if fixes.is_empty() {
        return Ok(Vec::new());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RepairError::Runtime)?;
    let ns = Netns::open(netns)?;
    let h = ns.netlink(&rt)?;
    let (mut done, mut errors) = (Vec::new(), Vec::new());
    for fix in fixes {
        let made = match fix {
            Fix::RecreateLink { link } => recreate(&rt, plan, netns, link),
            Fix::SetSysctl { key, value, .. } => {
                let (key, value, name) = (key.clone(), value.clone(), netns.to_string());
                ns.run_in(move || apply::write_sysctl(&name, &key, &value))
                    .and_then(|r| r)
                    .map(|()| true)
                    .map_err(RepairError::from)
            }
            _ => rt.block_on(one(&h, plan, netns, fix)).map(|()| true),
        };
        match made {
            Ok(true) => done.push(fix.to_string()),
            Ok(false) => {}
            Err(e) => errors.push(format!("{fix}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(RepairError::Incomplete {
            netns: netns.to_string(),
            done,
            errors,
        })
    }
}

/// Makes one fix other than a recreation or a sysctl.
async fn one(h: &Handle, plan: &Plan, netns: &str, fix: &Fix) -> Result<(), RepairError> {
    let fail = |source| RepairError::Netlink {
        what: fix.to_string(),
        netns: netns.to_string(),
        source,
    };
    let idx = |name: &str| {
        let name = name.to_string();
        async move { links::index(h, &name).await }
    };
    let tolerate = |r: links::NlResult<()>| match r {
        Err(e) if links::already(&e) => Ok(()),
        r => r,
    };
    let made: links::NlResult<()> = async {
        match fix {
            Fix::SetMac { link, mac, .. } => links::set_mac(h, idx(link).await?, *mac).await,
            Fix::SetMtu { link, mtu, .. } => links::set_mtu(h, idx(link).await?, *mtu).await,
            Fix::SetMaster { link, master, .. } => {
                let port = idx(link).await?;
                let bridge = match master {
                    Some(m) => Some(idx(m).await?),
                    None => None,
                };
                links::set_master(h, port, bridge).await?;
                if bridge.is_some() && pod_port(plan, netns, link) {
                    // A port that left its bridge lost its hairpin flag.
                    links::set_hairpin(h, link).await?;
                }
                Ok(())
            }
            Fix::SetUp { link, up } => links::set_admin(h, link, *up).await,
            Fix::DelAddress { link, addr } => {
                tolerate(links::del_address(h, idx(link).await?, *addr).await)
            }
            Fix::AddAddress { link, addr } => {
                tolerate(links::add_address(h, idx(link).await?, *addr).await)
            }
            Fix::DelRoute(r) => tolerate(links::del_route(h, r, idx(&r.dev).await?).await),
            Fix::AddRoute(r) => tolerate(links::add_route(h, r, idx(&r.dev).await?).await),
            Fix::DelNeighbour(n) => {
                tolerate(links::del_neighbour(h, idx(&n.dev).await?, n.ip).await)
            }
            Fix::AddNeighbour(n) => {
                tolerate(links::add_neighbour(h, idx(&n.dev).await?, n.ip, n.mac).await)
            }
            Fix::RecreateLink { .. } | Fix::SetSysctl { .. } => Ok(()),
        }
    }
    .await;
    made.map_err(fail)
}

/// Whether `link` in `netns` is the outer end of a pod's interface.
fn pod_port(plan: &Plan, netns: &str, link: &str) -> bool {
    plan.pods.iter().any(|p| {
        p.interface
            .as_ref()
            .is_some_and(|i| i.peer_netns == netns && i.peer.name == link)
    })
}

/// Whose veth end `link` in `netns` is.
enum Owner<'a> {
    /// A pod's interface.
    Pod(&'a PodPlan, &'a Veth),
    /// A machine's uplink: the machine's namespace, the uplink, and the
    /// machine's routes.
    Machine(&'a str, &'a Veth, &'a [crate::plan::types::Route]),
}

fn owner<'a>(plan: &'a Plan, netns: &str, link: &str) -> Option<Owner<'a>> {
    let ends = |v: &Veth, own: &str| {
        (own == netns && v.inner.name == link) || (v.peer_netns == netns && v.peer.name == link)
    };
    let pod = plan.pods.iter().filter(|p| p.owns_netns).find_map(|p| {
        let i = p.interface.as_ref()?;
        ends(i, &p.netns).then_some(Owner::Pod(p, i))
    });
    let nodes = plan
        .nodes
        .iter()
        .map(|n| (n.netns.as_str(), &n.uplink, n.routes.as_slice()));
    let hosts = plan
        .hosts
        .iter()
        .map(|h| (h.netns.as_str(), &h.uplink, &[][..]));
    pod.or_else(|| {
        nodes
            .chain(hosts)
            .find(|(own, up, _)| ends(up, own))
            .map(|(own, up, routes)| Owner::Machine(own, up, routes))
    })
}

/// Recreates the veth pair `link` of `netns` is an end of; false when both
/// ends exist (already recreated).
fn recreate(rt: &Runtime, plan: &Plan, netns: &str, link: &str) -> Result<bool, RepairError> {
    let (outer_ns, inner_ns, veth) = match owner(plan, netns, link) {
        Some(Owner::Pod(p, i)) => (i.peer_netns.as_str(), p.netns.as_str(), i),
        Some(Owner::Machine(own, up, _)) => (up.peer_netns.as_str(), own, up),
        None => {
            return Err(RepairError::CannotRecreate {
                netns: netns.into(),
                link: link.into(),
            })
        }
    };
    let (outer, inner) = (Netns::open(outer_ns)?, Netns::open(inner_ns)?);
    let (oh, ih) = (outer.netlink(rt)?, inner.netlink(rt)?);
    let nl = |ns: &str, what: String| {
        let ns = ns.to_string();
        move |source| RepairError::Netlink {
            what,
            netns: ns,
            source,
        }
    };
    rt.block_on(async {
        let present = (
            links::index(&oh, &veth.peer.name).await.is_ok(),
            links::index(&ih, &veth.inner.name).await.is_ok(),
        );
        if present == (true, true) {
            return Ok(false);
        }
        for (h, ns, name) in [
            (&oh, outer_ns, &veth.peer.name),
            (&ih, inner_ns, &veth.inner.name),
        ] {
            links::delete_if_present(h, name)
                .await
                .map_err(nl(ns, format!("deleting the rest of {name}")))?;
        }
        let bridge = links::index(&oh, &veth.peer_master)
            .await
            .map_err(nl(outer_ns, format!("finding {}", veth.peer_master)))?;
        let fd = inner.file.as_raw_fd();
        match owner(plan, netns, link) {
            Some(Owner::Pod(p, i)) => {
                apply::pod_interface(p, i, (&oh, outer_ns), bridge, (&ih, fd)).await?
            }
            Some(Owner::Machine(own, up, routes)) => {
                apply::uplink((&oh, outer_ns), bridge, up, (own, fd)).await?;
                let through: Vec<_> = routes
                    .iter()
                    .filter(|r| r.dev == up.inner.name)
                    .cloned()
                    .collect();
                apply::configure_eth0(&ih, own, &up.inner.addresses, &through).await?;
            }
            None => {}
        }
        Ok(true)
    })
}

#[cfg(test)]
#[path = "netns_tests.rs"]
mod netns_tests;
