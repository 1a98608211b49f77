//! flannel's key layout in etcd, as pure functions: the prefix (checked),
//! `<prefix>/config`, `<prefix>/subnets/<net>-<len>`, and the decoding of a
//! lease key and value into a [`LeaseRecord`] or a [`BadLease`].

use crate::cidr::Ipv4Net;
use crate::registry::{lease_key, parse_lease_key, BadLease, LeaseAttrs, LeaseRecord};

/// flannel's default prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";

/// The longest prefix accepted (a key is bounded by what etcd accepts in a
/// request; this leaves room for the lease part).
const MAX_PREFIX: usize = 200;

/// Why a prefix cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("etcd prefix `{prefix}`: {reason}")]
pub struct PrefixError {
    /// The prefix as given.
    pub prefix: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The keys of one network under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// The layout under `prefix`: absolute (`/` first), no trailing `/`, no
    /// empty segment, printable ASCII without spaces.
    pub fn new(prefix: &str) -> Result<Layout, PrefixError> {
        let bad = |reason| {
            Err(PrefixError {
                prefix: prefix.to_string(),
                reason,
            })
        };
        if !prefix.starts_with('/') {
            return bad("must start with /");
        }
        if prefix.len() > MAX_PREFIX {
            return bad("is longer than 200 bytes");
        }
        if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("must be printable ASCII without spaces");
        }
        if prefix.len() > 1 && prefix.ends_with('/') {
            return bad("must not end with /");
        }
        if prefix.contains("//") {
            return bad("must not hold an empty segment (//)");
        }
        Ok(Layout {
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    /// The prefix (without a trailing `/`; empty for `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/config`: the network configuration.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets/`: what every lease key starts with.
    pub fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// `<prefix>/subnets/<net>-<len>`.
    pub fn lease_key(&self, subnet: Ipv4Net) -> String {
        format!("{}/{}", self.prefix, lease_key(subnet))
    }

    /// The subnet a key names, if it is a lease key of this layout.
    pub fn subnet_of(&self, key: &[u8]) -> Option<Ipv4Net> {
        let key = std::str::from_utf8(key).ok()?;
        parse_lease_key(key.strip_prefix(&self.subnets_prefix())?)
    }

    /// Decodes a lease: `None` when `key` is not a lease key, else the lease
    /// or why its value is not one (reported under its key).
    pub fn decode(&self, key: &[u8], value: &[u8]) -> Option<Result<LeaseRecord, BadLease>> {
        let subnet = self.subnet_of(key)?;
        let bad = |error: String| BadLease {
            file: String::from_utf8_lossy(key).into_owned(),
            error,
        };
        Some(
            serde_json::from_slice::<LeaseAttrs>(value)
                .map(|attrs| LeaseRecord {
                    subnet,
                    attrs,
                    expiration: None,
                })
                .map_err(|e| bad(e.to_string())),
        )
    }
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            prefix: DEFAULT_PREFIX.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_keys() {
        let l = Layout::default();
        let n: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        assert_eq!(l.config_key(), "/coreos.com/network/config");
        assert_eq!(l.lease_key(n), "/coreos.com/network/subnets/10.244.3.0-24");
        assert_eq!(l.subnet_of(l.lease_key(n).as_bytes()), Some(n));
        assert_eq!(l.subnet_of(b"/coreos.com/network/subnets/junk"), None);
        assert_eq!(l.subnet_of(b"/other/subnets/10.244.3.0-24"), None);
        assert_eq!(Layout::new("/").unwrap().config_key(), "/config");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in [
            "",
            "rel/x",
            "/a/",
            "/a//b",
            "/a b",
            "/a\n",
            &"/x".repeat(101),
        ] {
            assert!(Layout::new(p).is_err(), "{p:?}");
        }
        assert!(Layout::new("/tb/one.net_2").is_ok());
    }

    #[test]
    fn decoding_leases() {
        let l = Layout::default();
        let key = b"/coreos.com/network/subnets/10.244.1.0-24";
        let rec = l
            .decode(
                key,
                br#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1}}"#,
            )
            .unwrap()
            .unwrap();
        assert_eq!(rec.attrs.backend_type, "vxlan");
        assert_eq!(rec.attrs.backend_data["VNI"], 1);
        let bad = l.decode(key, b"{").unwrap().unwrap_err();
        assert_eq!(bad.file, String::from_utf8_lossy(key));
        assert!(l.decode(b"/coreos.com/network/config", b"{}").is_none());
    }
}
