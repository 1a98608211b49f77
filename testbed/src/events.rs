//! Events: every action the controller (and the endpoint follower) takes
//! and every observation it makes, with a timestamp, a kind, the object and a reason, appended to
//! `events.jsonl` in the testbed's state directory and readable after the
//! fact (`testbed events`).
//!
//! The log is one JSON object a line ([`Event`]), written with `O_APPEND`
//! in a single `write` per event. It is bounded: once it passes its cap
//! ([`MAX_BYTES`]) it is renamed to `events.jsonl.1` (replacing the previous
//! one) and a new one is started, so at most about twice the cap is kept.
//! Renaming is possible here, unlike for container logs, because the only
//! writers are the testbed's own [`EventLog`]s, which notice that the file
//! was moved and reopen it. Reading back and following is in `read`.

use serde::{Deserialize, Serialize, Serializer};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

mod read;
pub use read::{read, read_counted, Follower, ReadEvents};

/// The previous part of the log, after a rotation.
pub use crate::layout::ROTATED_EVENTS_FILE as ROTATED_FILE;
/// The event log in a testbed's state directory.
pub use crate::state::layout::EVENTS_FILE;
/// The size past which the log is rotated: 4 MiB.
pub const MAX_BYTES: u64 = 4 << 20;
/// The longest line a reader accepts; longer ones are skipped unread.
pub const MAX_LINE: usize = 64 << 10;
/// The longest object, reason or message an event keeps (bytes); longer
/// text is cut, so that every line written stays far below [`MAX_LINE`].
pub const MAX_FIELD: usize = 2048;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// A pod's namespace and interfaces were made.
    PodCreated,
    /// A pod's containers were started.
    PodStarted,
    /// Every container of a pod is ready.
    PodReady,
    /// A container was started again after it ended.
    PodRestarted,
    /// A pod was removed from a node that is not ready.
    PodEvicted,
    /// A pod was removed (deleted, scaled away, applied away).
    PodDeleted,
    /// A node stopped being ready.
    NodeNotReady,
    /// A node is ready again.
    NodeReady,
    /// A pod's endpoints joined the services.
    EndpointAdded,
    /// A pod's endpoints left the services.
    EndpointRemoved,
    /// A kernel object changed behind the testbed's back was restored.
    DriftRepaired,
    /// A difference from the plan was seen.
    DriftDetected,
    /// A fault was injected.
    FaultInjected,
    /// A fault was undone.
    FaultCleared,
    /// One step of `testbed apply` or `testbed scale`.
    ApplyStep,
    /// The controller started or stopped.
    Controller,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 16] = [
        EventKind::PodCreated,
        EventKind::PodStarted,
        EventKind::PodReady,
        EventKind::PodRestarted,
        EventKind::PodEvicted,
        EventKind::PodDeleted,
        EventKind::NodeNotReady,
        EventKind::NodeReady,
        EventKind::EndpointAdded,
        EventKind::EndpointRemoved,
        EventKind::DriftRepaired,
        EventKind::DriftDetected,
        EventKind::FaultInjected,
        EventKind::FaultCleared,
        EventKind::ApplyStep,
        EventKind::Controller,
    ];

    /// The kind as JSON spells it (`podEvicted`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PodCreated => "podCreated",
            EventKind::PodStarted => "podStarted",
            EventKind::PodReady => "podReady",
            EventKind::PodRestarted => "podRestarted",
            EventKind::PodEvicted => "podEvicted",
            EventKind::PodDeleted => "podDeleted",
            EventKind::NodeNotReady => "nodeNotReady",
            EventKind::NodeReady => "nodeReady",
            EventKind::EndpointAdded => "endpointAdded",
            EventKind::EndpointRemoved => "endpointRemoved",
            EventKind::DriftRepaired => "driftRepaired",
            EventKind::DriftDetected => "driftDetected",
            EventKind::FaultInjected => "faultInjected",
            EventKind::FaultCleared => "faultCleared",
            EventKind::ApplyStep => "applyStep",
            EventKind::Controller => "controller",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event. In JSON it also carries `time`, [`Event::time`] of
