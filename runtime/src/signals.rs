//! SIGINT and SIGTERM, the way every run treats them: the first asks for a
//! clean stop (whatever the run does with it), the second exits at once.
//! And SIGHUP, which asks handlers that write files to open them again
//! (after a log rotation moved them), and stops nothing.

use anyhow::Context as _;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Set by SIGHUP, taken by the handler stage before its next events.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Whether a SIGHUP came since the last call.
pub fn take_reopen() -> bool {
    REOPEN.swap(false, Ordering::AcqRel)
}

/// SIGINT, SIGTERM and SIGHUP, caught (on the tokio runtime current when
/// made).
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    /// Catch them; must be called inside a tokio runtime's context.
    pub fn catch() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot catch SIGHUP")?,
        })
    }

    /// Wait for the next SIGINT or SIGTERM; its name. A SIGHUP meanwhile
    /// asks the handlers to reopen their files.
    pub async fn next(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return "SIGINT",
                _ = self.terminate.recv() => return "SIGTERM",
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP: handlers granted a directory start afresh before their next events, opening their files again");
                    REOPEN.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Wait for another signal and exit the process at once (status 130):
    /// the operator insists.
    pub async fn exit_at_next(mut self) -> ! {
        let name = self.next().await;
        eprintln!("correlator: second {name}: exiting at once; events in flight are lost");
        std::process::exit(130);
    }
}
