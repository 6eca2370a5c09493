//! Attacks on the sandbox's guarantees by components that were granted
//! nothing (or only a directory): blocking in a WASI call in every export,
//! and what the host must stay within meanwhile. Each runs beside a
//! well-behaved sshd instance whose events must be exactly those of a run
//! without the attacker, and each run's wall time and peak memory (the
//! summary line's `peak_memory_mib`) are held to a bound.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest a run with a blocking attacker may take here: every blocked
/// call ends at 200 ms, the failure policy backs off and disables, and a
/// busy CI machine gets slack.
const WALL_TIME_BOUND: Duration = Duration::from_secs(20);

/// Most memory a run of the sample capture may hold: the runtime with two
/// instances needs well under half of it.
const PEAK_MEMORY_BOUND_MIB: u64 = 400;

fn blocking_guest() -> &'static str {
    env!("CORRELATOR_TEST_GUEST_HOSTILE_BLOCK")
}

/// The sample capture and a brute force, over more than one minute (so
/// that minute ticks come).
fn capture() -> String {
    let mut capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    brute_force(&mut capture, "203.0.113.66", 0, 10, 6, 9000);
    capture
}

/// A directory with an app of the sshd module, the blocking module (its
/// directory `run/blk` holding a file per `(export, how)` in `markers`,
/// calls limited to 200 ms) and the JSON log handler.
fn blocking_app(markers: &[(&str, &str)]) -> tempfile::TempDir {
    let app = format!(
        "[config.system]\nrun_dir = \"run\"\n\
         [modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [modules.blk]\ncomponent = '{}'\ngrants = {{ dir = \"blk\" }}\nlimits = {{ call_timeout_ms = 200 }}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n",
        blocking_guest()
    );
    let dir = app_dir(&app);
    let granted = dir.path().join("run/blk");
    std::fs::create_dir_all(&granted).expect("mkdir");
    for (export, how) in markers {
        std::fs::write(granted.join(export), how).expect("write marker");
    }
    dir
}

/// A run of `args` in `dir`, and how long it took.
fn timed(dir: &Path, args: &[&str]) -> (Run, Duration) {
    let started = Instant::now();
    let run = correlator(dir, args);
    (run, started.elapsed())
}

/// A replay of `input.cap` in `dir` with `options` (each given as
/// `-o KEY=VALUE`), and how long it took.
fn replay_input(dir: &Path, options: &[&str]) -> (Run, Duration) {
    let mut args = vec!["run", "--app", "app.toml", "--read-file", "input.cap"];
    for option in options {
        args.extend(["-o", option]);
    }
    timed(dir, &args)
}

/// The peak memory a run's summary line reports, MiB.
fn peak_memory_mib(stderr: &str) -> u64 {
    stderr
        .split("peak_memory_mib=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak_memory_mib in:\n{stderr}"))
}

/// Replay [`capture`] in `dir`; the run must succeed within the bounds.
/// Its events and stderr.
fn replay_within_bounds(dir: &Path) -> (Vec<Value>, String) {
    std::fs::write(dir.join("input.cap"), capture()).expect("write capture");
    let (run, took) = replay_input(dir, &[]);
    assert_eq!(run.code, Some(0), "the host must survive:\n{}", run.stderr);
    assert!(took < WALL_TIME_BOUND, "took {took:?}:\n{}", run.stderr);
    let peak = peak_memory_mib(&run.stderr);
    assert!(peak < PEAK_MEMORY_BOUND_MIB, "peak memory {peak} MiB");
    (json_lines(&run.stdout), run.stderr)
}

/// What the sshd instance says about [`capture`] with nobody attacking.
fn normal_sshd_events() -> Vec<Value> {
    let events = replay_json(SSHD_JSON_APP, &capture(), &["state.enabled=false"]);
    assert_eq!(
        events.len(),
        11,
        "3 sample events, 6 failed logins, 1 attempts exceeded, stats"
    );
    events
}

fn of_module(events: &[Value], module: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["module"] == module)
        .cloned()
        .collect()
}

const BLOCKED: &str = "ran longer than its call time limit (200 ms), waiting in a host call";

