//! {name}: a correlator event handler. It appends a line per event its
//! filter selects to a file in its granted directory, starting with a
//! configurable prefix.

use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, config, export_handler};
use std::io::Write as _;

struct {camel} {
    prefix: String,
    /// The file, opened for appending: in the component, inside the
    /// directory the app grants (`grants = { dir = "..." }`).
    file: std::fs::File,
}

/// The line an event becomes.
fn line(prefix: &str, event: &DeliveredEvent) -> String {
    format!("{prefix}: {} {}: {}\n", event.module, event.kind, event.summary)
}

impl Handler for {camel} {
    fn describe() -> Descriptor {
        Descriptor::new("{name}", "appends a line per event to a file")
            .config(ConfigItem::text("prefix", "event", "what each line starts with"))
            .config(ConfigItem::text(
                "file",
                "events.log",
                "the file, in the granted directory",
            ))
    }

    fn init() -> Result<Self, String> {
        let path = config::text("file")?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|error| format!("cannot open {path}: {error} (is a directory granted?)"))?;
        Ok({camel} {
            prefix: config::text("prefix")?,
            file,
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        self.file
            .write_all(line(&self.prefix, event).as_bytes())
            .map_err(|error| format!("cannot write: {error}"))
    }
}

export_handler!({camel});

/// Unit tests: `cargo unit` runs them natively, against the SDK's
/// in-memory test host (the file is a real one, in a temporary directory).
#[cfg(test)]
mod tests {
    use super::*;
    use correlator_sdk::testing::TestHost;
    use correlator_sdk::{Severity, Timestamp, Value};

    #[test]
    fn each_event_is_a_line() {
        let path = std::env::temp_dir().join(format!("{crate}-{}.log", std::process::id()));
        let host = TestHost::new();
        host.set_config("prefix", Value::Text("alert".into()));
        host.set_config("file", Value::Text(path.display().to_string()));
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
        let written = std::fs::read_to_string(&path).expect("the file");
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            written,
            "alert: OpenSSH SSHDLoginFailed: User root from host 192.0.2.7 failed to log in\n"
        );
    }
}
