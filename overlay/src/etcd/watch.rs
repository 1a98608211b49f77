//! Following the leases in etcd as they change, without polling: a task on
//! the store's runtime lists every lease, then watches `<prefix>/subnets/`
//! from the revision of that list and turns each change into a
//! [`LeaseEvent`] on a bounded channel ([`LeaseWatch`]). When the stream
//! breaks it resumes from the last revision it saw, after a back-off; when
//! that history was compacted it lists again. [`LeaseView`] is the pure
//! state a receiver keeps from the events.

use super::{Conn, EtcdLease, EtcdScan, Rt};
use crate::backoff::Backoff;
use crate::cidr::Ipv4Net;
use crate::registry::{BadLease, LeaseScan, RegistryError};
use etcd_client::WatchOptions;
use std::collections::BTreeMap;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinHandle;

/// The first pause after a failure; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The most events one look of [`LeaseWatch::into_source`] takes.
const DRAIN: usize = 10_000;
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One change of the leases, in the order etcd made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// Every lease at `revision`: replaces what the receiver knew (the first
    /// event, and again after the history it would resume from was
    /// compacted).
    Listed(EtcdScan),
    /// A lease was created or changed.
    Put(EtcdLease),
    /// A lease key now holds what is not a lease.
    Bad {
        /// The subnet its key names.
        subnet: Ipv4Net,
        /// The key and what is wrong with its value.
        bad: BadLease,
        /// The revision of the change.
        revision: i64,
    },
    /// A lease was revoked, deleted, or expired.
    Removed {
        /// Its subnet.
        subnet: Ipv4Net,
        /// The revision of the removal.
        revision: i64,
    },
    /// The watch broke (etcd unreachable, stream ended or cancelled); it is
    /// resumed after a back-off, and the leases known stay in force.
    Lost {
        /// Why, naming the endpoints.
        error: String,
    },
}

/// The leases as a receiver of [`LeaseEvent`]s knows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseView {
    leases: BTreeMap<Ipv4Net, EtcdLease>,
    bad: BTreeMap<Ipv4Net, BadLease>,
    revision: i64,
    lost: Option<String>,
}

impl LeaseView {
    /// A view that has seen nothing yet.
    pub fn new() -> LeaseView {
        LeaseView::default()
    }

    /// Applies one event; a change older than what the view has seen is
    /// ignored. True when the leases changed.
    pub fn apply(&mut self, event: LeaseEvent) -> bool {
        let stale = |rev: i64, me: &LeaseView| rev <= me.revision;
        match event {
            LeaseEvent::Listed(scan) => {
                let before = (self.leases.clone(), self.bad.clone());
                self.revision = scan.revision;
                self.leases = scan
                    .leases
                    .into_iter()
                    .map(|l| (l.record.subnet, l))
                    .collect();
                self.bad = scan
                    .bad
                    .into_iter()
                    .filter_map(|b| Some((subnet_of_bad(&b)?, b)))
                    .collect();
                self.lost = None;
                before != (self.leases.clone(), self.bad.clone())
            }
            LeaseEvent::Put(l) if !stale(l.mod_revision, self) => {
                self.revision = l.mod_revision;
                self.lost = None;
                let subnet = l.record.subnet;
                self.bad.remove(&subnet);
                self.leases.insert(subnet, l);
                true
            }
            LeaseEvent::Bad {
                subnet,
                bad,
                revision,
            } if !stale(revision, self) => {
                self.revision = revision;
                self.lost = None;
                self.leases.remove(&subnet);
                self.bad.insert(subnet, bad);
                true
            }
            LeaseEvent::Removed { subnet, revision } if !stale(revision, self) => {
                self.revision = revision;
                self.lost = None;
                let had = self.leases.remove(&subnet).is_some();
                self.bad.remove(&subnet).is_some() || had
            }
            LeaseEvent::Lost { error } => {
                self.lost = Some(error);
                false
            }
            LeaseEvent::Put(_) | LeaseEvent::Bad { .. } | LeaseEvent::Removed { .. } => false,
        }
    }

    /// The leases in force and the keys that are not leases.
    pub fn scan(&self) -> LeaseScan {
        LeaseScan {
            leases: self.leases.values().map(|l| l.record.clone()).collect(),
            bad: self.bad.values().cloned().collect(),
        }
    }

    /// The revision of the last change seen.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Why the watch is broken, while it is.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }
}

