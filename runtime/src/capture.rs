//! Capture files: what the network delivered, one message per entry, so
//! that `--read-file` replays it with the same results.
//!
//! An entry is a line (the original's format, and any log file's), except
//! for a message a line cannot hold (one with a line break, or one that
//! itself looks like an octet-counted entry): that one is written as
//! `LEN SP MESSAGE LF`, RFC 6587's octet counting. A line is read as such an
//! entry only when it starts with a length, a space and `<` (a PRI) or a
//! digit, which no syslog line or traditional log line does.
//!
//! Limit: a message that has no PRI (does not start with `<`) and contains
//! line breaks is written as it is, and replays as several lines.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// Longest length prefix read as octet counting.
const MAX_LENGTH_DIGITS: usize = 9;

/// Reads the entries of a capture (or of any log file) one by one.
pub struct CaptureReader<R> {
    input: R,
    /// Lines read so far.
    line: u64,
}

/// Where an entry was in its capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPosition {
    /// Line on which it starts (1-based).
    pub line: u64,
    /// Whether it was written in octet-counted form (a message with line
    /// breaks).
    pub counted: bool,
}

impl<R: BufRead> CaptureReader<R> {
    /// A reader at the start of `input`.
    pub fn new(input: R) -> Self {
        CaptureReader { input, line: 0 }
    }

    /// The input, to ask it something between entries.
    pub fn input(&mut self) -> &mut R {
        &mut self.input
    }

    /// Read the next entry's message into `message` (replacing what it
    /// held), without its line end. Blank lines are entries too (empty
    /// messages), so that line numbers stay right. `None` at the end.
    ///
    /// An octet-counted entry cut short by the end of the file, or not
    /// followed by a line end, is returned as read: the parser then refuses
    /// it like any other malformed record.
    pub fn next_entry(&mut self, message: &mut Vec<u8>) -> io::Result<Option<EntryPosition>> {
        message.clear();
        if self.input.read_until(b'\n', message)? == 0 {
            return Ok(None);
        }
        self.line += 1;
        let start = self.line;
        let Some((length, prefix)) = counted_prefix(message) else {
            trim_line_end(message);
            return Ok(Some(EntryPosition {
                line: start,
                counted: false,
            }));
        };
        message.drain(..prefix);
        // Read whole lines until the message and its line end are in.
        while message.len() <= length {
            if self.input.read_until(b'\n', message)? == 0 {
                break;
            }
            self.line += 1;
        }
        if message.get(length..) == Some(b"\n") || message.get(length..) == Some(b"\r\n") {
            message.truncate(length);
        } else {
            trim_line_end(message);
        }
        Ok(Some(EntryPosition {
            line: start,
            counted: true,
        }))
    }
}

/// If `line` begins an octet-counted entry: its length and the bytes of
/// the prefix (digits and space).
fn counted_prefix(line: &[u8]) -> Option<(usize, usize)> {
    let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_LENGTH_DIGITS || line[0] == b'0' {
        return None;
    }
    if line.get(digits) != Some(&b' ')
        || !line
            .get(digits + 1)
            .is_some_and(|&byte| byte == b'<' || byte.is_ascii_digit())
    {
        return None;
    }
    let length = line[..digits].iter().fold(0usize, |length, digit| {
        length * 10 + usize::from(digit - b'0')
    });
    Some((length, digits + 1))
}

fn trim_line_end(line: &mut Vec<u8>) {
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
}

/// Appends messages to a capture file.
pub struct CaptureWriter {
    out: io::BufWriter<std::fs::File>,
    path: PathBuf,
    written: u64,
}

