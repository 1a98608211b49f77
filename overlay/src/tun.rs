//! TUN devices through the kernel's own interface (`/dev/net/tun` and its
//! ioctls), without a TUN crate.
//!
//! The overlay's device is *persistent* and *multi-queue*: it is created once
//! (by `testbed up`, inside the node's namespace, or by `overlayd --create`)
//! and outlives the process that made it, so that its address, MTU and routes
//! can be set before any daemon runs; the daemon then attaches one queue per
//! worker with [`open_queue`]. Every IP packet the kernel routes to the device
//! is read from exactly one queue (the kernel keeps a flow on one queue), and
//! a packet written to any queue is received by the kernel as if it had
//! arrived on the device.
//!
//! Each call works in the network namespace of the calling *thread*.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// The flags the device is created and attached with: an IP-level device
/// (no Ethernet header), without the 4-byte packet-information prefix, with
/// several queues.
pub const TUN_FLAGS: libc::c_short =
    (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short;

/// The longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// `struct ifreq` as the TUN ioctls read it: the name, then the flags (the
/// rest of the 40-byte union is unused here).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str, flags: libc::c_short) -> io::Result<IfReq> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_NAME_LEN
        || bytes
            .iter()
            .any(|&b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a valid interface name (1 to {MAX_NAME_LEN} bytes, no `/`, space or NUL)"),
        ));
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    Ok(req)
}

fn open_clone_device() -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
}

fn ioctl_ptr<T>(file: &File, request: libc::Ioctl, arg: *mut T) -> io::Result<()> {
    // SAFETY: the fd is open for the call's duration and `arg` points to a
    // value of the type the request expects.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), request, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_int(file: &File, request: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: these requests take their argument by value.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), request, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens `/dev/net/tun` and binds it to device `name` with `flags`
/// (creating the device if it does not exist).
fn attach(name: &str, flags: libc::c_short) -> io::Result<File> {
    let mut req = ifreq(name, flags)?;
    let file = open_clone_device()?;
    ioctl_ptr(&file, libc::TUNSETIFF, &mut req).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "TUNSETIFF {name}: {e} (an existing device of that name must be a multi-queue TUN)"
            ),
        )
    })?;
    Ok(file)
}

/// Creates the persistent TUN device `name` in the calling thread's network
/// namespace, with [`TUN_FLAGS`]. The device stays after this returns (down,
/// without address or queue) until [`delete_persistent`] or the namespace
/// goes. Creating a device that already exists with these flags is a no-op.
pub fn create_persistent(name: &str) -> io::Result<()> {
    let file = attach(name, TUN_FLAGS)?;
    ioctl_int(&file, libc::TUNSETPERSIST, 1)
}

/// Attaches one more queue to the existing device `name` (see
/// [`create_persistent`]). Reads return one IP packet each; a write sends one
/// IP packet into the kernel. The file is blocking; see [`set_nonblocking`].
pub fn open_queue(name: &str) -> io::Result<File> {
    attach(name, TUN_FLAGS)
}

/// Attaches a queue like [`open_queue`], asking for `IFF_VNET_HDR`: every
/// packet read or written is then preceded by a `struct virtio_net_hdr`
/// (see [`crate::gso`]). The flag takes effect only when this is the first
/// queue attached to the device (the kernel keeps the first attach's
/// features), so the result says whether the device has it.
pub fn open_queue_vnet(name: &str) -> io::Result<(File, bool)> {
    let file = attach(name, TUN_FLAGS | libc::IFF_VNET_HDR as libc::c_short)?;
    let mut req = ifreq(name, 0)?;
    ioctl_ptr(&file, libc::TUNGETIFF, &mut req)?;
    let vnet = req.flags & libc::IFF_VNET_HDR as libc::c_short != 0;
    Ok((file, vnet))
}

/// The offloads the overlay uses with `IFF_VNET_HDR`: partial checksums and
/// TCP segmentation over IPv4.
pub const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4;

/// Removes the persistent device `name` (it disappears once no queue is
/// attached any more).
pub fn delete_persistent(name: &str) -> io::Result<()> {
    let file = attach(name, TUN_FLAGS)?;
    ioctl_int(&file, libc::TUNSETPERSIST, 0)
}

/// Sets the device's offloads (`TUN_F_*`, 0 for none). The overlay's data path
/// reads plain packets, so it sets 0: a device left with TSO enabled by
/// another program would otherwise hand it segments larger than the MTU.
pub fn set_offload(queue: &File, flags: libc::c_uint) -> io::Result<()> {
    ioctl_int(queue, libc::TUNSETOFFLOAD, libc::c_ulong::from(flags))
}

/// Switches a queue to non-blocking reads and writes.
pub fn set_nonblocking(queue: &File) -> io::Result<()> {
    let fd = queue.as_raw_fd();
    // SAFETY: plain fcntl calls on an open fd.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether device `name` exists in the calling thread's network namespace.
pub fn exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Whether the process runs as root (the TUN ioctls need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(ifreq("flannel0", TUN_FLAGS).is_ok());
        assert!(ifreq("", TUN_FLAGS).is_err());
        assert!(ifreq("a/b", TUN_FLAGS).is_err());
        assert!(ifreq("sixteen-chars-xx", TUN_FLAGS).is_err());
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    /// Root only: creates, attaches to and deletes a device in a private
    /// network namespace (a thread that unshares its own).
    #[test]
    fn persistent_device_lifecycle() {
        if !crate::require_root("persistent_device_lifecycle") {
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            create_persistent("ovltest0").unwrap();
            create_persistent("ovltest0").unwrap();
            assert!(exists("ovltest0"));
            let q1 = open_queue("ovltest0").unwrap();
            let q2 = open_queue("ovltest0").unwrap();
            set_nonblocking(&q1).unwrap();
            set_offload(&q1, 0).unwrap();
            drop((q1, q2));
            assert!(exists("ovltest0"), "persistent after the queues close");
            delete_persistent("ovltest0").unwrap();
            assert!(!exists("ovltest0"));
        })
        .join()
        .unwrap();
    }
}
