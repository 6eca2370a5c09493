//! Durable module state, through the real binary: replays split across
//! restarts give the events of one replay, a `kill -9` loses at most the
//! last checkpoint interval, and a store written by another app or another
//! component version is refused until discarded.

mod common;

use common::*;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Run `correlator run --app app.toml --read-file input.cap` in `dir` over
/// `capture` with `args`; expect success and return the JSON events.
fn replay_events_in(dir: &Path, capture: &str, args: &[&str]) -> Vec<Value> {
    std::fs::write(dir.join("input.cap"), capture).expect("write capture");
    let mut all = vec!["run", "--app", "app.toml", "--read-file", "input.cap"];
    all.extend(args);
    let run = correlator(dir, &all);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    json_lines(&run.stdout)
}

/// Run `correlator run --app app.toml --read-file CAPTURE --keep-state` in
/// `dir`: a replay that starts from the state the last run left.
fn replay_keeping_state(dir: &Path, capture: &str) -> Run {
    correlator(
        dir,
        &[
            "run",
            "--app",
            "app.toml",
            "--read-file",
            capture,
            "--keep-state",
        ],
    )
}

/// `events` without its last event, which must be the end-of-run
/// `SSHDStats` (every run dispatches one; a run that continues another
/// counts on from it).
fn without_final_statistics(mut events: Vec<Value>) -> Vec<Value> {
    let last = events.pop().expect("a run ends with statistics");
    assert_eq!(last["kind"], "SSHDStats", "{last}");
    events
}

#[test]
fn the_sample_capture_split_at_every_record_boundary_gives_the_events_of_one_replay() {
    let capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let lines: Vec<&str> = capture.lines().collect();
    let whole = replay_json(SSHD_JSON_APP, &capture, &[]);
    assert_eq!(
        whole.iter().map(|e| e["kind"].as_str()).collect::<Vec<_>>(),
        [
            Some("SSHDLoginSucceeded"),
            Some("SSHDLoginSucceeded"),
            Some("SSHDLoginFailed"),
            Some("SSHDStats")
        ]
    );
    for split in 0..=lines.len() {
        let dir = app_dir(SSHD_JSON_APP);
        let first: String = lines[..split].iter().map(|l| format!("{l}\n")).collect();
        let rest: String = lines[split..].iter().map(|l| format!("{l}\n")).collect();
        let mut events = without_final_statistics(replay_events_in(dir.path(), &first, &[]));
        events.extend(replay_events_in(dir.path(), &rest, &["--keep-state"]));
        assert_eq!(events, whole, "split after record {split}");
    }
}

#[test]
fn a_brute_force_split_across_a_restart_is_counted_once() {
    let (before, after) = brute_force_split();
    let dir = app_dir(SSHD_JSON_APP);
    let first = replay_events_in(dir.path(), &before, &[]);
    assert_eq!(of_kind(&first, "SSHDAttemptsExceeded").len(), 0);
    let second = replay_events_in(dir.path(), &after, &["--keep-state"]);
    let exceeded = of_kind(&second, "SSHDAttemptsExceeded");
    assert_eq!(exceeded.len(), 1, "{second:?}");
    assert_eq!(exceeded[0]["fields"]["host"], "198.51.100.7");
    assert_eq!(exceeded[0]["time"], "2023-02-20T15:01:20Z");
    let statistics = of_kind(&second, "SSHDStats");
    assert_eq!(statistics[0]["fields"]["lockouts"], 1);
    assert_eq!(statistics[0]["fields"]["denied"], 6);

    // Without --keep-state, or without the store, the second run starts
    // from nothing and misses it.
    let second = replay_events_in(dir.path(), &after, &[]);
    assert_eq!(of_kind(&second, "SSHDAttemptsExceeded").len(), 0);
    let dir = app_dir(SSHD_JSON_APP);
    let off = ["-o", "state.enabled=false"];
    replay_events_in(dir.path(), &before, &off);
    let second = replay_events_in(dir.path(), &after, &[&off[..], &["--keep-state"]].concat());
    assert_eq!(of_kind(&second, "SSHDAttemptsExceeded").len(), 0);
    assert!(!dir.path().join("app.state.redb").exists());
}

