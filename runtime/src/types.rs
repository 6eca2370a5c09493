//! The contract's data types as the host uses them: records, values, events.
//! They come from the WIT bindings, so what the host builds crosses into a
//! component without conversion.

pub use crate::host::bindings::module::correlator::plugin::events::DispatchError;
pub use crate::host::bindings::module::correlator::plugin::types::{
    ConfigItem, DeliveredEvent, Descriptor, Event, EventDecl, Field, FieldDecl, RecordBatch,
    Severity, TickKind, TimerTick, Timestamp, Value, ValueType,
};

impl ValueType {
    /// The name used in the app file, `correlator config` and messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::Text => "text",
            ValueType::Boolean => "boolean",
            ValueType::Email => "email",
            ValueType::Timestamp => "timestamp",
        }
    }
}

impl Value {
    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Integer(_) => ValueType::Integer,
            Value::Float(_) => ValueType::Float,
            Value::Text(_) => ValueType::Text,
            Value::Boolean(_) => ValueType::Boolean,
            Value::Email(_) => ValueType::Email,
            Value::Timestamp(_) => ValueType::Timestamp,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Integer(value) => write!(f, "{value}"),
            Value::Float(value) => write!(f, "{value}"),
            Value::Text(value) | Value::Email(value) => write!(f, "{value:?}"),
            Value::Boolean(value) => write!(f, "{value}"),
            Value::Timestamp(value) => write!(f, "{}.{:09}", value.seconds, value.nanoseconds),
        }
    }
}

impl Severity {
    /// `info`, `warning` or `error`, as filters and the JSON log see it.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl Timestamp {
    /// The Unix epoch, for records without a time.
    pub const EPOCH: Timestamp = Timestamp {
        seconds: 0,
        nanoseconds: 0,
        offset_minutes: 0,
    };
}

/// An event a module dispatched, validated, on its way from the module
/// thread to the handler thread. It becomes a [`DeliveredEvent`] there, so
/// that the module thread (the replay's bottleneck) neither copies the
/// instance name nor the field names into every event: both are shared.
#[derive(Debug, Clone)]
pub struct Dispatched {
    /// The module instance that dispatched it.
    pub module: std::sync::Arc<str>,
    /// Its declared type: kind, severity, and the fields' names in order.
    pub decl: std::sync::Arc<EventDecl>,
    /// The triggering record's time, or the stream clock's.
    pub time: Timestamp,
    /// One line for people.
    pub summary: String,
    /// The fields' values, in declared order.
    pub values: FieldValues,
}

/// An event's field values in declared order, as they came from the module.
#[derive(Debug, Clone)]
pub enum FieldValues {
    /// Lifted one by one (`dispatch`, `dispatch-values`), or made by the host.
    Values(Vec<Value>),
    /// Packed by `dispatch-encoded` and checked against the declaration;
    /// unpacked on the handler thread, so that the module thread (the
    /// bottleneck) makes no string for them.
    Encoded(Vec<u8>),
}

impl Dispatched {
    /// The event as handlers receive it.
    pub fn into_delivered(self) -> DeliveredEvent {
        DeliveredEvent {
            module: self.module.to_string(),
            kind: self.decl.kind.clone(),
            severity: self.decl.severity,
            time: self.time,
            summary: self.summary,
            fields: self
                .decl
                .fields
                .iter()
                .zip(match self.values {
                    FieldValues::Values(values) => values,
                    FieldValues::Encoded(bytes) => crate::host::decode_values(&self.decl, &bytes),
                })
                .map(|(declared, value)| Field {
                    name: declared.name.clone(),
                    value,
                })
                .collect(),
        }
    }
}
