//! The subnet registry: flannel's model of one network configuration and one
//! lease per node, in flannel's layout: `config` holds the network
//! configuration (`{"Network": .., "SubnetLen": .., "Backend": {..}}`) and
//! `subnets/<net>-<len>` one lease each, whose content is flannel's lease
//! attributes (`{"PublicIP": .., "BackendType": .., "BackendData": ..}`).
//!
//! The store is behind a small trait: the embedded [`FileStore`] here, and
//! an etcd one in `crate::etcd`, so that the data path does not depend on
//! which. The [`FileStore`] keeps the same keys as files under a
//! directory: writes are atomic and safe with several writers
//! ([`crate::atomic_file`]: a temporary file per write, then a rename), a
//! lease's expiry is its file's modification time plus the
//! store's TTL (renewing rewrites it), and watchers notice changes by polling
//! [`SubnetStore::revision`], which changes whenever a lease appears, changes,
//! is renewed or goes.
//!
//! A lease file that cannot be read (unreadable, not JSON, not a lease) is
//! skipped and reported ([`LeaseScan::bad`]), never a reason to lose the
//! others; a daemon following the registry ([`LeaseFollower`],
//! [`udp_leases`]) keeps the lease such a file last held until it is
//! readable again or removed.

use crate::atomic_file::write_atomic;
use crate::cidr::Ipv4Net;
use crate::network::NetworkConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// A remote store (etcd) failed; the message names its endpoints.
    #[error("{message}")]
    Remote {
        /// The kind of store.
        store: String,
        /// What went wrong.
        message: String,
    },
}

impl RegistryError {
    /// The file the error is about, and what is wrong with it.
    pub fn as_bad_lease(&self) -> BadLease {
        match self {
            RegistryError::Io { path, source } => BadLease {
                file: path.clone(),
                error: source.to_string(),
            },
            RegistryError::Format { path, message } => BadLease {
                file: path.clone(),
                error: message.clone(),
            },
            RegistryError::Remote { store, message } => BadLease {
                file: store.clone(),
                error: message.clone(),
            },
        }
    }
}

fn udp_backend() -> String {
    "udp".to_string()
}

/// flannel's lease attributes, in its JSON field names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeaseAttrs {
    /// The node's public (underlay) address.
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// The backend: udp, vxlan or host-gw (udp when the file leaves it out).
    #[serde(default = "udp_backend")]
    pub backend_type: String,
    /// Backend-specific data (vxlan: `{"VNI": 1, "VtepMAC": ".."}`; udp: null).
    #[serde(default)]
    pub backend_data: serde_json::Value,
}

/// A lease as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The leased subnet.
    pub subnet: Ipv4Net,
    /// Its attributes.
    pub attrs: LeaseAttrs,
    /// When it expires unless renewed (`None`: a store without expiry).
    pub expiration: Option<SystemTime>,
}

/// A lease file that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadLease {
    /// The file's path.
    pub file: String,
    /// What is wrong with it.
    pub error: String,
}

/// One look at the leases: those read, and the lease files that could not be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseScan {
    /// The current leases, ordered by subnet.
    pub leases: Vec<LeaseRecord>,
    /// The files named like leases that could not be read, by name.
    pub bad: Vec<BadLease>,
}

/// What a data-path daemon routes by: `(subnet, public IP)` of the current
/// leases, and the lease files that could not be read (for its stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseSet {
    /// The leases in force.
    pub leases: Vec<(Ipv4Net, Ipv4Addr)>,
    /// The lease files skipped at the last look.
    pub bad: Vec<BadLease>,
}

impl From<Vec<(Ipv4Net, Ipv4Addr)>> for LeaseSet {
    fn from(leases: Vec<(Ipv4Net, Ipv4Addr)>) -> LeaseSet {
        LeaseSet {
            leases,
            bad: Vec::new(),
        }
    }
}

