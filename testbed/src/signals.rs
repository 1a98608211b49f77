//! The one stop flag of a testbed process (the supervisor, a node's proxy
//! or overlay daemon, `testbed run`): SIGTERM and SIGINT set it, and the
//! process's loops look at it to end cleanly. The handler only stores to an
//! atomic, the one thing a signal handler may safely do here.
#![allow(unsafe_code)] // installing a signal handler is an unsafe call.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGTERM and SIGINT (once [`stop_on_signals`] ran).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers of SIGTERM and SIGINT (interrupted system calls
/// restart) and returns the flag they set.
pub fn stop_on_signals() -> Result<&'static AtomicBool, (Signal, nix::Error)> {
    let action = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { nix::sys::signal::sigaction(signal, &action) }.map_err(|e| (signal, e))?;
    }
    Ok(&STOP)
}

/// The flag, whether or not the handlers are installed (e.g. for a panic
/// backstop that sets it too).
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_sets_the_flag() {
        let flag = stop_on_signals().unwrap();
        // Raised to this process: the handler runs on this thread.
        nix::sys::signal::raise(Signal::SIGTERM).unwrap();
        assert!(flag.load(Ordering::SeqCst));
        assert!(stop_flag().load(Ordering::SeqCst));
    }
}
