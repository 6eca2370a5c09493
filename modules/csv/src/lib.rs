//! The CSV handler: an audit trail, one series of files per module
//! instance and event type. A row per event, its time first (RFC 3339, in
//! the offset the record was written in), then its fields; a header row
//! only at the top of a new file.
//!
//! Files are per day of the events' time, `<module>-<kind>-<YYYY-MM-DD>.csv`,
//! and appended to: a restart (or another replay) goes on in the day's
//! file. A file that reaches `max_file_mib` is followed by
//! `<...-YYYY-MM-DD>.1.csv`, `.2`, ... When a day's first file is started,
//! this series' files dated more than `keep_days` before it are deleted.
//! Days and retention follow the events' time, so a replay writes what a
//! live run would have. It writes only inside the directory the app file
//! grants it (`grants = { dir = "..." }`).

use correlator_sdk::text::push_csv_text;
use correlator_sdk::{
    ConfigItem, DeliveredEvent, Descriptor, Handler, Timestamp, Value, export_handler,
};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

struct Csv {
    directory: PathBuf,
    /// Bytes a file may reach before the next one starts; 0: no limit.
    max_file_bytes: u64,
    /// Days of files kept before the newest day's; 0: all.
    keep_days: i64,
    cache_handles: bool,
    enabled: bool,
    /// The file each series is writing now.
    files: HashMap<String, Current>,
}

/// A series' current file.
struct Current {
    /// Its day, `YYYY-MM-DD`.
    day: String,
    /// Its number within the day (0 for the first, unnumbered).
    sequence: u32,
    /// Its size, with what this run wrote to it.
    bytes: u64,
    /// Open while handles are cached.
    writer: Option<BufWriter<File>>,
}

impl Handler for Csv {
    fn describe() -> Descriptor {
        Descriptor::new(
            "csv",
            "writes events to CSV files, one series per module and event type, a file per day",
        )
        .config(ConfigItem::text(
            "output_directory",
            ".",
            "directory for the files, inside the granted directory",
        ))
        .config(ConfigItem::integer(
            "max_file_mib",
            64,
            "a file that reaches this many MiB is followed by the day's next (.1, .2, ...); 0: no limit",
        ))
        .config(ConfigItem::integer(
            "keep_days",
            30,
            "files dated more than this many days before a new day's file are deleted when it starts; 0 keeps all",
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
        let max_file_mib = correlator_sdk::config::integer("max_file_mib")?;
        let keep_days = correlator_sdk::config::integer("keep_days")?;
        let max_file_bytes = u64::try_from(max_file_mib)
            .ok()
            .filter(|mib| *mib <= 1 << 20)
            .ok_or_else(|| {
                format!("max_file_mib must be between 0 and 1048576, not {max_file_mib}")
            })?
            * (1 << 20);
        if !(0..=36_500).contains(&keep_days) {
            return Err(format!(
                "keep_days must be between 0 and 36500, not {keep_days}"
            ));
        }
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
            max_file_bytes,
            keep_days,
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
        let mut time = String::new();
        event.time.write_rfc3339(&mut time);
        let day = time.get(..10).unwrap_or(&time);
        let mut row = String::new();
        push_csv_text(&mut row, &time);
        for field in &event.fields {
            row.push(',');
            push_cell(&mut row, &field.value);
        }
        row.push('\n');

        // The series' file for the event's day, with room for the row.
        let stale = self
            .files
            .get(&name)
            .is_none_or(|current| current.day != day);
        if stale {
            let current = self.open_day(&name, day, &event.time)?;
            self.files.insert(name.clone(), current);
        }
        let (directory, limit) = (&self.directory, self.max_file_bytes);
        let Some(current) = self.files.get_mut(&name) else {
            return Err(format!("no file for \"{name}\""));
        };
        if limit > 0 && current.bytes > 0 && current.bytes + row.len() as u64 > limit {
            if let Some(writer) = current.writer.as_mut() {
                writer
                    .flush()
                    .map_err(|error| format!("cannot write \"{name}\": {error}"))?;
            }
            current.sequence += 1;
            current.bytes = 0;
            current.writer = None;
        }
        if current.writer.is_none() {
            let path = directory.join(file_name(&name, &current.day, current.sequence));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|error| format!("cannot open \"{}\": {error}", path.display()))?;
            current.bytes = file.metadata().map_or(current.bytes, |meta| meta.len());
            current.writer = Some(BufWriter::new(file));
        }
        if current.bytes == 0 {
            let mut header = String::new();
            push_csv_text(&mut header, "time");
            for field in &event.fields {
                header.push(',');
                push_csv_text(&mut header, &field.name);
            }
            header.push('\n');
            row.insert_str(0, &header);
        }
        let (day, sequence) = (&current.day, current.sequence);
        let path = || directory.join(file_name(&name, day, sequence));
        let Some(writer) = current.writer.as_mut() else {
            return Err(format!("cannot open \"{}\"", path().display()));
        };
        writer
            .write_all(row.as_bytes())
            .map_err(|error| format!("cannot write \"{}\": {error}", path().display()))?;
        current.bytes += row.len() as u64;
        Ok(())
    }

    fn flush(&mut self) {
        for (name, current) in &mut self.files {
            if let Some(writer) = &mut current.writer
                && let Err(error) = writer.flush()
            {
                correlator_sdk::log::error(&format!("cannot write \"{name}\": {error}"));
            }
            if !self.cache_handles {
                current.writer = None;
            }
        }
    }
}

impl Csv {
    /// The file series `name` goes on with on `day` (the day's last, which
    /// an earlier run may have left); when the day has none yet, the
    /// series' files older than `keep_days` before `time` go.
    fn open_day(&mut self, name: &str, day: &str, time: &Timestamp) -> Result<Current, String> {
        if let Some(mut previous) = self.files.remove(name)
            && let Some(writer) = previous.writer.as_mut()
        {
            writer
                .flush()
                .map_err(|error| format!("cannot write \"{name}\": {error}"))?;
        }
        let existing = series(&self.directory, name);
        let sequence = existing
            .iter()
            .filter(|(file_day, _, _)| file_day == day)
            .map(|(_, sequence, _)| *sequence)
            .max();
        if sequence.is_none() && self.keep_days > 0 {
            let cutoff = Timestamp {
                seconds: time.seconds.saturating_sub(self.keep_days * 86_400),
                nanoseconds: 0,
                offset_minutes: time.offset_minutes,
            };
            let mut text = String::new();
            cutoff.write_rfc3339(&mut text);
            let oldest_kept = text.get(..10).unwrap_or(&text);
            for (file_day, _, file) in &existing {
                if file_day.as_str() < oldest_kept {
                    fs::remove_file(self.directory.join(file)).map_err(|error| {
                        format!("cannot delete \"{file}\" (past keep_days): {error}")
                    })?;
                }
            }
        }
        Ok(Current {
            day: day.to_owned(),
            sequence: sequence.unwrap_or(0),
            bytes: 0,
            writer: None,
        })
    }
}

/// `<name>-<day>.csv`, or `<name>-<day>.<sequence>.csv` after the first.
fn file_name(name: &str, day: &str, sequence: u32) -> String {
    if sequence == 0 {
        format!("{name}-{day}.csv")
    } else {
        format!("{name}-{day}.{sequence}.csv")
    }
}

/// The files of series `name` in `directory`: (day, sequence, file name).
fn series(directory: &Path, name: &str) -> Vec<(String, u32, String)> {
    let Ok(entries) = fs::read_dir(directory) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let (day, sequence) = parse_file_name(&file, name)?;
            Some((day.to_owned(), sequence, file))
        })
        .collect()
}

