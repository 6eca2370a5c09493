//! Building and dispatching events.
//!
//! An event whose fields are set in the order its type declares them (as
//! the builder is normally used) crosses to the host as its type's index
//! and its values only (`events.dispatch-values`): no field name is copied
//! on either side, which is most of what an event costs. Anything else goes
//! with its names (`events.dispatch`), and the host says exactly what is
//! wrong with it.

use crate::__bindings::module::correlator::plugin::events;
use crate::__bindings::{self as wit, DispatchError};
use crate::{Timestamp, Value, ValueType};
use std::cell::RefCell;
use std::rc::Rc;

/// One declared event type: its index in the descriptor, its kind, and its
/// fields' names and types in order.
#[derive(Debug)]
struct DeclaredEvent {
    index: u32,
    kind: String,
    fields: Vec<(String, ValueType)>,
}

thread_local! {
    /// The module's event types, in the order its descriptor declares them
    /// (the index `dispatch-values` names them by).
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
    /// type: only the values are kept.
    Declared {
        event: Rc<DeclaredEvent>,
        summary: String,
        values: Vec<Value>,
        time: Option<Timestamp>,
    },
    /// Anything else: the event with its names, for the host to judge.
    Named(wit::module::correlator::plugin::types::Event),
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
                values: Vec::with_capacity(event.fields.len()),
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

    /// Set a field to any value.
    pub fn field(mut self, name: &str, value: Value) -> Self {
        if let Build::Declared { event, values, .. } = &mut self.0
            && event
                .fields
                .get(values.len())
                .is_some_and(|(declared, value_type)| {
                    declared == name && *value_type == type_of(&value)
                })
        {
            values.push(value);
            return self;
        }
        let mut event = self.into_named();
        event.fields.push(wit::Field {
            name: name.to_owned(),
            value,
        });
        Event(Build::Named(event))
    }

    /// The event with its fields' names.
    fn into_named(self) -> wit::module::correlator::plugin::types::Event {
        match self.0 {
            Build::Named(event) => event,
            Build::Declared {
                event,
                summary,
                values,
                time,
            } => wit::module::correlator::plugin::types::Event {
                kind: event.kind.clone(),
                summary,
                fields: event
                    .fields
                    .iter()
                    .zip(values)
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
        if let Build::Declared {
            event,
            summary,
            values,
            time,
        } = &self.0
            && event.fields.len() == values.len()
        {
            return events::dispatch_values(event.index, summary, values, *time);
        }
        events::dispatch(&self.into_named())
    }
}
