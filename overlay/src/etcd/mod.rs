//! The subnet registry in etcd ([`EtcdStore`]), in flannel's own layout
//! ([`layout`]): the network configuration at `<prefix>/config` and one
//! lease per node at `<prefix>/subnets/<net>-<len>`, each key bound to an
//! etcd lease with the store's TTL, created only if absent (a transaction
//! comparing the key's create revision with 0), kept alive by its owner and
//! deleted by etcd when the owner stops renewing it. [`watch`] follows the
//! leases as they change.
//!
//! The store is synchronous for its callers: it owns a small tokio runtime
//! (one worker thread) that does all the network I/O, and every call has a
//! timeout. The runtime's threads are started by [`EtcdStore::connect`], so
//! the store talks to etcd from the network namespace of the thread that
//! connected it, whichever thread calls it later.

pub mod layout;
pub mod watch;

use crate::cidr::Ipv4Net;
use crate::network::NetworkConfig;
use crate::registry::{BadLease, LeaseAttrs, LeaseRecord, LeaseScan, RegistryError, SubnetStore};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use layout::Layout;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

pub use layout::DEFAULT_PREFIX;
pub use watch::{LeaseEvent, LeaseView, LeaseWatch};

/// Leases listed per request (a bound on each response).
const PAGE: i64 = 500;

/// Why etcd could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint was given.
    #[error("no etcd endpoint given")]
    NoEndpoints,
    /// The prefix cannot be used.
    #[error(transparent)]
    Prefix(#[from] layout::PrefixError),
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

/// A lease as etcd holds it: the record, the revision that last changed it
/// and the etcd lease it is bound to (0: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdLease {
    /// The lease.
    pub record: LeaseRecord,
    /// The key's modification revision.
    pub mod_revision: i64,
    /// The etcd lease id the key is bound to.
    pub lease_id: i64,
}

/// Every lease under the prefix at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdScan {
    /// The store's revision the list was taken at.
    pub revision: i64,
    /// The leases, ordered by subnet.
    pub leases: Vec<EtcdLease>,
    /// The lease keys whose value is not a lease.
    pub bad: Vec<BadLease>,
}

impl EtcdScan {
    /// The leases without their revisions.
    pub fn into_scan(self) -> LeaseScan {
        LeaseScan {
            leases: self.leases.into_iter().map(|l| l.record).collect(),
            bad: self.bad,
        }
    }
}

/// A lease this store created and renews.
struct Owned {
    id: i64,
    keeper: JoinHandle<()>,
}

/// What the store's calls share with its background tasks.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) layout: Layout,
    pub(crate) endpoints: String,
    pub(crate) timeout: Duration,
}

impl Conn {
    pub(crate) fn request(&self, op: &'static str) -> impl Fn(etcd_client::Error) -> EtcdError {
        let endpoints = self.endpoints.clone();
        move |source| EtcdError::Request {
            endpoints: endpoints.clone(),
            op,
            source,
        }
    }

