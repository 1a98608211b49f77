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

/// A lease's value: flannel's attributes as JSON.
fn encode(conn: &Conn, key: &str, attrs: &LeaseAttrs) -> Result<Vec<u8>, EtcdError> {
    serde_json::to_vec(attrs).map_err(|e| EtcdError::Format {
        endpoints: conn.endpoints.clone(),
        key: key.to_string(),
        message: e.to_string(),
    })
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
/// is gone; a broken stream is opened again after a pause that doubles
/// (up to 10 s, and never beyond a third of the TTL).
async fn keep_alive(conn: Conn, subnet: Ipv4Net, id: i64, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(300));
    let first_pause = every.min(Duration::from_millis(200));
    let mut pause = first_pause;
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
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(every).min(Duration::from_secs(10));
                continue;
            }
        };
        pause = first_pause;
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
