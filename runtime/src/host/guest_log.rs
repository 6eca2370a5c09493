//! What a guest says about itself: its `wasi:logging` lines and what it
//! writes to standard output or error. Both become the instance's log
//! lines, under target `guest` and tagged with the instance, so that
//! nothing a guest writes reaches the runtime's own streams as it was
//! written: a guest cannot print a line that passes for the runtime's, or
//! for another instance's. Every line is cut at [`GUEST_LOG_LINE_MAX`]
//! bytes, its control characters are escaped, and the instance's lines
//! share one budget per second (`limits.log_lines_per_second`).

use super::bindings::module::wasi::logging::logging::Level;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Longest guest log line written; longer ones are cut.
pub const GUEST_LOG_LINE_MAX: usize = 4096;

/// One instance's log: its name, and the budget all its lines share.
pub struct GuestLog {
    instance: Arc<str>,
    budget: Mutex<LogBudget>,
}

impl GuestLog {
    /// The log of `instance`, allowed `lines_per_second`.
    pub fn new(instance: Arc<str>, lines_per_second: u64) -> Arc<Self> {
        Arc::new(GuestLog {
            instance,
            budget: Mutex::new(LogBudget::new(lines_per_second)),
        })
    }

    /// Log one line the guest sent at `level`, with its `context` (the
    /// `wasi:logging` context, or the stream it was written to).
    pub fn line(&self, level: Level, context: &str, message: &[u8]) {
        let dropped = {
            let Ok(mut budget) = self.budget.lock() else {
                return;
            };
            match budget.take() {
                Some(dropped) => dropped.map(|dropped| (dropped, budget.rate)),
                None => return,
            }
        };
        let instance = &*self.instance;
        if let Some((dropped, rate)) = dropped {
            tracing::warn!(
                target: "guest",
                instance,
                dropped,
                "guest log lines dropped (limit {rate} per second)"
            );
        }
        let message = shown(message, GUEST_LOG_LINE_MAX);
        let context = shown(context.as_bytes(), 256);
        match level {
            Level::Trace => tracing::trace!(target: "guest", instance, context, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", instance, context, "{message}"),
            Level::Info => tracing::info!(target: "guest", instance, context, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", instance, context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(target: "guest", instance, context, "{message}");
            }
        }
    }
}

/// `bytes` as one line a person can trust: invalid UTF-8 replaced, control
/// characters (line breaks, escape sequences, BEL, NUL) and the Unicode
/// ones that reorder or hide text shown as `\u{..}` escapes, and cut at
/// `max` bytes with ` [cut]`.
pub fn shown(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe_char(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    if bytes.len() > max {
        out.push_str(" [cut]");
    }
    out
}

/// Whether `c` could change how a line reads on a terminal or in a log
/// viewer beyond its own glyph: C0 and C1 controls (but tab), DEL, the line
/// and paragraph separators, and the bidirectional and invisible
/// formatting characters (U+200B-U+200F, U+202A-U+202E, U+2060-U+2069,
/// U+FEFF).
pub fn is_unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// A token bucket for guest log lines: `rate` per second, bursts up to
/// `rate`.
struct LogBudget {
    rate: u64,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl LogBudget {
    fn new(rate: u64) -> Self {
        LogBudget {
            rate,
            tokens: rate as f64,
            refilled: Instant::now(),
            dropped: 0,
        }
    }

    /// Whether one more line may be logged now (`None` if not); if so, how
    /// many were dropped since the last one that was, if any.
    fn take(&mut self) -> Option<Option<u64>> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(Some(std::mem::take(&mut self.dropped)).filter(|dropped| *dropped > 0))
        } else {
            self.dropped += 1;
            None
        }
    }
}

/// A guest's standard output or error, made into its log lines (`info`
/// for standard output, `warn` for standard error, with the stream as
/// context). A line is logged when its line break comes, or when it
/// reaches [`GUEST_LOG_LINE_MAX`] bytes (the rest of it, up to the next
/// line break, is dropped); what is left at the instance's end is logged
/// then. Writing never blocks and never fails, so a guest cannot stall on
/// it; what it costs is bounded by the line budget and the call's time.
#[derive(Clone)]
pub struct GuestOutput {
    /// The line being written, shared by every handle of the stream the
    /// guest opens.
    line: Arc<Mutex<OutputLine>>,
}

struct OutputLine {
    log: Arc<GuestLog>,
    stream: &'static str,
    bytes: Vec<u8>,
    /// The line was cut: drop what comes until its line break.
    skipping: bool,
}

impl OutputLine {
    fn level(&self) -> Level {
        if self.stream == "stderr" {
            Level::Warn
        } else {
            Level::Info
        }
    }

