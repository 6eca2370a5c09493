//! The typed configuration store: every item is declared (key, type,
//! default, description) by the part of the system that owns it, and values
//! from the app file and the command line are converted to the declared type
//! or refused. Precedence: declared default < app file < `--option`.

use crate::types::{Timestamp, Value, ValueType};
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// Where an item's current value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The component's or the runtime's declared default.
    Default,
    /// The app file.
    AppFile,
    /// `--option KEY=VALUE`.
    CommandLine,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::AppFile => "app file",
            Source::CommandLine => "command line",
        })
    }
}

/// One declared item and its current value.
#[derive(Debug, Clone)]
pub struct Item {
    /// Dotted key, e.g. `module.OpenSSH.login_failure_limit`.
    pub key: String,
    /// The declared type; every value is converted to it.
    pub value_type: ValueType,
    /// The declared default.
    pub default: Value,
    /// The current value.
    pub value: Value,
    /// Where the current value came from.
    pub source: Source,
    /// What the item is for, from its declaration.
    pub description: String,
}

/// Why a declaration or a value was refused.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    /// Two declarations of one key.
    #[error("configuration item \"{0}\" is declared twice")]
    Duplicate(String),
    /// A declaration whose default is not of its own type.
    #[error("configuration item \"{key}\" declares a {declared} default {default}")]
    DefaultOfWrongType {
        /// The key declared.
        key: String,
        /// The declared type.
        declared: &'static str,
        /// The default as given.
        default: String,
    },
    /// A value for a key nobody declared.
    #[error("unknown configuration item \"{key}\"{known}")]
    Unknown {
        /// The key as written.
        key: String,
        /// The declared keys beside it, to help with a typo.
        known: String,
    },
    /// A value that does not convert to the declared type.
    #[error("configuration item \"{key}\": {value} is not a valid {expected}{reason}")]
    Convert {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// The declared type.
        expected: &'static str,
        /// What a valid value looks like, when that helps.
        reason: String,
    },
    /// `--option` without `=`.
    #[error("option \"{0}\" is not KEY=VALUE")]
    OptionSyntax(String),
}

/// The store. Keys are dotted: `system.run_dir`, `module.<instance>.<key>`,
/// `handler.<instance>.<key>`.
#[derive(Debug, Default, Clone)]
pub struct ConfigStore {
    items: BTreeMap<String, Item>,
}

impl ConfigStore {
    /// An empty store.
    pub fn new() -> Self {
        ConfigStore::default()
    }

    /// Declare an item with its default value.
    pub fn declare(
        &mut self,
        key: &str,
        value_type: ValueType,
        default: Value,
        description: &str,
    ) -> Result<(), ConfigError> {
        if self.items.contains_key(key) {
            return Err(ConfigError::Duplicate(key.to_owned()));
        }
        let default_fits = default.value_type() == value_type
            || (value_type == ValueType::Email && matches!(default, Value::Text(_)));
        if !default_fits {
            return Err(ConfigError::DefaultOfWrongType {
                key: key.to_owned(),
                declared: value_type.name(),
                default: default.to_string(),
            });
        }
        self.items.insert(
            key.to_owned(),
            Item {
                key: key.to_owned(),
                value_type,
                value: default.clone(),
                default,
                source: Source::Default,
                description: description.to_owned(),
            },
        );
        Ok(())
    }

    fn item_mut(&mut self, key: &str) -> Result<&mut Item, ConfigError> {
        if !self.items.contains_key(key) {
            return Err(ConfigError::Unknown {
                key: key.to_owned(),
                known: self.known_siblings(key),
            });
        }
        self.items.get_mut(key).ok_or_else(|| ConfigError::Unknown {
            key: key.to_owned(),
            known: String::new(),
        })
    }

