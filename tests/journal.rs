//! Reading the systemd journal (`run --journal`) through the real binary
//! and the real journalctl, from journal files written by the real
//! systemd-journal-remote: entries appended while it reads, `kill -9` in
//! the middle, and a restart that goes on after the checkpoint's cursor.
//! Every entry carries its number, and the report module gives one notice
//! per entry: each number must come exactly once (after `kill -9`, the
//! entries after the last checkpoint once more, and no other).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(120);

/// systemd-journal-remote, which writes journal files from entries in the
/// journal export format.
fn journal_remote() -> PathBuf {
    ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("systemd-journal-remote is installed (Debian's systemd-journal-remote; test.sh installs it)")
}

/// Append entries `numbers` (`line N`, from sshd on web1, one second
/// apart) to the journal file in `directory`.
fn append_entries(directory: &Path, numbers: std::ops::Range<u32>) {
    // journalctl follows the entries of this boot.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("a boot id")
        .trim()
        .replace('-', "");
    let mut export = String::new();
    for n in numbers {
        let micros = 1_764_496_800_000_000u64 + u64::from(n) * 1_000_000;
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={micros}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={boot}\n\
             _HOSTNAME=web1\nSYSLOG_IDENTIFIER=sshd\n_PID={}\nPRIORITY=5\nSYSLOG_FACILITY=4\n\
             MESSAGE=line {n}\n\n",
            u64::from(n) * 1_000,
            1_000 + n,
        ));
    }
    let mut writer = Command::new(journal_remote())
        .arg(format!(
            "--output={}",
            directory.join("remote.journal").display()
        ))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journal-remote starts");
    writer
        .stdin
        .take()
        .expect("its input")
        .write_all(export.as_bytes())
        .expect("entries written");
    assert!(writer.wait().expect("it ends").success());
}

/// `correlator run --app app.toml --journal` in `dir`, reading the journal
/// files in `dir/journal`; its output in `stdout-RUN.json` and
/// `stderr-RUN.txt`.
struct Reading {
    child: Option<Child>,
    dir: PathBuf,
    run: u32,
}

