//! Reading the systemd journal (`run --journal`), the way fail2ban's
//! `systemd` backend reads it: `journalctl --follow --output=json` as a
//! child process, each entry a record.
//!
//! An entry becomes the RFC 5424 record it would have been over syslog:
//! its time (`__REALTIME_TIMESTAMP`), `_HOSTNAME`, `SYSLOG_IDENTIFIER` (else
//! `_COMM`), `SYSLOG_PID` (else `_PID`), `PRIORITY` and `SYSLOG_FACILITY`,
//! and `MESSAGE`. Each batch carries the cursor of its last entry, and the
//! checkpoint after it stores that with the modules' state, in one commit:
//! a restart goes on with `--after-cursor`, nothing read twice and nothing
//! skipped. Without a stored cursor the journal is read from
//! `journal.since` (journalctl's `--since`), or from the entries written
//! after the start.

use crate::pipeline::{BatchSink, Counters, HandlerStage, ModuleStage, StageError, TickTime};
use crate::record::{Origin, ParseCounts, TraditionalDefaults};
use crate::state_store::InputMarks;
use anyhow::Context as _;
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long the reader waits for an entry before it hands on what it has
/// and looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// How long a journalctl that ended waits for this process's own stop
/// signal before it counts as having failed.
const ENDED_GRACE: Duration = Duration::from_secs(1);

/// Entries read ahead of the pipeline at most.
const READ_AHEAD: usize = 8192;

/// The `journal.*` configuration items.
pub fn config_items() -> [(
    &'static str,
    crate::types::ValueType,
    crate::types::Value,
    &'static str,
); 4] {
    use crate::types::{Value, ValueType};
    let text = |default: &str| Value::Text(default.to_owned());
    [
        (
            "journal.matches",
            ValueType::Text,
            text(""),
            "journalctl matches for run --journal, separated by spaces (FIELD=VALUE: the same field twice is either, different fields both, + between groups is either), e.g. SYSLOG_IDENTIFIER=sshd; empty reads every entry",
        ),
        (
            "journal.directory",
            ValueType::Text,
            text(""),
            "read the journal files in this directory (such as those systemd-journal-remote collects) instead of the system journal; empty reads the system journal",
        ),
        (
            "journal.since",
            ValueType::Text,
            text(""),
            "where run --journal starts when the state holds no cursor, as journalctl --since takes it (\"2026-11-30 00:00:00\", \"-1h\", \"today\"); empty starts with the entries written after the start",
        ),
        (
            "journal.command",
            ValueType::Text,
            text("journalctl"),
            "the journalctl program run --journal starts",
        ),
    ]
}

/// How the journal is read.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// The journalctl program.
    pub command: String,
    /// Matches, each one argument.
    pub matches: Vec<String>,
    /// Journal files' directory, instead of the system journal.
    pub directory: Option<String>,
    /// Where to start without a cursor.
    pub since: Option<String>,
    /// Records per call into modules.
    pub batch_size: usize,
    /// Year and offset for entries whose text is an RFC 3164 line.
    pub defaults: TraditionalDefaults,
}