    /// ` (known: a, b)` listing the keys that share `key`'s prefix, to help
    /// with a typo.
    fn known_siblings(&self, key: &str) -> String {
        let prefix = key.rsplit_once('.').map_or("", |(prefix, _)| prefix);
        let siblings: Vec<&str> = self
            .items
            .keys()
            .filter(|k| k.rsplit_once('.').map_or("", |(p, _)| p) == prefix)
            .map(String::as_str)
            .collect();
        if !siblings.is_empty() {
            return format!("; known items here: {}", siblings.join(", "));
        }
        // An instance's item under a name the app does not have: name the
        // instances it has.
        let Some((role @ ("module" | "handler"), _)) = prefix.split_once('.') else {
            return String::new();
        };
        let mut instances: Vec<&str> = self
            .items
            .keys()
            .filter_map(|k| k.strip_prefix(role)?.strip_prefix('.')?.split('.').next())
            .collect();
        instances.dedup();
        if instances.is_empty() {
            return String::new();
        }
        format!("; the app's {role}s: {}", instances.join(", "))
    }

    /// Set an item from text, as given by `--option key=value`.
    pub fn set_text(&mut self, key: &str, text: &str, source: Source) -> Result<(), ConfigError> {
        let item = self.item_mut(key)?;
        item.value = convert_text(key, item.value_type, text)?;
        item.source = source;
        Ok(())
    }

    /// Set an item from an app-file value; strings are converted as text
    /// would be, so `limit = "6"` works like `limit = 6`.
    pub fn set_toml(
        &mut self,
        key: &str,
        value: &toml::Value,
        source: Source,
    ) -> Result<(), ConfigError> {
        let item = self.item_mut(key)?;
        let converted = match (item.value_type, value) {
            (_, toml::Value::String(text)) => convert_text(key, item.value_type, text)?,
            (ValueType::Integer, toml::Value::Integer(n)) => Value::Integer(*n),
            (ValueType::Float, toml::Value::Float(x)) => Value::Float(*x),
            (ValueType::Float, toml::Value::Integer(n)) => Value::Float(*n as f64),
            (ValueType::Boolean, toml::Value::Boolean(b)) => Value::Boolean(*b),
            // A list of texts is one text, comma-separated, as
            // `--option KEY=a,b` gives it (`ignore = ["10.0.0.0/8"]`).
            (ValueType::Text, toml::Value::Array(items)) => Value::Text(join_texts(key, items)?),
            (expected, other) => {
                return Err(ConfigError::Convert {
                    key: key.to_owned(),
                    value: other.to_string(),
                    expected: expected.name(),
                    reason: String::new(),
                });
            }
        };
        item.value = converted;
        item.source = source;
        Ok(())
    }

    /// Apply one `--option KEY=VALUE`.
    pub fn set_option(&mut self, option: &str) -> Result<(), ConfigError> {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| ConfigError::OptionSyntax(option.to_owned()))?;
        self.set_text(key.trim(), value, Source::CommandLine)
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.get(key).map(|item| &item.value)
    }

    /// The current value of an integer item.
    pub fn integer(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Value::Integer(n)) => Some(*n),
            _ => None,
        }
    }

    /// The current value of a text item.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Text(text) | Value::Email(text)) => Some(text),
            _ => None,
        }
    }

    /// Every item, ordered by key.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    /// The values under `prefix.` keyed by the rest of the key: one
    /// instance's own configuration.
    pub fn values_under(&self, prefix: &str) -> BTreeMap<String, Value> {
        let prefix = format!("{prefix}.");
        self.items
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, item)| (key[prefix.len()..].to_owned(), item.value.clone()))
            .collect()
    }
}