impl Reading {
    fn start(dir: &Path, run: u32, args: &[&str]) -> Reading {
        let out = std::fs::File::create(dir.join(format!("stdout-{run}.json"))).expect("stdout");
        let err = std::fs::File::create(dir.join(format!("stderr-{run}.txt"))).expect("stderr");
        let child = correlator_command()
            .args(["run", "--app", "app.toml", "--journal"])
            .args(["-o", "journal.directory=journal"])
            .args(["-o", "state.checkpoint_interval=0.05"])
            .args(args)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                "info,correlator::pipeline=debug,wasmtime_internal_cache=error",
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the reader starts");
        Reading {
            child: Some(child),
            dir: dir.to_owned(),
            run,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("stderr-{}.txt", self.run)))
            .unwrap_or_default()
    }

    /// The entry numbers its notices name so far, in order.
    fn numbers(&self) -> Vec<u32> {
        let path = self.dir.join(format!("stdout-{}.json", self.run));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let whole = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        json_lines(whole)
            .iter()
            .filter(|event| event["kind"] == "Notice")
            .map(|event| {
                let summary = event["summary"].as_str().expect("a summary");
                let (_, number) = summary.rsplit_once("line ").expect("a numbered entry");
                number.parse().expect("a number")
            })
            .collect()
    }

    /// Wait until `done` holds for what it has said so far.
    fn wait_until(&mut self, what: &str, done: impl Fn(&Reading) -> bool) {
        let started = Instant::now();
        while !done(self) {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the reader exited ({status}):\n{}", self.stderr());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "not {what} after {PATIENCE:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and its exit status.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        child.wait().expect("the reader exits").code()
    }

    /// SIGKILL.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How often each number came.
fn counted(numbers: &[u32]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for &n in numbers {
        *counts.entry(n).or_default() += 1;
    }
    counts
}

/// The last checkpoint position `stderr` says was committed.
fn committed(stderr: &str) -> Option<u32> {
    stderr
        .lines()
        .rev()
        .filter_map(|line| line.split_once("state checkpoint committed position="))
        .find_map(|(_, rest)| rest.split(' ').next()?.parse::<u32>().ok())
}

#[test]
fn entries_written_while_reading_and_a_restart_after_kill_9_lose_and_repeat_nothing() {
    let dir = app_dir(REPORT_APP);
    let dir = dir.path();
    let journal = dir.join("journal");
    std::fs::create_dir(&journal).expect("journal directory");
    append_entries(&journal, 1..2_001);
    let mut first = Reading::start(
        dir,
        1,
        &[
            "-o",
            "journal.since=2000-01-01",
            "-o",
            "replay.batch_size=100",
        ],
    );
    // A writer goes on while the reader reads, and is killed.
    let writing = {
        let journal = journal.clone();
        std::thread::spawn(move || {
            for start in (2_001..6_001).step_by(500) {
                append_entries(&journal, start..start + 500);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    first.wait_until("checkpointed past entry 2,500", |reading| {
        committed(&reading.stderr()).is_some_and(|position| position >= 2_500)
    });
    first.kill();
    writing.join().expect("the writer ends");
    let check = correlator(dir, &["check", "--app", "app.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert_has(
        &check.stdout,
        "state ./app.state.redb: journal read through cursor s=",
    );
    // Without journal.since: the cursor says where to go on.
    let mut second = Reading::start(dir, 2, &[]);
    second.wait_until("through entry 6,000", |reading| {
        let mut seen = first.numbers();
        seen.extend(reading.numbers());
        counted(&seen).len() == 6_000
    });
    assert_eq!(second.stop(), Some(0), "{}", second.stderr());
    let stderr = second.stderr();
    let (_, rest) = stderr
        .split_once("continuing from the state checkpoint after record ")
        .unwrap_or_else(|| panic!("no checkpoint continued from:\n{stderr}"));
    let checkpoint: u32 = rest
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a position");
    assert_has(&stderr, "--after-cursor=s=");
    let before = first.numbers();
    let after = second.numbers();
    // The second run starts at the entry after the checkpoint, and takes
    // every later entry once; entries are numbered on from it.
    assert_eq!(after, (checkpoint + 1..=6_000).collect::<Vec<u32>>());
    assert_eq!(committed(&stderr), Some(6_000));
    // The first took every entry up to the checkpoint, and those after it
    // that it handed over before the kill are the only ones twice.
    assert!(before.len() >= checkpoint as usize);
    assert_eq!(before, (1..=before.len() as u32).collect::<Vec<u32>>());
}

#[test]
fn sshd_entries_of_the_journal_are_the_records_they_would_have_been_over_syslog() {
    let dir = app_dir(SSHD_JSON_APP);
    let dir = dir.path();
    let journal = dir.join("journal");
    std::fs::create_dir(&journal).expect("journal directory");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("a boot id")
        .trim()
        .replace('-', "");
    // Five failed passwords of one connection, then its end, as sshd logs
    // them to the journal.
    let mut export = String::new();
    let mut entry = |second: u64, message: &str| {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={second}000\n_BOOT_ID={boot}\n\
             _HOSTNAME=web1\nSYSLOG_IDENTIFIER=sshd\n_PID=4242\nPRIORITY=6\nSYSLOG_FACILITY=4\n\
             MESSAGE={message}\n\n",
            (1_764_496_800 + second) * 1_000_000
        ));
    };
    for second in 0..5 {
        entry(
            second,
            "Failed password for root from 192.0.2.7 port 50000 ssh2",
        );
    }
    entry(
        5,
        "Connection closed by authenticating user root 192.0.2.7 port 50000 [preauth]",
    );
    let mut writer = Command::new(journal_remote())
        .arg(format!(
            "--output={}",
            journal.join("remote.journal").display()
        ))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journal-remote starts");
    writer
        .stdin
        .take()
        .expect("its input")
        .write_all(export.as_bytes())
        .expect("entries written");
    assert!(writer.wait().expect("it ends").success());
    let mut reading = Reading::start(dir, 1, &["-o", "journal.since=2000-01-01"]);
    reading.wait_until("the failed login reported", |reading| {
        let path = reading.dir.join("stdout-1.json");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains("SSHDLoginFailed")
    });
    assert_eq!(reading.stop(), Some(0), "{}", reading.stderr());
    let events = json_lines(&std::fs::read_to_string(dir.join("stdout-1.json")).expect("output"));
    let summaries: Vec<&str> = events
        .iter()
        .filter(|event| event["kind"] != "SSHDStats")
        .map(|event| event["summary"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        summaries,
        [
            "Host 192.0.2.7 reached 5 failed passwords within 300 seconds",
            "User root from host 192.0.2.7 port 50000 failed to log in after 5 failed passwords",
        ]
    );
    let exceeded = &events[0]["fields"];
    assert_eq!(
        (
            &exceeded["users"],
            &exceeded["servers"],
            &exceeded["first"],
            &exceeded["last"]
        ),
        (
            &serde_json::json!("root"),
            &serde_json::json!("web1"),
            &serde_json::json!("2025-11-30T10:00:00Z"),
            &serde_json::json!("2025-11-30T10:00:04Z"),
        )
    );
}

#[test]
fn a_journalctl_that_cannot_start_or_fails_stops_the_run_naming_why() {
    let dir = app_dir(REPORT_APP);
    let run = correlator(
        dir.path(),
        &[
            "run",
            "--app",
            "app.toml",
            "--journal",
            "-o",
            "journal.command=/nonexistent/journalctl",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr.lines().last(),
        Some("error: cannot start /nonexistent/journalctl: No such file or directory (os error 2)")
    );
    let run = correlator(
        dir.path(),
        &[
            "run",
            "--app",
            "app.toml",
            "--journal",
            "-o",
            "journal.directory=/nonexistent",
        ],
    );
    assert_eq!(run.code, Some(1));
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: journalctl ended (exit status: 1): ")
            && last.contains("/nonexistent"),
        "{}",
        run.stderr
    );
}
