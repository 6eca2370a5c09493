//! `correlator capture summary` and `capture filter`: the original's
//! caputil, for looking through a capture and cutting records out of it.

use crate::capture::{CaptureReader, write_entry};
use crate::record::time::format_local;
use crate::record::{self, TraditionalDefaults};
use anyhow::{Context as _, bail};
use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Write as _};
use std::path::Path;

/// Characters of a message shown in a summary line.
const SUMMARY_MESSAGE_CHARS: usize = 100;

fn open(path: &Path) -> anyhow::Result<CaptureReader<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open capture {}", path.display()))?;
    Ok(CaptureReader::new(BufReader::with_capacity(1 << 20, file)))
}

/// Print one line per record of `capture`, led by the line it starts on.
pub fn summary(capture: &Path) -> anyhow::Result<()> {
    let mut reader = open(capture)?;
    let defaults = TraditionalDefaults::current_year_utc();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut entry = Vec::new();
    while let Some(position) = reader
        .next_entry(&mut entry)
        .with_context(|| format!("cannot read capture {}", capture.display()))?
    {
        let text = String::from_utf8_lossy(&entry);
        if text.trim().is_empty() {
            continue;
        }
        let line = match record::parse(&text, &defaults) {
            Ok(parsed) => {
                let program = if parsed.proc_id.is_empty() {
                    parsed.app_name.to_owned()
                } else {
                    format!("{}[{}]", parsed.app_name, parsed.proc_id)
                };
                format!(
                    "{:>7}  {} {} {}: {}",
                    position.line,
                    format_local(&parsed.timestamp),
                    or_dash(parsed.hostname),
                    or_dash(&program),
                    shorten(parsed.message)
                )
            }
            Err(error) => format!(
                "{:>7}  (not a syslog record: {error}) {}",
                position.line,
                shorten(&text)
            ),
        };
        if writeln!(out, "{line}").is_err() {
            // The reader of our output went away (e.g. `| head`).
            return Ok(());
        }
    }
    let _ = out.flush();
    Ok(())
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

/// The start of a message on one line: line breaks and other control
/// characters shown as spaces, cut at [`SUMMARY_MESSAGE_CHARS`].
fn shorten(message: &str) -> String {
    let mut short: String = message
        .chars()
        .take(SUMMARY_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if message.chars().nth(SUMMARY_MESSAGE_CHARS).is_some() {
        short.push('…');
    }
    short
}

/// Copy `capture` to `out` without the records that `list` marks with `#`.
pub fn filter(capture: &Path, list: &Path, out: &Path) -> anyhow::Result<()> {
    let marked = marked_records(list)?;
    // Every mark must name a record, or the list was made from another file.
    let mut starts = BTreeSet::new();
    let mut reader = open(capture)?;
    let mut entry = Vec::new();
    while let Some(position) = reader
        .next_entry(&mut entry)
        .with_context(|| format!("cannot read capture {}", capture.display()))?
    {
        starts.insert(position.line);
    }
    let strangers: Vec<String> = marked
        .iter()
        .filter(|line| !starts.contains(line))
        .map(u64::to_string)
        .collect();
    if !strangers.is_empty() {
        bail!(
            "{} marks records on lines {} that {} does not have (was the list made from another capture?); nothing written",
            list.display(),
            strangers.join(", "),
            capture.display()
        );
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 16, file);
    let mut reader = open(capture)?;
    let (mut kept, mut left_out) = (0u64, 0u64);
    while let Some(position) = reader
        .next_entry(&mut entry)
        .with_context(|| format!("cannot read capture {}", capture.display()))?
    {
        if marked.contains(&position.line) {
            left_out += 1;
            continue;
        }
        if entry.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        write_entry(&mut writer, &entry)
            .with_context(|| format!("cannot write {}", out.display()))?;
        kept += 1;
    }
    writer
        .flush()
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "{}: {kept} records kept, {left_out} left out",
        out.display()
    );
    Ok(())
}

/// The line numbers of the records a list marks with `#`. Every line of the
/// list must be blank or start with a line number (after a `#` if marked).
fn marked_records(list: &Path) -> anyhow::Result<BTreeSet<u64>> {
    let text = std::fs::read_to_string(list)
        .with_context(|| format!("cannot read list {}", list.display()))?;
    let mut marked = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() {
            continue;
        }
        let (is_marked, rest) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(number) = digits.parse::<u64>() else {
            bail!(
                "{}:{}: expected a record's line number, as `capture summary` prints it (with # in front to leave the record out), found {:?}",
                list.display(),
                index + 1,
                shorten(line)
            );
        };
        if is_marked {
            marked.insert(number);
        }
    }
    Ok(marked)
}
