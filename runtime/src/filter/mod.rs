//! Handler filters: CEL expressions over the event, compiled once at load.
//!
//! The expression sees one variable, `event`, with `kind`, `module`,
//! `severity` (`"info"`, `"warning"`, `"error"`), `summary`, `time` (seconds
//! since the epoch) and `fields` (a map of the event's fields). For example
//! `event.severity == "error" && event.fields.user == "root"`.

mod check;

pub use check::KnownEvents;

use crate::types::{Dispatched, Value};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

/// A filter that did not compile, with where in the expression (line and
/// column from 1).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}, column {column} of the filter: {message}")]
pub struct FilterError {
    /// Line in the expression.
    pub line: usize,
    /// Column in the expression.
    pub column: usize,
    /// The CEL parser's message.
    pub message: String,
}

/// A compiled filter.
pub struct Filter {
    source: String,
    program: cel::Program,
    context: cel::Context<'static, 'static>,
    reads: Reads,
}

/// What of an event a filter can read: building CEL's map of the whole
/// event for every event (every string copied) costs more than most
/// handlers' work, while most filters look at one or two keys.
///
/// Worked out from the expression's text, conservatively: a key is left
/// out only when the text shows the expression cannot reach it. Every use
/// of `event` (and of `event.fields`) must be a plain member selection
/// `event.KEY` (`fields.NAME`) for the rest to be left out; indexing
/// (`[`), macros and functions over the map (`event.fields.exists(...)`,
/// `size(event.fields)`, `"user" in event.fields`) read everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Reads {
    /// The whole event.
    everything: bool,
    /// Top-level keys named (`kind`, `fields`, ...).
    keys: std::collections::BTreeSet<String>,
    /// Every field.
    all_fields: bool,
    /// Fields named.
    fields: std::collections::BTreeSet<String>,
}

impl Reads {
    fn of(source: &str) -> Reads {
        let mut reads = Reads::default();
        if source.contains('[') {
            reads.everything = true;
            return reads;
        }
        let bytes = source.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            let Some((start, end)) = next_identifier(bytes, at) else {
                break;
            };
            at = end;
            if &source[start..end] != "event" || preceded_by_dot(bytes, start) {
                continue;
            }
            let Some((key, after_key)) = member(source, end) else {
                reads.everything = true;
                return reads;
            };
            at = after_key;
            reads.keys.insert(key.to_owned());
            if key == "fields" {
                match member(source, after_key) {
                    Some((name, after_name)) => {
                        reads.fields.insert(name.to_owned());
                        at = after_name;
                    }
                    None => reads.all_fields = true,
                }
            }
        }
        reads
    }

    fn key(&self, key: &str) -> bool {
        self.everything || self.keys.contains(key)
    }

    fn field(&self, name: &str) -> bool {
        self.everything || self.all_fields || self.fields.contains(name)
    }
}

/// The next identifier at or after `from`: (start, end).
fn next_identifier(bytes: &[u8], from: usize) -> Option<(usize, usize)> {
    let is_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    let is_part = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut at = from;
    while at < bytes.len() {
        if is_start(bytes[at]) && (at == 0 || !is_part(bytes[at - 1])) {
            let start = at;
            while at < bytes.len() && is_part(bytes[at]) {
                at += 1;
            }
            return Some((start, at));
        }
        at += 1;
    }
    None
}

fn preceded_by_dot(bytes: &[u8], start: usize) -> bool {
    bytes[..start]
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'.')
}

/// `.NAME` right after `end` (white space allowed), not a method call:
/// the name and where it ends.
fn member(source: &str, end: usize) -> Option<(&str, usize)> {
    let bytes = source.as_bytes();
    let mut at = end;
    while at < bytes.len() && bytes[at].is_ascii_whitespace() {
        at += 1;
    }
    if bytes.get(at) != Some(&b'.') {
        return None;
    }
    let (start, name_end) = next_identifier(bytes, at + 1)?;
    if !bytes[at + 1..start].iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let mut after = name_end;
    while after < bytes.len() && bytes[after].is_ascii_whitespace() {
        after += 1;
    }
    if bytes.get(after) == Some(&b'(') {
        return None;
    }
    Some((&source[start..name_end], name_end))
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("source", &self.source)
            .finish()
    }
}

