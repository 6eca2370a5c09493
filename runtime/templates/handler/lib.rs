//! {name}: a correlator event handler. It logs a line per event its filter
//! selects, starting with a configurable prefix.

use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, config, export_handler};

struct {camel} {
    prefix: String,
}

impl Handler for {camel} {
    fn describe() -> Descriptor {
        Descriptor::new("{name}", "logs a line per event")
            .config(ConfigItem::text("prefix", "event", "what each line starts with"))
    }

    fn init() -> Result<Self, String> {
        Ok({camel} {
            prefix: config::text("prefix")?,
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        correlator_sdk::log::info(&format!(
            "{}: {} {}: {}",
            self.prefix, event.module, event.kind, event.summary
        ));
        Ok(())
    }
}

export_handler!({camel});

/// Unit tests: `cargo unit` runs them natively, against the SDK's
/// in-memory test host.
#[cfg(test)]
mod tests {
    use super::*;
    use correlator_sdk::testing::{LogLine, TestHost};
    use correlator_sdk::{Severity, Timestamp, Value};

    #[test]
    fn each_event_is_a_line() {
        let host = TestHost::new();
        host.set_config("prefix", Value::Text("alert".into()));
        let mut handler: {camel} = host.start_handler().expect("starts");
        let event = DeliveredEvent {
            module: "OpenSSH".into(),
            kind: "SSHDLoginFailed".into(),
            severity: Severity::Error,
            summary: "User root from host 192.0.2.7 failed to log in".into(),
            fields: Vec::new(),
            time: Timestamp { seconds: 1_700_000_000, nanoseconds: 0, offset_minutes: 0 },
        };
        assert_eq!(host.handle(&mut handler, &[event]), [Ok(())]);
        assert_eq!(
            host.logs(),
            [LogLine {
                level: "info",
                message: "alert: OpenSSH SSHDLoginFailed: User root from host 192.0.2.7 failed to log in".into()
            }]
        );
    }
}
