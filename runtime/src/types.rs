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

/// A field declaration without a description, for tests' event types.
#[cfg(test)]
pub(crate) fn undescribed_field(name: &str, value_type: ValueType) -> FieldDecl {
    FieldDecl {
        name: name.into(),
        value_type,
        description: String::new(),
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

    /// Earliest valid time: 0000-01-01T00:00:00Z.
    pub const MIN_SECONDS: i64 = -62_167_219_200;

    /// Latest valid second: 9999-12-31T23:59:59Z.
    pub const MAX_SECONDS: i64 = 253_402_300_799;

    /// Largest UTC offset, minutes either way (a day; real zones stay
    /// within 14 hours).
    pub const MAX_OFFSET_MINUTES: i16 = 24 * 60;

    /// Whether the time is one that every handler can print and every
    /// filter compare: nanoseconds below a second, an offset within a day,
    /// years 0 to 9999. A guest's timestamp that is not is refused, so that
    /// no output shows a year of -292277022657 or an offset of +546:07.
    pub fn is_valid(&self) -> bool {
        self.nanoseconds < 1_000_000_000
            && self.offset_minutes.unsigned_abs() <= Self::MAX_OFFSET_MINUTES.unsigned_abs()
            && (Self::MIN_SECONDS..=Self::MAX_SECONDS).contains(&self.seconds)
    }
}

/// An event a module dispatched, validated, on its way from the module
/// thread to the handler thread, and through filters to handlers. The
/// module thread (the replay's bottleneck) neither copies the instance name
/// nor the field names into every event: both are shared. Handlers that
/// take their events packed get them packed from this; others get a
/// [`DeliveredEvent`] made from it.
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
    /// The index, in the batch being processed, of the record that
    /// triggered it ([`Dispatched::AFTER_BATCH`] when unknown): events of
    /// several modules reach the handlers in record order.
    pub record: u32,
}

/// An event's field values in declared order, as they came from the module.
#[derive(Debug, Clone)]
pub enum FieldValues {
    /// Lifted one by one (`dispatch`, `dispatch-values`), or made by the host.
    Values(Vec<Value>),
    /// Packed by `dispatch-encoded` and checked against the declaration;
    /// unpacked only where needed, never on the module thread.
    Encoded(Vec<u8>),
}

impl Dispatched {
    /// [`Dispatched::record`] of an event no record is known to have
    /// triggered (a tick's, a module's that does not say): after the
    /// batch's records.
    pub const AFTER_BATCH: u32 = u32::MAX;

    /// The fields' values in declared order, unpacked if they came packed.
    pub fn values(&self) -> std::borrow::Cow<'_, [Value]> {
        match &self.values {
            FieldValues::Values(values) => std::borrow::Cow::Borrowed(values),
            FieldValues::Encoded(bytes) => {
                std::borrow::Cow::Owned(crate::host::decode_values(&self.decl, bytes))
            }
        }
    }

    /// Bytes the event holds (itself, its summary and its values): what
    /// bounds the events waiting between the module and handler threads.
    pub fn held_bytes(&self) -> usize {
        let values = match &self.values {
            FieldValues::Encoded(bytes) => bytes.len(),
            FieldValues::Values(values) => values
                .iter()
                .map(|value| {
                    std::mem::size_of::<Value>()
                        + match value {
                            Value::Text(text) | Value::Email(text) => text.len(),
                            _ => 0,
                        }
                })
                .sum(),
        };
        std::mem::size_of::<Self>() + self.summary.len() + values
    }

    /// The event as handlers without `packed-handler` receive it.
    pub fn to_delivered(&self) -> DeliveredEvent {
        DeliveredEvent {
            module: self.module.to_string(),
            kind: self.decl.kind.clone(),
            severity: self.decl.severity,
            time: self.time,
            summary: self.summary.clone(),
            fields: self
                .decl
                .fields
                .iter()
                .zip(self.values().iter())
                .map(|(declared, value)| Field {
                    name: declared.name.clone(),
                    value: value.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    fn at(seconds: i64, nanoseconds: u32, offset_minutes: i16) -> bool {
        Timestamp {
            seconds,
            nanoseconds,
            offset_minutes,
        }
        .is_valid()
    }

    #[test]
    fn a_valid_time_has_its_nanoseconds_offset_and_year_in_range() {
        assert!(at(0, 999_999_999, 1440));
        assert!(at(Timestamp::MIN_SECONDS, 0, -1440));
        assert!(at(Timestamp::MAX_SECONDS, 0, 0));
        assert!(!at(0, 1_000_000_000, 0));
        assert!(!at(0, 0, 1441));
        assert!(!at(0, 0, -1441));
        // Found by the packed_values fuzz target: -32768 has no absolute
        // value in i16, and wrapped to a "valid" offset.
        assert!(!at(0, 0, i16::MIN));
        assert!(!at(Timestamp::MIN_SECONDS - 1, 0, 0));
        assert!(!at(Timestamp::MAX_SECONDS + 1, 0, 0));
        assert!(!at(i64::MIN, 0, 0));
    }
}
