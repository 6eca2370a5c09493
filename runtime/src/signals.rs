//! SIGINT and SIGTERM, the way every run treats them: the first asks for a
//! clean stop (whatever the run does with it), the second exits at once.

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM, caught (on the tokio runtime current when made).
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Catch both; must be called inside a tokio runtime's context.
    pub fn catch() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    /// Wait for the next signal; its name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
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
