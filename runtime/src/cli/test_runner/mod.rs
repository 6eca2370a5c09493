//! `correlator test`: the test cases of modules and handlers, each run
//! against its component in isolation.
//!
//! A test file (`*.test.toml`) holds cases. A module case gives a
//! component, its configuration, records (a file, or lines in the case) and
//! what events must come of them; a handler case gives a handler, events
//! (a file of JSON lines, inline tables, or the events of a module case
//! before it) and what the handler must have written into its granted
//! directory and what it would have sent. Each case runs in a process of
//! its own — this binary, replaying the records through an app of the one
//! module and a JSON log handler, or the events through the one handler
//! (`run --events`), with durable state off, in a directory of its own —
//! so that it gets a fresh sandbox and store, and is deterministic: the
//! clock is the records' (or events') time, RFC 3164 records take the
//! case's year, random numbers come from a fixed seed, deliveries are
//! captured and never sent (`delivery.capture`), and the component is
//! granted only what the case grants. A case with a budget
//! (`max_instructions_per_record` or `_per_event`, `max_memory_mib`) is
//! metered with fuel (`system.usage_report`), which counts the same
//! instructions in every run.

mod deliveries;
mod judge;

use anyhow::{Context as _, bail};
use deliveries::{delivery_in_full, judge_deliveries};
use judge::{compare_golden, judge, judge_budget, judge_files, shown_event};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// `builtin:NAME`, or a `.wasm` path relative to the test file.
    component: String,
    /// The component's configuration, as `config = { ... }` in an app.
    #[serde(default)]
    config: toml::Table,
    /// Records: a capture or log file, relative to the test file.
    input: Option<PathBuf>,
    /// Records: one per line, RFC 5424 or RFC 3164.
    lines: Option<Vec<String>>,
    /// The year of RFC 3164 records (default: the current year).
    year: Option<i64>,
    /// After the last record, run the timers on to this time (RFC 3339),
    /// as if the stream had gone on quietly.
    ticks_until: Option<toml::Value>,
    /// Fail on any event no expectation matches.
    #[serde(default)]
    only_expected: bool,
    /// Every event the case gives, one JSON line each, in order (relative
    /// to the test file); `--bless` writes it.
    golden: Option<PathBuf>,
    /// The runtime restarts after the records above, keeping the state
    /// its modules saved, then takes these.
    restart: Option<Records>,
    #[serde(default)]
    expect: Vec<Expect>,
    /// A handler case's events: a file of JSON lines (as the log handler
    /// writes them with `format = "json"`, relative to the test file), or
    /// inline tables of the same keys.
    events: Option<EventsSource>,
    /// A handler case's events: those the module case of this name (earlier
    /// in the same file) gave.
    events_from: Option<String>,
    /// With `events`: the module (`builtin:NAME` or a `.wasm` path) whose
    /// declarations type them, as they would be typed coming from it.
    module: Option<String>,
    /// What the component is granted, as `grants = { ... }` in an app; a
    /// granted `dir` is made in the case's own directory.
    grants: Option<toml::Table>,
    /// Values of the secrets the case grants (never the operator's).
    #[serde(default)]
    secrets: std::collections::BTreeMap<String, String>,
    /// Files the component must have written in its granted directory.
    #[serde(default)]
    expect_file: Vec<ExpectFile>,
    /// HTTP requests the handler must have handed over for delivery.
    #[serde(default)]
    expect_request: Vec<ExpectRequest>,
    /// E-mails the handler must have handed over for delivery.
    #[serde(default)]
    expect_mail: Vec<ExpectMail>,
    /// A module case fails when the module runs more WebAssembly
    /// instructions than this per record, on average over the case.
    max_instructions_per_record: Option<u64>,
    /// A handler case fails when the handler runs more instructions than
    /// this per event, on average over the case.
    max_instructions_per_event: Option<u64>,
    /// The case fails when the component's linear memory grows past this.
    max_memory_mib: Option<f64>,
    /// The case is not run, for this reason (a known failure, a behaviour
    /// still to come): it counts as skipped.
    skip: Option<String>,
}

