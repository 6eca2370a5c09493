//! The log handler: one line per event on standard output, as text
//! (`[module :: kind] summary`) or as one JSON object per line.

use correlator_sdk::{
    ConfigItem, DeliveredEvent, Descriptor, Handler, Severity, Value, export_handler,
};
use std::fmt::Write as _;
use std::io::Write as _;

enum Format {
    Text,
    Json,
}

struct Log {
    format: Format,
    buffer: String,
}

impl Handler for Log {
    fn describe() -> Descriptor {
        Descriptor::new("log", "writes one line per event to standard output").config(
            ConfigItem::text(
                "format",
                "text",
                "\"text\" for `[module :: kind] summary`, \"json\" for one JSON object per line",
            ),
        )
    }

    fn init() -> Result<Self, String> {
        let format = match correlator_sdk::config::text("format")?.as_str() {
            "text" => Format::Text,
            "json" => Format::Json,
            other => {
                return Err(format!(
                    "format must be \"text\" or \"json\", not \"{other}\""
                ));
            }
        };
        Ok(Log {
            format,
            buffer: String::new(),
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        match self.format {
            Format::Text => {
                let _ = writeln!(
                    self.buffer,
                    "[{} :: {}] {}",
                    event.module, event.kind, event.summary
                );
            }
            Format::Json => write_json_line(&mut self.buffer, event),
        }
        Ok(())
    }

    fn flush(&mut self) {
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = stdout
            .write_all(self.buffer.as_bytes())
            .and_then(|()| stdout.flush())
        {
            correlator_sdk::log::error(&format!("cannot write to standard output: {error}"));
        }
        self.buffer.clear();
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

fn write_json_line(out: &mut String, event: &DeliveredEvent) {
    out.push_str("{\"time\":\"");
    let _ = write!(out, "{}", event.time);
    out.push_str("\",\"module\":");
    json_string(out, &event.module);
    out.push_str(",\"kind\":");
    json_string(out, &event.kind);
    out.push_str(",\"severity\":\"");
    out.push_str(severity_name(event.severity));
    out.push_str("\",\"summary\":");
    json_string(out, &event.summary);
    out.push_str(",\"fields\":{");
    for (index, field) in event.fields.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        json_string(out, &field.name);
        out.push(':');
        match &field.value {
            Value::Integer(value) => {
                let _ = write!(out, "{value}");
            }
            Value::Float(value) if value.is_finite() => {
                let _ = write!(out, "{value:?}");
            }
            Value::Float(_) => out.push_str("null"),
            Value::Boolean(value) => {
                let _ = write!(out, "{value}");
            }
            Value::Text(value) | Value::Email(value) => json_string(out, value),
            Value::Timestamp(value) => {
                let _ = write!(out, "\"{value}\"");
            }
        }
    }
    out.push_str("}}\n");
}

/// Append `text` as a JSON string: runs of plain characters are copied at
/// once, only quotes, backslashes and control characters are escaped.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut plain_from = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[plain_from..index]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        plain_from = index + 1;
    }
    out.push_str(&text[plain_from..]);
    out.push('"');
}

export_handler!(Log);

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn escapes_json_strings() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
