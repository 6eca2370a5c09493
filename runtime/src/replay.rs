//! Replaying a capture (or any log file): one record per entry (see
//! [`crate::capture`]), RFC 5424 and traditional lines alike. Streaming,
//! through [`run_stages`]: memory stays bounded whatever the file's size.

use crate::capture::CaptureReader;
use crate::pipeline::{BatchSink, Counters, HandlerStage, ModuleStage, StageError, run_stages};
use crate::record::{self, TraditionalDefaults};
use std::borrow::Cow;
use std::io::BufRead;

/// Unparsable records logged one by one before the rest are only counted.
const LOGGED_PARSE_ERRORS: u64 = 20;

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
    /// Records parsed and handed to modules.
    pub records: u64,
    /// Lines that were not records (each counted, the first ones logged).
    pub unparsable: u64,
    /// Records with bytes that are not UTF-8 (replaced by U+FFFD).
    pub not_utf8: u64,
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
        let text = match std::str::from_utf8(&entry) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => {
                stats.not_utf8 += 1;
                String::from_utf8_lossy(&entry)
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match record::parse(&text, &settings.defaults) {
            Ok(parsed) => {
                builder.push(position.line, &text, &parsed, "");
                stats.records += 1;
            }
            Err(error) => {
                stats.unparsable += 1;
                if stats.unparsable <= LOGGED_PARSE_ERRORS {
                    tracing::warn!(
                        line = position.line,
                        "not a syslog record, skipped: {error}"
                    );
                } else {
                    tracing::debug!(
                        line = position.line,
                        "not a syslog record, skipped: {error}"
                    );
                }
            }
        }
        if builder.is_full() {
            let full = std::mem::replace(&mut builder, sink.empty_builder());
            if !sink.send(full) {
                return Ok(stats);
            }
        }
    }
    if !builder.is_empty() {
        sink.send(builder);
    }
    Ok(stats)
}
