//! Syslog records: parsing RFC 5424 and RFC 3164 lines into fields, and
//! packing them into the flat batches that cross into modules.
//!
//! Parsing borrows from the line: a parsed record is a set of `&str` views,
//! and a batch stores each line once with spans into it.

mod batch;
mod intake;
mod packed;
mod rfc3164;
mod rfc5424;
pub mod time;

pub use batch::{BatchBuilder, SPANS_PER_RECORD, StreamParts, records, single_record};
pub use intake::{Origin, ParseCounts};
pub use packed::PackedRecords;

use crate::types::Timestamp;
use thiserror::Error;

/// A record as parsed, borrowing from its line. Absent fields are empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<'a> {
    /// When the record says it was written, in the offset it was written in.
    pub timestamp: Timestamp,
    /// Syslog facility (0-23).
    pub facility: u8,
    /// Syslog severity (0 emergency .. 7 debug).
    pub severity: u8,
    /// HOSTNAME.
    pub hostname: &'a str,
    /// APP-NAME (RFC 5424) or the tag (RFC 3164).
    pub app_name: &'a str,
    /// PROCID, e.g. the `2540460` of `sshd[2540460]`.
    pub proc_id: &'a str,
    /// MSGID (RFC 5424 only).
    pub msg_id: &'a str,
    /// STRUCTURED-DATA as written, escapes intact (RFC 5424 only).
    pub structured_data: &'a str,
    /// MSG, without a leading BOM.
    pub message: &'a str,
}

impl<'a> Parsed<'a> {
    /// The text fields in the order of a batch's spans (before the peer):
    /// hostname, app-name, proc-id, msg-id, structured data, message.
    pub fn text_fields(&self) -> [&'a str; 6] {
        [
            self.hostname,
            self.app_name,
            self.proc_id,
            self.msg_id,
            self.structured_data,
            self.message,
        ]
    }
}

/// Why a line is not a syslog record.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but white space.
    #[error("empty line")]
    Empty,
    /// `<PRI>` missing its `>`, not a number, or above 191.
    #[error("bad PRI {0:?}: expected <0> to <191>")]
    BadPri(String),
    /// An RFC 3339 timestamp that is malformed or names no real time.
    #[error("bad RFC 5424 timestamp {0:?}")]
    BadTimestamp(String),
    /// A traditional timestamp that is malformed or names no real time.
    #[error("bad RFC 3164 timestamp {0:?}: expected \"Mmm dd hh:mm:ss\"")]
    BadTraditionalTimestamp(String),
    /// A date the month does not have (`Nov 31`, `Feb 29` of a common
    /// year): a sender's clock or a year assumed wrongly.
    #[error("impossible date {date} {year}: the month has {days} days")]
    ImpossibleDate {
        /// The date as `Mmm d`.
        date: String,
        /// The year it was taken to be in.
        year: i64,
        /// Days the month has that year.
        days: u32,
    },
    /// The line ends before a required field.
    #[error("record ends after {0}")]
    Truncated(&'static str),
    /// Structured data that does not close, at this byte of it.
    #[error("bad structured data at byte {0}")]
    BadStructuredData(usize),
}

/// What RFC 3164 lines leave out: they carry neither a year nor a time zone.
#[derive(Debug, Clone, Copy)]
pub struct TraditionalDefaults {
    /// The year to assume.
    pub year: i64,
    /// The UTC offset to assume, in minutes east.
    pub offset_minutes: i16,
}

impl TraditionalDefaults {
    /// This year, in UTC: what RFC 3164 lines get when nothing is
    /// configured.
    pub fn current_year_utc() -> Self {
        TraditionalDefaults {
            year: time::current_year(),
            offset_minutes: 0,
        }
    }
}

/// Parse one line, recognising RFC 5424 (`<PRI>1 ...`) and traditional
/// RFC 3164 / `auth.log` lines (with or without PRI) per line.
pub fn parse<'a>(line: &'a str, defaults: &TraditionalDefaults) -> Result<Parsed<'a>, ParseError> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let (pri, rest) = match line.strip_prefix('<') {
        Some(after) => {
            let end = after
                .bytes()
                .take(4)
                .position(|byte| byte == b'>')
                .ok_or_else(|| ParseError::BadPri(line.chars().take(6).collect()))?;
            let digits = &after[..end];
            let pri: u8 = digits
                .parse()
                .ok()
                .filter(|&pri| {
                    pri <= 191 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .ok_or_else(|| ParseError::BadPri(format!("<{digits}>")))?;
            (Some(pri), &after[end + 1..])
        }
        None => (None, line),
    };
    // RFC 5424 puts a version number (1) right after PRI.
    let is_5424 = pri.is_some() && {
        let b = rest.as_bytes();
        b.first().is_some_and(u8::is_ascii_digit)
            && (b.get(1) == Some(&b' ')
                || (b.get(1).is_some_and(u8::is_ascii_digit) && b.get(2) == Some(&b' ')))
    };
    // Without PRI, syslog's default is user.notice (RFC 3164 section 4.3.3).
    let pri = pri.unwrap_or(13);
    let (facility, severity) = (pri >> 3, pri & 7);
    if is_5424 {
        rfc5424::parse(rest, facility, severity)
    } else {
        rfc3164::parse(rest, facility, severity, defaults)
    }
}

#[cfg(test)]
mod tests;
