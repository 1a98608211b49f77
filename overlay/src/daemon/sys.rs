//! The daemon's system calls: UDP sockets and their options, reads, writes
//! and polls of TUN queues, and the `recvmmsg` batch of the receiving side.
//! Every `unsafe` block of the data path but [`super::batch`]'s lives here,
//! each with the reason it is sound.
#![allow(unsafe_code)]

use super::{BATCH, IDLE_MS, SLOT};
use crate::gso;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Socket buffers asked for (root may exceed `rmem_max`).
const SOCKET_BUFFER: libc::c_int = 8 << 20;
/// Control buffer per message, in u64 units (aligned for `cmsghdr`).
pub(super) const CTRL_WORDS: usize = 4;

/// The calling thread's `errno`.
pub(super) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(super) fn setsockopt_int(
    fd: RawFd,
    level: i32,
    name: i32,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_timeout(fd: RawFd, name: i32, ms: i32) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::from(ms / 1000),
        tv_usec: libc::suseconds_t::from((ms % 1000) * 1000),
    };
    // SAFETY: a timeval option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A `sockaddr_in` for `addr`.
pub(super) fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    sa
}

/// A UDP socket bound to `bind`, with large buffers and 100 ms timeouts.
pub(super) fn udp_socket(bind: SocketAddrV4, reuseport: bool) -> io::Result<OwnedFd> {
    // SAFETY: socket() returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if reuseport {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, SOCKET_BUFFER).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER)?;
        }
    }
    set_timeout(fd, libc::SO_RCVTIMEO, IDLE_MS)?;
    set_timeout(fd, libc::SO_SNDTIMEO, IDLE_MS)?;
    let sa = sockaddr(bind);
    // SAFETY: a sockaddr_in of the size given.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// One socket per worker, all bound to `bind` with `SO_REUSEPORT`. A probe
/// without `SO_REUSEPORT` first makes sure that no other program holds the
/// port (it would otherwise silently share the datagrams).
pub(super) fn udp_sockets(bind: SocketAddrV4, n: usize, gro: bool) -> io::Result<Vec<OwnedFd>> {
    drop(udp_socket(bind, false)?);
    let socks = (0..n)
        .map(|_| udp_socket(bind, true))
        .collect::<io::Result<Vec<_>>>()?;
    if gro {
        for s in &socks {
            if let Err(e) = setsockopt_int(s.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1) {
                tracing::debug!("UDP_GRO: {e}");
            }
        }
    }
    Ok(socks)
}

/// A zeroed virtio-net header: a plain packet whose checksums the kernel checks.
const PLAIN: [u8; gso::VNET_HDR_LEN] = [0; gso::VNET_HDR_LEN];

/// An iovec of `b` (the kernel only reads through it where it is sent).
#[inline]
pub(super) fn iov(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

/// Writes the gathered `bufs` as one packet; false when the write failed.
pub(super) fn writev(fd: RawFd, bufs: &[&[u8]]) -> bool {
    let mut iovs = [iov(&[]); gso::MAX_SEGMENTS + 1];
    let n = bufs.len().min(iovs.len());
    for (v, b) in iovs.iter_mut().zip(bufs) {
        *v = iov(b);
    }
    loop {
        // SAFETY: the first n iovecs point to live buffers of their length.
        let r = unsafe { libc::writev(fd, iovs.as_ptr(), n as libc::c_int) };
        if r >= 0 {
            return true;
        }
        if errno() != libc::EINTR {
            return false;
        }
    }
}

/// Writes one plain packet to the TUN (after a zeroed virtio-net header when
/// the queue has them).
pub(super) fn tun_write(fd: RawFd, vnet: bool, pkt: &[u8]) -> bool {
    if vnet {
        return writev(fd, &[&PLAIN, pkt]);
    }
    loop {
        // SAFETY: pkt is a valid buffer of its length.
        let r = unsafe { libc::write(fd, pkt.as_ptr().cast(), pkt.len()) };
        if r >= 0 {
            return true;
        }
        if errno() != libc::EINTR {
            return false;
        }
    }
}

/// One non-blocking read into `buf`: its length, `Ok(None)` when nothing is
/// waiting, or the error.
pub(super) fn read(fd: RawFd, buf: &mut [u8]) -> Result<Option<usize>, i32> {
    loop {
        // SAFETY: buf is a valid buffer of its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Ok(None),
            e => return Err(e),
        }
    }
}

