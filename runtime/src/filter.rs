//! Handler filters: CEL expressions over the event, compiled once at load.
//!
//! The expression sees one variable, `event`, with `kind`, `module`,
//! `severity` (`"info"`, `"warning"`, `"error"`), `summary`, `time` (seconds
//! since the epoch) and `fields` (a map of the event's fields). For example
//! `event.severity == "error" && event.fields.user == "root"`.

use crate::types::{DeliveredEvent, Value};
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
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `event` passes. An expression that fails at run time (a
    /// missing field, a type mismatch) or yields a non-boolean is an error,
    /// which the caller counts and treats as false.
    pub fn matches(&self, event: &DeliveredEvent) -> Result<bool, String> {
        let mut scope = self.context.new_inner_scope();
        scope.add_variable_from_value("event", event_value(event));
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

fn event_value(event: &DeliveredEvent) -> cel::Value {
    let fields: HashMap<String, cel::Value> = event
        .fields
        .iter()
        .map(|field| (field.name.clone(), cel_value(&field.value)))
        .collect();
    let string = |text: &str| cel::Value::String(Arc::new(text.to_owned()));
    let mut map: HashMap<String, cel::Value> = HashMap::new();
    map.insert("kind".into(), string(&event.kind));
    map.insert("module".into(), string(&event.module));
    map.insert("severity".into(), string(event.severity.name()));
    map.insert("summary".into(), string(&event.summary));
    map.insert("time".into(), cel::Value::Int(event.time.seconds));
    map.insert("fields".into(), cel::Value::from(fields));
    cel::Value::from(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Field, Severity, Timestamp};

    fn event(kind: &str, severity: Severity, user: &str) -> DeliveredEvent {
        DeliveredEvent {
            module: "OpenSSH".into(),
            kind: kind.into(),
            severity,
            time: Timestamp::EPOCH,
            summary: "s".into(),
            fields: vec![
                Field {
                    name: "user".into(),
                    value: Value::Text(user.into()),
                },
                Field {
                    name: "failures".into(),
                    value: Value::Integer(3),
                },
            ],
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
