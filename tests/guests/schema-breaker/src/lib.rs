//! A module that, for every record, dispatches one valid event and one of
//! each kind of invalid event, so tests can check that the host rejects the
//! invalid ones by name and goes on. Besides what the SDK's builder lets
//! through, it packs broken values for `dispatch-encoded` by hand, and
//! sends timestamps no output could show (in an event's time and in a
//! field, through each way of dispatching).

use correlator_sdk::__bindings::module::correlator::plugin::events::{
    dispatch_encoded, dispatch_values,
};
use correlator_sdk::{
    Descriptor, Event, EventType, Module, Record, Severity, Timestamp, Value, export_module,
};

/// `text` packed as `dispatch-encoded` takes a text: length, then bytes.
fn packed_text(text: &[u8]) -> Vec<u8> {
    let mut bytes = u32::try_from(text.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes()
        .to_vec();
    bytes.extend_from_slice(text);
    bytes
}

struct SchemaBreaker;

impl Module for SchemaBreaker {
    fn describe() -> Descriptor {
        Descriptor::new(
            "schema-breaker",
            "dispatches events that break their declared schema",
        )
        .event(
            EventType::new("Seen", Severity::Info, "a record was seen")
                .text("host", "hostname")
                .integer("position", "position of the record"),
        )
        .event(
            EventType::new("Timed", Severity::Info, "carries a time").timestamp("when", "a time"),
        )
    }

    fn init() -> Result<Self, String> {
        Ok(SchemaBreaker)
    }

    fn process(&mut self, record: &Record<'_>) {
        let position = i64::try_from(record.position).unwrap_or(i64::MAX);
        let valid = || {
            Event::new("Seen", format!("record {position}"))
                .text("host", record.hostname)
                .integer("position", position)
        };
        let _ = valid().dispatch();
        let _ = Event::new("Seen", "missing")
            .text("host", record.hostname)
            .dispatch();
        let _ = valid().text("extra", "x").dispatch();
        let _ = Event::new("Seen", "wrong type")
            .text("host", record.hostname)
            .field("position", Value::Text("seven".into()))
            .dispatch();
        let _ = valid().integer("position", 1).dispatch();
        let _ = Event::new("Unheard", "undeclared kind").dispatch();

        // Packed by hand: "Seen" is index 0 (host, then position).
        let host = packed_text(record.hostname.as_bytes());
        let _ = dispatch_encoded(0, "packed, position missing", &host, None);
        let mut not_utf8 = packed_text(b"\xff\xfe");
        not_utf8.extend_from_slice(&7i64.to_le_bytes());
        let _ = dispatch_encoded(0, "packed, host not UTF-8", &not_utf8, None);
        let mut longer = host.clone();
        longer.extend_from_slice(&7i64.to_le_bytes());
        longer.push(0);
        let _ = dispatch_encoded(0, "packed, a byte too many", &longer, None);
        let _ = dispatch_encoded(7, "packed, undeclared index", &[], None);

        // Times past what any output can show: in the event's own time,
        // and in a field through dispatch-encoded and dispatch-values.
        let at = |seconds, nanoseconds, offset_minutes| Timestamp {
            seconds,
            nanoseconds,
            offset_minutes,
        };
        let _ = valid().at(at(i64::MIN, 0, 0)).dispatch();
        let _ = Event::new("Timed", "nanoseconds past a second")
            .timestamp("when", at(0, 1_000_000_000, 0))
            .dispatch();
        let _ = dispatch_values(
            1,
            "an offset of 546 hours",
            &[Value::Timestamp(at(0, 0, i16::MAX))],
            None,
        );
    }
}

export_module!(SchemaBreaker);
