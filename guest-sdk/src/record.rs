//! Records as `&str` views over the host's flat batch buffer.

use crate::__bindings::RecordBatch;
use crate::Timestamp;

use std::cell::Cell;

thread_local! {
    /// Time of the record the module is looking at, for the events it
    /// dispatches meanwhile.
    static CURRENT_TIME: Cell<Option<Timestamp>> = const { Cell::new(None) };
    /// Its index in the batch, and whether the host was told it (before
    /// the record's first event), so that the host can hand every module's
    /// events on in record order.
    static CURRENT_RECORD: Cell<Option<(u32, bool)>> = const { Cell::new(None) };
}

/// Tell the host which record triggers the event about to be dispatched,
/// once per record that dispatches any.
pub(crate) fn announce_record() {
    CURRENT_RECORD.with(|current| {
        if let Some((index, false)) = current.get() {
            crate::sys::events::triggered_by(index);
            current.set(Some((index, true)));
        }
    });
}

/// Time of the record being processed, if any.
pub(crate) fn current_time() -> Option<Timestamp> {
    CURRENT_TIME.with(Cell::get)
}

/// Index in its batch of the record being processed, if any.
pub(crate) fn current_index() -> Option<u32> {
    CURRENT_RECORD.with(Cell::get).map(|(index, _)| index)
}

/// Run `f` as if a record of time `time` were being processed: the events
/// it dispatches take that time (a keyed message's sending record's).
pub(crate) fn with_time(time: Timestamp, f: impl FnOnce()) {
    CURRENT_TIME.with(|current| current.set(Some(time)));
    f();
    CURRENT_TIME.with(|current| current.set(None));
}

/// Forget the current record's time once its batch is done, so that events
/// of ticks and statistics take the stream clock's time.
#[doc(hidden)]
pub fn __end_batch() {
    CURRENT_TIME.with(|time| time.set(None));
    CURRENT_RECORD.with(|current| current.set(None));
}

/// A batch of records as the host sent it: one text buffer and a few
/// arrays of numbers. Iterating yields [`Record`]s that borrow the buffer, so
/// a batch costs the guest a handful of allocations however many records it
/// holds.
pub struct Batch<'a> {
    raw: &'a RecordBatch,
}

/// (start, length) pairs per record in `RecordBatch::spans`.
const SPANS_PER_RECORD: usize = 7;

impl<'a> Batch<'a> {
    #[doc(hidden)]
    pub fn new(raw: &'a RecordBatch) -> Self {
        Batch { raw }
    }

    /// Number of records in the batch.
    pub fn len(&self) -> usize {
        self.raw.positions.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.raw.positions.is_empty()
    }

    /// The records in stream order. Events dispatched while looking at a
    /// record take its time.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        let raw = self.raw;
        let text = raw.text.as_str();
        (0..self.len()).map(move |index| {
            let spans = raw
                .spans
                .get(index * SPANS_PER_RECORD * 2..(index + 1) * SPANS_PER_RECORD * 2)
                .unwrap_or(&[]);
            let field = |n: usize| -> &str {
                let (Some(&start), Some(&len)) = (spans.get(n * 2), spans.get(n * 2 + 1)) else {
                    return "";
                };
                let start = start as usize;
                text.get(start..start + len as usize).unwrap_or("")
            };
            let timestamp = Timestamp {
                seconds: raw.seconds.get(index).copied().unwrap_or(0),
                nanoseconds: raw.nanoseconds.get(index).copied().unwrap_or(0),
                offset_minutes: raw.offset_minutes.get(index).copied().unwrap_or(0),
            };
            CURRENT_TIME.with(|time| time.set(Some(timestamp)));
            let record_index = u32::try_from(index).unwrap_or(u32::MAX);
            CURRENT_RECORD.with(|current| current.set(Some((record_index, false))));
            let priority = raw.priorities.get(index).copied().unwrap_or(13);
            Record {
                position: raw.positions.get(index).copied().unwrap_or(0),
                timestamp,
                facility: priority >> 3,
                severity: priority & 7,
                hostname: field(0),
                app_name: field(1),
                proc_id: field(2),
                msg_id: field(3),
                structured_data: field(4),
                message: field(5),
                peer: field(6),
            }
        })
    }
}

/// One parsed syslog record (RFC 5424 or RFC 3164). Absent fields are empty
/// strings (RFC 5424's `-` nil value becomes `""`).
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Position in the input (line number of a capture), for messages.
    pub position: u64,
    /// When the record says it was written.
    pub timestamp: Timestamp,
    /// Syslog facility (0-23).
    pub facility: u8,
    /// Syslog severity (0 emergency .. 7 debug).
    pub severity: u8,
    /// The host that wrote the record.
    pub hostname: &'a str,
    /// The program, e.g. `sshd`.
    pub app_name: &'a str,
    /// Process id as written, e.g. `2540460`.
    pub proc_id: &'a str,
    /// RFC 5424 MSGID.
    pub msg_id: &'a str,
    /// RFC 5424 structured data as written, escapes intact.
    pub structured_data: &'a str,
    /// The free-form message.
    pub message: &'a str,
    /// The network peer that sent it; empty for files.
    pub peer: &'a str,
}
