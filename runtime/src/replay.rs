//! Replaying a capture (or any log file): one record per entry (see
//! [`crate::capture`]), RFC 5424 and traditional lines alike. Streaming,
//! through [`run_stages`]: memory stays bounded whatever the file's size.

use crate::capture::CaptureReader;
use crate::pipeline::{BatchSink, Counters, HandlerStage, ModuleStage, StageError, run_stages};
use crate::record::{Origin, ParseCounts, TraditionalDefaults};
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How a replay reads its input.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySettings {
    /// Records per call into modules.
    pub batch_size: usize,
    /// Year and offset for RFC 3164 lines.
    pub defaults: TraditionalDefaults,
}

/// What a replay saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// Entries read (lines, or octet-counted messages), blank ones
    /// included.
    pub entries: u64,
    /// Records taken, and what could not be.
    pub parsed: ParseCounts,
    /// Set when a signal stopped the replay before the end of its input:
    /// the position of the last entry read.
    pub stopped_after: Option<u64>,
}

/// Catch SIGINT and SIGTERM for a replay: the first sets the returned
/// flag, which stops reading (what was read is still processed, and the
/// state committed); a second exits at once with status 130.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the signal thread")?;
    let (mut interrupt, mut terminate) = {
        let _context = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        )
    };
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                tracing::warn!(
                    "{name}: the replay stops after what was read (a second signal exits at once)"
                );
                flag.store(true, Ordering::Relaxed);
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                eprintln!("correlator: second {name}: exiting at once; events in flight are lost");
                std::process::exit(130);
            });
        })
        .context("cannot start the signal thread")?;
    Ok(stop)
}

/// Feed every record of `input` through the modules and their events
/// through the handlers, then dispatch and handle every module's statistics.
/// Reading stops early once `stop` is set. Returns what was read and what
/// the handlers did.
pub fn replay(
    input: Box<dyn BufRead + Send>,
    modules: &mut ModuleStage,
    handlers: HandlerStage,
    settings: &ReplaySettings,
    stop: &AtomicBool,
) -> Result<(ReplayStats, Counters), ReplayError> {
    let (stats, counters) = run_stages(
        modules,
        handlers,
        settings.batch_size,
        |sink| read_batches(input, settings, &sink, stop),
        // Reading stops at its next batch.
        || {},
    )?;
    Ok((stats?, counters))
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture could not be read.
    #[error("cannot read the capture")]
    Read(#[from] std::io::Error),
    /// An instance with `on_failure = "abort"` failed, or a thread could not
    /// start.
    #[error(transparent)]
    Stages(#[from] StageError),
}

/// Read, parse and batch `input`, sending full batches to the modules and
/// reusing the buffers they send back.
fn read_batches(
    input: Box<dyn BufRead + Send>,
    settings: &ReplaySettings,
    sink: &BatchSink,
    stop: &AtomicBool,
) -> std::io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let mut builder = sink.empty_builder();
    let mut reader = CaptureReader::new(input);
    let mut entry = Vec::with_capacity(512);
    let mut last_line = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(position) = reader.next_entry(&mut entry)? else {
            sink.pass_on(&mut builder);
            return Ok(stats);
        };
        last_line = position.line;
        stats.entries += 1;
        let text = stats.parsed.decode(&entry);
        if text.trim().is_empty() {
            continue;
        }
        stats.parsed.take(
            &mut builder,
            position.line,
            &text,
            Origin::File,
            &settings.defaults,
        );
        if builder.is_full() && !sink.pass_on(&mut builder) {
            return Ok(stats);
        }
    }
    sink.pass_on(&mut builder);
    stats.stopped_after = Some(last_line);
    Ok(stats)
}