    /// Every lease, in pages of [`PAGE`] at one revision.
    pub(crate) async fn list(&self) -> Result<EtcdScan, EtcdError> {
        let mut client = self.client.clone();
        let prefix = self.layout.subnets_prefix();
        let end = prefix_end(&prefix);
        let mut from = prefix.into_bytes();
        let mut scan = EtcdScan::default();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if scan.revision > 0 {
                opts = opts.with_revision(scan.revision);
            }
            let resp = client
                .get(from.clone(), Some(opts))
                .await
                .map_err(self.request("listing the leases"))?;
            if scan.revision == 0 {
                scan.revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                match self.layout.decode(kv.key(), kv.value()) {
                    Some(Ok(record)) => scan.leases.push(EtcdLease {
                        record,
                        mod_revision: kv.mod_revision(),
                        lease_id: kv.lease(),
                    }),
                    Some(Err(bad)) => scan.bad.push(bad),
                    None => {}
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        scan.leases.sort_by_key(|l| l.record.subnet);
        Ok(scan)
    }
}

/// The end of the range of keys starting with `prefix` (etcd's prefix end:
/// the prefix with its last byte incremented).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The subnet registry in etcd.
pub struct EtcdStore {
    rt: Arc<Runtime>,
    conn: Conn,
    ttl: Duration,
    owned: Mutex<BTreeMap<Ipv4Net, Owned>>,
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://host:port`) under `prefix` and checks
    /// within `timeout` that one of them answers; every later call has the
    /// same timeout. Leases get flannel's default TTL ([`Self::with_ttl`]).
    pub fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let layout = Layout::new(prefix)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-store")
            .enable_all()
            .build()
            .map_err(EtcdError::Runtime)?;
        let joined = endpoints.join(", ");
        let unreachable = |reason: String| EtcdError::Unreachable {
            endpoints: joined.clone(),
            after: timeout,
            reason,
        };
        let eps = endpoints.to_vec();
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let task = rt.spawn(async move {
            tokio::time::timeout(timeout, async move {
                let mut client = Client::connect(eps, Some(opts)).await?;
                client.status().await?;
                Ok::<Client, etcd_client::Error>(client)
            })
            .await
        });
        let client = match rt.block_on(task) {
            Ok(Ok(Ok(client))) => client,
            Ok(Ok(Err(e))) => return Err(unreachable(e.to_string())),
            Ok(Err(_)) => return Err(unreachable("no answer".into())),
            Err(e) => return Err(unreachable(e.to_string())),
        };
        Ok(EtcdStore {
            rt: Arc::new(rt),
            conn: Conn {
                client,
                layout,
                endpoints: joined,
                timeout,
            },
            ttl: crate::registry::DEFAULT_TTL,
            owned: Mutex::new(BTreeMap::new()),
        })
    }

    /// The same store with another lease TTL (whole seconds, at least 1;
    /// etcd raises a TTL below its minimum, about 2 s by default).
    pub fn with_ttl(mut self, ttl: Duration) -> EtcdStore {
        self.ttl = ttl;
        self
    }

    /// The keys it uses.
    pub fn layout(&self) -> &Layout {
        &self.conn.layout
    }

    /// The endpoints, comma-separated, as errors name them.
    pub fn endpoints(&self) -> &str {
        &self.conn.endpoints
    }

    fn ttl_secs(&self) -> i64 {
        let s = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(s.max(1)).unwrap_or(i64::MAX)
    }

    /// Runs `fut` on the store's runtime within the timeout.
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, EtcdError>> + Send + 'static,
    ) -> Result<T, EtcdError> {
        let timeout = self.conn.timeout;
        let task = self
            .rt
            .spawn(async move { tokio::time::timeout(timeout, fut).await });
        let late = || EtcdError::Timeout {
            endpoints: self.conn.endpoints.clone(),
            op,
            after: timeout,
        };
        match self.rt.block_on(task) {
            Ok(Ok(r)) => r,
            Ok(Err(_)) | Err(_) => Err(late()),
        }
    }

    /// Every lease with its revisions, at one revision of the store.
    pub fn list(&self) -> Result<EtcdScan, EtcdError> {
        let conn = self.conn.clone();
        self.call("listing the leases", async move { conn.list().await })
    }

