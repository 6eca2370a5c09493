//! RELP, rsyslog's Reliable Event Logging Protocol (`listen.relp`, and
//! `listen.relp_tls` over TLS), served so that no message a sender sent is
//! lost by the runtime.
//!
//! A RELP client numbers its commands (`TXNR SP COMMAND SP DATALEN [SP
//! DATA] LF`) and keeps every `syslog` command until the server answers it
//! (`TXNR rsp 6 200 OK`); after a broken connection it sends again what was
//! not answered. So the answer is the acknowledgement, and ours comes only
//! once the message is safe: once a state checkpoint that covers it is
//! committed, or, without state, once its events are handled (the
//! receipts of [`crate::receipts`] carry that back from the pipeline).
//! Whatever happens to the runtime before that (kill -9, a crash, a
//! restart), the sender still holds the message and sends it again: none is
//! lost, and some may be processed twice (those processed after the last
//! checkpoint, at most one checkpoint interval's worth; the listener counts
//! nothing of that, the sender's resends are new messages to it).
//!
//! Answers go out in the order of the commands, as RELP requires. A client
//! may have at most [`MAX_UNANSWERED`] commands unanswered (omrelp's window
//! is 128 by default); past that, the connection is not read until answers
//! go out. At shutdown a connection stops reading (what it has not read is
//! the sender's to send again), answers what the pipeline finishes, sends
//! the `serverclose` hint and closes.

use super::framing::{Frames, Oversize};
use super::server::{
    Chunk, ChunkKind, ConnectionContext, ReadGate, ReadOutcome, pause, read_with_timeout,
};
use super::slots::Slot;
use crate::receipts::ReceiptSink;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// Commands a client may have unanswered before its connection is read no
/// further: bounds what one connection holds, whatever window it uses.
pub const MAX_UNANSWERED: usize = 4096;

/// After shutdown, how long a connection waits for the pipeline to finish
/// the messages it passed on, to answer them. What is not answered by then
/// is sent again by the client to the next run.
const ANSWER_WAIT_AT_SHUTDOWN: Duration = Duration::from_secs(60);

/// How long writing answers may take (a client that does not read them).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read at once.
const READ_BYTES: usize = 32 * 1024;

/// Most digits of a transaction number or a data length.
const MAX_DIGITS: usize = 9;

/// Most letters of a command.
const MAX_COMMAND: usize = 32;

/// What the runtime offers in answer to `open`.
fn offers() -> String {
    format!(
        "200 OK\nrelp_version=0\nrelp_software=correlator,{}\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    )
}

/// A frame that breaks RELP's framing: the connection is closed, as the
/// protocol asks (the client reconnects and sends again what was not
/// answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not 1 to 9 digits and a space where the transaction number is.
    #[error("a frame does not start with a transaction number (1 to 9 digits and a space)")]
    Txnr,
    /// Not 1 to 32 letters and a space where the command is.
    #[error("a frame's command is not 1 to 32 letters followed by a space")]
    Command,
    /// Not 1 to 9 digits where the data length is.
    #[error("a frame's data length is not 1 to 9 digits")]
    Length,
    /// Something else than a line feed where the frame should end.
    #[error("a frame does not end with a line feed where its data length says")]
    Trailer,
}

/// One RELP frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its transaction number (0 for a hint, which is not answered).
    pub txnr: u64,
    /// Its command, e.g. `open`, `syslog`, `close`.
    pub command: Cow<'a, str>,
    /// Its data, cut to the reader's maximum.
    pub data: Cow<'a, [u8]>,
    /// Bytes of data past the maximum, skipped.
    pub cut: usize,
}

/// A frame too long to keep whole: its head is kept, the rest skipped as
/// it comes, so that memory stays bounded by the maximum.
#[derive(Debug)]
struct Oversized {
    txnr: u64,
    command: String,
    head: Vec<u8>,
    /// Bytes still to skip before the trailer.
    skip: usize,
    cut: usize,
}

/// Cuts a RELP byte stream into frames.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    start: usize,
    max_data: usize,
    oversized: Option<Oversized>,
}

/// A frame's header, parsed: where its parts are in the bytes it came from.
struct Header {
    txnr: u64,
    command: (usize, usize),
    length: usize,
    /// Where its data starts (or, without data, its trailer).
    data: usize,
}

