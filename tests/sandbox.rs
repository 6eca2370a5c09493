//! The sandbox: hostile components (built from source, `tests/guests/`)
//! must not harm the host, the other instances or their data. Each attack
//! runs beside a well-behaved sshd instance, whose events must be exactly
//! those of a run without the attacker.

mod common;

use common::*;
use serde_json::{Value, json};

fn hostile_guest() -> &'static str {
    env!("CORRELATOR_TEST_GUEST_HOSTILE")
}

/// The sample capture, a brute force (6 failures from one host) and a
/// record the `poison` attack panics on.
fn attack_capture() -> String {
    let mut capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    brute_force(&mut capture, "203.0.113.66", 0, 10, 6, 9000);
    capture.push_str("<13>1 2023-02-20T16:00:00Z other app 1 - - POISON here\n");
    capture
}

/// An app with the sshd module, a hostile module doing `attack` with
/// `extra` settings, and the JSON log handler. Calls may take 100 ms, or
/// 10 s for attacks that must hit another limit first, whatever the load.
fn attack_app(attack: &str, extra: &str) -> String {
    let timeout = match attack {
        "loop-process" | "loop-init" => 100,
        _ => 10_000,
    };
    format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [modules.bad]\ncomponent = '{}'\nconfig = {{ attack = \"{attack}\" }}\nlimits = {{ call_timeout_ms = {timeout} }}\n{extra}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n",
        hostile_guest()
    )
}

/// Events as JSON, and stderr, of a run that must succeed.
fn run_app(app: &str, capture: &str) -> (Vec<Value>, String) {
    run_in(&app_dir(app), capture)
}

/// As [`run_app`], in a prepared directory holding `app.toml`.
fn run_in(dir: &tempfile::TempDir, capture: &str) -> (Vec<Value>, String) {
    std::fs::write(dir.path().join("input.cap"), capture).expect("write capture");
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", "input.cap"],
    );
    assert_eq!(run.code, Some(0), "the host must survive:\n{}", run.stderr);
    (json_lines(&run.stdout), run.stderr)
}

fn of_module<'a>(events: &'a [Value], module: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["module"] == module).collect()
}

/// What the sshd instance says about [`attack_capture`] with nobody
/// attacking.
fn normal_sshd_events() -> Vec<Value> {
    let (events, _) = run_app(SSHD_JSON_APP, &attack_capture());
    assert_eq!(
        events.len(),
        11,
        "3 sample events, 6 failed logins, 1 attempts exceeded, stats"
    );
    events
}

/// Run `attack` beside sshd; check sshd's events are untouched; return the
/// attacker's events and stderr.
fn attack(attack: &str, extra: &str) -> (Vec<Value>, String) {
    let (events, stderr) = run_app(&attack_app(attack, extra), &attack_capture());
    let sshd: Vec<Value> = of_module(&events, "OpenSSH").into_iter().cloned().collect();
    assert_eq!(
        sshd,
        normal_sshd_events(),
        "the sshd instance beside \"{attack}\""
    );
    let bad = of_module(&events, "bad").into_iter().cloned().collect();
    (bad, stderr)
}

#[test]
fn every_trap_and_limit_is_survived_and_reported_with_instance_reason_and_record() {
    let cases = [
        (
            "loop-process",
            "ran longer than its call time limit (100 ms)",
        ),
        ("grow-memory", "grew its memory past its limit (64 MiB)"),
        ("recurse", "overflowed its stack"),
        ("panic", "trapped on unreachable code (a panic or an abort)"),
        (
            "million-events",
            "dispatched more than 100000 events in one call",
        ),
        (
            "big-event",
            "dispatched an event of 2097208 bytes (limit 1048576)",
        ),
        ("huge-event", "grew its memory past its limit (64 MiB)"),
    ];
    for (name, reason) in cases {
        let (bad, stderr) = attack(name, "");
        assert_eq!(bad, Vec::<Value>::new(), "{name} survives no record");
        assert_has(
            &stderr,
            &format!("instance failed: {reason} instance=bad call=\"process\" first_record=1\n"),
        );
        assert_has(
            &stderr,
            &format!(
                "record skipped: it alone made the instance fail: {reason} instance=bad record=1\n"
            ),
        );
        assert_has(
            &stderr,
            "gave up retrying the batch one record at a time instance=bad skipped=",
        );
        assert_has(
            &stderr,
            "module did not process every record (it failed on them or was disabled) instance=\"bad\" skipped=",
        );
    }
}