/// The subnet a bad lease's key names (its last path segment).
fn subnet_of_bad(b: &BadLease) -> Option<Ipv4Net> {
    crate::registry::parse_lease_key(b.file.rsplit('/').next()?)
}

/// The receiving end of a watch; dropping it stops the watch. Its methods
/// block and must not be called from inside an async runtime.
pub struct LeaseWatch {
    rt: Arc<Rt>,
    rx: mpsc::Receiver<LeaseEvent>,
    task: JoinHandle<()>,
}

impl LeaseWatch {
    pub(crate) fn start(rt: Arc<Rt>, conn: Conn, from: Option<i64>, capacity: usize) -> LeaseWatch {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = rt.spawn(run(conn, from, tx));
        LeaseWatch { rt, rx, task }
    }

    /// The next event, waiting at most `timeout`; `Disconnected` when the
    /// watch ended (it only does when its task failed).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<LeaseEvent, RecvTimeoutError> {
        let rx = &mut self.rx;
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, rx.recv()).await })
        {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => Err(RecvTimeoutError::Disconnected),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<LeaseEvent> {
        self.rx.try_recv().ok()
    }

    /// A lease source for [`crate::registry::udp_leases`] (a data-path
    /// daemon's look at the leases): each call applies the events waiting,
    /// without blocking and without asking etcd, and returns the leases as
    /// they now are (none before the first list); an error once the watch
    /// has ended.
    pub fn into_source(mut self) -> impl FnMut() -> Result<LeaseScan, RegistryError> + Send {
        let mut view = LeaseView::new();
        move || {
            for _ in 0..DRAIN {
                match self.rx.try_recv() {
                    Ok(ev) => {
                        view.apply(ev);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        return Err(RegistryError::Remote {
                            store: "etcd".into(),
                            message: "the lease watch ended".into(),
                        })
                    }
                }
            }
            Ok(view.scan())
        }
    }
}

impl Iterator for LeaseWatch {
    type Item = LeaseEvent;

    /// The next event, waiting for it; `None` when the watch ended.
    fn next(&mut self) -> Option<LeaseEvent> {
        let rx = &mut self.rx;
        self.rt.block_on(rx.recv())
    }
}

impl Drop for LeaseWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sleeps for the back-off's pause after a failure.
async fn pause(backoff: &mut Backoff) {
    tokio::time::sleep(backoff.failed()).await;
}

/// How following the watch stream ended.
enum End {
    /// The receiver is gone.
    Closed,
    /// The history from the revision asked for was compacted.
    Compacted(i64),
    /// The stream broke.
    Broken(String),
}

/// The watch task: list (or resume from `from`), follow, and start again
/// after each break, until the receiver goes.
async fn run(conn: Conn, from: Option<i64>, tx: mpsc::Sender<LeaseEvent>) {
    let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    let mut seen = from;
    loop {
        let mut rev = match seen {
            Some(r) => r,
            None => match conn.list().await {
                Ok(scan) => {
                    let r = scan.revision;
                    if tx.send(LeaseEvent::Listed(scan)).await.is_err() {
                        return;
                    }
                    r
                }
                Err(e) => {
                    if lost(&tx, e.to_string()).await {
                        return;
                    }
                    pause(&mut backoff).await;
                    continue;
                }
            },
        };
        let end = follow(&conn, &mut rev, &tx, &mut backoff).await;
        seen = Some(rev);
        match end {
            End::Closed => return,
            End::Compacted(at) => {
                tracing::info!(at, endpoints = %conn.endpoints, "lease history compacted: listing again");
                seen = None;
            }
            End::Broken(e) => {
                if lost(&tx, e).await {
                    return;
                }
                pause(&mut backoff).await;
            }
        }
    }
}

/// Tells the receiver the watch broke; true when the receiver is gone.
async fn lost(tx: &mpsc::Sender<LeaseEvent>, error: String) -> bool {
    tracing::warn!(%error, "lease watch");
    tx.send(LeaseEvent::Lost { error }).await.is_err()
}