/// `unixMs`; reading ignores it (`unixMs` is the truth).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// What it happened to: `pod default/web-0`, `node node1`,
    /// `service default/web`, `fault link-down pod web-0`, `testbed`.
    pub object: String,
    /// Why, in a few words.
    pub reason: String,
    /// Details, if any (an error's text, the old and new value).
    #[serde(default)]
    pub message: Option<String>,
    /// The machine whose controller recorded it, when `events` shows the
    /// events of every machine of a testbed spread over several (the log
    /// files do not hold it).
    #[serde(default)]
    pub machine: Option<String>,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            time: String,
            unix_ms: u64,
            kind: EventKind,
            object: &'a str,
            reason: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            machine: Option<&'a str>,
        }
        Wire {
            time: self.time(),
            unix_ms: self.unix_ms,
            kind: self.kind,
            object: &self.object,
            reason: &self.reason,
            message: self.message.as_deref(),
            machine: self.machine.as_deref(),
        }
        .serialize(s)
    }
}

impl Event {
    /// An event that happens now. Text longer than [`MAX_FIELD`] is cut.
    pub fn now(kind: EventKind, object: impl Into<String>, reason: impl Into<String>) -> Event {
        Event {
            unix_ms: now_ms(),
            kind,
            object: cut(object.into()),
            reason: cut(reason.into()),
            message: None,
            machine: None,
        }
    }

    /// The same event with details.
    pub fn with_message(mut self, message: impl Into<String>) -> Event {
        self.message = Some(cut(message.into()));
        self
    }

    /// When, in RFC 3339 UTC with milliseconds: `2026-11-29T03:12:45.123Z`.
    pub fn time(&self) -> String {
        rfc3339_ms(self.unix_ms)
    }
}

/// Milliseconds since the Unix epoch (0 on a clock before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `text` cut to at most [`MAX_FIELD`] bytes at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_FIELD {
        let mut end = MAX_FIELD - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// `unix_ms` as RFC 3339 UTC with milliseconds (`1970-01-01T00:00:00.000Z`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let days = unix_ms / 86_400_000;
    let ms_of_day = unix_ms % 86_400_000;
    // u64 milliseconds are under 2^64 / 86.4e6 < 2^38 days: an i64 holds them.
    let (y, m, d) = civil_from_days(days as i64);
    let (s, ms) = (ms_of_day / 1000, ms_of_day % 1000);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], from March
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What can go wrong opening or reading the log.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The log could not be opened for appending.
    #[error("cannot open the event log {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The log could not be read.
    #[error("cannot read the event log {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Results of this module.
pub type Result<T, E = EventError> = std::result::Result<T, E>;

/// A file's identity: device and inode.
type FileId = (u64, u64);

fn id_of(m: &fs::Metadata) -> FileId {
    (m.dev(), m.ino())
}

/// The appending end of a testbed's event log. Writing never fails its
/// caller: a failed write is logged and counted ([`EventLog::failures`]).
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    rotated: PathBuf,
    cap: u64,
    file: Option<File>,
    id: Option<FileId>,
    len: u64,
    /// A write failed part-way: the next line starts on a line of its own.
    broken_line: bool,
    failures: u64,
}

/// Opens `path` for appending, mode 0600, not through a symbolic link.
fn open_append(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok((file, meta))
}

impl EventLog {
    /// Opens (creating it if need be) the event log of the testbed whose
    /// state directory is `state_dir`, rotated past [`MAX_BYTES`].
    pub fn open(state_dir: &Path) -> Result<EventLog> {
        EventLog::with_cap(state_dir, MAX_BYTES)
    }

