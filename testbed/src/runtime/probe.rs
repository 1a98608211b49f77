//! Readiness checks: a container with `ready: {tcp: PORT}` is ready once a
//! TCP connect to 127.0.0.1:PORT succeeds *inside its network namespace*.
//! Each check is a thread that enters the namespace with `setns` and tries
//! every 100 ms until it connects or is cancelled; it reports to the
//! supervisor over a channel, tagged with the container's slot and the
//! generation (start count) it checked, so a late answer about an earlier
//! run is ignored.

use super::NETNS_DIR;
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often a readiness check connects.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// A readiness check's finding.
pub(crate) enum Probe {
    Ready {
        slot: usize,
        generation: u64,
    },
    Failed {
        slot: usize,
        generation: u64,
        message: String,
    },
}

/// Starts a thread that enters the network namespace `netns` and connects
/// to 127.0.0.1:`port` until that works or `cancel` is set.
pub(crate) fn spawn_probe(
    netns: String,
    port: u16,
    cancel: Arc<AtomicBool>,
    tx: Sender<Probe>,
    slot: usize,
    generation: u64,
) {
    let fail_tx = tx.clone();
    let body = move || {
        let path = format!("{NETNS_DIR}/{netns}");
        let entered = File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string()));
        if let Err(e) = entered {
            let _ = tx.send(Probe::Failed {
                slot,
                generation,
                message: format!("readiness check cannot enter {path}: {e}"),
            });
            return;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while !cancel.load(Ordering::SeqCst) {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                let _ = tx.send(Probe::Ready { slot, generation });
                return;
            }
            thread::sleep(PROBE_EVERY);
        }
    };
    if let Err(e) = thread::Builder::new()
        .name(format!("ready-{port}"))
        .spawn(body)
    {
        let _ = fail_tx.send(Probe::Failed {
            slot,
            generation,
            message: format!("cannot start the readiness check: {e}"),
        });
    }
}