#[test]
fn a_poisoned_record_costs_only_itself() {
    let (bad, stderr) = attack("poison", "");
    let positions: Vec<i64> = bad
        .iter()
        .map(|e| e["fields"]["position"].as_i64().unwrap_or(-1))
        .collect();
    let expected: Vec<i64> = (1..=28).collect();
    assert_eq!(positions, expected, "every record but the poisoned 29th");
    assert_has(
        &stderr,
        "instance failed: trapped on unreachable code (a panic or an abort) instance=bad call=\"process\" first_record=1\n",
    );
    assert_has(&stderr, "restarted instance=bad\n");
    assert_has(
        &stderr,
        "record skipped: it alone made the instance fail: trapped on unreachable code (a panic or an abort) instance=bad record=29\n",
    );
    assert_has(
        &stderr,
        "module did not process every record (it failed on them or was disabled) instance=\"bad\" skipped=1\n",
    );
}

#[test]
fn an_endless_init_is_restarted_then_disabled_and_handlers_are_told() {
    let (bad, stderr) = attack("loop-init", "");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0]["kind"], "ComponentDisabled");
    assert_eq!(bad[0]["severity"], "error");
    assert_eq!(
        bad[0]["fields"],
        json!({
            "instance": "bad",
            "reason": "it failed 5 times within 60 s; last failure: ran longer than its call time limit (100 ms)",
            "failures": 5
        })
    );
    assert_eq!(
        stderr
            .matches("instance failed: ran longer than its call time limit (100 ms) instance=bad call=\"init\"")
            .count(),
        5
    );
}

#[test]
fn on_failure_disable_stops_the_instance_at_its_first_failure() {
    // The whole capture is one batch: it fails, and nothing is retried.
    let (bad, stderr) = attack("poison", "on_failure = \"disable\"");
    let kinds: Vec<&Value> = bad.iter().map(|e| &e["kind"]).collect();
    assert_eq!(kinds, ["ComponentDisabled"]);
    assert_eq!(
        bad[0]["fields"]["reason"],
        "its policy is to disable it at the first failure; last failure: trapped on unreachable code (a panic or an abort)"
    );
    assert!(!stderr.contains("restarted"), "{stderr}");
    assert_has(
        &stderr,
        "module did not process every record (it failed on them or was disabled) instance=\"bad\" skipped=29\n",
    );
}

#[test]
fn on_failure_abort_stops_the_run_with_a_non_zero_exit() {
    let dir = app_dir(&attack_app("panic", "on_failure = \"abort\""));
    std::fs::write(dir.path().join("input.cap"), attack_capture()).expect("write capture");
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", "input.cap"],
    );
    assert_eq!(run.code, Some(1));
    assert_has(
        &run.stderr,
        "error: instance \"bad\" failed and its on_failure policy is abort: trapped on unreachable code (a panic or an abort)\n",
    );
}

