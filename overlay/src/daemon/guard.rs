//! A daemon never stays half-alive: every thread of the data path runs
//! under [`spawn_guarded`], so that a panic (a bug) or an error in any of
//! them records the failure, makes every other thread end and makes
//! [`super::run`] return it; the process then exits non-zero and its
//! supervisor starts it again. [`install_panic_backstop`] covers the threads
//! a daemon binary runs beside the data path.

use super::shared::Shared;
use super::DaemonError;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Scope;

/// The text of a panic's payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Runs `body` as the daemon's thread `name`: true when it returned `Ok`;
/// otherwise its error, or its panic, is recorded as the daemon's failure
/// and every thread is told to quit.
pub(super) fn guarded(
    sh: &Shared,
    name: &str,
    body: impl FnOnce() -> Result<(), DaemonError>,
) -> bool {
    // Unwind safety: after a panic the daemon only quits; the shared state
    // is read by threads on their way out, and its locks ignore poisoning.
    let err = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return true,
        Ok(Err(e)) => e,
        Err(payload) => DaemonError::Panicked {
            thread: name.to_string(),
            message: panic_message(payload.as_ref()),
        },
    };
    sh.fail(err);
    false
}

/// Starts `body` as the daemon's thread `name` in scope `s`, under
/// [`guarded`]; whenever the thread ends, however, every other thread ends
/// too (no thread of the data path dies while the others go on).
pub(super) fn spawn_guarded<'scope, 'env, 'a: 'scope>(
    s: &'scope Scope<'scope, 'env>,
    sh: &'scope Shared<'a>,
    name: String,
    body: impl FnOnce() -> Result<(), DaemonError> + Send + 'scope,
) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(s, move || {
            guarded(sh, &name, body);
            sh.quit_all();
        })
        .map(|_| ())
        .map_err(DaemonError::Thread)
}

static PANICKED: AtomicBool = AtomicBool::new(false);

/// For a daemon binary: a panic hook that, after the default report (the
/// message and location, on stderr: the daemon's log), sets `stop`, so that
/// a panic in any thread of the process, inside the data path or beside it,
/// ends [`super::run`]; [`panicked`] then tells the binary to exit non-zero.
pub fn install_panic_backstop(stop: &'static AtomicBool) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        PANICKED.store(true, Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
    }));
}

/// Whether a thread of this process panicked (see [`install_panic_backstop`]).
pub fn panicked() -> bool {
    PANICKED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::DaemonConfig;
    use crate::stats::Stats;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A worker that panics ends its siblings (here: loops that run until
    /// the daemon quits, as the data path's do) promptly, and the failure
    /// names it; an error ends them likewise.
    #[test]
    fn a_panicking_or_failing_thread_ends_them_all() {
        let cfg = DaemonConfig {
            tun: "none0".into(),
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            network: "10.244.0.0/16".parse().unwrap(),
            own_subnet: "10.244.1.0/24".parse().unwrap(),
            leases: Box::new(crate::registry::LeaseSet::default),
            impair_egress: None,
            impair_ingress: None,
            impair_file: None,
            stats_file: None,
            workers: 1,
        };
        for panics in [true, false] {
            let stop = AtomicBool::new(false);
            let sh = Shared::new(&cfg, &stop, Arc::new(Stats::new(1)), false);
            let started = Instant::now();
            std::thread::scope(|s| {
                for i in 0..3 {
                    let sh = &sh;
                    spawn_guarded(s, sh, format!("loop{i}"), move || {
                        while !sh.quitting() {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Ok(())
                    })
                    .unwrap();
                }
                spawn_guarded(s, &sh, "bad".into(), move || {
                    std::thread::sleep(Duration::from_millis(20));
                    if panics {
                        panic!("worker bug");
                    }
                    Err(DaemonError::Config("broken".into()))
                })
                .unwrap();
            });
            assert!(started.elapsed() < Duration::from_secs(2));
            match sh.take_failure() {
                Some(DaemonError::Panicked { thread, message }) if panics => {
                    assert_eq!((thread.as_str(), message.as_str()), ("bad", "worker bug"));
                }
                Some(DaemonError::Config(m)) if !panics => assert_eq!(m, "broken"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
