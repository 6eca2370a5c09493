//! Packing parsed records into the flat batch that crosses into modules:
//! each line's text is copied once, and every field is a span into it.

use super::Parsed;
use crate::types::{RecordBatch, RecordHeader, Span, Timestamp};

/// Collects records into a [`RecordBatch`], reusing its buffers from batch
/// to batch.
pub struct BatchBuilder {
    batch: RecordBatch,
    capacity: usize,
    latest: Option<Timestamp>,
}

impl BatchBuilder {
    /// A builder whose batches hold up to `capacity` records.
    pub fn new(capacity: usize) -> Self {
        BatchBuilder {
            batch: RecordBatch {
                text: Vec::with_capacity(capacity * 160),
                records: Vec::with_capacity(capacity),
            },
            capacity: capacity.max(1),
            latest: None,
        }
    }

    /// Add a record parsed from `line` (its fields must borrow from `line`),
    /// received from `peer` (empty for files).
    pub fn push(&mut self, position: u64, line: &str, parsed: &Parsed<'_>, peer: &str) {
        let base = self.batch.text.len();
        self.batch.text.extend_from_slice(line.as_bytes());
        let span = |field: &str| span_in(line, field, base);
        let peer_span = Span {
            start: to_u32(self.batch.text.len()),
            len: to_u32(peer.len()),
        };
        self.batch.text.extend_from_slice(peer.as_bytes());
        self.batch.records.push(RecordHeader {
            position,
            timestamp: parsed.timestamp,
            facility: parsed.facility,
            severity: parsed.severity,
            hostname: span(parsed.hostname),
            app_name: span(parsed.app_name),
            proc_id: span(parsed.proc_id),
            msg_id: span(parsed.msg_id),
            structured_data: span(parsed.structured_data),
            message: span(parsed.message),
            peer: peer_span,
        });
        self.latest = Some(parsed.timestamp);
    }

    /// Whether the batch reached its capacity and should be sent.
    pub fn is_full(&self) -> bool {
        self.batch.records.len() >= self.capacity
    }

    /// Number of records waiting.
    pub fn len(&self) -> usize {
        self.batch.records.len()
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.batch.records.is_empty()
    }

    /// The batch as built so far.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// Time of the latest record pushed since the builder was made.
    pub fn latest_time(&self) -> Option<Timestamp> {
        self.latest
    }

    /// Empty the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.batch.text.clear();
        self.batch.records.clear();
    }
}

/// Batches are far below 4 GiB; saturate rather than wrap if one is not.
fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Where `field` (a sub-slice of `line`, or an empty literal) lies in the
/// batch text, given that `line` starts at `base`.
fn span_in(line: &str, field: &str, base: usize) -> Span {
    if field.is_empty() {
        return Span { start: 0, len: 0 };
    }
    let offset = (field.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    debug_assert!(offset + field.len() <= line.len(), "field must borrow from its line");
    Span {
        start: to_u32(base + offset),
        len: to_u32(field.len()),
    }
}