    /// The raw value of `key` (for inspection), `None` when absent.
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        let conn = self.conn.clone();
        let key = key.to_string();
        self.call("reading a key", async move {
            let mut c = conn.client.clone();
            let resp = c
                .get(key, None)
                .await
                .map_err(conn.request("reading a key"))?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    /// Compacts the store's history up to its current revision (what etcd's
    /// auto-compaction does; watchers behind it must re-list).
    pub fn compact(&self) -> Result<i64, EtcdError> {
        let conn = self.conn.clone();
        self.call("compacting", async move {
            let mut c = conn.client.clone();
            let resp = c.get("/", Some(GetOptions::new().with_count_only())).await;
            let rev = resp
                .map_err(conn.request("compacting"))?
                .header()
                .map_or(0, |h| h.revision());
            c.compact(rev, None)
                .await
                .map_err(conn.request("compacting"))?;
            Ok(rev)
        })
    }

    /// Follows the leases from now on (see [`watch`]); at most `capacity`
    /// events wait for the receiver.
    pub fn watch(&self, capacity: usize) -> LeaseWatch {
        LeaseWatch::start(self.rt.clone(), self.conn.clone(), None, capacity)
    }

    /// Follows the leases from just after `revision` (a revision the caller
    /// last saw): the changes since then first, or the whole set when that
    /// history was compacted.
    pub fn watch_from(&self, revision: i64, capacity: usize) -> LeaseWatch {
        LeaseWatch::start(self.rt.clone(), self.conn.clone(), Some(revision), capacity)
    }

    /// Creates the lease of `subnet` if it is absent (or held by a node with
    /// the same PublicIP: this node before a restart, as flannel takes it
    /// back), bound to a new etcd lease this store keeps alive.
    fn acquire(&self, subnet: Ipv4Net, attrs: &LeaseAttrs) -> Result<(), EtcdError> {
        let conn = self.conn.clone();
        let key = conn.layout.lease_key(subnet);
        let value = serde_json::to_string(attrs).map_err(|e| EtcdError::Format {
            endpoints: conn.endpoints.clone(),
            key: key.clone(),
            message: e.to_string(),
        })?;
        let (ttl, ip) = (self.ttl_secs(), attrs.public_ip);
        let id = self.call("creating a lease", async move {
            let mut c = conn.client.clone();
            let id = c
                .lease_grant(ttl, None)
                .await
                .map_err(conn.request("granting a lease"))?
                .id();
            let put = || {
                TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(id)),
                )
            };
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([put()])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = c.txn(txn).await.map_err(conn.request("creating a lease"))?;
            if resp.succeeded() {
                return Ok(id);
            }
            let held = held_by(&resp);
            let same_node = held
                .as_ref()
                .and_then(|(v, _)| serde_json::from_slice::<LeaseAttrs>(v).ok())
                .is_some_and(|a| a.public_ip == ip);
            if let (true, Some((_, rev))) = (same_node, &held) {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, *rev)])
                    .and_then([put()]);
                let resp = c
                    .txn(txn)
                    .await
                    .map_err(conn.request("taking a lease back"))?;
                if resp.succeeded() {
                    return Ok(id);
                }
            }
            let _ = c.lease_revoke(id).await;
            Err(EtcdError::Taken {
                endpoints: conn.endpoints.clone(),
                key,
                holder: held.map_or_else(
                    || "another node".into(),
                    |(v, _)| {
                        serde_json::from_slice::<LeaseAttrs>(&v).map_or_else(
                            |_| String::from_utf8_lossy(&v).into_owned(),
                            |a| a.public_ip.to_string(),
                        )
                    },
                ),
            })
        })?;
        let keeper = self
            .rt
            .spawn(keep_alive(self.conn.clone(), subnet, id, self.ttl));
        if let Some(old) = crate::lock(&self.owned).insert(subnet, Owned { id, keeper }) {
            old.keeper.abort();
        }
        Ok(())
    }

    /// Renews a lease this store holds and rewrites its value; false when
    /// the key is no longer bound to `id` (it expired or was taken).
    fn renew(&self, subnet: Ipv4Net, id: i64, attrs: &LeaseAttrs) -> Result<bool, EtcdError> {
        let conn = self.conn.clone();
        let key = conn.layout.lease_key(subnet);
        let value = serde_json::to_vec(attrs).unwrap_or_default();
        self.call("renewing a lease", async move {
            let mut c = conn.client.clone();
            let txn = Txn::new()
                .when([
                    Compare::lease(key.clone(), CompareOp::Equal, id),
                    Compare::value(key.clone(), CompareOp::Equal, value.clone()),
                ])
                .or_else([TxnOp::put(
                    key.clone(),
                    value,
                    Some(PutOptions::new().with_lease(id)),
                )]);
            let txn = Txn::new()
                .when([Compare::lease(key.clone(), CompareOp::Equal, id)])
                .and_then([TxnOp::txn(txn)]);
            let resp = c.txn(txn).await.map_err(conn.request("renewing a lease"))?;
            if !resp.succeeded() {
                return Ok(false);
            }
            match c.lease_keep_alive(id).await {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
                Err(e) => Err(conn.request("renewing a lease")(e)),
            }
        })
    }
}

/// The value and modification revision of the key a failed create-if-absent
/// transaction read in its else branch.
fn held_by(resp: &etcd_client::TxnResponse) -> Option<(Vec<u8>, i64)> {
    resp.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
        _ => None,
    })
}