/// A store of the network configuration and the leases.
pub trait SubnetStore: Send + Sync {
    /// The network configuration.
    fn network_config(&self) -> Result<NetworkConfig, RegistryError>;
    /// Sets the network configuration.
    fn set_network_config(&self, cfg: &NetworkConfig) -> Result<(), RegistryError>;
    /// The current leases (expired ones left out), and the leases that could
    /// not be read. An error only when the leases cannot be listed at all.
    fn scan(&self) -> Result<LeaseScan, RegistryError>;
    /// The current leases that could be read, ordered by subnet.
    fn leases(&self) -> Result<Vec<LeaseRecord>, RegistryError> {
        self.scan().map(|s| s.leases)
    }
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

/// Reads one lease file; `Ok(None)` when it is gone or expired.
fn read_lease(
    path: &Path,
    subnet: Ipv4Net,
    ttl: Option<Duration>,
    now: SystemTime,
) -> Result<Option<LeaseRecord>, RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    };
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let expiration = ttl.map(|ttl| {
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        modified.checked_add(ttl).unwrap_or(modified)
    });
    if expiration.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let attrs: LeaseAttrs = serde_json::from_str(&text).map_err(|e| RegistryError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(Some(LeaseRecord {
        subnet,
        attrs,
        expiration,
    }))
}

/// Reads the lease files in `dir` (files named `<net>-<len>`; other names
/// are not leases and are ignored): those that expired (modified more than
/// `ttl` ago) are left out, those that cannot be read are reported. An error
/// only when `dir` exists but cannot be listed.
pub fn scan_lease_dir(dir: &Path, ttl: Option<Duration>) -> Result<LeaseScan, RegistryError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LeaseScan::default()),
        Err(source) => {
            return Err(RegistryError::Io {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    let now = SystemTime::now();
    let mut scan = LeaseScan::default();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(subnet) = parse_lease_key(&name) else {
            continue;
        };
        match read_lease(&entry.path(), subnet, ttl, now) {
            Ok(Some(lease)) => scan.leases.push(lease),
            Ok(None) => {}
            Err(e) => scan.bad.push(e.as_bad_lease()),
        }
    }
    scan.leases.sort_by_key(|l| l.subnet);
    scan.bad.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(scan)
}

/// Follows the leases across looks: a lease file that cannot be read keeps
/// the lease it last held (until it is readable again or removed), and when
/// the leases cannot be listed at all the last set stays.
#[derive(Clone, Debug, Default)]
pub struct LeaseFollower {
    last: BTreeMap<Ipv4Net, LeaseRecord>,
}

impl LeaseFollower {
    /// A follower that has seen nothing yet.
    pub fn new() -> LeaseFollower {
        LeaseFollower::default()
    }

    /// The leases in force after the look `scan`, and the files skipped.
    pub fn update(&mut self, scan: Result<LeaseScan, RegistryError>) -> LeaseScan {
        let scan = match scan {
            Ok(s) => s,
            Err(e) => {
                return LeaseScan {
                    leases: self.last.values().cloned().collect(),
                    bad: vec![e.as_bad_lease()],
                }
            }
        };
        let mut now: BTreeMap<Ipv4Net, LeaseRecord> =
            scan.leases.into_iter().map(|l| (l.subnet, l)).collect();
        for b in &scan.bad {
            let name = Path::new(&b.file).file_name().map(|n| n.to_string_lossy());
            let Some(subnet) = name.as_deref().and_then(parse_lease_key) else {
                continue;
            };
            if let Some(kept) = self.last.get(&subnet) {
                now.entry(subnet).or_insert_with(|| kept.clone());
            }
        }
        self.last = now;
        LeaseScan {
            leases: self.last.values().cloned().collect(),
            bad: scan.bad,
        }
    }
}

/// A lease source for the udp data path ([`crate::daemon::LeaseSource`]):
/// each call looks at the leases with `scan` and returns the udp leases in
/// force, as [`LeaseFollower`] keeps them, with the files skipped.
pub fn udp_leases(
    mut scan: impl FnMut() -> Result<LeaseScan, RegistryError> + Send,
) -> impl FnMut() -> LeaseSet + Send {
    let mut follower = LeaseFollower::new();
    move || {
        let s = follower.update(scan());
        LeaseSet {
            leases: s
                .leases
                .iter()
                .filter(|l| l.attrs.backend_type == "udp")
                .map(|l| (l.subnet, l.attrs.public_ip))
                .collect(),
            bad: s.bad,
        }
    }
}

/// The registry as files under a directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
    /// Whether the lease files may be directly in `root` (when it has no
    /// `subnets` directory, looked at each time: [`FileStore::reading`]).
    flat: bool,
    /// Leases older than this are expired; `None`: never (the files are
    /// the truth).
    ttl: Option<Duration>,
}

