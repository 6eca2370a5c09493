//! Reading the systemd journal (`run --journal`) through the real binary
//! and the real journalctl, from journal files written by the real
//! systemd-journal-remote: entries appended while it reads, `kill -9` in
//! the middle, and a restart that goes on after the checkpoint's cursor.
//! Every entry carries its number, and the report module gives one notice
//! per entry: each number must come exactly once (after `kill -9`, the
//! entries after the last checkpoint once more, and no other).

mod common;

use common::*;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// systemd-journal-remote, which writes journal files from entries in the
/// journal export format.
fn journal_remote() -> PathBuf {
    ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("systemd-journal-remote is installed (Debian's systemd-journal-remote; test.sh installs it)")
}

/// This boot's id: journalctl follows the entries of this boot.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("a boot id")
        .trim()
        .replace('-', "")
}

/// Append the entries of `export` (the journal export format) to the
/// journal file in `directory`.
fn write_journal(directory: &Path, export: &str) {
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

/// An entry of sshd on web1 (PID `pid`) at `micros` saying `message`.
fn entry(boot: &str, micros: u64, pid: u32, message: &str) -> String {
    format!(
        "__REALTIME_TIMESTAMP={micros}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={boot}\n\
         _HOSTNAME=web1\nSYSLOG_IDENTIFIER=sshd\n_PID={pid}\nPRIORITY=6\nSYSLOG_FACILITY=4\n\
         MESSAGE={message}\n\n",
        micros / 1_000
    )
}

/// Append entries `numbers` (`line N`, one second apart) to the journal
/// file in `directory`.
fn append_entries(directory: &Path, numbers: std::ops::Range<u32>) {
    let boot = boot_id();
    let export: String = numbers
        .map(|n| {
            let micros = 1_764_496_800_000_000 + u64::from(n) * 1_000_000;
            entry(&boot, micros, 1_000 + n, &format!("line {n}"))
        })
        .collect();
    write_journal(directory, &export);
}

/// `correlator run --app app.toml --journal` in `dir`, reading the journal
/// files in `dir/journal`, as run `run`, checkpointing often.
fn read_journal(dir: &Path, run: u32, args: &[&str]) -> Background {
    let mut all = vec![
        "run",
        "--app",
        "app.toml",
        "--journal",
        "-o",
        "journal.directory=journal",
        "-o",
        "state.checkpoint_interval=0.05",
    ];
    all.extend(args);
    Background::start(dir, run, &all)
}

#[test]
fn entries_written_while_reading_and_a_restart_after_kill_9_lose_and_repeat_nothing() {
    let dir = app_dir(REPORT_APP);
    let dir = dir.path();
    let journal = dir.join("journal");
    std::fs::create_dir(&journal).expect("journal directory");
    append_entries(&journal, 1..2_001);
    let mut first = read_journal(
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
    let mut second = read_journal(dir, 2, &[]);
    second.wait_until("through entry 6,000", |reading| {
        let mut seen = first.numbers();
        seen.extend(reading.numbers());
        counted(&seen).len() == 6_000
    });
    assert_eq!(second.stop(), Some(0), "{}", second.stderr());
    let stderr = second.stderr();
    let checkpoint = continued_after(&stderr);
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
    let boot = boot_id();
    // Five failed passwords of one connection, then its end, as sshd logs
    // them to the journal.
    let at = |second: u64| (1_764_496_800 + second) * 1_000_000;
    let mut export: String = (0..5)
        .map(|second| {
            entry(
                &boot,
                at(second),
                4242,
                "Failed password for root from 192.0.2.7 port 50000 ssh2",
            )
        })
        .collect();
    export.push_str(&entry(
        &boot,
        at(5),
        4242,
        "Connection closed by authenticating user root 192.0.2.7 port 50000 [preauth]",
    ));
    write_journal(&journal, &export);
    let mut reading = read_journal(dir, 1, &["-o", "journal.since=2000-01-01"]);
    reading.wait_until("the failed login reported", |reading| {
        reading.stdout().contains("SSHDLoginFailed")
    });
    assert_eq!(reading.stop(), Some(0), "{}", reading.stderr());
    let events = json_lines(&reading.stdout());
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