#[test]
fn a_module_blocked_in_a_wasi_call_is_stopped_at_its_time_limit_in_every_export() {
    let normal = normal_sshd_events();
    let cases = [
        ("init", "sleep"),
        ("process", "sleep"),
        ("process", "fifo"),
        ("tick", "sleep"),
        ("statistics", "sleep"),
        ("checkpoint", "sleep"),
    ];
    for (export, how) in cases {
        let dir = blocking_app(&[(export, how)]);
        if how == "fifo" {
            let status = std::process::Command::new("mkfifo")
                .arg(dir.path().join("run/blk/fifo"))
                .status()
                .expect("mkfifo runs");
            assert!(status.success());
        }
        let (events, stderr) = replay_within_bounds(dir.path());
        assert_eq!(
            of_module(&events, "OpenSSH"),
            normal,
            "the sshd instance beside a module blocking in {export} ({how})"
        );
        assert_has(
            &stderr,
            &format!("instance failed: {BLOCKED} instance=blk call=\"{export}\""),
        );
    }
}

#[test]
fn a_module_blocked_in_a_start_up_export_stops_start_up_with_the_reason() {
    // `check` describes instances without their grants, so it meets the
    // guest's describe (which blocks when it sees no directory) only.
    let cases = [
        ("describe", "run", "describe"),
        ("describe", "check", "describe"),
        ("state-version", "run", "state-version"),
    ];
    for (export, command, failed_in) in cases {
        let dir = blocking_app(&[(export, "sleep")]);
        let mut args = vec![command, "--app", "app.toml"];
        if command == "run" {
            args.extend(["--read-file", "/dev/null"]);
        }
        let (run, took) = timed(dir.path(), &args);
        assert_eq!(run.code, Some(1), "{command} with {export}: {}", run.stderr);
        let expected = format!("error: module \"blk\" failed in {failed_in}: {BLOCKED}\n");
        assert!(
            run.stderr.ends_with(&expected),
            "{command} with {export}:\n{}",
            run.stderr
        );
        assert!(took < WALL_TIME_BOUND, "took {took:?}");
    }
}