#[test]
fn a_session_open_across_a_restart_is_reported_with_its_whole_length() {
    let mut before = String::new();
    sshd_line(
        &mut before,
        0,
        4242,
        "Accepted password for carol from 192.0.2.9 port 50000 ssh2",
    );
    sshd_line(
        &mut before,
        1,
        4242,
        "pam_unix(sshd:session): session opened for user carol(uid=1000) by (uid=0)",
    );
    let mut after = String::new();
    sshd_line(
        &mut after,
        601,
        4242,
        "pam_unix(sshd:session): session closed for user carol",
    );
    let dir = app_dir(SSHD_JSON_APP);
    let first = replay_events_in(dir.path(), &before, &[]);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["fields"]["partial"], 1);
    let second = replay_events_in(dir.path(), &after, &["--keep-state"]);
    let logins = of_kind(&second, "SSHDLoginSucceeded");
    assert_eq!(logins.len(), 1, "{second:?}");
    assert_eq!(logins[0]["fields"]["user"], "carol");
    assert_eq!(logins[0]["fields"]["duration"], 600.0);
    assert_eq!(logins[0]["fields"]["start"], "2023-02-20T15:00:01Z");
}

#[test]
fn a_capture_replayed_twice_gives_the_same_events_and_the_shipped_apps_share_a_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sample = sample_capture();
    let sample = sample.to_str().expect("UTF-8 path");
    let replay = |app: &str, extra: &[&str]| {
        let app = workspace().join("apps").join(format!("{app}.toml"));
        let mut args = vec![
            "run",
            "--app",
            app.to_str().expect("UTF-8 path"),
            "--read-file",
            sample,
        ];
        args.extend(extra);
        let run = correlator(dir.path(), &args);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        run
    };
    let first = replay("ssh-report", &[]);
    let statistics = "[OpenSSH :: SSHDStats] 2 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted\n";
    assert!(first.stdout.ends_with(statistics), "{}", first.stdout);
    let report = replay("report", &[]);
    assert_eq!(report.stdout.lines().count(), 17, "{}", report.stdout);
    let second = replay("ssh-report", &[]);
    assert_eq!(second.stdout, first.stdout);
    assert_has(
        &second.stderr,
        &format!(
            "this replay starts every module empty and replaces the state of the checkpoint after record 16 of {sample} (stream clock 2023-02-20 20:14:58 UTC, committed "
        ),
    );
    assert_eq!(
        file_names(dir.path()),
        ["csv", "report.state.redb", "ssh-report.state.redb"]
    );
    // Told to keep the state, the same records count twice, with a warning.
    let kept = replay("ssh-report", &["--keep-state"]);
    assert!(
        kept.stdout.ends_with(
            "[OpenSSH :: SSHDStats] 4 sessions, 2 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted\n"
        ),
        "{}",
        kept.stdout
    );
    assert_has(
        &kept.stderr,
        &format!(
            "--keep-state: the state already covers records 1 to 16 of {sample}; this replay starts again at its first record, so modules see them twice (--continue passes over them)"
        ),
    );
}

/// `data/sshd-state-v1.redb`'s app: the sshd module counting three failed
/// passwords as a brute force, so that its failure window shows too.
const SSHD_LIMIT_3_APP: &str = r#"
[modules.OpenSSH]
component = "builtin:sshd"
config = { login_failure_limit = 3 }
[handlers.console]
component = "builtin:log"
config = { format = "json" }
"#;

#[test]
fn the_sshd_modules_version_1_state_is_migrated_and_the_replay_carries_on() {
    let capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let lines: Vec<&str> = capture.lines().collect();
    let whole = replay_json(SSHD_LIMIT_3_APP, &capture, &[]);
    // The store holds what a version-1 run over the first 13 records left
    // (see data/README.md); that run gave the two sessions.
    assert_eq!(
        whole.iter().map(|e| e["kind"].as_str()).collect::<Vec<_>>(),
        [
            Some("SSHDLoginSucceeded"),
            Some("SSHDLoginSucceeded"),
            Some("SSHDAttemptsExceeded"),
            Some("SSHDLoginFailed"),
            Some("SSHDStats")
        ]
    );
    let dir = app_dir(SSHD_LIMIT_3_APP);
    let store = dir.path().join("app.state.redb");
    std::fs::copy(workspace().join("data").join("sshd-state-v1.redb"), &store)
        .expect("copy the version-1 store");
    let rest: String = lines[13..].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("input.cap"), rest).expect("write capture");
    let run = replay_keeping_state(dir.path(), "input.cap");
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_has(&run.stderr, "state migrated instance=OpenSSH from=1 to=5");
    // The open connection kept its two failed passwords, and the host its
    // failure window: the third password makes both events.
    assert_eq!(json_lines(&run.stdout), whole[2..]);
    let owner = correlator::state_store::StateStore::open(&store, "app", false)
        .expect("the store opens")
        .owner("OpenSSH")
        .expect("the owner reads")
        .expect("the instance has an owner");
    assert_eq!((owner.component.as_str(), owner.version), ("sshd", 5));
}

