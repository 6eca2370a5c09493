//! `correlator test`: a module's test cases, each run against its component
//! in isolation.
//!
//! A test file (`*.test.toml`) holds cases: a component, its
//! configuration, records (a file, or lines in the case), and what events
//! must come of them. Each case runs in a process of its own — this binary
//! replaying the records through an app of that one module and a JSON log
//! handler, with durable state off, in a directory of its own — so that it
//! gets a fresh sandbox and store, and is deterministic: the modules' clock
//! is the records' time, RFC 3164 records take the case's year, and the
//! component is granted nothing. The events it printed are then matched
//! against the case's expectations.

use anyhow::{Context as _, bail};
use serde::Deserialize;
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
        for case in &cases {
            let started = Instant::now();
            let verdict = run_case(file, case, options.bless);
            let word = match &verdict {
                Verdict::Passed => "ok",
                Verdict::Failed(_) => "FAILED",
                Verdict::Error(_) => "ERROR",
            };
            println!("test {shown} :: {} ... {word}", case.name);
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
    for outcome in &outcomes {
        let (what, detail) = match &outcome.verdict {
            Verdict::Passed => continue,
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
    let passed = outcomes.len() - failed - errors;
    let mut summary = format!("\n{passed} passed, {failed} failed");
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
    for case in &parsed.cases {
        match (&case.input, &case.lines) {
            (Some(_), Some(_)) => bail!(
                "{}: case \"{}\" has both input and lines; give one",
                file.display(),
                case.name
            ),
            (None, None) => bail!(
                "{}: case \"{}\" has no records: give input = \"FILE\" or lines = [...]",
                file.display(),
                case.name
            ),
            _ => {}
        }
        if let Some(restart) = &case.restart
            && restart.input.is_some() == restart.lines.is_some()
        {
            bail!(
                "{}: case \"{}\": [case.restart] takes input = \"FILE\" or lines = [...], one of them",
                file.display(),
                case.name
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
            bail!(
                "{}: case \"{}\": a line holds a line break: {line:?}",
                file.display(),
                case.name
            );
        }
    }
    Ok(parsed.cases)
}

/// The instance name of the module under test.
const INSTANCE: &str = "module";

/// Run `case` of `file` in a process of its own and judge its events.
fn run_case(file: &Path, case: &Case, bless: bool) -> Verdict {
    let base = file.parent().unwrap_or(Path::new("."));
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => return Verdict::Error(format!("cannot make a directory to run in: {error}")),
    };
    let component = match case.component.strip_prefix("builtin:") {
        Some(_) => case.component.clone(),
        None => match std::fs::canonicalize(base.join(&case.component)) {
            Ok(path) => path.display().to_string(),
            Err(error) => {
                return Verdict::Error(format!(
                    "component {}: {error} (is it built? cargo build --release)",
                    base.join(&case.component).display()
                ));
            }
        },
    };
    let mut parts = vec![(&case.input, &case.lines)];
    if let Some(restart) = &case.restart {
        parts.push((&restart.input, &restart.lines));
    }
    for (number, (input, lines)) in parts.iter().enumerate() {
        if let Err(error) = write_records(
            base,
            input,
            lines,
            &dir.path().join(format!("input-{number}.cap")),
        ) {
            return Verdict::Error(error);
        }
    }
    let app = app_file(&component, &case.config);
    if let Err(error) = std::fs::write(dir.path().join("app.toml"), app) {
        return Verdict::Error(format!("cannot write the app: {error}"));
    }
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(error) => return Verdict::Error(format!("cannot find this program: {error}")),
    };
    let mut events: Vec<serde_json::Value> = Vec::new();
    let mut said = String::new();
    for number in 0..parts.len() {
        let mut command = std::process::Command::new(&binary);
        command
            .args(["run", "--app", "app.toml", "--read-file"])
            .arg(format!("input-{number}.cap"))
            .current_dir(dir.path())
            .env("RUST_LOG", "warn,guest=debug,wasmtime_internal_cache=error")
            .stdin(std::process::Stdio::null());
        // One part: no state at all. Two: the first starts empty (as a
        // replay does) and saves its state, the second goes on from it.
        if parts.len() == 1 {
            command.args(["-o", "state.enabled=false"]);
        } else if number > 0 {
            command.arg("--keep-state");
        }
        if let Some(year) = case.year {
            command.args(["-o", &format!("parser.rfc3164_year={year}")]);
        }
        if let Some(until) = &case.ticks_until
            && number + 1 == parts.len()
        {
            // A TOML date-time or a string, both as RFC 3339.
            let until = match until {
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            command.args(["-o", &format!("replay.ticks_until={until}")]);
        }
        let output = match command.output() {
            Ok(output) => output,
            Err(error) => return Verdict::Error(format!("cannot start the run: {error}")),
        };
        said.push_str(&String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            return Verdict::Error(format!(
                "the run failed ({}):\n{}",
                output.status,
                indent(&said)
            ));
        }
        events.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()),
        );
    }
    if let Some(golden) = &case.golden {
        let golden = base.join(golden);
        if bless {
            let lines: String = events.iter().map(|event| format!("{event}\n")).collect();
            if let Err(error) = std::fs::write(&golden, lines) {
                return Verdict::Error(format!("cannot write {}: {error}", golden.display()));
            }
        } else if let Some(mut differs) = compare_golden(&golden, &events) {
            if !said.trim().is_empty() {
                let _ = writeln!(differs, "the run said:\n{}", indent(&said));
            }
            return Verdict::Failed(differs);
        }
    }
    judge(case, &events, &said)
}

