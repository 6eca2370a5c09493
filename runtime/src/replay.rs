//! Replaying a capture (or any log file): one record per entry (see
//! [`crate::capture`]), RFC 5424 and traditional lines alike. Streaming,
//! through [`run_stages`]: memory stays bounded whatever the file's size.

use crate::capture::CaptureReader;
use crate::pipeline::{BatchSink, Counters, HandlerStage, ModuleStage, StageError, run_stages};
use crate::record::{Origin, ParseCounts, TraditionalDefaults};
use std::io::BufRead;

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
}

/// Feed every record of `input` through the modules and their events
/// through the handlers, then dispatch and handle every module's statistics.
/// Returns what was read and what the handlers did.
pub fn replay(
    input: Box<dyn BufRead + Send>,
    modules: &mut ModuleStage,
    handlers: HandlerStage,
    settings: &ReplaySettings,
) -> Result<(ReplayStats, Counters), ReplayError> {
    let (stats, counters) = run_stages(
        modules,
        handlers,
        settings.batch_size,
        |sink| read_batches(input, settings, &sink),
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
) -> std::io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let mut builder = sink.empty_builder();
    let mut reader = CaptureReader::new(input);
    let mut entry = Vec::with_capacity(512);
    while let Some(position) = reader.next_entry(&mut entry)? {
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
    Ok(stats)
}