/// A number of 1 to [`MAX_DIGITS`] digits ending at a byte that is not a
/// digit, from `bytes[*at..]`: `Ok(None)` when the bytes end first.
fn number(bytes: &[u8], at: &mut usize, error: FrameError) -> Result<Option<usize>, FrameError> {
    let mut value = 0usize;
    let mut digits = 0;
    loop {
        let Some(&byte) = bytes.get(*at) else {
            return Ok(None);
        };
        if !byte.is_ascii_digit() {
            return if digits == 0 {
                Err(error)
            } else {
                Ok(Some(value))
            };
        }
        digits += 1;
        if digits > MAX_DIGITS {
            return Err(error);
        }
        value = value * 10 + usize::from(byte - b'0');
        *at += 1;
    }
}

/// The header at the start of `bytes`, `Ok(None)` while incomplete.
fn header(bytes: &[u8]) -> Result<Option<Header>, FrameError> {
    let mut at = 0;
    let Some(txnr) = number(bytes, &mut at, FrameError::Txnr)? else {
        return Ok(None);
    };
    match bytes.get(at) {
        None => return Ok(None),
        Some(b' ') => at += 1,
        Some(_) => return Err(FrameError::Txnr),
    }
    let command_start = at;
    loop {
        match bytes.get(at) {
            None => return Ok(None),
            Some(byte) if byte.is_ascii_alphabetic() => {
                at += 1;
                if at - command_start > MAX_COMMAND {
                    return Err(FrameError::Command);
                }
            }
            Some(b' ') if at > command_start => break,
            Some(_) => return Err(FrameError::Command),
        }
    }
    let command = (command_start, at);
    at += 1;
    let Some(length) = number(bytes, &mut at, FrameError::Length)? else {
        return Ok(None);
    };
    // Without data the trailer follows the length; with data, a space.
    if length > 0 {
        match bytes.get(at) {
            None => return Ok(None),
            Some(b' ') => at += 1,
            Some(_) => return Err(FrameError::Length),
        }
    }
    Ok(Some(Header {
        txnr: txnr as u64,
        command,
        length,
        data: at,
    }))
}

impl FrameReader {
    /// A reader that keeps at most `max_data` bytes of a frame's data.
    pub fn new(max_data: usize) -> Self {
        FrameReader {
            buffer: Vec::new(),
            start: 0,
            max_data,
            oversized: None,
        }
    }

    /// Add bytes read from the stream; take the frames with
    /// [`FrameReader::next_frame`].
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        if self.oversized.is_some() {
            return self.finish_oversized();
        }
        let rest = &self.buffer[self.start..];
        let Some(header) = header(rest)? else {
            return Ok(None);
        };
        let Header {
            txnr,
            command: (command_start, command_end),
            length,
            data,
        } = header;
        if length > self.max_data {
            if rest.len() < data + self.max_data {
                return Ok(None);
            }
            let command = String::from_utf8_lossy(&rest[command_start..command_end]).into_owned();
            self.oversized = Some(Oversized {
                txnr,
                command,
                head: rest[data..data + self.max_data].to_vec(),
                skip: length - self.max_data,
                cut: length - self.max_data,
            });
            self.start += data + self.max_data;
            return self.finish_oversized();
        }
        let Some(&trailer) = rest.get(data + length) else {
            return Ok(None);
        };
        if trailer != b'\n' {
            return Err(FrameError::Trailer);
        }
        let start = self.start;
        self.start += data + length + 1;
        let frame = &self.buffer[start..];
        Ok(Some(Frame {
            txnr,
            // Letters only, so UTF-8.
            command: String::from_utf8_lossy(&frame[command_start..command_end]),
            data: Cow::Borrowed(&frame[data..data + length]),
            cut: 0,
        }))
    }

    /// Skip what comes of an oversized frame's data; once its trailer has
    /// come, the frame with its head.
    fn finish_oversized(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        let Some(oversized) = &mut self.oversized else {
            return Ok(None);
        };
        let skipped = oversized.skip.min(self.buffer.len() - self.start);
        oversized.skip -= skipped;
        self.start += skipped;
        if oversized.skip > 0 {
            return Ok(None);
        }
        match self.buffer.get(self.start) {
            None => return Ok(None),
            Some(b'\n') => self.start += 1,
            Some(_) => return Err(FrameError::Trailer),
        }
        let Some(oversized) = self.oversized.take() else {
            return Ok(None);
        };
        Ok(Some(Frame {
            txnr: oversized.txnr,
            command: Cow::Owned(oversized.command),
            data: Cow::Owned(oversized.head),
            cut: oversized.cut,
        }))
    }
}

