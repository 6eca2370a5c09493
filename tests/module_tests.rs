//! `correlator test`, as a module author runs it: the bundled modules' own
//! test files pass; a wrong expectation fails with exit 1 and says what
//! differed; a broken component or test file exits 2 naming what is wrong;
//! the JUnit report is XML a CI system reads.

mod common;

use common::*;
use std::path::Path;

/// `correlator test ARGS` in `dir`: exit code, standard output, standard
/// error.
fn correlator_test(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["test"];
    all.extend(args);
    correlator(dir, &all)
}

/// `stdout` with each case's measured use (`(N instructions/record, M
/// MiB)`) as `(measured)`: the counts change with the components' code;
/// that they repeat exactly is tested on its own.
fn without_measurements(stdout: &str) -> String {
    stdout
        .lines()
        .map(|line| match line.find(" ... ok (") {
            Some(at) if line.ends_with(" MiB)") => format!("{} ... ok (measured)\n", &line[..at]),
            _ => format!("{line}\n"),
        })
        .collect()
}

#[test]
fn the_bundled_components_own_cases_pass() {
    let modules = workspace().join("modules");
    let dirs: Vec<String> = ["report", "sshd", "csv", "webhook", "email"]
        .iter()
        .map(|name| modules.join(name).join("tests").display().to_string())
        .collect();
    let args: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let run = correlator_test(&workspace(), &args);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let file = |name: &str| {
        modules
            .join(name)
            .join("tests")
            .join(format!("{name}.test.toml"))
            .display()
            .to_string()
    };
    let (report, sshd, csv, webhook, email) = (
        file("report"),
        file("sshd"),
        file("csv"),
        file("webhook"),
        file("email"),
    );
    // Files in sorted order: csv, email, report, sshd, webhook.
    assert_eq!(
        without_measurements(&run.stdout),
        format!(
            "test {csv} :: a file per module, kind and day, with a header and a row per event ... ok (measured)\n\
             test {csv} :: a field holding the separator, a quote or a line break is quoted ... ok\n\
             test {email} :: an event becomes a mail with the subject template and every field ... ok\n\
             test {report} :: a notice per record, and the stream's statistics at the end ... ok\n\
             test {report} :: a long message is cut at a word in the summary, whole in its field ... ok\n\
             test {sshd} :: the sample capture: two sessions and one failed login with three failed passwords ... ok\n\
             test {sshd} :: RFC 3164 lines of auth.log, with the year given ... ok\n\
             test {sshd} :: every failure counts with attempts = all, invalid users and closes before authenticating too ... ok\n\
             test {sshd} :: failed passwords counted before a restart count after it ... ok\n\
             test {sshd} :: the statistics of a day are dispatched at midnight, and reset ... ok\n\
             test {webhook} :: sshd: a failed login after three failed passwords ... ok\n\
             test {webhook} :: each event of the sshd case is posted as JSON, with the granted token ... ok (measured)\n\
             test {webhook} :: the slack preset posts the summary as text ... ok\n\
             \n13 passed, 0 failed\n"
        )
    );
}

const WRONG: &str = r#"
[[case]]
name = "right"
component = "builtin:sshd"
lines = ["<86>1 2023-02-20T15:14:46Z web1 sshd 7 - - Invalid user admin from 192.0.2.7 port 50000",
         "<86>1 2023-02-20T15:14:47Z web1 sshd 7 - - Connection closed by invalid user admin 192.0.2.7 port 50000 [preauth]"]
[[case.expect]]
kind = "SSHDLoginFailed"
fields = { user = "admin", failures = 0 }
count = 1

[[case]]
name = "wrong"
component = "builtin:sshd"
lines = ["<86>1 2023-02-20T15:14:46Z web1 sshd 7 - - Invalid user admin from 192.0.2.7 port 50000",
         "<86>1 2023-02-20T15:14:47Z web1 sshd 7 - - Connection closed by invalid user admin 192.0.2.7 port 50000 [preauth]"]
only_expected = true
[[case.expect]]
kind = "SSHDLoginFailed"
fields = { user = "root", port = 50000 }

[[case]]
name = "later"
component = "builtin:sshd"
lines = ["x"]
skip = "not yet"
"#;