#[test]
fn state_whose_layout_changed_without_a_new_version_is_refused_by_check_as_by_run() {
    let dir = app_dir(SSHD_LIMIT_3_APP);
    let path = dir.path().join("app.state.redb");
    std::fs::copy(workspace().join("data").join("sshd-state-v1.redb"), &path)
        .expect("copy the version-1 store");
    // The version-1 layout, claimed by the current version: what a module
    // whose layout changed without a new state version leaves behind.
    {
        use correlator::state_store::{InstanceCommit, OutboxChanges, PendingWrites, StateStore};
        let store = StateStore::open(&path, "app", false).expect("the store opens");
        let owner = store
            .owner("OpenSSH")
            .expect("the owner reads")
            .expect("an owner");
        let checkpoint = store
            .checkpoint()
            .expect("the checkpoint reads")
            .expect("a checkpoint");
        // The sshd module's current state version.
        let claimed = correlator::state_store::Ownership {
            version: 5,
            ..owner
        };
        store
            .commit(
                &[InstanceCommit {
                    instance: "OpenSSH",
                    owner: &claimed,
                    writes: &PendingWrites::new(),
                }],
                &checkpoint,
                &OutboxChanges::default(),
            )
            .expect("commit");
    }
    let before = std::fs::read(&path).expect("the store");
    let check = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(check.code, Some(1), "{}", check.stdout);
    assert_eq!(
        std::fs::read(&path).expect("the store"),
        before,
        "check changes nothing"
    );
    std::fs::write(dir.path().join("input.cap"), "").expect("write capture");
    let run = replay_keeping_state(dir.path(), "input.cap");
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let last = |text: &str| text.lines().last().unwrap_or("").to_owned();
    assert_eq!(last(&check.stderr), last(&run.stderr));
    assert_eq!(
        last(&run.stderr),
        "error: module \"OpenSSH\" refused to start: state \"tracker\" does not read as this version's layout (Tried to parse invalid utf-8); a module must raise its STATE_VERSION when its layout changes, and --discard-state INSTANCE starts it empty"
    );
}

#[test]
fn check_says_what_a_start_would_do_with_the_state_and_changes_nothing() {
    let dir = app_dir(SSHD_LIMIT_3_APP);
    let store = dir.path().join("app.state.redb");
    let check = |extra: &[&str]| {
        let mut args = vec!["check", "--app", "app.toml"];
        args.extend(extra);
        let run = correlator(dir.path(), &args);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        run.stdout
    };
    assert_eq!(
        check(&[]),
        "state ./app.state.redb: none yet\napp.toml: ok (1 modules, 1 handlers)\n"
    );
    assert!(!store.exists(), "check creates no store");

    let fixture = workspace().join("data").join("sshd-state-v1.redb");
    std::fs::copy(&fixture, &store).expect("copy the version-1 store");
    assert_eq!(
        check(&[]),
        "state ./app.state.redb: checkpoint after record 13 of first.cap (stream clock 2023-02-20 20:14:50 UTC, committed 2026-11-27 17:03:51 UTC)\n\
         state ./app.state.redb: module \"OpenSSH\" has 1 key (421 bytes) at version 1, which the next start migrates to version 5\n\
         app.toml: ok (1 modules, 1 handlers)\n"
    );
    assert_eq!(
        std::fs::read(&store).expect("the store"),
        std::fs::read(&fixture).expect("the fixture"),
        "check leaves the store as it was"
    );
    assert_eq!(
        check(&["-o", "state.enabled=false"]),
        "state: off (state.enabled is false)\napp.toml: ok (1 modules, 1 handlers)\n"
    );

    // After a start has migrated it, it is at version 5; check counts its
    // bytes as a run does (keys, values and 64 bytes an entry).
    replay_events_in(dir.path(), "", &["--keep-state"]);
    let report = check(&[]);
    let bytes = report
        .split_once("state ./app.state.redb: module \"OpenSSH\" has 1 key (")
        .and_then(|(_, rest)| rest.split_once(" bytes) at version 5\napp.toml: ok"))
        .map(|(bytes, _)| bytes.to_owned())
        .unwrap_or_else(|| panic!("no state line in {report}"));
    std::fs::write(dir.path().join("input.cap"), "").expect("write capture");
    let run = replay_keeping_state(dir.path(), "input.cap");
    assert_has(
        &run.stderr,
        &format!("instance=OpenSSH keys=1 bytes={bytes}\n"),
    );
}