/// How `events` differ from the golden file, or `None` when they are the
/// same (as JSON values, line by line).
fn compare_golden(golden: &Path, events: &[serde_json::Value]) -> Option<String> {
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

/// An app of the one module and a JSON log handler.
fn app_file(component: &str, config: &toml::Table) -> String {
    let mut module = toml::Table::new();
    module.insert("component".into(), component.into());
    module.insert("config".into(), toml::Value::Table(config.clone()));
    let mut modules = toml::Table::new();
    modules.insert(INSTANCE.into(), toml::Value::Table(module));
    let mut log_config = toml::Table::new();
    log_config.insert("format".into(), "json".into());
    let mut handler = toml::Table::new();
    handler.insert("component".into(), "builtin:log".into());
    handler.insert("config".into(), toml::Value::Table(log_config));
    let mut handlers = toml::Table::new();
    handlers.insert("events".into(), toml::Value::Table(handler));
    let mut app = toml::Table::new();
    app.insert("modules".into(), toml::Value::Table(modules));
    app.insert("handlers".into(), toml::Value::Table(handlers));
    toml::to_string(&app).unwrap_or_default()
}

/// Whether the events meet the case's expectations, and if not, what a
/// person needs to see.
fn judge(case: &Case, events: &[serde_json::Value], said: &str) -> Verdict {
    let mut report = String::new();
    let mut matched = vec![false; events.len()];
    for expect in &case.expect {
        let of_kind: Vec<usize> = (0..events.len())
            .filter(|&index| events[index]["kind"] == expect.kind.as_str())
            .collect();
        let matching: Vec<usize> = of_kind
            .iter()
            .copied()
            .filter(|&index| differences(expect, &events[index]).is_empty())
            .collect();
        for &index in &matching {
            matched[index] = true;
        }
        let holds = match expect.count {
            Some(count) => matching.len() == count,
            None => !matching.is_empty(),
        };
        if holds {
            continue;
        }
        let wanted = match expect.count {
            Some(count) => format!("{count}"),
            None => "at least 1".to_owned(),
        };
        let _ = writeln!(
            report,
            "expected {wanted} {} {}, got {}",
            expect.kind,
            describe_expectation(expect),
            matching.len()
        );
        for &index in of_kind.iter().filter(|index| !matching.contains(index)) {
            let _ = writeln!(
                report,
                "  got {}: {}",
                shown_event(&events[index]),
                differences(expect, &events[index]).join(", ")
            );
        }
        if of_kind.is_empty() {
            let _ = writeln!(report, "  (no {} event at all)", expect.kind);
        }
    }
    if case.only_expected {
        let unexpected: Vec<&serde_json::Value> = events
            .iter()
            .zip(&matched)
            .filter(|(_, matched)| !**matched)
            .map(|(event, _)| event)
            .collect();
        if !unexpected.is_empty() {
            let _ = writeln!(report, "events no expectation matches (only_expected):");
            for event in unexpected {
                let _ = writeln!(report, "  {}", shown_event(event));
            }
        }
    }
    if report.is_empty() {
        return Verdict::Passed;
    }
    let _ = writeln!(report, "every event ({}):", events.len());
    for event in events {
        let _ = writeln!(report, "  {}", shown_event(event));
    }
    if !said.trim().is_empty() {
        let _ = writeln!(report, "the run said:\n{}", indent(said));
    }
    Verdict::Failed(report)
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

fn describe_expectation(expect: &Expect) -> String {
    let mut parts: Vec<String> = expect
        .fields
        .iter()
        .map(|(name, value)| format!("{name} = {value}"))
        .collect();
    if let Some(summary) = &expect.summary {
        parts.push(format!("summary = {summary:?}"));
    }
    if parts.is_empty() {
        "event(s)".to_owned()
    } else {
        format!("with {{ {} }}", parts.join(", "))
    }
}

/// `Kind { field = value, ... }: summary`.
fn shown_event(event: &serde_json::Value) -> String {
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
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\">",
            escape(file),
            of_file.len(),
            count(|verdict| matches!(verdict, Verdict::Failed(_))),
            count(|verdict| matches!(verdict, Verdict::Error(_))),
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
        assert!(matches!(judge(&case, &[event(3)], ""), Verdict::Passed));
        let Verdict::Failed(report) = judge(&case, &[event(2)], "") else {
            panic!("failed expected");
        };
        assert_eq!(
            report,
            "expected 1 SSHDLoginFailed with { failures = 3, user = \"testguy\" }, got 0\n  \
             got SSHDLoginFailed { addr = \"192.0.2.1\", failures = 2, user = \"testguy\" }: s: failures = 2 (expected 3)\n\
             events no expectation matches (only_expected):\n  \
             SSHDLoginFailed { addr = \"192.0.2.1\", failures = 2, user = \"testguy\" }: s\n\
             every event (1):\n  \
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
             <testsuite name=\"a.test.toml\" tests=\"2\" failures=\"1\" errors=\"0\">\n    \
             <testcase classname=\"a.test.toml\" name=\"passes\" time=\"0.005\"/>\n    \
             <testcase classname=\"a.test.toml\" name=\"fails &lt;here&gt;\" time=\"0.007\">\n      \
             <failure message=\"expected 1 X, got 0\">expected 1 X, got 0\n  more</failure>\n    \
             </testcase>\n  </testsuite>\n</testsuites>\n"
        );
    }
}
