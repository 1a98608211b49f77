//! Logs of containers and daemons: capped, rotated, and read back.
//!
//! A container's stdout and stderr are appended (`O_APPEND`) to its log
//! file; a daemon's to its own. The supervisor looks at every log once a
//! second, and one that has grown past the testbed's
//! `containerLogMaxBytes` is rotated as logrotate's `copytruncate` does: its
//! last `max` bytes are copied to `NAME.log.1` (replacing the previous one)
//! and the log is truncated to zero. The writers keep their descriptors
//! and, appending, go on at the new end. So a log holds at most about
//! twice the cap plus what is written in a second, whatever a container
//! prints. Bytes written between the copy and the truncation are lost (a
//! window of microseconds), as with `copytruncate`; rotating by renaming
//! would need every writer to reopen its file, which a container cannot be
//! asked to do.
//!
//! `testbed logs` shows the rotated part and then the current one, and
//! `-f` follows across rotations.
//!
//! Before a container is started again, what its run that just ended wrote
//! (from where that run began in the log to its end, at most `max` bytes:
//! the newest) is kept in `NAME.log.previous`, which `testbed logs
//! --previous` shows, as `kubectl logs --previous` shows the previous
//! container's. A run during which the log was rotated keeps only what it
//! wrote after the rotation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The last `n` lines of `data` (a last line without its newline counts).
pub fn last_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &data[data.len()..];
    }
    // A final newline ends the last line; it does not start another.
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

/// The rotated part of log `path`: `C.log.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Where the previous run's part of log `path` is kept: `C.log.previous`.
pub fn previous(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".previous");
    PathBuf::from(name)
}

/// The length of log `path` (0 when it does not exist): where the next run
/// starts writing.
pub fn length(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Keeps the part of log `path` from byte `start` to its end (the run that
/// just ended; at most the last `max` bytes of it) in
/// [`previous`]`(path)`, replacing what was there, and returns the log's
/// length: where the next run starts. A `start` past the end (the log was
/// truncated since) keeps the whole log.
pub fn keep_previous(path: &Path, start: u64, max: u64) -> io::Result<u64> {
    let mut log = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = log.metadata()?.len();
    let from = run_window(start, len, max);
    copy_part(&mut log, from, len - from, &previous(path))?;
    Ok(len)
}

/// Copies `n` bytes of `log` from byte `from` to `to` (0600), replacing it
/// at once (a temporary file beside it, renamed over it).
fn copy_part(log: &mut File, from: u64, n: u64, to: &Path) -> io::Result<()> {
    log.seek(SeekFrom::Start(from))?;
    let mut tmp_name = to.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    io::copy(&mut log.take(n), &mut out)?;
    out.flush()?;
    fs::rename(&tmp, to)
}

/// Where the kept part of a run begins: at `start` (0 when past `len`, a
/// log truncated since), but no more than `max` bytes before `len`.
pub fn run_window(start: u64, len: u64, max: u64) -> u64 {
    let start = if start > len { 0 } else { start };
    start.max(len.saturating_sub(max))
}

/// Rotates log `path` if it holds more than `max` bytes. Returns whether it
/// did.
pub fn rotate_if_larger(path: &Path, max: u64) -> io::Result<bool> {
    // A look at its size first: thousands of logs are looked at each second.
    match fs::metadata(path) {
        Ok(m) if m.len() <= max => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        _ => {}
    }
    let mut log = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = log.metadata()?.len();
    if len <= max {
        return Ok(false);
    }
    // Keep the newest `max` bytes: bounded work however much was written.
    copy_part(&mut log, len - max, max, &rotated(path))?;
    log.set_len(0)?;
    Ok(true)
}

/// Follows a log as it grows, across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    pos: u64,
    /// The last bytes handed out, to find the place again in the rotated
    /// part after a rotation.
    tail: Vec<u8>,
}

/// How much of what was read a follower remembers.
const TAIL: usize = 4096;

impl Follower {
    /// Starts following `path`: returns everything it holds now (its
    /// rotated part, then the current one) and the follower, which goes on
    /// from there.
    pub fn start(path: &Path) -> io::Result<(Follower, Vec<u8>)> {
        let mut shown = match fs::read(rotated(path)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let current = fs::read(path)?;
        shown.extend_from_slice(&current);
        let mut f = Follower {
            path: path.to_path_buf(),
            pos: current.len() as u64,
            tail: Vec::new(),
        };
        f.remember(&shown);
        Ok((f, shown))
    }

    fn remember(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        let extra = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..extra);
    }

    /// What was appended since the last call. After a rotation (the log is
    /// shorter than what was read) what the rotated part holds after the
    /// last bytes read comes first.
    pub fn poll(&mut self) -> io::Result<Vec<u8>> {
        let mut file = File::open(&self.path)?;
        let len = file.metadata()?.len();
        let mut out = Vec::new();
        if len < self.pos {
            let old = fs::read(rotated(&self.path)).unwrap_or_default();
            out.extend_from_slice(after_last(&old, &self.tail));
            self.pos = 0;
        }
        file.seek(SeekFrom::Start(self.pos))?;
        let before = out.len();
        file.read_to_end(&mut out)?;
        self.pos += (out.len() - before) as u64;
        self.remember(&out);
        Ok(out)
    }
}

/// The part of `data` after the last bytes a follower showed (`tail`):
/// after the last occurrence of the whole tail, else after the longest end
/// of the tail that `data` starts with (at least [`MIN_OVERLAP`] bytes), else
/// all of it (the follower fell behind by more than the rotated part).
pub fn after_last<'a>(data: &'a [u8], tail: &[u8]) -> &'a [u8] {
    if tail.is_empty() {
        return data;
    }
    if tail.len() <= data.len() {
        if let Some(i) = (0..=data.len() - tail.len())
            .rev()
            .find(|&i| &data[i..i + tail.len()] == tail)
        {
            return &data[i + tail.len()..];
        }
    }
    let longest = tail.len().min(data.len());
    (MIN_OVERLAP.min(longest)..=longest)
        .rev()
        .filter(|&k| k > 0)
        .find(|&k| data.starts_with(&tail[tail.len() - k..]))
        .map_or(data, |k| &data[k..])
}

