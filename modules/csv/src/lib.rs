//! The CSV handler: one file per module instance and event type
//! (`<module>-<kind>.csv`) with a header row of field names and one row per
//! event. A file left by an earlier run is rotated to `_1`, `_2`, ... (ten
//! kept) at this run's first write. It writes only inside the directory the
//! app file grants it (`grants = { dir = "..." }`).

use correlator_sdk::text::push_csv_text;
use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, Value, export_handler};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Rotated files kept per event type.
const KEEP_ROTATED: u32 = 10;

struct Csv {
    directory: PathBuf,
    rotate: bool,
    cache_handles: bool,
    enabled: bool,
    /// Files written by this run, with their open handle when cached.
    files: HashMap<String, Option<BufWriter<File>>>,
}

impl Handler for Csv {
    fn describe() -> Descriptor {
        Descriptor::new(
            "csv",
            "writes events to CSV files, one per module and event type",
        )
        .config(ConfigItem::text(
            "output_directory",
            ".",
            "directory for the files, inside the granted directory",
        ))
        .config(ConfigItem::boolean(
            "rotate_files",
            true,
            "rotate a file left by an earlier run to _1, _2, ... before the first write",
        ))
        .config(ConfigItem::boolean(
            "cache_filehandles",
            true,
            "keep files open between batches instead of reopening them",
        ))
        .config(ConfigItem::boolean(
            "enabled",
            true,
            "write anything at all",
        ))
    }

    fn init() -> Result<Self, String> {
        let directory = PathBuf::from(correlator_sdk::config::text("output_directory")?);
        let enabled = correlator_sdk::config::boolean("enabled")?;
        if enabled {
            fs::create_dir_all(&directory).map_err(|error| {
                format!(
                    "cannot create output directory \"{}\": {error} (does the app file grant a directory?)",
                    directory.display()
                )
            })?;
        }
        Ok(Csv {
            directory,
            rotate: correlator_sdk::config::boolean("rotate_files")?,
            cache_handles: correlator_sdk::config::boolean("cache_filehandles")?,
            enabled,
            files: HashMap::new(),
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let name = format!("{}-{}", event.module, event.kind);
        // The host checks declared names at load; a file name is still
        // built only from characters that cannot leave the directory or
        // break a line.
        let safe = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !safe || name.starts_with('.') {
            let mut shown = String::new();
            correlator_sdk::text::push_escaped(&mut shown, &name);
            return Err(format!("refusing file name \"{shown}.csv\""));
        }
        let path = self.directory.join(format!("{name}.csv"));
        let first_write = !self.files.contains_key(&name);
        if first_write && self.rotate {
            rotate(&self.directory, &name)
                .map_err(|error| format!("cannot rotate \"{}\": {error}", path.display()))?;
        }
        let handle = self.files.entry(name).or_insert(None);
        if handle.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|error| format!("cannot open \"{}\": {error}", path.display()))?;
            *handle = Some(BufWriter::new(file));
        }
        let Some(writer) = handle.as_mut() else {
            return Err(format!("cannot open \"{}\"", path.display()));
        };
        let mut row = String::new();
        if first_write {
            for (index, field) in event.fields.iter().enumerate() {
                if index > 0 {
                    row.push(',');
                }
                push_csv_text(&mut row, &field.name);
            }
            row.push('\n');
        }
        for (index, field) in event.fields.iter().enumerate() {
            if index > 0 {
                row.push(',');
            }
            push_cell(&mut row, &field.value);
        }
        row.push('\n');
        writer
            .write_all(row.as_bytes())
            .map_err(|error| format!("cannot write \"{}\": {error}", path.display()))
    }

    fn flush(&mut self) {
        for (name, handle) in &mut self.files {
            if let Some(writer) = handle
                && let Err(error) = writer.flush()
            {
                correlator_sdk::log::error(&format!("cannot write \"{name}.csv\": {error}"));
            }
            if !self.cache_handles {
                *handle = None;
            }
        }
    }
}

/// Shift `name_9.csv` to `name_10.csv`, ..., `name.csv` to `name_1.csv`.
fn rotate(directory: &Path, name: &str) -> std::io::Result<()> {
    let path = |index: u32| {
        if index == 0 {
            directory.join(format!("{name}.csv"))
        } else {
            directory.join(format!("{name}_{index}.csv"))
        }
    };
    if !path(0).exists() {
        return Ok(());
    }
    for index in (0..KEEP_ROTATED).rev() {
        let from = path(index);
        if from.exists() {
            fs::rename(&from, path(index + 1))?;
        }
    }
    Ok(())
}

/// Append one field's value as a cell. Text (and e-mail addresses) may
/// be anything a module put there: it is quoted as needed and a formula is
/// neutralised; what the handler renders itself is safe as it is.
fn push_cell(row: &mut String, value: &Value) {
    match value {
        Value::Integer(value) => row.push_str(&value.to_string()),
        Value::Float(value) => row.push_str(&value.to_string()),
        Value::Text(value) | Value::Email(value) => push_csv_text(row, value),
        Value::Boolean(value) => row.push_str(&value.to_string()),
        Value::Timestamp(value) => row.push_str(&value.to_string()),
    }
}

export_handler!(Csv);

#[cfg(test)]
mod tests {
    use super::push_cell;
    use correlator_sdk::Value;

    fn cell(value: Value) -> String {
        let mut row = String::new();
        push_cell(&mut row, &value);
        row
    }

    #[test]
    fn text_is_quoted_and_neutralised_and_numbers_are_not() {
        assert_eq!(cell(Value::Text("a,b".into())), "\"a,b\"");
        assert_eq!(cell(Value::Text("=1+2".into())), "\"'=1+2\"");
        assert_eq!(cell(Value::Integer(-5)), "-5");
        assert_eq!(cell(Value::Float(-0.5)), "-0.5");
    }
}
