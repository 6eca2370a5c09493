//! The log handler: one line per event on standard output, as text
//! (`[module :: kind] summary`) or as one JSON object per line.

use correlator_sdk::text::{push_escaped, push_integer};
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
                // Names are checked at load; the summary is the module's
                // own text, kept on its line.
                let _ = write!(self.buffer, "[{} :: {}] ", event.module, event.kind);
                push_escaped(&mut self.buffer, &event.summary);
                self.buffer.push('\n');
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
    event.time.write_rfc3339(out);
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
            Value::Integer(value) => push_integer(out, *value),
            Value::Float(value) if value.is_finite() => {
                let _ = write!(out, "{value:?}");
            }
            Value::Float(_) => out.push_str("null"),
            Value::Boolean(value) => {
                let _ = write!(out, "{value}");
            }
            Value::Text(value) | Value::Email(value) => json_string(out, value),
            Value::Timestamp(value) => {
                out.push('"');
                value.write_rfc3339(out);
                out.push('"');
            }
        }
    }
    out.push_str("}}\n");
}

/// Whether any of the eight bytes of `word` must be escaped in JSON: a
/// control character, a quote or a backslash. Checking eight bytes at once
/// keeps the loop short, which matters in WebAssembly, where every loop
/// iteration also checks the call's deadline.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
        || has_zero(word ^ (ONES * 0x7f))
        // Any byte past ASCII: it may start a C1 control or a separator.
        || word & HIGHS != 0
}

/// The JSON escape of `byte`, if it needs one ("" for `\u00XX`).
fn escape_of(byte: u8) -> Option<&'static str> {
    match byte {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        b'\n' => Some("\\n"),
        b'\r' => Some("\\r"),
        b'\t' => Some("\\t"),
        0..=0x1f => Some(""),
        _ => None,
    }
}

/// Append `text` as a JSON string: runs of plain characters are copied at
/// once; quotes, backslashes and control characters are escaped, and so
/// are DEL, C1 controls, line separators and the characters that reorder
/// or hide text ([`correlator_sdk::text::is_unsafe`]).
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    let mut index = 0;
    while index < bytes.len() {
        if let Some(chunk) = bytes.get(index..index + 8)
            && let Ok(word) = <[u8; 8]>::try_from(chunk)
            && !needs_escape(u64::from_le_bytes(word))
        {
            index += 8;
            continue;
        }
        let end = (index + 8).min(bytes.len());
        for at in index..end {
            if at < plain_from {
                // Inside a character escaped whole below.
                continue;
            }
            if bytes[at] >= 0x7f
                && let Some(c) = text.get(at..).and_then(|rest| rest.chars().next())
                && correlator_sdk::text::is_unsafe(c)
            {
                // DEL, C1 controls, line separators and reordering marks:
                // valid JSON as they are, but not text to show.
                out.push_str(&text[plain_from..at]);
                let _ = write!(out, "\\u{:04x}", u32::from(c));
                plain_from = at + c.len_utf8();
                continue;
            }
            if let Some(escape) = escape_of(bytes[at]) {
                // Escaped bytes are ASCII, so these are character boundaries.
                out.push_str(&text[plain_from..at]);
                if escape.is_empty() {
                    let _ = write!(out, "\\u{:04x}", bytes[at]);
                } else {
                    out.push_str(escape);
                }
                plain_from = at + 1;
            }
        }
        index = end;
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
        let mut out = String::new();
        json_string(
            &mut out,
            "plain text longer than eight bytes, with \"quotes\" at the end\"",
        );
        assert_eq!(
            out,
            r#""plain text longer than eight bytes, with \"quotes\" at the end\"""#
        );
        let mut out = String::new();
        json_string(&mut out, "éééééééé\t");
        assert_eq!(out, r#""éééééééé\t""#);
        let mut out = String::new();
        json_string(&mut out, "ok – €\u{7f}\u{85}x\u{2028}y\u{202e}z\u{feff}");
        assert_eq!(out, r#""ok – €\u007f\u0085x\u2028y\u202ez\ufeff""#);
    }
}
