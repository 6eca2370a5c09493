//! End-to-end tests of the real `correlator` binary: app files, captures and
//! components in, events and messages out, compared exactly.

mod common;

use common::*;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

#[test]
fn sample_capture_gives_two_sessions_and_one_failed_login_with_exact_fields() {
    let capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    assert_eq!(
        events,
        vec![
            json!({
                "time": "2023-02-20T15:14:09.072459-05:00",
                "module": "OpenSSH",
                "kind": "SSHDLoginSucceeded",
                "severity": "info",
                "summary": "User timp logged in from 192.168.1.85 port 60116 by publickey (RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A); the session lasted 81.3 seconds",
                "fields": {
                    "user": "timp",
                    "auth": "publickey",
                    "addr": "192.168.1.85",
                    "port": 60116,
                    "failures": 0,
                    "start": "2023-02-20T15:12:47.771632-05:00",
                    "finish": "2023-02-20T15:14:09.072459-05:00",
                    "duration": 81.300827,
                    "key": "RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A"
                }
            }),
            json!({
                "time": "2023-02-20T15:14:42.176438-05:00",
                "module": "OpenSSH",
                "kind": "SSHDLoginSucceeded",
                "severity": "info",
                "summary": "User testguy logged in from 192.168.1.85 port 60138 by password; the session lasted 6.5 seconds",
                "fields": {
                    "user": "testguy",
                    "auth": "password",
                    "addr": "192.168.1.85",
                    "port": 60138,
                    "failures": 0,
                    "start": "2023-02-20T15:14:35.667317-05:00",
                    "finish": "2023-02-20T15:14:42.176438-05:00",
                    "duration": 6.509121,
                    "key": ""
                }
            }),
            json!({
                "time": "2023-02-20T15:14:58.434787-05:00",
                "module": "OpenSSH",
                "kind": "SSHDLoginFailed",
                "severity": "error",
                "summary": "User testguy from host 192.168.1.85 port 60142 failed to log in after 3 failed passwords",
                "fields": {"user": "testguy", "addr": "192.168.1.85", "port": 60142, "failures": 3}
            }),
            json!({
                "time": "2023-02-20T15:14:58.437079-05:00",
                "module": "OpenSSH",
                "kind": "SSHDStats",
                "severity": "info",
                "summary": "2 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted",
                "fields": {"sessions": 2, "denied": 1, "lockouts": 0, "expired": 0, "partial": 0, "evicted": 0}
            }),
        ]
    );
}

/// `correlator run --app app.toml --read-file data/sshd-1.cap ARGS` in `dir`.
fn replay_sample_in(dir: &std::path::Path, args: &[&str]) -> Run {
    let capture = sample_capture().display().to_string();
    let mut all = vec!["run", "--app", "app.toml", "--read-file", &capture];
    all.extend(args);
    correlator(dir, &all)
}

/// The `fields` of every event of `kind`, in order.
fn fields_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    of_kind(events, kind)
        .into_iter()
        .map(|event| &event["fields"])
        .collect()
}

fn hosts_exceeded(events: &[Value]) -> Vec<String> {
    of_kind(events, "SSHDAttemptsExceeded")
        .iter()
        .map(|e| {
            e["fields"]["host"]
                .as_str()
                .expect("host is text")
                .to_owned()
        })
        .collect()
}

#[test]
fn six_failures_within_the_window_give_one_attempts_exceeded() {
    let mut capture = String::new();
    brute_force(&mut capture, "203.0.113.7", 0, 10, 6, 1000);
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    assert_eq!(hosts_exceeded(&events), ["203.0.113.7"]);
    let exceeded = of_kind(&events, "SSHDAttemptsExceeded");
    assert_eq!(
        exceeded[0]["time"], "2023-02-20T15:00:40Z",
        "dispatched at the fifth failure"
    );
    assert_eq!(exceeded[0]["severity"], "error");
    assert_eq!(
        exceeded[0]["fields"],
        json!({
            "host": "203.0.113.7",
            "count": 5,
            "window": 300,
            "users": "root",
            "servers": "server",
            "first": "2023-02-20T15:00:00Z",
            "last": "2023-02-20T15:00:40Z"
        })
    );
    assert_eq!(of_kind(&events, "SSHDLoginFailed").len(), 6);
}

#[test]
fn attempts_exceeded_names_the_users_and_servers_of_its_window() {
    let mut capture = String::new();
    // Four users on two servers; the first attempt leaves the 300 s window
    // before the limit is reached.
    for (n, (second, server, user)) in [
        (0, "web1", "admin"),
        (200, "web1", "root"),
        (310, "web2", "oracle"),
        (320, "web2", "root"),
        (330, "web1", "pi"),
        (340, "web2", "test"),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(
            capture,
            "<86>1 2023-02-20T15:{:02}:{:02}Z {server} sshd {} - - Failed password for invalid user {user} from 192.0.2.44 port {} ssh2",
            second / 60,
            second % 60,
            100 + n,
            40_000 + n
        );
    }
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    let exceeded = of_kind(&events, "SSHDAttemptsExceeded");
    assert_eq!(exceeded.len(), 1, "{events:?}");
    assert_eq!(
        exceeded[0]["fields"],
        json!({
            "host": "192.0.2.44",
            "count": 5,
            "window": 300,
            "users": "oracle, pi, root, test",
            "servers": "web1, web2",
            "first": "2023-02-20T15:03:20Z",
            "last": "2023-02-20T15:05:40Z"
        })
    );
    assert_eq!(
        exceeded[0]["summary"],
        "Host 192.0.2.44 reached 5 failed passwords within 300 seconds"
    );
}

#[test]
fn twelve_failures_within_the_window_give_two_attempts_exceeded() {
    let mut capture = String::new();
    brute_force(&mut capture, "2001:db8::66", 0, 5, 12, 1000);
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    assert_eq!(hosts_exceeded(&events), ["2001:db8::66", "2001:db8::66"]);
}

#[test]
fn failures_spread_wider_than_the_window_give_none() {
    let mut capture = String::new();
    brute_force(&mut capture, "203.0.113.8", 0, 100, 12, 1000);
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    assert_eq!(hosts_exceeded(&events), Vec::<String>::new());
    assert_eq!(of_kind(&events, "SSHDLoginFailed").len(), 12);
}

#[test]
fn the_window_and_limit_come_from_configuration() {
    let mut capture = String::new();
    brute_force(&mut capture, "203.0.113.8", 0, 100, 3, 1000);
    let events = replay_json(
        SSHD_JSON_APP,
        &capture,
        &[
            "module.OpenSSH.login_failure_limit=3",
            "module.OpenSSH.login_failure_window=1000",
        ],
    );
    assert_eq!(hosts_exceeded(&events), ["203.0.113.8"]);
}

#[test]
fn interleaved_hosts_and_pids_are_kept_apart() {
    let mut capture = String::new();
    // Host A: five failures over two connections; host B: four over one.
    for n in 0..5u32 {
        let a_pid = 100 + n % 2;
        sshd_line(
            &mut capture,
            n * 2,
            a_pid,
            &format!(
                "Failed password for invalid user admin from 198.51.100.1 port {} ssh2",
                5000 + n % 2
            ),
        );
        if n < 4 {
            sshd_line(
                &mut capture,
                n * 2 + 1,
                200,
                "Failed password for bob from 198.51.100.2 port 6000 ssh2",
            );
        }
    }
    sshd_line(
        &mut capture,
        20,
        100,
        "Connection closed by invalid user admin 198.51.100.1 port 5000 [preauth]",
    );
    sshd_line(
        &mut capture,
        21,
        101,
        "Disconnecting invalid user admin 198.51.100.1 port 5001: Too many authentication failures [preauth]",
    );
    sshd_line(
        &mut capture,
        21,
        101,
        "Connection closed by invalid user admin 198.51.100.1 port 5001 [preauth]",
    );
    sshd_line(
        &mut capture,
        22,
        200,
        "Received disconnect from 198.51.100.2 port 6000:11: Bye Bye [preauth]",
    );
    sshd_line(
        &mut capture,
        22,
        200,
        "Disconnected from authenticating user bob 198.51.100.2 port 6000 [preauth]",
    );
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    assert_eq!(hosts_exceeded(&events), ["198.51.100.1"]);
    let failed = fields_of(&events, "SSHDLoginFailed");
    assert_eq!(
        failed,
        [
            &json!({"user": "admin", "addr": "198.51.100.1", "port": 5000, "failures": 3}),
            &json!({"user": "admin", "addr": "198.51.100.1", "port": 5001, "failures": 2}),
            &json!({"user": "bob", "addr": "198.51.100.2", "port": 6000, "failures": 4}),
        ]
    );
}

#[test]
fn an_accepted_login_clears_the_hosts_count() {
    let mut capture = String::new();
    brute_force(&mut capture, "192.0.2.9", 0, 1, 4, 1000);
    sshd_line(
        &mut capture,
        10,
        2000,
        "Accepted password for alice from 192.0.2.9 port 7000 ssh2",
    );
    brute_force(&mut capture, "192.0.2.9", 20, 1, 4, 3000);
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    assert_eq!(hosts_exceeded(&events), Vec::<String>::new());
}

