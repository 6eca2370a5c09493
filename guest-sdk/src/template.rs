//! Message templates for handlers that render text (e-mail, SMS):
//! [minijinja](https://docs.rs/minijinja) over an event, with no code, no
//! files and no environment within reach. Behind the `templates` feature.

use crate::{DeliveredEvent, Severity, Value};
use minijinja::Environment;

/// Longest text a template renders; the rest is cut.
pub const MAX_CHARACTERS: usize = 100_000;

/// A template, compiled and tried once on a sample event, so that a
/// template that cannot render (an unknown function, an `include` of a
/// file, a syntax error) stops the handler at start-up, not at the first
/// alert. Templates run in minijinja: no code, no files, no environment.
pub struct Template {
    environment: Environment<'static>,
}

impl Template {
    /// Compile `source`.
    pub fn new(source: &str) -> Result<Template, String> {
        let mut environment = Environment::new();
        environment
            .add_template_owned("message", source.to_owned())
            .map_err(|error| format!("the template does not compile: {error}"))?;
        let template = Template { environment };
        let sample = DeliveredEvent {
            module: "Module".into(),
            kind: "Kind".into(),
            severity: Severity::Info,
            time: crate::Timestamp {
                seconds: 0,
                nanoseconds: 0,
                offset_minutes: 0,
            },
            summary: "summary".into(),
            fields: Vec::new(),
        };
        template
            .render_text(&sample)
            .map_err(|error| format!("the template cannot render: {error}"))?;
        Ok(template)
    }

    /// The text for `event`, cut to `max_characters`. The context: the
    /// event's `module`, `kind`, `severity`, `time` (RFC 3339), `summary`
    /// and `fields` (by name).
    pub fn render(&self, event: &DeliveredEvent, max_characters: usize) -> Result<String, String> {
        self.render_text(event)
            .map(|text| text.chars().take(max_characters).collect())
            .map_err(|error| format!("the template cannot render this event: {error}"))
    }

    fn render_text(&self, event: &DeliveredEvent) -> Result<String, minijinja::Error> {
        let template = self.environment.get_template("message")?;
        let mut time = String::new();
        event.time.write_rfc3339(&mut time);
        let fields: serde_json::Map<String, serde_json::Value> = event
            .fields
            .iter()
            .map(|field| {
                let value = match &field.value {
                    Value::Integer(value) => serde_json::json!(value),
                    Value::Float(value) => serde_json::json!(value),
                    Value::Text(value) | Value::Email(value) => serde_json::json!(value),
                    Value::Boolean(value) => serde_json::json!(value),
                    Value::Timestamp(value) => {
                        let mut text = String::new();
                        value.write_rfc3339(&mut text);
                        serde_json::json!(text)
                    }
                };
                (field.name.clone(), value)
            })
            .collect();
        let severity = match event.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        let context = serde_json::json!({
            "module": event.module,
            "kind": event.kind,
            "severity": severity,
            "time": time,
            "summary": event.summary,
            "fields": fields,
        });
        template.render(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Field, Timestamp};

    fn event() -> DeliveredEvent {
        DeliveredEvent {
            module: "OpenSSH".into(),
            kind: "SSHDAttemptsExceeded".into(),
            severity: Severity::Error,
            time: Timestamp {
                seconds: 1_676_905_967,
                nanoseconds: 0,
                offset_minutes: 60,
            },
            summary: "192.0.2.7 tried too often".into(),
            fields: vec![Field {
                name: "host".into(),
                value: Value::Text("192.0.2.7".into()),
            }],
        }
    }

    #[test]
    fn templates_see_the_fields_and_cannot_reach_files() {
        let template =
            Template::new("{{ severity|upper }}: block {{ fields.host }} ({{ module }})")
                .expect("compiles");
        assert_eq!(
            template.render(&event(), MAX_CHARACTERS).expect("renders"),
            "ERROR: block 192.0.2.7 (OpenSSH)"
        );
        for (source, error) in [
            (
                "{% include '/etc/passwd' %}",
                "the template does not compile: syntax error: unknown statement include",
            ),
            (
                "{{ env('HOME') }}",
                "the template cannot render: unknown function",
            ),
            ("{{ summary", "the template does not compile: syntax error"),
        ] {
            let refused = Template::new(source).err().expect("refused");
            assert!(refused.starts_with(error), "{source}: {refused}");
        }
    }
}
