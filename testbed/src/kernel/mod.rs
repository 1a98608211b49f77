//! The kernel side: creating the plan's namespaces and network objects
//! (`apply`), reading them back (`observe`), and removing everything a
//! testbed owns (`teardown`); deleting connection-tracking entries
//! (`conntrack`). Talks netlink in-process; spawns nothing.

pub mod apply;
pub mod conntrack;
pub mod exiting;
pub mod links;
pub mod netns;
pub mod observe;
pub mod partition;
pub mod qdisc;
pub mod repair;
pub mod teardown;
pub mod watch;

