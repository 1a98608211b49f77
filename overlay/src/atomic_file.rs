//! Replacing a file atomically, safely with several writers: each write
//! goes to a temporary file of its own beside the target (the target's name,
//! the process id and a counter, created exclusively), is flushed to disk
//! and renamed over the target; a failed write removes its temporary file.
//! Two writers of two files never share a temporary file, and a reader sees
//! the old content or the new one, never a mix. Files are created private
//! (0600): they hold state only root reads.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The temporary file for one write of `path`: hidden, in the same
/// directory, `.<name>.<pid>.<n>.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Replaces `path`'s content with `data` atomically (see the module).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_differ_per_file_and_per_write() {
        let a = temp_path(Path::new("/r/subnets/10.244.1.0-25"));
        let b = temp_path(Path::new("/r/subnets/10.244.1.128-25"));
        let a2 = temp_path(Path::new("/r/subnets/10.244.1.0-25"));
        assert_ne!(a, b);
        assert_ne!(a, a2);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".10.244.1.0-25.") && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(a.parent(), Some(Path::new("/r/subnets")));
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("target-is-a-dir")).unwrap();
        fs::write(dir.join("target-is-a-dir/x"), "x").unwrap();
        assert!(write_atomic(&dir.join("target-is-a-dir"), b"data").is_err());
        write_atomic(&dir.join("file"), b"one").unwrap();
        write_atomic(&dir.join("file"), b"two").unwrap();
        assert_eq!(fs::read(dir.join("file")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
