//! Helpers shared by the integration tests: running the real binary in a
//! scratch directory, and writing captures.
#![allow(dead_code, reason = "each test file uses some of the helpers")]

use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn sample_capture() -> PathBuf {
    workspace().join("data").join("sshd-1.cap")
}

/// What one run of the binary gave.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `correlator ARGS` in `dir` with plain diagnostics.
pub fn correlator(dir: &Path, args: &[&str]) -> Run {
    correlator_with_env(dir, args, &[])
}

/// Run `correlator ARGS` in `dir` with extra environment variables.
pub fn correlator_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_correlator"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info,wasmtime_internal_cache=error")
        // Compiled components are cached under target/, not in the home
        // directory of whoever runs the tests.
        .env(
            "XDG_CACHE_HOME",
            workspace().join("target").join("test-cache"),
        )
        .envs(env.iter().copied())
        .output()
        .expect("the correlator binary runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

/// `correlator` as the tests start it to run beside them: its log at
/// info level, compiled components cached under target/.
pub fn correlator_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_correlator"));
    command
        .env("RUST_LOG", "info,wasmtime_internal_cache=error")
        .env(
            "XDG_CACHE_HOME",
            workspace().join("target").join("test-cache"),
        );
    command
}

/// A scratch directory holding an app file `app.toml` with `text`.
pub fn app_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("app.toml"), text).expect("write app");
    dir
}

/// Every record as a JSON notice on standard output.
pub const REPORT_APP: &str = r#"
[modules.Report]
component = "builtin:report"
[handlers.console]
component = "builtin:log"
config = { format = "json" }
"#;

pub const SSHD_JSON_APP: &str = r#"
[modules.OpenSSH]
component = "builtin:sshd"
[handlers.console]
component = "builtin:log"
config = { format = "json" }
"#;

/// Write `capture` as `input.cap` in `dir` and replay it through the
/// directory's `app.toml`, with each of `options` as `-o`: the outcome,
/// whatever it is.
pub fn replay_in(dir: &Path, capture: &str, options: &[&str]) -> Run {
    std::fs::write(dir.join("input.cap"), capture).expect("write capture");
    let mut args = vec!["run", "--app", "app.toml", "--read-file", "input.cap"];
    for option in options {
        args.extend(["-o", option]);
    }
    correlator(dir, &args)
}

/// Replay `capture` through `app`, expect success, and return stdout's
/// JSON lines.
pub fn replay_json(app: &str, capture: &str, options: &[&str]) -> Vec<Value> {
    let dir = app_dir(app);
    let run = replay_in(dir.path(), capture, options);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    json_lines(&run.stdout)
}

/// Every line of `text` as JSON (the JSON log handler's events).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// The names of the entries of `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// `text` holds `expected`; on failure, shows all of `text`.
pub fn assert_has(text: &str, expected: &str) {
    assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
}

pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// An RFC 5424 sshd line at `second` seconds after 2023-02-20T15:00:00Z.
pub fn sshd_line(out: &mut String, second: u32, pid: u32, message: &str) {
    let (minute, second) = (second / 60, second % 60);
    let (hour, minute) = (15 + minute / 60, minute % 60);
    let _ = writeln!(
        out,
        "<86>1 2023-02-20T{hour:02}:{minute:02}:{second:02}Z server sshd {pid} - - {message}"
    );
}

/// One connection per failed password: `count` failures from `addr`, one
/// every `every` seconds from `start`, each connection closed after it.
pub fn brute_force(
    out: &mut String,
    addr: &str,
    start: u32,
    every: u32,
    count: u32,
    first_pid: u32,
) {
    for n in 0..count {
        let second = start + n * every;
        let pid = first_pid + n;
        let port = 40_000 + n;
        sshd_line(
            out,
            second,
            pid,
            &format!("Failed password for root from {addr} port {port} ssh2"),
        );
        sshd_line(
            out,
            second,
            pid,
            &format!("Connection closed by authenticating user root {addr} port {port} [preauth]"),
        );
    }
}

/// A brute force split by a restart: three failed passwords from
/// 198.51.100.7 before it and three after, 20 s apart, all within the
/// 300 s window, so that the fifth (the second after the restart) reaches
/// the limit of 5 only if the first three were kept.
pub fn brute_force_split() -> (String, String) {
    let mut before = String::new();
    brute_force(&mut before, "198.51.100.7", 0, 20, 3, 100);
    let mut after = String::new();
    brute_force(&mut after, "198.51.100.7", 60, 20, 3, 200);
    (before, after)
}
