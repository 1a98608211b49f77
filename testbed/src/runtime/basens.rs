//! The mount namespace containers are made from. A new mount namespace is a
//! copy of its parent's mount table, and the host's holds one mount per
//! network namespace of every running testbed (`/run/netns/*`) and one
//! tmpfs per testbed's state directory: copying those into each container
//! made starting n containers cost O(n²), and each container pinned every
//! testbed's namespaces while it ran (freeing its copies made its exit
//! slow, and kept other testbeds' memory after their `down`). The
//! supervisor therefore makes one base mount namespace, private, without
//! `/run/netns` and without other testbeds' state directories, and each
//! container copies that instead. Host mounts made after the supervisor
//! started are not seen by its containers.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// A mount namespace without the testbeds' namespace mounts.
#[derive(Debug)]
pub struct BaseMounts {
    ns: File,
}

impl BaseMounts {
    /// Makes the base namespace for the testbed whose state directory is
    /// `own_state` (on a thread of its own, which leaves the caller's
    /// namespace untouched).
    pub fn create(own_state: &Path) -> io::Result<BaseMounts> {
        let own = own_state.to_path_buf();
        std::thread::Builder::new()
            .name("base-mounts".into())
            .spawn(move || -> io::Result<BaseMounts> {
                use nix::mount::{mount, MsFlags};
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )?;
                let table = std::fs::read_to_string("/proc/thread-self/mountinfo")?;
                for point in foreign_mounts(&table, &own) {
                    detach(&point)?;
                }
                Ok(BaseMounts {
                    ns: File::open("/proc/thread-self/ns/mnt")?,
                })
            })?
            .join()
            .map_err(|_| io::Error::other("the base mount namespace thread panicked"))?
    }

    /// Its descriptor, for `setns` in a new container.
    pub fn fd(&self) -> RawFd {
        self.ns.as_raw_fd()
    }
}

/// Lazily unmounts `point`; one already gone (under a detached parent) is
/// fine.
fn detach(point: &Path) -> io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(point, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The mount points of `mountinfo` (proc(5)'s format) that containers of
/// the testbed with state directory `own` must not copy: `/run/netns` and
/// everything under it, and every mount under the state root that is not
/// `own` or inside it. Outermost first.
pub fn foreign_mounts(mountinfo: &str, own: &Path) -> Vec<PathBuf> {
    let netns = Path::new(crate::kernel::netns::NETNS_DIR);
    let root = Path::new(crate::state::ROOT);
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| {
            p.starts_with(netns) || (p.starts_with(root) && p != root && !p.starts_with(own))
        })
        .collect();
    out.sort_by_key(|p| p.components().count());
    out.dedup();
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(unsafe_code)] // the test enters the base namespace with setns.
mod tests {
    use super::*;

    fn nsfs_mounts(mountinfo: &str) -> usize {
        mountinfo.lines().filter(|l| l.contains(" - nsfs ")).count()
    }

    #[test]
    fn foreign_mounts_are_netns_and_other_testbeds_state() {
        let table = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
30 22 0:4 / /run/netns rw shared:5 - tmpfs tmpfs rw
31 30 0:4 net:[4026532] /run/netns/tb-a.node.n1 rw shared:5 - nsfs nsfs rw
40 22 0:50 / /run/testbed/other rw - tmpfs tmpfs rw
41 22 0:51 / /run/testbed/mine rw - tmpfs tmpfs rw
42 22 0:52 / /run/testbed/mine-2 rw - tmpfs tmpfs rw
43 41 0:53 / /run/testbed/mine/pods/x rw - tmpfs tmpfs rw
44 22 0:54 / /srv/with\\040space rw - tmpfs tmpfs rw
";
        let got = foreign_mounts(table, Path::new("/run/testbed/mine"));
        assert_eq!(
            got,
            [
                "/run/netns",
                "/run/netns/tb-a.node.n1",
                "/run/testbed/other",
                "/run/testbed/mine-2",
            ]
            .map(PathBuf::from)
        );
        assert_eq!(unescape("/srv/with\\040space"), "/srv/with space");
        assert_eq!(unescape("a\\0"), "a\\0");
    }

    #[test]
    fn the_base_has_no_network_namespace_mounts() {
        let ns = crate::runtime::testutil::Netns::new();
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            nsfs_mounts(&host) >= 1,
            "the test's namespace {} is mounted here",
            ns.name
        );
        let base = BaseMounts::create(Path::new("/run/testbed/none")).expect("base namespace");
        // A thread that enters the base sees none of them.
        let fd = base.fd();
        let seen = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
            // SAFETY: setns on a descriptor owned by `base`, which outlives
            // this thread.
            assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNS) }, 0);
            std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(nsfs_mounts(&seen), 0, "{seen}");
        assert!(seen.lines().count() > 0);
        // The caller's own namespace still has this test's mount (not a
        // count: tests beside this one add and remove theirs meanwhile).
        let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            after.contains(&format!("/{} ", ns.name)),
            "{} is gone from the caller's mounts",
            ns.name
        );
    }
}