/// The texts of a TOML list joined with ", ", for a text item; a list with
/// anything but texts, or a text holding a comma (which the join would
/// split), is refused.
fn join_texts(key: &str, items: &[toml::Value]) -> Result<String, ConfigError> {
    let refuse = |reason: &str| ConfigError::Convert {
        key: key.to_owned(),
        value: toml::Value::Array(items.to_vec()).to_string(),
        expected: ValueType::Text.name(),
        reason: format!(" ({reason})"),
    };
    let texts = items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| refuse("a list must hold only texts"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if texts.iter().any(|text| text.contains(',')) {
        return Err(refuse("an element of a list may not hold a comma"));
    }
    Ok(texts.join(", "))
}

/// Convert text to a declared type. Booleans take `true/false/yes/no/1/0`
/// in any case; e-mail addresses must look like `local@domain`.
pub fn convert_text(key: &str, value_type: ValueType, text: &str) -> Result<Value, ConfigError> {
    let fail = |reason: &str| ConfigError::Convert {
        key: key.to_owned(),
        value: format!("{text:?}"),
        expected: value_type.name(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim();
    match value_type {
        ValueType::Integer => trimmed.parse().map(Value::Integer).map_err(|_| fail("")),
        ValueType::Float => trimmed
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Value::Float)
            .ok_or_else(|| fail("")),
        ValueType::Text => Ok(Value::Text(text.to_owned())),
        ValueType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Boolean(true)),
            "false" | "no" | "0" => Ok(Value::Boolean(false)),
            _ => Err(fail(" (use true/false, yes/no or 1/0)")),
        },
        ValueType::Email => {
            let valid = trimmed.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !trimmed.contains(char::is_whitespace)
            });
            if valid {
                Ok(Value::Email(trimmed.to_owned()))
            } else {
                Err(fail(" (expected local@domain)"))
            }
        }
        ValueType::Timestamp => crate::record::time::parse_rfc3339(trimmed)
            .map(Value::Timestamp)
            .ok_or_else(|| fail(" (expected RFC 3339, e.g. 2023-02-20T15:12:47Z)")),
    }
}

