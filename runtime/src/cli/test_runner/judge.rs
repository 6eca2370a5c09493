//! Judging what a case gave: its events against the expectations and the
//! golden file, the files its component wrote, and what it used against
//! its budget. Each judge returns what did not hold, for people; nothing
//! when all did.

use super::{Case, Expect, Usage, indent};
use std::fmt::Write as _;
use std::path::Path;

/// How `events` differ from the golden file, or `None` when they are the
/// same (as JSON values, line by line).
pub(super) fn compare_golden(golden: &Path, events: &[serde_json::Value]) -> Option<String> {
    let text = match std::fs::read_to_string(golden) {
        Ok(text) => text,
        Err(error) => {
            return Some(format!(
                "golden file {}: {error} (write it with --bless)\n",
                golden.display()
            ));
        }
    };
    let expected: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or(serde_json::Value::String(line.to_owned()))
        })
        .collect();
    if expected == events {
        return None;
    }
    let mut report = format!(
        "the events differ from {} ({} expected, {} got):\n",
        golden.display(),
        expected.len(),
        events.len()
    );
    let shown =
        |event: Option<&serde_json::Value>| event.map_or_else(|| "(none)".to_owned(), shown_event);
    let mut differing = 0;
    for index in 0..expected.len().max(events.len()) {
        let (want, got) = (expected.get(index), events.get(index));
        if want == got {
            continue;
        }
        differing += 1;
        if differing > 10 {
            let _ = writeln!(report, "  ... and more");
            break;
        }
        let _ = writeln!(
            report,
            "  event {}:\n    expected {}\n    got      {}",
            index + 1,
            shown(want),
            shown(got)
        );
    }
    let _ = writeln!(report, "(--bless writes what the case gives now)");
    Some(report)
}

/// An expectation on what a case gave: events of a kind, requests, mails.
/// Each names the items it looks at, and how one differs from it.
pub(super) trait Expectation {
    /// Whether `item` is of the kind it expects (an event of its kind, a
    /// request, a mail): those are shown when it does not hold.
    fn is_of_kind(&self, item: &serde_json::Value) -> bool;
    /// What it expects, for messages: `SSHDLoginFailed`, `request(s)`.
    fn what(&self) -> String;
    /// Said when nothing of its kind came at all.
    fn none(&self) -> String {
        format!("no {} event at all", self.what())
    }
    /// `with { ... }` (with a leading space), or nothing.
    fn describe(&self) -> String;
    /// How many must match (`None`: at least one).
    fn count(&self) -> Option<usize>;
    /// What of the expectation `item` does not have, one phrase each.
    fn differences(&self, item: &serde_json::Value) -> Vec<String>;
    /// One line for an item of its kind.
    fn shown(item: &serde_json::Value) -> String;
}

/// What of `expectations` the items do not meet, added to `report`; the
/// items that match one are marked in `matched`.
pub(super) fn judge_all<E: Expectation>(
    expectations: &[E],
    items: &[serde_json::Value],
    matched: &mut [bool],
    report: &mut String,
) {
    for expect in expectations {
        let of_kind: Vec<usize> = (0..items.len())
            .filter(|&index| expect.is_of_kind(&items[index]))
            .collect();
        let matching: Vec<usize> = of_kind
            .iter()
            .copied()
            .filter(|&index| expect.differences(&items[index]).is_empty())
            .collect();
        for &index in &matching {
            matched[index] = true;
        }
        let holds = match expect.count() {
            Some(count) => matching.len() == count,
            None => !matching.is_empty(),
        };
        if holds {
            continue;
        }
        let wanted = expect
            .count()
            .map_or_else(|| "at least 1".to_owned(), |count| count.to_string());
        let _ = writeln!(
            report,
            "expected {wanted} {}{}, got {}",
            expect.what(),
            expect.describe(),
            matching.len()
        );
        for &index in of_kind.iter().filter(|index| !matching.contains(index)) {
            let _ = writeln!(
                report,
                "  got {}: {}",
                E::shown(&items[index]),
                expect.differences(&items[index]).join(", ")
            );
        }
        if of_kind.is_empty() {
            let _ = writeln!(report, "  ({})", expect.none());
        }
    }
}

