//! Builders for what a component declares about itself.

use crate::__bindings as wit;
use crate::{Severity, Timestamp, Value, ValueType};

/// What a component declares: name, description, configuration items and
/// (for modules) the event types it may dispatch. The host merges the items
/// into its configuration store and validates every event against its type.
#[derive(Debug, Clone)]
pub struct Descriptor {
    name: String,
    description: String,
    config: Vec<ConfigItem>,
    events: Vec<EventType>,
}

impl Descriptor {
    /// A component called `name` (shown by `correlator inspect` and in logs).
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Descriptor {
            name: name.into(),
            description: description.into(),
            config: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Declare a configuration item.
    pub fn config(mut self, item: ConfigItem) -> Self {
        self.config.push(item);
        self
    }

    /// Declare an event type the module may dispatch.
    pub fn event(mut self, event: EventType) -> Self {
        self.events.push(event);
        self
    }

    #[doc(hidden)]
    pub fn into_wit(self) -> wit::Descriptor {
        wit::Descriptor {
            name: self.name,
            description: self.description,
            config: self.config.into_iter().map(|item| item.0).collect(),
            events: self.events.into_iter().map(|event| event.0).collect(),
        }
    }
}

/// One typed configuration item with its default and description.
#[derive(Debug, Clone)]
pub struct ConfigItem(wit::ConfigItem);

impl ConfigItem {
    fn new(key: &str, default: Value, value_type: ValueType, description: &str) -> Self {
        ConfigItem(wit::ConfigItem {
            key: key.to_owned(),
            value_type,
            default,
            description: description.to_owned(),
        })
    }

    /// A whole number.
    pub fn integer(key: &str, default: i64, description: &str) -> Self {
        Self::new(
            key,
            Value::Integer(default),
            ValueType::Integer,
            description,
        )
    }

    /// A floating-point number.
    pub fn float(key: &str, default: f64, description: &str) -> Self {
        Self::new(key, Value::Float(default), ValueType::Float, description)
    }

    /// A string.
    pub fn text(key: &str, default: &str, description: &str) -> Self {
        Self::new(
            key,
            Value::Text(default.to_owned()),
            ValueType::Text,
            description,
        )
    }

    /// A flag (`true/false/yes/no/1/0` on the command line).
    pub fn boolean(key: &str, default: bool, description: &str) -> Self {
        Self::new(
            key,
            Value::Boolean(default),
            ValueType::Boolean,
            description,
        )
    }

    /// An e-mail address, checked by the host to look like `local@domain`.
    pub fn email(key: &str, default: &str, description: &str) -> Self {
        Self::new(
            key,
            Value::Email(default.to_owned()),
            ValueType::Email,
            description,
        )
    }
}

/// An event type: its kind, severity, description and ordered fields.
#[derive(Debug, Clone)]
pub struct EventType(wit::EventDecl);

impl EventType {
    /// An event type with no fields yet.
    pub fn new(kind: &str, severity: Severity, description: &str) -> Self {
        EventType(wit::EventDecl {
            kind: kind.to_owned(),
            severity,
            description: description.to_owned(),
            fields: Vec::new(),
        })
    }

    /// Add a field of any type.
    pub fn field(mut self, name: &str, value_type: ValueType, description: &str) -> Self {
        self.0.fields.push(wit::FieldDecl {
            name: name.to_owned(),
            value_type,
            description: description.to_owned(),
        });
        self
    }

    /// Add a string field.
    pub fn text(self, name: &str, description: &str) -> Self {
        self.field(name, ValueType::Text, description)
    }

    /// Add an integer field.
    pub fn integer(self, name: &str, description: &str) -> Self {
        self.field(name, ValueType::Integer, description)
    }

    /// Add a float field.
    pub fn float(self, name: &str, description: &str) -> Self {
        self.field(name, ValueType::Float, description)
    }

    /// Add a timestamp field.
    pub fn timestamp(self, name: &str, description: &str) -> Self {
        self.field(name, ValueType::Timestamp, description)
    }
}

impl From<Timestamp> for Value {
    fn from(time: Timestamp) -> Self {
        Value::Timestamp(time)
    }
}
