//! The kernel side: creating the plan's namespaces and network objects
//! (`apply`), reading them back (`observe`), noticing when they change
//! (`watch`) and putting them back (`repair`), cutting the LAN between
//! machines (`partition`), and removing everything a testbed owns
//! (`teardown`); deleting connection-tracking entries (`conntrack`);
//! joining the LAN to other machines' (`span`). Talks netlink in-process;
//! spawns only `nft` (partitions).

pub mod apply;
pub mod conntrack;
pub mod exiting;
pub mod links;
pub mod netns;
pub mod observe;
pub mod partition;
pub mod qdisc;
pub mod repair;
pub mod span;
pub mod teardown;
#[cfg(test)]
pub(crate) mod testutil;
pub mod watch;