/// An instance aborting the run while the reader waits for the modules
/// (the file is read far ahead of them): the run still ends, at once,
/// with its error, rather than waiting for ever for a reader that waits
/// for modules that have stopped.
#[test]
fn on_failure_abort_ends_the_run_while_the_reader_is_ahead() {
    use std::fmt::Write as _;
    let dir = app_dir(&attack_app("poison", "on_failure = \"abort\""));
    let mut capture = String::new();
    for n in 0..200_000 {
        let message = if n == 1000 { "POISON here" } else { "quiet" };
        writeln!(
            capture,
            "<13>1 2023-02-20T16:00:00Z host{} app 1 - - {message} {n}",
            n % 50
        )
        .expect("write to a string");
    }
    std::fs::write(dir.path().join("input.cap"), capture).expect("write capture");
    let mut child = correlator_command()
        .args(["run", "--app", "app.toml", "--read-file", "input.cap"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.txt")).expect("stderr"))
        .spawn()
        .expect("the run starts");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the run is there") {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the aborted run did not end within {PATIENCE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_has(
        &stderr,
        "error: instance \"bad\" failed and its on_failure policy is abort: trapped on unreachable code (a panic or an abort)\n",
    );
}

#[test]
fn components_see_no_environment_no_arguments_and_only_the_stream_clock() {
    let (bad, _) = attack("none", "");
    assert_eq!(bad.len(), 29);
    for event in &bad {
        let fields = &event["fields"];
        assert_eq!(
            (&fields["env"], &fields["args"]),
            (&json!(0), &json!(0)),
            "{event}"
        );
    }
    // The whole capture is one batch: the clock shows its newest record.
    assert_eq!(
        bad[0]["fields"]["clock"], 1_676_908_800,
        "2023-02-20T16:00:00Z"
    );
}

#[test]
fn enormous_strings_to_host_functions_are_survived_and_log_lines_cut() {
    let (bad, stderr) = attack("huge-host-strings", "");
    assert_eq!(bad.len(), 29);
    let line = stderr
        .lines()
        .find(|line| line.contains("wwww"))
        .expect("the guest's log line");
    assert!(
        line.contains(&format!("{} [cut]", "w".repeat(100))),
        "cut: {}",
        line.len()
    );
    assert!(line.len() < 4096 + 200, "{}", line.len());
    // 29 records, 48 MiB of strings each: the host copies each string out
    // of the guest's memory for the call only.
    let peak: u64 = stderr
        .split("peak_memory_mib=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("peak_memory_mib in the summary");
    assert!(peak < 250, "peak memory {peak} MiB");
}

#[test]
fn a_log_flood_is_limited_and_counted() {
    let (bad, stderr) = attack("log-flood", "");
    assert_eq!(bad.len(), 29);
    let logged = stderr.matches("flood line").count();
    assert!(
        (100..1000).contains(&logged),
        "{logged} of 290,000 lines logged"
    );
    assert_has(
        &stderr,
        "guest log lines dropped (limit 100 per second) instance=\"bad\" dropped=",
    );
}

#[test]
fn two_instances_of_one_component_share_no_state() {
    let app = "[modules.strict]\ncomponent = \"builtin:sshd\"\nconfig = { login_failure_limit = 2 }\n\
               [modules.lenient]\ncomponent = \"builtin:sshd\"\nconfig = { login_failure_limit = 6 }\n\
               [handlers.console]\ncomponent = \"builtin:log\"\nconfig = { format = \"json\" }\n";
    let mut capture = String::new();
    brute_force(&mut capture, "198.51.100.9", 0, 1, 6, 100);
    let (events, _) = run_app(app, &capture);
    let exceeded = |module: &str| {
        events
            .iter()
            .filter(|e| e["module"] == module && e["kind"] == "SSHDAttemptsExceeded")
            .count()
    };
    assert_eq!((exceeded("strict"), exceeded("lenient")), (3, 1));
}

#[test]
fn a_pinned_sha256_must_match() {
    let guest = hostile_guest();
    let run = correlator(&workspace(), &["inspect", guest]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let digest = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("sha256: "))
        .expect("inspect prints the digest")
        .to_owned();
    let (bad, _) = attack("none", &format!("sha256 = \"{digest}\""));
    assert_eq!(bad.len(), 29);

    let wrong = "0".repeat(64);
    let dir = app_dir(&attack_app("none", &format!("sha256 = \"{wrong}\"")));
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        format!(
            "error: app.toml line 7 column 10: module \"bad\": {guest} has sha256 {digest}, but the app file pins {wrong}; refusing to start\n"
        )
    );
}

#[test]
fn inspect_shows_what_a_component_asks_for() {
    let run = correlator(&workspace(), &["inspect", "builtin:csv"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_has(&run.stdout, "role: event handler\nname: csv\n");
    assert_has(
        &run.stdout,
        "  output_directory (text, default \".\"): directory for the files, inside the granted directory\n",
    );
    assert_has(&run.stdout, "imports:\n  correlator:plugin/types@0.1.0\n");
    assert_has(
        &run.stdout,
        "  wasi:filesystem/preopens@0.2.6  (needs a directory: grants = { dir = \"...\" })\n",
    );
    assert_has(
        &run.stdout,
        "exports:\n  correlator:plugin/packed-handler@0.1.0\n  correlator:plugin/handler@0.1.0\n",
    );

    let run = correlator(&workspace(), &["inspect", hostile_guest()]);
    assert_has(&run.stdout, "role: logic module\nname: hostile\n");
    assert_has(
        &run.stdout,
        "event types:\n  Seen (info): a record was survived\n    position (integer): the record's position\n",
    );
    assert!(!run.stdout.contains("wasi:filesystem"), "{}", run.stdout);
}

/// Run the file-probing guest with `grants`, in a directory that holds a
/// secret file outside the granted one and a symlink to it inside.
fn probe_files(grants: &str) -> (Vec<(String, String)>, tempfile::TempDir) {
    probe_files_with(grants, &[])
}

/// As [`probe_files`], with `files` (name, content) in the granted
/// directory `run/sandbox` beforehand.
fn probe_files_with(
    grants: &str,
    files: &[(&str, &str)],
) -> (Vec<(String, String)>, tempfile::TempDir) {
    let guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_FS");
    let app = format!(
        "[config.system]\nrun_dir = \"run\"\n[modules.fs]\ncomponent = '{guest}'\ngrants = {grants}\n\
         [modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
    );
    let dir = app_dir(&app);
    std::fs::write(dir.path().join("outside.txt"), "secret\n").expect("write secret");
    std::fs::create_dir_all(dir.path().join("run/sandbox")).expect("mkdir");
    std::os::unix::fs::symlink("../../outside.txt", dir.path().join("run/sandbox/link-out"))
        .expect("symlink");
    for (name, content) in files {
        std::fs::write(dir.path().join("run/sandbox").join(name), content).expect("write");
    }
    let mkfifo = std::process::Command::new("mkfifo")
        .arg(dir.path().join("run/sandbox/fifo"))
        .status()
        .expect("mkfifo runs");
    assert!(mkfifo.success());
    let sample = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let (events, _) = run_in(&dir, &sample);
    let (normal, _) = run_app(SSHD_JSON_APP, &sample);
    let sshd: Vec<Value> = of_module(&events, "OpenSSH").into_iter().cloned().collect();
    assert_eq!(sshd, normal, "the sshd instance beside the file prober");
    let probes = events
        .into_iter()
        .filter(|event| event["kind"] == "Probe")
        .map(|event| {
            let text = |name: &str| event["fields"][name].as_str().unwrap_or("").to_owned();
            (text("probe"), text("outcome"))
        })
        .collect();
    (probes, dir)
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(probe, outcome)| ((*probe).to_owned(), (*outcome).to_owned()))
        .collect()
}

#[test]
fn a_granted_directory_is_all_a_component_can_reach() {
    let (probes, dir) = probe_files("{ dir = \"sandbox\" }");
    assert_eq!(
        probes,
        pairs(&[
            ("read /etc/passwd", "denied: NotFound"),
            ("read ../outside.txt", "denied: PermissionDenied"),
            ("read link-out", "denied: PermissionDenied"),
            ("stat link-out", "denied: PermissionDenied"),
            ("stat ../outside.txt", "denied: PermissionDenied"),
            ("write ../escape.txt", "denied: PermissionDenied"),
            ("write link-out", "denied: PermissionDenied"),
            ("write inside.txt", "ok"),
            ("read inside.txt", "ok"),
            ("read fifo", "denied: PermissionDenied"),
        ])
    );
    let read = |path: &str| std::fs::read_to_string(dir.path().join(path)).ok();
    assert_eq!(
        read("outside.txt").as_deref(),
        Some("secret\n"),
        "the secret is untouched"
    );
    assert_eq!(read("run/escape.txt"), None);
    assert_eq!(read("escape.txt"), None);
    assert_eq!(
        read("run/sandbox/inside.txt").as_deref(),
        Some("written by a guest\n")
    );
}

#[test]
fn a_granted_directory_cannot_be_filled_past_its_quota() {
    let (probes, dir) =
        probe_files_with("{ dir = \"sandbox\", dir_quota_mib = 4 }", &[("fill", "")]);
    let outcome = |probe: &str| {
        probes
            .iter()
            .find(|(name, _)| name == probe)
            .map(|(_, outcome)| outcome.clone())
            .unwrap_or_default()
    };
    assert_eq!(outcome("write inside.txt"), "ok");
    // wasi-libc reports a file stream's failure as an I/O error, a refused
    // create as a full disk.
    assert_eq!(outcome("write 8 MiB"), "denied: I/O error (os error 29)");
    assert_eq!(
        outcome("create 2000 files"),
        "denied: No space left on device (os error 51)"
    );
    let used: u64 = std::fs::read_dir(dir.path().join("run/sandbox"))
        .expect("the directory")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum();
    assert!(used <= 4 << 20, "{used} bytes written");
    assert!(used >= 3 << 20, "{used} bytes written: the quota, not less");
}

#[test]
fn a_read_only_directory_cannot_be_written() {
    let (probes, dir) = probe_files("{ dir = \"sandbox\", dir_mode = \"read-only\" }");
    let outcome = |probe: &str| {
        probes
            .iter()
            .find(|(name, _)| name == probe)
            .map(|(_, outcome)| outcome.as_str())
            .unwrap_or("missing")
    };
    assert_eq!(outcome("write inside.txt"), "denied: PermissionDenied");
    assert_eq!(outcome("read inside.txt"), "denied: NotFound");
    assert_eq!(outcome("read fifo"), "denied: PermissionDenied");
    assert!(!dir.path().join("run/sandbox/inside.txt").exists());
}

#[test]
fn file_and_network_imports_without_a_grant_are_refused_at_load() {
    let fs_guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_FS");
    let net_guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_NET");
    for (guest, grants, expected) in [
        (
            fs_guest,
            "",
            "imports wasi:filesystem/types@0.2.6, which needs a directory: grants = { dir = \"...\" }",
        ),
        (
            net_guest,
            "grants = { dir = \"x\" }",
            "imports wasi:sockets/network@0.2.6, which needs network destinations: grants = { network = [\"HOST:PORT\"] }",
        ),
    ] {
        let dir = app_dir(&format!(
            "[modules.m]\ncomponent = '{guest}'\n{grants}\n[handlers.h]\ncomponent = \"builtin:log\"\n"
        ));
        let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
        assert_eq!(run.code, Some(1));
        assert_eq!(
            run.stderr,
            format!("error: module \"m\" ({guest}) {expected}\n")
        );
    }
    let run = correlator(&workspace(), &["inspect", net_guest]);
    assert_has(
        &run.stdout,
        "  wasi:sockets/tcp@0.2.6  (needs network destinations: grants = { network = [\"HOST:PORT\"] })\n",
    );
}

/// An app with the sshd module, a hostile handler doing `attack` and the
/// JSON log handler; its events and stderr over [`attack_capture`].
fn handler_attack(attack: &str, extra: &str) -> (Vec<Value>, String) {
    let guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_HANDLER");
    let app = format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [handlers.bad]\ncomponent = '{guest}'\nconfig = {{ attack = \"{attack}\" }}\nlimits = {{ call_timeout_ms = 100 }}\n{extra}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
    );
    run_app(&app, &attack_capture())
}

#[test]
fn a_handler_failing_on_one_event_costs_only_that_event() {
    let (events, stderr) = handler_attack("poison", "");
    assert_eq!(
        events,
        normal_sshd_events(),
        "the other handler gets everything"
    );
    assert_has(
        &stderr,
        "handler failed: trapped on unreachable code (a panic or an abort) instance=bad\n",
    );
    assert_eq!(
        stderr
            .matches("event skipped: it alone made the handler fail: trapped on unreachable code (a panic or an abort) handler=bad module=OpenSSH event=SSHDLoginFailed\n")
            .count(),
        3,
        "three failed logins fail alone before the batch is given up:\n{stderr}"
    );
}

#[test]
fn a_handler_that_never_returns_is_disabled_and_the_others_are_told() {
    let (events, stderr) = handler_attack("loop", "on_failure = \"disable\"");
    let (normal, disabled): (Vec<Value>, Vec<Value>) =
        events.into_iter().partition(|e| e["module"] == "OpenSSH");
    assert_eq!(normal, normal_sshd_events());
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert_eq!(disabled[0]["kind"], "ComponentDisabled");
    assert_eq!(disabled[0]["module"], "bad");
    assert_eq!(
        disabled[0]["fields"]["reason"],
        "its policy is to disable it at the first failure; last failure: ran longer than its call time limit (100 ms)"
    );
    assert_has(
        &stderr,
        "handler disabled: its policy is to disable it at the first failure",
    );
}

#[test]
fn events_a_handler_refuses_are_counted_as_failures() {
    let (events, stderr) = handler_attack("refuse", "");
    assert_eq!(events, normal_sshd_events());
    assert_has(
        &stderr,
        "handler failed on an event: will not handle SSHDLoginSucceeded handler=bad module=OpenSSH event=SSHDLoginSucceeded\n",
    );
    assert_has(&stderr, "handler_failures=11 ");
}

/// The one event `app` dispatches over the sample capture.
fn only_event(app: &str) -> Value {
    let sample = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let (events, _) = run_app(app, &sample);
    assert_eq!(events.len(), 1, "{events:?}");
    events.into_iter().next().unwrap_or_default()
}

/// Run the connecting guest against `target` with `grants`; its probe.
fn probe_network(target: &str, grants: &str) -> (String, String) {
    probe_network_with(target, grants, "")
}

/// As [`probe_network`], with `config` (sections of the app file) added.
fn probe_network_with(target: &str, grants: &str, config: &str) -> (String, String) {
    let guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_NET");
    let app = format!(
        "{config}\n[modules.net]\ncomponent = '{guest}'\nconfig = {{ target = \"{target}\" }}\ngrants = {grants}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
    );
    let event = only_event(&app);
    let text = |name: &str| event["fields"][name].as_str().unwrap_or("").to_owned();
    (text("probe"), text("outcome"))
}

#[test]
fn a_component_reaches_only_the_network_destinations_it_is_granted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
    let port = listener.local_addr().expect("local address").port();
    let target = format!("127.0.0.1:{port}");
    let receiver = std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut stream, _) = listener.accept().expect("the granted connection");
        let mut received = String::new();
        let _ = stream.read_to_string(&mut received);
        received
    });
    let (probe, outcome) = probe_network(&target, &format!("{{ network = [\"{target}\"] }}"));
    assert_eq!(
        (probe.as_str(), outcome.as_str()),
        (format!("connect {target}").as_str(), "ok")
    );
    assert_eq!(receiver.join().expect("receiver"), "hello from a guest\n");

    let other = format!("127.0.0.1:{}", port.wrapping_add(1));
    let (_, outcome) = probe_network(
        &target,
        &format!("{{ network = [\"{other}\", \"[::1]:*\"] }}"),
    );
    assert_eq!(outcome, "denied: PermissionDenied");
}