impl JournalSettings {
    /// The settings from the configuration store.
    pub fn from_store(
        store: &crate::config_store::ConfigStore,
        batch_size: usize,
        defaults: TraditionalDefaults,
    ) -> Self {
        let text = |key: &str| {
            store
                .text(key)
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        JournalSettings {
            command: text("journal.command").unwrap_or_else(|| "journalctl".to_owned()),
            matches: text("journal.matches")
                .map(|matches| matches.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            directory: text("journal.directory"),
            since: text("journal.since"),
            batch_size,
            defaults,
        }
    }

    /// journalctl's arguments, going on after `cursor` if there is one.
    pub fn arguments(&self, cursor: Option<&str>) -> Vec<String> {
        let mut arguments = vec![
            "--follow".to_owned(),
            "--output=json".to_owned(),
            // Every field, however long: a long message is a record too.
            "--all".to_owned(),
        ];
        if let Some(directory) = &self.directory {
            arguments.push(format!("--directory={directory}"));
        }
        match (cursor, &self.since) {
            (Some(cursor), _) => {
                arguments.push(format!("--after-cursor={cursor}"));
                arguments.push("--no-tail".to_owned());
            }
            (None, Some(since)) => {
                arguments.push(format!("--since={since}"));
                arguments.push("--no-tail".to_owned());
            }
            (None, None) => arguments.push("--lines=0".to_owned()),
        }
        arguments.extend(self.matches.iter().cloned());
        arguments
    }
}

/// What reading the journal saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// Records taken, and what could not be.
    pub parsed: ParseCounts,
    /// Entries that were not journal JSON, or had no message.
    pub unreadable: u64,
}

/// Why reading the journal stopped early.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// journalctl could not be started.
    #[error("cannot start {command}")]
    Start {
        /// The program.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// journalctl ended by itself.
    #[error("{command} ended ({status}): {stderr}")]
    Ended {
        /// The program.
        command: String,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The stages stopped (an instance aborted the run).
    #[error(transparent)]
    Stages(#[from] StageError),
}

/// Read the journal from `cursor` (else as `settings` say), through the
/// modules and handlers, until `stop` is set (SIGINT, SIGTERM); entries are
/// numbered on from `position` (the checkpoint's). Ticks follow the wall
/// clock, as while listening.
pub fn read(
    settings: &JournalSettings,
    (cursor, position): (Option<&str>, u64),
    modules: &mut ModuleStage,
    handlers: HandlerStage,
    stop: &AtomicBool,
) -> Result<(JournalStats, Counters), JournalError> {
    modules.set_tick_time(TickTime::WallClock);
    let arguments = settings.arguments(cursor);
    tracing::info!(
        command = %settings.command,
        arguments = %arguments.join(" "),
        "reading the journal"
    );
    let mut child = Command::new(&settings.command)
        .args(&arguments)
        // Its own process group: a Ctrl-C at a terminal stops this
        // process, which then stops journalctl after the last entry read.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| JournalError::Start {
            command: settings.command.clone(),
            source,
        })?;
    let (entries, reader) = read_lines(&mut child);
    crate::service::tell("READY=1\nSTATUS=reading the journal");
    let result = crate::pipeline::run_stages(
        modules,
        handlers,
        settings.batch_size,
        move |sink| take_entries(settings, (cursor, position), &entries, &sink, stop),
        || stop.store(true, Ordering::Relaxed),
    );
    // However the stages ended, journalctl (which follows forever) ends.
    let _ = child.kill();
    let status = child.wait();
    let stderr = reader.join().unwrap_or_default();
    let ((stats, ended_by_itself), counters) = result?;
    if ended_by_itself {
        return Err(JournalError::Ended {
            command: settings.command.clone(),
            status: status.map_or_else(|error| error.to_string(), |status| status.to_string()),
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok((stats, counters))
}

/// The child's lines, read on a thread of their own (a read blocks); the
/// thread returns what the child wrote on its standard error.
fn read_lines(child: &mut Child) -> (mpsc::Receiver<Vec<u8>>, std::thread::JoinHandle<String>) {
    let (sender, receiver) = mpsc::sync_channel(READ_AHEAD);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        if let Some(stdout) = stdout {
            let mut lines = BufReader::with_capacity(1 << 20, stdout);
            loop {
                let mut line = Vec::new();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if sender.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        drop(sender);
        let mut said = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut said);
        }
        said
    });
    (receiver, reader)
}

/// Take the entries into batches until `stop`, or until journalctl ends by
/// itself (then `true`).
fn take_entries(
    settings: &JournalSettings,
    (cursor, mut position): (Option<&str>, u64),
    entries: &mpsc::Receiver<Vec<u8>>,
    sink: &BatchSink,
    stop: &AtomicBool,
) -> (JournalStats, bool) {
    let mut stats = JournalStats::default();
    let mut builder = sink.empty_builder();
    let mut last_cursor = cursor.map(str::to_owned);
    let mut line = String::new();
    let marks = |cursor: &Option<String>| InputMarks {
        files: Vec::new(),
        journal_cursor: cursor.clone(),
        exchange: None,
    };
    let mut ended = false;
    while !stop.load(Ordering::Relaxed) {
        let entry = match entries.recv_timeout(POLL) {
            Ok(entry) => entry,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                builder.set_marks(marks(&last_cursor));
                crate::metrics::registry().parsed(&stats.parsed);
                if !builder.is_empty() && !sink.pass_on(&mut builder) {
                    return (stats, false);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // journalctl ended. When a service manager stops every
                // process of the service at once, it may end before this
                // process hears the signal: a stop that follows at once is
                // a stop, not a failure.
                let deadline = std::time::Instant::now() + ENDED_GRACE;
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                ended = !stop.load(Ordering::Relaxed);
                break;
            }
        };
        position += 1;
        let Some(cursor) = take_entry(
            &entry,
            position,
            &mut line,
            &mut builder,
            &mut stats,
            settings,
        ) else {
            continue;
        };
        last_cursor = Some(cursor);
        if builder.is_full() {
            builder.set_marks(marks(&last_cursor));
            crate::metrics::registry().parsed(&stats.parsed);
            if !sink.pass_on(&mut builder) {
                return (stats, false);
            }
        }
    }
    builder.set_marks(marks(&last_cursor));
    crate::metrics::registry().parsed(&stats.parsed);
    sink.pass_on(&mut builder);
    (stats, ended)
}

/// Take one entry (a line of journalctl's JSON) as record `position`;
/// returns its cursor, or `None` (counted) if it is not an entry.
fn take_entry(
    entry: &[u8],
    position: u64,
    line: &mut String,
    builder: &mut crate::record::BatchBuilder,
    stats: &mut JournalStats,
    settings: &JournalSettings,
) -> Option<String> {
    let fields: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(entry) {
        Ok(fields) => fields,
        Err(error) => {
            stats.unreadable += 1;
            if stats.unreadable <= 5 {
                tracing::warn!(entry = position, "journal entry is not JSON: {error}");
            }
            return None;
        }
    };
    let cursor = text_of(&fields, "__CURSOR");
    let Some(cursor) = cursor else {
        stats.unreadable += 1;
        if stats.unreadable <= 5 {
            tracing::warn!(entry = position, "journal entry without __CURSOR");
        }
        return None;
    };
    if to_syslog_line(&fields, line).is_none() {
        stats.unreadable += 1;
        if stats.unreadable <= 5 {
            tracing::warn!(entry = position, %cursor, "journal entry without a time or a MESSAGE");
        }
        return Some(cursor);
    }
    stats
        .parsed
        .take(builder, position, line, Origin::File, &settings.defaults);
    Some(cursor)
}

/// A field as text: journalctl writes a string, or (for bytes that are not
/// UTF-8) an array of byte values, or (for a field given more than once)
/// an array of those: the first is taken.
fn text_of(fields: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<String> {
    fn text(value: &serde_json::Value) -> Option<String> {
        match value {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Array(items) if items.iter().all(serde_json::Value::is_u64) => {
                let bytes: Vec<u8> = items
                    .iter()
                    .filter_map(serde_json::Value::as_u64)
                    .filter_map(|byte| u8::try_from(byte).ok())
                    .collect();
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            serde_json::Value::Array(items) => items.first().and_then(text),
            _ => None,
        }
    }
    text(fields.get(name)?)
}

/// The RFC 5424 line an entry would have been over syslog, into `line`.
fn to_syslog_line(
    fields: &serde_json::Map<String, serde_json::Value>,
    line: &mut String,
) -> Option<()> {
    use std::fmt::Write as _;
    let micros: i64 = text_of(fields, "__REALTIME_TIMESTAMP")?.parse().ok()?;
    let message = text_of(fields, "MESSAGE")?;
    let number = |name: &str| text_of(fields, name).and_then(|text| text.parse::<u8>().ok());
    let severity = number("PRIORITY").filter(|&p| p <= 7).unwrap_or(6);
    let facility = number("SYSLOG_FACILITY").filter(|&f| f <= 23).unwrap_or(1);
    // A value journalctl did not give, or one with spaces (which would
    // shift the header), is RFC 5424's nil value.
    let header = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| text_of(fields, name))
            .filter(|value| !value.is_empty() && !value.contains(char::is_whitespace))
            .unwrap_or_else(|| "-".to_owned())
    };
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let date = crate::record::time::format_local(&crate::types::Timestamp {
        seconds,
        nanoseconds: 0,
        offset_minutes: 0,
    })
    .replacen(' ', "T", 1);
    line.clear();
    let _ = write!(
        line,
        "<{}>1 {date}.{fraction:06}Z {} {} {} - - {}",
        u16::from(facility) * 8 + u16::from(severity),
        header(&["_HOSTNAME"]),
        header(&["SYSLOG_IDENTIFIER", "_COMM"]),
        header(&["SYSLOG_PID", "_PID"]),
        message.trim_end_matches('\n'),
    );
    Some(())
}

/// Run `settings.command --version`, for `check`: whether journalctl is
/// there to start.
pub fn probe(settings: &JournalSettings) -> anyhow::Result<String> {
    let output = Command::new(&settings.command)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot start {}", settings.command))?;
    let version = String::from_utf8_lossy(&output.stdout);
    Ok(version.lines().next().unwrap_or("").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(json).expect("JSON")
    }

    #[test]
    fn an_entry_is_the_syslog_record_it_would_have_been() {
        let mut line = String::new();
        let entry = fields(
            r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1676905967123456","_HOSTNAME":"web1","SYSLOG_IDENTIFIER":"sshd","_PID":"1234","PRIORITY":"6","SYSLOG_FACILITY":"4","MESSAGE":"Failed password for root from 192.0.2.7 port 4242 ssh2"}"#,
        );
        assert_eq!(to_syslog_line(&entry, &mut line), Some(()));
        assert_eq!(
            line,
            "<38>1 2023-02-20T15:12:47.123456Z web1 sshd 1234 - - Failed password for root from 192.0.2.7 port 4242 ssh2"
        );
        // Bytes that are not UTF-8, a field given twice, and no identifier.
        let entry = fields(
            r#"{"__REALTIME_TIMESTAMP":"1676905967000000","_HOSTNAME":["web1","web2"],"_COMM":"my app","MESSAGE":[104,105,255]}"#,
        );
        assert_eq!(to_syslog_line(&entry, &mut line), Some(()));
        assert_eq!(
            line,
            "<14>1 2023-02-20T15:12:47.000000Z web1 - - - - hi\u{fffd}"
        );
        // No message: not a record.
        let entry = fields(r#"{"__REALTIME_TIMESTAMP":"1676905967000000"}"#);
        assert_eq!(to_syslog_line(&entry, &mut line), None);
    }

    #[test]
    fn journalctl_goes_on_after_the_cursor_or_starts_where_told() {
        let settings = JournalSettings {
            command: "journalctl".to_owned(),
            matches: vec!["SYSLOG_IDENTIFIER=sshd".to_owned()],
            directory: Some("/var/log/journal/remote".to_owned()),
            since: Some("-1h".to_owned()),
            batch_size: 1024,
            defaults: TraditionalDefaults {
                year: 2026,
                offset_minutes: 0,
            },
        };
        assert_eq!(
            settings.arguments(Some("s=1;i=2")).join(" "),
            "--follow --output=json --all --directory=/var/log/journal/remote --after-cursor=s=1;i=2 --no-tail SYSLOG_IDENTIFIER=sshd"
        );
        assert_eq!(
            settings.arguments(None).join(" "),
            "--follow --output=json --all --directory=/var/log/journal/remote --since=-1h --no-tail SYSLOG_IDENTIFIER=sshd"
        );
        let from_now = JournalSettings {
            since: None,
            directory: None,
            matches: Vec::new(),
            ..settings
        };
        assert_eq!(
            from_now.arguments(None).join(" "),
            "--follow --output=json --all --lines=0"
        );
    }
}
