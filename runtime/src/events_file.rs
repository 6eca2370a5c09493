//! `run --events FILE`: events read back from JSON lines, handed straight to
//! the handlers, without records or modules.
//!
//! The lines are those the log handler writes with `format = "json"`
//! (`{"time", "module", "kind", "severity", "summary", "fields"}`), so that
//! what a log recorded can be delivered again (after a mail server was
//! fixed, say), and so that `correlator test` can try a handler on known
//! events. An event keeps its types: when a module of the app declares its
//! kind, the declaration types its fields (a timestamp or an e-mail address
//! comes back as one, not as text) and a field it does not declare, or one
//! missing, refuses the line; otherwise the JSON types decide (a whole
//! number is an integer, another a float, a string text).

use crate::host::StreamClock;
use crate::pipeline::{Counters, HandlerStage, StageError};
use crate::types::{Dispatched, EventDecl, FieldDecl, FieldValues, Severity, Value, ValueType};
use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Events handed to the handlers at a time.
const EVENTS_PER_BATCH: usize = 1024;

/// Lines refused with a warning each; those after are counted only.
const REFUSALS_LOGGED: u64 = 10;

/// What a replay of events read.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventsStats {
    /// Events handed to the handlers.
    pub events: u64,
    /// Lines that were not an event (each logged, up to
    /// [`REFUSALS_LOGGED`]).
    pub refused: u64,
}

/// Why a replay of events stopped early.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The file could not be read.
    #[error("cannot read the events")]
    Read(#[from] std::io::Error),
    /// A handler with `on_failure = "abort"` failed.
    #[error(transparent)]
    Stages(#[from] StageError),
}

/// Hand every event of `input` to the handlers, in order, the stream clock
/// following the latest event's time; then what their notifiers hold. A
/// line that is not an event is logged with its number and why, and
/// passed over. Reading stops early once `stop` is set.
pub fn replay(
    input: impl BufRead,
    declarations: &Declarations,
    handlers: &mut HandlerStage,
    clock: &StreamClock,
    stop: &AtomicBool,
) -> Result<(EventsStats, Counters), EventsError> {
    let mut stats = EventsStats::default();
    let mut batch = Vec::with_capacity(EVENTS_PER_BATCH);
    let mut latest: Option<crate::types::Timestamp> = None;
    let mut hand_on = |batch: &mut Vec<Dispatched>, latest: Option<crate::types::Timestamp>| {
        if let Some(time) = latest {
            clock.set(time);
        }
        stats.events += batch.len() as u64;
        handlers
            .route(std::mem::take(batch))
            .map_err(|abort| EventsError::Stages(abort.into()))
    };
    for (index, line) in input.lines().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line, declarations) {
            Ok(event) => {
                if latest.is_none_or(|time| time.seconds < event.time.seconds) {
                    latest = Some(event.time);
                }
                batch.push(event);
                if batch.len() == EVENTS_PER_BATCH {
                    hand_on(&mut batch, latest)?;
                }
            }
            Err(why) => {
                stats.refused += 1;
                if stats.refused <= REFUSALS_LOGGED {
                    tracing::warn!("line {} is not an event, passed over: {why}", index + 1);
                }
            }
        }
    }
    hand_on(&mut batch, latest)?;
    handlers
        .flush_notices()
        .map_err(|abort| EventsError::Stages(abort.into()))?;
    if stats.refused > REFUSALS_LOGGED {
        tracing::warn!(
            "{} lines were not events (the first {REFUSALS_LOGGED} are logged above)",
            stats.refused
        );
    }
    Ok((stats, handlers.counters()))
}

/// The declarations events are typed by: every module instance's event
/// types, by instance and kind.
#[derive(Default)]
pub struct Declarations {
    by_instance_and_kind: HashMap<(String, String), Arc<EventDecl>>,
    /// The first declaration of each kind, for events of an instance the
    /// app does not have (a log written by another app).
    by_kind: HashMap<String, Arc<EventDecl>>,
}

impl Declarations {
    /// The declarations of `(instance, event type)` pairs.
    pub fn new<'a>(declared: impl IntoIterator<Item = (&'a str, &'a EventDecl)>) -> Self {
        let mut declarations = Declarations::default();
        for (instance, decl) in declared {
            let decl = Arc::new(decl.clone());
            declarations
                .by_kind
                .entry(decl.kind.clone())
                .or_insert_with(|| Arc::clone(&decl));
            declarations
                .by_instance_and_kind
                .insert((instance.to_owned(), decl.kind.clone()), decl);
        }
        declarations
    }

    fn find(&self, module: &str, kind: &str) -> Option<&Arc<EventDecl>> {
        self.by_instance_and_kind
            .get(&(module.to_owned(), kind.to_owned()))
            .or_else(|| self.by_kind.get(kind))
    }
}