/// The answers a connection owes, in the order of its commands: each
/// command has a sequence number (the number its receipt carries).
#[derive(Debug, Default)]
struct Answers {
    /// Sequence number of the first owed.
    first: u64,
    /// Transaction number and answer (`None` while the message is not safe
    /// yet) of each owed command, oldest first.
    owed: VecDeque<(u64, Option<Cow<'static, str>>)>,
}

impl Answers {
    /// Owe an answer to command `txnr`; returns its sequence number.
    fn owe(&mut self, txnr: u64, answer: Option<Cow<'static, str>>) -> u64 {
        self.owed.push_back((txnr, answer));
        self.first + self.owed.len() as u64 - 1
    }

    /// The message with sequence number `number` is safe.
    fn safe(&mut self, number: u64) {
        let index = number.checked_sub(self.first).map(usize::try_from);
        if let Some(Ok(index)) = index
            && let Some((_, answer)) = self.owed.get_mut(index)
        {
            *answer = Some(Cow::Borrowed("200 OK"));
        }
    }

    /// Write the answers that may go out now (every one before them has
    /// gone) to `out`.
    fn take_ready(&mut self, out: &mut Vec<u8>) {
        while let Some((txnr, Some(answer))) = self.owed.front() {
            use std::io::Write as _;
            let _ = writeln!(out, "{txnr} rsp {} {answer}", answer.len());
            self.owed.pop_front();
            self.first += 1;
        }
    }

    fn unanswered(&self) -> usize {
        self.owed.len()
    }
}

/// How a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    /// Before `open`.
    New,
    Open,
    /// After `close` (or a command that ends the session): answer what is
    /// owed, then close.
    Closing,
}

/// One connection's messages and answers.
struct Connection {
    reader: FrameReader,
    answers: Answers,
    session: Session,
    peer: Arc<str>,
    oversize: Oversize,
}

impl Connection {
    /// Take every whole frame read so far: messages to `frames` (with their
    /// sequence numbers in `numbers`), answers owed. `Err` on a framing
    /// error, after which the connection is closed.
    fn take_frames(
        &mut self,
        frames: &mut Frames,
        numbers: &mut Vec<u64>,
        context: &ConnectionContext,
    ) -> Result<(), FrameError> {
        while let Some(frame) = self.reader.next_frame()? {
            if self.session == Session::Closing {
                tracing::info!(peer = %self.peer, "RELP: a command after close is ignored");
                continue;
            }
            // Hints (txnr 0) are not answered; none from a client is known.
            if frame.txnr == 0 {
                continue;
            }
            let answer = match (&*frame.command, self.session) {
                ("open", Session::New) => {
                    self.session = Session::Open;
                    Cow::Owned(offers())
                }
                ("open", _) => {
                    self.session = Session::Closing;
                    Cow::Borrowed("500 protocol error: connection already open")
                }
                ("syslog", Session::Open) => {
                    if frame.cut > 0 {
                        let counters = &context.counters;
                        if self.oversize == Oversize::Drop {
                            counters.dropped_oversize.fetch_add(1, Ordering::Relaxed);
                            // Dropped by the rules: sending it again would
                            // not change that.
                            self.answers.owe(frame.txnr, Some(Cow::Borrowed("200 OK")));
                            continue;
                        }
                        counters.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    frames.push_message(&frame.data);
                    numbers.push(self.answers.owe(frame.txnr, None));
                    continue;
                }
                ("close", _) => {
                    self.session = Session::Closing;
                    Cow::Borrowed("200 OK")
                }
                (_, Session::New) => {
                    self.session = Session::Closing;
                    Cow::Borrowed("500 protocol error: the session is not open")
                }
                _ => Cow::Borrowed("500 command not supported"),
            };
            self.answers.owe(frame.txnr, Some(answer));
        }
        Ok(())
    }
}

/// Why the reading part of a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The client closed, failed, or broke the protocol: nobody to answer.
    Gone,
    /// The session is closing: answer what is owed, then close.
    Closing,
    /// Shutdown: answer what the pipeline finishes, then `serverclose`.
    Shutdown,
}