impl CaptureWriter {
    /// Create `path`, first moving an existing file of that name (and its
    /// older rotations) aside to `NAME_1.EXT`, `NAME_2.EXT`, ...
    pub fn create(path: &Path) -> io::Result<Self> {
        rotate(path)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(CaptureWriter {
            out: io::BufWriter::with_capacity(1 << 16, file),
            path: path.to_owned(),
            written: 0,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Messages written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Append one message as received.
    pub fn write(&mut self, message: &[u8]) -> io::Result<()> {
        write_entry(&mut self.out, message)?;
        self.written += 1;
        Ok(())
    }

    /// Push what is buffered to the file, so that a capture being written
    /// can be read while the server runs.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Write `message` as one entry: a line, or octet-counted when a line
/// cannot hold it (see the module's documentation for the one exception).
pub fn write_entry(out: &mut impl Write, message: &[u8]) -> io::Result<()> {
    let needs_count = counted_prefix(message).is_some()
        || (message.first() == Some(&b'<') && memchr::memchr2(b'\n', b'\r', message).is_some());
    if needs_count {
        write!(out, "{} ", message.len())?;
    }
    out.write_all(message)?;
    out.write_all(b"\n")
}

/// `NAME_INDEX.EXT` beside `path` (`NAME.EXT`).
fn rotated_name(path: &Path, index: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(extension) => format!("{stem}_{index}.{}", extension.to_string_lossy()),
        None => format!("{stem}_{index}"),
    };
    path.with_file_name(name)
}

/// Move `path` to `_1`, `_1` to `_2`, and so on, keeping every older file.
fn rotate(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let mut last = 1;
    while rotated_name(path, last).exists() {
        last += 1;
    }
    for index in (1..last).rev() {
        std::fs::rename(rotated_name(path, index), rotated_name(path, index + 1))?;
    }
    std::fs::rename(path, rotated_name(path, 1))
}

/// `YYYYMMDD.cap` for today (UTC) in `directory`: the default capture name.
pub fn default_path(directory: &Path) -> PathBuf {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    let (year, month, day) = crate::record::time::civil_from_days(seconds.div_euclid(86_400));
    directory.join(format!("{year:04}{month:02}{day:02}.cap"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &[u8]) -> Vec<(u64, bool, String)> {
        let mut reader = CaptureReader::new(text);
        let mut message = Vec::new();
        let mut out = Vec::new();
        while let Some(position) = reader.next_entry(&mut message).expect("in memory") {
            out.push((
                position.line,
                position.counted,
                String::from_utf8_lossy(&message).into_owned(),
            ));
        }
        out
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads() {
        let messages: [&[u8]; 7] = [
            b"<13>1 - h a - - - plain",
            b"<13>1 - h a - - - two\nlines",
            b"12 <13>looks counted",
            b"<13>ends in cr\r",
            b"",
            b"<13>\n\n\n",
            b"5 7\n8",
        ];
        let mut file = Vec::new();
        for message in messages {
            write_entry(&mut file, message).expect("in memory");
        }
        let read = entries(&file);
        let texts: Vec<&str> = read.iter().map(|(_, _, text)| text.as_str()).collect();
        assert_eq!(
            texts,
            messages
                .iter()
                .map(|m| std::str::from_utf8(m).expect("ascii"))
                .collect::<Vec<_>>()
        );
        let lines: Vec<u64> = read.iter().map(|(line, _, _)| *line).collect();
        assert_eq!(lines, [1, 2, 4, 5, 6, 7, 11]);
        let counted: Vec<bool> = read.iter().map(|(_, counted, _)| *counted).collect();
        assert_eq!(counted, [false, true, true, true, false, true, true]);
    }

    #[test]
    fn ordinary_lines_are_entries_as_they_are() {
        assert_eq!(
            entries(b"Nov 27 10:00:00 h sshd[1]: x\r\n2026-11-27T10:00:00Z h a: y\n\n12 x"),
            [
                (1, false, "Nov 27 10:00:00 h sshd[1]: x".to_owned()),
                (2, false, "2026-11-27T10:00:00Z h a: y".to_owned()),
                (3, false, String::new()),
                (4, false, "12 x".to_owned()),
            ]
        );
    }

    #[test]
    fn a_counted_entry_cut_short_is_returned_as_read() {
        assert_eq!(
            entries(b"40 <13>short\nline"),
            [(1, true, "<13>short\nline".to_owned())]
        );
    }

    #[test]
    fn rotation_keeps_every_older_file() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("20261127.cap");
        for round in 0..3 {
            let mut writer = CaptureWriter::create(&path).expect("create");
            writer
                .write(format!("<13>{round}").as_bytes())
                .expect("write");
            writer.flush().expect("flush");
        }
        let read = |name: &str| std::fs::read_to_string(directory.path().join(name)).ok();
        assert_eq!(read("20261127.cap").as_deref(), Some("<13>2\n"));
        assert_eq!(read("20261127_1.cap").as_deref(), Some("<13>1\n"));
        assert_eq!(read("20261127_2.cap").as_deref(), Some("<13>0\n"));
        assert_eq!(read("20261127_3.cap"), None);
    }
}
