//! Cutting a TCP byte stream into syslog messages (RFC 6587).
//!
//! Each frame is recognised by its first byte, as rsyslog does: a digit
//! starts octet counting (`LEN SP MSG`), anything else a non-transparent
//! frame that ends at the trailer (LF by default, or NUL). One connection may
//! mix both. Digits that turn out not to be a length (`2026-11-27T...` is a
//! line without a PRI, not a 2026-byte frame) are taken back as the start of
//! a non-transparent frame, so nothing a sender wrote is lost to a wrong
//! guess.
//!
//! A frame never grows past `max_message_bytes` in memory: the rest of a
//! longer message is skipped (and the message truncated or dropped, as
//! configured), whatever the sender does.

/// The byte that ends a non-transparent frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer {
    /// `\n`, the common choice; a `\r` before it is removed too.
    Lf,
    /// `\0`, for senders whose messages contain line breaks.
    Nul,
}

impl Trailer {
    fn byte(self) -> u8 {
        match self {
            Trailer::Lf => b'\n',
            Trailer::Nul => 0,
        }
    }
}

/// What to do with a message longer than the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Keep its first `max_message_bytes` bytes.
    Truncate,
    /// Drop it whole.
    Drop,
}

/// How frames are cut; the same for every connection of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingRules {
    /// End of a non-transparent frame.
    pub trailer: Trailer,
    /// Largest message kept, in bytes.
    pub max_message_bytes: usize,
    /// What happens to longer ones.
    pub oversize: Oversize,
}

/// Longest length prefix taken as octet counting: nine digits is 999 MB,
/// far past any maximum, and keeps the arithmetic in `usize` on any target.
const MAX_LENGTH_DIGITS: usize = 9;

/// Complete messages cut from a stream, kept flat: one buffer of text and
/// the (start, end) of each message in it. Sent to the parser as one unit.
#[derive(Debug, Default)]
pub struct Frames {
    /// The messages' bytes, back to back.
    pub data: Vec<u8>,
    /// Where each message lies in `data`.
    pub bounds: Vec<(usize, usize)>,
}

impl Frames {
    /// Room for the messages of `bytes` read bytes without growing: the
    /// network thread makes one per read.
    pub fn for_read(bytes: usize) -> Self {
        Frames {
            data: Vec::with_capacity(bytes),
            // Syslog messages are rarely shorter than this.
            bounds: Vec::with_capacity(bytes / 64 + 1),
        }
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// The messages in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bounds
            .iter()
            .map(|&(start, end)| &self.data[start..end])
    }

    /// Add one whole message.
    pub fn push_message(&mut self, message: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(message);
        self.bounds.push((start, self.data.len()));
    }
}

/// What happened to messages other than being passed on, for the
/// listener's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FramingCounts {
    /// Messages cut to `max_message_bytes`.
    pub truncated: u64,
    /// Messages dropped for being longer than `max_message_bytes`.
    pub dropped_oversize: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames.
    Start,
    /// Reading a length prefix: its digits so far are in `current`.
    Length,
    /// Inside an octet-counted frame with this many bytes still to come.
    Counted { remaining: usize },
    /// Inside a non-transparent frame.
    Open,
}

/// Cuts one connection's stream into messages.
#[derive(Debug)]
pub struct Framer {
    rules: FramingRules,
    state: State,
    /// The part of the current frame read so far (at most
    /// `max_message_bytes`).
    current: Vec<u8>,
    /// The current frame is longer than the maximum: its remaining bytes
    /// are skipped.
    overflowed: bool,
    counts: FramingCounts,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new(rules: FramingRules) -> Self {
        Framer {
            rules,
            state: State::Start,
            current: Vec::new(),
            overflowed: false,
            counts: FramingCounts::default(),
        }
    }

    /// Truncations and drops so far.
    pub fn counts(&self) -> FramingCounts {
        self.counts
    }

    /// Bytes of the frame begun and not ended, kept until it ends.
    pub fn partial_bytes(&self) -> usize {
        self.current.len()
    }

    /// Whether a frame has begun and not ended.
    pub fn in_frame(&self) -> bool {
        self.state != State::Start
    }

