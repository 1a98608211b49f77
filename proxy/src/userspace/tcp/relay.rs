//! The relay of one TCP connection: bytes both ways until both directions
//! ended, each half-close passed on; zero-copy with `splice(2)` through a
//! pipe per direction, or through a small buffer where the kernel cannot
//! splice. A connection that moves no byte either way for the idle timeout
//! ends the relay.
#![allow(unsafe_code)] // splice(2), pipe2(2) and raw reads and writes on the sockets' descriptors.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The pipe size asked for (the kernel may refuse; the default is kept then).
const PIPE_SIZE: libc::c_int = 1 << 20;
/// The buffer per direction when bytes are copied instead of spliced.
const COPY_BUFFER: usize = 16 << 10;

/// Relays between `client` and `backend` until both directions ended (or
/// one failed), returning the bytes moved client→backend and backend→client.
/// Uses splice when `zero_copy` and the kernel supports it, else copies.
/// Fails with [`io::ErrorKind::TimedOut`] once no byte has moved either way
/// for `idle`; the caller closes both sockets then.
pub(in super::super) async fn relay(
    client: &TcpStream,
    backend: &TcpStream,
    zero_copy: bool,
    idle: Duration,
) -> io::Result<(u64, u64)> {
    let activity = Activity::new();
    let relayed = async {
        if zero_copy {
            match spliced(client, backend, &activity).await {
                Ok(moved) => return Ok(moved),
                Err(RelayError::Io(e)) => return Err(e),
                Err(RelayError::Fallback(why)) => {
                    tracing::debug!(reason = %why, "splice unavailable: copying instead");
                }
            }
        }
        let (up, down) = (Mover::copying(), Mover::copying());
        drive(client, backend, up, down, &activity)
            .await
            .map_err(RelayError::into_io)
    };
    tokio::select! {
        r = relayed => r,
        () = activity.expired(idle) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no byte either way for {idle:?}"),
        )),
    }
}

/// The relay through a pipe per direction.
async fn spliced(
    client: &TcpStream,
    backend: &TcpStream,
    activity: &Activity,
) -> Result<(u64, u64), RelayError> {
    let up = Pipe::new().map_err(RelayError::Fallback)?;
    let down = Pipe::new().map_err(RelayError::Fallback)?;
    drive(
        client,
        backend,
        Mover::Splice(up),
        Mover::Splice(down),
        activity,
    )
    .await
}

enum RelayError {
    /// splice cannot be used and no byte has moved yet.
    Fallback(io::Error),
    Io(io::Error),
}

impl RelayError {
    fn into_io(self) -> io::Error {
        match self {
            RelayError::Fallback(e) | RelayError::Io(e) => e,
        }
    }
}

