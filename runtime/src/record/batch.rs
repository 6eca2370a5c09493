//! Packing parsed records into the flat batch that crosses into modules:
//! each line's text is copied once, and every field is a span into it.

use super::Parsed;
use crate::receipts::Receipts;
use crate::types::{RecordBatch, Timestamp};

/// Text fields per record in [`RecordBatch::spans`], each a (start, length)
/// pair: hostname, app-name, proc-id, msg-id, structured data, message, peer.
pub const SPANS_PER_RECORD: usize = 7;

/// Collects records into a [`RecordBatch`], reusing its buffers from batch
/// to batch.
pub struct BatchBuilder {
    batch: RecordBatch,
    capacity: usize,
    latest: Option<Timestamp>,
    /// Receipts of messages in (or decided with) this batch, delivered
    /// once it is safe (see [`crate::receipts`]).
    receipts: Receipts,
    /// Followed files and the journal: how far each was read once this
    /// batch's records are processed (`follow.rs`, `journal.rs`), for the
    /// checkpoint after it.
    marks: Option<crate::state_store::InputMarks>,
    /// On a worker: what the stream says of the batch (`stream/`).
    stream: StreamParts,
}

/// What a worker's batch carries besides records (`stream/exchange.rs`).
#[derive(Debug, Default)]
pub struct StreamParts {
    /// Each record's number at its front-end, in record order: with its
    /// time, its place in the order keyed messages are received in.
    pub origins: Vec<u64>,
    /// A front-end's marker: every record up to it is published, and the
    /// partition has them all once this batch is processed.
    pub marker: Option<crate::stream::exchange::Key>,
    /// Keyed messages for this partition's instances, released in order:
    /// (instance, message).
    pub keyed: Vec<(String, crate::host::KeyedMessage)>,
}

impl BatchBuilder {
    /// A builder whose batches hold up to `capacity` records.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        BatchBuilder {
            batch: RecordBatch {
                text: String::with_capacity(capacity * 160),
                spans: Vec::with_capacity(capacity * SPANS_PER_RECORD * 2),
                seconds: Vec::with_capacity(capacity),
                nanoseconds: Vec::with_capacity(capacity),
                offset_minutes: Vec::with_capacity(capacity),
                priorities: Vec::with_capacity(capacity),
                positions: Vec::with_capacity(capacity),
            },
            capacity,
            latest: None,
            receipts: Receipts::default(),
            marks: None,
            stream: StreamParts::default(),
        }
    }

    /// What the stream says of the batch (a worker's).
    pub fn stream_parts(&self) -> &StreamParts {
        &self.stream
    }

    /// The same, to fill in.
    pub fn stream_parts_mut(&mut self) -> &mut StreamParts {
        &mut self.stream
    }

    /// Whether the batch carries a marker or keyed messages (which must
    /// reach the modules even without records).
    pub fn has_stream_parts(&self) -> bool {
        self.stream.marker.is_some() || !self.stream.keyed.is_empty()
    }

    /// Keyed messages to hand this partition's instances with the batch.
    pub fn keyed_mut(&mut self) -> &mut Vec<(String, crate::host::KeyedMessage)> {
        &mut self.stream.keyed
    }

    /// Say how far the inputs are read once this batch is.
    pub fn set_marks(&mut self, marks: crate::state_store::InputMarks) {
        self.marks = Some(marks);
    }

    /// Take the batch's marks, once its records are processed.
    pub fn take_marks(&mut self) -> Option<crate::state_store::InputMarks> {
        self.marks.take()
    }

    /// The receipts that travel with this batch: a message's receipt is
    /// added to the batch that carries the message (or, for one that is
    /// not passed on, to the batch being filled when it was decided).
    pub fn receipts_mut(&mut self) -> &mut Receipts {
        &mut self.receipts
    }

    /// Take the batch's receipts, once its records are processed.
    pub fn take_receipts(&mut self) -> Receipts {
        std::mem::take(&mut self.receipts)
    }

    /// Add a record parsed from `line` (its fields must borrow from `line`),
    /// received from `peer` (empty for files).
    pub fn push(&mut self, position: u64, line: &str, parsed: &Parsed<'_>, peer: &str) {
        let batch = &mut self.batch;
        let base = batch.text.len();
        batch.text.push_str(line);
        for field in parsed.text_fields() {
            let (start, len) = span_in(line, field, base);
            batch.spans.extend_from_slice(&[start, len]);
        }
        batch.spans.push(to_u32(batch.text.len()));
        batch.spans.push(to_u32(peer.len()));
        batch.text.push_str(peer);
        batch.seconds.push(parsed.timestamp.seconds);
        batch.nanoseconds.push(parsed.timestamp.nanoseconds);
        batch.offset_minutes.push(parsed.timestamp.offset_minutes);
        batch
            .priorities
            .push(parsed.facility << 3 | parsed.severity);
        batch.positions.push(position);
        self.latest = Some(parsed.timestamp);
    }

    /// Add a record whose fields were found before (`packed.rs`): its
    /// `text` (line and peer) copied, each (start, length) pair of `spans`
    /// counted from the start of `text`.
    pub(crate) fn push_fields(
        &mut self,
        time: Timestamp,
        priority: u8,
        position: u64,
        text: &str,
        spans: impl Iterator<Item = (u32, u32)>,
    ) {
        let batch = &mut self.batch;
        let base = to_u32(batch.text.len());
        batch.text.push_str(text);
        for (start, len) in spans {
            // An empty field is (0, 0), as `push` makes it.
            batch
                .spans
                .extend_from_slice(&[if len > 0 { start + base } else { 0 }, len]);
        }
        batch.seconds.push(time.seconds);
        batch.nanoseconds.push(time.nanoseconds);
        batch.offset_minutes.push(time.offset_minutes);
        batch.priorities.push(priority);
        batch.positions.push(position);
        self.latest = Some(time);
    }

    /// Whether the batch reached its capacity and should be sent.
    pub fn is_full(&self) -> bool {
        self.batch.positions.len() >= self.capacity
    }

    /// Number of records waiting.
    pub fn len(&self) -> usize {
        self.batch.positions.len()
    }

    /// Whether no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.batch.positions.is_empty()
    }

    /// The batch as built so far.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// Time of the latest record pushed since the builder was made.
    pub fn latest_time(&self) -> Option<Timestamp> {
        self.latest
    }

    /// Empty the batch, keeping its buffers. Receipts still held (a batch
    /// that was never processed, as when a run aborts) are dropped: their
    /// senders send those messages again.
    pub fn clear(&mut self) {
        self.receipts = Receipts::default();
        self.marks = None;
        self.stream.origins.clear();
        self.stream.marker = None;
        self.stream.keyed.clear();
        let batch = &mut self.batch;
        batch.text.clear();
        batch.spans.clear();
        batch.seconds.clear();
        batch.nanoseconds.clear();
        batch.offset_minutes.clear();
        batch.priorities.clear();
        batch.positions.clear();
    }
}

