//! The system calls a new container process makes between `fork` and
//! `exec`, prepared beforehand. After `fork` in a process that may have other
//! threads, the child may only make async-signal-safe calls: no allocation,
//! no locks, no formatting. So every argument (paths as `CString`s, file
//! descriptors) is built in the parent as a list of [`Step`]s, and the child
//! only walks that list calling libc. When a step fails, the child writes the
//! step's index and `errno` to a pipe; the parent turns that into a message
//! naming the step (`bind-mounting X on Y: No such file or directory`).
#![allow(unsafe_code)] // the container child: clone, raw system calls between clone and exec.

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
            report_failure(report, i, errno);
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

/// What a new process executes once its steps are done.
pub(crate) struct Exec {
    /// The program's path.
    pub program: CString,
    /// Its arguments, `argv[0]` first.
    pub argv: Vec<CString>,
    /// Its whole environment, `KEY=value`.
    pub env: Vec<CString>,
    /// Its stdin, stdout and stderr.
    pub stdio: [RawFd; 3],
}

/// Everything the child of [`spawn_vm`] reads, in the parent's memory
/// (which it shares until it executes).
struct VmChild<'a> {
    steps: &'a [Step],
    report: RawFd,
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdio: [RawFd; 3],
}

/// The stack of a [`spawn_vm`] child: it only makes system calls.
const VM_STACK: usize = 64 * 1024;

/// Starts a process that makes `steps`, then executes `exec`; returns its
/// pid, or the failure with the index of the failed step (`steps.len()`
/// for the `exec` itself) as [`run`] reports it on `report`.
///
/// It is made with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn`
/// does: the child borrows this process's memory instead of copying its
/// page tables, and this thread waits until the child has executed its
/// program (or failed). With thousands of containers, copying and freeing
/// the supervisor's page tables for every `fork` was most of the cost of
/// starting one. The child only makes system calls on prepared data and
/// its own stack; every signal is blocked around the `clone` and the child
/// clears the mask before it executes, with its handlers reset.
pub(crate) fn spawn_vm(steps: &[Step], exec: &Exec, report: RawFd) -> io::Result<libc::pid_t> {
    let argv: Vec<*const libc::c_char> = exec
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = exec
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let args = VmChild {
        steps,
        report,
        program: exec.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdio: exec.stdio,
    };
    let mut stack = vec![0u8; VM_STACK];
    // SAFETY: the stack grows down from its end, 16-byte aligned; `args`
    // and everything it points to outlive the child's use of them, since
    // CLONE_VFORK keeps this thread waiting until the child has executed
    // or exited; the signal masks are restored before returning.
    unsafe {
        let top = stack.as_mut_ptr().add(VM_STACK);
        let top = (top as usize & !15) as *mut libc::c_void;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            vm_child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const VmChild as *mut libc::c_void,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        Ok(pid)
    }
}

/// The child of [`spawn_vm`]: the steps, the standard streams, an empty
/// signal mask, `execve`. Never returns.
extern "C" fn vm_child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `VmChild`, alive while the parent waits
    // (CLONE_VFORK); only system calls follow.
    unsafe {
        let a = &*(arg as *const VmChild);
        if run(a.steps, a.report).is_err() {
            libc::_exit(127);
        }
        for (target, &fd) in a.stdio.iter().enumerate() {
            if fd != target as RawFd && libc::dup2(fd, target as RawFd) < 0 {
                report_failure(a.report, a.steps.len(), errno());
                libc::_exit(127);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
        report_failure(a.report, a.steps.len(), errno());
        libc::_exit(127)
    }
}

/// Writes `(step, errno)` to the report pipe (async-signal-safe).
fn report_failure(report: RawFd, step: usize, errno: i32) {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write(2) on a pipe with a stack buffer.
    unsafe { libc::write(report, buf.as_ptr().cast(), buf.len()) };
}
