//! The report module: a notice for every record, and statistics of the
//! stream (first and last record time, record count, total bytes). Useful
//! to see what an input holds and to test handlers and filters.

use correlator_sdk::{
    Descriptor, Event, EventType, Module, Record, Severity, Timestamp, export_module,
};

/// Longest summary of a notice, cut at a word boundary.
const SUMMARY_LIMIT: usize = 128;

#[derive(Default)]
struct Report {
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    records: i64,
    bytes: i64,
}

impl Module for Report {
    fn describe() -> Descriptor {
        Descriptor::new(
            "report",
            "a notice for every record, and statistics of the stream",
        )
        .event(
            EventType::new("Notice", Severity::Info, "one record")
                .text("host", "hostname of the record")
                .text("program", "app-name of the record")
                .text("message", "the record's whole message")
                .text(
                    "peer",
                    "IP:PORT of the network sender (empty when read from a file)",
                ),
        )
        .event(
            EventType::new(
                "ReportStats",
                Severity::Info,
                "what the stream held since the last reset",
            )
            .timestamp("first", "time of the first record (the epoch if none)")
            .timestamp("last", "time of the last record (the epoch if none)")
            .integer("records", "number of records")
            .integer("bytes", "bytes of message text"),
        )
    }

    fn init() -> Result<Self, String> {
        Ok(Report::default())
    }

    fn process(&mut self, record: &Record<'_>) {
        self.first.get_or_insert(record.timestamp);
        self.last = Some(record.timestamp);
        self.records += 1;
        self.bytes += i64::try_from(record.message.len()).unwrap_or(i64::MAX);
        let summary = format!(
            "{} {}: {}",
            record.hostname, record.app_name, record.message
        );
        let _ = Event::new("Notice", cut_at_word(&summary, SUMMARY_LIMIT))
            .text("host", record.hostname)
            .text("program", record.app_name)
            .text("message", record.message)
            .text("peer", record.peer)
            .dispatch();
    }

    fn statistics(&mut self, reset: bool) {
        let epoch = Timestamp {
            seconds: 0,
            nanoseconds: 0,
            offset_minutes: 0,
        };
        let first = self.first.unwrap_or(epoch);
        let last = self.last.unwrap_or(epoch);
        let _ = Event::new(
            "ReportStats",
            format!(
                "{} records, {} bytes, from {first} to {last}",
                self.records, self.bytes
            ),
        )
        .timestamp("first", first)
        .timestamp("last", last)
        .integer("records", self.records)
        .integer("bytes", self.bytes)
        .dispatch();
        if reset {
            *self = Report::default();
        }
    }
}

/// `text` cut to at most `limit` bytes at the last space before the limit
/// (or at the limit's character boundary if there is none), with `...`.
fn cut_at_word(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end]
        .rfind(' ')
        .filter(|&space| space > 0)
        .unwrap_or(end);
    format!("{}...", text[..cut].trim_end())
}

export_module!(Report);

#[cfg(test)]
mod tests {
    use super::cut_at_word;

    #[test]
    fn cuts_summaries_at_a_word_boundary() {
        assert_eq!(cut_at_word("short", 128), "short");
        assert_eq!(cut_at_word("one two three", 9), "one two...");
        assert_eq!(cut_at_word("abcdefghij", 4), "abcd...");
        assert_eq!(cut_at_word("ééééé", 3), "é...");
    }
}