#[test]
fn while_deliveries_are_captured_no_component_reaches_the_network() {
    // As `correlator test` runs handlers: a granted destination is for the
    // delivery interface only, whose deliveries are captured.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
    listener.set_nonblocking(true).expect("non-blocking");
    let target = format!(
        "127.0.0.1:{}",
        listener.local_addr().expect("local address").port()
    );
    let (probe, outcome) = probe_network_with(
        &target,
        &format!("{{ network = [\"{target}\"] }}"),
        "[config.delivery]\ncapture = \"deliveries.jsonl\"",
    );
    assert_eq!(
        (probe.as_str(), outcome.as_str()),
        (
            format!("connect {target}").as_str(),
            "denied: PermissionDenied"
        )
    );
    assert_eq!(
        listener.accept().map_err(|error| error.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "nothing connected"
    );
}

#[test]
fn network_grants_must_be_host_and_port() {
    let guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_NET");
    let dir = app_dir(&format!(
        "[modules.net]\ncomponent = '{guest}'\ngrants = {{ network = [\"example.com\"] }}\n[handlers.h]\ncomponent = \"builtin:log\"\n"
    ));
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: app.toml line 3 column 23: network grant \"example.com\" is not HOST:PORT\n"
    );
}

#[test]
fn a_component_reads_only_the_secrets_it_is_granted() {
    let app = attack_app("secrets", "grants = { secrets = [\"granted\"] }");
    let dir = app_dir(&app);
    std::fs::write(
        dir.path().join("input.cap"),
        "<13>1 2023-02-20T15:00:00Z h app 1 - - one\n",
    )
    .expect("capture");
    let env = [
        ("CORRELATOR_SECRET_GRANTED", "s3cret"),
        ("CORRELATOR_SECRET_OTHER", "not yours"),
    ];
    let run = correlator_with_env(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", "input.cap"],
        &env,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let secrets: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
        .filter(|event| event["kind"] == "Secret")
        .map(|event| event["fields"].clone())
        .collect();
    assert_eq!(
        secrets,
        [
            json!({"name": "granted", "value": "s3cret"}),
            json!({"name": "other", "value": "<none>"})
        ]
    );
}

#[test]
fn secrets_come_from_a_private_file_and_missing_ones_stop_start_up() {
    let app = format!(
        "[config.system]\nsecrets_file = \"secrets.toml\"\n{}",
        attack_app(
            "secrets",
            "grants = { secrets = [\"granted\", \"absent\"] }"
        )
    );
    let dir = app_dir(&app);
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "granted = \"from the file\"\n").expect("secrets file");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: secrets file secrets.toml is readable by others (mode 644); chmod 600 it\n"
    );

    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: missing secrets:\n  app.toml line 9 column 34: module \"bad\" is granted secret \"absent\", but neither CORRELATOR_SECRET_ABSENT nor the secrets file holds it\n"
    );

    std::fs::write(
        dir.path().join("input.cap"),
        "<13>1 2023-02-20T15:00:00Z h app 1 - - one\n",
    )
    .expect("capture");
    let run = correlator_with_env(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", "input.cap"],
        &[("CORRELATOR_SECRET_ABSENT", "from the environment")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_has(
        &run.stdout,
        "\"fields\":{\"name\":\"granted\",\"value\":\"from the file\"}",
    );
}

#[test]
fn the_stack_limit_is_per_instance() {
    let guest = hostile_guest();
    let app = format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
         [modules.bad]\ncomponent = '{guest}'\nconfig = {{ attack = \"recurse\" }}\nlimits = {{ stack_kib = 64 }}\non_failure = \"disable\"\n\
         [modules.deep]\ncomponent = '{guest}'\nconfig = {{ attack = \"recurse\" }}\nlimits = {{ stack_kib = 4096 }}\non_failure = \"disable\"\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
    );
    let (events, stderr) = run_app(&app, &attack_capture());
    let sshd: Vec<Value> = of_module(&events, "OpenSSH").into_iter().cloned().collect();
    assert_eq!(sshd, normal_sshd_events());
    for instance in ["bad", "deep"] {
        assert_has(
            &stderr,
            &format!(
                "instance failed: overflowed its stack instance={instance} call=\"process\" first_record=1\n"
            ),
        );
    }

    let dir = app_dir(&app.replace("stack_kib = 64", "stack_kib = 16"));
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(
        run.stderr,
        "error: app.toml line 4 column 13: limits.stack_kib of \"bad\" must be between 64 and 4096, not 16\n"
    );
}

#[test]
fn an_instance_disabled_before_the_first_record_is_dated_by_the_host_clock() {
    let (bad, _) = attack("loop-init", "");
    let time = bad[0]["time"].as_str().unwrap_or("");
    assert!(
        time.starts_with("20") && time.ends_with('Z') && !time.starts_with("2023"),
        "{time}"
    );
}

/// Run the HTTP guest against `authority` with `grants`; its outcome.
fn probe_http(authority: &str, grants: &str) -> String {
    probe_http_with(authority, grants, "")
}

/// As [`probe_http`], with `config` (sections of the app file) added.
fn probe_http_with(authority: &str, grants: &str, config: &str) -> String {
    let guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_HTTP");
    let app = format!(
        "{config}\n[modules.web]\ncomponent = '{guest}'\nconfig = {{ authority = \"{authority}\" }}\ngrants = {grants}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
    );
    let event = only_event(&app);
    event["fields"]["outcome"].as_str().unwrap_or("").to_owned()
}

#[test]
fn outgoing_http_goes_only_where_the_grants_allow() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
    let port = listener.local_addr().expect("local address").port();
    let server = std::thread::spawn(move || {
        use std::io::{BufRead as _, Write as _};
        let (stream, _) = listener.accept().expect("the granted request");
        let mut reader = std::io::BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).expect("request line");
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                break;
            }
        }
        let mut stream = reader.into_inner();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .expect("response");
        request_line
    });
    let authority = format!("127.0.0.1:{port}");
    assert_eq!(
        probe_http(&authority, &format!("{{ network = [\"{authority}\"] }}")),
        "status 200"
    );
    assert_eq!(server.join().expect("server"), "GET / HTTP/1.1\r\n");

    for grants in [
        format!("{{ network = [\"127.0.0.1:{}\"] }}", port.wrapping_add(1)),
        format!("{{ network = [\"localhost:{port}\", \"*.example.com:*\"] }}"),
    ] {
        assert_eq!(
            probe_http(&authority, &grants),
            "denied: ErrorCode::HttpRequestDenied",
            "{grants}"
        );
    }
    // While deliveries are captured, not even a granted destination.
    assert_eq!(
        probe_http_with(
            &authority,
            &format!("{{ network = [\"{authority}\"] }}"),
            "[config.delivery]\ncapture = \"deliveries.jsonl\"",
        ),
        "denied: ErrorCode::HttpRequestDenied"
    );
}

