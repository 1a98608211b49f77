//! Keys of the store's own beside flannel's layout: plain reads, writes and
//! deletions under any prefix, and *held* keys: keys bound to one etcd
//! lease of the store's TTL (the store's session), kept alive by a task, so
//! that they vanish when their owner stops (a machine's heartbeat). A
//! session etcd let expire (an outage longer than the TTL) is granted anew
//! and every held key written again by [`EtcdStore::refresh_held`].

use super::{conn::prefix_end, EtcdError, EtcdStore};
use etcd_client::{GetOptions, PutOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Keys listed per request (a bound on each response).
const PAGE: i64 = 500;

/// The session: the etcd lease the held keys are bound to, and the keys.
#[derive(Default)]
pub(super) struct Session {
    id: Option<i64>,
    lost: Arc<AtomicBool>,
    keeper: Option<tokio::task::JoinHandle<()>>,
    keys: BTreeMap<String, Vec<u8>>,
}

impl Session {
    pub(super) fn stop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
    }
}

/// What [`EtcdStore::list_prefix`] found: the revision of the store it was
/// read at, and every key under the prefix with its value, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixList {
    /// The store's revision.
    pub revision: i64,
    /// Keys and values.
    pub kvs: Vec<(String, Vec<u8>)>,
}

impl EtcdStore {
    /// Every key under `prefix` (in pages, at one revision).
    pub fn list_prefix(&self, prefix: &str) -> Result<PrefixList, EtcdError> {
        let conn = self.conn.clone();
        let prefix = prefix.to_string();
        self.call("listing keys", async move {
            let end = prefix_end(&prefix);
            let mut from = prefix.into_bytes();
            let mut out = PrefixList::default();
            loop {
                let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                if out.revision > 0 {
                    opts = opts.with_revision(out.revision);
                }
                let resp = conn.get("listing keys", from.clone(), Some(opts)).await?;
                if out.revision == 0 {
                    out.revision = resp.header().map_or(0, |h| h.revision());
                }
                for kv in resp.kvs() {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    out.kvs.push((key, kv.value().to_vec()));
                }
                match resp.kvs().last() {
                    Some(last) if resp.more() => {
                        from = last.key().to_vec();
                        from.push(0);
                    }
                    _ => break,
                }
            }
            Ok(out)
        })
    }

    /// Writes `key` (not held: it stays until deleted).
    pub fn put_raw(&self, key: &str, value: &[u8]) -> Result<(), EtcdError> {
        let conn = self.conn.clone();
        let (key, value) = (key.to_string(), value.to_vec());
        self.call("writing a key", async move {
            conn.put("writing a key", key, value, None).await
        })
    }

    /// Writes `key` bound to an etcd lease of its own of `ttl` (at least a
    /// second): it goes by itself after that, whatever happens to the
    /// writer.
    pub fn put_expiring(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), EtcdError> {
        let conn = self.conn.clone();
        let (key, value) = (key.to_string(), value.to_vec());
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        self.call("writing an expiring key", async move {
            let id = conn.grant(secs).await?;
            let opts = PutOptions::new().with_lease(id);
            conn.put("writing an expiring key", key, value, Some(opts))
                .await
        })
    }

    /// Deletes every key under `prefix`; how many there were.
    pub fn delete_prefix(&self, prefix: &str) -> Result<i64, EtcdError> {
        let conn = self.conn.clone();
        let prefix = prefix.to_string();
        self.call("deleting keys", async move {
            let opts = etcd_client::DeleteOptions::new().with_range(prefix_end(&prefix));
            let resp = conn
                .retry("deleting keys", |mut c| {
                    let (p, o) = (prefix.clone(), opts.clone());
                    async move { c.delete(p, Some(o)).await }
                })
                .await?;
            Ok(resp.deleted())
        })
    }

    /// Writes `key` bound to the store's session (granted on first use):
    /// it goes when the session does ([`Self::release_held`], the process
    /// ending, or etcd not hearing from it for the TTL).
    pub fn put_held(&self, key: &str, value: &[u8]) -> Result<(), EtcdError> {
        let id = self.session_id()?;
        crate::lock(&self.session)
            .keys
            .insert(key.to_string(), value.to_vec());
        let conn = self.conn.clone();
        let (key, value) = (key.to_string(), value.to_vec());
        self.call("writing a held key", async move {
            let opts = PutOptions::new().with_lease(id);
            conn.put("writing a held key", key, value, Some(opts)).await
        })
    }

    /// When etcd let the session expire (it did not hear from this store
    /// for the TTL), grants a new one and writes every held key again.
    /// True when it did.
    pub fn refresh_held(&self) -> Result<bool, EtcdError> {
        let lost = {
            let s = crate::lock(&self.session);
            s.id.is_some() && s.lost.load(Ordering::SeqCst)
        };
        if !lost {
            return Ok(false);
        }
        let keys = {
            let mut s = crate::lock(&self.session);
            s.stop();
            s.id = None;
            std::mem::take(&mut s.keys)
        };
        for (k, v) in &keys {
            self.put_held(k, v)?;
        }
        Ok(true)
    }

    /// Revokes the session: every held key goes at once.
    pub fn release_held(&self) -> Result<(), EtcdError> {
        let id = {
            let mut s = crate::lock(&self.session);
            s.stop();
            s.keys.clear();
            s.id.take()
        };
        let Some(id) = id else {
            return Ok(());
        };
        let conn = self.conn.clone();
        self.call("revoking the session", async move {
            conn.revoke_lease(id).await.map(|_| ())
        })
    }

    /// The session's etcd lease, granted and kept alive on first use.
    fn session_id(&self) -> Result<i64, EtcdError> {
        if let Some(id) = crate::lock(&self.session).id {
            return Ok(id);
        }
        let conn = self.conn.clone();
        let ttl = self.ttl_secs();
        let id = self.call("granting the session", async move { conn.grant(ttl).await })?;
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = self
            .rt
            .spawn(keep_session(self.conn.clone(), id, self.ttl, lost.clone()));
        let mut s = crate::lock(&self.session);
        s.stop();
        *s = Session {
            id: Some(id),
            lost,
            keeper: Some(keeper),
            keys: std::mem::take(&mut s.keys),
        };
        Ok(id)
    }
}

/// Keeps the session `id` alive every third of `ttl`; sets `lost` when etcd
/// says it is gone (it expired during an outage). A broken stream is
/// opened again after a short pause.
async fn keep_session(conn: super::Conn, id: i64, ttl: Duration, lost: Arc<AtomicBool>) {
    let every = (ttl / 3).max(Duration::from_millis(300));
    let pause = every.min(Duration::from_millis(200));
    let mut client = conn.client.clone();
    loop {
        let (mut keeper, mut stream) = match client.lease_keep_alive(id).await {
            Ok(k) => k,
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => break,
            Err(e) => {
                tracing::debug!(error = %e, endpoints = %conn.endpoints, "keeping the session alive");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        loop {
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match stream.message().await {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(Some(_)) => {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(None) | Err(_) => break,
            }
            tokio::time::sleep(every).await;
        }
        tokio::time::sleep(pause).await;
    }
    lost.store(true, Ordering::SeqCst);
}
