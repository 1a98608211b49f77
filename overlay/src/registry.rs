//! The subnet registry: flannel's model of one network configuration and one
//! lease per node, in flannel's layout: `config` holds the network
//! configuration (`{"Network": .., "SubnetLen": .., "Backend": {..}}`) and
//! `subnets/<net>-<len>` one lease each, whose content is flannel's lease
//! attributes (`{"PublicIP": .., "BackendType": .., "BackendData": ..}`).
//!
//! The store is behind a small trait so that a distributed one (etcd) can be
//! added without touching the data path. The embedded [`FileStore`] keeps the
//! same keys as files under a directory: writes are atomic (temporary file
//! and rename), a lease's expiry is its file's modification time plus the
//! store's TTL (renewing rewrites it), and watchers notice changes by polling
//! [`SubnetStore::revision`], which changes whenever a lease appears, changes,
//! is renewed or goes.

use crate::cidr::Ipv4Net;
use crate::network::NetworkConfig;
use serde::{Deserialize, Serialize};
use std::fs;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// flannel's default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// flannel's lease attributes, in its JSON field names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeaseAttrs {
    /// The node's public (underlay) address.
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// The backend: udp, vxlan or host-gw.
    pub backend_type: String,
    /// Backend-specific data (vxlan: `{"VNI": 1, "VtepMAC": ".."}`; udp: null).
    pub backend_data: serde_json::Value,
}

/// A lease as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The leased subnet.
    pub subnet: Ipv4Net,
    /// Its attributes.
    pub attrs: LeaseAttrs,
    /// When it expires unless renewed.
    pub expiration: SystemTime,
}

/// A store of the network configuration and the leases.
pub trait SubnetStore: Send + Sync {
    /// The network configuration.
    fn network_config(&self) -> Result<NetworkConfig, RegistryError>;
    /// Sets the network configuration.
    fn set_network_config(&self, cfg: &NetworkConfig) -> Result<(), RegistryError>;
    /// The current leases (expired ones left out), ordered by subnet.
    fn leases(&self) -> Result<Vec<LeaseRecord>, RegistryError>;
    /// Creates or renews the lease of `subnet` for the store's TTL.
    fn put_lease(&self, subnet: Ipv4Net, attrs: &LeaseAttrs) -> Result<(), RegistryError>;
    /// Removes the lease of `subnet`.
    fn revoke(&self, subnet: Ipv4Net) -> Result<(), RegistryError>;
    /// A value that changes whenever the leases change (poll it to watch).
    fn revision(&self) -> u64;
}

/// The registry key of a subnet's lease: `subnets/10.244.1.0-24`.
pub fn lease_key(subnet: Ipv4Net) -> String {
    format!("subnets/{}-{}", subnet.network(), subnet.prefix_len())
}

/// The subnet a lease key names.
pub fn parse_lease_key(name: &str) -> Option<Ipv4Net> {
    let (addr, len) = name.rsplit_once('-')?;
    let net = Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?);
    (net.network().to_string() == addr && net.prefix_len().to_string() == len).then_some(net)
}

/// The registry as files under a directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
    ttl: Duration,
}

impl FileStore {
    /// A store under `root` with flannel's default TTL.
    pub fn new(root: impl Into<PathBuf>) -> FileStore {
        FileStore {
            root: root.into(),
            ttl: DEFAULT_TTL,
        }
    }

    /// The same store with another lease TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> FileStore {
        self.ttl = ttl;
        self
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn subnets(&self) -> PathBuf {
        self.root.join("subnets")
    }

    fn write(path: &Path, text: &str) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }
}

impl SubnetStore for FileStore {
    fn network_config(&self) -> Result<NetworkConfig, RegistryError> {
        let path = self.root.join("config");
        let text = fs::read_to_string(&path).map_err(|source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| RegistryError::Format {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn set_network_config(&self, cfg: &NetworkConfig) -> Result<(), RegistryError> {
        let text = serde_json::to_string(cfg).map_err(|e| RegistryError::Format {
            path: "config".into(),
            message: e.to_string(),
        })?;
        Self::write(&self.root.join("config"), &text)
    }

    fn leases(&self) -> Result<Vec<LeaseRecord>, RegistryError> {
        let dir = self.subnets();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        let now = SystemTime::now();
        let mut out = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(subnet) = parse_lease_key(&name) else {
                continue;
            };
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let expiration = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH) + self.ttl;
            if expiration <= now {
                continue;
            }
            // A lease being replaced may vanish between listing and reading.
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let attrs: LeaseAttrs =
                serde_json::from_str(&text).map_err(|e| RegistryError::Format {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            out.push(LeaseRecord {
                subnet,
                attrs,
                expiration,
            });
        }
        out.sort_by_key(|l| l.subnet);
        Ok(out)
    }

    fn put_lease(&self, subnet: Ipv4Net, attrs: &LeaseAttrs) -> Result<(), RegistryError> {
        let text = serde_json::to_string(attrs).map_err(|e| RegistryError::Format {
            path: lease_key(subnet),
            message: e.to_string(),
        })?;
        Self::write(&self.root.join(lease_key(subnet)), &text)
    }

    fn revoke(&self, subnet: Ipv4Net) -> Result<(), RegistryError> {
        let path = self.root.join(lease_key(subnet));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RegistryError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    fn revision(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Ok(entries) = fs::read_dir(self.subnets()) {
            let mut items: Vec<(String, Option<SystemTime>)> = entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    let m = e.metadata().ok().and_then(|m| m.modified().ok());
                    (e.file_name().to_string_lossy().into_owned(), m)
                })
                .collect();
            items.sort();
            items.hash(&mut h);
        }
        // Expiry changes the set without touching a file.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        (now / self.ttl.as_secs().max(1)).hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Backend;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("overlay-registry-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn attrs(ip: [u8; 4]) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: Ipv4Addr::from(ip),
            backend_type: "udp".into(),
            backend_data: serde_json::Value::Null,
        }
    }

    #[test]
    fn flannel_layout_and_json() {
        let dir = tmp("layout");
        let s = FileStore::new(&dir);
        let net: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        s.set_network_config(&NetworkConfig::new(net, 24, Backend::Udp).unwrap())
            .unwrap();
        let sub: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        s.put_lease(sub, &attrs([192, 168, 96, 1])).unwrap();
        let text = fs::read_to_string(dir.join("subnets/10.244.1.0-24")).unwrap();
        assert_eq!(
            text,
            r#"{"PublicIP":"192.168.96.1","BackendType":"udp","BackendData":null}"#
        );
        assert_eq!(s.network_config().unwrap().subnet_len, 24);
        let leases = s.leases().unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].subnet, sub);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn revision_changes_and_expiry_hides() {
        let dir = tmp("rev");
        let s = FileStore::new(&dir);
        let r0 = s.revision();
        let a: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        s.put_lease(a, &attrs([192, 168, 96, 1])).unwrap();
        let r1 = s.revision();
        assert_ne!(r0, r1);
        s.put_lease("10.244.2.0/24".parse().unwrap(), &attrs([192, 168, 96, 2]))
            .unwrap();
        assert_ne!(r1, s.revision());
        s.revoke(a).unwrap();
        assert_eq!(s.leases().unwrap().len(), 1);
        let short = FileStore::new(&dir).with_ttl(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            short.leases().unwrap().is_empty(),
            "expired leases are not current"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_round_trip() {
        let n: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        assert_eq!(parse_lease_key("10.244.3.0-24"), Some(n));
        assert_eq!(parse_lease_key("10.244.3.1-24"), None);
        assert_eq!(parse_lease_key("junk"), None);
    }
}
