//! Reading the event log back: every event of both files ([`read`]), and
//! following it as it grows, across rotations ([`Follower`]). The files are
//! hostile: a line that does not parse, or is longer than [`MAX_LINE`], is
//! skipped and counted, and never held in memory whole.

use super::{id_of, Event, EventError, FileId, Result, EVENTS_FILE, MAX_LINE, ROTATED_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
/// Events read back, and how many lines were skipped (not an event, or
/// longer than [`MAX_LINE`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadEvents {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Lines skipped.
    pub skipped: u64,
}

impl ReadEvents {
    fn line(&mut self, line: Option<&[u8]>) {
        match line {
            None => self.skipped += 1,
            Some(l) if l.iter().all(u8::is_ascii_whitespace) => {}
            Some(l) => match serde_json::from_slice(l) {
                Ok(e) => self.events.push(e),
                Err(_) => self.skipped += 1,
            },
        }
    }
}

/// Splits bytes read in pieces into lines, holding at most [`MAX_LINE`]
/// bytes of an unfinished one: a longer line is dropped as it comes and
/// reported as skipped (`None`) at its end.
#[derive(Debug, Default)]
pub(super) struct Lines {
    pub(super) partial: Vec<u8>,
    pub(super) overlong: bool,
}

impl Lines {
    pub(super) fn feed(&mut self, mut data: &[u8], out: &mut ReadEvents) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            let line = &data[..i];
            if self.overlong || self.partial.len() + line.len() > MAX_LINE {
                out.line(None);
            } else if self.partial.is_empty() {
                out.line(Some(line));
            } else {
                self.partial.extend_from_slice(line);
                out.line(Some(&self.partial));
            }
            self.partial.clear();
            self.overlong = false;
            data = &data[i + 1..];
        }
        if self.overlong || self.partial.len() + data.len() > MAX_LINE {
            self.overlong = true;
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// The end of a file: an unfinished last line counts as a line.
    fn finish(&mut self, out: &mut ReadEvents) {
        if self.overlong {
            out.line(None);
        } else if !self.partial.is_empty() {
            out.line(Some(&self.partial));
        }
        self.partial.clear();
        self.overlong = false;
    }
}

/// Reads what `file` holds from where it stands into `out`.
fn drain(file: &mut File, lines: &mut Lines, out: &mut ReadEvents) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => lines.feed(&buf[..n], out),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The error of reading `path`.
fn read_error(path: &Path) -> impl FnOnce(io::Error) -> EventError {
    let path = path.to_path_buf();
    move |source| EventError::Read { path, source }
}

/// Opens `path` for reading, `None` when there is no such file.
fn open_read(path: &Path) -> Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path)(e)),
    }
}

/// Every event of the testbed whose state directory is `state_dir`, oldest
/// first: the rotated part, then the current log. Lines skipped are logged.
pub fn read(state_dir: &Path) -> Result<Vec<Event>> {
    let read = read_counted(state_dir)?;
    if read.skipped > 0 {
        tracing::warn!(
            skipped = read.skipped,
            "lines of {} that are not events were skipped",
            state_dir.join(EVENTS_FILE).display()
        );
    }
    Ok(read.events)
}

/// [`read`], returning how many lines were skipped instead of logging it.
pub fn read_counted(state_dir: &Path) -> Result<ReadEvents> {
    let (mut follower, mut out) = Follower::start(state_dir)?;
    follower.lines.finish(&mut out);
    Ok(out)
}

/// Follows a testbed's event log as it grows, across rotations
/// (`testbed events -f`). It keeps the file it reads open, so a rotation
/// (a rename) loses nothing: what was appended to the old file before it
/// was renamed is read through the open descriptor, then the new file from
/// its start.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    rotated: PathBuf,
    file: Option<File>,
    id: Option<FileId>,
    lines: Lines,
    skipped: u64,
    lost: u64,
}

impl Follower {
    /// Starts following the log of `state_dir`: returns what it holds now
    /// (as [`read_counted`]) and the follower, which goes on after it.
    pub fn start(state_dir: &Path) -> Result<(Follower, ReadEvents)> {
        let path = state_dir.join(EVENTS_FILE);
        // The current file first: if it is rotated while the old one is
        // read, it is the one just read, and is gone on with, not read twice.
        let current = open_read(&path)?;
        Follower::start_from(state_dir, current)
    }

    /// [`Follower::start`] once the current file (`current`) is open.
    pub(super) fn start_from(
        state_dir: &Path,
        mut file: Option<File>,
    ) -> Result<(Follower, ReadEvents)> {
        let path = state_dir.join(EVENTS_FILE);
        let rotated = state_dir.join(ROTATED_FILE);
        let id = match &file {
            Some(f) => Some(id_of(&f.metadata().map_err(read_error(&path))?)),
            None => None,
        };
        let mut out = ReadEvents::default();
        let mut lines = Lines::default();
        let mut current_read = false;
        if let Some(mut old) = open_read(&rotated)? {
            let old_id = id_of(&old.metadata().map_err(read_error(&rotated))?);
            drain(&mut old, &mut lines, &mut out).map_err(read_error(&rotated))?;
            if Some(old_id) == id {
                (file, current_read) = (Some(old), true);
            } else {
                lines.finish(&mut out);
            }
        }
        if let (Some(f), false) = (&mut file, current_read) {
            drain(f, &mut lines, &mut out).map_err(read_error(&path))?;
        }
        let follower = Follower {
            path,
            rotated,
            file,
            id,
            lines,
            skipped: out.skipped,
            lost: 0,
        };
        Ok((follower, out))
    }

    /// Starts following the log of `state_dir` from its end: only events
    /// recorded from now on are returned.
    pub fn at_end(state_dir: &Path) -> Result<Follower> {
        Ok(Follower::start(state_dir)?.0)
    }

    /// Lines skipped so far (not events, or too long).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// How many times the log was rotated twice between two polls, so
    /// that a whole file of events was missed.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The events recorded since the last call.
    pub fn poll(&mut self) -> Result<Vec<Event>> {
        let mut out = ReadEvents::default();
        let result = self.poll_into(&mut out);
        self.skipped += out.skipped;
        result.map(|()| out.events)
    }

    fn poll_into(&mut self, out: &mut ReadEvents) -> Result<()> {
        if let Some(f) = &mut self.file {
            drain(f, &mut self.lines, out).map_err(read_error(&self.path))?;
        }
        let now = match fs::symlink_metadata(&self.path) {
            Ok(m) => id_of(&m),
            // Between the rename and the new file: next time.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(read_error(&self.path)(e)),
        };
        if Some(now) == self.id {
            return Ok(());
        }
        // Rotated: the rest of the old file (written before the rename),
        // then the new one from its start.
        if let Some(f) = &mut self.file {
            drain(f, &mut self.lines, out).map_err(read_error(&self.path))?;
            self.lines.finish(out);
            let moved = fs::symlink_metadata(&self.rotated).map(|m| id_of(&m));
            if moved.ok() != self.id {
                self.lost += 1;
                tracing::warn!(
                    path = %self.path.display(),
                    "the event log was rotated twice between two looks: events were missed"
                );
            }
        }
        self.file = open_read(&self.path)?;
        self.id = match &self.file {
            Some(f) => Some(id_of(&f.metadata().map_err(read_error(&self.path))?)),
            None => None,
        };
        if let Some(f) = &mut self.file {
            drain(f, &mut self.lines, out).map_err(read_error(&self.path))?;
        }
        Ok(())
    }
}