    /// Cut `input` (the next bytes of the stream) into `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Frames) {
        let trailer = self.rules.trailer.byte();
        while !input.is_empty() {
            match self.state {
                State::Start => {
                    let first = input[0];
                    if first.is_ascii_digit() && first != b'0' {
                        self.state = State::Length;
                    } else if first == trailer || first == b'\n' || first == b'\r' {
                        // Empty frames and stray line ends between
                        // octet-counted frames carry nothing.
                        input = &input[1..];
                    } else {
                        self.state = State::Open;
                    }
                }
                State::Length => {
                    let digits = input
                        .iter()
                        .take_while(|byte| byte.is_ascii_digit())
                        .count();
                    let take = digits.min(MAX_LENGTH_DIGITS + 1 - self.current.len());
                    self.current.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.current.len() > MAX_LENGTH_DIGITS {
                        self.state = State::Open;
                        continue;
                    }
                    match input.first() {
                        None => {}
                        Some(b' ') => {
                            input = &input[1..];
                            let length = self.current.iter().fold(0usize, |length, digit| {
                                length * 10 + usize::from(digit - b'0')
                            });
                            self.current.clear();
                            self.state = if length == 0 {
                                State::Start
                            } else {
                                State::Counted { remaining: length }
                            };
                        }
                        // Not a length after all: these digits begin a
                        // non-transparent frame.
                        Some(_) => self.state = State::Open,
                    }
                }
                State::Counted { remaining } => {
                    if self.current.is_empty()
                        && !self.overflowed
                        && remaining <= input.len()
                        && remaining <= self.rules.max_message_bytes
                    {
                        // The whole frame is in this read.
                        out.push_message(&input[..remaining]);
                        input = &input[remaining..];
                        self.state = State::Start;
                        continue;
                    }
                    let take = remaining.min(input.len());
                    self.keep(&input[..take]);
                    input = &input[take..];
                    let remaining = remaining - take;
                    if remaining == 0 {
                        self.finish(out);
                    } else {
                        self.state = State::Counted { remaining };
                    }
                }
                State::Open => match memchr::memchr(trailer, input) {
                    Some(end) => {
                        if self.current.is_empty() && !self.overflowed {
                            // The whole frame is in this read: no copy
                            // through `current`.
                            let frame = &input[..end];
                            if frame.len() > self.rules.max_message_bytes {
                                self.keep(frame);
                            } else {
                                out.push_message(strip_cr(frame, self.rules.trailer));
                                self.state = State::Start;
                                input = &input[end + 1..];
                                continue;
                            }
                        } else {
                            self.keep(&input[..end]);
                        }
                        input = &input[end + 1..];
                        if self.rules.trailer == Trailer::Lf
                            && !self.overflowed
                            && self.current.last() == Some(&b'\r')
                        {
                            self.current.pop();
                        }
                        self.finish(out);
                    }
                    None => {
                        self.keep(input);
                        input = &[];
                    }
                },
            }
        }
    }

    /// The stream ended. A non-transparent frame without its trailer is
    /// still a whole message (senders often omit the last trailer); an
    /// octet-counted frame cut short is not: returns whether one was lost.
    pub fn finish_stream(&mut self, out: &mut Frames) -> bool {
        match self.state {
            State::Start => false,
            State::Open => {
                self.finish(out);
                false
            }
            State::Length | State::Counted { .. } => {
                self.current.clear();
                self.overflowed = false;
                self.state = State::Start;
                true
            }
        }
    }

    /// Add bytes of the current frame, up to the maximum.
    fn keep(&mut self, bytes: &[u8]) {
        let room = self.rules.max_message_bytes - self.current.len();
        if bytes.len() > room {
            self.overflowed = true;
        }
        self.current
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The current frame is complete.
    fn finish(&mut self, out: &mut Frames) {
        if self.overflowed {
            match self.rules.oversize {
                Oversize::Truncate => {
                    self.counts.truncated += 1;
                    out.push_message(&self.current);
                }
                Oversize::Drop => self.counts.dropped_oversize += 1,
            }
        } else if !self.current.is_empty() {
            out.push_message(&self.current);
        }
        self.current.clear();
        self.overflowed = false;
        self.state = State::Start;
    }
}

