//! A module that, for every record, dispatches one valid event and one of
//! each kind of invalid event, so tests can check that the host rejects the
//! invalid ones by name and goes on.

use correlator_sdk::{
    Descriptor, Event, EventType, Module, Record, Severity, Value, export_module,
};

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
    }
}

export_module!(SchemaBreaker);
