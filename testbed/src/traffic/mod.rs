//! Built-in traffic for experiments (`experiment-format.md`, "workloads"):
//! open-loop generators (`http`, `tcpConnect`, `tcpStream`, `udpEcho`,
//! `ping`) that send from inside a source's network namespace at send
//! times fixed by the seed (`experiment::schedule::Sends`), and record one
//! raw [`Sample`] per send. Nothing is interpolated.
//!
//! [`run`] is the entry point: a thread of its own enters the source's
//! namespace and runs a tokio current-thread runtime there (every socket is
//! made inside the namespace); `clock` wakes it at the send times, `generate`
//! is the open loop of the send-per-sample kinds (`send`, `ping`), `stream`
//! the `tcpStream` kind. `serve` is the other side (`testbed serve`), `wire`
//! the bytes both exchange.

mod clock;
mod generate;
mod ping;
mod send;
pub mod serve;
mod stream;
pub mod wire;

#[cfg(test)]
mod tests;

pub use generate::MAX_IN_FLIGHT;
pub use stream::RECONNECT_WAIT;

use crate::check::Outcome;
use crate::experiment::schedule::Sends;
use crate::experiment::WorkloadKind;
use crate::kernel::netns::{Netns, NetnsError};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// What one send got back (the check outcomes, without their text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SampleOutcome {
    /// Answered as expected.
    Ok,
    /// Refused (TCP reset, ICMP unreachable, no route).
    Refused,
    /// Nothing came back within the workload's timeout.
    Timeout,
    /// HTTP answered with a status other than 2xx, or a short answer.
    WrongBody,
    /// Something else went wrong.
    Error,
}

impl SampleOutcome {
    /// The name written in `samples.csv` and `run.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            SampleOutcome::Ok => "ok",
            SampleOutcome::Refused => "refused",
            SampleOutcome::Timeout => "timeout",
            SampleOutcome::WrongBody => "wrongBody",
            SampleOutcome::Error => "error",
        }
    }
}

impl From<&Outcome> for SampleOutcome {
    fn from(o: &Outcome) -> Self {
        match o {
            Outcome::Ok => SampleOutcome::Ok,
            Outcome::Refused => SampleOutcome::Refused,
            Outcome::Timeout => SampleOutcome::Timeout,
            Outcome::WrongBody => SampleOutcome::WrongBody,
            Outcome::Error(_) => SampleOutcome::Error,
        }
    }
}

/// One send and what came back: a row of `samples.csv`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// The workload's name.
    pub workload: String,
    /// The generator's source as reports name it (`pod toolbox`).
    pub source: String,
    /// The scheduled send time, microseconds from the start of the
    /// workloads (the seed fixes it).
    pub send_us: u64,
    /// When the send actually left, microseconds from the start of the
    /// workloads (its difference to `send_us` is the generator's jitter).
    pub sent_us: u64,
    /// From the send to its answer (or to the failure), microseconds.
    pub latency_us: u64,
    /// What came back.
    pub outcome: SampleOutcome,
    /// Payload bytes received (HTTP body, echoed datagram, stream bytes).
    pub bytes: u64,
    /// The pod that answered, when the answer names it (`testbed serve`
    /// does), e.g. `shop/web-1`.
    pub backend: Option<String>,
}

/// One generator: a workload from one source.
#[derive(Clone, Debug, PartialEq)]
pub struct Generator {
    /// The workload's name.
    pub workload: String,
    /// What it sends.
    pub kind: WorkloadKind,
    /// The source as reports name it.
    pub source: String,
    /// The network namespace it sends from.
    pub netns: String,
    /// The address it sends to.
    pub addr: Ipv4Addr,
    /// The port (0 for `ping`).
    pub port: u16,
    /// The HTTP path (`/` unless the port was written `http/N/path`).
    pub path: String,
    /// Its send times.
    pub sends: Sends,
    /// The timeout of one send.
    pub timeout: Duration,
    /// `tcpStream`: how many streams.
    pub streams: u32,
}

/// What one send measured (the rest of its [`Sample`] is the schedule's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Measured {
    /// What came back.
    pub outcome: SampleOutcome,
    /// From the send to its answer or failure.
    pub latency: Duration,
    /// Payload bytes received.
    pub bytes: u64,
    /// The backend the answer names.
    pub backend: Option<String>,
}

impl Measured {
    /// A failure noticed now, of a send that started at `start`.
    pub(crate) fn failed(outcome: SampleOutcome, start: Instant) -> Measured {
        Measured {
            outcome,
            latency: start.elapsed(),
            bytes: 0,
            backend: None,
        }
    }
}

/// Raises this process's soft limit of open files to its hard limit, once:
/// every send in flight holds a socket, and sudo's usual soft limit (1,024)
/// is below [`MAX_IN_FLIGHT`]. Best effort: a send that finds no file left
/// is recorded as `error`.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            if soft < hard {
                if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    tracing::debug!(%e, "cannot raise the limit of open files");
                }
            }
        }
    });
}

/// Whether `name` can name a namespace under `/run/netns`: one path
/// component of at most 255 visible characters, not `.` or `..`.
pub fn valid_netns(name: &str) -> bool {
    !matches!(name, "" | "." | "..")
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Why a generator could not run (a send that fails is a sample, not this).
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The namespace's name is not one (it would leave `/run/netns`).
    #[error("{0:?} is not a network namespace's name")]
    BadNetns(String),
    /// The send times have no rate (they cannot be computed).
    #[error("workload {0}: a rate of 0 sends per second")]
    NoRate(String),
    /// The source's namespace cannot be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The generator's runtime, clock or socket could not be made.
    #[error("workload {workload} from {source_name}: {error}")]
    Setup {
        /// The workload.
        workload: String,
        /// Its source.
        source_name: String,
        /// What failed.
        error: std::io::Error,
    },
}

/// Runs generator `gen` from inside its namespace (on a thread of its own;
/// the caller's namespace never changes) and returns its samples, sorted
/// by send time: send k leaves at `t0 + sends.at_us(k)`, open loop.
/// `tcpStream` samples are described in `stream`. Setting `stop` ends it
/// early: sends still waiting are dropped and the samples so far returned.
pub fn run(gen: &Generator, t0: Instant, stop: &AtomicBool) -> Result<Vec<Sample>, TrafficError> {
    if !valid_netns(&gen.netns) {
        return Err(TrafficError::BadNetns(gen.netns.clone()));
    }
    if gen.sends.rate == 0 && gen.sends.count > 0 {
        return Err(TrafficError::NoRate(gen.workload.clone()));
    }
    raise_open_files();
    let ns = Netns::open(&gen.netns)?;
    let setup = |error| TrafficError::Setup {
        workload: gen.workload.clone(),
        source_name: gen.source.clone(),
        error,
    };
    ns.run_in(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            match gen.kind {
                WorkloadKind::TcpStream => stream::run(gen, t0, stop).await,
                _ => generate::run(gen, t0, stop).await,
            }
        })
    })?
    .map_err(setup)
}

#[cfg(test)]
mod names {
    use super::valid_netns;

    #[test]
    fn namespace_names_stay_in_their_directory() {
        for good in ["tb-x.pod.default.web", "a", "x..y"] {
            assert!(valid_netns(good), "{good}");
        }
        let long = "n".repeat(256);
        for bad in ["", ".", "..", "../etc", "a/b", "a b", long.as_str()] {
            assert!(!valid_netns(bad), "{bad:?}");
        }
    }
}
