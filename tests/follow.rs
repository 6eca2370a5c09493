//! Following log files (`run --follow`) through the real binary: rotation
//! by rename and by copytruncate under a live writer, a restart with the
//! file rotated meanwhile, and `kill -9` in the middle of a file. Every
//! line carries its number, and the report module gives one notice per
//! line: each number must come exactly once (after `kill -9`, the lines
//! after the last checkpoint once more, and no other).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(120);

/// Line `n` of the followed file: an RFC 5424 record saying `line n`.
fn numbered(n: u32) -> String {
    format!(
        "<13>1 2026-11-30T10:{:02}:{:02}Z host app 1 - - line {n}\n",
        n / 60 % 60,
        n % 60
    )
}

/// `correlator run --app app.toml --follow auth.log` in `dir`, its output
/// in `stdout-RUN.json` and `stderr-RUN.txt`.
struct Following {
    child: Option<Child>,
    dir: PathBuf,
    run: u32,
}

impl Following {
    fn start(dir: &Path, run: u32, args: &[&str]) -> Following {
        let out = std::fs::File::create(dir.join(format!("stdout-{run}.json"))).expect("stdout");
        let err = std::fs::File::create(dir.join(format!("stderr-{run}.txt"))).expect("stderr");
        let child = correlator_command()
            .args(["run", "--app", "app.toml", "--follow", "auth.log"])
            .args(["-o", "state.checkpoint_interval=0.05"])
            .args(args)
            .current_dir(dir)
            // Debug for the pipeline: its checkpoints are logged.
            .env(
                "RUST_LOG",
                "info,correlator::pipeline=debug,wasmtime_internal_cache=error",
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the follower starts");
        Following {
            child: Some(child),
            dir: dir.to_owned(),
            run,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("stderr-{}.txt", self.run)))
            .unwrap_or_default()
    }

    /// The line numbers its notices name so far, in order.
    fn numbers(&self) -> Vec<u32> {
        numbers_in(&self.dir.join(format!("stdout-{}.json", self.run)))
    }

    /// Wait until its notices name `count` lines.
    fn wait_for(&mut self, count: usize) {
        let started = Instant::now();
        while self.numbers().len() < count {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the follower exited ({status}):\n{}", self.stderr());
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{} of {count} lines after {PATIENCE:?}:\n{}",
                self.numbers().len(),
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
        child.wait().expect("the follower exits").code()
    }

    /// SIGKILL.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The line numbers of the notices in `path`, whole lines only.
fn numbers_in(path: &Path) -> Vec<u32> {
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
            let (_, number) = summary.rsplit_once("line ").expect("a numbered line");
            number.parse().expect("a number")
        })
        .collect()
}

/// How often each number came.
fn counted(numbers: &[u32]) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for &n in numbers {
        *counts.entry(n).or_default() += 1;
    }
    counts
}

/// Append `lines` to `path` (creating it), one write each.
fn append(path: &Path, lines: std::ops::Range<u32>) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for appending");
    for n in lines {
        file.write_all(numbered(n).as_bytes()).expect("write");
    }
}