#[test]
fn records_older_than_the_state_are_taken_with_a_warning() {
    let dir = app_dir(SSHD_JSON_APP);
    let capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    replay_events_in(dir.path(), &capture, &[]);
    std::fs::write(
        dir.path().join("old.cap"),
        "<86>1 2020-01-01T00:00:00Z server sshd 1 - - Connection closed by 192.0.2.1 port 1 [preauth]\n",
    )
    .expect("write capture");
    let run = replay_keeping_state(dir.path(), "old.cap");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_has(
        &run.stderr,
        "the first record (2020-01-01 00:00:00 UTC) is older than the state this run continues from (2023-02-20 20:14:58 UTC); modules see time go back, and ticks resume only after it (a replay without --keep-state starts empty; --discard-state empties one module)",
    );
}

const COUNTER_APP: &str = "[modules.counter]\ncomponent = '{guest}'\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = { format = \"json\" }\n";

fn counter_app(guest: &str) -> String {
    COUNTER_APP.replace("{guest}", guest)
}

fn counted(events: &[Value]) -> Vec<i64> {
    of_kind(events, "Count")
        .iter()
        .filter_map(|e| e["fields"]["records"].as_i64())
        .collect()
}

#[test]
fn state_of_another_app_or_component_or_a_newer_version_is_refused_until_discarded() {
    let capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let v1 = env!("CORRELATOR_TEST_GUEST_COUNTER_V1");
    let v2 = env!("CORRELATOR_TEST_GUEST_COUNTER_V2");
    let dir = app_dir(&counter_app(v1));
    std::fs::write(dir.path().join("input.cap"), &capture).expect("write capture");
    let run = |app: &str, extra: &[&str]| {
        let mut args = vec!["run", "--app", app, "--read-file", "input.cap"];
        args.extend(extra);
        correlator(dir.path(), &args)
    };
    // A replay starts empty unless told to keep the state; these keep it.
    let kept = |app: &str, extra: &[&str]| run(app, &[&["--keep-state"], extra].concat());
    // Version 1 counts 16, then 32: its count is durable. A replay without
    // --keep-state starts over.
    assert_eq!(counted(&json_lines(&run("app.toml", &[]).stdout)), [16]);
    assert_eq!(counted(&json_lines(&kept("app.toml", &[]).stdout)), [32]);
    assert_eq!(counted(&json_lines(&run("app.toml", &[]).stdout)), [16]);
    assert_eq!(counted(&json_lines(&kept("app.toml", &[]).stdout)), [32]);

    // Version 2 migrates version 1's state and counts on.
    std::fs::write(dir.path().join("app.toml"), counter_app(v2)).expect("write app");
    let migrated = kept("app.toml", &[]);
    assert_eq!(migrated.code, Some(0), "{}", migrated.stderr);
    assert_has(
        &migrated.stderr,
        "state migrated instance=counter from=1 to=2",
    );
    assert_eq!(counted(&json_lines(&migrated.stdout)), [48]);

    // Back to version 1: the state is newer than it can read.
    std::fs::write(dir.path().join("app.toml"), counter_app(v1)).expect("write app");
    let refused = kept("app.toml", &[]);
    assert_eq!(refused.code, Some(1));
    let v2_digest = sha256_of(v2);
    assert_eq!(
        refused.stderr.lines().last().unwrap_or(""),
        format!(
            "error: module \"counter\": ./app.state.redb holds state of version 2 (written by sha256 {v2_digest}), newer than this component's version 1 ({v1}); run the newer component, or start with --discard-state counter to delete that state and start the instance empty"
        )
    );

    // Another component under the instance's name.
    std::fs::write(
        dir.path().join("app.toml"),
        counter_app("builtin:sshd").replace('\'', "\""),
    )
    .expect("write app");
    let refused = kept("app.toml", &[]);
    assert_eq!(refused.code, Some(1));
    assert_eq!(
        refused.stderr.lines().last().unwrap_or(""),
        format!(
            "error: module \"counter\": ./app.state.redb holds state written by component \"counter\" (sha256 {v2_digest}), not by \"sshd\" (builtin:sshd); start with --discard-state counter to delete that state and start the instance empty"
        )
    );
    // check refuses it as a start does.
    let checked = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(checked.code, Some(1));
    assert_eq!(checked.stderr.lines().last(), refused.stderr.lines().last());
    let unknown = kept("app.toml", &["--discard-state", "OpenSSH"]);
    assert_eq!(unknown.code, Some(1));
    assert_eq!(
        unknown.stderr.lines().last().unwrap_or(""),
        "error: --discard-state OpenSSH: the app has no module \"OpenSSH\" (its modules: counter)"
    );

    // Discarded on purpose: version 1 starts from nothing.
    std::fs::write(dir.path().join("app.toml"), counter_app(v1)).expect("write app");
    let fresh = kept("app.toml", &["--discard-state", "counter"]);
    assert_eq!(fresh.code, Some(0), "{}", fresh.stderr);
    assert_eq!(counted(&json_lines(&fresh.stdout)), [16]);

    // Another app (the name comes from the file name) in the same run
    // directory has its own store ...
    std::fs::write(dir.path().join("other.toml"), counter_app(v1)).expect("write app");
    assert_eq!(counted(&json_lines(&kept("other.toml", &[]).stdout)), [16]);
    assert!(dir.path().join("other.state.redb").is_file());
    // ... unless both are given one file: then refused, and taken over
    // with --discard-all-state.
    let shared = ["-o", "state.file=app.state.redb"];
    let refused = kept("other.toml", &shared);
    assert_eq!(refused.code, Some(1));
    assert_eq!(
        refused.stderr.lines().last().unwrap_or(""),
        "error: state store ./app.state.redb belongs to app \"app\", not \"other\"; give each app its own system.run_dir (or state.file), or start with --discard-all-state to delete the other app's state"
    );
    let checked = correlator(
        dir.path(),
        &[&["check", "--app", "other.toml"], &shared[..]].concat(),
    );
    assert_eq!(checked.code, Some(1));
    assert_eq!(checked.stderr.lines().last(), refused.stderr.lines().last());
    let taken = run(
        "other.toml",
        &[&shared[..], &["--discard-all-state"]].concat(),
    );
    assert_eq!(taken.code, Some(0), "{}", taken.stderr);
    assert_eq!(counted(&json_lines(&taken.stdout)), [16]);
    assert_eq!(
        counted(&json_lines(&kept("other.toml", &shared).stdout)),
        [32]
    );
}

