//! Test guest: counts the records it sees in durable state, with state
//! layout version 1: the count alone, under `count`. Its statistics event
//! `Count` says how many it has seen over every run.

use correlator_sdk::{
    Descriptor, Event, EventType, Module, Record, Severity, export_module, state,
};

struct Counter {
    records: u64,
}

impl Module for Counter {
    fn describe() -> Descriptor {
        Descriptor::new("counter", "counts records across runs").event(
            EventType::new("Count", Severity::Info, "records seen over every run")
                .integer("records", "records seen"),
        )
    }

    fn init() -> Result<Self, String> {
        let records = state::load::<u64>("count")?.unwrap_or(0);
        Ok(Counter { records })
    }

    fn process(&mut self, _record: &Record<'_>) {
        self.records += 1;
    }

    fn statistics(&mut self, _reset: bool) {
        let records = i64::try_from(self.records).unwrap_or(i64::MAX);
        let _ = Event::new("Count", format!("{records} records"))
            .integer("records", records)
            .dispatch();
    }

    fn checkpoint(&mut self) {
        if let Err(error) = state::save("count", &self.records) {
            correlator_sdk::log::error(&error);
        }
    }
}

export_module!(Counter);