#[test]
fn events_that_break_their_schema_cost_the_sshd_instance_beside_them_nothing() {
    let guest = env!("CORRELATOR_TEST_GUEST_SCHEMA_BREAKER");
    let app = format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n[modules.breaker]\ncomponent = '{guest}'\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
    );
    let (events, stderr) = run_app(&app, &attack_capture());
    let sshd: Vec<Value> = of_module(&events, "OpenSSH").into_iter().cloned().collect();
    assert_eq!(sshd, normal_sshd_events());
    assert_eq!(
        of_module(&events, "breaker").len(),
        29,
        "one valid event per record"
    );
    assert_has(
        &stderr,
        "module dispatched events that broke their declared type instance=\"breaker\" rejected=348\n",
    );
    for (event, field) in [("Seen", "time"), ("Timed", "when")] {
        assert_has(
            &stderr,
            &format!(
                "event rejected: field has another type than declared instance=breaker event={event} field=\"{field}\"\n"
            ),
        );
    }
}

/// Every key of `instance` in the state store in `dir`, with its size.
fn stored_keys(dir: &tempfile::TempDir, instance: &str) -> Vec<(String, usize)> {
    correlator::state_store::StateStore::open(&dir.path().join("app.state.redb"), "app", false)
        .expect("the store opens")
        .keys(instance)
        .expect("the keys read")
}