/// The day and sequence of `file` if it is one of series `name`'s.
fn parse_file_name<'f>(file: &'f str, name: &str) -> Option<(&'f str, u32)> {
    let rest = file.strip_prefix(name)?.strip_prefix('-')?;
    let rest = rest.strip_suffix(".csv")?;
    let (day, sequence) = match rest.split_once('.') {
        Some((day, sequence)) => (day, sequence.parse().ok().filter(|n| *n > 0)?),
        None => (rest, 0),
    };
    let bytes = day.as_bytes();
    let is_day = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(at, b)| at == 4 || at == 7 || b.is_ascii_digit());
    is_day.then_some((day, sequence))
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
    use super::{file_name, parse_file_name, push_cell};
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

    #[test]
    fn file_names_of_a_series_are_told_from_others() {
        let name = "OpenSSH-SSHDLoginFailed";
        assert_eq!(
            file_name(name, "2026-11-30", 0),
            "OpenSSH-SSHDLoginFailed-2026-11-30.csv"
        );
        assert_eq!(
            file_name(name, "2026-11-30", 2),
            "OpenSSH-SSHDLoginFailed-2026-11-30.2.csv"
        );
        assert_eq!(
            parse_file_name("OpenSSH-SSHDLoginFailed-2026-11-30.csv", name),
            Some(("2026-11-30", 0))
        );
        assert_eq!(
            parse_file_name("OpenSSH-SSHDLoginFailed-2026-11-30.12.csv", name),
            Some(("2026-11-30", 12))
        );
        for other in [
            "OpenSSH-SSHDLoginFailedX-2026-11-30.csv",
            "OpenSSH-SSHDLoginFailed-2026-11-3.csv",
            "OpenSSH-SSHDLoginFailed-2026-11-30.0.csv",
            "OpenSSH-SSHDLoginFailed-2026-11-30.x.csv",
            "OpenSSH-SSHDLoginFailed-2026-11-30.csv.tmp",
            "OpenSSH-SSHDLoginFailed.csv",
        ] {
            assert_eq!(parse_file_name(other, name), None, "{other}");
        }
    }
}
