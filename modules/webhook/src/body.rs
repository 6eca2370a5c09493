//! The JSON bodies of the presets: pure, tested natively. Every value of
//! an event goes through `serde_json`, so no event text can break out of
//! its string.

use correlator_sdk::{DeliveredEvent, Severity, Value};
use serde_json::{Map, json};

/// What the body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The event whole.
    Json,
    /// A Slack (or Mattermost) incoming webhook's `text`.
    Slack,
    /// A PagerDuty Events API v2 `trigger`.
    PagerDuty,
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

fn time_of(event: &DeliveredEvent) -> String {
    let mut text = String::new();
    event.time.write_rfc3339(&mut text);
    text
}

/// The event's fields as a JSON object.
fn fields(event: &DeliveredEvent) -> Map<String, serde_json::Value> {
    event
        .fields
        .iter()
        .map(|field| {
            let value = match &field.value {
                Value::Integer(value) => json!(value),
                Value::Float(value) => json!(value),
                Value::Text(value) | Value::Email(value) => json!(value),
                Value::Boolean(value) => json!(value),
                Value::Timestamp(value) => {
                    let mut text = String::new();
                    value.write_rfc3339(&mut text);
                    json!(text)
                }
            };
            (field.name.clone(), value)
        })
        .collect()
}

/// The text of field `name`, if the event has it.
fn text_of<'a>(event: &'a DeliveredEvent, name: &str) -> Option<&'a str> {
    event.fields.iter().find_map(|field| match &field.value {
        Value::Text(text) | Value::Email(text) if field.name == name => Some(text.as_str()),
        _ => None,
    })
}

/// The body for `event` under `preset`; `routing_key` and `dedup_field`
/// serve PagerDuty.
pub fn render(
    preset: Preset,
    event: &DeliveredEvent,
    routing_key: &str,
    dedup_field: &str,
) -> Vec<u8> {
    let body = match preset {
        Preset::Json => json!({
            "module": event.module,
            "kind": event.kind,
            "severity": severity_name(event.severity),
            "time": time_of(event),
            "summary": event.summary,
            "fields": fields(event),
        }),
        Preset::Slack => json!({
            "text": format!("[{} :: {}] {}", event.module, event.kind, event.summary),
        }),
        Preset::PagerDuty => {
            let key = text_of(event, dedup_field).unwrap_or(&event.summary);
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": format!("{}/{}/{key}", event.module, event.kind),
                "payload": {
                    "summary": event.summary,
                    "source": event.module,
                    "severity": match event.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                        Severity::Info => "info",
                    },
                    "timestamp": time_of(event),
                    "component": event.kind,
                    "custom_details": fields(event),
                },
            })
        }
    };
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use correlator_sdk::{Field, Timestamp};

    fn event() -> DeliveredEvent {
        DeliveredEvent {
            module: "OpenSSH".into(),
            kind: "SSHDAttemptsExceeded".into(),
            severity: Severity::Error,
            time: Timestamp {
                seconds: 1_676_905_967,
                nanoseconds: 0,
                offset_minutes: 0,
            },
            summary: "Host 192.0.2.7 \"tried\"\nagain".into(),
            fields: vec![
                Field {
                    name: "host".into(),
                    value: Value::Text("192.0.2.7".into()),
                },
                Field {
                    name: "failures".into(),
                    value: Value::Integer(3),
                },
            ],
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("JSON is UTF-8")
    }

    #[test]
    fn each_preset_renders_the_event_as_its_destination_expects() {
        let event = event();
        assert_eq!(
            text(render(Preset::Json, &event, "", "host")),
            r#"{"fields":{"failures":3,"host":"192.0.2.7"},"kind":"SSHDAttemptsExceeded","module":"OpenSSH","severity":"error","summary":"Host 192.0.2.7 \"tried\"\nagain","time":"2023-02-20T15:12:47Z"}"#
        );
        assert_eq!(
            text(render(Preset::Slack, &event, "", "host")),
            r#"{"text":"[OpenSSH :: SSHDAttemptsExceeded] Host 192.0.2.7 \"tried\"\nagain"}"#
        );
        assert_eq!(
            text(render(Preset::PagerDuty, &event, "R0UT1NG", "host")),
            r#"{"dedup_key":"OpenSSH/SSHDAttemptsExceeded/192.0.2.7","event_action":"trigger","payload":{"component":"SSHDAttemptsExceeded","custom_details":{"failures":3,"host":"192.0.2.7"},"severity":"error","source":"OpenSSH","summary":"Host 192.0.2.7 \"tried\"\nagain","timestamp":"2023-02-20T15:12:47Z"},"routing_key":"R0UT1NG"}"#
        );
        // Without the dedup field, the summary keys the alert.
        let mut without = event;
        without.fields.clear();
        let body = text(render(Preset::PagerDuty, &without, "k", "host"));
        assert!(
            body.contains(
                r#""dedup_key":"OpenSSH/SSHDAttemptsExceeded/Host 192.0.2.7 \"tried\"\nagain""#
            ),
            "{body}"
        );
    }
}
