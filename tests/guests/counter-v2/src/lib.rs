//! Test guest: the record counter with state layout version 2, which keeps
//! records and batches together under `counts`, and migrates version 1's
//! `count` to it.

use correlator_sdk::{
    Batch, Descriptor, Event, EventType, Module, Record, Severity, export_module, state,
};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counts {
    records: u64,
    batches: u64,
}

struct Counter {
    counts: Counts,
}

impl Module for Counter {
    fn describe() -> Descriptor {
        Descriptor::new("counter", "counts records across runs").event(
            EventType::new("Count", Severity::Info, "records seen over every run")
                .integer("records", "records seen"),
        )
    }

    const STATE_VERSION: u32 = 2;

    fn migrate(stored_version: u32) -> Result<(), String> {
        if stored_version != 1 {
            return Err(format!("no migration from version {stored_version}"));
        }
        let records = state::load::<u64>("count")?.unwrap_or(0);
        state::save(
            "counts",
            &Counts {
                records,
                batches: 0,
            },
        )?;
        state::delete("count");
        Ok(())
    }

    fn init() -> Result<Self, String> {
        let counts = state::load::<Counts>("counts")?.unwrap_or_default();
        Ok(Counter { counts })
    }

    fn process(&mut self, _record: &Record<'_>) {
        self.counts.records += 1;
    }

    fn process_batch(&mut self, batch: &Batch<'_>) {
        self.counts.batches += 1;
        for record in batch.records() {
            self.process(&record);
        }
    }

    fn statistics(&mut self, _reset: bool) {
        let records = i64::try_from(self.counts.records).unwrap_or(i64::MAX);
        let _ = Event::new("Count", format!("{records} records"))
            .integer("records", records)
            .dispatch();
    }

    fn checkpoint(&mut self) {
        if let Err(error) = state::save("counts", &self.counts) {
            correlator_sdk::log::error(&error);
        }
    }
}

export_module!(Counter);