impl Case {
    /// Whether the case tries a handler on events (else a module on
    /// records).
    fn is_handler_case(&self) -> bool {
        self.events.is_some() || self.events_from.is_some()
    }

    /// Whether a budget is set: the run then counts instructions.
    fn has_budget(&self) -> bool {
        self.max_instructions_per_record.is_some()
            || self.max_instructions_per_event.is_some()
            || self.max_memory_mib.is_some()
    }

    /// The directory the case grants, if any.
    fn granted_dir(&self) -> Option<&str> {
        self.grants
            .as_ref()
            .and_then(|grants| grants.get("dir"))
            .and_then(toml::Value::as_str)
    }
}

/// Where a handler case's events come from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EventsSource {
    /// A file of JSON lines.
    File(PathBuf),
    /// Tables with the keys of those lines (`time`, `module`, `kind`,
    /// `severity`, `summary`, `fields`).
    Inline(Vec<toml::Table>),
}

/// A file the component must have written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    /// Relative to the granted directory.
    path: PathBuf,
    /// Its whole content, exactly.
    content: Option<String>,
    /// Texts it must contain.
    #[serde(default)]
    contains: Vec<String>,
}

/// HTTP requests the handler must have handed over.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectRequest {
    method: Option<String>,
    url: Option<String>,
    /// Headers it must have with these values (names in any case).
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// The body, exactly.
    body: Option<String>,
    /// Texts the body must contain.
    #[serde(default)]
    body_contains: Vec<String>,
    /// How many requests match (default: at least one).
    count: Option<usize>,
}

/// E-mails the handler must have handed over.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectMail {
    /// `HOST:PORT` of the SMTP server.
    server: Option<String>,
    /// The envelope's sender.
    sender: Option<String>,
    /// The envelope's recipients, exactly.
    recipients: Option<Vec<String>>,
    /// Texts the message (headers and body) must contain.
    #[serde(default)]
    contains: Vec<String>,
    /// How many mails match (default: at least one).
    count: Option<usize>,
}

/// Records of a case's second part.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Records {
    input: Option<PathBuf>,
    lines: Option<Vec<String>>,
}

/// Events a case must give.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    kind: String,
    /// Fields the events must have with these values (others may be there
    /// too).
    #[serde(default)]
    fields: toml::Table,
    /// The summary, exactly.
    summary: Option<String>,
    /// How many events match (default: at least one).
    count: Option<usize>,
}

/// How a case went.
enum Verdict {
    Passed,
    /// Not run, for this reason (`skip = "..."`).
    Skipped(String),
    /// What did not hold, for people.
    Failed(String),
    /// It could not run: its component or input could not be loaded.
    Error(String),
}

/// A case's outcome, for the report.
struct Outcome {
    file: String,
    name: String,
    verdict: Verdict,
    took: Duration,
}

/// What `correlator test` was asked.
pub struct TestOptions {
    /// Test files, or directories searched for `*.test.toml`.
    pub paths: Vec<PathBuf>,
    /// Also write a JUnit XML report here.
    pub junit: Option<PathBuf>,
    /// Write the golden files of the cases that have one, from what they
    /// give, instead of comparing.
    pub bless: bool,
}

