//! How records travel in the stream: a front-end parses once, and a
//! message carries its partition's records with their fields already
//! found, so that a worker puts them into its batch without parsing again
//! (and without the year and UTC offset of RFC 3164 lines being guessed
//! twice, perhaps differently).
//!
//! A message is [`FORMAT`] followed by records, each:
//!
//! ```text
//! seconds i64 | nanoseconds u32 | offset_minutes i16 | priority u8
//! | origin u64 (the record's number at its front-end)
//! | 7 × (length u32, UTF-8 bytes): hostname, app-name, proc-id, msg-id,
//!   structured data, message, peer
//! ```
//!
//! all little-endian. The fields are those of a [`RecordBatch`] record, in
//! the order of its spans. Or it is a front-end's **marker**, [`MARKER`]
//! then `seconds i64 | nanoseconds u32 | origin u64`: every record up to
//! that one (by time, then number) is published, so a partition that has
//! read up to the marker has all of them (`exchange.rs`).

use crate::record::BatchBuilder;
use crate::record::SPANS_PER_RECORD;
use crate::types::{RecordBatch, Timestamp};

/// The first byte of every message of records: the layout's version, so
/// that a worker refuses what a newer front-end wrote instead of
/// misreading it.
pub const FORMAT: u8 = 2;

/// The first byte of a marker.
pub const MARKER: u8 = 0x80;

/// Bytes of a record before its fields.
const FIXED_BYTES: usize = 8 + 4 + 2 + 1 + 8;

/// What a message held.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// This many records, now in the batch.
    Records(usize),
    /// A marker: every record up to (seconds, nanoseconds, origin) is
    /// published.
    Marker(crate::stream::exchange::Key),
}

/// A marker saying that every record up to the one of `time` numbered
/// `origin` is published.
pub fn marker(time: Timestamp, origin: u64) -> Vec<u8> {
    let mut out = vec![MARKER];
    out.extend_from_slice(&time.seconds.to_le_bytes());
    out.extend_from_slice(&time.nanoseconds.to_le_bytes());
    out.extend_from_slice(&origin.to_le_bytes());
    out
}

/// Why a message's records could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The message is empty.
    #[error("the message is empty")]
    Empty,
    /// The message starts with another layout's version.
    #[error(
        "the message is in layout {0}, and this correlator reads layout {FORMAT} (upgrade the workers before the front-ends)"
    )]
    Format(u8),
    /// The message ends inside a record.
    #[error("record {index} is cut short: what starts at byte {offset} runs past the end")]
    Truncated {
        /// Which record of the message.
        index: usize,
        /// Where the part that runs past the end starts.
        offset: usize,
    },
    /// A field is not UTF-8.
    #[error("record {index} has a field that is not UTF-8")]
    NotUtf8 {
        /// Which record of the message.
        index: usize,
    },
}

/// The bytes of a message that will carry records: [`FORMAT`] alone.
pub fn start_message(out: &mut Vec<u8>) {
    out.clear();
    out.push(FORMAT);
}

