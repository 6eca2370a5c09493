//! Typed access to the instance's own configuration items.
//!
//! The host resolves every item the component declared (default < app file
//! < `--option`) and checks its type before `init` runs, so a declared key
//! always has a value of its declared type.

use crate::Value;
use crate::sys::config as host;

/// The value of a declared key, or an error naming the key.
pub fn get(key: &str) -> Result<Value, String> {
    host::get(key).ok_or_else(|| format!("configuration item \"{key}\" is not declared"))
}

fn wrong_type(key: &str, expected: &str, value: &Value) -> String {
    format!("configuration item \"{key}\" should be {expected}, but is {value:?}")
}

/// A declared integer item.
pub fn integer(key: &str) -> Result<i64, String> {
    match get(key)? {
        Value::Integer(value) => Ok(value),
        other => Err(wrong_type(key, "an integer", &other)),
    }
}

/// A declared float item (an integer value is widened).
pub fn float(key: &str) -> Result<f64, String> {
    match get(key)? {
        Value::Float(value) => Ok(value),
        Value::Integer(value) => Ok(value as f64),
        other => Err(wrong_type(key, "a float", &other)),
    }
}

/// A declared text or e-mail item.
pub fn text(key: &str) -> Result<String, String> {
    match get(key)? {
        Value::Text(value) | Value::Email(value) => Ok(value),
        other => Err(wrong_type(key, "text", &other)),
    }
}

/// A declared text item that must not be empty (trimmed); the error names
/// the item.
pub fn required_text(key: &str) -> Result<String, String> {
    let value = text(key)?.trim().to_owned();
    if value.is_empty() {
        Err(format!("{key} must be set"))
    } else {
        Ok(value)
    }
}

/// A declared text item holding a list, comma-separated (an app file's
/// list arrives so), its elements trimmed, empty ones left out.
pub fn text_list(key: &str) -> Result<Vec<String>, String> {
    Ok(text(key)?
        .split(',')
        .map(|element| element.trim().to_owned())
        .filter(|element| !element.is_empty())
        .collect())
}

/// A declared boolean item.
pub fn boolean(key: &str) -> Result<bool, String> {
    match get(key)? {
        Value::Boolean(value) => Ok(value),
        other => Err(wrong_type(key, "a boolean", &other)),
    }
}