    fn emit(&mut self) {
        if !self.skipping && !self.bytes.is_empty() {
            self.log.line(self.level(), self.stream, &self.bytes);
        }
        self.bytes.clear();
    }

    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let end = memchr::memchr(b'\n', bytes);
            let (piece, rest) = match end {
                Some(end) => (&bytes[..end], &bytes[end + 1..]),
                None => (bytes, &[][..]),
            };
            bytes = rest;
            if !self.skipping {
                let room = (GUEST_LOG_LINE_MAX + 1).saturating_sub(self.bytes.len());
                self.bytes
                    .extend_from_slice(&piece[..piece.len().min(room)]);
                if self.bytes.len() > GUEST_LOG_LINE_MAX {
                    self.emit();
                    self.skipping = true;
                }
            }
            if end.is_some() {
                self.emit();
                self.skipping = false;
            }
        }
    }
}

impl Drop for OutputLine {
    /// The instance is gone: log what is left of an unfinished line.
    fn drop(&mut self) {
        self.emit();
    }
}

impl GuestOutput {
    /// The guest's standard output (`stdout`) or error (`stderr`).
    pub fn new(log: Arc<GuestLog>, stream: &'static str) -> Self {
        GuestOutput {
            line: Arc::new(Mutex::new(OutputLine {
                log,
                stream,
                bytes: Vec::new(),
                skipping: false,
            })),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        if let Ok(mut line) = self.line.lock() {
            line.write(bytes);
        }
        Ok(())
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

/// How much a guest may hand over in one write: any amount is taken.
const WRITE_PERMIT: usize = 64 << 10;

/// The WASI output stream traits for a stream type with
/// `write_bytes(&self, &[u8]) -> std::io::Result<()>` that takes any
/// amount at once.
macro_rules! output_stream {
    ($stream:ty) => {
        impl StdoutStream for $stream {
            fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
                Box::new(self.clone())
            }

            fn p2_stream(&self) -> Box<dyn OutputStream> {
                Box::new(self.clone())
            }
        }

        impl OutputStream for $stream {
            fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
                self.write_bytes(&bytes)
                    .map_err(|error| StreamError::LastOperationFailed(error.into()))
            }

            fn flush(&mut self) -> Result<(), StreamError> {
                Ok(())
            }

            fn check_write(&mut self) -> Result<usize, StreamError> {
                Ok(WRITE_PERMIT)
            }
        }

        #[async_trait::async_trait]
        impl Pollable for $stream {
            async fn ready(&mut self) {}
        }

        impl tokio::io::AsyncWrite for $stream {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::task::Poll::Ready(self.write_bytes(buf).map(|()| buf.len()))
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
    };
}

output_stream!(GuestOutput);
output_stream!(WholeLines);

/// The runtime's standard output, granted to an instance (`grants.stdout`,
/// the console handler's job), in whole lines: what the instance writes is
/// held until a line ends, and its complete lines go out in one write
/// while standard output is locked. Several instances writing at once (a
/// worker runs a console handler per partition, on threads of their own)
/// never cut into each other's lines.
#[derive(Clone)]
pub struct WholeLines {
    held: Arc<Mutex<Vec<u8>>>,
}

impl WholeLines {
    /// An instance's own view of standard output.
    pub fn new() -> Self {
        WholeLines {
            held: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let Ok(mut held) = self.held.lock() else {
            return Ok(());
        };
        let Some(last_newline) = memchr::memrchr(b'\n', bytes) else {
            held.extend_from_slice(bytes);
            return Ok(());
        };
        let (lines, rest) = bytes.split_at(last_newline + 1);
        let mut stdout = std::io::stdout().lock();
        if !held.is_empty() {
            held.extend_from_slice(lines);
            stdout.write_all(&held)?;
            held.clear();
        } else {
            stdout.write_all(lines)?;
        }
        stdout.flush()?;
        held.extend_from_slice(rest);
        Ok(())
    }
}

impl Default for WholeLines {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for WholeLines {
    /// The last clone is gone (the instance with it): what is left of an
    /// unfinished line goes out as it is.
    fn drop(&mut self) {
        use std::io::Write as _;
        if Arc::strong_count(&self.held) > 1 {
            return;
        }
        if let Ok(held) = self.held.lock()
            && !held.is_empty()
        {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&held);
            let _ = stdout.flush();
        }
    }
}

impl IsTerminal for WholeLines {
    fn is_terminal(&self) -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_reordering_marks_are_escaped() {
        assert_eq!(
            shown(b"a\nb\x1b[31mc\x07\0\rd\te", 100),
            "a\\u{a}b\\u{1b}[31mc\\u{7}\\u{0}\\u{d}d\te"
        );
        assert_eq!(
            shown("x\u{202e}gnp.exe\u{2028}".as_bytes(), 100),
            "x\\u{202e}gnp.exe\\u{2028}"
        );
        assert_eq!(shown(b"abcdef", 3), "abc [cut]");
        assert_eq!(shown(b"\xff ok", 10), "\u{fffd} ok");
    }
}