#[test]
fn durable_state_past_its_limit_or_with_a_bad_key_is_refused_and_the_rest_is_kept() {
    let dir = app_dir(&attack_app("state-flood", ""));
    let (events, stderr) = run_in(&dir, &attack_capture());
    assert_eq!(of_module(&events, "bad").len(), 29);
    assert_has(
        &stderr,
        "a state key must have 1 to 1024 bytes, not 2000 instance=\"bad\"",
    );
    // 63 values of 1 MiB with their keys (and 64 bytes each for the
    // database) fit in 64 MiB; the 64th does not.
    assert_has(
        &stderr,
        "write 63 refused: state would grow to 67113398 bytes, past its limit of 64 MiB (limits.state_mib) instance=\"bad\"",
    );
    let keys = stored_keys(&dir, "bad");
    assert_eq!(keys.len(), 63);
    assert!(keys.iter().all(|(_, size)| *size == 1 << 20));
    assert_eq!(stored_keys(&dir, "OpenSSH").len(), 1);
}

#[test]
fn a_module_that_fails_in_checkpoint_loses_only_its_own_changes() {
    let dir = app_dir(&attack_app("panic-checkpoint", ""));
    let (_, stderr) = run_in(&dir, &attack_capture());
    assert_has(
        &stderr,
        "instance failed: trapped on unreachable code (a panic or an abort) instance=bad call=\"checkpoint\"",
    );
    // The sshd instance's state was committed all the same.
    assert_eq!(stored_keys(&dir, "OpenSSH").len(), 1);
    assert_eq!(stored_keys(&dir, "bad").len(), 0);
}