/// Keeps etcd lease `id` alive, every third of its TTL, until etcd says it
/// is gone; a broken stream is opened again after a pause.
async fn keep_alive(conn: Conn, subnet: Ipv4Net, id: i64, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(300));
    let mut client = conn.client.clone();
    loop {
        let (mut keeper, mut stream) = match client.lease_keep_alive(id).await {
            Ok(k) => k,
            Err(etcd_client::Error::LeaseKeepAliveError(e)) => {
                tracing::warn!(%subnet, error = %e, endpoints = %conn.endpoints, "the lease is gone");
                return;
            }
            Err(e) => {
                tracing::warn!(%subnet, error = %e, endpoints = %conn.endpoints, "keeping the lease alive");
                tokio::time::sleep(every.min(Duration::from_secs(1))).await;
                continue;
            }
        };
        loop {
            tokio::time::sleep(every).await;
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match stream.message().await {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(Some(_)) => {
                    tracing::warn!(%subnet, endpoints = %conn.endpoints, "the lease expired");
                    return;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

impl Drop for EtcdStore {
    /// Stops renewing (the leases expire after their TTL, as when the node
    /// dies); [`SubnetStore::revoke`] removes one at once.
    fn drop(&mut self) {
        for (_, o) in std::mem::take(&mut *crate::lock(&self.owned)) {
            o.keeper.abort();
        }
    }
}

impl SubnetStore for EtcdStore {
    fn network_config(&self) -> Result<NetworkConfig, RegistryError> {
        let key = self.conn.layout.config_key();
        let format = |message: String| EtcdError::Format {
            endpoints: self.conn.endpoints.clone(),
            key: key.clone(),
            message,
        };
        let value = self.get_raw(&key)?.ok_or_else(|| format("absent".into()))?;
        Ok(serde_json::from_slice(&value).map_err(|e| format(e.to_string()))?)
    }

    fn set_network_config(&self, cfg: &NetworkConfig) -> Result<(), RegistryError> {
        let conn = self.conn.clone();
        let text = serde_json::to_string(cfg).map_err(|e| EtcdError::Format {
            endpoints: conn.endpoints.clone(),
            key: conn.layout.config_key(),
            message: e.to_string(),
        })?;
        self.call("writing the network config", async move {
            let mut c = conn.client.clone();
            c.put(conn.layout.config_key(), text, None)
                .await
                .map_err(conn.request("writing the network config"))?;
            Ok(())
        })?;
        Ok(())
    }

    fn scan(&self) -> Result<LeaseScan, RegistryError> {
        Ok(self.list()?.into_scan())
    }

    /// Creates the lease if absent (refused when another node holds it), or
    /// renews and updates the one this store holds.
    fn put_lease(&self, subnet: Ipv4Net, attrs: &LeaseAttrs) -> Result<(), RegistryError> {
        let held = crate::lock(&self.owned).get(&subnet).map(|o| o.id);
        if let Some(id) = held {
            if self.renew(subnet, id, attrs)? {
                return Ok(());
            }
            if let Some(o) = crate::lock(&self.owned).remove(&subnet) {
                o.keeper.abort();
            }
        }
        Ok(self.acquire(subnet, attrs)?)
    }

    /// Revokes the etcd lease of a lease this store holds (etcd deletes the
    /// key); deletes the key of any other.
    fn revoke(&self, subnet: Ipv4Net) -> Result<(), RegistryError> {
        let owned = crate::lock(&self.owned).remove(&subnet);
        let conn = self.conn.clone();
        let key = conn.layout.lease_key(subnet);
        self.call("revoking a lease", async move {
            let mut c = conn.client.clone();
            if let Some(o) = owned {
                o.keeper.abort();
                match c.lease_revoke(o.id).await {
                    Ok(_) => return Ok(()),
                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                    }
                    Err(e) => return Err(conn.request("revoking a lease")(e)),
                }
            }
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Greater, 0)])
                .and_then([TxnOp::delete(key, None)]);
            c.txn(txn).await.map_err(conn.request("deleting a lease"))?;
            Ok(())
        })?;
        Ok(())
    }

    /// A digest of the number of leases and the newest change among them
    /// (0 when etcd cannot be asked).
    fn revision(&self) -> u64 {
        let conn = self.conn.clone();
        let r = self.call("reading the lease revision", async move {
            let mut c = conn.client.clone();
            let p = conn.layout.subnets_prefix();
            let opts = GetOptions::new()
                .with_range(prefix_end(&p))
                .with_keys_only()
                .with_limit(1)
                .with_sort(
                    etcd_client::SortTarget::Mod,
                    etcd_client::SortOrder::Descend,
                );
            let resp = c
                .get(p, Some(opts))
                .await
                .map_err(conn.request("reading"))?;
            let newest = resp.kvs().first().map_or(0, |kv| kv.mod_revision());
            Ok((resp.count(), newest))
        });
        match r {
            Ok((count, newest)) => {
                let (count, newest) = (count as u64, newest as u64);
                newest.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ count
            }
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(
            prefix_end("/coreos.com/network/subnets/"),
            b"/coreos.com/network/subnets0".to_vec()
        );
    }
}
