//! `correlator test`, as a module author runs it: the bundled sshd module's
//! own test file passes; a wrong expectation fails with exit 1 and says what
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

#[test]
fn the_sshd_modules_own_cases_pass() {
    let tests = workspace().join("modules").join("sshd").join("tests");
    let run = correlator_test(&workspace(), &[tests.to_str().expect("a UTF-8 path")]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let shown = tests.join("sshd.test.toml").display().to_string();
    assert_eq!(
        run.stdout,
        format!(
            "test {shown} :: the sample capture: two sessions and one failed login with three failed passwords ... ok\n\
             test {shown} :: RFC 3164 lines of auth.log, with the year given ... ok\n\
             test {shown} :: every failure counts with attempts = all, invalid users and closes before authenticating too ... ok\n\
             \n3 passed, 0 failed\n"
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
         \n---- wrong.test.toml :: wrong failed ----\n\
         expected at least 1 SSHDLoginFailed with { port = 50000, user = \"root\" }, got 0\n  \
         got SSHDLoginFailed { addr = \"192.0.2.7\", failures = 0, port = 50000, user = \"admin\" }: User admin from host 192.0.2.7 port 50000 failed to log in after 0 failed passwords: user = \"admin\" (expected \"root\")\n\
         events no expectation matches (only_expected):\n  \
         SSHDLoginFailed { addr = \"192.0.2.7\", failures = 0, port = 50000, user = \"admin\" }: User admin from host 192.0.2.7 port 50000 failed to log in after 0 failed passwords\n  \
         SSHDStats { denied = 1, evicted = 0, expired = 0, lockouts = 0, partial = 0, sessions = 0 }: 0 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted\n\
         every event (2):\n  \
         SSHDLoginFailed { addr = \"192.0.2.7\", failures = 0, port = 50000, user = \"admin\" }: User admin from host 192.0.2.7 port 50000 failed to log in after 0 failed passwords\n  \
         SSHDStats { denied = 1, evicted = 0, expired = 0, lockouts = 0, partial = 0, sessions = 0 }: 0 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted\n\
         \n1 passed, 1 failed\n"
    );
    // The report is XML, with one suite of two cases and one failure.
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             suite = E.parse(sys.argv[1]).getroot().find('testsuite')\n\
             print(suite.get('tests'), suite.get('failures'), suite.get('errors'),\n      \
             [(c.get('name'), c.find('failure') is not None) for c in suite.findall('testcase')])",
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
        "2 1 0 [('right', False), ('wrong', True)]\n"
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