/// Serve one RELP connection until it ends (see the module's text).
pub(super) async fn serve(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    peer: Arc<str>,
    slot: Option<Slot>,
    context: Arc<ConnectionContext>,
) {
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    let mut connection = Connection {
        reader: FrameReader::new(context.framing.max_message_bytes),
        answers: Answers::default(),
        session: Session::New,
        peer: Arc::clone(&peer),
        oversize: context.framing.oversize,
    };
    let (sink, mut receipts) = ReceiptSink::new();
    let gate = Arc::new(ReadGate::default());
    let opened = Chunk::mark(&peer, ChunkKind::Opened, Some(Arc::clone(&gate)));
    let _ = context.queue.send(opened).await;
    let never = CancellationToken::new();
    let evicted = slot.as_ref().map_or(&never, |slot| &slot.close);
    let mut buffer = vec![0u8; READ_BYTES];
    let mut out = Vec::new();
    let mut spoke = false;
    let ended = loop {
        let timeout = context.read_timeout(spoke);
        // After `close` nothing more is read: the answers owed come with
        // the receipts.
        let may_read = connection.answers.unanswered() < MAX_UNANSWERED
            && connection.session != Session::Closing;
        // The parser stops the reading while this sender is far ahead of
        // the others (answers still go out).
        let paused = may_read && gate.is_paused();
        let read = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => break Ended::Shutdown,
            () = evicted.cancelled() => break Ended::Gone,
            Some(numbers) = receipts.recv() => {
                for number in numbers {
                    connection.answers.safe(number);
                }
                None
            }
            () = pause(&gate, &context.counters), if paused => None,
            read = read_with_timeout(&mut read_half, &mut buffer, timeout), if may_read && !paused => Some(read),
        };
        if let Some(read) = read {
            match read {
                ReadOutcome::Data(count) => {
                    if !spoke {
                        spoke = true;
                        if let Some(slot) = &slot {
                            slot.spoke();
                        }
                    }
                    connection.reader.push(&buffer[..count]);
                    let mut frames = Frames::default();
                    let mut numbers = Vec::new();
                    let taken = connection.take_frames(&mut frames, &mut numbers, &context);
                    if !frames.is_empty() {
                        context
                            .counters
                            .messages
                            .fetch_add(frames.bounds.len() as u64, Ordering::Relaxed);
                        let chunk = Chunk {
                            peer: Arc::clone(&peer),
                            frames,
                            kind: ChunkKind::Messages,
                            receipts: Some((Arc::clone(&sink), numbers)),
                            gate: None,
                        };
                        if context.queue.send(chunk).await.is_err() {
                            break Ended::Gone;
                        }
                    }
                    if let Err(error) = taken {
                        tracing::warn!(%peer, "RELP: {error}; closing the connection");
                        break Ended::Gone;
                    }
                }
                ReadOutcome::End => break Ended::Gone,
                ReadOutcome::Idle if !spoke => {
                    context
                        .counters
                        .silent_closed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "closing a connection that sent nothing for listen.first_byte_timeout_s");
                    break Ended::Gone;
                }
                ReadOutcome::Idle => {
                    context.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "closing a connection idle for listen.idle_timeout_s");
                    break Ended::Gone;
                }
                ReadOutcome::Failed(error) => {
                    tracing::info!(%peer, "connection failed: {error}");
                    break Ended::Gone;
                }
            }
        }
        connection.answers.take_ready(&mut out);
        if !out.is_empty() && !write_all(&mut write_half, &mut out, &peer).await {
            break Ended::Gone;
        }
        if connection.session == Session::Closing && connection.answers.unanswered() == 0 {
            break Ended::Closing;
        }
    };
    let _ = context
        .queue
        .send(Chunk::mark(&peer, ChunkKind::Ended, None))
        .await;
    // The parser's queue must be able to close (it closes once every
    // connection has let go of it), and the receipts' channel once the
    // pipeline has let go of every receipt.
    drop(context);
    drop(sink);
    drop(slot);
    if ended == Ended::Gone {
        return;
    }
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT_AT_SHUTDOWN;
    while connection.answers.unanswered() > 0 {
        match tokio::time::timeout_at(deadline, receipts.recv()).await {
            Ok(Some(numbers)) => {
                for number in numbers {
                    connection.answers.safe(number);
                }
            }
            // Every receipt is delivered or dropped, or the wait is over.
            Ok(None) | Err(_) => break,
        }
        connection.answers.take_ready(&mut out);
        if !out.is_empty() && !write_all(&mut write_half, &mut out, &peer).await {
            return;
        }
    }
    if ended == Ended::Shutdown {
        out.extend_from_slice(b"0 serverclose 0\n");
        if !write_all(&mut write_half, &mut out, &peer).await {
            return;
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write_half.shutdown()).await;
}