/// A batch of the one record at `index` of `batch`, its text copied: to
/// retry a failed batch one record at a time.
pub fn single_record(batch: &RecordBatch, index: usize) -> RecordBatch {
    records(batch, index..index + 1)
}

/// A batch of the records in `range` of `batch`, their text copied: to
/// hand modules the records before a timer tick and those after it apart.
pub fn records(batch: &RecordBatch, range: std::ops::Range<usize>) -> RecordBatch {
    let count = batch.seconds.len();
    let range = range.start.min(count)..range.end.min(count);
    let spans = batch
        .spans
        .get(range.start * SPANS_PER_RECORD * 2..range.end * SPANS_PER_RECORD * 2)
        .unwrap_or(&[]);
    let mut text = String::new();
    let mut rebased = Vec::with_capacity(spans.len());
    for pair in spans.chunks_exact(2) {
        let (start, len) = (pair[0] as usize, pair[1] as usize);
        let field = batch.text.get(start..start + len).unwrap_or("");
        rebased.push(to_u32(text.len()));
        rebased.push(to_u32(field.len()));
        text.push_str(field);
    }
    RecordBatch {
        text,
        spans: rebased,
        seconds: part(&batch.seconds, &range),
        nanoseconds: part(&batch.nanoseconds, &range),
        offset_minutes: part(&batch.offset_minutes, &range),
        priorities: part(&batch.priorities, &range),
        positions: part(&batch.positions, &range),
    }
}

/// The values in `range`, copied.
fn part<T: Copy>(values: &[T], range: &std::ops::Range<usize>) -> Vec<T> {
    values.get(range.clone()).unwrap_or(&[]).to_vec()
}

/// Batches are far below 4 GiB; saturate rather than wrap if one is not.
pub(super) fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Where `field` (a sub-slice of `line`, or an empty literal) lies in the
/// batch text, given that `line` starts at `base`.
fn span_in(line: &str, field: &str, base: usize) -> (u32, u32) {
    if field.is_empty() {
        return (0, 0);
    }
    let offset = (field.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    debug_assert!(
        offset + field.len() <= line.len(),
        "field must borrow from its line"
    );
    (to_u32(base + offset), to_u32(field.len()))
}
