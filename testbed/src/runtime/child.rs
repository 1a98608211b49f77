//! The system calls a new container process makes between `fork` and
//! `exec`, prepared beforehand. After `fork` in a process that may have other
//! threads, the child may only make async-signal-safe calls: no allocation,
//! no locks, no formatting. So every argument (paths as `CString`s, file
//! descriptors) is built in the parent as a list of [`Step`]s, and the child
//! only walks that list calling libc. When a step fails, the child writes the
//! step's index and `errno` to a pipe; the parent turns that into a message
//! naming the step (`bind-mounting X on Y: No such file or directory`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One system call of the child.
#[derive(Debug)]
pub(crate) enum Step {
    /// `setsid()`: a session and process group of its own.
    Setsid,
    /// Every signal back to its default action (ignored ones stay ignored
    /// across `exec` otherwise).
    ResetSignals,
    /// `setns(fd, nstype)`.
    Setns { fd: RawFd, nstype: libc::c_int },
    /// `unshare(flags)`.
    Unshare { flags: libc::c_int },
    /// `sethostname(name)`.
    Sethostname { name: CString },
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `umount2(target, MNT_DETACH)`; failures are ignored.
    UmountQuiet { target: CString },
    /// `mkdir(path, mode)`; an existing entry is fine.
    Mkdir { path: CString, mode: libc::mode_t },
    /// Creates an empty file (a mount point for a file).
    Touch { path: CString },
    /// `symlink(target, path)`.
    Symlink { target: CString, path: CString },
    /// `chdir(path)`.
    Chdir { path: CString },
    /// `chroot(path)`.
    Chroot { path: CString },
    /// `umask(mask)`.
    Umask { mask: libc::mode_t },
}

/// The steps with a description of each for error messages.
#[derive(Debug, Default)]
pub(crate) struct Script {
    steps: Vec<Step>,
    descriptions: Vec<String>,
}

impl Script {
    /// Appends a step.
    pub fn push(&mut self, step: Step, description: impl Into<String>) {
        self.steps.push(step);
        self.descriptions.push(description.into());
    }

    /// Appends every step of `other`.
    pub fn extend(&mut self, other: Script) {
        self.steps.extend(other.steps);
        self.descriptions.extend(other.descriptions);
    }

    /// Splits into what the child runs and what the parent keeps.
    pub fn split(self) -> (Vec<Step>, Vec<String>) {
        (self.steps, self.descriptions)
    }
}

/// Runs `steps` in order. Called in the child after `fork`: only
/// async-signal-safe calls. On failure, reports `(index, errno)` on
/// `report` and returns the error (which `Command` hands to the parent).
pub(crate) fn run(steps: &[Step], report: RawFd) -> io::Result<()> {
    for (i, step) in steps.iter().enumerate() {
        // SAFETY: every pointer passed is from a CString owned by `steps`,
        // which outlives the call; the calls are plain system calls.
        if let Err(errno) = unsafe { call(step) } {
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&(i as u32).to_ne_bytes());
            buf[4..].copy_from_slice(&errno.to_ne_bytes());
            // SAFETY: write(2) on a pipe with a stack buffer.
            unsafe { libc::write(report, buf.as_ptr().cast(), buf.len()) };
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    Ok(())
}

fn errno() -> i32 {
    // SAFETY: reads the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

fn check(ret: libc::c_int) -> Result<(), i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn opt(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// One step as a system call.
unsafe fn call(step: &Step) -> Result<(), i32> {
    match step {
        Step::Setsid => check(libc::setsid()),
        Step::ResetSignals => {
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            Ok(())
        }
        Step::Setns { fd, nstype } => check(libc::setns(*fd, *nstype)),
        Step::Unshare { flags } => check(libc::unshare(*flags)),
        Step::Sethostname { name } => {
            check(libc::sethostname(name.as_ptr(), name.as_bytes().len()))
        }
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => check(libc::mount(
            opt(source),
            target.as_ptr(),
            opt(fstype),
            *flags,
            opt(data).cast(),
        )),
        Step::UmountQuiet { target } => {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            Ok(())
        }
        Step::Mkdir { path, mode } => match check(libc::mkdir(path.as_ptr(), *mode)) {
            Err(libc::EEXIST) => Ok(()),
            r => r,
        },
        Step::Touch { path } => {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            check(fd)?;
            libc::close(fd);
            Ok(())
        }
        Step::Symlink { target, path } => check(libc::symlink(target.as_ptr(), path.as_ptr())),
        Step::Chdir { path } => check(libc::chdir(path.as_ptr())),
        Step::Chroot { path } => check(libc::chroot(path.as_ptr())),
        Step::Umask { mask } => {
            libc::umask(*mask);
            Ok(())
        }
    }
}

/// The pipe a failing child reports its step on: both ends close on exec,
/// so a child that reaches `exec` reports nothing.
pub(crate) struct ReportPipe {
    /// Read by the parent after a failed spawn.
    pub read: OwnedFd,
    /// Written by the child.
    pub write: OwnedFd,
}

impl ReportPipe {
    /// A non-blocking close-on-exec pipe.
    pub fn new() -> io::Result<ReportPipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills two descriptors on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are fresh descriptors we own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(ReportPipe { read, write })
    }
}

/// The `(step, errno)` a failed child reported on `read`, if any.
pub(crate) fn read_report(read: &OwnedFd) -> Option<(usize, i32)> {
    let mut buf = [0u8; 8];
    // SAFETY: read(2) into a stack buffer of its length.
    let n = unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n != 8 {
        return None;
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Some((step, errno))
}

/// A C string from a Rust string that must not contain NUL.
pub(crate) fn cstring(s: impl Into<Vec<u8>>) -> Option<CString> {
    CString::new(s).ok()
}
