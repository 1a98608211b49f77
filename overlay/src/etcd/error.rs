//! The etcd store's errors: each names the endpoints it was talking to.

use crate::registry::RegistryError;
use std::time::Duration;

/// Why etcd could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint was given.
    #[error("no etcd endpoint given")]
    NoEndpoints,
    /// The prefix cannot be used.
    #[error(transparent)]
    Prefix(#[from] super::layout::PrefixError),
    /// The client's runtime could not start.
    #[error("starting the etcd client: {0}")]
    Runtime(std::io::Error),
    /// No endpoint answered in time.
    #[error("etcd unreachable at {endpoints} (tried for {after:?}): {reason}")]
    Unreachable {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// How long it was tried.
        after: Duration,
        /// The last error.
        reason: String,
    },
    /// A request got no answer in time.
    #[error("etcd at {endpoints}: {op}: no answer within {after:?}")]
    Timeout {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The request.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A request failed.
    #[error("etcd at {endpoints}: {op}: {source}")]
    Request {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The request.
        op: &'static str,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// The subnet is leased by another node.
    #[error("etcd at {endpoints}: {key} is already leased to {holder}")]
    Taken {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The lease key.
        key: String,
        /// The holder's PublicIP (or its raw value when unreadable).
        holder: String,
    },
    /// A value is not what it should be.
    #[error("etcd at {endpoints}: {key}: {message}")]
    Format {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl From<EtcdError> for RegistryError {
    fn from(e: EtcdError) -> RegistryError {
        RegistryError::Remote {
            store: "etcd".into(),
            message: e.to_string(),
        }
    }
}
