//! Replaying a capture: records separated by newlines, RFC 5424 and
//! traditional lines alike. Streaming, on three threads joined by bounded
//! channels: reading and parsing, modules, handlers. Memory stays bounded by
//! the channels' capacity whatever the file's size.

use crate::host::Aborted;
use crate::pipeline::{Counters, HandlerStage, ModuleStage};
use crate::record::{self, BatchBuilder, TraditionalDefaults};
use crate::types::Dispatched;
use std::borrow::Cow;
use std::io::BufRead;
use std::sync::mpsc;

/// Unparsable records logged one by one before the rest are only counted.
const LOGGED_PARSE_ERRORS: u64 = 20;

/// Stack of the thread that runs handlers: twice the largest WebAssembly
/// stack an instance may have.
const THREAD_STACK_BYTES: usize = 2 * (crate::app::MAX_STACK_KIB as usize) * 1024;

/// Batches parsed ahead of the modules.
const BATCHES_IN_FLIGHT: usize = 4;

/// Batches of events waiting for the handlers.
const EVENT_BATCHES_IN_FLIGHT: usize = 16;

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

/// Feed every record of `input` through the modules and their events
/// through the handlers, then dispatch and handle every module's statistics.
/// Returns what was read and what the handlers did.
pub fn replay(
    input: Box<dyn BufRead + Send>,
    modules: &mut ModuleStage,
    handlers: HandlerStage,
    settings: &ReplaySettings,
) -> Result<(ReplayStats, Counters), ReplayError> {
    let (batch_tx, batch_rx) = mpsc::sync_channel::<BatchBuilder>(BATCHES_IN_FLIGHT);
    let (recycle_tx, recycle_rx) = mpsc::channel::<BatchBuilder>();
    let (event_tx, event_rx) = mpsc::sync_channel::<Vec<Dispatched>>(EVENT_BATCHES_IN_FLIGHT);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_batches(input, settings, &batch_tx, &recycle_rx));
        // Handlers run guests on this thread: its stack must hold their
        // WebAssembly stack (at most MAX_STACK_KIB) with room to spare.
        let handling = std::thread::Builder::new()
            .name("handlers".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn_scoped(scope, move || -> Result<Counters, Aborted> {
                let mut handlers = handlers;
                for events in event_rx {
                    handlers.route(events)?;
                }
                Ok(handlers.counters())
            })?;
        let mut aborted = None;
        for builder in batch_rx {
            if let Some(latest) = builder.latest_time() {
                match modules.process(builder.batch(), latest) {
                    Ok(events) => {
                        if !events.is_empty() && event_tx.send(events).is_err() {
                            break;
                        }
                    }
                    Err(abort) => {
                        aborted = Some(abort);
                        break;
                    }
                }
            }
            // The reader may have finished; then the batch is just dropped.
            let _ = recycle_tx.send(builder);
        }
        if aborted.is_none() {
            match modules.statistics(false) {
                Ok(statistics) => {
                    if !statistics.is_empty() {
                        let _ = event_tx.send(statistics);
                    }
                }
                Err(abort) => aborted = Some(abort),
            }
        }
        drop(event_tx);
        drop(recycle_tx);
        let counters = join(handling);
        if let Some(abort) = aborted {
            // The batch receiver went with the loop, so the reader stops at
            // its next batch; the scope joins it.
            return Err(ReplayError::Aborted(abort));
        }
        let stats = join(reader)?;
        Ok((stats, counters?))
    })
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture could not be read.
    #[error("cannot read the capture")]
    Read(#[from] std::io::Error),
    /// An instance with `on_failure = "abort"` failed.
    #[error(transparent)]
    Aborted(#[from] Aborted),
}

/// The result of a scoped thread; a panic there is a bug, passed on as one.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Read, parse and batch `input`, sending full batches to the modules and
/// reusing the buffers they send back.
fn read_batches(
    mut input: Box<dyn BufRead + Send>,
    settings: &ReplaySettings,
    batches: &mpsc::SyncSender<BatchBuilder>,
    recycled: &mpsc::Receiver<BatchBuilder>,
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
            let mut next = recycled
                .try_recv()
                .unwrap_or_else(|_| BatchBuilder::new(settings.batch_size));
            next.clear();
            let full = std::mem::replace(&mut builder, next);
            if batches.send(full).is_err() {
                return Ok(stats);
            }
        }
    }
    if !builder.is_empty() {
        let _ = batches.send(builder);
    }
    Ok(stats)
}