fn sha256_of(component: &str) -> String {
    let run = correlator(Path::new("."), &["inspect", component]);
    run.stdout
        .lines()
        .find_map(|line| line.strip_prefix("sha256: "))
        .expect("inspect prints the digest")
        .to_owned()
}

/// `count` sshd records with strictly increasing times (one a second, half
/// way through it, so that none falls on a tick boundary): many
/// connections open at once (sessions, failed logins, password guessing
/// from a few hosts), so that any point of the stream has state in flight.
fn interleaved_traffic(count: usize) -> String {
    let mut stories: Vec<Vec<String>> = Vec::new();
    let mut out = String::new();
    let mut next_story = 0u32;
    let mut written = 0usize;
    while written < count {
        while stories.len() < 16 {
            let n = next_story;
            next_story += 1;
            let addr = format!("203.0.113.{}", n % 7);
            let port = 30_000 + n % 30_000;
            let user = format!("user{}", n % 13);
            stories.push(match n % 3 {
                0 => vec![
                    format!("Accepted password for {user} from {addr} port {port} ssh2"),
                    format!(
                        "pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"
                    ),
                    format!("pam_unix(sshd:session): session closed for user {user}"),
                ],
                _ => {
                    let mut story: Vec<String> = (0..1 + n % 3)
                        .map(|_| format!("Failed password for {user} from {addr} port {port} ssh2"))
                        .collect();
                    story.push(format!(
                        "Connection closed by authenticating user {user} {addr} port {port} [preauth]"
                    ));
                    story
                }
            });
            // Each story's lines carry its own PID, kept in its first slot.
            let last = stories.len() - 1;
            stories[last].insert(0, (10_000 + n).to_string());
        }
        let index = written % stories.len();
        let pid = stories[index][0].clone();
        let message = stories[index].remove(1);
        let second = 1_676_905_200 + written as i64;
        let _ = writeln!(
            out,
            "<86>1 {}.5Z server sshd {pid} - - {message}",
            rfc3339_seconds(second)
        );
        written += 1;
        if stories[index].len() == 1 {
            stories.remove(index);
        }
    }
    out
}

