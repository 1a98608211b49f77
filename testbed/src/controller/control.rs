//! How commands reach the controller: a Unix socket in the state directory
//! (`control.sock`, in the 0700 directory, so only root reaches it). A
//! command sends one request as a JSON line and reads one reply line; the
//! controller serves one request at a time between the rounds of its loop,
//! so that every change to the desired state goes through it. Requests are
//! bounded in size and in time.

use super::live::Fault;
use super::spec::Spec;
use crate::plan::types::LinkPlan;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket in the state directory.
pub use crate::state::layout::SOCKET;
/// The longest request (an `apply` carries the whole file).
pub const MAX_REQUEST: u64 = 8 << 20;
/// How long a request may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the controller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum Request {
    /// Send one check probe from a namespace of this machine (a `check` run
    /// on another machine of the testbed, through etcd; answered by the
    /// inbox thread with the outcome as JSON in the message).
    Probe {
        /// The probe.
        probe: crate::check::Probe,
        /// How long it may wait for an answer (ms).
        timeout_ms: u64,
        /// The text an HTTP answer must hold.
        #[serde(default)]
        body: Option<String>,
    },
    /// Inject a fault, undone by itself after `for_ms` if set.
    Fault {
        /// The fault.
        fault: Fault,
        /// How long it lasts.
        #[serde(default)]
        for_ms: Option<u64>,
    },
    /// Undo a fault (its inverse: node-up, link-up), or every fault.
    Clear {
        /// The fault; `None`: all.
        fault: Option<Fault>,
    },
    /// SIGKILL a pod's containers (or one of them).
    Kill {
        /// `NAMESPACE/NAME` or `NAME`.
        pod: String,
        /// One container.
        container: Option<String>,
    },
    /// Delete a pod (its controller makes it again).
    Delete {
        /// `NAMESPACE/NAME` or `NAME`.
        pod: String,
    },
    /// Set a replication controller's replicas.
    Scale {
        /// `NAMESPACE/NAME` or `NAME`.
        rc: String,
        /// The count.
        replicas: u32,
    },
    /// Change the testbed to a new version of its file.
    Apply {
        /// The file.
        spec: Spec,
        /// Only say what would change.
        dry_run: bool,
    },
    /// Change a machine's link impairments.
    Impair {
        /// A node or host.
        machine: String,
        /// The new impairments (`None`: none).
        link: Option<LinkPlan>,
    },
}

/// The controller's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    /// 0 done, 1 failed, 2 refused (bad request: nothing changed).
    pub code: u8,
    /// What was done, or why not.
    pub message: String,
    /// For `apply` and `scale`: the difference, as JSON (`change::Changes`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub changes: Option<serde_json::Value>,
}

impl Reply {
    /// Done.
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            code: 0,
            message: message.into(),
            changes: None,
        }
    }
    /// Refused: nothing changed.
    pub fn refused(message: impl Into<String>) -> Reply {
        Reply {
            code: 2,
            message: message.into(),
            changes: None,
        }
    }
    /// Failed while acting.
    pub fn failed(message: impl Into<String>) -> Reply {
        Reply {
            code: 1,
            message: message.into(),
            changes: None,
        }
    }
}

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No controller listens.
    #[error("cannot reach the controller of this testbed at {path} (is it up? `testbed status` tells): {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("talking to the controller: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not a reply.
    #[error("the controller's answer is not a reply: {0}")]
    Parse(#[from] serde_json::Error),
}

/// Sends `req` to the controller of the testbed whose state directory is
/// `dir` and waits up to `timeout` for its reply.
pub fn request(dir: &Path, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let path = dir.join(SOCKET);
    let mut s =
        UnixStream::connect(&path).map_err(|source| ControlError::Connect { path, source })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(s.take(MAX_REQUEST)).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}

/// The controller's end.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Listens in `dir` (a stale socket of an earlier controller is
    /// replaced: the pid file lock says there is no other).
    pub fn bind(dir: &Path) -> std::io::Result<Server> {
        let path = dir.join(SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(Server { listener, path })
    }

    /// Waits up to `timeout` for a request to arrive; whether one waits.
    /// The loop's pause, which a request cuts short.
    pub fn wait(&self, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0)
    }

    /// A waiting request, if any, with the stream to answer on. A request
    /// that is too long, late or not JSON is answered with a refusal here.
    pub fn next(&self) -> Option<(Request, UnixStream)> {
        let (stream, _) = self.listener.accept().ok()?;
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
        stream.set_write_timeout(Some(READ_TIMEOUT)).ok()?;
        let mut line = Vec::new();
        let mut reader = BufReader::new(stream.try_clone().ok()?).take(MAX_REQUEST);
        let read = reader.read_until(b'\n', &mut line);
        let mut stream = stream;
        match read.map_err(|e| e.to_string()).and_then(|_| {
            if line.last() != Some(&b'\n') {
                return Err(format!(
                    "a request is one line of at most {MAX_REQUEST} bytes"
                ));
            }
            serde_json::from_slice::<Request>(&line).map_err(|e| e.to_string())
        }) {
            Ok(req) => Some((req, stream)),
            Err(e) => {
                answer(&mut stream, &Reply::refused(format!("bad request: {e}")));
                None
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `reply` on `stream` (a client that left is not an error).
pub fn answer(stream: &mut UnixStream, reply: &Reply) {
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_reply_cross_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::bind(dir.path()).unwrap();
        let path = dir.path().to_path_buf();
        let client = std::thread::spawn(move || {
            request(
                &path,
                &Request::Scale {
                    rc: "web".into(),
                    replicas: 4,
                },
                Duration::from_secs(5),
            )
        });
        let (req, mut stream) = loop {
            if let Some(x) = server.next() {
                break x;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            req,
            Request::Scale {
                rc: "web".into(),
                replicas: 4
            }
        );
        answer(&mut stream, &Reply::ok("scaled"));
        drop(stream);
        assert_eq!(client.join().unwrap().unwrap(), Reply::ok("scaled"));
    }

    #[test]
    fn junk_is_refused_without_harm() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::bind(dir.path()).unwrap();
        let mut s = UnixStream::connect(dir.path().join(SOCKET)).unwrap();
        s.write_all(b"{\"op\":\"explode\"}\n").unwrap();
        let mut got = None;
        for _ in 0..200 {
            got = server.next();
            if got.is_some() {
                break;
            }
            let mut answer = String::new();
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            if BufReader::new(&s).read_line(&mut answer).is_ok() && !answer.is_empty() {
                let r: Reply = serde_json::from_str(&answer).unwrap();
                assert_eq!(r.code, 2);
                assert!(r.message.contains("bad request"), "{}", r.message);
                return;
            }
        }
        panic!("no refusal: {:?}", got.map(|g| g.0));
    }
}
