//! Replaying a capture (or any log file): one record per entry (see
//! [`crate::capture`]), RFC 5424 and traditional lines alike. Streaming,
//! through [`run_stages`]: memory stays bounded whatever the file's size.

use crate::capture::CaptureReader;
use crate::pipeline::{
    BatchSink, Counters, Destination, HandlerStage, ModuleStage, StageError, run_stages,
};
use crate::record::{Origin, ParseCounts, TraditionalDefaults};
use anyhow::Context as _;
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// How a replay reads its input.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySettings {
    /// Records per call into modules.
    pub batch_size: usize,
    /// Year and offset for RFC 3164 lines.
    pub defaults: TraditionalDefaults,
    /// Entries up to this position are read but not processed: a replay
    /// continued after the checkpoint that covers them (`--continue`).
    pub skip_through: u64,
    /// After the last record, the timers run on to this time (seconds
    /// since the epoch; `replay.ticks_until`).
    pub ticks_until: Option<i64>,
}

/// What a replay saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// Entries read (lines, or octet-counted messages), blank ones
    /// included.
    pub entries: u64,
    /// Records taken, and what could not be.
    pub parsed: ParseCounts,
    /// Entries passed over because the checkpoint continued from covers
    /// them.
    pub skipped: u64,
    /// Set when a signal stopped the replay before the end of its input:
    /// the position of the last entry read.
    pub stopped_after: Option<u64>,
}

/// Catch SIGINT and SIGTERM for a replay: the first sets the returned
/// flag, which stops reading (what was read is still processed, and the
/// state committed); a second exits at once with status 130.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use anyhow::Context as _;
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the signal thread")?;
    let mut signals = {
        let _context = runtime.enter();
        crate::signals::Signals::catch()?
    };
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let name = signals.next().await;
                tracing::warn!(
                    "{name}: reading stops; what was read is processed (a second signal exits at once)"
                );
                flag.store(true, Ordering::Relaxed);
                signals.exit_at_next().await
            });
        })
        .context("cannot start the signal thread")?;
    Ok(stop)
}

/// What a replay reads: a capture file, or standard input.
pub trait Input: BufRead + Send {
    /// Whether more input can be read without waiting. A file always can;
    /// a pipe that has gone quiet cannot, and the replay then hands on the
    /// records it holds before it waits, so that `tail -f log | correlator
    /// run --read-file -` shows each line's events at once.
    fn ready(&mut self) -> bool {
        true
    }
}

impl Input for std::io::BufReader<std::fs::File> {}

impl Input for std::io::BufReader<StoppableInput> {
    fn ready(&mut self) -> bool {
        !self.buffer().is_empty() || self.get_mut().ready()
    }
}

/// Standard input, read on a thread of its own so that a replay of a pipe
/// that has gone quiet still stops at a signal: once `stop` is set, reading
/// returns end-of-input within 100 ms (the thread stays blocked in its read
/// until the process exits).
pub fn stdin_until(stop: Arc<AtomicBool>) -> std::io::Result<StoppableInput> {
    let (chunks, received) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(4);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut chunk = vec![0; 64 << 10];
                let read = match stdin.read(&mut chunk) {
                    Ok(read) => read,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        let _ = chunks.send(Err(error));
                        return;
                    }
                };
                chunk.truncate(read);
                if chunks.send(Ok(chunk)).is_err() || read == 0 {
                    return;
                }
            }
        })?;
    Ok(StoppableInput {
        received,
        chunk: Vec::new(),
        offset: 0,
        stop,
        ended: false,
        pending_error: None,
    })
}

/// What [`stdin_until`] returns: the chunks its thread reads.
pub struct StoppableInput {
    received: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    offset: usize,
    stop: Arc<AtomicBool>,
    ended: bool,
    /// A read error seen by [`StoppableInput::ready`], for the next read.
    pending_error: Option<std::io::Error>,
}

impl StoppableInput {
    /// Whether a chunk is here (or the input has ended): reading would not
    /// wait.
    fn ready(&mut self) -> bool {
        if self.offset < self.chunk.len() || self.ended {
            return true;
        }
        match self.received.try_recv() {
            Ok(Ok(chunk)) => {
                self.ended = chunk.is_empty();
                self.chunk = chunk;
                self.offset = 0;
                true
            }
            // The error is for `read` to return.
            Ok(Err(error)) => {
                self.pending_error = Some(error);
                true
            }
            Err(mpsc::TryRecvError::Empty) => false,
            Err(mpsc::TryRecvError::Disconnected) => true,
        }
    }
}

impl Read for StoppableInput {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if let Some(error) = self.pending_error.take() {
            self.ended = true;
            return Err(error);
        }
        while self.offset == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.received.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    self.chunk = chunk;
                    self.offset = 0;
                }
                Ok(Err(error)) => {
                    self.ended = true;
                    return Err(error);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.ended = self.stop.load(Ordering::Relaxed);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
        let count = out.len().min(self.chunk.len() - self.offset);
        out[..count].copy_from_slice(&self.chunk[self.offset..self.offset + count]);
        self.offset += count;
        Ok(count)
    }
}

/// `--read-file PATH`'s input: the file, or standard input for `-` (read
/// until `stop`, see [`stdin_until`]).
pub fn open_input(
    path: &std::path::Path,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Box<dyn Input>> {
    if path.as_os_str() == "-" {
        let stdin = stdin_until(Arc::clone(stop)).context("cannot start reading standard input")?;
        return Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, stdin)));
    }
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open capture {}", path.display()))?;
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, file)))
}

/// Feed every record of `input` through the modules and their events
/// through the handlers, then dispatch and handle every module's statistics.
/// Reading stops early once `stop` is set. Returns what was read and what
/// the handlers did.
pub fn replay(
    input: Box<dyn Input>,
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

/// Read every record of `input` into `destination` (a front-end's
/// publisher), stopping early once `stop` is set.
pub fn read_into(
    input: Box<dyn Input>,
    destination: impl Destination,
    settings: &ReplaySettings,
    stop: &AtomicBool,
) -> anyhow::Result<ReplayStats> {
    let (stats, _) = destination.run(
        settings.batch_size,
        |sink| read_batches(input, settings, &sink, stop),
        || {},
    )?;
    stats.context("cannot read the capture")
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
    input: Box<dyn Input>,
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
        if !builder.is_empty() && !reader.input().ready() && !hand_on(sink, &mut builder, &stats) {
            return Ok(stats);
        }
        let Some(position) = reader.next_entry(&mut entry)? else {
            hand_on(sink, &mut builder, &stats);
            // Standard input ends early when stopped (see `stdin_until`).
            if stop.load(Ordering::Relaxed) {
                stats.stopped_after = Some(last_line);
            }
            return Ok(stats);
        };
        last_line = position.line;
        stats.entries += 1;
        if position.line <= settings.skip_through {
            stats.skipped += 1;
            continue;
        }
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
        if builder.is_full() && !hand_on(sink, &mut builder, &stats) {
            return Ok(stats);
        }
    }
    hand_on(sink, &mut builder, &stats);
    stats.stopped_after = Some(last_line);
    Ok(stats)
}

/// Hand on what `builder` holds ([`BatchSink::pass_on`]), and the parse
/// counts so far to the metrics.
fn hand_on(
    sink: &BatchSink,
    builder: &mut crate::record::BatchBuilder,
    stats: &ReplayStats,
) -> bool {
    crate::metrics::registry().parsed(&stats.parsed);
    sink.pass_on(builder)
}