/// One line of an events file as an event, or why it is not one.
pub fn parse_line(line: &str, declarations: &Declarations) -> Result<Dispatched, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|error| format!("not JSON: {error}"))?;
    let serde_json::Value::Object(object) = value else {
        return Err("not a JSON object".to_owned());
    };
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "time" | "module" | "kind" | "severity" | "summary" | "fields"
        ) {
            return Err(format!(
                "unknown key \"{key}\" (an event has time, module, kind, severity, summary and fields)"
            ));
        }
    }
    let text = |key: &str| -> Result<Option<&str>, String> {
        match object.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(format!("{key} must be a string, not {other}")),
        }
    };
    let kind = text("kind")?.ok_or("no kind")?;
    let module = text("module")?.ok_or("no module")?;
    let time_text = text("time")?.ok_or("no time")?;
    let time = crate::record::time::parse_rfc3339(time_text)
        .ok_or_else(|| format!("time \"{time_text}\" is not an RFC 3339 time"))?;
    let summary = text("summary")?.unwrap_or_default();
    let severity = match text("severity")? {
        None => None,
        Some("info") => Some(Severity::Info),
        Some("warning") => Some(Severity::Warning),
        Some("error") => Some(Severity::Error),
        Some(other) => {
            return Err(format!(
                "severity \"{other}\" is not info, warning or error"
            ));
        }
    };
    let empty = serde_json::Map::new();
    let fields = match object.get("fields") {
        None => &empty,
        Some(serde_json::Value::Object(fields)) => fields,
        Some(other) => return Err(format!("fields must be an object, not {other}")),
    };
    let (decl, values) = match declarations.find(module, kind) {
        Some(decl) => (Arc::clone(decl), declared_values(decl, fields)?),
        None => inferred(kind, severity.unwrap_or(Severity::Info), fields)?,
    };
    if let Some(severity) = severity
        && severity != decl.severity
    {
        return Err(format!(
            "severity \"{}\": {kind} is declared {}",
            severity.name(),
            decl.severity.name()
        ));
    }
    Ok(Dispatched {
        module: Arc::from(module),
        decl,
        time,
        summary: summary.to_owned(),
        values: FieldValues::Values(values),
        record: Dispatched::AFTER_BATCH,
    })
}

