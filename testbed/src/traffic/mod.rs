//! Built-in traffic for experiments (`experiment-format.md`, "workloads"):
//! open-loop generators (`http`, `tcpConnect`, `tcpStream`, `udpEcho`,
//! `ping`) that send from inside a source's network namespace at send
//! times fixed by the seed (`experiment::schedule::Sends`), and record one
//! raw [`Sample`] per send. Nothing is interpolated.

use crate::experiment::schedule::Sends;
use crate::experiment::WorkloadKind;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;

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

/// TEMPORARY stub (the helper's module replaces it).
pub fn run(
    _gen: &Generator,
    _t0: std::time::Instant,
    _stop: &std::sync::atomic::AtomicBool,
) -> Result<Vec<Sample>, std::io::Error> {
    Ok(Vec::new())
}
