//! The connection the store's calls and background tasks share, and the
//! requests they make through it. A request that did not reach etcd (no
//! connection to the endpoint the client picked: a transport error or
//! `Unavailable`) is tried again after a short pause that doubles, so that
//! a dead endpoint beside live ones costs a retry rather than an error,
//! until three quarters of the timeout have passed; then the last error is
//! returned.

use super::layout::Layout;
use super::{EtcdError, EtcdLease, EtcdScan};
use etcd_client::{Client, GetOptions, GetResponse, PutOptions, StatusResponse, Txn, TxnResponse};
use std::future::Future;
use std::time::Duration;

/// Leases listed per request (a bound on each response).
const PAGE: i64 = 500;
/// The first pause before a request is tried again; it doubles up to
/// [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(10);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What the store's calls share with its background tasks.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) layout: Layout,
    pub(crate) endpoints: String,
    pub(crate) timeout: Duration,
}

/// Whether a request failed before etcd got it (safe to send again).
fn unreached(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

impl Conn {
    /// The error of request `op`, naming the endpoints.
    pub(crate) fn request(&self, op: &'static str) -> impl Fn(etcd_client::Error) -> EtcdError {
        let endpoints = self.endpoints.clone();
        move |source| EtcdError::Request {
            endpoints: endpoints.clone(),
            op,
            source,
        }
    }

    /// Sends the request `send` makes, again while it does not reach etcd.
    pub(crate) async fn retry<T, Fut>(
        &self,
        op: &'static str,
        mut send: impl FnMut(Client) -> Fut,
    ) -> Result<T, EtcdError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout * 3 / 4;
        let mut backoff = crate::backoff::Backoff::new(RETRY_PAUSE, MAX_RETRY_PAUSE);
        loop {
            match send(self.client.clone()).await {
                Err(e)
                    if unreached(&e) && tokio::time::Instant::now() + backoff.next() < deadline =>
                {
                    tracing::debug!(op, error = %e, endpoints = %self.endpoints, "trying again");
                    tokio::time::sleep(backoff.failed()).await;
                }
                r => return r.map_err(self.request(op)),
            }
        }
    }

    pub(crate) async fn status(&self) -> Result<StatusResponse, EtcdError> {
        self.retry("status", |mut c| async move { c.status().await })
            .await
    }

    pub(crate) async fn get(
        &self,
        op: &'static str,
        key: impl Into<Vec<u8>>,
        opts: Option<GetOptions>,
    ) -> Result<GetResponse, EtcdError> {
        let key = key.into();
        self.retry(op, |mut c| {
            let (key, opts) = (key.clone(), opts.clone());
            async move { c.get(key, opts).await }
        })
        .await
    }

    pub(crate) async fn put(
        &self,
        op: &'static str,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        opts: Option<PutOptions>,
    ) -> Result<(), EtcdError> {
        let (key, value) = (key.into(), value.into());
        self.retry(op, |mut c| {
            let (key, value, opts) = (key.clone(), value.clone(), opts.clone());
            async move { c.put(key, value, opts).await }
        })
        .await
        .map(|_| ())
    }

    pub(crate) async fn txn(&self, op: &'static str, txn: Txn) -> Result<TxnResponse, EtcdError> {
        self.retry(op, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// A new etcd lease of `ttl` seconds: its id.
    pub(crate) async fn grant(&self, ttl: i64) -> Result<i64, EtcdError> {
        self.retry("granting a lease", |mut c| async move {
            c.lease_grant(ttl, None).await
        })
        .await
        .map(|r| r.id())
    }

    /// Revokes etcd lease `id` (its keys go); false when etcd has no such
    /// lease (it expired).
    pub(crate) async fn revoke_lease(&self, id: i64) -> Result<bool, EtcdError> {
        let r = self
            .retry("revoking a lease", |mut c| async move {
                c.lease_revoke(id).await
            })
            .await;
        lease_found(r)
    }

    /// Renews etcd lease `id` once; false when etcd has no such lease.
    pub(crate) async fn keep_alive_once(&self, id: i64) -> Result<bool, EtcdError> {
        let r = self
            .retry("renewing a lease", |mut c| async move {
                c.lease_keep_alive(id).await
            })
            .await;
        lease_found(r)
    }

    /// Compacts the history up to `revision`.
    pub(crate) async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        self.retry("compacting", |mut c| async move {
            c.compact(revision, None).await
        })
        .await
        .map(|_| ())
    }

    /// Every lease, in pages of [`PAGE`] at one revision.
    pub(crate) async fn list(&self) -> Result<EtcdScan, EtcdError> {
        let prefix = self.layout.subnets_prefix();
        let end = prefix_end(&prefix);
        let mut from = prefix.into_bytes();
        let mut scan = EtcdScan::default();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if scan.revision > 0 {
                opts = opts.with_revision(scan.revision);
            }
            let resp = self
                .get("listing the leases", from.clone(), Some(opts))
                .await?;
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

/// Whether a request about an etcd lease found it: `Ok(false)` when etcd
/// answered that it has no such lease (revoke: `NotFound`; keep-alive: a
/// TTL of 0).
fn lease_found<T>(r: Result<T, EtcdError>) -> Result<bool, EtcdError> {
    match r {
        Ok(_) => Ok(true),
        Err(EtcdError::Request { source, .. }) if lease_not_found(&source) => Ok(false),
        Err(e) => Err(e),
    }
}

fn lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::NotFound,
        etcd_client::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

/// The end of the range of keys starting with `prefix` (etcd's prefix end:
/// the prefix with its last byte incremented).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
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