impl Filter {
    /// Compile `source`.
    pub fn compile(source: &str) -> Result<Filter, FilterError> {
        let program = cel::Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            let (line, column) = first.map_or((1, 1), |error| {
                (
                    usize::try_from(error.pos.0).unwrap_or(1).max(1),
                    usize::try_from(error.pos.1).unwrap_or(1).max(1),
                )
            });
            FilterError {
                line,
                column,
                message: first.map_or_else(|| errors.to_string(), |error| error.msg.clone()),
            }
        })?;
        Ok(Filter {
            source: source.to_owned(),
            program,
            context: cel::Context::default(),
            reads: Reads::of(source),
        })
    }

    /// What is wrong with the filter given the events it may see (see
    /// `check.rs`): nothing for a filter that can select them.
    pub fn problems(&self, known: &KnownEvents) -> Vec<String> {
        known.problems(self.program.expression())
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `event` passes. An expression that fails at run time (a
    /// missing field, a type mismatch) or yields a non-boolean is an error,
    /// which the caller counts and treats as false.
    pub fn matches(&self, event: &Dispatched) -> Result<bool, String> {
        let mut scope = self.context.new_inner_scope();
        scope.add_variable_from_value("event", event_value(event, &self.reads));
        match self.program.execute(&scope) {
            Ok(cel::Value::Bool(pass)) => Ok(pass),
            Ok(other) => Err(format!("the filter gave {other:?}, not a boolean")),
            Err(error) => Err(error.to_string()),
        }
    }
}

fn cel_value(value: &Value) -> cel::Value {
    match value {
        Value::Integer(n) => cel::Value::Int(*n),
        Value::Float(x) => cel::Value::Float(*x),
        Value::Text(text) | Value::Email(text) => cel::Value::String(Arc::new(text.clone())),
        Value::Boolean(b) => cel::Value::Bool(*b),
        Value::Timestamp(time) => cel::Value::Int(time.seconds),
    }
}

/// The `event` variable, with what the filter `reads` of it.
fn event_value(event: &Dispatched, reads: &Reads) -> cel::Value {
    let string = |text: &str| cel::Value::String(Arc::new(text.to_owned()));
    let mut map: HashMap<String, cel::Value> = HashMap::new();
    if reads.key("kind") {
        map.insert("kind".into(), string(&event.decl.kind));
    }
    if reads.key("module") {
        map.insert("module".into(), string(&event.module));
    }
    if reads.key("severity") {
        map.insert("severity".into(), string(event.decl.severity.name()));
    }
    if reads.key("summary") {
        map.insert("summary".into(), string(&event.summary));
    }
    if reads.key("time") {
        map.insert("time".into(), cel::Value::Int(event.time.seconds));
    }
    if reads.key("fields") {
        let fields: HashMap<String, cel::Value> = event
            .decl
            .fields
            .iter()
            .zip(event.values().iter())
            .filter(|(declared, _)| reads.field(&declared.name))
            .map(|(declared, value)| (declared.name.clone(), cel_value(value)))
            .collect();
        map.insert("fields".into(), cel::Value::from(fields));
    }
    cel::Value::from(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EventDecl, FieldValues, Severity, Timestamp, ValueType};

    fn event(kind: &str, severity: Severity, user: &str) -> Dispatched {
        let field = crate::types::undescribed_field;
        Dispatched {
            module: "OpenSSH".into(),
            decl: std::sync::Arc::new(EventDecl {
                kind: kind.into(),
                severity,
                description: String::new(),
                fields: vec![
                    field("user", ValueType::Text),
                    field("failures", ValueType::Integer),
                ],
            }),
            time: Timestamp::EPOCH,
            summary: "s".into(),
            values: FieldValues::Values(vec![Value::Text(user.into()), Value::Integer(3)]),
            record: 0,
        }
    }

    #[test]
    fn selects_on_severity_kind_module_and_fields() {
        let failed = event("SSHDLoginFailed", Severity::Error, "root");
        let cases = [
            ("event.severity == \"error\"", true),
            ("event.kind == \"SSHDLoginSucceeded\"", false),
            (
                "event.module == \"OpenSSH\" && event.fields.failures >= 3",
                true,
            ),
            ("event.fields.user in [\"root\", \"admin\"]", true),
            ("event.summary.startsWith(\"x\")", false),
        ];
        for (source, expected) in cases {
            let filter = Filter::compile(source).expect("compiles");
            assert_eq!(filter.matches(&failed), Ok(expected), "{source}");
        }
    }

    #[test]
    fn reading_only_what_the_expression_names_gives_the_same_answers() {
        let events = [
            event("SSHDLoginFailed", Severity::Error, "root"),
            event("SSHDLoginSucceeded", Severity::Info, "alice"),
        ];
        let sources = [
            "event.kind == \"SSHDLoginFailed\"",
            "event . severity == \"error\" || event.module != \"OpenSSH\"",
            "event.fields.user == \"root\" && event.fields.failures > 2",
            "has(event.fields.user) && !has(event.fields.nope)",
            "event.fields.exists(name, name == \"user\")",
            "size(event.fields) == 2 && size(event) == 6",
            "\"user\" in event.fields",
            "event[\"kind\"] == \"SSHDLoginFailed\"",
            "event.fields.user.startsWith(\"ro\")",
            "event.summary.size() > 0 && event.time == 0",
            "event.fields.nope == 1",
        ];
        for source in sources {
            let filter = Filter::compile(source).expect("compiles");
            let mut whole = Filter::compile(source).expect("compiles");
            whole.reads = Reads {
                everything: true,
                ..Reads::default()
            };
            for event in &events {
                assert_eq!(
                    filter.matches(event).map_err(|_| ()),
                    whole.matches(event).map_err(|_| ()),
                    "{source} on {}",
                    event.decl.kind
                );
            }
        }
        assert_eq!(
            Reads::of("event.kind == \"x\" && event.fields.user == \"y\""),
            Reads {
                everything: false,
                keys: ["kind".to_owned(), "fields".to_owned()].into(),
                all_fields: false,
                fields: ["user".to_owned()].into(),
            }
        );
        assert!(Reads::of("size(event) > 1").everything);
        assert!(Reads::of("event.fields.exists(k, true)").all_fields);
    }

    #[test]
    fn reports_where_a_filter_does_not_compile() {
        let error = Filter::compile("event.severity == ").expect_err("incomplete");
        assert_eq!((error.line, error.column), (1, 19));
        let error = Filter::compile("event.kind ==\n  = \"x\"").expect_err("bad");
        assert_eq!(error.line, 2);
    }

    #[test]
    fn run_time_errors_are_errors_not_matches() {
        let filter = Filter::compile("event.fields.nope == 1").expect("compiles");
        assert!(filter.matches(&event("K", Severity::Info, "u")).is_err());
        let filter = Filter::compile("event.kind").expect("compiles");
        assert!(filter.matches(&event("K", Severity::Info, "u")).is_err());
    }
}
