//! {name}: a correlator logic module. It looks at the records of one
//! program and dispatches `Matched` for each whose message holds a
//! pattern, counting them (the count outlives restarts, as durable state).

use correlator_sdk::{
    ConfigItem, Descriptor, Event, EventType, Module, Record, Severity, config, export_module,
    state,
};

struct {camel} {
    program: String,
    pattern: String,
    matched: i64,
}

impl Module for {camel} {
    fn describe() -> Descriptor {
        Descriptor::new("{name}", "dispatches Matched for records of a program that hold a pattern")
            .config(ConfigItem::text("program", "sshd", "the program whose records are looked at"))
            .config(ConfigItem::text("pattern", "Failed password", "what the message must hold"))
            .event(
                EventType::new("Matched", Severity::Warning, "a record held the pattern")
                    .text("host", "the host that wrote it")
                    .text("message", "its message"),
            )
            .event(
                EventType::new("MatchStats", Severity::Info, "records matched so far")
                    .integer("matched", "records that held the pattern"),
            )
    }

    fn init() -> Result<Self, String> {
        Ok({camel} {
            program: config::text("program")?,
            pattern: config::required_text("pattern")?,
            matched: state::load("matched")?.unwrap_or(0),
        })
    }

    fn process(&mut self, record: &Record<'_>) {
        if record.app_name != self.program || !record.message.contains(&self.pattern) {
            return;
        }
        self.matched += 1;
        let _ = Event::new("Matched", format!("{} wrote: {}", record.hostname, record.message))
            .text("host", record.hostname)
            .text("message", record.message)
            .dispatch();
    }

    fn statistics(&mut self, reset: bool) {
        let _ = Event::new("MatchStats", format!("{} records matched", self.matched))
            .integer("matched", self.matched)
            .dispatch();
        if reset {
            self.matched = 0;
        }
    }

    fn checkpoint(&mut self) {
        if let Err(error) = state::save("matched", &self.matched) {
            correlator_sdk::log::error(&format!("count not saved: {error}"));
        }
    }
}

export_module!({camel});

/// Unit tests: `cargo unit` runs them natively, against the SDK's
/// in-memory test host.
#[cfg(test)]
mod tests {
    use super::*;
    use correlator_sdk::Value;
    use correlator_sdk::testing::{TestHost, TestRecord};

    #[test]
    fn a_record_that_holds_the_pattern_is_matched_and_counted_across_a_restart() {
        let host = TestHost::new();
        host.set_config("pattern", Value::Text("Invalid user".into()));
        let mut module: {camel} = host.start().expect("starts");
        host.process(
            &mut module,
            &[
                TestRecord::new(1_700_000_000, "web1", "sshd", "Invalid user admin from 192.0.2.7"),
                TestRecord::new(1_700_000_001, "web1", "cron", "Invalid user admin from 192.0.2.7"),
            ],
        );
        let events = host.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "Matched");
        assert_eq!(events[0].text("host"), Some("web1"));
        let mut module = host.restart(module).expect("starts again");
        host.statistics(&mut module, false);
        assert_eq!(host.take_events()[0].integer("matched"), Some(1));
    }
}