/// `fields` as the values of `decl`'s fields, in declared order.
fn declared_values(
    decl: &EventDecl,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Value>, String> {
    if let Some(name) = fields
        .keys()
        .find(|name| !decl.fields.iter().any(|field| field.name == **name))
    {
        return Err(format!("{} declares no field \"{name}\"", decl.kind));
    }
    decl.fields
        .iter()
        .map(|field| {
            let json = fields.get(&field.name).ok_or_else(|| {
                format!("no field \"{}\" ({} declares it)", field.name, decl.kind)
            })?;
            typed(json, field.value_type).ok_or_else(|| {
                let name = field.value_type.name();
                let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                format!("field \"{}\" = {json} is not {article} {name}", field.name)
            })
        })
        .collect()
}

/// `json` as a value of `value_type`, if it is one.
fn typed(json: &serde_json::Value, value_type: ValueType) -> Option<Value> {
    Some(match value_type {
        ValueType::Integer => Value::Integer(json.as_i64()?),
        ValueType::Float => Value::Float(json.as_f64()?),
        ValueType::Boolean => Value::Boolean(json.as_bool()?),
        ValueType::Text => Value::Text(json.as_str()?.to_owned()),
        ValueType::Email => Value::Email(json.as_str()?.to_owned()),
        ValueType::Timestamp => {
            Value::Timestamp(crate::record::time::parse_rfc3339(json.as_str()?)?)
        }
    })
}

/// A declaration made from the event itself, for a kind no module of the
/// app declares.
fn inferred(
    kind: &str,
    severity: Severity,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<(Arc<EventDecl>, Vec<Value>), String> {
    let mut decls = Vec::with_capacity(fields.len());
    let mut values = Vec::with_capacity(fields.len());
    for (name, json) in fields {
        let value = match json {
            serde_json::Value::Bool(boolean) => Value::Boolean(*boolean),
            serde_json::Value::String(text) => Value::Text(text.clone()),
            serde_json::Value::Number(number) => match number.as_i64() {
                Some(integer) => Value::Integer(integer),
                None => Value::Float(number.as_f64().unwrap_or(f64::NAN)),
            },
            other => {
                return Err(format!(
                    "field \"{name}\" = {other}: a field is a number, a string or a boolean"
                ));
            }
        };
        decls.push(FieldDecl {
            name: name.clone(),
            value_type: value.value_type(),
            description: String::new(),
        });
        values.push(value);
    }
    let decl = EventDecl {
        kind: kind.to_owned(),
        severity,
        description: String::new(),
        fields: decls,
    };
    Ok((Arc::new(decl), values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Timestamp, undescribed_field};

    fn declarations() -> Declarations {
        let decl = EventDecl {
            kind: "LoginFailed".into(),
            severity: Severity::Warning,
            description: String::new(),
            fields: vec![
                undescribed_field("user", ValueType::Text),
                undescribed_field("failures", ValueType::Integer),
                undescribed_field("since", ValueType::Timestamp),
            ],
        };
        Declarations::new([("ssh", &decl)])
    }

    #[test]
    fn declared_kinds_take_their_declared_types() {
        let line = r#"{"time":"2023-02-20T15:12:47Z","module":"ssh","kind":"LoginFailed","severity":"warning","summary":"s","fields":{"user":"bob","failures":3,"since":"2023-02-20T15:12:40Z"}}"#;
        let event = parse_line(line, &declarations()).expect("an event");
        assert_eq!(&*event.module, "ssh");
        assert_eq!(event.decl.severity, Severity::Warning);
        assert_eq!(event.time.seconds, 1_676_905_967);
        let FieldValues::Values(values) = &event.values else {
            panic!("values expected");
        };
        assert_eq!(
            values,
            &vec![
                Value::Text("bob".into()),
                Value::Integer(3),
                Value::Timestamp(Timestamp {
                    seconds: 1_676_905_960,
                    nanoseconds: 0,
                    offset_minutes: 0
                }),
            ]
        );
    }

    #[test]
    fn lines_that_break_the_declaration_say_how() {
        let declarations = declarations();
        let line = |fields: &str| {
            format!(
                r#"{{"time":"2023-02-20T15:12:47Z","module":"ssh","kind":"LoginFailed","fields":{fields}}}"#
            )
        };
        let error = |text: &str| parse_line(text, &declarations).err().unwrap_or_default();
        assert_eq!(
            error(&line(r#"{"user":"bob","failures":3}"#)),
            "no field \"since\" (LoginFailed declares it)"
        );
        assert_eq!(
            error(&line(
                r#"{"user":"bob","failures":"3","since":"2023-02-20T15:12:40Z"}"#
            )),
            "field \"failures\" = \"3\" is not an integer"
        );
        assert_eq!(
            error(&line(r#"{"user":"bob","port":22}"#)),
            "LoginFailed declares no field \"port\""
        );
        assert_eq!(
            error(r#"{"time":"yesterday","module":"ssh","kind":"X"}"#),
            "time \"yesterday\" is not an RFC 3339 time"
        );
        assert_eq!(
            error(r#"{"time":"2023-02-20T15:12:47Z","module":"ssh","kind":"X","colour":1}"#),
            "unknown key \"colour\" (an event has time, module, kind, severity, summary and fields)"
        );
        assert_eq!(error("[1]"), "not a JSON object");
    }

    #[test]
    fn undeclared_kinds_are_typed_by_their_json() {
        let line = r#"{"time":"2023-02-20T15:12:47+01:00","module":"other","kind":"Seen","severity":"error","fields":{"n":2,"ratio":0.5,"ok":true,"who":"x"}}"#;
        let event = parse_line(line, &Declarations::default()).expect("an event");
        assert_eq!(event.decl.severity, Severity::Error);
        assert_eq!(event.time.offset_minutes, 60);
        let types: Vec<(&str, ValueType)> = event
            .decl
            .fields
            .iter()
            .map(|field| (field.name.as_str(), field.value_type))
            .collect();
        assert_eq!(
            types,
            [
                ("n", ValueType::Integer),
                ("ok", ValueType::Boolean),
                ("ratio", ValueType::Float),
                ("who", ValueType::Text)
            ]
        );
    }
}