#[test]
fn rotations_by_rename_and_copytruncate_under_a_writer_and_a_restart_lose_and_repeat_nothing() {
    let dir = app_dir(REPORT_APP);
    let dir = dir.path();
    let log = dir.join("auth.log");
    append(&log, 0..500);
    let mut first = Following::start(dir, 1, &[]);
    first.wait_for(500);

    // Rename and create, as logrotate does by default: the writer still
    // holds the old file for a while and writes to it, then reopens.
    let mut writer = OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("the writer's handle");
    for n in 500..700 {
        writer.write_all(numbered(n).as_bytes()).expect("write");
    }
    std::fs::rename(&log, dir.join("auth.log.1")).expect("rotate");
    for n in 700..900 {
        writer.write_all(numbered(n).as_bytes()).expect("write");
    }
    drop(writer);
    append(&log, 900..1200);
    first.wait_for(1200);
    assert_has(
        &first.stderr(),
        "rotated: the path names a new file; the old one is read to its end",
    );

    // Copy and truncate, once everything written was read (what is
    // written between the copy and the truncation is only in the copy).
    std::fs::copy(&log, dir.join("auth.log.2")).expect("copy");
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .expect("truncate");
    append(&log, 1200..1300);
    first.wait_for(1300);
    assert_has(
        &first.stderr(),
        "truncated (copytruncate): read again from its start",
    );
    append(&log, 1300..1400);
    first.wait_for(1400);
    assert_eq!(first.stop(), Some(0), "{}", first.stderr());

    // Stopped: more lines, then a rotation, then more.
    append(&log, 1400..1500);
    std::fs::rename(&log, dir.join("auth.log.3")).expect("rotate");
    append(&log, 1500..1600);
    let mut second = Following::start(dir, 2, &[]);
    second.wait_for(200);
    assert_has(
        &second.stderr(),
        "rotated while stopped: the rest of the old file is read first",
    );
    append(&log, 1600..1700);
    second.wait_for(300);
    assert_eq!(second.stop(), Some(0), "{}", second.stderr());
    // check says where the next start resumes.
    let check = correlator(dir, &["check", "--app", "app.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    let inode = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&log).expect("the log").ino()
    };
    let size = std::fs::metadata(&log).expect("the log").len();
    assert_has(
        &check.stdout,
        &format!("state ./app.state.redb: auth.log (inode {inode}) read through byte {size}\n"),
    );

    let mut all = first.numbers();
    let restarted = second.numbers();
    assert_eq!(
        restarted.first(),
        Some(&1400),
        "the second run starts where the first stopped"
    );
    all.extend(&restarted);
    let counts = counted(&all);
    assert_eq!(counts.len(), 1700);
    assert!(counts.keys().copied().eq(0..1700));
    assert!(
        counts.values().all(|&count| count == 1),
        "repeated: {:?}",
        counts.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>()
    );
    // In order, the rotated file's lines before the new file's.
    assert!(all.windows(2).all(|pair| pair[0] < pair[1]), "out of order");
}

#[test]
fn kill_9_in_the_middle_of_a_file_resumes_at_the_line_after_the_checkpoint() {
    let dir = app_dir(REPORT_APP);
    let dir = dir.path();
    let log = dir.join("auth.log");
    append(&log, 1..2_001);
    let mut first = Following::start(dir, 1, &["-o", "replay.batch_size=100"]);
    // A writer goes on while the follower is killed.
    let writing = {
        let log = log.clone();
        std::thread::spawn(move || {
            for start in (2_001..20_001).step_by(500) {
                append(&log, start..start + 500);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    while !first
        .stderr()
        .lines()
        .filter_map(|line| line.split_once("state checkpoint committed position="))
        .filter_map(|(_, rest)| rest.split(' ').next()?.parse::<u32>().ok())
        .any(|position| position >= 3_000)
    {
        assert!(started.elapsed() < PATIENCE, "{}", first.stderr());
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill();
    writing.join().expect("the writer ends");
    let mut second = Following::start(dir, 2, &[]);
    let started = Instant::now();
    loop {
        let mut seen = first.numbers();
        seen.extend(second.numbers());
        if counted(&seen).len() == 20_000 {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "{}", second.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let before = first.numbers();
    let after = second.numbers();
    // The second run starts at the line after the checkpoint, and takes
    // every later line once.
    assert_eq!(after, (checkpoint + 1..=20_000).collect::<Vec<u32>>());
    // The first took every line up to the checkpoint, and those after it
    // that it handed over before the kill are the only ones twice.
    assert!(before.len() >= checkpoint as usize);
    assert_eq!(before, (1..=before.len() as u32).collect::<Vec<u32>>());
}
