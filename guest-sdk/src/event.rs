//! Building and dispatching events.
//!
//! An event whose fields are set in the order its type declares them (as
//! the builder is normally used) crosses to the host as its type's index
//! and its values packed into one byte list (`events.dispatch-encoded`): no
//! field name is copied on either side and no value costs an allocation,
//! which is most of what an event would cost. Anything else goes with its
//! names (`events.dispatch`), and the host says exactly what is wrong with
//! it.

use crate::__bindings::{self as wit, DispatchError};
use crate::sys::events;
use crate::{Timestamp, Value, ValueType};
use std::cell::RefCell;
use std::rc::Rc;

/// One declared event type: its index in the descriptor, its kind, and its
/// fields' names and types in order.
#[derive(Debug)]
pub(crate) struct DeclaredEvent {
    pub(crate) index: u32,
    pub(crate) kind: String,
    pub(crate) fields: Vec<(String, ValueType)>,
}

/// The declared event type `index` (the test host decodes events by it).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn declared_by_index(index: u32) -> Option<Rc<DeclaredEvent>> {
    DECLARED.with(|cell| cell.borrow().get(usize::try_from(index).ok()?).cloned())
}

/// The declared event type of `kind` (the test host checks events by it).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn declared_by_kind(kind: &str) -> Option<Rc<DeclaredEvent>> {
    DECLARED.with(|cell| {
        cell.borrow()
            .iter()
            .find(|event| event.kind == kind)
            .cloned()
    })
}

thread_local! {
    /// The module's event types, in the order its descriptor declares them
    /// (the index `dispatch-encoded` names them by).
    static DECLARED: RefCell<Vec<Rc<DeclaredEvent>>> = const { RefCell::new(Vec::new()) };
}

/// Remember the event types of `descriptor` (the module's own), so that
/// events can be dispatched by index. Called by `export_module!` in `init`.
#[doc(hidden)]
pub fn __declare_events(descriptor: &wit::Descriptor) {
    let declared = descriptor
        .events
        .iter()
        .zip(0..)
        .map(|(event, index)| {
            Rc::new(DeclaredEvent {
                index,
                kind: event.kind.clone(),
                fields: event
                    .fields
                    .iter()
                    .map(|field| (field.name.clone(), field.value_type))
                    .collect(),
            })
        })
        .collect();
    DECLARED.with(|cell| *cell.borrow_mut() = declared);
}

fn type_of(value: &Value) -> ValueType {
    match value {
        Value::Integer(_) => ValueType::Integer,
        Value::Float(_) => ValueType::Float,
        Value::Text(_) => ValueType::Text,
        Value::Boolean(_) => ValueType::Boolean,
        Value::Email(_) => ValueType::Email,
        Value::Timestamp(_) => ValueType::Timestamp,
    }
}

/// An event under construction. Fields must match the event type the module
/// declared in its [`Descriptor`](crate::Descriptor): the host refuses an
/// event with a missing, undeclared or mistyped field.
#[derive(Debug, Clone)]
#[must_use = "an event does nothing until it is dispatched"]
pub struct Event(Build);

#[derive(Debug, Clone)]
enum Build {
    /// Every field so far is the next one the type declares, with its
    /// type: only the values are kept, encoded as `dispatch-encoded` takes
    /// them.
    Declared {
        event: Rc<DeclaredEvent>,
        summary: String,
        values: Vec<u8>,
        /// Fields set so far.
        set: usize,
        time: Option<Timestamp>,
    },
    /// Anything else: the event with its names, for the host to judge.
    Named(wit::module::correlator::plugin::types::Event),
}

/// Bytes an encoded event reserves per declared field (an integer takes 8,
/// a short text a few more).
const BYTES_PER_FIELD: usize = 24;