#[test]
fn a_wrong_expectation_fails_with_what_differed_and_a_junit_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("wrong.test.toml"), WRONG).expect("write");
    let run = correlator_test(
        dir.path(),
        &[
            "wrong.test.toml",
            "--format",
            "junit",
            "--output",
            "report.xml",
        ],
    );
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "test wrong.test.toml :: right ... ok\n\
         test wrong.test.toml :: wrong ... FAILED\n\
         test wrong.test.toml :: later ... skipped (not yet)\n\
         \n---- wrong.test.toml :: wrong failed ----\n\
         expected at least 1 SSHDLoginFailed with { port = 50000, user = \"root\" }, got 0\n  \
         got SSHDLoginFailed { addr = \"192.0.2.7\", failures = 0, port = 50000, user = \"admin\" }: User admin from host 192.0.2.7 port 50000 failed to log in after 0 failed passwords: user = \"admin\" (expected \"root\")\n\
         events no expectation matches (only_expected):\n  \
         SSHDLoginFailed { addr = \"192.0.2.7\", failures = 0, port = 50000, user = \"admin\" }: User admin from host 192.0.2.7 port 50000 failed to log in after 0 failed passwords\n  \
         SSHDStats { denied = 1, evicted = 0, expired = 0, lockouts = 0, partial = 0, sessions = 0 }: 0 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted\n\
         every event (2):\n  \
         SSHDLoginFailed { addr = \"192.0.2.7\", failures = 0, port = 50000, user = \"admin\" }: User admin from host 192.0.2.7 port 50000 failed to log in after 0 failed passwords\n  \
         SSHDStats { denied = 1, evicted = 0, expired = 0, lockouts = 0, partial = 0, sessions = 0 }: 0 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted\n\
         \n1 passed, 1 failed, 1 skipped\n"
    );
    // The report is XML, with one suite of three cases, one failure and
    // one skipped.
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             suite = E.parse(sys.argv[1]).getroot().find('testsuite')\n\
             print(suite.get('tests'), suite.get('failures'), suite.get('errors'), suite.get('skipped'),\n      \
             [(c.get('name'), c.find('failure') is not None, c.find('skipped') is not None) for c in suite.findall('testcase')])",
        ])
        .arg(dir.path().join("report.xml"))
        .output()
        .expect("python3 runs (test.sh installs it)");
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout),
        "3 1 0 1 [('right', False, False), ('wrong', True, False), ('later', False, True)]\n"
    );
}

#[test]
fn a_broken_component_or_test_file_exits_2_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("broken.wasm"), b"not a component").expect("write");
    std::fs::write(
        dir.path().join("broken.test.toml"),
        "[[case]]\nname = \"broken\"\ncomponent = \"broken.wasm\"\nlines = [\"x\"]\n",
    )
    .expect("write");
    let run = correlator_test(dir.path(), &["broken.test.toml"]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(
            "test broken.test.toml :: broken ... ERROR\n\n---- broken.test.toml :: broken could not run ----\nthe run failed (exit status: 1):\n"
        ),
        "{}",
        run.stdout
    );
    assert_has(&run.stdout, "broken.wasm");
    assert!(
        run.stdout
            .ends_with("\n0 passed, 0 failed, 1 could not run\n"),
        "{}",
        run.stdout
    );
    // A component not built yet.
    std::fs::write(
        dir.path().join("unbuilt.test.toml"),
        "[[case]]\nname = \"unbuilt\"\ncomponent = \"target/x.wasm\"\nlines = [\"x\"]\n",
    )
    .expect("write");
    let run = correlator_test(dir.path(), &["unbuilt.test.toml"]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert_has(
        &run.stdout,
        "target/x.wasm: No such file or directory (os error 2) (is it built? cargo build --release)\n",
    );
    std::fs::write(
        dir.path().join("typo.test.toml"),
        "[[case]]\nname = \"typo\"\ncomponent = \"builtin:sshd\"\nlines = [\"x\"]\n[[case.expect]]\nknid = \"X\"\n",
    )
    .expect("write");
    let run = correlator_test(dir.path(), &["typo.test.toml"]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert_has(&run.stdout, "test typo.test.toml ... ERROR\n");
    assert_has(&run.stdout, "line 6, column 1");
    assert_has(&run.stdout, "unknown field `knid`");
}

const OVER_BUDGET: &str = r#"
[[case]]
name = "over"
component = "builtin:sshd"
lines = ["<86>1 2023-02-20T15:14:46Z web1 sshd 7 - - Invalid user admin from 192.0.2.7 port 50000",
         "<86>1 2023-02-20T15:14:47Z web1 sshd 7 - - Connection closed by invalid user admin 192.0.2.7 port 50000 [preauth]"]
max_instructions_per_record = 1000
max_memory_mib = 0.5
[[case.expect]]
kind = "SSHDLoginFailed"
count = 1
"#;

#[test]
fn a_budget_overrun_fails_with_the_same_instruction_count_every_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("over.test.toml"), OVER_BUDGET).expect("write");
    let runs: Vec<Run> = (0..2)
        .map(|_| correlator_test(dir.path(), &["over.test.toml"]))
        .collect();
    for run in &runs {
        assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    }
    // Fuel counts the same instructions in every run.
    assert_eq!(runs[0].stdout, runs[1].stdout);
    let stdout = &runs[0].stdout;
    let measured = stdout
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("test over.test.toml :: over ... FAILED ("))
        .and_then(|rest| rest.strip_suffix(" MiB)"))
        .expect("the verdict with what the case used");
    let (per_record, memory) = measured
        .split_once(" instructions/record, ")
        .expect("instructions and memory");
    let per_record: u64 = per_record.parse().expect("a count");
    assert!(per_record > 1000, "{stdout}");
    assert_has(
        stdout,
        &format!(
            "---- over.test.toml :: over failed ----\n\
             ran {per_record} instructions per record ("
        ),
    );
    assert_has(
        stdout,
        " over 2 records), over the budget of 1000 (max_instructions_per_record)\n",
    );
    assert_has(
        stdout,
        &format!("its memory grew to {memory} MiB, over the budget of 0.5 MiB (max_memory_mib)\n"),
    );
    // Within budget, the same case passes and shows what it used.
    std::fs::write(
        dir.path().join("over.test.toml"),
        OVER_BUDGET
            .replace("= 1000", "= 100000000")
            .replace("= 0.5", "= 64"),
    )
    .expect("write");
    let run = correlator_test(dir.path(), &["over.test.toml"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "test over.test.toml :: over ... ok ({per_record} instructions/record, {memory} MiB)\n\n1 passed, 0 failed\n"
        )
    );
}