    /// [`EventLog::open`] with another cap (tests).
    pub fn with_cap(state_dir: &Path, cap: u64) -> Result<EventLog> {
        let path = state_dir.join(EVENTS_FILE);
        let (file, meta) = open_append(&path).map_err(|source| EventError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(EventLog {
            rotated: state_dir.join(ROTATED_FILE),
            path,
            cap,
            id: Some(id_of(&meta)),
            len: meta.len(),
            file: Some(file),
            broken_line: false,
            failures: 0,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many events could not be written.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Records that `kind` happened to `object` now, because of `reason`.
    pub fn record(
        &mut self,
        kind: EventKind,
        object: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.append(&Event::now(kind, object, reason));
    }

    /// [`EventLog::record`] with details.
    pub fn record_message(
        &mut self,
        kind: EventKind,
        object: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.append(&Event::now(kind, object, reason).with_message(message));
    }

    /// Appends `event` as one line.
    pub fn append(&mut self, event: &Event) {
        let mut line = Vec::with_capacity(256);
        if self.broken_line {
            line.push(b'\n');
        }
        // An Event always serialises (strings, numbers and a unit enum).
        if let Err(e) = serde_json::to_writer(&mut line, event) {
            self.failed(&io::Error::other(e));
            return;
        }
        line.push(b'\n');
        match self.write(&line) {
            Ok(()) => self.broken_line = false,
            Err(e) => {
                self.broken_line = true;
                self.failed(&e);
            }
        }
    }

    fn failed(&mut self, e: &io::Error) {
        self.failures += 1;
        tracing::warn!(
            path = %self.path.display(),
            failures = self.failures,
            "an event could not be written: {e}"
        );
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.reopen_if_moved()?;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("the log is not open"))?;
        file.write_all(line)?;
        self.len += line.len() as u64;
        if self.len > self.cap {
            self.rotate()?;
        }
        Ok(())
    }

    /// Opens the log again if it is not open, or another writer rotated
    /// (or someone removed) the file this one appends to.
    fn reopen_if_moved(&mut self) -> io::Result<()> {
        let current = match fs::symlink_metadata(&self.path) {
            Ok(m) => Some(id_of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if self.file.is_none() || current != self.id {
            self.file = None;
            let (file, meta) = open_append(&self.path)?;
            (self.id, self.len, self.file) = (Some(id_of(&meta)), meta.len(), Some(file));
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, &self.rotated)?;
        self.file = None;
        let (file, meta) = open_append(&self.path)?;
        (self.id, self.len, self.file) = (Some(id_of(&meta)), meta.len(), Some(file));
        Ok(())
    }
}

/// The narrowest object column [`render`] pads to, so that the batches
/// of `events -f` line up as long as objects are shorter.
const OBJECT_WIDTH: usize = 24;
/// The widest object column: longer objects push their reason right.
const OBJECT_WIDTH_MAX: usize = 48;

/// The human form, one line per event, in aligned columns:
/// `2026-11-29T03:12:45.123Z  podEvicted       pod default/web-1         node node2 not ready for 5s`.
/// Control characters are shown escaped, never sent to the terminal.
pub fn render(events: &[Event]) -> String {
    let kind_width = EventKind::ALL
        .iter()
        .map(|k| k.as_str().len())
        .max()
        .unwrap_or(0);
    let object_width = events
        .iter()
        .map(|e| e.object.chars().count())
        .filter(|&n| n <= OBJECT_WIDTH_MAX)
        .max()
        .unwrap_or(0)
        .max(OBJECT_WIDTH);
    let mut out = String::new();
    for e in events {
        let mut reason = printable(&e.reason);
        if let Some(m) = &e.message {
            reason.push_str(": ");
            reason.push_str(&printable(m));
        }
        let object = match &e.machine {
            Some(m) => format!("{}: {}", printable(m), printable(&e.object)),
            None => printable(&e.object),
        };
        let line = format!(
            "{}  {:<kind_width$}  {object:<object_width$}  {reason}",
            e.time(),
            e.kind.as_str(),
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` with control characters escaped (`\n`, `\u{1b}`).
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            let plain = (!c.is_control()).then_some(c);
            escaped.into_iter().flatten().chain(plain)
        })
        .collect()
}

#[cfg(test)]
mod tests;
