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

mod conn;
mod error;
mod kv;
pub mod layout;
mod lease;
pub mod watch;

use crate::cidr::Ipv4Net;
use crate::network::NetworkConfig;
use crate::registry::{BadLease, LeaseAttrs, LeaseRecord, LeaseScan, RegistryError, SubnetStore};
use conn::Conn;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use layout::Layout;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Runtime;

pub use error::EtcdError;
pub use kv::PrefixList;
pub use layout::DEFAULT_PREFIX;
pub use watch::{LeaseEvent, LeaseView, LeaseWatch};

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

/// The store's runtime: one worker thread that does all the I/O. Dropping it
/// does not wait for its tasks, so that it may be dropped anywhere.
pub(crate) struct Rt(Option<Runtime>);

impl Rt {
    fn rt(&self) -> &Runtime {
        // Only `drop` takes it out.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("runtime used after drop"))
    }

    /// Spawns `task` on the runtime.
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt().spawn(task)
    }

    /// Blocks the calling (non-async) thread on `f`, which runs on the
    /// calling thread but uses the runtime's timers.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt().block_on(f)
    }

    /// Runs `fut` on the runtime's thread and waits for it at most
    /// `timeout` (`None`: no result in time). The calling thread only waits
    /// on a channel, so it may be any thread.
    pub(crate) fn within<T: Send + 'static>(
        &self,
        timeout: Duration,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.spawn(async move {
            if let Ok(r) = tokio::time::timeout(timeout, fut).await {
                let _ = tx.send(r);
            }
        });
        rx.recv_timeout(timeout + Duration::from_secs(1)).ok()
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The subnet registry in etcd.
pub struct EtcdStore {
    rt: Arc<Rt>,
    conn: Conn,
    ttl: Duration,
    owned: Mutex<BTreeMap<Ipv4Net, lease::Owned>>,
    session: Mutex<kv::Session>,
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
        let rt = Rt(Some(rt));
        let endpoints = joined.clone();
        let reached = rt.within(timeout, async move {
            let client = Client::connect(eps, Some(opts))
                .await
                .map_err(|e| e.to_string())?;
            let conn = Conn {
                client,
                layout,
                endpoints,
                timeout,
            };
            match conn.status().await {
                Ok(_) => Ok(conn),
                Err(EtcdError::Request { source, .. }) => Err(source.to_string()),
                Err(e) => Err(e.to_string()),
            }
        });
        let conn = match reached {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => return Err(unreachable(e)),
            None => return Err(unreachable("no answer".into())),
        };
        Ok(EtcdStore {
            rt: Arc::new(rt),
            conn,
            ttl: crate::registry::DEFAULT_TTL,
            owned: Mutex::new(BTreeMap::new()),
            session: Mutex::new(kv::Session::default()),
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
        self.rt.within(timeout, fut).unwrap_or_else(|| {
            Err(EtcdError::Timeout {
                endpoints: self.conn.endpoints.clone(),
                op,
                after: timeout,
            })
        })
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
            let resp = conn.get("reading a key", key, None).await?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        })
    }

    /// Compacts the store's history up to its current revision (what etcd's
    /// auto-compaction does; watchers behind it must re-list).
    pub fn compact(&self) -> Result<i64, EtcdError> {
        let conn = self.conn.clone();
        self.call("compacting", async move {
            let opts = GetOptions::new().with_count_only();
            let resp = conn.get("compacting", "/", Some(opts)).await?;
            let rev = resp.header().map_or(0, |h| h.revision());
            conn.compact(rev).await?;
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
}

impl Drop for EtcdStore {
    /// Stops renewing (the leases expire after their TTL, as when the node
    /// dies); [`SubnetStore::revoke`] removes one at once.
    fn drop(&mut self) {
        for (_, o) in std::mem::take(&mut *crate::lock(&self.owned)) {
            o.keeper.abort();
        }
        crate::lock(&self.session).stop();
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
            let key = conn.layout.config_key();
            conn.put("writing the network config", key, text, None)
                .await
        })?;
        Ok(())
    }

    /// The leases (their `expiration` is `None`: etcd deletes a lease
    /// whose TTL ran out, so every lease listed is current).
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
            if let Some(o) = owned {
                o.keeper.abort();
                if conn.revoke_lease(o.id).await? {
                    return Ok(());
                }
            }
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Greater, 0)])
                .and_then([TxnOp::delete(key, None)]);
            conn.txn("deleting a lease", txn).await.map(|_| ())
        })?;
        Ok(())
    }

    /// A digest of the number of leases and the newest change among them
    /// (0 when etcd cannot be asked).
    fn revision(&self) -> u64 {
        let conn = self.conn.clone();
        let r = self.call("reading the lease revision", async move {
            let p = conn.layout.subnets_prefix();
            let opts = GetOptions::new()
                .with_range(conn::prefix_end(&p))
                .with_keys_only()
                .with_limit(1)
                .with_sort(
                    etcd_client::SortTarget::Mod,
                    etcd_client::SortOrder::Descend,
                );
            let resp = conn
                .get("reading the lease revision", p, Some(opts))
                .await?;
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