impl FileStore {
    /// A store under `root` with flannel's default TTL.
    pub fn new(root: impl Into<PathBuf>) -> FileStore {
        FileStore {
            root: root.into(),
            flat: false,
            ttl: Some(DEFAULT_TTL),
        }
    }

    /// A store reading the lease files of `dir` as they are, as the
    /// standalone daemon does: those of `dir/subnets` when it exists, else
    /// those directly in `dir`; no lease expires.
    pub fn reading(dir: impl Into<PathBuf>) -> FileStore {
        FileStore {
            root: dir.into(),
            flat: true,
            ttl: None,
        }
    }

    /// The same store with another lease TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> FileStore {
        self.ttl = Some(ttl);
        self
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn subnets(&self) -> PathBuf {
        let sub = self.root.join("subnets");
        if self.flat && !sub.is_dir() {
            self.root.clone()
        } else {
            sub
        }
    }

    /// The file of `subnet`'s lease.
    fn lease_path(&self, subnet: Ipv4Net) -> PathBuf {
        self.subnets()
            .join(format!("{}-{}", subnet.network(), subnet.prefix_len()))
    }

    fn write(path: &Path, text: &str) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        write_atomic(path, text.as_bytes()).map_err(io)
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

    fn scan(&self) -> Result<LeaseScan, RegistryError> {
        scan_lease_dir(&self.subnets(), self.ttl)
    }

    fn put_lease(&self, subnet: Ipv4Net, attrs: &LeaseAttrs) -> Result<(), RegistryError> {
        let text = serde_json::to_string(attrs).map_err(|e| RegistryError::Format {
            path: lease_key(subnet),
            message: e.to_string(),
        })?;
        Self::write(&self.lease_path(subnet), &text)
    }

