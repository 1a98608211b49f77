//! Batches of datagrams for one `sendmmsg`: plain ones and UDP GSO ones
//! (gathered from headers and payloads where they lie), with the fallback to
//! one `sendto` per datagram when the kernel refuses GSO.
#![allow(unsafe_code)]

use super::sys::{errno, iov, sockaddr, CTRL_WORDS};
use crate::stats::{Counter, Shard};
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;

/// Packets read per burst in offload mode (each up to 64 KiB).
pub(super) const GSO_BURST: usize = 16;
/// Pieces (headers and payloads) of gathered messages per batch: a burst's
/// super-packets, two pieces per segment.
const PARTS: usize = 2 * GSO_BURST * 48;

/// Datagrams queued for one `sendmmsg`: plain ones, and UDP GSO ones (one
/// message carrying several equal-sized datagrams, cut by the kernel). The
/// headers point into the struct's own arrays (allocated once, never moved)
/// and at packet bytes that the caller keeps alive and unchanged until
/// [`SendBatch::flush`].
pub(super) struct SendBatch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrl: Vec<u64>,
    /// Inner packets in each message, and their length (GSO messages).
    segs: Vec<(usize, usize)>,
    n: usize,
    /// The pieces of gathered messages ([`SendBatch::push_gso_parts`]), and
    /// how many are used.
    parts: Vec<libc::iovec>,
    np: usize,
    /// Whether UDP GSO sends work (cleared at the first refusal).
    pub(super) gso_ok: bool,
}

