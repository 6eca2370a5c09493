//! Parsed records kept in arrival order, each laid out in one stretch: to
//! wait, and leave one at a time.
//!
//! Records that wait to be put in order (`listen/reorder.rs`) leave in an
//! order that jumps from sender to sender, one record at a time. Kept as
//! batches (a column per field), each record taken cost a cache miss in
//! every column of its sender's batch. Packed, a record is its header (its
//! time, priority, position and field spans, in one stretch) and its text,
//! each read in order. The text stays a `str` (it is checked once, when the line is
//! decoded), so the header lies apart from it.

use super::batch::to_u32;
use super::{BatchBuilder, Parsed, SPANS_PER_RECORD};
use crate::types::Timestamp;

/// Bytes of a record's header: `seconds` (i64), `nanoseconds` (u32),
/// `offset_minutes` (i16), the priority (u8), a spare byte, `position`
/// (u64), the text's length (u32), then the [`SPANS_PER_RECORD`] (start,
/// length) pairs (u32 each, starts counted from the record's text, an
/// absent field `(0, 0)`). Little-endian.
pub const HEADER_BYTES: usize = 28 + SPANS_PER_RECORD * 2 * 4;

/// Records in arrival order, taken from the front.
#[derive(Debug, Default)]
pub struct PackedRecords {
    headers: Vec<u8>,
    /// The records' lines and peers, back to back.
    text: String,
    /// Where the oldest record not yet taken starts, in `headers` and
    /// `text`.
    header_at: usize,
    text_at: usize,
}

impl PackedRecords {
    /// Room for about `text_bytes` of records without growing.
    pub fn with_capacity(text_bytes: usize) -> Self {
        PackedRecords {
            headers: Vec::with_capacity(text_bytes),
            text: String::with_capacity(text_bytes),
            header_at: 0,
            text_at: 0,
        }
    }

    /// Whether every record pushed has been taken.
    pub fn is_drained(&self) -> bool {
        self.header_at >= self.headers.len()
    }

    /// Whether a record of `text_bytes` (line and peer) fits without
    /// growing a buffer.
    pub fn has_room(&self, text_bytes: usize) -> bool {
        self.headers.len() + HEADER_BYTES <= self.headers.capacity()
            && self.text.len() + text_bytes <= self.text.capacity()
    }

    /// Bytes of text it has room for, taken or not.
    pub fn text_capacity(&self) -> usize {
        self.text.capacity()
    }

    /// Forget every record, keeping the buffers.
    pub fn clear(&mut self) {
        self.headers.clear();
        self.text.clear();
        self.header_at = 0;
        self.text_at = 0;
    }

    /// Add a record parsed from `line` (its fields must borrow from
    /// `line`), received from `peer`; returns the bytes it takes.
    pub fn push(&mut self, position: u64, line: &str, parsed: &Parsed<'_>, peer: &str) -> usize {
        let out = &mut self.headers;
        let time = parsed.timestamp;
        out.extend_from_slice(&time.seconds.to_le_bytes());
        out.extend_from_slice(&time.nanoseconds.to_le_bytes());
        out.extend_from_slice(&time.offset_minutes.to_le_bytes());
        out.push(parsed.facility << 3 | parsed.severity);
        out.push(0);
        out.extend_from_slice(&position.to_le_bytes());
        out.extend_from_slice(&to_u32(line.len() + peer.len()).to_le_bytes());
        for field in parsed.text_fields() {
            let (start, length) = if field.is_empty() {
                (0, 0)
            } else {
                let offset = (field.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
                (to_u32(offset), to_u32(field.len()))
            };
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&length.to_le_bytes());
        }
        out.extend_from_slice(&to_u32(line.len()).to_le_bytes());
        out.extend_from_slice(&to_u32(peer.len()).to_le_bytes());
        self.text.push_str(line);
        self.text.push_str(peer);
        HEADER_BYTES + line.len() + peer.len()
    }

    /// The header of the oldest record not yet taken.
    fn front(&self) -> Option<&[u8; HEADER_BYTES]> {
        self.headers.get(self.header_at..)?.first_chunk()
    }

    /// The time of the oldest record not yet taken, as an order key.
    pub fn front_time(&self) -> Option<(i64, u32)> {
        let header = self.front()?;
        Some((seconds(header), nanoseconds(header)))
    }

    /// Move the oldest record not yet taken to `out`; returns the bytes it
    /// took here (as [`PackedRecords::push`] said), or `None` if there is
    /// none.
    pub fn take_into(&mut self, out: &mut BatchBuilder) -> Option<usize> {
        let header = self.front()?;
        let length = u32::from_le_bytes(*header[24..].first_chunk()?) as usize;
        let text = self.text.get(self.text_at..self.text_at + length)?;
        let time = Timestamp {
            seconds: seconds(header),
            nanoseconds: nanoseconds(header),
            offset_minutes: i16::from_le_bytes([header[12], header[13]]),
        };
        let position = u64::from_le_bytes(*header[16..].first_chunk()?);
        let spans = header[28..].chunks_exact(8).map(|pair| {
            let word = |at: usize| {
                u32::from_le_bytes([pair[at], pair[at + 1], pair[at + 2], pair[at + 3]])
            };
            (word(0), word(4))
        });
        out.push_fields(time, header[14], position, text, spans);
        self.header_at += HEADER_BYTES;
        self.text_at += length;
        Some(HEADER_BYTES + length)
    }
}

fn seconds(header: &[u8; HEADER_BYTES]) -> i64 {
    let [a, b, c, d, e, f, g, h, ..] = *header;
    i64::from_le_bytes([a, b, c, d, e, f, g, h])
}

fn nanoseconds(header: &[u8; HEADER_BYTES]) -> u32 {
    u32::from_le_bytes([header[8], header[9], header[10], header[11]])
}
