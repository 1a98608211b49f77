//! Event-driven change detection for drift repair: a [`Watcher`] holds, per
//! watched namespace, one NETLINK_ROUTE socket opened *inside* that
//! namespace (on a thread that entered it) and subscribed to the kernel's
//! notifications of links, IPv4 addresses, IPv4 routes and neighbours;
//! [`Watcher::wait`] says which namespaces had any (relevant) notification
//! since the last call, so the controller re-reads and repairs only those,
//! within a moment of the change, instead of dumping every namespace every
//! second.
//!
//! Design: plain non-blocking sockets and one `poll(2)` in the caller's
//! thread, no runtime and no thread of its own. Between calls the kernel
//! keeps the notifications in each socket's receive buffer, so nothing is
//! lost while the controller works; idle, the caller sleeps in `poll` and
//! costs no CPU. `poll` walks every descriptor per call (about a
//! microsecond per thousand), which is nothing next to the re-read that
//! follows a wakeup. A socket whose buffer overflowed (ENOBUFS: notifications
//! were dropped) or that fails otherwise marks its namespace changed, so it
//! is read again in full; the answer is a set (bounded by the namespaces
//! watched), never a queue.
//!
//! Noise is filtered out: neighbour notifications count only for IPv4
//! entries that are or were permanent (a deletion is announced as FAILED),
//! not for the ARP cache's own comings and goings; an entry that is merely
//! downgraded from permanent goes unseen until the next change in that
//! namespace. The repairs' own changes are seen too (one extra read).
//!
//! An open socket keeps its namespace alive after `/run/netns/NAME` is
//! unpinned (and with it every interface inside): [`Watcher::remove`] a
//! namespace before, or as soon as, it is deleted.