std::thread_local! {
    /// The buffer the last event dispatched was encoded in: the next event
    /// is encoded in it, so that dispatching costs no allocation.
    static SPARE_VALUES: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Event {
    /// An event of a declared `kind`, with a one-line summary for people.
    pub fn new(kind: &str, summary: impl Into<String>) -> Self {
        let time = crate::record::current_time();
        let declared = DECLARED.with(|cell| {
            cell.borrow()
                .iter()
                .find(|event| event.kind == kind)
                .cloned()
        });
        Event(match declared {
            Some(event) => Build::Declared {
                values: {
                    let mut values = SPARE_VALUES.take();
                    values.clear();
                    values.reserve(event.fields.len() * BYTES_PER_FIELD);
                    values
                },
                set: 0,
                event,
                summary: summary.into(),
                time,
            },
            None => Build::Named(wit::module::correlator::plugin::types::Event {
                kind: kind.to_owned(),
                summary: summary.into(),
                fields: Vec::new(),
                time,
            }),
        })
    }

    /// Say when the event happened, instead of the time of the record being
    /// processed.
    pub fn at(mut self, time: Timestamp) -> Self {
        match &mut self.0 {
            Build::Declared { time: at, .. } => *at = Some(time),
            Build::Named(event) => event.time = Some(time),
        }
        self
    }

    /// If `name` of `value_type` is the next field the type declares, the
    /// bytes to append its encoding to (it then counts as set).
    fn next_declared(&mut self, name: &str, value_type: ValueType) -> Option<&mut Vec<u8>> {
        let Build::Declared {
            event, values, set, ..
        } = &mut self.0
        else {
            return None;
        };
        let (declared, declared_type) = event.fields.get(*set)?;
        if declared != name || *declared_type != value_type {
            return None;
        }
        *set += 1;
        Some(values)
    }

    /// The event with its names, and `name` set to `value`.
    fn with_named(self, name: &str, value: Value) -> Self {
        let mut event = self.into_named();
        event.fields.push(wit::Field {
            name: name.to_owned(),
            value,
        });
        Event(Build::Named(event))
    }

    /// Set a field to any value.
    pub fn field(mut self, name: &str, value: Value) -> Self {
        match self.next_declared(name, type_of(&value)) {
            Some(bytes) => {
                encode(&value, bytes);
                self
            }
            None => self.with_named(name, value),
        }
    }

    /// The event with its fields' names.
    fn into_named(self) -> wit::module::correlator::plugin::types::Event {
        match self.0 {
            Build::Named(event) => event,
            Build::Declared {
                event,
                summary,
                values,
                set,
                time,
            } => wit::module::correlator::plugin::types::Event {
                kind: event.kind.clone(),
                summary,
                fields: event.fields[..set]
                    .iter()
                    .zip(decode(&event.fields[..set], &values))
                    .map(|((name, _), value)| wit::Field {
                        name: name.clone(),
                        value,
                    })
                    .collect(),
                time,
            },
        }
    }

    /// Set a string field.
    pub fn text(mut self, name: &str, value: impl AsRef<str>) -> Self {
        let text = value.as_ref();
        match self.next_declared(name, ValueType::Text) {
            Some(bytes) => {
                encode_text(text, bytes);
                self
            }
            None => self.with_named(name, Value::Text(text.to_owned())),
        }
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
        crate::record::announce_record();
        if let Build::Declared {
            event,
            summary,
            values,
            set,
            time,
        } = &self.0
            && event.fields.len() == *set
        {
            let dispatched = events::dispatch_encoded(event.index, summary, values, *time);
            if let Build::Declared { values, .. } = self.0 {
                SPARE_VALUES.set(values);
            }
            return dispatched;
        }
        events::dispatch(&self.into_named())
    }
}

/// Append `value` to `bytes` as `dispatch-encoded` takes it (its type is
/// the declared one, so no tag).
fn encode(value: &Value, bytes: &mut Vec<u8>) {
    match value {
        Value::Integer(integer) => bytes.extend_from_slice(&integer.to_le_bytes()),
        Value::Float(float) => bytes.extend_from_slice(&float.to_le_bytes()),
        Value::Boolean(boolean) => bytes.push(u8::from(*boolean)),
        Value::Text(text) | Value::Email(text) => encode_text(text, bytes),
        Value::Timestamp(time) => {
            bytes.extend_from_slice(&time.seconds.to_le_bytes());
            bytes.extend_from_slice(&time.nanoseconds.to_le_bytes());
            bytes.extend_from_slice(&time.offset_minutes.to_le_bytes());
        }
    }
}

/// Append a text's length (u32) and bytes. Texts in a 32-bit guest are
/// shorter than 4 GiB.
fn encode_text(text: &str, bytes: &mut Vec<u8>) {
    let length = u32::try_from(text.len()).unwrap_or(u32::MAX);
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
}

/// The values [`encode`] appended for `fields`, back (to send an event
/// that left declared order with its names).
pub(crate) fn decode(fields: &[(String, ValueType)], bytes: &[u8]) -> Vec<Value> {
    let mut reader = crate::packed::Reader::new(bytes);
    fields
        .iter()
        .map_while(|(name, value_type)| reader.value(*value_type, name).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_values_decode_to_what_was_encoded() {
        let values = [
            Value::Integer(-3),
            Value::Float(0.5),
            Value::Text("törst".into()),
            Value::Boolean(true),
            Value::Email("root@example.org".into()),
            Value::Timestamp(Timestamp {
                seconds: 1_676_923_967,
                nanoseconds: 250,
                offset_minutes: -300,
            }),
            Value::Text(String::new()),
        ];
        let fields: Vec<(String, ValueType)> = values
            .iter()
            .enumerate()
            .map(|(n, value)| (format!("f{n}"), type_of(value)))
            .collect();
        let mut bytes = Vec::new();
        for value in &values {
            encode(value, &mut bytes);
        }
        // Integer, float, "törst", boolean, the address, the time, "".
        assert_eq!(bytes.len(), 8 + 8 + (4 + 6) + 1 + (4 + 16) + 14 + 4);
        assert_eq!(&bytes[..8], &(-3i64).to_le_bytes());
        assert_eq!(&bytes[16..20], &6u32.to_le_bytes());
        // The bindings' values have no `PartialEq`; their debug text shows
        // every part.
        assert_eq!(
            format!("{:?}", decode(&fields, &bytes)),
            format!("{values:?}")
        );
    }
}
