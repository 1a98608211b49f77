//! The leases a store owns: creation only if absent (a transaction that
//! compares the key's create revision with 0), bound to an etcd lease with
//! the store's TTL; renewal (the key still bound to that etcd lease); and
//! the keep-alive task that renews the etcd lease until the store stops.

use super::{Conn, EtcdError, EtcdStore};
use crate::cidr::Ipv4Net;
use crate::registry::LeaseAttrs;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A lease this store created and renews.
pub(super) struct Owned {
    pub(super) id: i64,
    pub(super) keeper: JoinHandle<()>,
}

impl EtcdStore {
    /// Creates the lease of `subnet` if it is absent (or held by a node with
    /// the same PublicIP: this node before a restart, as flannel takes it
    /// back), bound to a new etcd lease this store keeps alive.
    pub(super) fn acquire(&self, subnet: Ipv4Net, attrs: &LeaseAttrs) -> Result<(), EtcdError> {
        let conn = self.conn.clone();
        let key = conn.layout.lease_key(subnet);
        let value = encode(&conn, &key, attrs)?;
        let (ttl, ip) = (self.ttl_secs(), attrs.public_ip);
        let id = self.call("creating a lease", create(conn, key, value, ttl, ip))?;
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
    pub(super) fn renew(
        &self,
        subnet: Ipv4Net,
        id: i64,
        attrs: &LeaseAttrs,
    ) -> Result<bool, EtcdError> {
        let conn = self.conn.clone();
        let key = conn.layout.lease_key(subnet);
        let value = encode(&conn, &key, attrs)?;
        self.call("renewing a lease", async move {
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
            let resp = conn.txn("renewing a lease", txn).await?;
            Ok(resp.succeeded() && conn.keep_alive_once(id).await?)
        })
    }
}

/// Creates lease `key` if it is absent, or takes it back from a node with
/// the same PublicIP `ip`, bound to a new etcd lease of `ttl` seconds: the
/// etcd lease's id.
async fn create(
    conn: Conn,
    key: String,
    value: Vec<u8>,
    ttl: i64,
    ip: std::net::Ipv4Addr,
) -> Result<i64, EtcdError> {
    let id = conn.grant(ttl).await?;
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
    if conn.txn("creating a lease", txn).await?.succeeded() {
        return Ok(id);
    }
    // Read again: the else branch's copy may be from a first attempt.
    let held = conn.get("reading a lease", key.clone(), None).await?;
    let held = held
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.mod_revision()));
    let holder = held
        .as_ref()
        .and_then(|(v, _)| serde_json::from_slice::<LeaseAttrs>(v).ok());
    if let (Some(h), Some((_, rev))) = (&holder, &held) {
        if h.public_ip == ip {
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, *rev)])
                .and_then([put()]);
            if conn.txn("taking a lease back", txn).await?.succeeded() {
                return Ok(id);
            }
        }
    }
    let _ = conn.revoke_lease(id).await;
    let holder = match (holder, held) {
        (Some(h), _) => h.public_ip.to_string(),
        (None, Some((v, _))) => String::from_utf8_lossy(&v).into_owned(),
        (None, None) => "another node, which just let it go".into(),
    };
    Err(EtcdError::Taken {
        endpoints: conn.endpoints.clone(),
        key,
        holder,
    })
}

/// A lease's value: flannel's attributes as JSON.
fn encode(conn: &Conn, key: &str, attrs: &LeaseAttrs) -> Result<Vec<u8>, EtcdError> {
    serde_json::to_vec(attrs).map_err(|e| EtcdError::Format {
        endpoints: conn.endpoints.clone(),
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// Keeps etcd lease `id` alive, every third of its TTL, until etcd says it
/// is gone; a broken stream is opened again after a pause that doubles
/// (up to 10 s, and never beyond a third of the TTL).
async fn keep_alive(conn: Conn, subnet: Ipv4Net, id: i64, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(300));
    let first_pause = every.min(Duration::from_millis(200));
    let mut backoff = crate::backoff::Backoff::new(first_pause, every.min(Duration::from_secs(10)));
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
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        backoff.succeeded();
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