#[test]
fn every_way_a_connection_ends_before_authentication_reports_one_failed_login() {
    let endings = [
        "Connection closed by authenticating user {u} {a} port {p} [preauth]",
        "Connection closed by invalid user {u} {a} port {p} [preauth]",
        "Connection closed by {a} port {p} [preauth]",
        "Connection reset by {a} port {p} [preauth]",
        "Connection reset by authenticating user {u} {a} port {p} [preauth]",
        "Disconnected from authenticating user {u} {a} port {p} [preauth]",
        "Disconnected from invalid user {u} {a} port {p} [preauth]",
        "Received disconnect from {a} port {p}:11: Bye Bye [preauth]",
        "Disconnecting authenticating user {u} {a} port {p}: Too many authentication failures [preauth]",
        "error: maximum authentication attempts exceeded for {u} from {a} port {p} ssh2 [preauth]",
        "Timeout, client not responding from {a} port {p}",
        "fatal: Timeout before authentication for {a} port {p}",
    ];
    let mut capture = String::new();
    for (n, ending) in endings.iter().enumerate() {
        let n = u32::try_from(n).expect("few endings");
        let (pid, port, addr, user) = (500 + n, 30_000 + n, "2001:db8:1::5", format!("user{n}"));
        sshd_line(
            &mut capture,
            n * 10,
            pid,
            &format!("Failed password for {user} from {addr} port {port} ssh2"),
        );
        let line = ending
            .replace("{u}", &user)
            .replace("{a}", addr)
            .replace("{p}", &port.to_string());
        sshd_line(&mut capture, n * 10 + 1, pid, &line);
        // A second end line of the same connection reports nothing more.
        sshd_line(
            &mut capture,
            n * 10 + 2,
            pid,
            &format!(
                "Connection closed by authenticating user {user} {addr} port {port} [preauth]"
            ),
        );
    }
    let events = replay_json(
        SSHD_JSON_APP,
        &capture,
        &["module.OpenSSH.login_failure_limit=100"],
    );
    let failed: Vec<(String, i64)> = of_kind(&events, "SSHDLoginFailed")
        .iter()
        .map(|e| {
            let f = &e["fields"];
            (
                f["user"].as_str().unwrap_or("").to_owned(),
                f["port"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = (0..endings.len())
        .map(|n| (format!("user{n}"), 30_000 + i64::try_from(n).unwrap_or(0)))
        .collect();
    assert_eq!(failed, expected);
}

#[test]
fn end_lines_of_unseen_connections_report_only_named_unauthenticated_users() {
    let mut capture = String::new();
    sshd_line(
        &mut capture,
        0,
        9,
        "Connection closed by invalid user guest 192.0.2.1 port 1 [preauth]",
    );
    sshd_line(
        &mut capture,
        1,
        9,
        "Connection closed by 192.0.2.1 port 2 [preauth]",
    );
    sshd_line(
        &mut capture,
        2,
        9,
        "Disconnected from user timp 192.0.2.1 port 3",
    );
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    let failed = fields_of(&events, "SSHDLoginFailed");
    assert_eq!(
        failed,
        [&json!({"user": "guest", "addr": "192.0.2.1", "port": 1, "failures": 0})]
    );
}

#[test]
fn a_server_whose_records_come_late_keeps_its_ended_connections_as_long() {
    // Server "late" ends a connection; a record of server "prompt" ten
    // minutes later in record time comes before late's stray second end
    // line (its clock is behind, or its forwarder is catching up). The
    // ended connection is remembered by late's own time, so the stray line
    // reports nothing again.
    let capture = [
        "<86>1 2023-02-20T15:00:00Z late sshd 100 - - Failed password for invalid user guest from 203.0.113.5 port 2 ssh2",
        "<86>1 2023-02-20T15:00:01Z late sshd 100 - - Connection closed by invalid user guest 203.0.113.5 port 2 [preauth]",
        "<86>1 2023-02-20T15:10:00Z prompt sshd 200 - - Invalid user admin from 198.51.100.1 port 9",
        "<86>1 2023-02-20T15:00:02Z late sshd 100 - - Disconnected from invalid user guest 203.0.113.5 port 2 [preauth]",
    ]
    .map(|line| format!("{line}\n"))
    .concat();
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    let failed = fields_of(&events, "SSHDLoginFailed");
    assert_eq!(
        failed,
        [&json!({"user": "guest", "addr": "203.0.113.5", "port": 2, "failures": 1})]
    );
    let statistics = of_kind(&events, "SSHDStats");
    assert_eq!(
        statistics[0]["summary"],
        "0 sessions, 1 denied, 0 lockouts, 0 expired, 1 partial, 0 evicted"
    );
}

#[test]
fn sessions_report_every_accepted_method_and_both_pam_formats() {
    let mut capture = String::new();
    let logins = [
        (
            "keyboard-interactive/pam",
            "",
            "session opened for user carol(uid=1001) by (uid=0)",
        ),
        (
            "publickey",
            ": ED25519 SHA256:ed",
            "session opened for user carol by (uid=0)",
        ),
        (
            "publickey",
            ": ECDSA SHA256:ec",
            "session opened for user carol(uid=1001) by carol(uid=0)",
        ),
        (
            "publickey",
            ": DSA SHA256:ds",
            "session opened for user carol by (uid=0)",
        ),
    ];
    for (n, (method, key, opened)) in logins.iter().enumerate() {
        let n = u32::try_from(n).expect("few logins");
        let (pid, port) = (700 + n, 50_000 + n);
        sshd_line(
            &mut capture,
            n * 100,
            pid,
            &format!("Accepted {method} for carol from fe80::1 port {port} ssh2{key}"),
        );
        sshd_line(
            &mut capture,
            n * 100 + 1,
            pid,
            &format!("pam_unix(sshd:session): {opened}"),
        );
        sshd_line(
            &mut capture,
            n * 100 + 60,
            pid + 1,
            &format!("Disconnected from user carol fe80::1 port {port}"),
        );
        sshd_line(
            &mut capture,
            n * 100 + 61,
            pid,
            "pam_unix(sshd:session): session closed for user carol",
        );
    }
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    let sessions: Vec<(String, String, f64)> = of_kind(&events, "SSHDLoginSucceeded")
        .iter()
        .map(|e| {
            let f = &e["fields"];
            (
                f["auth"].as_str().unwrap_or("").to_owned(),
                f["key"].as_str().unwrap_or("").to_owned(),
                f["duration"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        sessions,
        [
            ("keyboard-interactive/pam".to_owned(), String::new(), 60.0),
            ("publickey".to_owned(), "ED25519 SHA256:ed".to_owned(), 60.0),
            ("publickey".to_owned(), "ECDSA SHA256:ec".to_owned(), 60.0),
            ("publickey".to_owned(), "DSA SHA256:ds".to_owned(), 60.0),
        ]
    );
}

#[test]
fn a_session_without_pam_ends_at_its_first_end_line() {
    let mut capture = String::new();
    sshd_line(
        &mut capture,
        0,
        5,
        "Accepted publickey for dave from 192.0.2.4 port 999 ssh2: RSA SHA256:x",
    );
    sshd_line(
        &mut capture,
        30,
        6,
        "Received disconnect from 192.0.2.4 port 999:11: disconnected by user",
    );
    sshd_line(
        &mut capture,
        30,
        6,
        "Disconnected from user dave 192.0.2.4 port 999",
    );
    let events = replay_json(SSHD_JSON_APP, &capture, &[]);
    let sessions = of_kind(&events, "SSHDLoginSucceeded");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["fields"]["start"], "2023-02-20T15:00:00Z");
    assert_eq!(sessions[0]["fields"]["finish"], "2023-02-20T15:00:30Z");
}

#[test]
fn traditional_auth_log_lines_work_like_rfc5424() {
    let capture = "Feb 20 15:14:46 giganode1 sshd[2540712]: Failed password for testguy from 192.168.1.85 port 60142 ssh2\n\
                   Feb 20 15:14:58 giganode1 sshd[2540712]: Connection closed by authenticating user testguy 192.168.1.85 port 60142 [preauth]\n";
    let events = replay_json(
        SSHD_JSON_APP,
        capture,
        &[
            "parser.rfc3164_year=2023",
            "parser.rfc3164_utc_offset=-05:00",
        ],
    );
    let failed = of_kind(&events, "SSHDLoginFailed");
    assert_eq!(failed[0]["time"], "2023-02-20T15:14:58-05:00");
    assert_eq!(
        failed[0]["fields"],
        json!({"user": "testguy", "addr": "192.168.1.85", "port": 60142, "failures": 1})
    );
}

#[test]
fn unpadded_days_years_before_the_date_and_journalctl_short_iso_replay_like_auth_log() {
    // One failed login (a failed password, then the close) in each way of
    // writing its time, each from a connection of its own.
    let writings = [
        ("Feb 2 15:14:46", "Feb 2 15:14:58", "2023-02-02T15:14:58Z"),
        (
            "2023 Feb 20 15:14:46",
            "2023 Feb 20 15:14:58",
            "2023-02-20T15:14:58Z",
        ),
        (
            "2023-02-21T15:14:46+0000",
            "2023-02-21T15:14:58+0000",
            "2023-02-21T15:14:58Z",
        ),
        (
            "2023-02-22T16:14:46.250000+0100",
            "2023-02-22T16:14:58.500000+0100",
            "2023-02-22T16:14:58.500+01:00",
        ),
    ];
    let mut capture = String::new();
    for (n, (failed, closed, _)) in writings.iter().enumerate() {
        let port = 60_000 + n;
        capture.push_str(&format!(
            "{failed} giganode1 sshd[{n}]: Failed password for testguy from 192.168.1.85 port {port} ssh2\n\
             {closed} giganode1 sshd[{n}]: Connection closed by authenticating user testguy 192.168.1.85 port {port} [preauth]\n"
        ));
    }
    let events = replay_json(SSHD_JSON_APP, &capture, &["parser.rfc3164_year=2023"]);
    let failed = of_kind(&events, "SSHDLoginFailed");
    let times: Vec<&str> = failed
        .iter()
        .map(|event| event["time"].as_str().unwrap_or(""))
        .collect();
    let expected: Vec<&str> = writings.iter().map(|(_, _, time)| *time).collect();
    assert_eq!(times, expected);
    for (n, event) in failed.iter().enumerate() {
        assert_eq!(event["fields"]["port"], 60_000 + n);
    }
}

#[test]
fn a_replay_in_which_no_line_is_a_record_fails_and_says_why() {
    let dir = app_dir(SSHD_JSON_APP);
    let run = replay_in(
        dir.path(),
        "Nov 31 10:00:01 host sshd[1]: hello\nnot a syslog line\n",
        &["parser.rfc3164_year=2026"],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_has(
        &run.stderr,
        "not a syslog record, skipped: impossible date Nov 31 2026: the month has 30 days line=1",
    );
    assert_has(
        &run.stderr,
        "error: no line of input.cap is a syslog record (2 refused; the first are logged above with why)",
    );
}

#[test]
fn a_run_directory_that_is_missing_or_a_capture_that_is_a_directory_stops_before_anything_runs() {
    let dir = app_dir(SSHD_JSON_APP);
    let run = correlator(
        dir.path(),
        &["check", "--app", "app.toml", "-o", "system.run_dir=missing"],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: system.run_dir missing is not a directory; create it first (it is not created, so that a mistyped path does not scatter state and output in a new one)\n"
    );
    assert!(!dir.path().join("missing").exists());
    std::fs::create_dir(dir.path().join("captures")).expect("mkdir");
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", "captures"],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "", "nothing dispatched");
    assert_eq!(
        run.stderr,
        "error: --read-file captures: is a directory; give a capture or log file (or - for standard input)\n"
    );
    assert!(
        !dir.path().join("app.state.redb").exists(),
        "no state written"
    );
}

#[test]
fn check_refuses_a_granted_directory_or_a_state_store_that_cannot_be_written() {
    let dir = app_dir(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n[handlers.audit]\ncomponent = \"builtin:csv\"\ngrants = { dir = \"csv\" }\n",
    );
    // A file where the directory would be.
    std::fs::write(dir.path().join("csv"), "").expect("write");
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: app.toml line 5 column 18: handler \"audit\" is granted ./csv to write, and it cannot be written: Not a directory (os error 20)\n"
    );
    std::fs::remove_file(dir.path().join("csv")).expect("remove");
    std::fs::write(dir.path().join("sub"), "").expect("write");
    let run = correlator(
        dir.path(),
        &[
            "check",
            "--app",
            "app.toml",
            "-o",
            "state.file=sub/state.redb",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: the state store ./sub/state.redb cannot be written (state.enabled = false runs without it): Not a directory (os error 20)\n"
    );
    // Nothing was left behind by the probes.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["app.toml", "sub"]);
}

#[test]
fn bad_records_are_reported_with_their_line_and_the_run_goes_on() {
    let mut capture = b"garbage that is not syslog\n".to_vec();
    capture.extend_from_slice(b"<999>1 - - - - - -\n\n");
    capture.extend_from_slice(b"<86>1 2023-02-20T15:00:00Z s sshd 1 - - Failed password for \xff\xfe from 192.0.2.1 port 1 ssh2\n");
    capture.extend_from_slice(b"<86>1 2023-02-20T15:00:01Z s sshd 1 - - Connection closed by 192.0.2.1 port 1 [preauth]\n");
    let dir = app_dir(SSHD_JSON_APP);
    std::fs::write(dir.path().join("input.cap"), &capture).expect("write capture");
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", "input.cap"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_has(
        &run.stderr,
        "not a syslog record, skipped: bad RFC 3164 timestamp \"garbage that is not\": expected \"Mmm dd hh:mm:ss\" line=1",
    );
    assert_has(
        &run.stderr,
        "not a syslog record, skipped: bad PRI \"<999>\": expected <0> to <191> line=2",
    );
    assert_has(&run.stderr, "records=2 unparsable=2 not_utf8=1");
    let first: Value =
        serde_json::from_str(run.stdout.lines().next().unwrap_or("")).expect("JSON event");
    assert_eq!(first["fields"]["user"], "\u{fffd}\u{fffd}");
}

#[test]
fn filters_route_each_event_to_exactly_the_right_handlers() {
    let app = r#"
[modules.OpenSSH]
component = "builtin:sshd"
[handlers.errors]
component = "builtin:csv"
filter = 'event.severity == "error"'
grants = { dir = "errors" }
[handlers.logins]
component = "builtin:csv"
filter = 'event.kind == "SSHDLoginSucceeded" && event.fields.user == "timp"'
grants = { dir = "logins" }
[handlers.everything]
component = "builtin:csv"
grants = { dir = "all" }
"#;
    let dir = app_dir(app);
    let capture = sample_capture();
    let capture = capture.to_str().expect("UTF-8 path");
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", capture],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let listing = |name: &str| file_names(&dir.path().join(name));
    assert_eq!(
        listing("errors"),
        ["OpenSSH-SSHDLoginFailed-2023-02-20.csv"]
    );
    assert_eq!(
        listing("logins"),
        ["OpenSSH-SSHDLoginSucceeded-2023-02-20.csv"]
    );
    assert_eq!(
        listing("all"),
        [
            "OpenSSH-SSHDLoginFailed-2023-02-20.csv",
            "OpenSSH-SSHDLoginSucceeded-2023-02-20.csv",
            "OpenSSH-SSHDStats-2023-02-20.csv"
        ]
    );
    let read = |path: &str| std::fs::read_to_string(dir.path().join(path)).expect("csv file");
    let failed = "time,user,addr,port,failures\n2023-02-20T15:14:58.434787-05:00,testguy,192.168.1.85,60142,3\n";
    assert_eq!(
        read("errors/OpenSSH-SSHDLoginFailed-2023-02-20.csv"),
        failed
    );
    assert_eq!(
        read("logins/OpenSSH-SSHDLoginSucceeded-2023-02-20.csv"),
        "time,user,auth,addr,port,failures,start,finish,duration,key\n\
         2023-02-20T15:14:09.072459-05:00,timp,publickey,192.168.1.85,60116,0,2023-02-20T15:12:47.771632-05:00,2023-02-20T15:14:09.072459-05:00,81.300827,RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A\n"
    );
    assert_eq!(
        read("all/OpenSSH-SSHDLoginSucceeded-2023-02-20.csv")
            .lines()
            .count(),
        3
    );

    // A second run appends to the day's file, without a second header.
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", capture],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        listing("errors"),
        ["OpenSSH-SSHDLoginFailed-2023-02-20.csv"]
    );
    let row = failed.lines().nth(1).unwrap_or_default();
    assert_eq!(
        read("errors/OpenSSH-SSHDLoginFailed-2023-02-20.csv"),
        format!("{failed}{row}\n")
    );
}

#[test]
fn csv_files_are_per_day_of_the_events_capped_in_size_and_kept_for_keep_days() {
    let app = "[modules.Report]\ncomponent = \"builtin:report\"\n\
               [handlers.audit]\ncomponent = \"builtin:csv\"\n\
               filter = 'event.kind == \"Notice\"'\n\
               grants = { dir = \"audit\" }\n\
               config = { max_file_mib = 1, keep_days = 30 }\n";
    let dir = app_dir(app);
    let day = |date: &str, count: usize| -> String {
        (0..count)
            .map(|n| {
                format!(
                    "<13>1 {date}T10:{:02}:{:02}Z host app - - - record {n:06} of {date}\n",
                    n / 60 % 60,
                    n % 60
                )
            })
            .collect()
    };
    let audit = dir.path().join("audit");
    let listing = || file_names(&audit);
    let rows_of = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(audit.join(file)).expect("a csv file");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("time,host,program,message,peer"),
            "{file}"
        );
        lines.map(str::to_owned).collect()
    };
    // 20,000 records of one day: about 1.5 MiB of rows, in two files of at
    // most 1 MiB, each with its header, no row torn.
    let run = replay_in(
        dir.path(),
        &day("2026-01-01", 20_000),
        &["state.enabled=false"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        listing(),
        [
            "Report-Notice-2026-01-01.1.csv",
            "Report-Notice-2026-01-01.csv"
        ]
    );
    for file in listing() {
        let size = std::fs::metadata(audit.join(&file))
            .expect("metadata")
            .len();
        assert!(size <= 1 << 20, "{file}: {size} bytes");
    }
    let mut rows = rows_of("Report-Notice-2026-01-01.csv");
    rows.extend(rows_of("Report-Notice-2026-01-01.1.csv"));
    assert_eq!(rows.len(), 20_000);
    assert_eq!(
        rows[19_999],
        "2026-01-01T10:33:19Z,host,app,record 019999 of 2026-01-01,"
    );
    // Later days in a later run: the first day's files are dropped once a
    // day more than 30 days after it starts; the 20th is kept.
    let later = format!("{}{}", day("2026-01-20", 2), day("2026-02-15", 3));
    let run = replay_in(dir.path(), &later, &["state.enabled=false"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        listing(),
        [
            "Report-Notice-2026-01-20.csv",
            "Report-Notice-2026-02-15.csv"
        ]
    );
    assert_eq!(rows_of("Report-Notice-2026-02-15.csv").len(), 3);
}

#[test]
fn an_invalid_filter_is_reported_with_the_handler_and_position() {
    let app = "[modules.m]\ncomponent = \"builtin:sshd\"\n[handlers.picky]\ncomponent = \"builtin:log\"\nfilter = 'event.severity == '\n";
    let dir = app_dir(app);
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with(
            "error: handler \"picky\": the filter at app.toml line 5 column 10 does not compile: line 1, column 19 of the filter: "
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn filters_that_cannot_select_anything_are_refused_by_check_and_run_and_guarded_ones_select() {
    let app = |filter: &str| {
        format!(
            "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\nfilter = '{filter}'\n"
        )
    };
    let refused = [
        (
            r#"event.sevrity == "error""#,
            "reads `event.sevrity`, which events do not have (they have kind, module, severity, summary, time and fields)",
        ),
        (
            r#"event.kind == "SSHDLoginFailure""#,
            r#"tests `event.kind` against "SSHDLoginFailure", but no module of this app declares events of kind "SSHDLoginFailure" (known: ComponentDisabled, SSHDAttemptsExceeded, SSHDLoginFailed, SSHDLoginSucceeded, SSHDStats)"#,
        ),
        (
            r#"event.kind == "SSHDLoginFailed" && event.fields.failures > "2""#,
            r#"compares `event.fields.failures` (a number) with "2" (a string), which are never equal and have no order"#,
        ),
        (
            r#"event.fields.user == "timp""#,
            r#"reads `event.fields.user`, which only SSHDLoginFailed, SSHDLoginSucceeded carry: guard it, as in `has(event.fields.user) && ...` or `event.kind == "SSHDLoginFailed" && ...`"#,
        ),
    ];
    let sample = std::fs::read_to_string(sample_capture()).expect("sample capture");
    for (filter, problem) in refused {
        let dir = app_dir(&app(filter));
        let expected = format!(
            "error: handler \"console\": the filter at app.toml line 6 column 10 {problem}\n"
        );
        let check = correlator(dir.path(), &["check", "--app", "app.toml"]);
        assert_eq!(check.code, Some(1), "{filter}");
        assert_eq!(check.stderr, expected, "{filter}");
        let run = replay_in(dir.path(), &sample, &["state.enabled=false"]);
        assert_eq!(run.code, Some(1), "{filter}");
        assert!(run.stderr.ends_with(&expected), "{filter}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{filter}");
    }
    // Guarded, the same test selects the user's events.
    let events = replay_json(
        &app(r#"has(event.fields.user) && event.fields.user == "timp""#),
        &sample,
        &["state.enabled=false"],
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["SSHDLoginSucceeded"]);
}

#[test]
fn check_starts_every_instance_as_run_would_and_touches_none_of_its_files() {
    let app = "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
               [handlers.audit]\ncomponent = \"builtin:csv\"\ngrants = { dir = \"audit\" }\n\
               [handlers.console]\ncomponent = \"builtin:log\"\n";
    let dir = app_dir(app);
    let sample = std::fs::read_to_string(sample_capture()).expect("sample capture");
    // What init refuses, check refuses with run's message.
    for (option, message) in [
        (
            "module.OpenSSH.login_failure_limit=0",
            "error: module \"OpenSSH\" refused to start: login_failure_limit must be positive, not 0\n",
        ),
        (
            "handler.console.format=xml",
            "error: handler \"console\" refused to start: format must be \"text\" or \"json\", not \"xml\"\n",
        ),
    ] {
        let check = correlator(dir.path(), &["check", "--app", "app.toml", "-o", option]);
        assert_eq!((check.code, check.stderr.as_str()), (Some(1), message));
        let run = replay_in(dir.path(), &sample, &["state.enabled=false", option]);
        assert_eq!(run.code, Some(1));
        assert!(run.stderr.ends_with(message), "{}", run.stderr);
    }
    // A run writes the audit files; check starts the handler in a copy of
    // its directory and leaves the real one as it was.
    let run = replay_in(dir.path(), &sample, &["state.enabled=false"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let listing = |path: &std::path::Path| {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(path)
            .expect("the audit directory")
            .map(|entry| {
                let entry = entry.expect("an entry");
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read(entry.path()).expect("a file"),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = listing(&dir.path().join("audit"));
    assert!(!before.is_empty());
    let check = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert_eq!(listing(&dir.path().join("audit")), before);
    // Nor does it make the directory a run would make.
    std::fs::remove_dir_all(dir.path().join("audit")).expect("remove");
    let check = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert!(!dir.path().join("audit").exists());
}

#[test]
fn a_connection_that_names_an_empty_user_and_fails_is_a_failed_login() {
    // Scanners send an empty user name; OpenSSH logs it between two spaces.
    let mut capture = String::new();
    sshd_line(
        &mut capture,
        0,
        500,
        "Invalid user  from 198.51.100.3 port 4711",
    );
    sshd_line(
        &mut capture,
        1,
        500,
        "Failed password for invalid user  from 198.51.100.3 port 4711 ssh2",
    );
    sshd_line(
        &mut capture,
        2,
        500,
        "Connection closed by invalid user  198.51.100.3 port 4711 [preauth]",
    );
    let events = replay_json(SSHD_JSON_APP, &capture, &["state.enabled=false"]);
    let failed = of_kind(&events, "SSHDLoginFailed");
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(
        failed[0]["fields"],
        serde_json::json!({ "user": "", "addr": "198.51.100.3", "port": 4711, "failures": 1 })
    );
    assert_eq!(
        failed[0]["summary"],
        "A user with an empty name from host 198.51.100.3 port 4711 failed to log in after 1 failed password"
    );
}

#[test]
fn config_tables_of_instances_set_what_their_config_sets_and_every_error_names_its_place() {
    let app = |config: &str| {
        format!(
            "{config}\n[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
        )
    };
    // [config.module.NAME] is the module's own config: with a limit of 1,
    // each of the sample's three failed passwords is an attack.
    let events = replay_json(
        &app("[config.module.OpenSSH]\nlogin_failure_limit = 1"),
        &std::fs::read_to_string(sample_capture()).expect("sample"),
        &["state.enabled=false"],
    );
    assert_eq!(of_kind(&events, "SSHDAttemptsExceeded").len(), 3);
    let check = |config: &str| {
        let dir = app_dir(&app(config));
        let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        run.stderr
    };
    assert_eq!(
        check("[config.module.OpenSSH]\nlogin_failure_limit = \"three\""),
        "error: app.toml line 2 column 23: configuration item \"module.OpenSSH.login_failure_limit\": \"three\" is not a valid integer\n"
    );
    assert_eq!(
        check("[config.module.OpenSHH]\nlogin_failure_limit = 3"),
        "error: app.toml line 2 column 23: [config.module.OpenSHH]: the app has no module \"OpenSHH\" (its modules: OpenSSH)\n"
    );
    assert_eq!(
        check("[config.handler.console]\nformat = \"text\""),
        "error: app.toml line 2 column 10: handler.console.format is set twice: here and at app.toml line 7 column 21\n"
    );
    assert_eq!(
        check("[config]\n\"state.checkpoint_interval\" = \"soon\""),
        "error: app.toml line 2 column 31: configuration item \"state.checkpoint_interval\": \"soon\" is not a valid float\n"
    );
    // What run refuses, check refuses.
    assert_eq!(
        check("[config.state]\ncheckpoint_interval = -5"),
        "error: state.checkpoint_interval must be between 0.001 and 3600 seconds, not -5\n"
    );
    // A misspelt instance in --option: the instances the app has.
    let dir = app_dir(&app(""));
    let run = correlator(
        dir.path(),
        &[
            "check",
            "--app",
            "app.toml",
            "-o",
            "module.OpenSHH.login_failure_limit=2",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: in --option: unknown configuration item \"module.OpenSHH.login_failure_limit\"; the app's modules: OpenSSH\n"
    );
}

#[test]
fn config_shows_each_instances_filter_grants_limits_failure_policy_and_notify() {
    let dir = app_dir(
        r#"
[modules.OpenSSH]
component = "builtin:sshd"
on_failure = "disable"
limits = { memory_mib = 32, call_timeout_ms = 200 }
[handlers.hook]
component = "builtin:webhook"
filter = 'event.kind == "SSHDAttemptsExceeded"'
grants = { network = ["hooks.example.com:443", "[::1]:*"], secrets = ["hook_key"], dir = "t", dir_mode = "read-only", dir_quota_mib = 5 }
config = { url = "https://hooks.example.com/x" }
notify = { group_by = ["host"], rate_limit = { messages = 10, per_s = 3600 } }
"#,
    );
    std::fs::create_dir(dir.path().join("t")).expect("mkdir");
    let run = correlator_with_env(
        dir.path(),
        &["config", "--app", "app.toml"],
        &[("CORRELATOR_SECRET_HOOK_KEY", "k")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let instances = run
        .stdout
        .split_once("\nmodule OpenSSH")
        .map(|(_, rest)| format!("module OpenSSH{rest}"))
        .expect("an instance section");
    assert_eq!(
        instances,
        "module OpenSSH (builtin:sshd)
  grants: nothing
  limits: memory 32 MiB, 200 ms per call, 100000 events and 16777216 bytes of events per call, 1048576 bytes per event, 100 log lines/s, stack 512 KiB, state 64 MiB, backlog 16384 KiB
  on_failure: disable

handler hook (builtin:webhook)
  filter: event.kind == \"SSHDAttemptsExceeded\"
  grants: dir \"t\" (read-only, at most 5 MiB); network hooks.example.com:443, [::1]:*; secrets hook_key
  limits: memory 64 MiB, 1000 ms per call, 100000 events and 16777216 bytes of events per call, 1048576 bytes per event, 100 log lines/s, stack 512 KiB, state 64 MiB, backlog 16384 KiB
  on_failure: restart
  notify: group by [host], wait 30 s, interval 300 s, repeats suppressed for 14400 s; at most 10 messages per 3600 s, the rest in a digest
"
    );
}

#[test]
fn grants_a_component_cannot_use_or_wider_than_any_needs_are_warned_about() {
    let dir = app_dir(
        r#"
[modules.OpenSSH]
component = "builtin:sshd"
grants = { dir = "/", network = ["*:*"] }
[handlers.audit]
component = "builtin:csv"
grants = { dir = "csv", secrets = ["x"] }
"#,
    );
    std::fs::create_dir(dir.path().join("csv")).expect("mkdir");
    let run = correlator_with_env(
        dir.path(),
        &["check", "--app", "app.toml"],
        &[("CORRELATOR_SECRET_X", "1")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter_map(|line| line.split_once("WARN correlator::host: ").map(|(_, w)| w))
        .collect();
    assert_eq!(
        warnings,
        [
            "app.toml line 3 column 13: module \"OpenSSH\" (builtin:sshd) is granted dir = \"/\": the whole file system; grant a directory of its own",
            "app.toml line 3 column 13: module \"OpenSSH\" (builtin:sshd) is granted dir = \"/\" but does not import wasi:filesystem: the grant gives it nothing",
            "app.toml line 3 column 13: module \"OpenSSH\" (builtin:sshd) is granted network \"*:*\": every destination; name the HOST:PORT it needs",
            "app.toml line 3 column 13: module \"OpenSSH\" (builtin:sshd) is granted network destinations but imports neither wasi:sockets, wasi:http nor correlator:plugin/delivery: the grant gives it nothing",
            "app.toml line 6 column 13: handler \"audit\" (builtin:csv) is granted secrets but does not import correlator:plugin/secrets: the grant gives it nothing",
        ]
    );
}

#[test]
fn configuration_errors_name_the_key_value_type_and_place() {
    let dir = app_dir(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\nconfig = { login_failure_limt = 6 }\n[handlers.h]\ncomponent = \"builtin:log\"\n",
    );
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: app.toml line 3 column 33: unknown configuration item \"module.OpenSSH.login_failure_limt\"; known items here: module.OpenSSH.attempts, module.OpenSSH.login_failure_limit, module.OpenSSH.login_failure_window, module.OpenSSH.max_connections_per_server, module.OpenSSH.max_failure_hosts, module.OpenSSH.max_transaction_age\n"
    );

    let dir = app_dir(SSHD_JSON_APP);
    let run = correlator(
        dir.path(),
        &[
            "check",
            "--app",
            "app.toml",
            "--option",
            "module.OpenSSH.login_failure_limit=lots",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: in --option: configuration item \"module.OpenSSH.login_failure_limit\": \"lots\" is not a valid integer\n"
    );

    let run = correlator(
        dir.path(),
        &["check", "--app", "app.toml", "--option", "system.nope=1"],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: in --option: unknown configuration item \"system.nope\"; known items here: system.call_time_limits, system.compile_cache, system.random_seed, system.run_dir, system.secrets_file, system.usage_report\n"
    );

    let dir = app_dir(
        "descripton = \"typo\"\n[modules.m]\ncomponent = \"builtin:sshd\"\n[handlers.h]\ncomponent = \"builtin:log\"\n",
    );
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with("error: app.toml: TOML parse error at line 1, column 1"),
        "{}",
        run.stderr
    );
    assert_has(&run.stderr, "unknown field `descripton`");
}

#[test]
fn a_module_that_refuses_its_configuration_stops_start_up_with_its_message() {
    let dir = app_dir(SSHD_JSON_APP);
    let run = replay_sample_in(dir.path(), &["-o", "module.OpenSSH.login_failure_limit=0"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: module \"OpenSSH\" refused to start: login_failure_limit must be positive, not 0\n"
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn config_prints_every_item_with_type_value_default_and_source() {
    let dir = app_dir(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\nconfig = { login_failure_limit = 6 }\n[handlers.h]\ncomponent = \"builtin:log\"\n",
    );
    let run = correlator(
        dir.path(),
        &[
            "config",
            "--app",
            "app.toml",
            "-o",
            "module.OpenSSH.login_failure_window=60",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // The items' table, up to the instances' sections.
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .take_while(|line| !line.is_empty())
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        ["KEY", "TYPE", "VALUE", "DEFAULT", "SOURCE", "DESCRIPTION"]
    );
    let row = |key: &str| {
        rows.iter()
            .find(|row| row[0] == key)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        row("module.OpenSSH.login_failure_limit"),
        [
            "module.OpenSSH.login_failure_limit",
            "integer",
            "6",
            "5",
            "app file",
            "attempts (what counts: see attempts) from one host within the window that dispatch SSHDAttemptsExceeded"
        ]
    );
    assert_eq!(
        row("module.OpenSSH.login_failure_window")[2..5],
        ["60", "300", "command line"]
    );
    assert_eq!(
        row("handler.h.format")[1..5],
        ["text", "\"text\"", "\"text\"", "default"]
    );
    assert_eq!(row("system.run_dir")[1..4], ["text", "\".\"", "\".\""]);
    assert_eq!(
        row("listen.tcp")[1..5],
        [
            "text",
            "\"127.0.0.1:5140\"",
            "\"127.0.0.1:5140\"",
            "default"
        ]
    );
    assert_eq!(
        row("state.checkpoint_interval")[1..5],
        ["float", "1", "1", "default"]
    );
    assert_eq!(
        row("metrics.listen")[1..5],
        ["text", "\"\"", "\"\"", "default"]
    );
    assert_eq!(
        row("state.file")[1..5],
        [
            "text",
            "\"{app}.state.redb\"",
            "\"{app}.state.redb\"",
            "default"
        ]
    );
    assert_eq!(
        row("journal.command")[1..5],
        ["text", "\"journalctl\"", "\"journalctl\"", "default"]
    );
    assert_eq!(
        row("delivery.capture")[1..5],
        ["text", "\"\"", "\"\"", "default"]
    );
    assert_eq!(
        row("stream.role")[1..5],
        ["text", "\"off\"", "\"off\"", "default"]
    );
    assert_eq!(
        row("stream.partitions")[1..5],
        ["integer", "16", "16", "default"]
    );
    // Header, six module items, one handler item, sixteen system items
    // (three of them state.*), eighteen listener items, six delivery
    // items, four journal items, six stream items.
    assert_eq!(rows.len(), 1 + 6 + 1 + 16 + 18 + 6 + 4 + 6);
}

/// `readelf ARGS FILE`'s output.
fn readelf(args: &[&str], file: &Path) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(file)
        .output()
        .expect("readelf (Debian's binutils) runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_packaged_binary_is_small_and_its_debug_information_is_beside_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("dist");
    let built = Path::new(env!("CARGO_BIN_EXE_correlator"));
    let run = Command::new(workspace().join("runtime/packaging/dist.sh"))
        .arg(&out)
        .arg(built)
        .output()
        .expect("dist.sh runs");
    assert!(run.status.success(), "{run:?}");
    let binary = out.join("correlator");
    let size = |path: &Path| std::fs::metadata(path).expect("written").len();
    assert!(
        size(&binary) * 3 < size(built),
        "{} bytes, from {}",
        size(&binary),
        size(built)
    );
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("the packaged binary runs");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        "correlator 0.1.0 (component contract correlator:plugin@0.1.0, wasm32-wasip2)\n"
    );
    let sections = |path: &Path| readelf(&["--section-headers", "--wide"], path);
    assert!(!sections(&binary).contains(".debug_line"));
    assert!(sections(&out.join("correlator.debug")).contains(".debug_line"));
    assert_has(
        &readelf(&["--string-dump=.gnu_debuglink"], &binary),
        "correlator.debug",
    );
}

#[test]
fn the_shipped_apps_load() {
    for (app, handlers) in [("report", 1), ("ssh-report", 2)] {
        let path = workspace().join("apps").join(format!("{app}.toml"));
        let path = path.to_str().expect("UTF-8 path");
        // In a directory of its own, so that no state store is there yet.
        let dir = tempfile::tempdir().expect("temp dir");
        let run = correlator(dir.path(), &["check", "--app", path]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_eq!(
            run.stdout,
            format!(
                "state ./{app}.state.redb: none yet\n{path}: ok (1 modules, {handlers} handlers)\n"
            )
        );
    }
}

#[test]
fn the_report_app_gives_a_notice_per_record_and_stream_statistics() {
    let capture = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let app =
        std::fs::read_to_string(workspace().join("apps").join("report.toml")).expect("report app");
    let events = replay_json(&app, &capture, &["handler.console.format=json"]);
    assert_eq!(of_kind(&events, "Notice").len(), 16);
    assert_eq!(
        events[10]["summary"],
        "giganode1 sshd: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.168.1.85..."
    );
    let stats = of_kind(&events, "ReportStats");
    assert_eq!(
        stats[0]["fields"],
        json!({"first": "2023-02-20T15:12:47.757250-05:00", "last": "2023-02-20T15:14:58.437079-05:00", "records": 16, "bytes": 1151})
    );
}

#[test]
fn the_readme_demo_prints_the_three_events() {
    let script = std::fs::read_to_string(workspace().join("demo.sh")).expect("demo.sh");
    let command = script
        .lines()
        .find_map(|line| line.trim().strip_prefix("exec target/release/correlator "))
        .expect("demo.sh runs the release binary");
    let args: Vec<&str> = command
        .split_whitespace()
        .filter(|arg| *arg != "\"$@\"")
        .collect();
    let scratch = tempfile::tempdir().expect("temp dir");
    // Run from a copy of the repository's apps and data, as a user would.
    for dir in ["apps", "data"] {
        std::fs::create_dir(scratch.path().join(dir)).expect("mkdir");
        for entry in std::fs::read_dir(workspace().join(dir)).expect("read dir") {
            let entry = entry.expect("entry");
            // The app files and captures (not apps/systemd's units).
            if !entry.file_type().expect("file type").is_file() {
                continue;
            }
            std::fs::copy(
                entry.path(),
                scratch.path().join(dir).join(entry.file_name()),
            )
            .expect("copy");
        }
    }
    let run = correlator(scratch.path(), &args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "[OpenSSH :: SSHDLoginSucceeded] User timp logged in from 192.168.1.85 port 60116 by publickey (RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A); the session lasted 81.3 seconds\n\
         [OpenSSH :: SSHDLoginSucceeded] User testguy logged in from 192.168.1.85 port 60138 by password; the session lasted 6.5 seconds\n\
         [OpenSSH :: SSHDLoginFailed] User testguy from host 192.168.1.85 port 60142 failed to log in after 3 failed passwords\n\
         [OpenSSH :: SSHDStats] 2 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted\n"
    );
}

#[test]
fn a_handler_built_without_the_sdk_gets_its_events_the_plain_way_beside_a_packed_one() {
    // plain-handler exports only `handler.handle` (no `packed-handler`);
    // the log handler, built with the SDK, takes its events packed. Both see
    // the same events, fields and all.
    let guest = env!("CORRELATOR_TEST_GUEST_PLAIN_HANDLER");
    let app = |grants: &str| {
        format!(
            "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
             [handlers.plain]\ncomponent = '{guest}'\n{grants}\n\
             [handlers.console]\ncomponent = \"builtin:log\"\nfilter = 'event.kind == \"SSHDLoginFailed\"'\n"
        )
    };
    // Without the grant, what it prints is its log, not standard output.
    let dir = app_dir(&app(""));
    let run = replay_sample_in(dir.path(), &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.lines().all(|line| line.starts_with('[')),
        "{}",
        run.stdout
    );
    assert_has(
        &run.stderr,
        " INFO guest: OpenSSH SSHDLoginFailed: User testguy from host 192.168.1.85 port 60142 failed to log in after 3 failed passwords instance=\"plain\" context=\"stdout\"\n",
    );
    let dir = app_dir(&app("grants = { stdout = true }"));
    let run = replay_sample_in(dir.path(), &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let plain: String = run
        .stdout
        .lines()
        .filter(|line| !line.starts_with('['))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        plain,
        "OpenSSH SSHDLoginSucceeded: User timp logged in from 192.168.1.85 port 60116 by publickey (RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A); the session lasted 81.3 seconds
  user = \"timp\"
  auth = \"publickey\"
  addr = \"192.168.1.85\"
  port = 60116
  failures = 0
  start = 1676923967.771632000
  finish = 1676924049.072459000
  duration = 81.300827
  key = \"RSA SHA256:QaxveQJbYmX1Wmx/p2A7q+CJEZEySEl3Cnk79PVUY2A\"
OpenSSH SSHDLoginSucceeded: User testguy logged in from 192.168.1.85 port 60138 by password; the session lasted 6.5 seconds
  user = \"testguy\"
  auth = \"password\"
  addr = \"192.168.1.85\"
  port = 60138
  failures = 0
  start = 1676924075.667317000
  finish = 1676924082.176438000
  duration = 6.509121
  key = \"\"
OpenSSH SSHDLoginFailed: User testguy from host 192.168.1.85 port 60142 failed to log in after 3 failed passwords
  user = \"testguy\"
  addr = \"192.168.1.85\"
  port = 60142
  failures = 3
OpenSSH SSHDStats: 2 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted
  sessions = 2
  denied = 1
  lockouts = 0
  expired = 0
  partial = 0
  evicted = 0
"
    );
    let console: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with('['))
        .collect();
    assert_eq!(
        console,
        [
            "[OpenSSH :: SSHDLoginFailed] User testguy from host 192.168.1.85 port 60142 failed to log in after 3 failed passwords"
        ]
    );
}

#[test]
fn events_that_break_their_schema_are_rejected_by_name_and_processing_goes_on() {
    let guest = env!("CORRELATOR_TEST_GUEST_SCHEMA_BREAKER");
    let app = format!(
        "[modules.breaker]\ncomponent = '{guest}'\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
    );
    let capture = "<13>1 2023-02-20T15:00:00Z alpha app - - - one\n<13>1 2023-02-20T15:00:01Z beta app - - - two\n";
    let dir = app_dir(&app);
    std::fs::write(dir.path().join("input.cap"), capture).expect("write capture");
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", "input.cap"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(
        events
            .iter()
            .map(|e| e["fields"].clone())
            .collect::<Vec<_>>(),
        [
            json!({"host": "alpha", "position": 1}),
            json!({"host": "beta", "position": 2})
        ]
    );
    // Each once per record; a missing position twice (built, and packed).
    for (expected, count) in [
        (
            "event rejected: declared field is missing instance=breaker event=Seen field=\"position\"",
            4,
        ),
        (
            "event rejected: field is not declared instance=breaker event=Seen field=\"extra\"",
            2,
        ),
        (
            "event rejected: field has another type than declared instance=breaker event=Seen field=\"position\"",
            2,
        ),
        (
            "event rejected: field is set twice instance=breaker event=Seen field=\"position\"",
            2,
        ),
        (
            "event rejected: event type is not declared instance=breaker event=Unheard field=\"\"",
            2,
        ),
        (
            "event rejected: field has another type than declared instance=breaker event=Seen field=\"host\"",
            2,
        ),
        (
            "event rejected: field is not declared instance=breaker event=Seen field=\"#2\"",
            2,
        ),
        (
            "event rejected: event type is not declared instance=breaker event=#7 field=\"\"",
            2,
        ),
        (
            "event rejected: field has another type than declared instance=breaker event=Seen field=\"time\"",
            2,
        ),
        (
            "event rejected: field has another type than declared instance=breaker event=Timed field=\"when\"",
            4,
        ),
    ] {
        assert_eq!(
            run.stderr.matches(expected).count(),
            count,
            "{expected}\n{}",
            run.stderr
        );
    }
    assert_has(
        &run.stderr,
        "module dispatched events that broke their declared type instance=\"breaker\" rejected=24",
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused_by_name() {
    let dir = app_dir(
        "[modules.m]\ncomponent = \"fake.wasm\"\n[handlers.h]\ncomponent = \"builtin:log\"\n",
    );
    std::fs::write(dir.path().join("fake.wasm"), "not wasm").expect("write");
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: module \"m\" at app.toml line 2 column 13: fake.wasm is not a WebAssembly file\n"
    );
    let dir = app_dir(
        "[modules.m]\ncomponent = \"builtin:nope\"\n[handlers.h]\ncomponent = \"builtin:log\"\n",
    );
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(
        run.stderr,
        "error: module \"m\" at app.toml line 2 column 13: there is no builtin component \"nope\" (builtins: sshd, report, log, csv, blocklist, webhook, sms, email)\n"
    );
}

#[test]
fn connections_older_than_max_transaction_age_expire_in_record_time() {
    let mut capture = String::new();
    sshd_line(
        &mut capture,
        0,
        42,
        "Accepted password for erin from 192.0.2.5 port 4242 ssh2",
    );
    sshd_line(
        &mut capture,
        1,
        43,
        "Invalid user zed from 192.0.2.6 port 4343",
    );
    // 49 hours later, past the default max_transaction_age of 48 hours.
    let late = "<86>1 2023-02-22T16:00:00Z server sshd 44 - - Connection closed by 192.0.2.7 port 1 [preauth]\n";
    capture.push_str(late);
    // One record after a gap of two days: with the default bound of a day
    // it would be out of range; allow three days.
    let events = replay_json(SSHD_JSON_APP, &capture, &["timers.max_gap_minutes=4320"]);
    let stats: Vec<(&Value, &Value)> = of_kind(&events, "SSHDStats")
        .iter()
        .map(|event| (&event["time"], &event["fields"]))
        .collect();
    // Statistics at each midnight of record time (reset, the two
    // connections still open), the hourly tick at 16:00 on the 22nd
    // expires them, and the end of the replay reports it.
    let open = json!({"sessions": 0, "denied": 0, "lockouts": 0, "expired": 0, "partial": 2, "evicted": 0});
    assert_eq!(
        stats,
        [
            (&json!("2023-02-21T00:00:00Z"), &open),
            (&json!("2023-02-22T00:00:00Z"), &open),
            (
                &json!("2023-02-22T16:00:00Z"),
                &json!({"sessions": 0, "denied": 0, "lockouts": 0, "expired": 2, "partial": 0, "evicted": 0})
            ),
        ]
    );
}

#[test]
fn a_component_importing_what_it_was_not_granted_is_refused_at_load() {
    let dir = app_dir(
        "[modules.m]\ncomponent = \"builtin:sshd\"\n[handlers.c]\ncomponent = \"builtin:csv\"\n",
    );
    let expected = "error: handler \"c\" (builtin:csv) imports wasi:filesystem/types@0.2.6, which needs a directory: grants = { dir = \"...\" }\n";
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!((run.code, run.stderr.as_str()), (Some(1), expected));
    let run = replay_sample_in(dir.path(), &[]);
    assert_eq!((run.code, run.stderr.as_str()), (Some(1), expected));
    assert_eq!(
        std::fs::read_dir(dir.path())
            .map(Iterator::count)
            .unwrap_or(0),
        1,
        "nothing but app.toml is written"
    );
}

/// A capture with a message of three lines (octet-counted), a traditional
/// line, a line that is no record and a blank line.
const MIXED_CAPTURE: &str = "<86>1 2023-02-20T15:12:47.757250-05:00 giganode1 sshd 2540460 - - Accepted publickey for timp from 192.168.1.85 port 60116 ssh2\n\
    52 <13>1 2026-11-27T10:00:00Z h app - - - one\ntwo\nthree\n\
    Nov 27 10:00:01 h2 cron[7]: (root) CMD (true)\n\
    not a record at all\n\
    \n\
    <86>1 2023-02-20T15:14:09.072459-05:00 giganode1 sshd 2540460 - - pam_unix(sshd:session): session closed for user timp\n";

#[test]
fn capture_summary_prints_a_line_per_record_with_the_line_it_starts_on() {
    let dir = app_dir("");
    std::fs::write(dir.path().join("mixed.cap"), MIXED_CAPTURE).expect("write capture");
    let run = correlator(dir.path(), &["capture", "summary", "mixed.cap"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let year = run
        .stdout
        .lines()
        .find(|line| line.contains("h2 cron"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|date| date.get(..4))
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        run.stdout,
        format!(
            "      1  2023-02-20 15:12:47 giganode1 sshd[2540460]: Accepted publickey for timp from 192.168.1.85 port 60116 ssh2\n      \
             2  2026-11-27 10:00:00 h app: one two three\n      \
             5  {year}-11-27 10:00:01 h2 cron[7]: (root) CMD (true)\n      \
             6  (not a syslog record: bad RFC 3164 timestamp \"not a record at all\": expected \"Mmm dd hh:mm:ss\") not a record at all\n      \
             8  2023-02-20 15:14:09 giganode1 sshd[2540460]: pam_unix(sshd:session): session closed for user timp\n"
        )
    );
}

#[test]
fn capture_filter_leaves_out_the_records_marked_in_the_list() {
    let dir = app_dir("");
    std::fs::write(dir.path().join("mixed.cap"), MIXED_CAPTURE).expect("write capture");
    let summary = correlator(dir.path(), &["capture", "summary", "mixed.cap"]).stdout;
    // Mark the multi-line record and the one that is not a record.
    let list: String = summary
        .lines()
        .map(|line| {
            let number = line.split_whitespace().next().unwrap_or("");
            if number == "2" || number == "6" {
                format!("#{line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(dir.path().join("list.txt"), list).expect("write list");
    let filter = || {
        correlator(
            dir.path(),
            &[
                "capture",
                "filter",
                "mixed.cap",
                "--without",
                "list.txt",
                "--out",
                "trimmed.cap",
            ],
        )
    };
    let run = filter();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stderr, "trimmed.cap: 3 records kept, 2 left out\n");
    let lines: Vec<&str> = MIXED_CAPTURE.lines().collect();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("trimmed.cap")).expect("trimmed"),
        format!("{}\n{}\n{}\n", lines[0], lines[4], lines[7])
    );
    // It exists now: not overwritten.
    let again = filter();
    assert_eq!(again.code, Some(1));
    assert_has(
        &again.stderr,
        "error: cannot create trimmed.cap (it must not exist yet)",
    );
    // A list from another capture, or not a list at all.
    std::fs::write(dir.path().join("other.txt"), "#3 something\n").expect("write list");
    let run = correlator(
        dir.path(),
        &[
            "capture",
            "filter",
            "mixed.cap",
            "--without",
            "other.txt",
            "--out",
            "new.cap",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: other.txt marks records on lines 3 that mixed.cap does not have (was the list made from another capture?); nothing written\n"
    );
    // (--keep, the option's old name, still works.)
    std::fs::write(dir.path().join("bad.txt"), "1 fine\nnonsense\n").expect("write list");
    let run = correlator(
        dir.path(),
        &[
            "capture",
            "filter",
            "mixed.cap",
            "--keep",
            "bad.txt",
            "--out",
            "new.cap",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: bad.txt:2: expected a record's line number, as `capture summary` prints it (with # in front to leave the record out), found \"nonsense\"\n"
    );
    assert!(!dir.path().join("new.cap").exists());
}

#[test]
fn a_capture_with_multi_line_entries_replays_each_as_one_record() {
    let events = replay_json(
        "[modules.Report]\ncomponent = \"builtin:report\"\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = { format = \"json\" }\n",
        MIXED_CAPTURE,
        &[],
    );
    let messages: Vec<&str> = of_kind(&events, "Notice")
        .iter()
        .map(|event| event["fields"]["message"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        messages,
        [
            "Accepted publickey for timp from 192.168.1.85 port 60116 ssh2",
            "one\ntwo\nthree",
            "(root) CMD (true)",
            "pam_unix(sshd:session): session closed for user timp"
        ]
    );
}

#[test]
fn a_replay_over_26_hours_runs_the_hourly_expiry_and_one_midnight_statistics() {
    // 2023-02-20 12:00Z to 2023-02-21 14:00Z: a connection that never
    // ends, then a record every hour.
    let mut capture = String::from(
        "<86>1 2023-02-20T12:00:30Z server sshd 7 - - Accepted password for erin from 192.0.2.5 port 4242 ssh2\n",
    );
    for hour in 13..=38 {
        let (day, hour) = (20 + hour / 24, hour % 24);
        capture.push_str(&format!(
            "<86>1 2023-02-{day}T{hour:02}:00:05Z server sshd 8 - - Connection closed by 192.0.2.9 port 1 [preauth]\n"
        ));
    }
    let stats = |options: &[&str]| -> Vec<(Value, Value)> {
        of_kind(&replay_json(SSHD_JSON_APP, &capture, options), "SSHDStats")
            .iter()
            .map(|event| (event["time"].clone(), event["fields"].clone()))
            .collect()
    };
    let counts = |expired: i64, partial: i64| json!({"sessions": 0, "denied": 0, "lockouts": 0, "expired": expired, "partial": partial, "evicted": 0});
    // An hour's age limit: the 14:00 tick expires the connection (at 13:00
    // it is 59.5 minutes old).
    assert_eq!(
        stats(&["module.OpenSSH.max_transaction_age=60"]),
        [
            (json!("2023-02-21T00:00:00Z"), counts(1, 0)),
            (json!("2023-02-21T14:00:05Z"), counts(0, 0)),
        ]
    );
    // Days that begin two hours east of UTC: midnight is 22:00Z.
    assert_eq!(
        stats(&[
            "module.OpenSSH.max_transaction_age=60",
            "timers.utc_offset=+02:00"
        ]),
        [
            (json!("2023-02-21T00:00:00+02:00"), counts(1, 0)),
            (json!("2023-02-21T14:00:05Z"), counts(0, 0)),
        ]
    );
    // With the default limit of two days, nothing expires: still open.
    assert_eq!(
        stats(&[]),
        [
            (json!("2023-02-21T00:00:00Z"), counts(0, 1)),
            (json!("2023-02-21T14:00:05Z"), counts(0, 1)),
        ]
    );
}

/// The sample capture with `line` inserted after its eighth record.
fn sample_with(line: &str) -> String {
    let sample = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let mut lines: Vec<&str> = sample.lines().collect();
    lines.insert(8, line);
    lines.iter().map(|line| format!("{line}\n")).collect()
}

#[test]
fn a_record_dated_far_from_the_stream_neither_moves_the_clock_nor_floods_ticks() {
    // A sender whose clock says 2999. Without the guard, the sshd module's
    // daily tick came for every day up to it: 356,478 SSHDStats.
    let stray = sample_with("<14>1 2999-02-20T15:13:00-05:00 giganode1 cron 77 - - a broken clock");
    let dir = app_dir(SSHD_JSON_APP);
    let run = replay_in(dir.path(), &stray, &["state.enabled=false"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // Exactly the events of the same line dated like its neighbours.
    let dated = sample_with("<14>1 2023-02-20T15:13:00-05:00 giganode1 cron 77 - - a broken clock");
    let expected = replay_json(SSHD_JSON_APP, &dated, &["state.enabled=false"]);
    assert_eq!(json_lines(&run.stdout), expected);
    assert_has(
        &run.stderr,
        "record out of range: further than timers.max_gap_minutes from the stream clock, so it does not move the clock (modules still get it; unless the next record is as far, which confirms a jump) record=9 minutes_away=513326878\n",
    );
    assert_has(
        &run.stderr,
        "records out of range of the stream clock: they did not move it (timers.max_gap_minutes) out_of_range=1\n",
    );
}

#[test]
fn a_gap_longer_than_the_bound_gives_each_tick_once() {
    // The sample's day, then three days later two records: a real gap,
    // confirmed by the second record.
    let sample = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let later = "<14>1 2023-02-23T10:00:00-05:00 giganode1 cron 77 - - three days later\n\
                 <14>1 2023-02-23T10:00:05-05:00 giganode1 cron 77 - - and again\n";
    let capture = format!("{sample}{later}");
    let stats = |options: &[&str]| -> (usize, String) {
        let dir = app_dir(SSHD_JSON_APP);
        std::fs::write(dir.path().join("input.cap"), &capture).expect("write capture");
        let mut args = vec!["run", "--app", "app.toml", "--read-file", "input.cap"];
        args.extend(options);
        let run = correlator(dir.path(), &args);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        (
            of_kind(&json_lines(&run.stdout), "SSHDStats").len(),
            run.stderr,
        )
    };
    // Three midnights crossed, each its own daily tick, when the bound
    // allows the gap ...
    let (wide, _) = stats(&[
        "-o",
        "state.enabled=false",
        "-o",
        "timers.max_gap_minutes=10000",
    ]);
    assert_eq!(wide, 3 + 1);
    // ... and one daily tick for the gap with the default bound of a day.
    let (bounded, stderr) = stats(&["-o", "state.enabled=false"]);
    assert_eq!(bounded, 1 + 1);
    assert_has(
        &stderr,
        "the stream clock jumps: two records in a row are further than timers.max_gap_minutes from it; ticks for the gap come once per kind record=18",
    );
    assert_has(
        &stderr,
        "the stream clock crossed a gap longer than timers.max_gap_minutes: each kind of tick is given once for it, not once per boundary",
    );
}

#[test]
fn events_of_several_modules_reach_a_handler_in_record_order() {
    // One batch holds the whole sample: without ordering, every OpenSSH
    // event came before every Report notice.
    let app = "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n\
               [modules.Report]\ncomponent = \"builtin:report\"\n\
               [handlers.console]\ncomponent = \"builtin:log\"\nconfig = { format = \"json\" }\n";
    let sample = std::fs::read_to_string(sample_capture()).expect("sample capture");
    let events = replay_json(app, &sample, &["state.enabled=false"]);
    let order: Vec<String> = events
        .iter()
        .map(|event| {
            format!(
                "{} {}",
                event["module"].as_str().unwrap_or(""),
                event["kind"].as_str().unwrap_or("")
            )
        })
        .collect();
    let notice = "Report Notice";
    let mut expected = vec![notice; 4];
    expected.extend(["OpenSSH SSHDLoginSucceeded", notice]);
    expected.extend([notice; 4]);
    expected.extend(["OpenSSH SSHDLoginSucceeded", notice]);
    expected.extend([notice; 4]);
    expected.extend(["OpenSSH SSHDLoginFailed", notice, notice]);
    expected.extend(["OpenSSH SSHDStats", "Report ReportStats"]);
    assert_eq!(order, expected);
    // Each event comes with the record that triggered it.
    let times: Vec<&str> = events
        .iter()
        .map(|event| event["time"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(times[4], times[5]);
    assert_eq!(times[10], times[11]);
    assert_eq!(times[16], times[17]);
}

/// fail2ban's own annotated sshd test log, from Debian's fail2ban
/// package (`test.sh` unpacks it into `target/fail2ban`): every line
/// follows a `# failJSON: {...}` saying whether fail2ban's sshd filter
/// must match it and which host.
const FAIL2BAN_SSHD_LOG: &str = "usr/lib/python3/dist-packages/fail2ban/tests/files/logs/sshd";

/// One line of fail2ban's log with its annotation.
struct Marked {
    line: String,
    matches: bool,
    host: Option<String>,
}

/// The lines of fail2ban's sshd log that apply to its aggressive mode (the
/// broad count's model), each with its annotation, and the same lines as
/// a capture: line `n` dated 2005-01-01 00:00:00 UTC plus `2n` seconds,
/// so that an event's time says which line made it.
fn fail2ban_sshd_log() -> (Vec<Marked>, String) {
    let unpacked = workspace().join("target/fail2ban").join(FAIL2BAN_SSHD_LOG);
    let installed = Path::new("/").join(FAIL2BAN_SSHD_LOG);
    let text = std::fs::read_to_string(&unpacked)
        .or_else(|_| std::fs::read_to_string(&installed))
        .unwrap_or_else(|error| {
            panic!(
                "neither {} nor {}: {error} (test.sh unpacks Debian's fail2ban package)",
                unpacked.display(),
                installed.display()
            )
        });
    let mut marked = Vec::new();
    let mut note: Option<Value> = None;
    for line in text.lines() {
        if let Some(json) = line.strip_prefix("# failJSON:") {
            note = Some(serde_json::from_str(json).expect("failJSON is JSON"));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let note = note
            .take()
            .unwrap_or_else(|| panic!("no failJSON before {line}"));
        let constraint = note["constraint"].as_str().unwrap_or("");
        // Lines meant only for fail2ban's other modes.
        if constraint.contains("!= 'aggressive'") {
            continue;
        }
        marked.push(Marked {
            line: line.to_owned(),
            matches: note["match"] == true,
            host: note["host"].as_str().map(str::to_owned),
        });
    }
    let mut capture = String::new();
    for (n, entry) in marked.iter().enumerate() {
        let time = format!(
            "2005-01-01T{:02}:{:02}:{:02}Z",
            n * 2 / 3600,
            n * 2 / 60 % 60,
            n * 2 % 60
        );
        // Each line's own timestamp gives way to the synthetic one: RFC
        // 5424's second field, an RFC 3339 first field, or `Mmm dd hh:mm:ss`.
        let line = &entry.line;
        let rewritten = if let Some(rest) = line.strip_prefix("<38>1 ") {
            let (_, after) = rest.split_once(' ').expect("an RFC 5424 timestamp");
            format!("<38>1 {time} {after}")
        } else if line.as_bytes()[0].is_ascii_digit() {
            let (_, after) = line.split_once(' ').expect("an RFC 3339 timestamp");
            format!("{time} {after}")
        } else {
            let mut words = line.split_whitespace();
            let (_month, _day, clock) = (words.next(), words.next(), words.next());
            let clock = clock.expect("a traditional timestamp");
            let (_, after) = line.split_once(clock).expect("the clock");
            format!("{time}{after}")
        };
        capture.push_str(&rewritten);
        capture.push('\n');
    }
    (marked, capture)
}

/// `SSHDAttemptsExceeded` events of a replay of fail2ban's log with
/// `config` for the sshd module, each with the index of the line it came
/// at.
fn exceeded_by_line(capture: &str, config: &str) -> Vec<(usize, String)> {
    let app = format!(
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\nconfig = {{ login_failure_limit = 1, {config} }}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n"
    );
    let events = replay_json(&app, capture, &["state.enabled=false"]);
    of_kind(&events, "SSHDAttemptsExceeded")
        .iter()
        .map(|event| {
            let time = event["fields"]["last"].as_str().expect("a time");
            let clock = time
                .strip_prefix("2005-01-01T")
                .and_then(|t| t.strip_suffix('Z'))
                .expect("a time of the capture");
            let seconds: usize = clock
                .split(':')
                .map(|part| part.parse::<usize>().expect("a number"))
                .fold(0, |total, part| total * 60 + part);
            let host = event["fields"]["host"].as_str().expect("a host");
            (seconds / 2, host.to_owned())
        })
        .collect()
}

#[test]
fn counting_every_attempt_reports_every_host_fail2bans_sshd_log_marks_and_no_line_it_does_not() {
    let (marked, capture) = fail2ban_sshd_log();
    let wanted: std::collections::BTreeSet<&str> = marked
        .iter()
        .filter(|entry| entry.matches)
        .filter_map(|entry| entry.host.as_deref())
        .collect();
    assert_eq!(wanted.len(), 58);

    // fail2ban knows a connection by its PID alone; correlator by server
    // and PID, since one log holds many servers. This close, on server
    // `srv`, follows the failures of PID 5672 on server `test`: for
    // fail2ban the close of a connection that failed already, for
    // correlator a connection of its own closed before authenticating.
    let other_server = "Mar 19 16:47:50 srv sshd[5672]: Disconnected from authenticating user admin 192.0.2.6 port 33553 [preauth]";
    let broad = exceeded_by_line(&capture, "attempts = \"all\"");
    for (index, host) in &broad {
        let entry = &marked[*index];
        assert!(
            entry.matches || entry.line == other_server,
            "reported {host} at a line marked as no failure: {}",
            entry.line
        );
        if let Some(expected) = &entry.host {
            assert_eq!(host, expected, "{}", entry.line);
        }
    }
    let reported: std::collections::BTreeSet<&str> =
        broad.iter().map(|(_, host)| host.as_str()).collect();
    let missed: Vec<&&str> = wanted.difference(&reported).collect();
    assert!(missed.is_empty(), "hosts not reported: {missed:?}");

    // Failed passwords alone, the default: a few of them, and no line
    // marked as no failure either.
    let passwords = exceeded_by_line(&capture, "attempts = \"passwords\"");
    for (index, host) in &passwords {
        let entry = &marked[*index];
        assert!(entry.matches, "{host}: {}", entry.line);
        assert_eq!(Some(host), entry.host.as_ref(), "{}", entry.line);
    }
    let reported: std::collections::BTreeSet<&str> =
        passwords.iter().map(|(_, host)| host.as_str()).collect();
    assert_eq!(
        reported.into_iter().collect::<Vec<_>>(),
        [
            "127.0.0.1",
            "194.117.26.69",
            "194.117.26.70",
            "205.186.180.77",
            "aaaa:bbbb:cccc:1234::1:1"
        ]
    );
}
