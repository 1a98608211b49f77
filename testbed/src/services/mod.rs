//! Programs the service proxy of every node of a running testbed, in the
//! plan's mode: `iptables` (kube-proxy-style chains, `proxy::iptables`),
//! `nftables` (one table, `proxy::nftables`) or `userspace` (portal rules,
//! `proxy::portals`, and a proxy process per node, `userspace`). `rules`
//! renders and loads the rules; `endpoints` keeps them following the pods.

pub mod endpoints;
pub mod rules;
pub mod userspace;

pub use endpoints::{follow_endpoints, wait_programmed, with_ready_endpoints};
pub use rules::{installed, program, rendered};

/// Why the service rules or proxies could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// A namespace could not be opened.
    #[error(transparent)]
    Netns(#[from] crate::kernel::netns::NetnsError),
    /// iptables-restore or nft failed or is missing.
    #[error("loading the service rules into node `{node}`: {message}")]
    Restore {
        /// The node.
        node: String,
        /// What went wrong.
        message: String,
    },
    /// A node's userspace proxy could not start or run.
    #[error("the userspace proxy of node `{node}`: {message}")]
    Proxy {
        /// The node.
        node: String,
        /// What went wrong.
        message: String,
    },
}
