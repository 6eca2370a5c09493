//! Records as `&str` views over the host's flat batch buffer.

use crate::Timestamp;
use crate::__bindings::{RecordBatch, RecordHeader, Span};
use std::borrow::Cow;
use std::cell::Cell;

thread_local! {
    /// Time of the record the module is looking at, for the events it
    /// dispatches meanwhile.
    static CURRENT_TIME: Cell<Option<Timestamp>> = const { Cell::new(None) };
}

/// Time of the record being processed, if any.
pub(crate) fn current_time() -> Option<Timestamp> {
    CURRENT_TIME.with(Cell::get)
}

/// Forget the current record's time once its batch is done, so that events
/// of ticks and statistics take the stream clock's time.
#[doc(hidden)]
pub fn __end_batch() {
    CURRENT_TIME.with(|time| time.set(None));
}

/// A batch of records as the host sent it: one text buffer and one header per
/// record. Iterating yields [`Record`]s that borrow the buffer, so a batch
/// costs the guest two allocations however many records it holds.
pub struct Batch<'a> {
    text: Cow<'a, str>,
    headers: &'a [RecordHeader],
}

impl<'a> Batch<'a> {
    #[doc(hidden)]
    pub fn new(batch: &'a RecordBatch) -> Self {
        // The host only sends UTF-8; a lossy fallback keeps a buggy host
        // from turning into a guest panic.
        let text = match std::str::from_utf8(&batch.text) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(&batch.text),
        };
        Batch {
            text,
            headers: &batch.records,
        }
    }

    /// Number of records in the batch.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The records in stream order. Events dispatched while looking at a
    /// record take its time.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        self.headers.iter().map(|header| {
            CURRENT_TIME.with(|time| time.set(Some(header.timestamp)));
            let text = self.text.as_ref();
            let field = |span: Span| -> &str {
                let start = span.start as usize;
                text.get(start..start + span.len as usize).unwrap_or("")
            };
            Record {
                position: header.position,
                timestamp: header.timestamp,
                facility: header.facility,
                severity: header.severity,
                hostname: field(header.hostname),
                app_name: field(header.app_name),
                proc_id: field(header.proc_id),
                msg_id: field(header.msg_id),
                structured_data: field(header.structured_data),
                message: field(header.message),
                peer: field(header.peer),
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
