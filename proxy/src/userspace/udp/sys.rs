//! The system calls of the UDP ports: the listener with `IP_PKTINFO` (the
//! local address each datagram arrived at, and replies sent from it), the
//! sessions' connected sockets, and the one datagram buffer per thread that
//! every receive goes through (a session holds none of its own).

use super::super::ProxyError;
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, SockaddrIn,
};
use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use tokio::net::UdpSocket;

/// Large enough for any IPv4 UDP payload.
pub(super) const MAX_DATAGRAM: usize = 65536;

thread_local! {
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_DATAGRAM].into_boxed_slice());
}

/// Runs `f` with this thread's datagram buffer. `f` must not wait: the
/// buffer is the thread's, not the task's.
pub(super) fn with_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BUFFER.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        // Only a nested call could find it taken: give that one its own.
        Err(_) => f(&mut vec![0; MAX_DATAGRAM]),
    })
}

/// Binds the listening socket of port `id` on 0.0.0.0:`port`, with
/// SO_REUSEADDR and IP_PKTINFO.
pub(in super::super) fn bind(id: &str, port: u16) -> Result<UdpSocket, ProxyError> {
    let step = |what: &'static str| {
        move |source: io::Error| ProxyError::Socket {
            id: id.to_string(),
            what,
            source,
        }
    };
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| step("creating the UDP socket")(e.into()))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
        .map_err(|e| step("setting SO_REUSEADDR")(e.into()))?;
    socket::setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)
        .map_err(|e| step("enabling IP_PKTINFO")(e.into()))?;
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| ProxyError::Bind {
        id: id.to_string(),
        port,
        source: e.into(),
    })?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd)).map_err(step("registering the UDP socket"))
}

/// Sends on a connected socket without waiting: tokio only learns a new
/// socket is writable after a reactor turn, and a datagram that finds the
/// buffer full is dropped anyway, as the network would.
pub(super) fn send_now(socket: &UdpSocket, data: &[u8]) -> io::Result<usize> {
    loop {
        match socket::send(socket.as_raw_fd(), data, MsgFlags::MSG_DONTWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// A socket connected to `backend`.
pub(super) fn connect(backend: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(backend)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// A received datagram: its length, sender and local destination address.
pub(super) struct Received {
    pub(super) len: usize,
    pub(super) client: SocketAddrV4,
    pub(super) local: Ipv4Addr,
}

/// `recvmsg` with the IP_PKTINFO control message.
pub(super) fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match socket::recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let client = msg
        .address
        .map(SocketAddrV4::from)
        .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
    let mut local = Ipv4Addr::UNSPECIFIED;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
            // The kernel's "address to reply from"; the header destination
            // when that is missing.
            let spec = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
            let dst = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
            local = if spec.is_unspecified() { dst } else { spec };
        }
    }
    Ok(Received {
        len: msg.bytes,
        client,
        local,
    })
}

/// `sendmsg` to `client` with source address `local` (unless unspecified).
pub(super) fn send_to(
    fd: RawFd,
    client: SocketAddrV4,
    local: Ipv4Addr,
    data: &[u8],
) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(local).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let with_source = [ControlMessage::Ipv4PacketInfo(&info)];
    let cmsgs: &[ControlMessage] = if local.is_unspecified() {
        &[]
    } else {
        &with_source
    };
    let iov = [IoSlice::new(data)];
    let to = SockaddrIn::from(client);
    loop {
        match socket::sendmsg(fd, &iov, cmsgs, MsgFlags::empty(), Some(&to)) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}