#[test]
fn a_module_blocked_in_migrate_stops_start_up_with_the_reason() {
    // The first run keeps state at version 1 (the file `v1`); the second
    // is version 2 and must migrate, which blocks.
    let dir = blocking_app(&[("v1", "")]);
    let (_, stderr) = replay_within_bounds(dir.path());
    assert_has(&stderr, "replay of input.cap finished");
    let granted = dir.path().join("run/blk");
    std::fs::remove_file(granted.join("v1")).expect("remove v1");
    std::fs::write(granted.join("migrate"), "sleep").expect("write marker");
    let (run, took) = timed(
        dir.path(),
        &[
            "run",
            "--app",
            "app.toml",
            "--read-file",
            "input.cap",
            "--keep-state",
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.ends_with(&format!(
            "error: module \"blk\" failed migrating its state from version 1: {BLOCKED} \
             (state in run/app.state.redb); or start with --discard-state blk to delete that state \
             and start the instance empty\n"
        )),
        "{}",
        run.stderr
    );
    assert!(took < WALL_TIME_BOUND, "took {took:?}");
}

#[test]
fn inspecting_a_component_that_blocks_in_describe_ends_with_the_reason() {
    let (run, took) = timed(&workspace(), &["inspect", blocking_guest()]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        run.stderr,
        "error: module \"inspect\" failed in describe: ran longer than its call time limit (1000 ms), waiting in a host call\n"
    );
    assert!(took < WALL_TIME_BOUND, "took {took:?}");
}

#[test]
fn a_handler_blocked_in_a_wasi_call_costs_the_other_handler_nothing() {
    let guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_HANDLER");
    let normal = normal_sshd_events();
    for attack in ["sleep", "sleep-init"] {
        let app = format!(
            "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
             [handlers.bad]\ncomponent = '{guest}'\nconfig = {{ attack = \"{attack}\" }}\nlimits = {{ call_timeout_ms = 200 }}\n\
             [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
        );
        let dir = app_dir(&app);
        let (events, stderr) = replay_within_bounds(dir.path());
        let (sshd, disabled): (Vec<Value>, Vec<Value>) =
            events.into_iter().partition(|e| e["module"] == "OpenSSH");
        assert_eq!(sshd, normal, "the log handler beside \"{attack}\"");
        assert_has(&stderr, &format!("handler failed: {BLOCKED} instance=bad"));
        if attack == "sleep" {
            // Every event it was given failed (the batch, then three
            // alone), and it backs off: nothing is disabled.
            assert_eq!(disabled, Vec::<Value>::new());
            assert_has(&stderr, "handler_failures=11 ");
        } else {
            let reasons: Vec<&Value> = disabled.iter().map(|e| &e["fields"]["reason"]).collect();
            assert_eq!(
                reasons,
                [&Value::from(format!(
                    "it failed 5 times within 60 s; last failure: {BLOCKED}"
                ))],
                "{attack}: {stderr}"
            );
        }
    }
}

#[test]
fn the_first_sigterm_stops_a_replay_whose_module_blocks_in_every_call() {
    let dir = blocking_app(&[("process", "sleep")]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_correlator"))
        .args(["run", "--app", "app.toml", "--read-file", "-"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env(
            "XDG_CACHE_HOME",
            workspace().join("target").join("test-cache"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the correlator binary runs");
    {
        use std::io::Write as _;
        let stdin = child.stdin.as_mut().expect("stdin is piped");
        stdin
            .write_all(capture().as_bytes())
            .expect("feed the replay");
        stdin.flush().expect("feed the replay");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let signalled = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}

/// An app with the sshd module, the hostile module doing `attack` and the
/// JSON log handler.
fn hostile_app(attack: &str) -> tempfile::TempDir {
    app_dir(&format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [modules.bad]\ncomponent = '{}'\nconfig = {{ attack = \"{attack}\" }}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n",
        env!("CORRELATOR_TEST_GUEST_HOSTILE")
    ))
}

#[test]
fn what_a_guest_prints_becomes_its_own_rate_limited_log_lines() {
    let dir = hostile_app("stdio-flood");
    let (events, stderr) = replay_within_bounds(dir.path());
    assert_eq!(of_module(&events, "OpenSSH"), normal_sshd_events());
    let forged: Vec<&str> = stderr.lines().filter(|l| l.contains("forged")).collect();
    assert!(
        (100..1000).contains(&forged.len()),
        "{} of 10,000 lines logged",
        forged.len()
    );
    for line in &forged {
        assert!(
            line.contains(
                " WARN guest: 2026-11-30T00:00:00.000000Z ERROR correlator::cli: forged "
            ) && line.ends_with(" instance=\"OpenSSH\" instance=\"bad\" context=\"stderr\""),
            "a guest's line is marked as the guest's: {line}"
        );
    }
    assert_has(
        &stderr,
        "guest log lines dropped (limit 100 per second) instance=\"bad\" dropped=",
    );
    assert_has(
        &stderr,
        " INFO guest: a \\u{1b}[31mred line instance=\"bad\" context=\"stdout\"\n",
    );
}

#[test]
fn declared_names_that_could_forge_output_are_refused_at_load() {
    let long = "x".repeat(65);
    let cases = [
        ("Login\nForged", r"Login\u{a}Forged"),
        ("a b", "a b"),
        ("\u{202e}gnp", r"\u{202e}gnp"),
        ("", ""),
        (".hidden", ".hidden"),
        (long.as_str(), long.as_str()),
    ];
    for (kind, shown) in cases {
        let dir = blocking_app(&[("declared-kind", kind)]);
        let (run, _) = timed(
            dir.path(),
            &["run", "--app", "app.toml", "--read-file", "/dev/null"],
        );
        assert_eq!(run.code, Some(1), "{kind:?}: {}", run.stderr);
        assert!(
            run.stderr.ends_with(&format!(
                "error: instance \"blk\" declares event type \"{shown}\": declared names must have 1 to 64 \
                 letters, digits, '_', '-' and '.', starting with a letter or digit\n"
            )),
            "{kind:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_summary_or_cell_cannot_pass_for_other_output_in_text_or_csv() {
    let dir = app_dir(&format!(
        "[config.system]\nrun_dir = \"run\"\n\
         [modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [modules.bad]\ncomponent = '{}'\nconfig = {{ attack = \"forge\" }}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\n\
         [handlers.csv]\ncomponent = \"builtin:csv\"\ngrants = {{ dir = \"csv\" }}\n",
        env!("CORRELATOR_TEST_GUEST_HOSTILE")
    ));
    std::fs::write(dir.path().join("input.cap"), capture()).expect("write capture");
    std::fs::create_dir(dir.path().join("run")).expect("mkdir run");
    let (run, took) = replay_input(dir.path(), &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(took < WALL_TIME_BOUND, "took {took:?}");
    let peak = peak_memory_mib(&run.stderr);
    assert!(peak < PEAK_MEMORY_BOUND_MIB, "peak memory {peak} MiB");
    // Every line that starts as the sshd instance's is one of its 11
    // events, as a run without the attacker gives them.
    let sshd_lines: Vec<String> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with("[OpenSSH :: "))
        .map(|line| line.split("] ").next().unwrap_or("").to_owned() + "]")
        .collect();
    let normal: Vec<String> = normal_sshd_events()
        .iter()
        .map(|e| format!("[OpenSSH :: {}]", e["kind"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        sshd_lines, normal,
        "only the sshd instance's own:\n{}",
        run.stdout
    );
    assert_has(
        &run.stdout,
        "[bad :: Seen] x\\u{a}[OpenSSH :: SSHDLoginSucceeded] User root logged in from 203.0.113.9\\u{1b}[0m\\u{202e}\n",
    );
    let cells = std::fs::read_to_string(dir.path().join("run/csv/bad-Secret-2023-02-20.csv"))
        .expect("the csv handler wrote the cells");
    assert_eq!(
        cells,
        "time,name,value\n2023-02-20T15:12:47.757250-05:00,\"'=cmd|' /C calc'!A0\",\"'+1\"\n"
    );
}

#[test]
fn a_flood_of_state_deletes_costs_the_host_no_memory() {
    for state in ["true", "false"] {
        let dir = hostile_app("delete-flood");
        let toml = dir.path().join("app.toml");
        let app = std::fs::read_to_string(&toml).expect("app");
        let app = app.replace(
            "config = { attack = \"delete-flood\" }\n",
            "config = { attack = \"delete-flood\" }\nlimits = { state_mib = 1, call_timeout_ms = 10000 }\n",
        );
        std::fs::write(&toml, format!("[config.state]\nenabled = {state}\n{app}")).expect("app");
        // Compiled once beforehand: the peak measured is the run's, not
        // that of compiling the components on a cold cache (100 MiB more).
        let check = correlator(dir.path(), &["check", "--app", "app.toml"]);
        assert_eq!(check.code, Some(0), "{}", check.stderr);
        let (events, stderr) = replay_within_bounds(dir.path());
        assert_eq!(of_module(&events, "OpenSSH"), normal_sshd_events());
        assert_eq!(
            of_module(&events, "bad").len(),
            28,
            "state {state}: {stderr}"
        );
        let peak = peak_memory_mib(&stderr);
        assert!(peak < 150, "state {state}: peak memory {peak} MiB");
    }
}

#[test]
fn events_amplified_past_the_bytes_one_call_may_dispatch_are_refused() {
    let dir = hostile_app("event-amplification");
    let (events, stderr) = replay_within_bounds(dir.path());
    assert_eq!(of_module(&events, "OpenSSH"), normal_sshd_events());
    assert_eq!(of_module(&events, "bad"), Vec::<Value>::new());
    assert_has(
        &stderr,
        "instance failed: dispatched more than 16777216 bytes of events in one call instance=bad call=\"process\" first_record=1\n",
    );
    let peak = peak_memory_mib(&stderr);
    assert!(peak < 250, "peak memory {peak} MiB");
}

#[test]
fn a_shared_handler_choking_on_one_modules_events_still_gets_every_other_modules() {
    let app = format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [modules.bad]\ncomponent = '{}'\nconfig = {{ attack = \"chunky\" }}\n\
         [handlers.shared]\ncomponent = '{}'\nconfig = {{ attack = \"choke\" }}\ngrants = {{ stdout = true }}\n\
         filter = 'event.module == \"OpenSSH\" || event.summary.size() > 100000'\n",
        env!("CORRELATOR_TEST_GUEST_HOSTILE"),
        env!("CORRELATOR_TEST_GUEST_HOSTILE_HANDLER"),
    );
    let dir = app_dir(&app);
    std::fs::write(dir.path().join("input.cap"), capture()).expect("write capture");
    for batch_size in ["2", "1000"] {
        let (run, took) = replay_input(
            dir.path(),
            &[
                &format!("replay.batch_size={batch_size}"),
                "state.enabled=false",
            ],
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(took < WALL_TIME_BOUND, "took {took:?}");
        let handled: Vec<String> = normal_sshd_events()
            .iter()
            .map(|e| format!("OpenSSH {}", e["kind"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            run.stdout.lines().collect::<Vec<_>>(),
            handled,
            "batches of {batch_size}:\n{}",
            run.stderr
        );
        assert!(!run.stderr.contains("handler disabled"), "{}", run.stderr);
    }
    // Small batches: bad's events keep making the handler fail, so it
    // stops taking them, and only them.
    let (run, _) = replay_input(dir.path(), &["replay.batch_size=2", "state.enabled=false"]);
    assert_has(
        &run.stderr,
        "handler takes no more events of this module: they made it fail on their own 5 times within 60 s; it still takes every other module's handler=shared module=bad\n",
    );
}

#[test]
fn a_replay_never_skips_records_while_an_instance_backs_off() {
    // Three poisoned records, one per batch: the second and third failure
    // each start a back-off, which the replay waits out.
    let mut capture = capture();
    for position in [5, 9, 13] {
        let mut lines: Vec<String> = capture.lines().map(str::to_owned).collect();
        lines[position - 1].push_str(" POISON");
        capture = lines.join("\n") + "\n";
    }
    let dir = hostile_app("poison");
    std::fs::write(dir.path().join("input.cap"), &capture).expect("write capture");
    let (run, _) = replay_input(dir.path(), &["replay.batch_size=1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    let positions: Vec<i64> = of_module(&events, "bad")
        .iter()
        .map(|e| e["fields"]["position"].as_i64().unwrap_or(-1))
        .collect();
    let expected: Vec<i64> = (1..=28).filter(|p| ![5, 9, 13].contains(p)).collect();
    assert_eq!(positions, expected, "{}", run.stderr);
    assert_has(
        &run.stderr,
        "restarted; its next call waits 200 ms instance=bad\n",
    );
    assert_has(
        &run.stderr,
        "module did not process every record (it failed on them or was disabled) instance=\"bad\" skipped=3\n",
    );
}

/// 500,000 lines an attacker can make one server log by connecting to it:
/// 250,000 connections from as many addresses (more than fit in the sshd
/// module's 64 MiB without bounds), each an invalid user and a failed
/// password, none ever ending; and, hidden among them every 80,000 lines,
/// six failed passwords for root from one address, within the failure
/// window (the flood spans 167 s of record time).
fn connection_flood() -> String {
    use std::fmt::Write as _;
    let mut capture = String::with_capacity(300_000 * 110);
    let line = |capture: &mut String, n: u32, pid: u32, message: &str| {
        let (second, micros) = (n / 3000, n % 3000);
        let _ = writeln!(
            capture,
            "<86>1 2023-02-20T15:{:02}:{:02}.{micros:06}Z server sshd {pid} - - {message}",
            second / 60,
            second % 60,
        );
    };
    let mut brute = 0;
    for connection in 0..250_000u32 {
        let addr = format!("198.51.{}.{}", connection / 250, connection % 250);
        let port = 1024 + connection % 60_000;
        let n = connection * 2;
        let pid = 100_000 + connection;
        line(
            &mut capture,
            n,
            pid,
            &format!("Invalid user u{connection} from {addr} port {port}"),
        );
        line(
            &mut capture,
            n + 1,
            pid,
            &format!("Failed password for invalid user u{connection} from {addr} port {port} ssh2"),
        );
        if n % 80_000 == 0 && brute < 6 {
            brute += 1;
            line(
                &mut capture,
                n + 1,
                900_000 + brute,
                &format!(
                    "Failed password for root from 203.0.113.77 port {} ssh2",
                    50_000 + brute
                ),
            );
        }
    }
    capture
}

#[test]
fn a_connection_flood_in_the_log_cannot_blind_the_sshd_module() {
    let dir = app_dir(SSHD_JSON_APP);
    std::fs::write(dir.path().join("input.cap"), connection_flood()).expect("write capture");
    let (run, took) = replay_input(dir.path(), &["state.enabled=false"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(took < WALL_TIME_BOUND, "took {took:?}");
    assert!(!run.stderr.contains("instance failed"), "{}", run.stderr);
    let peak = peak_memory_mib(&run.stderr);
    assert!(peak < PEAK_MEMORY_BOUND_MIB, "peak memory {peak} MiB");
    let events = json_lines(&run.stdout);
    let exceeded: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "SSHDAttemptsExceeded")
        .map(|e| &e["fields"]["host"])
        .collect();
    assert_eq!(
        exceeded,
        [&Value::from("203.0.113.77")],
        "the brute force inside the flood"
    );
    let stats = of_kind(&events, "SSHDStats");
    assert_eq!(
        stats.last().map(|e| &e["fields"]),
        // The flood's connections past 20,000 and failure counts past
        // 100,000, forgotten oldest first, down to nine tenths at a time.
        Some(&serde_json::json!({
            "sessions": 0, "denied": 0, "lockouts": 1, "expired": 0,
            "partial": 18_006, "evicted": 382_015
        })),
    );
}

#[test]
fn a_compile_cache_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = app_dir(SSHD_JSON_APP);
    std::fs::write(dir.path().join("input.cap"), capture()).expect("write capture");
    let cache = dir.path().join("cache");
    let run = |expect_warning: Option<&str>| {
        let cache_option = format!("system.compile_cache={}", cache.display());
        let (run, _) = replay_input(dir.path(), &["state.enabled=false", &cache_option]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_eq!(run.stdout.lines().count(), 11, "{}", run.stderr);
        match expect_warning {
            Some(warning) => assert_has(&run.stderr, warning),
            None => assert!(!run.stderr.contains("will not be cached"), "{}", run.stderr),
        }
    };
    // The runtime's own cache is used and trusted.
    run(None);
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    run(Some(&format!(
        "compiled components will not be cached: {} is writable by others (mode 777); anyone who can write there could make this process run their native code",
        cache.display()
    )));
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let planted = cache.join("planted");
    std::fs::write(&planted, b"native code").expect("write");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    run(Some(&format!(
        "{} is writable by others (mode 666)",
        planted.display()
    )));
}

#[test]
fn a_component_file_too_large_or_not_a_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge)
        .and_then(|file| file.set_len((128 << 20) + 1))
        .expect("a sparse file");
    let fifo = dir.path().join("fifo.wasm");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    for (path, expected) in [
        (
            &huge,
            format!(
                "error: component {} has 134217729 bytes, more than the 128 MiB a component may have\n",
                huge.display()
            ),
        ),
        (
            &fifo,
            format!(
                "error: component {} is not a regular file\n",
                fifo.display()
            ),
        ),
    ] {
        let path = path.to_str().expect("UTF-8 path");
        let (run, took) = timed(dir.path(), &["inspect", path]);
        assert_eq!(run.code, Some(1));
        assert_eq!(run.stderr, expected);
        assert!(took < WALL_TIME_BOUND, "took {took:?}");
    }
}

#[test]
fn a_handler_that_fails_on_every_modules_events_is_disabled_not_excused() {
    let app = format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [modules.other]\ncomponent = '{}'\n\
         [handlers.broken]\ncomponent = '{}'\nconfig = {{ attack = \"panic\" }}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n\
         filter = 'event.module != \"other\"'\n",
        env!("CORRELATOR_TEST_GUEST_HOSTILE"),
        env!("CORRELATOR_TEST_GUEST_HOSTILE_HANDLER"),
    );
    let dir = app_dir(&app);
    std::fs::write(dir.path().join("input.cap"), capture()).expect("write capture");
    let (run, took) = replay_input(dir.path(), &["replay.batch_size=4", "state.enabled=false"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(took < WALL_TIME_BOUND, "took {took:?}");
    let events = json_lines(&run.stdout);
    let disabled: Vec<&Value> = of_kind(&events, "ComponentDisabled")
        .into_iter()
        .map(|e| &e["fields"]["instance"])
        .collect();
    assert_eq!(disabled, [&Value::from("broken")], "{}", run.stderr);
    assert!(
        !run.stderr.contains("handler takes no more events"),
        "{}",
        run.stderr
    );
    assert_eq!(of_module(&events, "OpenSSH"), normal_sshd_events());
}

#[test]
fn events_of_many_calls_in_one_step_cross_to_the_handlers_in_bounded_parts() {
    // Two hours of record time between two records: 120 minute ticks in
    // one batch, 15 MB of events at each (within every per-call limit),
    // 1.8 GB in all, that the module thread must not hold at once.
    let mut capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    capture.push_str("<86>1 2023-02-20T17:14:58-05:00 giganode1 cron 1 - - two hours later\n");
    let dir = app_dir(&format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [modules.bad]\ncomponent = '{}'\nconfig = {{ attack = \"chunky-ticks\" }}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n\
         filter = 'event.module == \"OpenSSH\"'\n",
        env!("CORRELATOR_TEST_GUEST_HOSTILE")
    ));
    std::fs::write(dir.path().join("input.cap"), &capture).expect("write capture");
    let (run, took) = replay_input(dir.path(), &["state.enabled=false"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(took < WALL_TIME_BOUND, "took {took:?}:\n{}", run.stderr);
    let peak = peak_memory_mib(&run.stderr);
    assert!(peak < PEAK_MEMORY_BOUND_MIB, "peak memory {peak} MiB");
    assert_has(&run.stderr, "events=1851 ");
    let expected = replay_json(SSHD_JSON_APP, &capture, &["state.enabled=false"]);
    assert_eq!(json_lines(&run.stdout), expected);
}
