//! Names and MAC addresses of kernel objects. Network namespaces carry the
//! testbed's prefix (`tb-NAME.`), so that everything a testbed owns can be
//! found again without its files; interfaces live only inside those
//! namespaces and get short names within Linux's 15-character limit, made
//! unique in their namespace. MACs are derived from names.

use crate::plan::types::Mac;
use std::collections::HashSet;

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The prefix of every namespace of testbed `name`.
pub fn prefix(name: &str) -> String {
    format!("tb-{name}")
}

/// The fabric namespace, holding the LAN bridge.
pub fn fabric_netns(prefix: &str) -> String {
    format!("{prefix}.fabric")
}

/// A node's namespace.
pub fn node_netns(prefix: &str, node: &str) -> String {
    format!("{prefix}.node.{node}")
}

/// A host's namespace.
pub fn host_netns(prefix: &str, host: &str) -> String {
    format!("{prefix}.host.{host}")
}

/// A pod's own namespace (`.` cannot occur in names, so this is unambiguous).
pub fn pod_netns(prefix: &str, namespace: &str, pod: &str) -> String {
    format!("{prefix}.pod.{namespace}.{pod}")
}

/// FNV-1a, 64 bits: a hash that is the same on every machine and release.
pub fn stable_hash(parts: &[&str]) -> u64 {
    // The parts are separated by the byte 0xff, which no UTF-8 text holds.
    let mut bytes = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            bytes.push(0xff);
        }
        bytes.extend_from_slice(p.as_bytes());
    }
    proxy::fnv1a(&bytes)
}

/// Hands out MACs that are unique in the whole testbed.
#[derive(Default)]
pub struct MacAllocator {
    taken: HashSet<Mac>,
}

impl MacAllocator {
    /// The MAC of the object `key` of testbed `testbed`: locally
    /// administered, unicast, derived from the names; rehashed on a clash.
    pub fn mac(&mut self, testbed: &str, key: &str) -> Mac {
        let mut salt = 0u32;
        loop {
            let salt_text = salt.to_string();
            let h = stable_hash(&[testbed, key, &salt_text]).to_be_bytes();
            let mac = Mac([(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]);
            if self.taken.insert(mac) {
                return mac;
            }
            salt += 1;
        }
    }
}

/// Hands out interface names unique within one namespace.
#[derive(Default)]
pub struct IfNames {
    taken: HashSet<String>,
}

impl IfNames {
    /// A namespace whose interfaces already include `fixed`.
    pub fn with(fixed: &[&str]) -> IfNames {
        IfNames {
            taken: fixed.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `kind` + `name` when it fits and is free; otherwise `kind`, the start
    /// of `name`, and a hash of the whole name.
    pub fn readable(&mut self, kind: &str, name: &str) -> String {
        let plain = format!("{kind}{name}");
        if plain.len() <= IFNAME_MAX && self.taken.insert(plain.clone()) {
            return plain;
        }
        let mut salt = 0u32;
        loop {
            let salt_text = salt.to_string();
            let h = stable_hash(&[kind, name, &salt_text]);
            let tag = format!("{:04x}", h & 0xffff);
            let room = IFNAME_MAX - kind.len() - tag.len() - 1;
            let head: String = name.chars().take(room).collect();
            let candidate = format!("{kind}{head}-{tag}");
            if self.taken.insert(candidate.clone()) {
                return candidate;
            }
            salt += 1;
        }
    }

    /// `veth` and eight hex digits of a hash of `key`, as CNI plugins name
    /// the host ends of pod interfaces.
    pub fn hashed(&mut self, kind: &str, key: &str) -> String {
        let mut salt = 0u32;
        loop {
            let salt_text = salt.to_string();
            let h = stable_hash(&[key, &salt_text]);
            let candidate = format!("{kind}{:08x}", h as u32);
            if self.taken.insert(candidate.clone()) {
                return candidate;
            }
            salt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // Fixed value: a change here changes every plan.
        assert_eq!(stable_hash(&["a"]), 0xaf63dc4c8601ec8c);
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
    }

    #[test]
    fn interface_names_fit_and_differ() {
        let mut n = IfNames::default();
        let a = n.readable("n-", "a-very-long-node-name-indeed");
        let b = n.readable("n-", "a-very-long-node-name-indeed-too");
        assert!(a.len() <= IFNAME_MAX && b.len() <= IFNAME_MAX);
        assert_ne!(a, b);
        assert_eq!(n.readable("n-", "node1"), "n-node1");
        let c = n.readable("n-", "node1");
        assert_ne!(c, "n-node1");
        let v = n.hashed("veth", "default/web");
        assert_eq!(v.len(), 12);
    }

    #[test]
    fn macs_are_local_unicast_and_unique() {
        let mut m = MacAllocator::default();
        let a = m.mac("demo", "x");
        assert_eq!(a.0[0] & 0x03, 0x02);
        let b = m.mac("demo", "x");
        assert_ne!(a, b);
    }
}
