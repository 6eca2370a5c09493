//! Helpers shared by the integration tests: running the real binary in a
//! scratch directory, and writing captures.
#![allow(dead_code, reason = "each test file uses some of the helpers")]

pub mod relp;

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

/// A `correlator` run in the background in `dir` (following files, reading
/// the journal), its standard output in `stdout-RUN.json` and standard
/// error in `stderr-RUN.txt` there, with the pipeline's checkpoints logged.
pub struct Background {
    child: Option<std::process::Child>,
    dir: PathBuf,
    run: u32,
}

/// How long a background run may take to get somewhere.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

impl Background {
    /// `correlator ARGS` in `dir`, as run number `run`.
    pub fn start(dir: &Path, run: u32, args: &[&str]) -> Background {
        let out = std::fs::File::create(dir.join(format!("stdout-{run}.json"))).expect("stdout");
        let err = std::fs::File::create(dir.join(format!("stderr-{run}.txt"))).expect("stderr");
        let child = correlator_command()
            .args(args)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                "info,correlator::pipeline=debug,wasmtime_internal_cache=error",
            )
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the run starts");
        Background {
            child: Some(child),
            dir: dir.to_owned(),
            run,
        }
    }

    /// What it wrote on standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("stderr-{}.txt", self.run)))
            .unwrap_or_default()
    }

    /// Its standard output so far, whole lines only.
    pub fn stdout(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("stdout-{}.json", self.run)))
            .unwrap_or_default();
        match text.rfind('\n') {
            Some(end) => text[..=end].to_owned(),
            None => String::new(),
        }
    }

    /// The numbers of the `line N` records its report notices name so far,
    /// in order.
    pub fn numbers(&self) -> Vec<u32> {
        json_lines(&self.stdout())
            .iter()
            .filter(|event| event["kind"] == "Notice")
            .map(|event| {
                let summary = event["summary"].as_str().expect("a summary");
                let (_, number) = summary.rsplit_once("line ").expect("a numbered line");
                number.parse().expect("a number")
            })
            .collect()
    }

    /// Wait until `done` holds; fail if it exits first or takes longer
    /// than [`PATIENCE`].
    pub fn wait_until(&mut self, what: &str, done: impl Fn(&Background) -> bool) {
        let started = std::time::Instant::now();
        while !done(self) {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the run exited ({status}):\n{}", self.stderr());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "not {what} after {PATIENCE:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM, and its exit status.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        terminate(&mut child)
    }

    /// SIGTERM to every one of `runs` at once (none outlives another to
    /// take over its work), then each one's exit status.
    pub fn stop_together(runs: &mut [Background]) -> Vec<Option<i32>> {
        for run in runs.iter() {
            run.signal("TERM");
        }
        runs.iter_mut()
            .map(|run| {
                let mut child = run.child.take().expect("running");
                child.wait().expect("the run exits").code()
            })
            .collect()
    }

    /// Send it signal `name` (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM to `child`, and its exit status once it has exited.
pub fn terminate(child: &mut std::process::Child) -> Option<i32> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    child.wait().expect("the process exits").code()
}

/// How often each number came.
pub fn counted(numbers: &[u32]) -> std::collections::BTreeMap<u32, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for &n in numbers {
        *counts.entry(n).or_default() += 1;
    }
    counts
}

/// The position of the last state checkpoint `stderr` says was committed.
pub fn committed(stderr: &str) -> Option<u32> {
    stderr
        .lines()
        .rev()
        .filter_map(|line| line.split_once("state checkpoint committed position="))
        .find_map(|(_, rest)| rest.split(' ').next()?.parse::<u32>().ok())
}

/// The position `stderr` says a run continued after.
pub fn continued_after(stderr: &str) -> u32 {
    let (_, rest) = stderr
        .split_once("continuing from the state checkpoint after record ")
        .unwrap_or_else(|| panic!("no checkpoint continued from:\n{stderr}"));
    rest.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a position")
}