/// When a byte last moved, for the idle timeout.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Returns once nothing has moved for `idle`.
    async fn expired(&self, idle: Duration) {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let deadline = self.base + Duration::from_millis(last) + idle;
            tokio::time::sleep_until(deadline.into()).await;
            if self.last_ms.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// Runs both directions until both reached EOF (passing each half-close
/// on) or one failed.
async fn drive(
    client: &TcpStream,
    backend: &TcpStream,
    mut up_mover: Mover,
    mut down_mover: Mover,
    activity: &Activity,
) -> Result<(u64, u64), RelayError> {
    let up_moved = AtomicU64::new(0);
    let down_moved = AtomicU64::new(0);
    let up = one_way(client, backend, &mut up_mover, &up_moved, activity);
    let down = one_way(backend, client, &mut down_mover, &down_moved, activity);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let nothing_moved =
        || up_moved.load(Ordering::Relaxed) == 0 && down_moved.load(Ordering::Relaxed) == 0;
    while !(up_done && down_done) {
        let (result, dst) = tokio::select! {
            r = &mut up, if !up_done => { up_done = true; (r, backend) }
            r = &mut down, if !down_done => { down_done = true; (r, client) }
        };
        match result {
            // EOF: pass the half-close on, keep relaying the other way.
            Ok(()) => shutdown_write(dst),
            Err(RelayError::Fallback(e)) if nothing_moved() => {
                return Err(RelayError::Fallback(e));
            }
            Err(e) => return Err(RelayError::Io(e.into_io())),
        }
    }
    Ok((
        up_moved.load(Ordering::Relaxed),
        down_moved.load(Ordering::Relaxed),
    ))
}

/// Where one direction's bytes wait between reading and writing.
enum Mover {
    /// A pipe, filled and drained with `splice(2)`: the bytes stay in the
    /// kernel.
    Splice(Pipe),
    /// A buffer, filled with `recv` and drained with `send`.
    Copy(Box<[u8]>),
}

impl Mover {
    fn copying() -> Mover {
        Mover::Copy(vec![0; COPY_BUFFER].into_boxed_slice())
    }

    /// Takes what `src` has (up to the mover's capacity); 0 at EOF.
    fn fill(&mut self, src: RawFd) -> io::Result<usize> {
        match self {
            Mover::Splice(pipe) => splice(src, pipe.w.as_raw_fd(), pipe.size),
            Mover::Copy(buf) => retry_eintr(|| {
                // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
                unsafe { libc::recv(src, buf.as_mut_ptr().cast(), buf.len(), 0) }
            }),
        }
    }

    /// Writes to `dst` the last `left` of the `held` bytes taken.
    fn drain(&mut self, dst: RawFd, held: usize, left: usize) -> io::Result<usize> {
        match self {
            Mover::Splice(pipe) => splice(pipe.r.as_raw_fd(), dst, left),
            Mover::Copy(buf) => {
                let rest = buf.get(held - left..held).unwrap_or_default();
                retry_eintr(|| {
                    // SAFETY: send reads `rest.len()` bytes from `rest`.
                    unsafe { libc::send(dst, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) }
                })
            }
        }
    }
}

/// Moves bytes from `src` to `dst` until EOF on `src`. The mover is always
/// drained before reading more, so EAGAIN on the read side can only mean
/// "socket not readable".
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    mover: &mut Mover,
    moved: &AtomicU64,
    activity: &Activity,
) -> Result<(), RelayError> {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        let n = loop {
            src.readable().await.map_err(RelayError::Io)?;
            match src.try_io(Interest::READABLE, || mover.fill(src_fd)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e)
                    if matches!(mover, Mover::Splice(_))
                        && moved.load(Ordering::Relaxed) == 0
                        && is_unsupported(&e) =>
                {
                    return Err(RelayError::Fallback(e));
                }
                Err(e) => return Err(RelayError::Io(e)),
            }
        };
        if n == 0 {
            return Ok(());
        }
        activity.touch();
        let mut left = n;
        while left > 0 {
            dst.writable().await.map_err(RelayError::Io)?;
            match dst.try_io(Interest::WRITABLE, || mover.drain(dst_fd, n, left)) {
                Ok(0) => {
                    return Err(RelayError::Io(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket took nothing",
                    )))
                }
                Ok(m) => {
                    left -= m;
                    moved.fetch_add(m as u64, Ordering::Relaxed);
                    activity.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(RelayError::Io(e)),
            }
        }
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

/// `shutdown(SHUT_WR)`; a socket the peer already reset is not an error here.
fn shutdown_write(stream: &TcpStream) {
    // SAFETY: the descriptor is owned by `stream`, alive for the call.
    if unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) } < 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "shutdown(SHUT_WR) failed");
    }
}

/// A system call returning a count or -1, retried on EINTR.
fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `splice(2)` call, retried on EINTR.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: plain syscall on descriptors the caller keeps alive; null
        // offsets are valid for pipes and sockets.
        unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        }
    })
}

/// A non-blocking pipe and its capacity.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on our own descriptor; failure is harmless.
        let size = unsafe {
            libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(65536);
        Ok(Pipe { r, w, size })
    }
}