/// Run every case; exit 0 when all passed, 1 when a case failed, 2 when a
/// file or component could not be loaded.
pub fn run(options: &TestOptions) -> anyhow::Result<ExitCode> {
    let paths = if options.paths.is_empty() {
        vec![PathBuf::from("tests")]
    } else {
        options.paths.clone()
    };
    let mut files = Vec::new();
    for path in &paths {
        find_test_files(path, &mut files)
            .with_context(|| format!("cannot look for test files in {}", path.display()))?;
    }
    files.sort();
    if files.is_empty() {
        bail!(
            "no test files (*.test.toml) in {}",
            paths
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut outcomes = Vec::new();
    for file in &files {
        let shown = file.display().to_string();
        let cases = match read_test_file(file) {
            Ok(cases) => cases,
            Err(error) => {
                println!("test {shown} ... ERROR");
                outcomes.push(Outcome {
                    file: shown,
                    name: String::new(),
                    verdict: Verdict::Error(format!("{error:#}")),
                    took: Duration::ZERO,
                });
                continue;
            }
        };
        let mut produced = HashMap::new();
        for case in &cases {
            if let Some(reason) = &case.skip {
                println!("test {shown} :: {} ... skipped ({reason})", case.name);
                outcomes.push(Outcome {
                    file: shown.clone(),
                    name: case.name.clone(),
                    verdict: Verdict::Skipped(reason.clone()),
                    took: Duration::ZERO,
                });
                continue;
            }
            let started = Instant::now();
            let (verdict, events, usage) = run_case(file, case, options.bless, &produced);
            if let Some(events) = events {
                produced.insert(
                    case.name.clone(),
                    Produced {
                        component: case.component.clone(),
                        config: case.config.clone(),
                        events,
                    },
                );
            }
            let word = match &verdict {
                Verdict::Passed => "ok",
                Verdict::Skipped(_) => "skipped",
                Verdict::Failed(_) => "FAILED",
                Verdict::Error(_) => "ERROR",
            };
            let measured = usage
                .map(|usage| format!(" ({})", usage.describe(case)))
                .unwrap_or_default();
            println!("test {shown} :: {} ... {word}{measured}", case.name);
            outcomes.push(Outcome {
                file: shown.clone(),
                name: case.name.clone(),
                verdict,
                took: started.elapsed(),
            });
        }
    }
    let mut failed = 0;
    let mut errors = 0;
    let mut skipped = 0;
    for outcome in &outcomes {
        let (what, detail) = match &outcome.verdict {
            Verdict::Passed => continue,
            Verdict::Skipped(_) => {
                skipped += 1;
                continue;
            }
            Verdict::Failed(detail) => {
                failed += 1;
                ("failed", detail)
            }
            Verdict::Error(detail) => {
                errors += 1;
                ("could not run", detail)
            }
        };
        let title = if outcome.name.is_empty() {
            outcome.file.clone()
        } else {
            format!("{} :: {}", outcome.file, outcome.name)
        };
        println!("\n---- {title} {what} ----\n{}", detail.trim_end());
    }
    let passed = outcomes.len() - failed - errors - skipped;
    let mut summary = format!("\n{passed} passed, {failed} failed");
    if skipped > 0 {
        let _ = write!(summary, ", {skipped} skipped");
    }
    if errors > 0 {
        let _ = write!(summary, ", {errors} could not run");
    }
    println!("{summary}");
    if let Some(path) = &options.junit {
        std::fs::write(path, junit(&outcomes))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if errors > 0 {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `path` if it is a file, else every `*.test.toml` under it.
fn find_test_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_dir() {
        out.push(path.to_owned());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let path = entry?.path();
        if path.is_dir() {
            find_test_files(&path, out)?;
        } else if path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(".test.toml"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The cases of `file`, checked.
fn read_test_file(file: &Path) -> anyhow::Result<Vec<Case>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed: TestFile = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
    if parsed.cases.is_empty() {
        bail!("{}: no [[case]]", file.display());
    }
    let mut module_cases: Vec<&str> = Vec::new();
    for case in &parsed.cases {
        check_case(case, &module_cases)
            .map_err(|why| anyhow::anyhow!("{}: case \"{}\": {why}", file.display(), case.name))?;
        if !case.is_handler_case() {
            module_cases.push(&case.name);
        }
    }
    Ok(parsed.cases)
}

/// Whether `case` is whole and consistent; `module_cases` are the module
/// cases before it in its file.
fn check_case(case: &Case, module_cases: &[&str]) -> Result<(), String> {
    let present = |given: bool, key: &'static str| given.then_some(key);
    if case.is_handler_case() {
        if let Some(key) = [
            present(case.input.is_some(), "input"),
            present(case.lines.is_some(), "lines"),
            present(case.year.is_some(), "year"),
            present(case.ticks_until.is_some(), "ticks_until"),
            present(case.restart.is_some(), "[case.restart]"),
            present(case.golden.is_some(), "golden"),
            present(!case.expect.is_empty(), "[[case.expect]]"),
            present(
                case.max_instructions_per_record.is_some(),
                "max_instructions_per_record",
            ),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(format!(
                "a handler case (it has events) takes no {key}: that is for module cases"
            ));
        }
        match (&case.events, &case.events_from, &case.module) {
            (Some(_), Some(_), _) => {
                return Err("has both events and events_from; give one".into());
            }
            (Some(_), None, None) => {
                return Err(
                    "events need module = \"builtin:NAME\" or a .wasm path: the module whose declarations type them"
                        .into(),
                );
            }
            (None, Some(_), Some(_)) => {
                return Err(
                    "events_from takes the module of the case it names; leave module out".into(),
                );
            }
            (None, Some(from), None) if !module_cases.contains(&from.as_str()) => {
                return Err(format!(
                    "events_from = \"{from}\" names no module case before it in this file"
                ));
            }
            _ => {}
        }
    } else {
        match (&case.input, &case.lines) {
            (Some(_), Some(_)) => return Err("has both input and lines; give one".into()),
            (None, None) => {
                return Err(
                    "has no records: give input = \"FILE\" or lines = [...] (or, for a handler, events)"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(key) = [
            present(case.module.is_some(), "module"),
            present(!case.expect_request.is_empty(), "[[case.expect_request]]"),
            present(!case.expect_mail.is_empty(), "[[case.expect_mail]]"),
            present(
                case.max_instructions_per_event.is_some(),
                "max_instructions_per_event",
            ),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(format!(
                "a module case (it has records) takes no {key}: that is for handler cases, which have events"
            ));
        }
        if let Some(restart) = &case.restart
            && restart.input.is_some() == restart.lines.is_some()
        {
            return Err(
                "[case.restart] takes input = \"FILE\" or lines = [...], one of them".into(),
            );
        }
        let restart_lines = case
            .restart
            .iter()
            .flat_map(|restart| restart.lines.iter().flatten());
        if let Some(line) = case
            .lines
            .iter()
            .flatten()
            .chain(restart_lines)
            .find(|line| line.contains('\n'))
        {
            return Err(format!("a line holds a line break: {line:?}"));
        }
    }
    if !case.expect_file.is_empty() && case.granted_dir().is_none() {
        return Err(
            "[[case.expect_file]] needs a granted directory: grants = { dir = \"out\" }".into(),
        );
    }
    if let Some(mib) = case.max_memory_mib
        && (mib.is_nan() || mib <= 0.0)
    {
        return Err(format!("max_memory_mib must be above 0, not {mib}"));
    }
    Ok(())
}

/// The instance name of the module under test.
const INSTANCE: &str = "module";

/// A module case's events, with its module, for the handler cases after it
/// that take them (`events_from`).
struct Produced {
    component: String,
    config: toml::Table,
    events: Vec<serde_json::Value>,
}

/// The instance name of the handler under test.
const HANDLER: &str = "handler";

/// What a case's runs left to judge.
#[derive(Default)]
struct Ran {
    /// The events a module case gave (JSON, as the log handler wrote them).
    events: Vec<serde_json::Value>,
    /// The deliveries a handler case handed over (`delivery.capture`).
    deliveries: Vec<serde_json::Value>,
    /// What the runs wrote to standard error: the runtime's warnings and
    /// the component's own log lines.
    said: String,
    /// What the component under test used, with a budget.
    usage: Usage,
}

/// What the component under test used over a case (all its runs).
#[derive(Default, Clone, Copy)]
struct Usage {
    instructions: u64,
    peak_memory_bytes: u64,
    /// Records (module case) or events (handler case) it was given.
    inputs: u64,
}

/// Run `case` of `file` in a process of its own and judge it; a module
/// case also returns its events, for handler cases that take them
/// (`events_from`: `produced`, by case name).
fn run_case(
    file: &Path,
    case: &Case,
    bless: bool,
    produced: &HashMap<String, Produced>,
) -> (Verdict, Option<Vec<serde_json::Value>>, Option<Usage>) {
    let base = file.parent().unwrap_or(Path::new("."));
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            return (
                Verdict::Error(format!("cannot make a directory to run in: {error}")),
                None,
                None,
            );
        }
    };
    let ran = if case.is_handler_case() {
        run_handler_case(base, dir.path(), case, produced)
    } else {
        run_module_case(base, dir.path(), case)
    };
    let ran = match ran {
        Ok(ran) => ran,
        Err(error) => return (Verdict::Error(error), None, None),
    };
    let usage = case.has_budget().then_some(ran.usage);
    if let Some(golden) = &case.golden {
        let golden = base.join(golden);
        if bless {
            let lines: String = ran
                .events
                .iter()
                .map(|event| format!("{event}\n"))
                .collect();
            if let Err(error) = std::fs::write(&golden, lines) {
                return (
                    Verdict::Error(format!("cannot write {}: {error}", golden.display())),
                    Some(ran.events),
                    usage,
                );
            }
        } else if let Some(mut differs) = compare_golden(&golden, &ran.events) {
            if !ran.said.trim().is_empty() {
                let _ = writeln!(differs, "the run said:\n{}", indent(&ran.said));
            }
            return (Verdict::Failed(differs), Some(ran.events), usage);
        }
    }
    let mut report = judge(case, &ran.events);
    report.push_str(&judge_deliveries(case, &ran.deliveries));
    if let Some(granted) = case.granted_dir() {
        report.push_str(&judge_files(case, &dir.path().join(granted)));
    }
    report.push_str(&judge_budget(case, &ran.usage));
    let verdict = if report.is_empty() {
        Verdict::Passed
    } else {
        if !case.expect.is_empty() || case.only_expected && !case.is_handler_case() {
            let _ = writeln!(report, "every event ({}):", ran.events.len());
            for event in &ran.events {
                let _ = writeln!(report, "  {}", shown_event(event));
            }
        }
        let about_deliveries = !case.expect_request.is_empty()
            || !case.expect_mail.is_empty()
            || !ran.deliveries.is_empty();
        if case.is_handler_case() && about_deliveries {
            let _ = writeln!(report, "every delivery ({}):", ran.deliveries.len());
            for delivery in &ran.deliveries {
                let _ = writeln!(report, "  {}", delivery_in_full(delivery));
            }
        }
        if !ran.said.trim().is_empty() {
            let _ = writeln!(report, "the run said:\n{}", indent(&ran.said));
        }
        Verdict::Failed(report)
    };
    (
        verdict,
        (!case.is_handler_case()).then_some(ran.events),
        usage,
    )
}

/// `builtin:NAME` as it is, a `.wasm` path (relative to `base`) made
/// absolute, or why it cannot be.
fn resolve_component(base: &Path, component: &str) -> Result<String, String> {
    if component.starts_with("builtin:") {
        return Ok(component.to_owned());
    }
    std::fs::canonicalize(base.join(component))
        .map(|path| path.display().to_string())
        .map_err(|error| {
            format!(
                "component {}: {error} (is it built? cargo build --release)",
                base.join(component).display()
            )
        })
}

/// Replay the module case's records (and those after its restart) through
/// an app of its module and a JSON log handler.
fn run_module_case(base: &Path, dir: &Path, case: &Case) -> Result<Ran, String> {
    let component = resolve_component(base, &case.component)?;
    let mut parts = vec![(&case.input, &case.lines)];
    if let Some(restart) = &case.restart {
        parts.push((&restart.input, &restart.lines));
    }
    for (number, (input, lines)) in parts.iter().enumerate() {
        write_records(base, input, lines, &dir.join(format!("input-{number}.cap")))?;
    }
    let mut log_config = toml::Table::new();
    log_config.insert("format".into(), "json".into());
    let app = app_file(
        (&component, &case.config, case.grants.as_ref()),
        ("builtin:log", &log_config, None),
    );
    std::fs::write(dir.join("app.toml"), app)
        .map_err(|error| format!("cannot write the app: {error}"))?;
    let mut ran = Ran::default();
    for number in 0..parts.len() {
        let mut args = vec![
            "run".to_owned(),
            "--app".into(),
            "app.toml".into(),
            "--read-file".into(),
            format!("input-{number}.cap"),
        ];
        // One part: no state at all. Two: the first starts empty (as a
        // replay does) and saves its state, the second goes on from it.
        if parts.len() == 1 {
            args.extend(["-o".into(), "state.enabled=false".into()]);
        } else if number > 0 {
            args.push("--keep-state".into());
        }
        if let Some(year) = case.year {
            args.extend(["-o".into(), format!("parser.rfc3164_year={year}")]);
        }
        if let Some(until) = &case.ticks_until
            && number + 1 == parts.len()
        {
            // A TOML date-time or a string, both as RFC 3339.
            let until = match until {
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            args.extend(["-o".into(), format!("replay.ticks_until={until}")]);
        }
        let stdout = run_correlator(dir, case, args, &mut ran)?;
        ran.events.extend(
            stdout
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()),
        );
        read_usage(dir, case, INSTANCE, "records", &mut ran.usage)?;
    }
    Ok(ran)
}

/// Hand the handler case's events to an app of its handler (and the module
/// whose declarations type them), capturing what it delivers.
fn run_handler_case(
    base: &Path,
    dir: &Path,
    case: &Case,
    produced: &HashMap<String, Produced>,
) -> Result<Ran, String> {
    let component = resolve_component(base, &case.component)?;
    let events: String = match (&case.events, &case.events_from) {
        (Some(EventsSource::File(path)), _) => std::fs::read_to_string(base.join(path))
            .map_err(|error| format!("events {}: {error}", base.join(path).display()))?,
        (Some(EventsSource::Inline(tables)), _) => tables
            .iter()
            .map(|table| format!("{}\n", toml_to_json(&toml::Value::Table(table.clone()))))
            .collect(),
        (None, Some(from)) => produced
            .get(from)
            .ok_or_else(|| format!("the module case \"{from}\" could not run"))?
            .events
            .iter()
            .map(|event| format!("{event}\n"))
            .collect(),
        (None, None) => return Err("no events".to_owned()),
    };
    std::fs::write(dir.join("events.jsonl"), events)
        .map_err(|error| format!("cannot write the events: {error}"))?;
    // The module that types the events: the one named, or that of the case
    // the events come from (with its configuration, which its start may
    // need).
    let empty = toml::Table::new();
    let (module, module_config) = match (&case.module, &case.events_from) {
        (Some(module), _) => (resolve_component(base, module)?, &empty),
        (None, Some(from)) => {
            let source = produced
                .get(from)
                .ok_or_else(|| format!("the module case \"{from}\" could not run"))?;
            (resolve_component(base, &source.component)?, &source.config)
        }
        (None, None) => return Err("no module types the events".to_owned()),
    };
    let app = app_file(
        (&module, module_config, None),
        (&component, &case.config, case.grants.as_ref()),
    );
    std::fs::write(dir.join("app.toml"), app)
        .map_err(|error| format!("cannot write the app: {error}"))?;
    let args = vec![
        "run".to_owned(),
        "--app".into(),
        "app.toml".into(),
        "--events".into(),
        "events.jsonl".into(),
        "-o".into(),
        "state.enabled=false".into(),
        "-o".into(),
        "delivery.capture=deliveries.jsonl".into(),
    ];
    let mut ran = Ran::default();
    run_correlator(dir, case, args, &mut ran)?;
    read_usage(dir, case, HANDLER, "events", &mut ran.usage)?;
    ran.deliveries = match std::fs::read_to_string(dir.join("deliveries.jsonl")) {
        Ok(text) => text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(format!("cannot read the captured deliveries: {error}")),
    };
    Ok(ran)
}

/// Run this binary in `dir` with `args`, in the case's conditions: a fixed
/// random seed, the case's secrets only, instructions counted when it has a
/// budget. Returns its standard output; what it said goes to `ran`.
fn run_correlator(
    dir: &Path,
    case: &Case,
    mut args: Vec<String>,
    ran: &mut Ran,
) -> Result<String, String> {
    let binary =
        std::env::current_exe().map_err(|error| format!("cannot find this program: {error}"))?;
    args.extend(["-o".into(), "system.random_seed=1".into()]);
    if case.has_budget() {
        args.extend(["-o".into(), "system.usage_report=usage.json".into()]);
    }
    let mut command = std::process::Command::new(binary);
    command
        .args(&args)
        .current_dir(dir)
        .env("RUST_LOG", "warn,guest=debug,wasmtime_internal_cache=error")
        .stdin(std::process::Stdio::null());
    // The operator's secrets are not the case's.
    for (variable, _) in std::env::vars_os() {
        if variable
            .to_str()
            .is_some_and(|name| name.starts_with("CORRELATOR_SECRET_"))
        {
            command.env_remove(variable);
        }
    }
    command.env_remove("CORRELATOR_SECRETS_FILE");
    for (name, value) in &case.secrets {
        command.env(crate::loader::secret_variable(name), value);
    }
    let output = command
        .output()
        .map_err(|error| format!("cannot start the run: {error}"))?;
    ran.said.push_str(&String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(format!(
            "the run failed ({}):\n{}",
            output.status,
            indent(&ran.said)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Add what instance `instance` used in the run just done, and the
/// `inputs` (records or events) it read, to `usage`: with a budget only.
fn read_usage(
    dir: &Path,
    case: &Case,
    instance: &str,
    inputs: &str,
    usage: &mut Usage,
) -> Result<(), String> {
    if !case.has_budget() {
        return Ok(());
    }
    let text = std::fs::read_to_string(dir.join("usage.json"))
        .map_err(|error| format!("the run wrote no usage report: {error}"))?;
    let report: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("the usage report is not JSON: {error}"))?;
    let used = &report["instances"][instance];
    usage.instructions += used["instructions"].as_u64().unwrap_or(0);
    usage.peak_memory_bytes = usage
        .peak_memory_bytes
        .max(used["peak_memory_bytes"].as_u64().unwrap_or(0));
    usage.inputs += report[inputs].as_u64().unwrap_or(0);
    Ok(())
}

/// A TOML value as JSON; a date-time becomes its RFC 3339 text.
fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(text) => text.clone().into(),
        toml::Value::Integer(integer) => (*integer).into(),
        toml::Value::Float(float) => (*float).into(),
        toml::Value::Boolean(boolean) => (*boolean).into(),
        toml::Value::Datetime(time) => time.to_string().into(),
        toml::Value::Array(values) => values.iter().map(toml_to_json).collect(),
        toml::Value::Table(table) => table
            .iter()
            .map(|(key, value)| (key.clone(), toml_to_json(value)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// Write the records of `input` (a file relative to `base`) or `lines` to
/// `to`.
fn write_records(
    base: &Path,
    input: &Option<PathBuf>,
    lines: &Option<Vec<String>>,
    to: &Path,
) -> Result<(), String> {
    match (input, lines) {
        (Some(path), _) => std::fs::copy(base.join(path), to)
            .map(|_| ())
            .map_err(|error| format!("input {}: {error}", base.join(path).display())),
        (None, Some(lines)) => {
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(to, text).map_err(|error| format!("cannot write the records: {error}"))
        }
        (None, None) => Err("no records".to_owned()),
    }
}

/// An instance of an app file: its component, configuration and grants.
type InstanceEntry<'a> = (&'a str, &'a toml::Table, Option<&'a toml::Table>);

/// An app of one module ([`INSTANCE`]) and one handler ([`HANDLER`]: the
/// handler under test, or the JSON log handler of a module case).
fn app_file(module: InstanceEntry<'_>, handler: InstanceEntry<'_>) -> String {
    let instance = |(component, config, grants): InstanceEntry<'_>| {
        let mut table = toml::Table::new();
        table.insert("component".into(), component.into());
        table.insert("config".into(), toml::Value::Table(config.clone()));
        if let Some(grants) = grants {
            table.insert("grants".into(), toml::Value::Table(grants.clone()));
        }
        toml::Value::Table(table)
    };
    let mut modules = toml::Table::new();
    modules.insert(INSTANCE.into(), instance(module));
    let mut handlers = toml::Table::new();
    handlers.insert(HANDLER.into(), instance(handler));
    let mut app = toml::Table::new();
    app.insert("modules".into(), toml::Value::Table(modules));
    app.insert("handlers".into(), toml::Value::Table(handlers));
    toml::to_string(&app).unwrap_or_default()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The outcomes as JUnit XML, one test suite per test file.
fn junit(outcomes: &[Outcome]) -> String {
    let mut files: Vec<&str> = outcomes
        .iter()
        .map(|outcome| outcome.file.as_str())
        .collect();
    files.dedup();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for file in files {
        let of_file: Vec<&Outcome> = outcomes.iter().filter(|o| o.file == file).collect();
        let count =
            |pick: fn(&Verdict) -> bool| of_file.iter().filter(|o| pick(&o.verdict)).count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
            escape(file),
            of_file.len(),
            count(|verdict| matches!(verdict, Verdict::Failed(_))),
            count(|verdict| matches!(verdict, Verdict::Error(_))),
            count(|verdict| matches!(verdict, Verdict::Skipped(_))),
        );
        for outcome in of_file {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(file),
                escape(&outcome.name),
                outcome.took.as_secs_f64()
            );
            match &outcome.verdict {
                Verdict::Passed => xml.push_str("/>\n"),
                Verdict::Skipped(reason) => {
                    let _ = write!(
                        xml,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        escape(reason)
                    );
                }
                Verdict::Failed(detail) => {
                    let _ = write!(
                        xml,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                        escape(detail.lines().next().unwrap_or("")),
                        escape(detail)
                    );
                }
                Verdict::Error(detail) => {
                    let _ = write!(
                        xml,
                        ">\n      <error message=\"{}\">{}</error>\n    </testcase>\n",
                        escape(detail.lines().next().unwrap_or("")),
                        escape(detail)
                    );
                }
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// `text` for an XML attribute or element: markup escaped, and characters
/// XML 1.0 cannot hold dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(text: &str) -> Case {
        let file: TestFile = toml::from_str(text).expect("a test file");
        file.cases.into_iter().next().expect("a case")
    }

    #[test]
    fn expectations_match_a_subset_of_fields_and_say_what_differs() {
        let case = case(
            r#"
            [[case]]
            name = "x"
            component = "builtin:sshd"
            lines = ["a"]
            only_expected = true
            [[case.expect]]
            kind = "SSHDLoginFailed"
            fields = { user = "testguy", failures = 3 }
            count = 1
            "#,
        );
        let event = |failures: i64| {
            serde_json::json!({
                "kind": "SSHDLoginFailed",
                "summary": "s",
                "fields": { "user": "testguy", "addr": "192.0.2.1", "failures": failures }
            })
        };
        assert_eq!(judge(&case, &[event(3)]), "");
        assert_eq!(
            judge(&case, &[event(2)]),
            "expected 1 SSHDLoginFailed with { failures = 3, user = \"testguy\" }, got 0\n  \
             got SSHDLoginFailed { addr = \"192.0.2.1\", failures = 2, user = \"testguy\" }: s: failures = 2 (expected 3)\n\
             events no expectation matches (only_expected):\n  \
             SSHDLoginFailed { addr = \"192.0.2.1\", failures = 2, user = \"testguy\" }: s\n"
        );
    }

    #[test]
    fn junit_reports_each_case_with_its_failure() {
        let outcomes = [
            Outcome {
                file: "a.test.toml".into(),
                name: "passes".into(),
                verdict: Verdict::Passed,
                took: Duration::from_millis(5),
            },
            Outcome {
                file: "a.test.toml".into(),
                name: "fails <here>".into(),
                verdict: Verdict::Failed("expected 1 X, got 0\n  more".into()),
                took: Duration::from_millis(7),
            },
        ];
        assert_eq!(
            junit(&outcomes),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  \
             <testsuite name=\"a.test.toml\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\">\n    \
             <testcase classname=\"a.test.toml\" name=\"passes\" time=\"0.005\"/>\n    \
             <testcase classname=\"a.test.toml\" name=\"fails &lt;here&gt;\" time=\"0.007\">\n      \
             <failure message=\"expected 1 X, got 0\">expected 1 X, got 0\n  more</failure>\n    \
             </testcase>\n  </testsuite>\n</testsuites>\n"
        );
    }
}