const HANDLER_CASES: &str = r#"
[[case]]
name = "events"
component = "builtin:sshd"
lines = ["<86>1 2023-02-20T15:14:46Z web1 sshd 7 - - Invalid user admin from 192.0.2.7 port 50000",
         "<86>1 2023-02-20T15:14:47Z web1 sshd 7 - - Connection closed by invalid user admin 192.0.2.7 port 50000 [preauth]"]

[[case]]
name = "posted"
component = "builtin:webhook"
events_from = "events"
config = { url = "https://hooks.example.com/a" }
grants = { network = ["hooks.example.com:443"] }
only_expected = true
[[case.expect_request]]
url = "https://hooks.example.com/b"
body_contains = ['"user":"root"']

[[case]]
name = "written"
component = "builtin:csv"
events_from = "events"
grants = { dir = "out" }
[[case.expect_file]]
path = "module-SSHDStats-2023-02-20.csv"
content = "time,sessions\n"
[[case.expect_file]]
path = "missing.csv"
"#;

#[test]
fn a_handler_case_that_fails_shows_what_was_sent_and_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("handlers.test.toml"), HANDLER_CASES).expect("write");
    let run = correlator_test(dir.path(), &["handlers.test.toml"]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let failed =
        "User admin from host 192.0.2.7 port 50000 failed to log in after 0 failed passwords";
    let login = format!(
        "{{\"fields\":{{\"addr\":\"192.0.2.7\",\"failures\":0,\"port\":50000,\"user\":\"admin\"}},\"kind\":\"SSHDLoginFailed\",\"module\":\"module\",\"severity\":\"error\",\"summary\":\"{failed}\",\"time\":\"2023-02-20T15:14:47Z\"}}"
    );
    let stats = "{\"fields\":{\"denied\":1,\"evicted\":0,\"expired\":0,\"lockouts\":0,\"partial\":0,\"sessions\":0},\"kind\":\"SSHDStats\",\"module\":\"module\",\"severity\":\"info\",\"summary\":\"0 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted\",\"time\":\"2023-02-20T15:14:47Z\"}";
    assert_eq!(
        run.stdout,
        format!(
            "test handlers.test.toml :: events ... ok\n\
             test handlers.test.toml :: posted ... FAILED\n\
             test handlers.test.toml :: written ... FAILED\n\
             \n---- handlers.test.toml :: posted failed ----\n\
             expected at least 1 request(s) with {{ url = \"https://hooks.example.com/b\", body containing \"\\\"user\\\":\\\"root\\\"\" }}, got 0\n  \
             got POST https://hooks.example.com/a: {login}: url \"https://hooks.example.com/a\" (expected \"https://hooks.example.com/b\"), the body does not contain \"\\\"user\\\":\\\"root\\\"\"\n  \
             got POST https://hooks.example.com/a: {stats}: url \"https://hooks.example.com/a\" (expected \"https://hooks.example.com/b\"), the body does not contain \"\\\"user\\\":\\\"root\\\"\"\n\
             deliveries no expectation matches (only_expected):\n  \
             POST https://hooks.example.com/a: {login}\n  \
             POST https://hooks.example.com/a: {stats}\n\
             every delivery (2):\n  \
             POST https://hooks.example.com/a\n    \
             Content-Type: application/json\n    \n    \
             {login}\n  \
             POST https://hooks.example.com/a\n    \
             Content-Type: application/json\n    \n    \
             {stats}\n\
             \n---- handlers.test.toml :: written failed ----\n\
             file module-SSHDStats-2023-02-20.csv differs from the expected content:\n  \
             line 1:\n    \
             expected \"time,sessions\"\n    \
             got      \"time,sessions,denied,lockouts,expired,partial,evicted\"\n  \
             line 2:\n    \
             expected (no line)\n    \
             got      \"2023-02-20T15:14:47Z,0,1,0,0,0,0\"\n\
             expected a file missing.csv in the granted directory: No such file or directory (os error 2); it holds: module-SSHDLoginFailed-2023-02-20.csv, module-SSHDStats-2023-02-20.csv\n\
             \n1 passed, 2 failed\n"
        )
    );
    // What a handler case may not have, and an events_from naming no
    // module case before it: the file cannot be loaded.
    std::fs::write(
        dir.path().join("bad.test.toml"),
        "[[case]]\nname = \"h\"\ncomponent = \"builtin:csv\"\nevents_from = \"later\"\n",
    )
    .expect("write");
    let run = correlator_test(dir.path(), &["bad.test.toml"]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert_has(
        &run.stdout,
        "bad.test.toml: case \"h\": events_from = \"later\" names no module case before it in this file\n",
    );
    std::fs::write(
        dir.path().join("bad.test.toml"),
        "[[case]]\nname = \"h\"\ncomponent = \"builtin:csv\"\nmodule = \"builtin:sshd\"\nevents = []\nlines = [\"x\"]\n",
    )
    .expect("write");
    let run = correlator_test(dir.path(), &["bad.test.toml"]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert_has(
        &run.stdout,
        "bad.test.toml: case \"h\": a handler case (it has events) takes no lines: that is for module cases\n",
    );
}

/// `cargo ARGS` in `dir`, with the outer build's settings removed; its
/// output on failure.
fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    let output =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(args)
            .current_dir(dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .output()
            .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo {args:?} in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A new crate's target directory, kept between runs in this workspace's
/// (the crates' dependencies then build once).
fn cached_target(crate_dir: &Path) {
    let cache = workspace()
        .join("target")
        .join("test-cache")
        .join("new-crates");
    std::fs::create_dir_all(&cache).expect("cache directory");
    std::os::unix::fs::symlink(&cache, crate_dir.join("target"))
        .expect("link the target directory");
}

#[test]
fn a_new_module_builds_with_one_command_and_passes_its_own_tests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = correlator(dir.path(), &["new", "module", "brute-watch"]);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    assert_eq!(
        made.stdout,
        "made module brute-watch in ./brute-watch: cd brute-watch && cargo build --release && correlator test\n"
    );
    let crate_dir = dir.path().join("brute-watch");
    cached_target(&crate_dir);
    cargo(&crate_dir, &["build", "--release"]);
    let run = correlator(&crate_dir, &["test"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "test tests/brute-watch.test.toml :: failed passwords are matched, other programs and messages are not ... ok\n\
         test tests/brute-watch.test.toml :: the pattern is configurable ... ok\n\
         \n2 passed, 0 failed\n"
    );
    let unit = cargo(&crate_dir, &["unit"]);
    assert_has(
        &String::from_utf8_lossy(&unit.stdout),
        "test tests::a_record_that_holds_the_pattern_is_matched_and_counted_across_a_restart ... ok",
    );
    // It loads in an app as its README says.
    let inspected = correlator(
        &crate_dir,
        &["inspect", "target/wasm32-wasip2/release/brute_watch.wasm"],
    );
    assert_has(&inspected.stdout, "role: logic module\nname: brute-watch\n");
    // A second crate of the same name is refused, and a name that is not a
    // crate's.
    let again = correlator(dir.path(), &["new", "module", "brute-watch"]);
    assert_eq!(again.code, Some(1));
    assert_has(&again.stderr, "exists already");
    let bad = correlator(dir.path(), &["new", "handler", "../escape"]);
    assert_eq!(bad.code, Some(1));
    assert_has(&bad.stderr, "is not a crate name this makes");
}

#[test]
fn a_new_handler_builds_and_passes_its_own_tests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = correlator(dir.path(), &["new", "handler", "page-me"]);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let crate_dir = dir.path().join("page-me");
    cached_target(&crate_dir);
    cargo(&crate_dir, &["build", "--release"]);
    let inspected = correlator(
        &crate_dir,
        &["inspect", "target/wasm32-wasip2/release/page_me.wasm"],
    );
    assert_has(&inspected.stdout, "role: event handler\nname: page-me\n");
    let unit = cargo(&crate_dir, &["unit"]);
    assert_has(
        &String::from_utf8_lossy(&unit.stdout),
        "test tests::each_event_is_a_line ... ok",
    );
    let run = correlator_test(&crate_dir, &[]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "test tests/page-me.test.toml :: each event is a line in the granted directory ... ok\n\
         test tests/page-me.test.toml :: events can be written in the case too ... ok\n\
         \n2 passed, 0 failed\n"
    );
}

#[test]
fn golden_files_are_written_by_bless_and_compared_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("golden.test.toml"),
        "[[case]]\nname = \"sample\"\ncomponent = \"builtin:report\"\n\
         lines = [\"<13>1 2026-11-30T10:00:01Z web1 app 1 - - hello\", \"<13>1 2026-11-30T10:00:02Z web2 app 2 - - again\"]\n\
         golden = \"sample.jsonl\"\n",
    )
    .expect("write");
    let run = correlator_test(dir.path(), &["golden.test.toml"]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert_has(
        &run.stdout,
        "golden file sample.jsonl: No such file or directory (os error 2) (write it with --bless)\n",
    );
    let blessed = correlator_test(dir.path(), &["golden.test.toml", "--bless"]);
    assert_eq!(
        blessed.code,
        Some(0),
        "{}\n{}",
        blessed.stdout,
        blessed.stderr
    );
    let golden = std::fs::read_to_string(dir.path().join("sample.jsonl")).expect("written");
    let kinds: Vec<String> = json_lines(&golden)
        .iter()
        .map(|event| event["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["Notice", "Notice", "ReportStats"]);
    let again = correlator_test(dir.path(), &["golden.test.toml"]);
    assert_eq!(again.code, Some(0), "{}\n{}", again.stdout, again.stderr);
    // What the case gives no longer what the file says: the event shown.
    std::fs::write(
        dir.path().join("sample.jsonl"),
        golden.replace("again", "changed"),
    )
    .expect("write");
    let changed = correlator_test(dir.path(), &["golden.test.toml"]);
    assert_eq!(
        changed.code,
        Some(1),
        "{}\n{}",
        changed.stdout,
        changed.stderr
    );
    assert_has(
        &changed.stdout,
        "the events differ from sample.jsonl (3 expected, 3 got):\n  event 2:\n    \
         expected Notice { host = \"web2\", message = \"changed\", peer = \"\", program = \"app\" }: web2 app: changed\n    \
         got      Notice { host = \"web2\", message = \"again\", peer = \"\", program = \"app\" }: web2 app: again\n\
         (--bless writes what the case gives now)\n",
    );
}

#[test]
fn the_transmission_example_builds_outside_the_workspace_and_passes_its_tests() {
    let example = workspace().join("examples").join("transmission");
    if std::fs::symlink_metadata(example.join("target")).is_err() {
        cached_target(&example);
    }
    cargo(&example, &["build", "--release"]);
    let run = correlator_test(&example, &[]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "test tests/transmission.test.toml :: every completed torrent, on its server, and the count ... ok\n\
         test tests/transmission.test.toml :: the count goes on after a restart ... ok\n\
         \n2 passed, 0 failed\n"
    );
    let unit = String::from_utf8_lossy(&cargo(&example, &["unit"]).stdout).into_owned();
    assert_has(
        &unit,
        "test tests::the_torrent_is_what_precedes_the_state_change ... ok",
    );
    assert_has(
        &unit,
        "test tests::completions_are_dispatched_and_counted_across_a_restart ... ok",
    );
}

#[test]
fn a_ticks_until_that_is_no_time_is_refused_naming_the_item() {
    let dir = app_dir(REPORT_APP);
    let run = replay_in(
        dir.path(),
        "<13>1 2026-11-30T10:00:01Z web1 app 1 - - x\n",
        &["replay.ticks_until=tomorrow"],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr.lines().last(),
        Some(
            "error: replay.ticks_until: \"tomorrow\" is not an RFC 3339 time (2023-02-21T00:00:00Z)"
        )
    );
}
