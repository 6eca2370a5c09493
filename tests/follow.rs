//! Following log files (`run --follow`) through the real binary: rotation
//! by rename and by copytruncate under a live writer, a restart with the
//! file rotated meanwhile, and `kill -9` in the middle of a file. Every
//! line carries its number, and the report module gives one notice per
//! line: each number must come exactly once (after `kill -9`, the lines
//! after the last checkpoint once more, and no other).

mod common;

use common::*;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

/// Line `n` of the followed file: an RFC 5424 record saying `line n`.
fn numbered(n: u32) -> String {
    format!(
        "<13>1 2026-11-30T10:{:02}:{:02}Z host app 1 - - line {n}\n",
        n / 60 % 60,
        n % 60
    )
}

/// `correlator run --app app.toml --follow auth.log` in `dir`, as run
/// `run`, checkpointing often.
fn follow(dir: &Path, run: u32, args: &[&str]) -> Background {
    let mut all = vec![
        "run",
        "--app",
        "app.toml",
        "--follow",
        "auth.log",
        "-o",
        "state.checkpoint_interval=0.05",
    ];
    all.extend(args);
    Background::start(dir, run, &all)
}

/// Wait until `run`'s notices name `count` lines.
fn wait_for(run: &mut Background, count: usize) {
    run.wait_until(&format!("{count} lines"), |run| {
        run.numbers().len() >= count
    });
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
    let mut first = follow(dir, 1, &[]);
    wait_for(&mut first, 500);

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
    wait_for(&mut first, 1200);
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
    wait_for(&mut first, 1300);
    assert_has(
        &first.stderr(),
        "truncated (copytruncate): read again from its start",
    );
    append(&log, 1300..1400);
    wait_for(&mut first, 1400);
    assert_eq!(first.stop(), Some(0), "{}", first.stderr());

    // Stopped: more lines, then a rotation, then more.
    append(&log, 1400..1500);
    std::fs::rename(&log, dir.join("auth.log.3")).expect("rotate");
    append(&log, 1500..1600);
    let mut second = follow(dir, 2, &[]);
    wait_for(&mut second, 200);
    assert_has(
        &second.stderr(),
        "rotated while stopped: the rest of the old file is read first",
    );
    append(&log, 1600..1700);
    wait_for(&mut second, 300);
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
    let mut first = follow(dir, 1, &["-o", "replay.batch_size=100"]);
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
    first.wait_until("checkpointed past line 3,000", |run| {
        committed(&run.stderr()).is_some_and(|position| position >= 3_000)
    });
    first.kill();
    writing.join().expect("the writer ends");
    let mut second = follow(dir, 2, &[]);
    second.wait_until("through line 20,000", |run| {
        let mut seen = first.numbers();
        seen.extend(run.numbers());
        counted(&seen).len() == 20_000
    });
    assert_eq!(second.stop(), Some(0), "{}", second.stderr());
    let checkpoint = continued_after(&second.stderr());
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
