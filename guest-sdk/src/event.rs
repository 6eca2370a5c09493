//! Building and dispatching events.

use crate::__bindings::module::correlator::plugin::events;
use crate::__bindings::{self as wit, DispatchError};
use crate::{Timestamp, Value};

/// An event under construction. Fields must match the event type the module
/// declared in its [`Descriptor`](crate::Descriptor): the host refuses an
/// event with a missing, undeclared or mistyped field.
#[derive(Debug, Clone)]
#[must_use = "an event does nothing until it is dispatched"]
pub struct Event(wit::module::correlator::plugin::types::Event);

impl Event {
    /// An event of a declared `kind`, with a one-line summary for people.
    pub fn new(kind: &str, summary: impl Into<String>) -> Self {
        Event(wit::module::correlator::plugin::types::Event {
            kind: kind.to_owned(),
            summary: summary.into(),
            fields: Vec::new(),
            time: crate::record::current_time(),
        })
    }

    /// Say when the event happened, instead of the time of the record being
    /// processed.
    pub fn at(mut self, time: Timestamp) -> Self {
        self.0.time = Some(time);
        self
    }

    /// Set a field to any value.
    pub fn field(mut self, name: &str, value: Value) -> Self {
        self.0.fields.push(wit::Field {
            name: name.to_owned(),
            value,
        });
        self
    }

    /// Set a string field.
    pub fn text(self, name: &str, value: impl Into<String>) -> Self {
        self.field(name, Value::Text(value.into()))
    }

    /// Set an integer field.
    pub fn integer(self, name: &str, value: i64) -> Self {
        self.field(name, Value::Integer(value))
    }

    /// Set a float field.
    pub fn float(self, name: &str, value: f64) -> Self {
        self.field(name, Value::Float(value))
    }

    /// Set a timestamp field.
    pub fn timestamp(self, name: &str, value: Timestamp) -> Self {
        self.field(name, Value::Timestamp(value))
    }

    /// Hand the event to the host, which validates it and routes it to every
    /// handler whose filter selects it. The host logs a refusal itself, so
    /// most modules can ignore the error.
    pub fn dispatch(self) -> Result<(), DispatchError> {
        events::dispatch(&self.0)
    }
}