/// With `only_expected`: the items no expectation matched (`matched`),
/// listed in `report` under `title`.
pub(super) fn judge_unexpected(
    items: &[serde_json::Value],
    matched: &[bool],
    title: &str,
    shown: fn(&serde_json::Value) -> String,
    report: &mut String,
) {
    let mut unexpected = items
        .iter()
        .zip(matched)
        .filter(|(_, matched)| !**matched)
        .peekable();
    if unexpected.peek().is_some() {
        let _ = writeln!(report, "{title} no expectation matches (only_expected):");
        for (item, _) in unexpected {
            let _ = writeln!(report, "  {}", shown(item));
        }
    }
}

/// What of the case's event expectations the events do not meet, for
/// people; empty when they meet all.
pub(super) fn judge(case: &Case, events: &[serde_json::Value]) -> String {
    let mut report = String::new();
    let mut matched = vec![false; events.len()];
    judge_all(&case.expect, events, &mut matched, &mut report);
    if case.only_expected && !case.is_handler_case() {
        judge_unexpected(events, &matched, "events", shown_event, &mut report);
    }
    report
}

impl Expectation for Expect {
    fn is_of_kind(&self, event: &serde_json::Value) -> bool {
        event["kind"] == self.kind.as_str()
    }

    fn what(&self) -> String {
        self.kind.clone()
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .fields
            .iter()
            .map(|(name, value)| format!("{name} = {value}"))
            .collect();
        if let Some(summary) = &self.summary {
            parts.push(format!("summary = {summary:?}"));
        }
        if parts.is_empty() {
            " event(s)".to_owned()
        } else {
            format!(" with {{ {} }}", parts.join(", "))
        }
    }

    fn count(&self) -> Option<usize> {
        self.count
    }

    fn differences(&self, event: &serde_json::Value) -> Vec<String> {
        differences(self, event)
    }

    fn shown(event: &serde_json::Value) -> String {
        shown_event(event)
    }
}

/// What of `expect` the event does not have, one phrase each.
fn differences(expect: &Expect, event: &serde_json::Value) -> Vec<String> {
    let mut differences = Vec::new();
    if let Some(summary) = &expect.summary
        && event["summary"] != summary.as_str()
    {
        differences.push(format!(
            "summary {} (expected {summary:?})",
            event["summary"]
        ));
    }
    for (name, wanted) in &expect.fields {
        let got = &event["fields"][name.as_str()];
        if !same(wanted, got) {
            if got.is_null() {
                differences.push(format!("no field {name} (expected {wanted})"));
            } else {
                differences.push(format!("{name} = {got} (expected {wanted})"));
            }
        }
    }
    differences
}

/// Whether an expected TOML value is the event's JSON value.
fn same(wanted: &toml::Value, got: &serde_json::Value) -> bool {
    match wanted {
        toml::Value::String(text) => got.as_str() == Some(text.as_str()),
        toml::Value::Integer(integer) => got.as_i64() == Some(*integer),
        toml::Value::Float(float) => got.as_f64() == Some(*float),
        toml::Value::Boolean(boolean) => got.as_bool() == Some(*boolean),
        toml::Value::Datetime(time) => got.as_str() == Some(time.to_string().as_str()),
        toml::Value::Array(_) | toml::Value::Table(_) => false,
    }
}