/// The shortest overlap [`after_last`] trusts.
const MIN_OVERLAP: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_kept_from_its_start_and_at_most_max_bytes() {
        assert_eq!(run_window(10, 30, 100), 10);
        assert_eq!(run_window(10, 30, 5), 25, "only the newest max bytes");
        assert_eq!(run_window(40, 30, 100), 0, "truncated since: all of it");
        assert_eq!(run_window(30, 30, 100), 30, "an empty run");
    }

    #[test]
    fn keeping_the_previous_run_replaces_it_and_says_where_the_next_starts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        assert_eq!(keep_previous(&log, 0, 100).unwrap(), 0, "no log yet");
        std::fs::write(&log, "run-1\n").unwrap();
        let next = keep_previous(&log, 0, 100).unwrap();
        assert_eq!(next, 6);
        assert_eq!(std::fs::read_to_string(previous(&log)).unwrap(), "run-1\n");
        std::fs::write(&log, "run-1\nrun-2\n").unwrap();
        assert_eq!(keep_previous(&log, next, 100).unwrap(), 12);
        assert_eq!(std::fs::read_to_string(previous(&log)).unwrap(), "run-2\n");
        assert_eq!(length(&log), 12);
        assert!(previous(&log).ends_with("c.log.previous"));
    }

    #[test]
    fn last_lines_counts_lines_not_newlines() {
        let log = b"one\ntwo\nthree\n";
        assert_eq!(last_lines(log, 1), b"three\n");
        assert_eq!(last_lines(log, 2), b"two\nthree\n");
        assert_eq!(last_lines(log, 3), &log[..]);
        assert_eq!(last_lines(log, 9), &log[..]);
        assert_eq!(last_lines(log, 0), b"");
        assert_eq!(last_lines(b"a\nunfinished", 1), b"unfinished");
        assert_eq!(last_lines(b"", 2), b"");
        assert_eq!(last_lines(b"\n\n", 1), b"\n");
    }

    /// A writer appending to `path`, as a container's output does.
    fn appender(path: &Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    fn private_dir() -> PathBuf {
        tempfile::tempdir().unwrap().keep()
    }

    #[test]
    fn a_log_past_its_cap_keeps_its_newest_bytes_and_writers_go_on() {
        let dir = private_dir();
        let path = dir.join("c.log");
        let mut writer = appender(&path);
        writer.write_all(b"0123456789").unwrap();
        assert!(!rotate_if_larger(&path, 10).unwrap(), "at the cap: kept");
        writer.write_all(b"abcdefghij").unwrap();
        assert!(rotate_if_larger(&path, 10).unwrap());
        assert_eq!(fs::read(rotated(&path)).unwrap(), b"abcdefghij");
        assert_eq!(fs::read(&path).unwrap(), b"");
        // The writer's appends land at the new start.
        writer.write_all(b"next").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"next");
        assert_eq!(Follower::start(&path).unwrap().1, b"abcdefghijnext");
        assert!(!rotate_if_larger(&dir.join("missing.log"), 1).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_follower_sees_every_byte_across_a_rotation() {
        let dir = private_dir();
        let path = dir.join("c.log");
        let mut writer = appender(&path);
        writer.write_all(b"line 1\nline 2\n").unwrap();
        let (mut f, shown) = Follower::start(&path).unwrap();
        assert_eq!(shown, b"line 1\nline 2\n");
        writer.write_all(b"line 3\n").unwrap();
        assert_eq!(f.poll().unwrap(), b"line 3\n");
        // Written, then rotated before the follower looked again.
        writer.write_all(b"line 4\nline 5\n").unwrap();
        assert!(rotate_if_larger(&path, 24).unwrap());
        writer.write_all(b"line 6\n").unwrap();
        assert_eq!(f.poll().unwrap(), b"line 4\nline 5\nline 6\n");
        assert_eq!(f.poll().unwrap(), b"");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn after_last_finds_the_place() {
        assert_eq!(after_last(b"abcabc", b"bc"), b"");
        assert_eq!(after_last(b"abcabd", b"bc"), b"abd");
        assert_eq!(after_last(b"xyz", b"q"), b"xyz");
        assert_eq!(after_last(b"xyz", b""), b"xyz");
        assert_eq!(after_last(b"x", b"xyz"), b"x");
        // The rotated part starts inside what was shown.
        assert_eq!(
            after_last(b"456789abcdefghij", b"0123456789ab"),
            b"cdefghij"
        );
        // Too short an overlap to trust: all of it.
        assert_eq!(after_last(b"9abcdefghij", b"0123456789ab"), b"9abcdefghij");
    }
}