fn strip_cr(frame: &[u8], trailer: Trailer) -> &[u8] {
    match (trailer, frame.last()) {
        (Trailer::Lf, Some(b'\r')) => &frame[..frame.len() - 1],
        _ => frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(max: usize, oversize: Oversize) -> FramingRules {
        FramingRules {
            trailer: Trailer::Lf,
            max_message_bytes: max,
            oversize,
        }
    }

    /// Feed `chunks` one after another and close the stream.
    fn frames_of(rules: FramingRules, chunks: &[&[u8]]) -> (Vec<String>, FramingCounts, bool) {
        let mut framer = Framer::new(rules);
        let mut out = Frames::default();
        for chunk in chunks {
            framer.push(chunk, &mut out);
        }
        let lost = framer.finish_stream(&mut out);
        let messages = out
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
        (messages, framer.counts(), lost)
    }

    #[test]
    fn non_transparent_frames_end_at_the_trailer() {
        let (messages, counts, lost) = frames_of(
            rules(100, Oversize::Truncate),
            &[b"<13>one\n<13>two\r\n\n<13>thr", b"ee\n"],
        );
        assert_eq!(messages, ["<13>one", "<13>two", "<13>three"]);
        assert_eq!(counts, FramingCounts::default());
        assert!(!lost);
    }

    #[test]
    fn octet_counting_keeps_line_breaks_inside_messages() {
        let (messages, _, lost) = frames_of(
            rules(100, Oversize::Truncate),
            &[b"11 <13>a\nb\nc d7 <13>xyz"],
        );
        assert_eq!(messages, ["<13>a\nb\nc d", "<13>xyz"]);
        assert!(!lost);
    }

    #[test]
    fn both_framings_mix_on_one_connection() {
        let (messages, _, _) = frames_of(
            rules(100, Oversize::Truncate),
            &[b"<13>lf\n7 <13>oct<13>lf again\n"],
        );
        assert_eq!(messages, ["<13>lf", "<13>oct", "<13>lf again"]);
    }

    #[test]
    fn digits_that_are_not_a_length_start_a_line() {
        let (messages, _, _) = frames_of(
            rules(100, Oversize::Truncate),
            &[b"2026-11-27T10:00:00Z host app: hi\n1234567890123 x\n"],
        );
        assert_eq!(
            messages,
            ["2026-11-27T10:00:00Z host app: hi", "1234567890123 x"]
        );
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_frames() {
        let stream: &[u8] = b"11 <13>1 a\nb c\n<14>line\r\n5 <9>xy";
        let whole = frames_of(rules(100, Oversize::Truncate), &[stream]);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let trickled = frames_of(rules(100, Oversize::Truncate), &bytes);
        assert_eq!(whole, trickled);
        assert_eq!(whole.0, ["<13>1 a\nb c", "<14>line", "<9>xy"]);
    }

    #[test]
    fn long_messages_are_truncated_or_dropped_and_counted() {
        let stream: &[u8] = b"<13>0123456789\n12 <13>abcdefgh<13>ok\n";
        let (messages, counts, _) = frames_of(rules(8, Oversize::Truncate), &[stream]);
        assert_eq!(messages, ["<13>0123", "<13>abcd", "<13>ok"]);
        assert_eq!(counts.truncated, 2);
        let (messages, counts, _) = frames_of(rules(8, Oversize::Drop), &[stream]);
        assert_eq!(messages, ["<13>ok"]);
        assert_eq!(counts.dropped_oversize, 2);
        // Split across reads, the same.
        let bytes: Vec<&[u8]> = stream.chunks(3).collect();
        let (messages, _, _) = frames_of(rules(8, Oversize::Truncate), &bytes);
        assert_eq!(messages, ["<13>0123", "<13>abcd", "<13>ok"]);
    }

    #[test]
    fn a_stream_cut_mid_frame() {
        let (messages, _, lost) =
            frames_of(rules(100, Oversize::Truncate), &[b"<13>a\n<13>no trailer"]);
        assert_eq!(messages, ["<13>a", "<13>no trailer"]);
        assert!(!lost);
        let (messages, _, lost) =
            frames_of(rules(100, Oversize::Truncate), &[b"5 <13>a20 <13>short"]);
        assert_eq!(messages, ["<13>a"]);
        assert!(lost);
    }

    #[test]
    fn nul_trailer() {
        let rules = FramingRules {
            trailer: Trailer::Nul,
            max_message_bytes: 100,
            oversize: Oversize::Truncate,
        };
        let (messages, _, _) = frames_of(rules, &[b"<13>a\nb\0<13>c\r\0"]);
        assert_eq!(messages, ["<13>a\nb", "<13>c\r"]);
    }

    #[test]
    fn garbage_becomes_messages_the_parser_refuses() {
        let (messages, _, _) = frames_of(
            rules(100, Oversize::Truncate),
            &[b"\xff\xfe garbage\n0 zero\n<13>fine\n"],
        );
        assert_eq!(messages, ["\u{fffd}\u{fffd} garbage", "0 zero", "<13>fine"]);
    }
}