/// What of the case's file expectations the granted directory `dir` does
/// not meet; empty when it meets all.
pub(super) fn judge_files(case: &Case, dir: &Path) -> String {
    let mut report = String::new();
    for expect in &case.expect_file {
        let shown = expect.path.display();
        let content = match std::fs::read_to_string(dir.join(&expect.path)) {
            Ok(content) => content,
            Err(error) => {
                let mut present: Vec<String> = std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .filter_map(|entry| {
                                Some(entry.ok()?.file_name().to_string_lossy().into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                present.sort();
                let _ = writeln!(
                    report,
                    "expected a file {shown} in the granted directory: {error}; it holds: {}",
                    if present.is_empty() {
                        "nothing".to_owned()
                    } else {
                        present.join(", ")
                    }
                );
                continue;
            }
        };
        if let Some(wanted) = &expect.content
            && *wanted != content
        {
            let _ = writeln!(report, "file {shown} differs from the expected content:");
            report.push_str(&line_diff(wanted, &content));
        }
        for text in &expect.contains {
            if !content.contains(text.as_str()) {
                let _ = writeln!(
                    report,
                    "file {shown} does not contain {text:?}; it holds:\n{}",
                    indent(&content)
                );
            }
        }
    }
    report
}

/// The lines of `wanted` and `got` that differ, each with its number.
fn line_diff(wanted: &str, got: &str) -> String {
    let wanted: Vec<&str> = wanted.lines().collect();
    let got: Vec<&str> = got.lines().collect();
    let mut report = String::new();
    let mut shown = 0;
    for index in 0..wanted.len().max(got.len()) {
        let (want, have) = (wanted.get(index), got.get(index));
        if want == have {
            continue;
        }
        shown += 1;
        if shown > 10 {
            let _ = writeln!(report, "  ... and more");
            break;
        }
        let line = |text: Option<&&str>| {
            text.map_or_else(|| "(no line)".to_owned(), |text| format!("{text:?}"))
        };
        let _ = writeln!(
            report,
            "  line {}:\n    expected {}\n    got      {}",
            index + 1,
            line(want),
            line(have)
        );
    }
    if report.is_empty() {
        // Same lines: the difference is a final line break.
        let _ = writeln!(report, "  (the same lines; a final line break differs)");
    }
    report
}

impl Usage {
    /// What the component ran per input (record or event), on average.
    fn per_input(&self) -> u64 {
        self.instructions / self.inputs.max(1)
    }

    /// `N instructions/record, M MiB`.
    pub(super) fn describe(&self, case: &Case) -> String {
        format!(
            "{} instructions/{}, {:.1} MiB",
            self.per_input(),
            input_noun(case),
            mib(self.peak_memory_bytes)
        )
    }
}

/// `record` or `event`: what the case's component is given.
fn input_noun(case: &Case) -> &'static str {
    if case.is_handler_case() {
        "event"
    } else {
        "record"
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Where the component went past the case's budget; empty when it did not.
pub(super) fn judge_budget(case: &Case, usage: &Usage) -> String {
    let mut report = String::new();
    let (budget, key) = if case.is_handler_case() {
        (
            case.max_instructions_per_event,
            "max_instructions_per_event",
        )
    } else {
        (
            case.max_instructions_per_record,
            "max_instructions_per_record",
        )
    };
    if let Some(budget) = budget
        && usage.per_input() > budget
    {
        let noun = input_noun(case);
        let _ = writeln!(
            report,
            "ran {} instructions per {noun} ({} over {} {noun}s), over the budget of {budget} ({key})",
            usage.per_input(),
            usage.instructions,
            usage.inputs
        );
    }
    if let Some(budget) = case.max_memory_mib
        && mib(usage.peak_memory_bytes) > budget
    {
        let _ = writeln!(
            report,
            "its memory grew to {:.1} MiB, over the budget of {budget} MiB (max_memory_mib)",
            mib(usage.peak_memory_bytes)
        );
    }
    report
}

/// `Kind { field = value, ... }: summary`.
pub(super) fn shown_event(event: &serde_json::Value) -> String {
    let fields = event["fields"]
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .map(|(name, value)| format!("{name} = {value}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!(
        "{} {{ {fields} }}: {}",
        event["kind"].as_str().unwrap_or("?"),
        event["summary"].as_str().unwrap_or("")
    )
}