    fn revoke(&self, subnet: Ipv4Net) -> Result<(), RegistryError> {
        let path = self.lease_path(subnet);
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
            // Lease files only: temporary files come and go with every write.
            let mut items: Vec<(String, Option<SystemTime>)> = entries
                .filter_map(|e| e.ok())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e))
                .filter(|(name, _)| parse_lease_key(name).is_some())
                .map(|(name, e)| (name, e.metadata().ok().and_then(|m| m.modified().ok())))
                .collect();
            items.sort();
            items.hash(&mut h);
        }
        // Expiry changes the set without touching a file.
        if let Some(ttl) = self.ttl {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            (now / ttl.as_secs().max(1)).hash(&mut h);
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Backend;

    /// The standalone daemon's view: lease files directly in a directory,
    /// or in its `subnets` once that exists; nothing expires.
    #[test]
    fn a_reading_store_takes_the_files_as_they_are() {
        let dir = tmp();
        let attrs = LeaseAttrs {
            public_ip: "192.168.96.2".parse().unwrap(),
            backend_type: "udp".into(),
            backend_data: serde_json::Value::Null,
        };
        let text = serde_json::to_string(&attrs).unwrap();
        fs::write(dir.path().join("10.244.2.0-24"), &text).unwrap();
        let old = SystemTime::now() - Duration::from_secs(48 * 3600);
        fs::File::options()
            .write(true)
            .open(dir.path().join("10.244.2.0-24"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let s = FileStore::reading(dir.path());
        let subnets = |s: &FileStore| -> Vec<String> {
            s.scan()
                .unwrap()
                .leases
                .iter()
                .map(|l| l.subnet.to_string())
                .collect()
        };
        assert_eq!(
            subnets(&s),
            ["10.244.2.0/24"],
            "a day-old file does not expire"
        );
        // Once `subnets/` exists, it is where the leases are.
        fs::create_dir(dir.path().join("subnets")).unwrap();
        assert!(subnets(&s).is_empty());
        s.put_lease("10.244.3.0/24".parse().unwrap(), &attrs)
            .unwrap();
        assert_eq!(subnets(&s), ["10.244.3.0/24"]);
        assert!(dir.path().join("subnets/10.244.3.0-24").is_file());
        assert!(subnets(&FileStore::new(dir.path())) == ["10.244.3.0/24"]);
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
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
        let tmp = tmp();
        let dir = tmp.path();
        let s = FileStore::new(dir);
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
        // flannel's attributes without the backend fields: a udp lease.
        let lax: LeaseAttrs = serde_json::from_str(r#"{"PublicIP":"192.168.96.9"}"#).unwrap();
        assert_eq!(
            (lax.backend_type.as_str(), lax.backend_data),
            ("udp", serde_json::Value::Null)
        );
    }

    #[test]
    fn revision_changes_and_expiry_hides() {
        let tmp = tmp();
        let dir = tmp.path();
        let s = FileStore::new(dir);
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
        let short = FileStore::new(dir).with_ttl(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            short.leases().unwrap().is_empty(),
            "expired leases are not current"
        );
        // A temporary file of a write in progress is not a change.
        let r = s.revision();
        fs::write(dir.join("subnets/.10.244.2.0-24.1.1.tmp"), "x").unwrap();
        assert_eq!(r, s.revision());
    }

    #[test]
    fn keys_round_trip() {
        let n: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        assert_eq!(parse_lease_key("10.244.3.0-24"), Some(n));
        assert_eq!(parse_lease_key("10.244.3.1-24"), None);
        assert_eq!(parse_lease_key("junk"), None);
    }

    /// Issue 9: `10.244.1.0-25` and `10.244.1.128-25` once shared the
    /// temporary file `10.244.1.tmp`, so that two renewals at the same moment
    /// could fail or write one node's lease with the other's address. Two
    /// writers renew them at once while a reader checks every lease it sees.
    #[test]
    fn two_writers_of_neighbouring_leases_never_mix_them() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let tmp = tmp();
        let store = FileStore::new(tmp.path());
        let leases = [
            (net("10.244.1.0/25"), [192, 168, 96, 1]),
            (net("10.244.1.128/25"), [192, 168, 96, 2]),
        ];
        // Writers that ended (even by a panic), so that the reader stops.
        struct Ended<'a>(&'a AtomicUsize);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let ended = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let writers: Vec<_> = leases
                .iter()
                .map(|&(subnet, ip)| {
                    let store = store.clone();
                    let ended = &ended;
                    s.spawn(move || {
                        let _ended = Ended(ended);
                        for i in 0..400 {
                            store
                                .put_lease(subnet, &attrs(ip))
                                .unwrap_or_else(|e| panic!("write {i} of {subnet}: {e}"));
                        }
                    })
                })
                .collect();
            let reader = s.spawn(|| {
                let mut seen = 0;
                while ended.load(Ordering::SeqCst) < 2 {
                    let scan = store.scan().unwrap();
                    assert!(scan.bad.is_empty(), "{:?}", scan.bad);
                    for l in &scan.leases {
                        let want = leases.iter().find(|x| x.0 == l.subnet).unwrap().1;
                        assert_eq!(l.attrs.public_ip, Ipv4Addr::from(want), "{}", l.subnet);
                        seen += 1;
                    }
                }
                seen
            });
            let seen = reader.join().unwrap();
            for w in writers {
                w.join().unwrap();
            }
            assert!(seen > 0);
        });
        let names: Vec<String> = fs::read_dir(tmp.path().join("subnets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    /// A corrupt lease file beside good ones: the good ones are read, the
    /// corrupt one is reported with its path and error.
    #[test]
    fn a_corrupt_lease_file_is_skipped_and_reported() {
        let tmp = tmp();
        let s = FileStore::new(tmp.path());
        s.put_lease(net("10.244.1.0/24"), &attrs([192, 168, 96, 1]))
            .unwrap();
        s.put_lease(net("10.244.3.0/24"), &attrs([192, 168, 96, 3]))
            .unwrap();
        let bad = tmp.path().join("subnets/10.244.2.0-24");
        fs::write(&bad, "{\"PublicIP\": 12").unwrap();
        fs::write(tmp.path().join("subnets/junk"), "not a lease name").unwrap();
        let scan = s.scan().unwrap();
        let subnets: Vec<Ipv4Net> = scan.leases.iter().map(|l| l.subnet).collect();
        assert_eq!(subnets, [net("10.244.1.0/24"), net("10.244.3.0/24")]);
        assert_eq!(scan.bad.len(), 1);
        assert_eq!(scan.bad[0].file, bad.display().to_string());
        assert!(
            scan.bad[0].error.contains("line 1"),
            "{}",
            scan.bad[0].error
        );
        assert_eq!(s.leases().unwrap().len(), 2);
    }

    /// The follower keeps a lease whose file became unreadable, until the
    /// file is readable again or removed; a file never read is not a lease;
    /// an unlistable directory keeps the whole set.
    #[test]
    fn the_last_good_lease_is_kept_while_its_file_is_bad() {
        let tmp = tmp();
        let s = FileStore::new(tmp.path());
        let (a, b) = (net("10.244.1.0/24"), net("10.244.2.0/24"));
        s.put_lease(a, &attrs([192, 168, 96, 1])).unwrap();
        s.put_lease(b, &attrs([192, 168, 96, 2])).unwrap();
        let mut source = udp_leases(|| s.scan());
        let both = vec![
            (a, Ipv4Addr::new(192, 168, 96, 1)),
            (b, Ipv4Addr::new(192, 168, 96, 2)),
        ];
        assert_eq!(source().leases, both);
        let b_file = tmp.path().join("subnets/10.244.2.0-24");
        fs::write(&b_file, "garbage").unwrap();
        let set = source();
        assert_eq!(set.leases, both, "the last good lease of b is kept");
        assert_eq!(set.bad.len(), 1);
        // Readable again, with a new address: that one.
        s.put_lease(b, &attrs([192, 168, 96, 22])).unwrap();
        let set = source();
        assert_eq!(set.leases[1], (b, Ipv4Addr::new(192, 168, 96, 22)));
        assert!(set.bad.is_empty());
        // Bad, then removed: gone.
        fs::write(&b_file, "garbage").unwrap();
        assert_eq!(source().leases.len(), 2);
        fs::remove_file(&b_file).unwrap();
        assert_eq!(source().leases, both[..1]);
        // A new lease that is bad from the start is reported, not routed.
        let c_file = tmp.path().join("subnets/10.244.3.0-24");
        fs::write(&c_file, "{}").unwrap();
        let set = source();
        assert_eq!((set.leases.len(), set.bad.len()), (1, 1));
        // Other backends are not the udp data path's.
        let mut vx = attrs([192, 168, 96, 4]);
        vx.backend_type = "vxlan".into();
        s.put_lease(net("10.244.4.0/24"), &vx).unwrap();
        assert_eq!(source().leases.len(), 1);
        // The directory cannot be listed: the last set stays, the error is told.
        let mut follower = LeaseFollower::new();
        follower.update(s.scan());
        let err = RegistryError::Io {
            path: "subnets".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let kept = follower.update(Err(err));
        assert_eq!(kept.leases.len(), 2);
        assert_eq!(kept.bad[0].file, "subnets");
    }
}