/// Write and empty `out`; `false` when the client cannot be written to.
async fn write_all(writer: &mut (impl AsyncWrite + Unpin), out: &mut Vec<u8>, peer: &str) -> bool {
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        writer.write_all(out).await?;
        writer.flush().await
    })
    .await;
    out.clear();
    match written {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::info!(%peer, "RELP: cannot answer: {error}");
            false
        }
        Err(_) => {
            tracing::info!(%peer, "RELP: the client does not take its answers; closing");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(
        reader: &mut FrameReader,
    ) -> Result<Vec<(u64, String, String, usize)>, FrameError> {
        let mut taken = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            taken.push((
                frame.txnr,
                frame.command.into_owned(),
                String::from_utf8_lossy(&frame.data).into_owned(),
                frame.cut,
            ));
        }
        Ok(taken)
    }

    #[test]
    fn frames_are_cut_wherever_the_reads_end() {
        let stream = b"1 open 86 relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n2 syslog 11 <13>1 hello\n3 close 0\n";
        for step in [1, 2, 7, stream.len()] {
            let mut reader = FrameReader::new(1024);
            let mut taken = Vec::new();
            for piece in stream.chunks(step) {
                reader.push(piece);
                taken.extend(frames_of(&mut reader).expect("valid frames"));
            }
            assert_eq!(
                taken,
                [
                    (
                        1,
                        "open".to_owned(),
                        "relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog".to_owned(),
                        0
                    ),
                    (2, "syslog".to_owned(), "<13>1 hello".to_owned(), 0),
                    (3, "close".to_owned(), String::new(), 0),
                ],
                "reads of {step} bytes"
            );
        }
    }

    #[test]
    fn a_frame_longer_than_the_maximum_keeps_its_head_and_skips_the_rest() {
        let mut reader = FrameReader::new(4);
        let mut taken = Vec::new();
        for piece in [
            &b"7 syslog 10 abc"[..],
            b"defgh",
            b"ij\n8 sys",
            b"log 2 ok\n",
        ] {
            reader.push(piece);
            taken.extend(frames_of(&mut reader).expect("valid frames"));
        }
        assert_eq!(
            taken,
            [
                (7, "syslog".to_owned(), "abcd".to_owned(), 6),
                (8, "syslog".to_owned(), "ok".to_owned(), 0),
            ]
        );
    }

    #[test]
    fn broken_frames_are_named() {
        for (bytes, error) in [
            (&b"x syslog 1 a\n"[..], FrameError::Txnr),
            (b"1234567890 syslog 1 a\n", FrameError::Txnr),
            (b"1 sys-log 1 a\n", FrameError::Command),
            (b"1  1 a\n", FrameError::Command),
            (b"1 syslog x\n", FrameError::Length),
            (b"1 syslog 1x\n", FrameError::Length),
            (b"1 syslog 1 ab\n", FrameError::Trailer),
            (b"1 close 0 \n", FrameError::Trailer),
        ] {
            let mut reader = FrameReader::new(64);
            reader.push(bytes);
            assert_eq!(
                frames_of(&mut reader),
                Err(error),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn answers_go_out_in_the_order_of_the_commands() {
        let mut answers = Answers::default();
        let open = answers.owe(1, Some(Cow::Owned(offers())));
        let first = answers.owe(2, None);
        let second = answers.owe(3, None);
        assert_eq!((open, first, second), (0, 1, 2));
        let mut out = Vec::new();
        answers.take_ready(&mut out);
        let opened = format!("1 rsp {} {}\n", offers().len(), offers());
        assert_eq!(String::from_utf8_lossy(&out), opened);
        out.clear();
        // The second is safe first: it waits for the first.
        answers.safe(second);
        answers.take_ready(&mut out);
        assert!(out.is_empty());
        answers.safe(first);
        answers.owe(4, Some(Cow::Borrowed("200 OK")));
        answers.take_ready(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2 rsp 6 200 OK\n3 rsp 6 200 OK\n4 rsp 6 200 OK\n"
        );
        assert_eq!(answers.unanswered(), 0);
        // A number already answered, or never given, changes nothing.
        answers.safe(first);
        answers.safe(99);
        assert_eq!(answers.unanswered(), 0);
    }
}
