//! The `ping` generator's sends: ICMP echo requests on one raw socket per
//! generator (bytes by `check::probe::icmp`), identifier fixed per
//! generator, sequence number the send's number (mod 2^16), token the whole
//! send number. A receiving task hands each reply (or unreachable quoting a
//! request) to the send waiting for it; at most [`MAX_PENDING`] wait.

use super::clock::register;
use super::send::outcome_of;
use super::{Measured, SampleOutcome};
use crate::check::probe::icmp::{self, Answer, Echo};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The most requests waiting at once (one per sequence number).
pub const MAX_PENDING: usize = 1 << 16;

/// The echo of send `k` from a generator with identifier `id`.
pub fn echo_of(id: u16, k: u64) -> Echo {
    Echo {
        id,
        seq: k as u16,
        token: k.to_be_bytes(),
    }
}

/// Which waiting send an answer is for: its send number, when the answer
/// carries this generator's identifier, a waiting sequence number and (for
/// a reply) that send's token.
pub fn match_answer(
    seen: &icmp::Identified,
    id: u16,
    waiting: impl Fn(u16) -> Option<u64>,
) -> Option<u64> {
    if seen.id != id {
        return None;
    }
    let k = waiting(seen.seq)?;
    match seen.token {
        Some(token) if token != k.to_be_bytes() => None,
        _ => Some(k),
    }
}

/// A generator's raw socket and the sends waiting on it.
pub struct Pinger {
    fd: AsyncFd<OwnedFd>,
    id: u16,
    waiting: RefCell<HashMap<u16, (u64, oneshot::Sender<Answer>)>>,
    /// The receiving task ended (the socket failed): sends are errors.
    broken: Cell<bool>,
}

/// An identifier that differs between the generators of this process.
fn next_id() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (std::process::id() as u16)
        .wrapping_mul(0x9e37)
        .wrapping_add((n as u16).wrapping_mul(0x3b9d))
        ^ 0x5a5a
}

impl Pinger {
    /// Opens the raw socket (in the calling thread's namespace) and starts
    /// the receiving task on the current `LocalSet`.
    pub fn start() -> io::Result<(Rc<Pinger>, JoinHandle<()>)> {
        let fd: OwnedFd = socket::socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::Icmp,
        )?;
        let pinger = Rc::new(Pinger {
            fd: register(fd)?,
            id: next_id(),
            waiting: RefCell::new(HashMap::new()),
            broken: Cell::new(false),
        });
        let receiver = tokio::task::spawn_local(Rc::clone(&pinger).receive());
        Ok((pinger, receiver))
    }

    /// Hands every answer to the send waiting for it, until the socket
    /// fails: then every send waiting, and every later one, is an error.
    async fn receive(self: Rc<Self>) {
        self.dispatch().await;
        self.broken.set(true);
        self.waiting.borrow_mut().clear();
    }

    /// [`Pinger::receive`] until the socket fails.
    async fn dispatch(&self) {
        let mut buf = [0u8; 1500];
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            let read = guard.try_io(|fd| {
                socket::recv(fd.get_ref().as_raw_fd(), &mut buf, MsgFlags::empty())
                    .map_err(io::Error::from)
            });
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(_)) => return,
                Err(_would_block) => continue,
            };
            let Some(seen) = icmp::identify(buf.get(..n).unwrap_or_default()) else {
                continue;
            };
            let mut waiting = self.waiting.borrow_mut();
            let k = match_answer(&seen, self.id, |seq| waiting.get(&seq).map(|w| w.0));
            if let Some(tx) = k.and_then(|_| waiting.remove(&seen.seq)) {
                let _ = tx.1.send(seen.answer);
            }
        }
    }

    /// Echo request `k` to `to`: ok on its reply, `refused` on an
    /// unreachable quoting it.
    pub async fn echo(&self, to: Ipv4Addr, k: u64, timeout: Duration) -> Measured {
        let start = Instant::now();
        let e = echo_of(self.id, k);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.borrow_mut();
            if self.broken.get() || waiting.len() >= MAX_PENDING || waiting.contains_key(&e.seq) {
                return Measured::failed(SampleOutcome::Error, start);
            }
            waiting.insert(e.seq, (k, tx));
        }
        let _forget = Forget(self, e.seq);
        let dst = socket::SockaddrIn::from(SocketAddrV4::new(to, 0));
        let request = icmp::request(&e);
        let sent = socket::sendto(
            self.fd.get_ref().as_raw_fd(),
            &request,
            &dst,
            MsgFlags::empty(),
        );
        if let Err(e) = sent {
            return Measured::failed(outcome_of(&io::Error::from(e)), start);
        }
        match tokio::time::timeout_at((start + timeout).into(), rx).await {
            Ok(Ok(Answer::Reply)) => Measured {
                outcome: SampleOutcome::Ok,
                latency: start.elapsed(),
                bytes: icmp::TOKEN_LEN as u64,
                backend: None,
            },
            Ok(Ok(Answer::Unreachable(_))) => Measured::failed(SampleOutcome::Refused, start),
            Ok(Err(_)) => Measured::failed(SampleOutcome::Error, start),
            Err(_) => Measured::failed(SampleOutcome::Timeout, start),
        }
    }
}

/// Takes a send off the waiting list when it ends, however it ends.
struct Forget<'a>(&'a Pinger, u16);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.waiting.borrow_mut().remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(answer: Answer, id: u16, seq: u16, token: Option<[u8; 8]>) -> icmp::Identified {
        icmp::Identified {
            answer,
            id,
            seq,
            token,
        }
    }

    #[test]
    fn answers_are_matched_by_identifier_sequence_and_token() {
        let e = echo_of(7, 70_000);
        assert_eq!(e.seq, (70_000 % 65_536) as u16);
        let waiting = |seq: u16| (seq == e.seq).then_some(70_000);
        let reply = seen(Answer::Reply, 7, e.seq, Some(e.token));
        assert_eq!(match_answer(&reply, 7, waiting), Some(70_000));
        // Another generator's identifier, a sequence nobody waits for, the
        // token of an older send with the same sequence number.
        assert_eq!(match_answer(&reply, 8, waiting), None);
        let other = seen(Answer::Reply, 7, e.seq.wrapping_add(1), Some(e.token));
        assert_eq!(match_answer(&other, 7, waiting), None);
        let stale = seen(Answer::Reply, 7, e.seq, Some(4_464u64.to_be_bytes()));
        assert_eq!(match_answer(&stale, 7, waiting), None);
        // An unreachable quotes no token.
        let unreachable = seen(Answer::Unreachable(3), 7, e.seq, None);
        assert_eq!(match_answer(&unreachable, 7, waiting), Some(70_000));
    }
}
