//! The state directory, `/run/testbed/NAME`: where a running testbed keeps
//! its plan, status, logs and volumes. This module owns the one rule for a
//! testbed's name (the file and the command line share it), so that no name
//! reaches a path unchecked: a [`TestbedName`] can only be made by checking,
//! and every path of a testbed's state is built from one. It also makes the
//! directories private (0700) and writes files atomically and privately
//! (0600), since the plan holds the containers' environments.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub mod files;
pub mod keep;
pub mod pids;
pub mod plan_watch;
pub mod status;

/// The state directory's layout (file names and paths) and its root.
pub use crate::layout::{self, ROOT};

pub use crate::topology::names::{check_name, NameError, NAME_MAX};

/// A checked testbed name: 1-12 characters of `a-z`, `0-9` and `-`,
/// starting with a letter (the topology format's rule).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TestbedName(String);

impl TestbedName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<TestbedName, NameError> {
        check_name(name)?;
        Ok(TestbedName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its state directory, `/run/testbed/NAME`.
    pub fn dir(&self) -> PathBuf {
        Path::new(ROOT).join(&self.0)
    }
}

impl fmt::Display for TestbedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TestbedName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TestbedName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TestbedName::new(s)
    }
}

/// Creates `dir` and its missing parents with mode 0700, and makes `dir`
/// itself 0700 if it existed with another mode.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Mounts a tmpfs of its own on the (existing, empty) state directory
/// `dir`, mode 0700: creating and removing the thousands of files of a
/// large testbed then costs memory operations, not a disk file system's
/// (`down` unmounts it instead of deleting file by file). Where it cannot
/// be mounted the directory stays an ordinary one.
pub fn mount_tmpfs(dir: &Path) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(io::Error::from)
}

/// Whether `dir` is a mount point (its device differs from its parent's).
pub fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (fs::metadata(dir), dir.parent().map(fs::metadata)) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Removes a state directory: unmounts its tmpfs (lazily: a process that
/// still has a file open keeps it until it exits) and removes the
/// directory, or removes an ordinary directory with everything in it.
pub fn remove_dir(dir: &Path) -> io::Result<()> {
    if is_mount_point(dir) {
        nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)?;
        // A tmpfs mounted more than once (by hand): unmount them all.
        while is_mount_point(dir) {
            nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)?;
        }
    }
    fs::remove_dir_all(dir)
}

/// Writes `bytes` to `path` atomically: a temporary file of a name no other
/// writer uses (the file's own name, this process, a counter) beside it,
/// created exclusively with mode 0600, synced, then renamed over `path`.
/// Readers see the old or the new content, never a mixture. (The overlay's
/// registry writes the same way: this is that one implementation.)
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    overlay::atomic_file::write_atomic(path, bytes)
}

/// Writes a report a user asked for (`--junit FILE`, an experiment's
/// results) as [`write_atomic`] does, readable by everyone (0644): the
/// testbed runs as root, its reports are read by the user and CI steps
/// that are not.
pub fn write_report(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write_atomic(path, bytes)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

/// Makes the tree at `dir` (which the testbed wrote) readable by everyone:
/// directories 0755, files 0644; symbolic links are not followed.
pub fn publish_tree(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(dir)? {
            publish_tree(&entry?.path())?;
        }
    } else if meta.is_file() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_or_are_empty_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "./",
            "x/../..",
            "/",
            "a/b",
            "A",
            "1abc",
            "-a",
            "a b",
            "a\0b",
            "a.b",
            "abcdefghijklm",
            "é",
            "a\n",
        ] {
            assert!(TestbedName::new(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["a", "demo", "lab-1", "abcdefghijkl", "a-"] {
            let n = TestbedName::new(good).expect(good);
            assert_eq!(n.dir(), Path::new("/run/testbed").join(good));
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = TestbedName::new("..").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`..` is not a testbed name: it does not start with a lowercase letter"
        );
        let e = TestbedName::new("x/../..").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`x/../..` is not a testbed name: it contains `/`"
        );
        let e = TestbedName::new("").unwrap_err();
        assert_eq!(e.to_string(), "`` is not a testbed name: it is empty");
        let e = TestbedName::new("a\nb").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`a\\nb` is not a testbed name: it contains `\\n`"
        );
    }

    #[test]
    fn atomic_writes_are_private_and_use_their_own_temporary_file() {
        let dir = tempfile::tempdir().unwrap().keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Two files whose names differ only after a dot: their temporary
        // files must differ too.
        let a = dir.join("10.244.1.0-25");
        let b = dir.join("10.244.1.128-25");
        std::thread::scope(|s| {
            for i in 0..20 {
                let (a, b) = (a.clone(), b.clone());
                s.spawn(move || {
                    write_atomic(&a, format!("a{i}").as_bytes()).unwrap();
                    write_atomic(&b, format!("b{i}").as_bytes()).unwrap();
                });
            }
        });
        assert!(fs::read_to_string(&a).unwrap().starts_with('a'));
        assert!(fs::read_to_string(&b).unwrap().starts_with('b'));
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 2, "temporary files left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