/// Append record `index` of `batch`, numbered `origin` by its front-end,
/// to a message begun by [`start_message`].
pub fn encode_record(batch: &RecordBatch, index: usize, origin: u64, out: &mut Vec<u8>) {
    let time = record_time(batch, index);
    out.extend_from_slice(&time.seconds.to_le_bytes());
    out.extend_from_slice(&time.nanoseconds.to_le_bytes());
    out.extend_from_slice(&time.offset_minutes.to_le_bytes());
    out.push(batch.priorities.get(index).copied().unwrap_or(0));
    out.extend_from_slice(&origin.to_le_bytes());
    for field in 0..SPANS_PER_RECORD {
        let text = field_text(batch, index, field);
        // A field is at most a message long, far below 4 GiB.
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

/// The hostname of record `index` of `batch`: what picks its partition.
pub fn hostname(batch: &RecordBatch, index: usize) -> &str {
    field_text(batch, index, 0)
}

/// Record `index`'s time.
pub fn record_time(batch: &RecordBatch, index: usize) -> Timestamp {
    Timestamp {
        seconds: batch.seconds.get(index).copied().unwrap_or(0),
        nanoseconds: batch.nanoseconds.get(index).copied().unwrap_or(0),
        offset_minutes: batch.offset_minutes.get(index).copied().unwrap_or(0),
    }
}

/// Text field `field` (in span order) of record `index`.
fn field_text(batch: &RecordBatch, index: usize, field: usize) -> &str {
    let at = (index * SPANS_PER_RECORD + field) * 2;
    match batch.spans.get(at..at + 2) {
        Some(&[start, len]) => batch
            .text
            .get(start as usize..start as usize + len as usize)
            .unwrap_or(""),
        _ => "",
    }
}

/// Add every record of `message` to `builder`, each at `position` (the
/// message's sequence in the stream), or read its marker. `scratch` is
/// reused between calls. On an error, the records before the bad one are
/// in `builder`.
pub fn decode_records(
    message: &[u8],
    position: u64,
    builder: &mut BatchBuilder,
    scratch: &mut String,
) -> Result<Decoded, CodecError> {
    let (&format, mut rest) = message.split_first().ok_or(CodecError::Empty)?;
    if format == MARKER {
        let truncated = CodecError::Truncated {
            index: 0,
            offset: 1,
        };
        let (seconds, rest) = rest.split_first_chunk::<8>().ok_or(truncated.clone())?;
        let (nanoseconds, rest) = rest.split_first_chunk::<4>().ok_or(truncated.clone())?;
        let (origin, _) = rest.split_first_chunk::<8>().ok_or(truncated)?;
        return Ok(Decoded::Marker(crate::stream::exchange::Key {
            seconds: i64::from_le_bytes(*seconds),
            nanoseconds: u32::from_le_bytes(*nanoseconds),
            origin: u64::from_le_bytes(*origin),
            partition: 0,
            index: 0,
        }));
    }
    if format != FORMAT {
        return Err(CodecError::Format(format));
    }
    let mut index = 0;
    let mut spans = [(0u32, 0u32); SPANS_PER_RECORD];
    while !rest.is_empty() {
        let truncated = |rest: &[u8]| CodecError::Truncated {
            index,
            offset: message.len() - rest.len(),
        };
        let Some((fixed, after)) = rest.split_first_chunk::<FIXED_BYTES>() else {
            return Err(truncated(rest));
        };
        let seconds = i64::from_le_bytes(fixed[0..8].try_into().unwrap_or_default());
        let nanoseconds = u32::from_le_bytes(fixed[8..12].try_into().unwrap_or_default());
        let offset_minutes = i16::from_le_bytes(fixed[12..14].try_into().unwrap_or_default());
        let priority = fixed[14];
        let origin = u64::from_le_bytes(fixed[15..23].try_into().unwrap_or_default());
        rest = after;
        scratch.clear();
        for span in &mut spans {
            let Some((len, after)) = rest.split_first_chunk::<4>() else {
                return Err(truncated(rest));
            };
            let len = u32::from_le_bytes(*len) as usize;
            let Some((bytes, after)) = after.split_at_checked(len) else {
                return Err(truncated(after));
            };
            let text = std::str::from_utf8(bytes).map_err(|_| CodecError::NotUtf8 { index })?;
            let start = u32::try_from(scratch.len()).unwrap_or(u32::MAX);
            *span = (start, u32::try_from(len).unwrap_or(u32::MAX));
            scratch.push_str(text);
            rest = after;
        }
        let time = Timestamp {
            seconds,
            nanoseconds,
            offset_minutes,
        };
        builder.push_fields(time, priority, position, scratch, spans.iter().copied());
        builder.stream_parts_mut().origins.push(origin);
        index += 1;
    }
    Ok(Decoded::Records(index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Origin, ParseCounts, TraditionalDefaults};

    /// A batch of `lines` as a replay makes it, with `peer` for each.
    fn batch_of(lines: &[&str], peer: &str) -> BatchBuilder {
        let mut builder = BatchBuilder::new(16);
        let mut counts = ParseCounts::default();
        for (number, line) in lines.iter().enumerate() {
            counts.take(
                &mut builder,
                number as u64 + 1,
                line,
                Origin::Network { peer },
                &TraditionalDefaults {
                    year: 2024,
                    offset_minutes: 0,
                },
            );
        }
        builder
    }

    const LINES: [&str; 3] = [
        "<38>1 2024-03-01T10:00:00.250+01:00 web1 sshd 4242 ID7 [x@1 a=\"b\"] Failed password for root from 192.0.2.7 port 22 ssh2",
        "<86>Mar  1 10:00:01 db2 sshd[17]: Accepted publickey for ops from 198.51.100.2 port 50022 ssh2",
        "<13>1 2024-03-01T09:00:02Z - - - - - \u{feff}ünïcode",
    ];

    #[test]
    fn records_come_out_of_a_message_as_they_went_in() {
        let sent = batch_of(&LINES, "192.0.2.1:514");
        let mut message = Vec::new();
        start_message(&mut message);
        for index in 0..LINES.len() {
            encode_record(sent.batch(), index, 100 + index as u64, &mut message);
        }
        let mut received = BatchBuilder::new(16);
        let mut scratch = String::new();
        let count = decode_records(&message, 77, &mut received, &mut scratch);
        let received_builder = std::mem::replace(&mut received, BatchBuilder::new(1));
        let received = &received_builder;
        assert_eq!(count, Ok(Decoded::Records(3)));
        let (sent, received) = (sent.batch(), received.batch());
        for index in 0..LINES.len() {
            for field in 0..SPANS_PER_RECORD {
                assert_eq!(
                    field_text(received, index, field),
                    field_text(sent, index, field),
                    "record {index} field {field}"
                );
            }
            assert_eq!(record_time(received, index), record_time(sent, index));
            assert_eq!(received.priorities[index], sent.priorities[index]);
        }
        assert_eq!(hostname(received, 0), "web1");
        assert_eq!(hostname(received, 1), "db2");
        assert_eq!(field_text(received, 2, 5), "ünïcode");
        assert_eq!(field_text(received, 1, 6), "192.0.2.1:514");
        assert_eq!(received.positions, [77, 77, 77]);
        let mut received = received_builder;
        assert_eq!(received.stream_parts().origins, [100, 101, 102]);
        let time = Timestamp {
            seconds: 5,
            nanoseconds: 6,
            offset_minutes: 0,
        };
        assert_eq!(
            decode_records(&marker(time, 7), 78, &mut received, &mut scratch),
            Ok(Decoded::Marker(crate::stream::exchange::Key::record(
                time, 7, 0
            )))
        );
    }

    #[test]
    fn a_bad_message_is_refused_with_what_is_wrong() {
        let sent = batch_of(&LINES[..1], "");
        let mut message = Vec::new();
        start_message(&mut message);
        encode_record(sent.batch(), 0, 1, &mut message);
        let mut builder = BatchBuilder::new(4);
        let mut scratch = String::new();
        assert_eq!(
            decode_records(&[], 1, &mut builder, &mut scratch),
            Err(CodecError::Empty)
        );
        assert_eq!(
            decode_records(&[3, 0, 0], 1, &mut builder, &mut scratch),
            Err(CodecError::Format(3))
        );
        // The last field (the peer, empty) is its length alone: cut
        // inside it.
        let cut = message.len() - 3;
        assert_eq!(
            decode_records(&message[..cut], 1, &mut builder, &mut scratch),
            Err(CodecError::Truncated {
                index: 0,
                offset: message.len() - 4
            })
        );
        assert_eq!(
            decode_records(&message[..10], 1, &mut builder, &mut scratch),
            Err(CodecError::Truncated {
                index: 0,
                offset: 1
            })
        );
        let mut not_utf8 = message.clone();
        // The hostname's first byte.
        not_utf8[1 + FIXED_BYTES + 4] = 0xff;
        assert_eq!(
            decode_records(&not_utf8, 1, &mut builder, &mut scratch),
            Err(CodecError::NotUtf8 { index: 0 })
        );
        assert!(builder.is_empty());
    }
}