use crate::kernel::netns::{Netns, NetnsError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_LINK, RTMGRP_NEIGH};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A socket could not be made.
    #[error("watching `{netns}`: {source}")]
    Socket {
        /// The namespace ("" for the watcher's own wake-up socket).
        netns: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Wakes a [`Watcher::wait`] from another thread (e.g. when a request
/// arrives); cheap to clone.
#[derive(Clone, Debug)]
pub struct Waker(Arc<UnixDatagram>);

impl Waker {
    /// Makes the current or next `wait` return at once.
    pub fn wake(&self) {
        // A full buffer means a wake-up is already pending.
        let _ = self.0.send(&[1]);
    }
}

/// Watches namespaces for changes; see the module comment.
#[derive(Debug)]
pub struct Watcher {
    sockets: BTreeMap<String, OwnedFd>,
    wake_rx: UnixDatagram,
    wake_tx: Arc<UnixDatagram>,
}

/// The notification groups watched.
const GROUPS: u32 = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH;

/// The nf_tables notification group (`NFNLGRP_NFTABLES`), as a bind mask.
const NFTABLES_GROUP: u32 = 1 << (7 - 1);

/// The prefix of the key under which a namespace's firewall rules are
/// watched (`rules:NETNS`).
pub const RULES: &str = "rules:";

/// The prefix of the key under which a namespace is watched without its
/// neighbours (`links:NETNS`): for namespaces that have no permanent
/// neighbour entry to keep, whose ARP cache would only wake the watcher.
pub const LINKS: &str = "links:";

/// Opens a non-blocking netlink socket of `protocol` in the calling
/// thread's namespace, subscribed to `groups`.
fn subscribe(protocol: SockProtocol, groups: u32) -> nix::Result<OwnedFd> {
    let fd = socket::socket(
        socket::AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        protocol,
    )?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

impl Watcher {
    /// A watcher of no namespace yet.
    pub fn new() -> Result<Watcher, WatchError> {
        let fail = |source| WatchError::Socket {
            netns: String::new(),
            source,
        };
        let (rx, tx) = UnixDatagram::pair().map_err(fail)?;
        rx.set_nonblocking(true).map_err(fail)?;
        tx.set_nonblocking(true).map_err(fail)?;
        Ok(Watcher {
            sockets: BTreeMap::new(),
            wake_rx: rx,
            wake_tx: Arc::new(tx),
        })
    }

    /// Starts watching namespace `netns` (again: a fresh socket). A name
    /// `rules:NETNS` watches that namespace's nf_tables rules instead (any
    /// change of any table: iptables-nft's and nft's), `links:NETNS` it
    /// without neighbours; each is reported under the name it was added
    /// with.
    pub fn add(&mut self, netns: &str) -> Result<(), WatchError> {
        let (ns, protocol, groups) = if let Some(ns) = netns.strip_prefix(RULES) {
            (ns, SockProtocol::NetlinkNetFilter, NFTABLES_GROUP)
        } else if let Some(ns) = netns.strip_prefix(LINKS) {
            (ns, SockProtocol::NetlinkRoute, GROUPS & !RTMGRP_NEIGH)
        } else {
            (netns, SockProtocol::NetlinkRoute, GROUPS)
        };
        let fd = Netns::open(ns)?
            .run_in(move || subscribe(protocol, groups))?
            .map_err(|e| WatchError::Socket {
                netns: netns.to_string(),
                source: e.into(),
            })?;
        self.sockets.insert(netns.to_string(), fd);
        Ok(())
    }

    /// Stops watching `netns`, closing its socket (which lets a deleted
    /// namespace go).
    pub fn remove(&mut self, netns: &str) {
        self.sockets.remove(netns);
    }

    /// The namespaces watched.
    pub fn watched(&self) -> impl Iterator<Item = &str> {
        self.sockets.keys().map(String::as_str)
    }

    /// A handle that wakes [`Watcher::wait`].
    pub fn waker(&self) -> Waker {
        Waker(self.wake_tx.clone())
    }

    /// Waits up to `timeout` for a change; returns every namespace that
    /// changed since the last call (empty on timeout or when woken by a
    /// [`Waker`] with no change).
    pub fn wait(&self, timeout: Duration) -> BTreeSet<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
            let names: Vec<&String> = self.sockets.keys().collect();
            let mut fds: Vec<PollFd> = std::iter::once(self.wake_rx.as_fd())
                .chain(self.sockets.values().map(|s| s.as_fd()))
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, ms) {
                Ok(0) => return BTreeSet::new(),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    // Cannot happen with valid descriptors; say that
                    // everything may have changed rather than spin.
                    tracing::warn!(error = %e, "poll on the netlink watches");
                    return names.into_iter().cloned().collect();
                }
            }
            let ready = |k: usize| {
                fds.get(k)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let woken = ready(0);
            if woken {
                while self.wake_rx.recv(&mut buf).is_ok() {}
            }
            let mut changed = BTreeSet::new();
            for (k, name) in names.iter().enumerate() {
                if ready(k + 1) && self.drain(name, &mut buf) {
                    changed.insert((*name).clone());
                }
            }
            if woken || !changed.is_empty() || Instant::now() >= deadline {
                return changed;
            }
        }
    }

    /// Reads everything pending on `netns`'s socket; whether any of it is a
    /// change (or notifications were lost).
    fn drain(&self, netns: &str, buf: &mut [u8]) -> bool {
        let Some(fd) = self.sockets.get(netns) else {
            return false;
        };
        let mut changed = false;
        loop {
            match socket::recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(_) if netns.starts_with(RULES) => changed = true,
                Ok(n) => changed |= relevant(buf.get(..n).unwrap_or(buf)),
                Err(nix::errno::Errno::EAGAIN) => return changed,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::ENOBUFS) => changed = true,
                Err(e) => {
                    tracing::warn!(netns, error = %e, "reading netlink notifications");
                    return true;
                }
            }
        }
    }
}

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const AF_BRIDGE: u8 = 7;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const NUD_FAILED: u16 = 0x20;
const NUD_PERMANENT: u16 = 0x80;
const AF_INET: u8 = 2;

/// Whether a datagram of notifications holds a change drift repair cares
/// about: any link message but a bridge's report on its port, any address
/// or route message, and neighbour messages of
/// IPv4 entries that are permanent or failed (a deleted entry is announced
/// as FAILED). A datagram that does not parse counts as a change.
pub fn relevant(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(hdr) = rest.get(..16) else {
            return true;
        };
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let kind = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let Some(msg) = rest.get(..len).filter(|_| len >= 16) else {
            return true;
        };
        if matches!(kind, RTM_NEWLINK | RTM_DELLINK) {
            // A bridge's own report on one of its ports (AF_BRIDGE): the
            // port's bridge state, sent now and then (multicast snooping's
            // timers) and not part of what is repaired; a port joining or
            // leaving a bridge is also announced as a plain link change.
            if msg.get(16) != Some(&AF_BRIDGE) {
                return true;
            }
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
            continue;
        }
        if !matches!(kind, RTM_NEWNEIGH | RTM_DELNEIGH) {
            return true;
        }
        // struct ndmsg: family u8, pad u8, pad u16, ifindex i32, state u16.
        let Some(nd) = msg.get(16..26) else {
            return true;
        };
        let state = u16::from_ne_bytes([nd[8], nd[9]]);
        if nd[0] == AF_INET && state & (NUD_PERMANENT | NUD_FAILED) != 0 {
            return true;
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    false
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