impl SendBatch {
    pub(super) fn new(cap: usize) -> SendBatch {
        // SAFETY: these C structs are plain data; zero is valid for each.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut b = SendBatch {
            hdrs: vec![zero_hdr; cap],
            iovs: vec![iov(&[]); cap],
            addrs: vec![zero_sa; cap],
            ctrl: vec![0; cap * CTRL_WORDS],
            segs: vec![(1, 0); cap],
            n: 0,
            parts: vec![iov(&[]); PARTS],
            np: 0,
            gso_ok: true,
        };
        for i in 0..cap {
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
        }
        b
    }

    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.n == self.hdrs.len()
    }

    /// Whether a message of `parts` pieces fits.
    #[inline]
    pub(super) fn has_room(&self, parts: usize) -> bool {
        self.n < self.hdrs.len() && self.np + parts <= self.parts.len()
    }

    /// Queues one datagram; false (nothing queued) when the batch is full.
    #[inline]
    pub(super) fn push(&mut self, data: &[u8], to: SocketAddrV4) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.n;
        self.iovs[i] = iov(data);
        self.addrs[i] = sockaddr(to);
        self.segs[i] = (1, data.len());
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_iov = &mut self.iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        self.n += 1;
        true
    }

    /// Queues `count` datagrams, each a header from `hdrs` (`hl` bytes each,
    /// back to back) followed by its payload from `payload` (`seg_len - hl`
    /// bytes each, the last may be shorter), gathered from where they are:
    /// one UDP GSO message when `count > 1`. The caller checks
    /// [`SendBatch::has_room`] for `2 * count` pieces first; false (nothing
    /// queued) when there is no room or `hdrs` is shorter than `count`
    /// headers.
    pub(super) fn push_gso_parts(
        &mut self,
        hdrs: &[u8],
        hl: usize,
        payload: &[u8],
        to: SocketAddrV4,
        seg_len: usize,
        count: usize,
    ) -> bool {
        let pieces = count.saturating_mul(2);
        if count == 0 || !self.has_room(pieces) || hdrs.len() / hl.max(1) < count {
            return false;
        }
        let (i, first) = (self.n, self.np);
        let m = seg_len.saturating_sub(hl).max(1);
        let mut heads = hdrs.chunks(hl.max(1));
        let mut bodies = payload.chunks(m);
        let parts = &mut self.parts[first..first + pieces];
        for pair in parts.chunks_exact_mut(2) {
            let head = heads.next().unwrap_or_default();
            let body = if count == 1 {
                payload
            } else {
                bodies.next().unwrap_or_default()
            };
            pair[0] = iov(head);
            pair[1] = iov(body);
        }
        self.np += pieces;
        if count > 1 {
            self.push_gso(&[], to, seg_len, count);
        } else {
            self.push(&[], to);
        }
        // The message's own iovec only records its length.
        self.iovs[i].iov_len = hl * count + payload.len();
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_iov = self.parts[first..].as_mut_ptr();
        h.msg_iovlen = pieces as _;
        true
    }

    /// Queues `count` datagrams of `seg_len` bytes (the last may be shorter)
    /// lying back to back in `data`, as one UDP GSO message; false (nothing
    /// queued) when the batch is full.
    pub(super) fn push_gso(
        &mut self,
        data: &[u8],
        to: SocketAddrV4,
        seg_len: usize,
        count: usize,
    ) -> bool {
        let i = self.n;
        if !self.push(data, to) {
            return false;
        }
        self.segs[i] = (count, seg_len);
        let ctrl = self.ctrl[i * CTRL_WORDS..]
            .as_mut_ptr()
            .cast::<libc::cmsghdr>();
        // SAFETY: the control buffer is 32 aligned bytes, room for one
        // cmsghdr and a u16 (CMSG_SPACE(2) = 24 on 64-bit Linux).
        unsafe {
            (*ctrl).cmsg_level = libc::SOL_UDP;
            (*ctrl).cmsg_type = libc::UDP_SEGMENT;
            (*ctrl).cmsg_len = libc::CMSG_LEN(2) as _;
            libc::CMSG_DATA(ctrl)
                .cast::<u16>()
                .write_unaligned(seg_len as u16);
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_control = ctrl.cast();
            h.msg_controllen = libc::CMSG_SPACE(2) as _;
        }
        true
    }

    /// Sends every queued datagram; counts what was sent and what failed.
    pub(super) fn flush(&mut self, fd: RawFd, shard: &Shard) {
        let mut off = 0;
        let (mut packets, mut bytes) = (0u64, 0u64);
        while off < self.n {
            // SAFETY: headers off..n point to live iovecs, addresses, control
            // buffers and packet bytes (see the type's contract).
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(off),
                    (self.n - off) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                // The message at `off` failed.
                let (count, seg_len) = self.segs[off];
                if count > 1
                    && matches!(
                        e,
                        libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT
                    )
                {
                    if self.gso_ok {
                        tracing::warn!(
                            "UDP GSO refused ({}); sending datagrams one by one",
                            io::Error::from_raw_os_error(e)
                        );
                        self.gso_ok = false;
                    }
                    let (p, b) = self.send_split(fd, off, seg_len, shard);
                    packets += p;
                    bytes += b;
                } else {
                    shard.add(Counter::SendError, count as u64);
                }
                off += 1;
                continue;
            }
            shard.inc(Counter::UdpSendCalls);
            let r = r as usize;
            for i in off..off + r {
                packets += self.segs[i].0 as u64;
                bytes += self.iovs[i].iov_len as u64;
            }
            off += r;
        }
        shard.add(Counter::TunToUdpPackets, packets);
        shard.add(Counter::TunToUdpBytes, bytes);
        self.n = 0;
        self.np = 0;
    }

    /// Sends GSO message `i`'s datagrams one by one.
    pub(super) fn send_split(
        &mut self,
        fd: RawFd,
        i: usize,
        seg_len: usize,
        shard: &Shard,
    ) -> (u64, u64) {
        let h = self.hdrs[i].msg_hdr;
        if h.msg_iovlen > 1 {
            return self.send_split_parts(fd, i, shard);
        }
        let (base, len) = (self.iovs[i].iov_base as *const u8, self.iovs[i].iov_len);
        // SAFETY: the message's bytes are live (see the type's contract).
        let data = unsafe { std::slice::from_raw_parts(base, len) };
        let (mut packets, mut bytes) = (0, 0);
        for seg in data.chunks(seg_len.max(1)) {
            // SAFETY: a live buffer and the message's own address.
            let r = unsafe {
                libc::sendto(
                    fd,
                    seg.as_ptr().cast(),
                    seg.len(),
                    0,
                    (&self.addrs[i] as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r < 0 {
                shard.inc(Counter::SendError);
            } else {
                packets += 1;
                bytes += seg.len() as u64;
            }
        }
        (packets, bytes)
    }

    /// Sends gathered message `i`'s datagrams (header and payload pieces)
    /// one by one.
    fn send_split_parts(&mut self, fd: RawFd, i: usize, shard: &Shard) -> (u64, u64) {
        let h = self.hdrs[i].msg_hdr;
        let (mut packets, mut bytes) = (0, 0);
        // `msg_iovlen` is a `size_t` with glibc, an `int` with musl.
        #[allow(clippy::unnecessary_cast)]
        let pieces = h.msg_iovlen as usize;
        for k in (0..pieces).step_by(2) {
            // SAFETY: the message's pieces are live (see the type's
            // contract); each datagram is two of them.
            let r = unsafe {
                let mut m: libc::msghdr = std::mem::zeroed();
                m.msg_name = h.msg_name;
                m.msg_namelen = h.msg_namelen;
                m.msg_iov = h.msg_iov.add(k);
                m.msg_iovlen = 2;
                libc::sendmsg(fd, &m, 0)
            };
            if r < 0 {
                shard.inc(Counter::SendError);
            } else {
                packets += 1;
                bytes += r as u64;
            }
        }
        (packets, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::sys::udp_socket;
    use crate::stats::Stats;
    use std::net::Ipv4Addr;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// Gathered GSO messages arrive as one datagram per segment, header then
    /// payload, whether the kernel cuts them or they are sent one by one.
    #[test]
    fn gathered_messages_arrive_one_datagram_per_segment() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let tx = udp_socket(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), false).unwrap();
        let hdrs: Vec<u8> = (0..5u8).flat_map(|i| [b'h', i, i, i]).collect();
        let payload: Vec<u8> = (0..43u32).map(|i| i as u8).collect();
        let stats = Stats::new(1);
        let shard = stats.shard(0);
        let expect: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                let mut d = hdrs[i * 4..i * 4 + 4].to_vec();
                d.extend_from_slice(&payload[i * 10..(i * 10 + 10).min(43)]);
                d
            })
            .collect();
        let mut b = SendBatch::new(4);
        for split in [false, true] {
            assert!(b.has_room(10));
            assert!(b.push_gso_parts(&hdrs, 4, &payload, to, 14, 5));
            // And a lone segment, without GSO.
            assert!(b.push_gso_parts(&hdrs[..4], 4, &payload[..7], to, 11, 1));
            // Headers missing for the count: refused, nothing queued.
            assert!(!b.push_gso_parts(&hdrs[..8], 4, &payload, to, 14, 5));
            if split {
                let (p, n) = b.send_split(tx.as_raw_fd(), 0, 14, shard);
                assert_eq!((p, n), (5, 63));
                let (p, n) = b.send_split(tx.as_raw_fd(), 1, 11, shard);
                assert_eq!((p, n), (1, 11));
                b.n = 0;
                b.np = 0;
            } else {
                b.flush(tx.as_raw_fd(), shard);
                assert_eq!((b.n, b.np), (0, 0));
            }
            let mut buf = [0u8; 100];
            for e in &expect {
                let n = rx.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &e[..], "split {split}");
            }
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[b'h', 0, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
        }
    }
}