/// Waits up to `ms` for `fd` to be readable.
pub(super) fn wait_readable(fd: RawFd, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// The `UDP_GRO` segment size of a received message, if any.
fn gro_size(h: &libc::msghdr) -> usize {
    if h.msg_controllen == 0 || h.msg_control.is_null() {
        return 0;
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsgs; the CMSG_* helpers walk them within those bounds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = libc::CMSG_DATA(c).cast::<libc::c_int>().read_unaligned();
                return usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

/// One received message of a [`RecvBatch`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Received {
    /// Where its bytes start in [`RecvBatch::bufs`].
    pub offset: usize,
    /// Its length (several datagrams with `UDP_GRO`).
    pub len: usize,
    /// The `UDP_GRO` segment size, 0 for a single datagram.
    pub gro: usize,
    /// The sender's address (host order).
    pub src: u32,
    /// The kernel cut it (`MSG_TRUNC`).
    pub truncated: bool,
}

/// The buffers and headers of one `recvmmsg` of up to [`BATCH`] messages.
/// The headers point into the struct's own vectors (allocated once, never
/// resized, so moving the struct moves no pointee).
pub(super) struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    /// Control buffers, only reached through the headers' pointers.
    _ctrl: Vec<u64>,
    hdrs: Vec<libc::mmsghdr>,
    gro: bool,
    received: usize,
}

impl RecvBatch {
    /// Buffers for `BATCH` messages of up to 64 KiB; with `gro`, room for
    /// the `UDP_GRO` control message too.
    pub fn new(gro: bool) -> RecvBatch {
        let mut bufs = vec![0u8; BATCH * SLOT];
        // SAFETY: plain C structs; zero is valid for each.
        let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .chunks_exact_mut(SLOT)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut ctrl = vec![0u64; BATCH * CTRL_WORDS];
        // SAFETY: as above.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        for (((h, v), a), c) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(addrs.iter_mut())
            .zip(ctrl.chunks_exact_mut(CTRL_WORDS))
        {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_in).cast();
            if gro {
                h.msg_hdr.msg_control = c.as_mut_ptr().cast();
            }
        }
        RecvBatch {
            bufs,
            addrs,
            iovs,
            _ctrl: ctrl,
            hdrs,
            gro,
            received: 0,
        }
    }

    /// Receives up to [`BATCH`] messages (waiting up to the socket's
    /// timeout for the first): their number, or the `errno`.
    pub fn recv(&mut self, sock: RawFd) -> Result<usize, i32> {
        self.received = 0;
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            if self.gro {
                h.msg_hdr.msg_controllen = CTRL_WORDS * 8;
            }
        }
        // SAFETY: every header points to a live buffer, iovec, address and
        // control buffer of this struct (see the type's contract).
        let r = unsafe {
            libc::recvmmsg(
                sock,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(errno());
        }
        self.received = (r as usize).min(self.hdrs.len());
        Ok(self.received)
    }

    /// The receive buffers (message `i` at `i * SLOT`).
    pub fn bufs(&self) -> &[u8] {
        &self.bufs
    }

    /// Message `i` of the last [`RecvBatch::recv`].
    pub fn message(&self, i: usize) -> Option<Received> {
        if i >= self.received {
            return None;
        }
        let h = self.hdrs.get(i)?;
        let a = self.addrs.get(i)?;
        let len = (h.msg_len as usize).min(self.iovs.get(i)?.iov_len);
        Some(Received {
            offset: i * SLOT,
            len,
            gro: if self.gro { gro_size(&h.msg_hdr) } else { 0 },
            src: u32::from_be(a.sin_addr.s_addr),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }
}