/// `YYYY-MM-DDThh:mm:ss` of seconds since the epoch, UTC.
fn rfc3339_seconds(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// A replay reading standard input, whose diagnostics arrive line by line.
struct Feeding {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: String,
}

impl Feeding {
    /// Start the replay in `dir`; its events go to `events.json` there.
    fn start(dir: &Path, args: &[&str]) -> Feeding {
        let mut child = Command::new(env!("CARGO_BIN_EXE_correlator"))
            .args(["run", "--app", "app.toml", "--read-file", "-"])
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info,correlator::pipeline=debug")
            .env(
                "XDG_CACHE_HOME",
                workspace().join("target").join("test-cache"),
            )
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(dir.join("events.json")).expect("events file"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("the correlator binary runs");
        let (sender, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Feeding {
            child,
            stderr,
            seen: String::new(),
        }
    }

    fn feed(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(text.as_bytes()).expect("feed the replay");
        stdin.flush().expect("feed the replay");
    }

    /// Wait (at most a minute) for a diagnostic line that `wanted`.
    fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let _ = writeln!(self.seen, "{line}");
                    if wanted(&line) {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("the line waited for did not come:\n{}", self.seen);
    }
}

/// `kill -9` in the middle of a replay, then a restart on the rest of the
/// capture. What is asserted:
///
/// 1. Once the replay has been idle for longer than the checkpoint interval
///    (0.1 s) every record it processed is committed: the log shows a
///    commit at exactly the last record fed (20,000).
/// 2. More records are fed, in chunks, and the process is killed once a
///    checkpoint past record 100,000 is logged, while records keep coming.
///    The store then opens (through the library and in the restarted run),
///    and holds a checkpoint between record 100,000 and the end.
/// 3. Replaying the capture from the record after that checkpoint gives
///    exactly the events that one uninterrupted replay gives after it
///    (the same tail of events, the final statistics included): the state
///    at the checkpoint was consistent and complete.
#[test]
fn after_kill_9_in_a_replay_the_store_opens_and_the_run_continues_from_its_checkpoint() {
    const BATCH: usize = 100;
    const IDLE_AT: usize = 20_000;
    const KILL_AFTER: u64 = 100_000;
    const TOTAL: usize = 220_000;
    let capture = interleaved_traffic(TOTAL);
    let lines: Vec<&str> = capture.lines().collect();
    let joined = |range: std::ops::Range<usize>| -> String {
        lines[range].iter().map(|l| format!("{l}\n")).collect()
    };
    let options = [
        "-o",
        "state.checkpoint_interval=0.1",
        "-o",
        "replay.batch_size=100",
    ];
    let reference = replay_json(
        SSHD_JSON_APP,
        &capture,
        &["state.checkpoint_interval=0.1", "replay.batch_size=100"],
    );
    assert!(of_kind(&reference, "SSHDAttemptsExceeded").len() > 100);
    assert!(of_kind(&reference, "SSHDLoginSucceeded").len() > 10_000);
    // 61 hours of record time from 15:00: three midnights' statistics,
    // then the last.
    assert_eq!(of_kind(&reference, "SSHDStats").len(), 4);

    let dir = app_dir(SSHD_JSON_APP);
    let mut killed = Feeding::start(dir.path(), &options);
    assert_eq!(IDLE_AT % BATCH, 0, "the idle point ends a batch");
    killed.feed(&joined(0..IDLE_AT));
    killed
        .wait_for(|line| line.contains(&format!("state checkpoint committed position={IDLE_AT} ")));
    let mut stdin = killed.child.stdin.take().expect("stdin is piped");
    let chunks: Vec<String> = (IDLE_AT..TOTAL)
        .step_by(5_000)
        .map(|start| joined(start..(start + 5_000).min(TOTAL)))
        .collect();
    let writer = std::thread::spawn(move || {
        for chunk in chunks {
            // The process is killed while this writes: a broken pipe ends it.
            if stdin.write_all(chunk.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Keep the pipe open: the replay must not reach its end.
        std::thread::sleep(Duration::from_secs(120));
    });
    killed.wait_for(|line| committed_position(line).is_some_and(|position| position > KILL_AFTER));
    killed.child.kill().expect("kill -9");
    let _ = killed.child.wait();
    drop(writer);

    let store = dir.path().join("app.state.redb");
    let checkpoint = correlator::state_store::StateStore::open(&store, "app", false)
        .expect("the store opens after kill -9")
        .checkpoint()
        .expect("the checkpoint reads")
        .expect("there is a checkpoint");
    assert!(
        (KILL_AFTER..=TOTAL as u64).contains(&checkpoint.position),
        "checkpoint at {}",
        checkpoint.position
    );
    assert_eq!(checkpoint.source, "-");
    let position = usize::try_from(checkpoint.position).expect("a small number");
    std::fs::write(dir.path().join("rest.cap"), joined(position..TOTAL)).expect("write rest");
    let mut args = vec![
        "run",
        "--app",
        "app.toml",
        "--read-file",
        "rest.cap",
        "--keep-state",
    ];
    args.extend(options);
    let run = correlator(dir.path(), &args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_has(
        &run.stderr,
        &format!("continuing from the state checkpoint after record {position} of -"),
    );
    let restarted = json_lines(&run.stdout);
    assert!(restarted.len() > 10, "{restarted:?}");
    let tail = &reference[reference.len() - restarted.len()..];
    assert_eq!(restarted.as_slice(), tail);
}

/// The position of a `state checkpoint committed` debug line.
fn committed_position(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("state checkpoint committed position=")?;
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn sigterm_stops_a_replay_of_a_quiet_pipe_cleanly_and_the_next_run_counts_on() {
    let (before, after) = brute_force_split();
    let dir = app_dir(SSHD_JSON_APP);
    // No periodic checkpoint: what the next run sees was committed at the
    // stop. The six records are far fewer than a batch: they are handed on
    // because the pipe goes quiet, and processed while it stays open.
    let mut replay = Feeding::start(dir.path(), &["-o", "state.checkpoint_interval=3600"]);
    replay.feed(&before);
    let events = dir.path().join("events.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&events).map_or(0, |text| text.lines().count()) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the three failed logins did not come"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &replay.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    replay.wait_for(|line| line.contains("the replay was stopped after line 6 of -"));
    let exit = replay.child.wait().expect("the replay exits");
    assert_eq!(exit.code(), Some(0));
    let first = json_lines(&std::fs::read_to_string(&events).expect("events"));
    assert_eq!(
        first.iter().map(|e| e["kind"].as_str()).collect::<Vec<_>>(),
        [
            Some("SSHDLoginFailed"),
            Some("SSHDLoginFailed"),
            Some("SSHDLoginFailed"),
            Some("SSHDStats")
        ]
    );
    let second = replay_events_in(dir.path(), &after, &["--keep-state"]);
    assert_eq!(
        of_kind(&second, "SSHDAttemptsExceeded").len(),
        1,
        "{second:?}"
    );
}

#[test]
fn a_store_that_is_not_one_or_is_in_use_stops_start_up_with_the_reason() {
    let dir = app_dir(SSHD_JSON_APP);
    std::fs::write(dir.path().join("input.cap"), "").expect("write capture");
    let args = ["run", "--app", "app.toml", "--read-file", "input.cap"];
    std::fs::write(dir.path().join("app.state.redb"), "not a database\n").expect("write");
    let damaged = correlator(dir.path(), &args);
    assert_eq!(damaged.code, Some(1));
    assert_eq!(
        damaged.stderr.lines().last().unwrap_or(""),
        "error: state store ./app.state.redb: I/O error: Not a redb database: magic number mismatch"
    );
    // check refuses it as a start would.
    let checked = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(
        (checked.code, checked.stderr.as_str()),
        (
            Some(1),
            "error: state store ./app.state.redb: I/O error: Not a redb database: magic number mismatch\n"
        )
    );
    std::fs::remove_file(dir.path().join("app.state.redb")).expect("remove");

    // A replay of a pipe holds the store while it runs: once it has
    // committed a record, it certainly has it open.
    let mut running = Feeding::start(dir.path(), &["-o", "state.checkpoint_interval=0.01"]);
    let mut record = String::new();
    sshd_line(
        &mut record,
        0,
        1,
        "Connection closed by 192.0.2.1 port 1 [preauth]",
    );
    running.feed(&record);
    running.wait_for(|line| line.contains("state checkpoint committed position=1 "));
    let second = correlator(dir.path(), &args);
    assert_eq!(second.code, Some(1));
    assert_eq!(
        second.stderr.lines().last().unwrap_or(""),
        "error: state store ./app.state.redb: another correlator process has it open"
    );
    // check says it did not look, and the app itself is fine.
    let checked = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(
        (checked.code, checked.stdout.as_str()),
        (
            Some(0),
            "state ./app.state.redb: not looked at: another correlator process has it open\napp.toml: ok (1 modules, 1 handlers)\n"
        )
    );
    drop(running.child.stdin.take());
    let exit = running.child.wait().expect("the replay ends");
    assert_eq!(exit.code(), Some(0));
}

/// How a killed replay's events leave it.
#[derive(Clone, Copy, Debug)]
enum Handling {
    /// Standard output to a file: the handler keeps up.
    Fast,
    /// Standard output to a pipe read 4 KiB at a time, 2 ms apart: the
    /// handler lags, and the pipeline fills up behind it.
    Slow,
}

/// Replay `input.cap` in `dir` and kill it with SIGKILL after `after`;
/// what it wrote to standard output by then, whole lines only.
fn killed_replay(dir: &Path, handling: Handling, after: Duration) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_correlator"));
    command
        .args(["run", "--app", "app.toml", "--read-file", "input.cap"])
        .args(["-o", "state.checkpoint_interval=0.05"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env(
            "XDG_CACHE_HOME",
            workspace().join("target").join("test-cache"),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let out_path = dir.join("killed.json");
    let written = match handling {
        Handling::Fast => {
            let file = std::fs::File::create(&out_path).expect("output file");
            let mut child = command.stdout(file).spawn().expect("the replay starts");
            std::thread::sleep(after);
            let _ = child.kill();
            let _ = child.wait();
            std::fs::read(&out_path).expect("read the output")
        }
        Handling::Slow => {
            let mut child = command
                .stdout(Stdio::piped())
                .spawn()
                .expect("the replay starts");
            let mut stdout = child.stdout.take().expect("stdout is piped");
            let reader = std::thread::spawn(move || {
                use std::io::Read as _;
                let mut all = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(count) = stdout.read(&mut chunk) {
                    if count == 0 {
                        break;
                    }
                    all.extend_from_slice(&chunk[..count]);
                    std::thread::sleep(Duration::from_millis(2));
                }
                all
            });
            std::thread::sleep(after);
            let _ = child.kill();
            let _ = child.wait();
            reader.join().expect("the reader ends")
        }
    };
    let text = String::from_utf8(written).expect("UTF-8 output");
    // A line cut by the kill was not handed over whole.
    match text.rfind('\n') {
        Some(end) => text[..=end].to_owned(),
        None => String::new(),
    }
}

/// `kill -9` at ten moments of a 200,000-record replay with state on
/// (checkpoints every 50 ms), once with a handler that keeps up and once
/// with one that lags, then `correlator check` for the stored position
/// and `run --continue` from it. Every event of one uninterrupted replay
/// reaches the handler at least once: the killed run's events are the
/// start of the reference, the continuation's its end, and together they
/// cover it. The overlap (events of records processed after the last
/// checkpoint) is the documented window of duplicates.
#[test]
fn kill_9_at_any_moment_then_continuing_loses_no_event() {
    const TOTAL: usize = 200_000;
    let capture = interleaved_traffic(TOTAL);
    let reference = replay_json(SSHD_JSON_APP, &capture, &["state.enabled=false"]);
    let mut duplicates = Vec::new();
    for trial in 0..10u64 {
        for handling in [Handling::Fast, Handling::Slow] {
            let dir = app_dir(SSHD_JSON_APP);
            std::fs::write(dir.path().join("input.cap"), &capture).expect("write capture");
            // Moments spread over the run: from start-up to past the end
            // of a fast replay, and deep into a slow one.
            let after = match handling {
                Handling::Fast => Duration::from_millis(40 + trial * 45),
                Handling::Slow => Duration::from_millis(100 + trial * 190),
            };
            let killed = json_lines(&killed_replay(dir.path(), handling, after));
            let check = correlator(dir.path(), &["check", "--app", "app.toml"]);
            assert_eq!(check.code, Some(0), "{}", check.stderr);
            let continued = match check
                .stdout
                .split_once("checkpoint after record ")
                .and_then(|(_, rest)| rest.split(' ').next())
                .and_then(|number| number.parse::<u64>().ok())
            {
                Some(position) => {
                    assert_has(
                        &check.stdout,
                        &format!("checkpoint after record {position} of input.cap (stream clock "),
                    );
                    let run = correlator(
                        dir.path(),
                        &[
                            "run",
                            "--app",
                            "app.toml",
                            "--read-file",
                            "input.cap",
                            "--continue",
                        ],
                    );
                    assert_eq!(run.code, Some(0), "{}", run.stderr);
                    if position > 0 {
                        assert_has(
                            &run.stderr,
                            &format!(
                                "passed over the {position} entries of input.cap that the checkpoint covered"
                            ),
                        );
                    }
                    json_lines(&run.stdout)
                }
                // Killed before the first checkpoint (or before the store
                // was made): start again.
                None => {
                    assert!(
                        check.stdout.contains(": no checkpoint yet\n")
                            || check.stdout.contains(": none yet\n"),
                        "{}",
                        check.stdout
                    );
                    let run = correlator(
                        dir.path(),
                        &["run", "--app", "app.toml", "--read-file", "input.cap"],
                    );
                    assert_eq!(run.code, Some(0), "{}", run.stderr);
                    json_lines(&run.stdout)
                }
            };
            let what = format!("trial {trial}, {handling:?}, killed after {after:?}");
            assert!(killed.len() <= reference.len(), "{what}");
            assert_eq!(killed.as_slice(), &reference[..killed.len()], "{what}");
            assert!(continued.len() <= reference.len(), "{what}");
            assert_eq!(
                continued.as_slice(),
                &reference[reference.len() - continued.len()..],
                "{what}"
            );
            assert!(
                killed.len() + continued.len() >= reference.len(),
                "{what}: {} events lost",
                reference.len() - killed.len() - continued.len()
            );
            duplicates.push(killed.len() + continued.len() - reference.len());
        }
    }
    eprintln!(
        "duplicates per trial (of {} events): {duplicates:?}",
        reference.len()
    );
}