/// Render a value for `correlator config`.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::Timestamp(Timestamp {
            seconds,
            nanoseconds,
            ..
        }) => format!("{seconds}.{nanoseconds:09}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ConfigStore {
        let mut store = ConfigStore::new();
        store
            .declare(
                "module.ssh.limit",
                ValueType::Integer,
                Value::Integer(5),
                "limit",
            )
            .expect("declare");
        store
            .declare(
                "module.ssh.window",
                ValueType::Float,
                Value::Float(300.0),
                "window",
            )
            .expect("declare");
        store
            .declare(
                "handler.mail.to",
                ValueType::Email,
                Value::Email("root@localhost".into()),
                "to",
            )
            .expect("declare");
        store
            .declare(
                "handler.mail.html",
                ValueType::Boolean,
                Value::Boolean(false),
                "html",
            )
            .expect("declare");
        store
    }

    #[test]
    fn command_line_beats_app_file_beats_default() {
        let mut store = store();
        assert_eq!(store.get("module.ssh.limit"), Some(&Value::Integer(5)));
        store
            .set_toml(
                "module.ssh.limit",
                &toml::Value::Integer(6),
                Source::AppFile,
            )
            .expect("app value");
        assert_eq!(store.get("module.ssh.limit"), Some(&Value::Integer(6)));
        store.set_option("module.ssh.limit=7").expect("option");
        assert_eq!(store.get("module.ssh.limit"), Some(&Value::Integer(7)));
        let item = store
            .items()
            .find(|i| i.key == "module.ssh.limit")
            .expect("item");
        assert_eq!(
            (item.source, &item.default),
            (Source::CommandLine, &Value::Integer(5))
        );
    }

    #[test]
    fn refuses_values_that_do_not_convert_naming_key_value_and_type() {
        let mut store = store();
        let error = store
            .set_option("module.ssh.limit=many")
            .expect_err("not an integer");
        assert_eq!(
            error.to_string(),
            "configuration item \"module.ssh.limit\": \"many\" is not a valid integer"
        );
        let error = store
            .set_toml(
                "module.ssh.limit",
                &toml::Value::Boolean(true),
                Source::AppFile,
            )
            .expect_err("not an integer");
        assert_eq!(
            error.to_string(),
            "configuration item \"module.ssh.limit\": true is not a valid integer"
        );
        let error = store
            .set_option("handler.mail.to=nobody")
            .expect_err("not an address");
        assert_eq!(
            error.to_string(),
            "configuration item \"handler.mail.to\": \"nobody\" is not a valid email (expected local@domain)"
        );
        let error = store
            .set_option("handler.mail.html=maybe")
            .expect_err("not a boolean");
        assert_eq!(
            error.to_string(),
            "configuration item \"handler.mail.html\": \"maybe\" is not a valid boolean (use true/false, yes/no or 1/0)"
        );
    }

    #[test]
    fn converts_booleans_floats_and_quoted_numbers() {
        let mut store = store();
        for (text, expected) in [("YES", true), ("no", false), ("1", true), ("False", false)] {
            store
                .set_option(&format!("handler.mail.html={text}"))
                .expect("boolean");
            assert_eq!(
                store.get("handler.mail.html"),
                Some(&Value::Boolean(expected))
            );
        }
        store
            .set_toml(
                "module.ssh.window",
                &toml::Value::Integer(60),
                Source::AppFile,
            )
            .expect("integer widens to float");
        assert_eq!(store.get("module.ssh.window"), Some(&Value::Float(60.0)));
        store
            .set_toml(
                "module.ssh.limit",
                &toml::Value::String("9".into()),
                Source::AppFile,
            )
            .expect("quoted integer");
        assert_eq!(store.integer("module.ssh.limit"), Some(9));
    }

    #[test]
    fn a_list_of_texts_in_the_app_file_is_one_comma_separated_text() {
        let mut store = store();
        store
            .declare(
                "handler.block.ignore",
                ValueType::Text,
                Value::Text(String::new()),
                "ignore",
            )
            .expect("declare");
        let list = |items: &[toml::Value]| toml::Value::Array(items.to_vec());
        let text = |text: &str| toml::Value::String(text.to_owned());
        store
            .set_toml(
                "handler.block.ignore",
                &list(&[text("10.0.0.0/8"), text("2001:db8::/32")]),
                Source::AppFile,
            )
            .expect("a list of texts");
        assert_eq!(
            store.text("handler.block.ignore"),
            Some("10.0.0.0/8, 2001:db8::/32")
        );
        let error = store
            .set_toml(
                "handler.block.ignore",
                &list(&[text("a,b")]),
                Source::AppFile,
            )
            .expect_err("a comma inside");
        assert_eq!(
            error.to_string(),
            "configuration item \"handler.block.ignore\": [\"a,b\"] is not a valid text (an element of a list may not hold a comma)"
        );
        let error = store
            .set_toml(
                "module.ssh.limit",
                &list(&[toml::Value::Integer(1)]),
                Source::AppFile,
            )
            .expect_err("a list for an integer");
        assert_eq!(
            error.to_string(),
            "configuration item \"module.ssh.limit\": [1] is not a valid integer"
        );
    }

    #[test]
    fn refuses_unknown_keys_listing_the_known_ones() {
        let mut store = store();
        let error = store.set_option("module.ssh.limt=3").expect_err("typo");
        assert_eq!(
            error.to_string(),
            "unknown configuration item \"module.ssh.limt\"; known items here: module.ssh.limit, module.ssh.window"
        );
        assert_eq!(
            store.set_option("no-equals-sign"),
            Err(ConfigError::OptionSyntax("no-equals-sign".into()))
        );
    }

    #[test]
    fn refuses_duplicate_declarations_and_mistyped_defaults() {
        let mut store = store();
        assert_eq!(
            store.declare(
                "module.ssh.limit",
                ValueType::Integer,
                Value::Integer(1),
                "again"
            ),
            Err(ConfigError::Duplicate("module.ssh.limit".into()))
        );
        assert!(matches!(
            store.declare("x.y", ValueType::Integer, Value::Text("1".into()), "bad"),
            Err(ConfigError::DefaultOfWrongType { .. })
        ));
    }

    #[test]
    fn lists_one_instances_values() {
        let store = store();
        let values = store.values_under("module.ssh");
        assert_eq!(values.keys().collect::<Vec<_>>(), ["limit", "window"]);
    }
}