/// Follows the watch stream from just after `rev`, advancing `rev` with each
/// change passed on.
async fn follow(
    conn: &Conn,
    rev: &mut i64,
    tx: &mpsc::Sender<LeaseEvent>,
    backoff: &mut Backoff,
) -> End {
    let broken = |e: String| {
        End::Broken(format!(
            "etcd at {}: watching the leases: {e}",
            conn.endpoints
        ))
    };
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*rev + 1)
        .with_progress_notify();
    let mut client = conn.client.clone();
    let mut stream = match client.watch(conn.layout.subnets_prefix(), Some(opts)).await {
        Ok(s) => s,
        Err(e) => return broken(e.to_string()),
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return broken("the stream ended".into()),
            Err(e) => return broken(e.to_string()),
        };
        if resp.compact_revision() > 0 {
            return End::Compacted(resp.compact_revision());
        }
        if resp.canceled() {
            return broken(format!("cancelled: {}", resp.cancel_reason()));
        }
        backoff.succeeded();
        if resp.events().is_empty() && !resp.created() {
            // A progress notification: every change up to its revision was sent.
            *rev = (*rev).max(resp.header().map_or(0, |h| h.revision()));
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Some(event) = to_event(conn, kv) else {
                continue;
            };
            *rev = (*rev).max(kv.mod_revision());
            if tx.send(event).await.is_err() {
                return End::Closed;
            }
        }
    }
}

/// The lease event of one change of a key (`None`: not a lease key). A
/// deleted key has version 0 (etcd's MVCC), a written one at least 1.
fn to_event(conn: &Conn, kv: &etcd_client::KeyValue) -> Option<LeaseEvent> {
    let subnet = conn.layout.subnet_of(kv.key())?;
    let revision = kv.mod_revision();
    if kv.version() == 0 {
        return Some(LeaseEvent::Removed { subnet, revision });
    }
    Some(match conn.layout.decode(kv.key(), kv.value())? {
        Ok(record) => LeaseEvent::Put(EtcdLease {
            record,
            mod_revision: revision,
            lease_id: kv.lease(),
        }),
        Err(bad) => LeaseEvent::Bad {
            subnet,
            bad,
            revision,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{LeaseAttrs, LeaseRecord};

    fn lease(net: &str, ip: [u8; 4], rev: i64) -> EtcdLease {
        EtcdLease {
            record: LeaseRecord {
                subnet: net.parse().unwrap(),
                attrs: LeaseAttrs {
                    public_ip: ip.into(),
                    backend_type: "udp".into(),
                    backend_data: serde_json::Value::Null,
                },
                expiration: None,
            },
            mod_revision: rev,
            lease_id: 7,
        }
    }

    fn subnets(v: &LeaseView) -> Vec<String> {
        v.scan()
            .leases
            .iter()
            .map(|l| l.subnet.to_string())
            .collect()
    }

    #[test]
    fn a_view_follows_lists_and_changes() {
        let mut v = LeaseView::new();
        let listed = EtcdScan {
            revision: 10,
            leases: vec![lease("10.244.1.0/24", [10, 0, 0, 1], 5)],
            bad: vec![],
        };
        assert!(v.apply(LeaseEvent::Listed(listed.clone())));
        assert!(!v.apply(LeaseEvent::Listed(listed)), "the same list again");
        assert!(v.apply(LeaseEvent::Put(lease("10.244.2.0/24", [10, 0, 0, 2], 11))));
        assert_eq!(subnets(&v), ["10.244.1.0/24", "10.244.2.0/24"]);
        // Older than what was seen: ignored.
        assert!(!v.apply(LeaseEvent::Removed {
            subnet: "10.244.2.0/24".parse().unwrap(),
            revision: 11,
        }));
        assert!(v.apply(LeaseEvent::Removed {
            subnet: "10.244.1.0/24".parse().unwrap(),
            revision: 12,
        }));
        assert_eq!(subnets(&v), ["10.244.2.0/24"]);
        // A broken watch keeps the leases and says so until the next change.
        assert!(!v.apply(LeaseEvent::Lost { error: "x".into() }));
        assert_eq!((subnets(&v).len(), v.lost()), (1, Some("x")));
        let bad = BadLease {
            file: "/coreos.com/network/subnets/10.244.2.0-24".into(),
            error: "eof".into(),
        };
        assert!(v.apply(LeaseEvent::Bad {
            subnet: "10.244.2.0/24".parse().unwrap(),
            bad,
            revision: 13,
        }));
        assert_eq!(
            (v.scan().leases.len(), v.scan().bad.len(), v.lost()),
            (0, 1, None)
        );
        // A new list replaces everything.
        v.apply(LeaseEvent::Listed(EtcdScan {
            revision: 20,
            leases: vec![lease("10.244.3.0/24", [10, 0, 0, 3], 19)],
            bad: vec![],
        }));
        assert_eq!(
            (subnets(&v), v.revision()),
            (vec!["10.244.3.0/24".to_string()], 20)
        );
        assert!(v.scan().bad.is_empty());
    }
}
