//! Typed reading and writing of the state directory's JSON files: a
//! [`JsonFile`] knows its path (from [`crate::layout`]) and the type it
//! holds, reads and parses it with errors that name the file, and writes it
//! atomically (a private temporary file, synced, renamed over it). The plan,
//! the status, the udp daemons' counters and impairments and the data
//! paths' endpoints have their handles here; the controller's own files
//! (spec, live changes, the machines' view) are [`JsonFile`]s of the
//! modules that own their types.

use crate::layout;
use crate::plan::Plan;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

pub use super::status::Status;
pub use overlay::daemon::ImpairFile;
pub use overlay::stats::StatsSnapshot;

/// A set of pods, as (namespace, name): the endpoints a data path holds.
pub type PodSet = BTreeSet<(String, String)>;

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be read (or is not there).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// It does not hold what it should.
    #[error("{path} is not a testbed {what} file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
    /// It cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl FileError {
    /// Whether the file is not there (yet).
    pub fn is_missing(&self) -> bool {
        matches!(self, FileError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A JSON file of the state directory holding a `T`.
#[derive(Debug)]
pub struct JsonFile<T> {
    path: PathBuf,
    what: &'static str,
    pretty: bool,
    _holds: PhantomData<fn() -> T>,
}

impl<T> Clone for JsonFile<T> {
    fn clone(&self) -> Self {
        JsonFile {
            path: self.path.clone(),
            what: self.what,
            pretty: self.pretty,
            _holds: PhantomData,
        }
    }
}

impl<T> JsonFile<T> {
    /// The file at `path`, holding `what` (for messages: "plan", "status"),
    /// written indented and ending in a newline when `pretty`.
    pub fn new(path: PathBuf, what: &'static str, pretty: bool) -> Self {
        JsonFile {
            path,
            what,
            pretty,
            _holds: PhantomData,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<T: DeserializeOwned> JsonFile<T> {
    /// Reads and parses it.
    pub fn read(&self) -> Result<T, FileError> {
        let text = std::fs::read(&self.path).map_err(|source| FileError::Read {
            path: self.path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| FileError::Parse {
            path: self.path.clone(),
            what: self.what,
            source,
        })
    }

    /// Reads and parses it; `None` when it is not there.
    pub fn read_if_there(&self) -> Result<Option<T>, FileError> {
        match self.read() {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_missing() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl<T: Serialize> JsonFile<T> {
    /// Writes `value` atomically and privately (0600), creating the file's
    /// own directory (0700) if needed, never its ancestors: a writer that
    /// outlives its testbed's `down` fails instead of making the state
    /// directory again.
    pub fn write(&self, value: &T) -> Result<(), FileError> {
        let error = |source| FileError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes = if self.pretty {
            serde_json::to_vec_pretty(value)
        } else {
            serde_json::to_vec(value)
        }
        .map_err(|e| error(io::Error::other(e)))?;
        if self.pretty {
            bytes.push(b'\n');
        }
        if let Some(parent) = self.path.parent() {
            if !parent.is_dir() {
                use std::os::unix::fs::DirBuilderExt;
                match std::fs::DirBuilder::new().mode(0o700).create(parent) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(error(e)),
                    _ => {}
                }
            }
        }
        super::write_atomic(&self.path, &bytes).map_err(error)
    }
}

/// The plan the testbed whose state directory is `dir` runs.
pub fn plan(dir: &Path) -> JsonFile<Plan> {
    JsonFile::new(layout::plan(dir), "plan", true)
}

/// The supervisor's status of every container.
pub fn status(dir: &Path) -> JsonFile<Status> {
    JsonFile::new(layout::status(dir), "status", true)
}

/// The counters node `node`'s udp daemon writes (the daemon writes them
/// itself, in the overlay crate's format; this reads them).
pub fn stats(dir: &Path, node: &str) -> JsonFile<StatsSnapshot> {
    JsonFile::new(layout::overlay_stats(dir, node), "overlay counters", false)
}

/// The impairments node `node`'s udp daemon follows.
pub fn impairments(dir: &Path, node: &str) -> JsonFile<ImpairFile> {
    JsonFile::new(layout::overlay_impairments(dir, node), "impairments", false)
}

/// The ready pods a data path holds: the kernel rules' (`node` None) or
/// node `node`'s userspace proxy's.
pub fn endpoints(dir: &Path, node: Option<&str>) -> JsonFile<PodSet> {
    JsonFile::new(layout::endpoints(dir, node), "endpoints", false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_whole_read_back_and_its_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = endpoints(dir.path(), Some("n1"));
        assert!(f.read_if_there().unwrap().is_none());
        assert!(f.read().unwrap_err().is_missing());
        let set: PodSet = [("default".to_string(), "web-0".to_string())].into();
        f.write(&set).unwrap();
        assert_eq!(f.read().unwrap(), set);
        assert_eq!(
            std::fs::read_to_string(f.path()).unwrap(),
            r#"[["default","web-0"]]"#
        );
        // Its own directory is made, never the state directory itself.
        let gone = dir.path().join("gone");
        let late = endpoints(&gone, Some("n1"));
        assert!(matches!(late.write(&set), Err(FileError::Write { .. })));
        assert!(
            !gone.exists(),
            "a late writer made the state directory again"
        );
        std::fs::write(f.path(), "{").unwrap();
        let e = f.read().unwrap_err();
        assert!(!e.is_missing());
        assert!(
            e.to_string().starts_with(&format!(
                "{} is not a testbed endpoints file",
                f.path().display()
            )),
            "{e}"
        );
    }
}
