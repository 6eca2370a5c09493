//! Replaying a capture: records separated by newlines, RFC 5424 and
//! traditional lines alike. Streaming: one line and one batch in memory.

use crate::pipeline::Pipeline;
use crate::record::{self, BatchBuilder, TraditionalDefaults};
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
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Records parsed and handed to modules.
    pub records: u64,
    /// Lines that were not records (each counted, the first ones logged).
    pub unparsable: u64,
    /// Records with bytes that are not UTF-8 (replaced by U+FFFD).
    pub not_utf8: u64,
}

/// Feed every record of `input` through `pipeline`, then dispatch every
/// module's statistics.
pub fn replay(
    input: &mut dyn BufRead,
    pipeline: &mut Pipeline,
    settings: &ReplaySettings,
) -> std::io::Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let mut builder = BatchBuilder::new(settings.batch_size);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        stats.lines += 1;
        let position = stats.lines;
        let text = match std::str::from_utf8(&line) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => {
                stats.not_utf8 += 1;
                String::from_utf8_lossy(&line)
            }
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        match record::parse(text, &settings.defaults) {
            Ok(parsed) => {
                builder.push(position, text, &parsed, "");
                stats.records += 1;
            }
            Err(error) => {
                stats.unparsable += 1;
                if stats.unparsable <= LOGGED_PARSE_ERRORS {
                    tracing::warn!(line = position, "not a syslog record, skipped: {error}");
                } else {
                    tracing::debug!(line = position, "not a syslog record, skipped: {error}");
                }
            }
        }
        if builder.is_full() {
            flush(&mut builder, pipeline);
        }
    }
    flush(&mut builder, pipeline);
    pipeline.statistics(false);
    Ok(stats)
}

fn flush(builder: &mut BatchBuilder, pipeline: &mut Pipeline) {
    if builder.is_empty() {
        return;
    }
    if let Some(latest) = builder.latest_time() {
        pipeline.process(builder.batch(), latest);
    }
    builder.clear();
}
