//! Handlers that act on events, end to end through the real binary:
//! `builtin:blocklist` (addresses to block, written for a firewall).

mod common;

use common::*;
use std::path::Path;

/// The sshd module with three failed passwords as the limit, and the
/// blocklist handler (with `config`) taking its `SSHDAttemptsExceeded`.
fn blocklist_app(config: &str) -> String {
    format!(
        r#"
[modules.OpenSSH]
component = "builtin:sshd"
config = {{ login_failure_limit = 3 }}
[handlers.block]
component = "builtin:blocklist"
filter = 'event.kind == "SSHDAttemptsExceeded"'
grants = {{ dir = "firewall" }}
config = {{ {config} }}
"#
    )
}

/// Three failed passwords from `address`, 2 s apart from `start`: the
/// module says `SSHDAttemptsExceeded` at `start + 4`.
fn attack(capture: &mut String, address: &str, start: u32, pid: u32) {
    brute_force(capture, address, start, 2, 3, pid);
}

/// Replay `capture` in `dir` (its `app.toml`); the run must succeed.
fn replay(dir: &Path, capture: &str) -> Run {
    let run = replay_in(dir, capture, &["state.enabled=false"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("firewall").join(name))
        .unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// Seconds since the epoch of 2023-02-20T15:00:00Z, where `sshd_line`
/// counts from.
const T0: i64 = 1_676_905_200;

#[test]
fn blocklist_bans_attackers_for_their_ban_time_of_record_time_outside_the_ignored_ranges() {
    let dir = app_dir(&blocklist_app(
        r#"ban_time_s = 300, ignore = ["10.0.0.0/8", "2001:db8:ffff::/48"]"#,
    ));
    let mut capture = String::new();
    attack(&mut capture, "192.0.2.7", 0, 100); // banned until 304, gone by 504
    attack(&mut capture, "10.9.8.7", 10, 200); // ignored
    attack(&mut capture, "2001:db8:ffff::1", 20, 300); // ignored
    attack(&mut capture, "198.51.100.20", 400, 400); // until 704
    attack(&mut capture, "2001:db8::5", 500, 500); // until 804
    replay(dir.path(), &capture);
    assert_eq!(
        read(dir.path(), "blocklist.txt"),
        "198.51.100.20\n2001:db8::5\n"
    );
    assert_eq!(
        read(dir.path(), "blocklist.txt.state"),
        format!(
            "now {}\n198.51.100.20 {}\n2001:db8::5 {}\n",
            T0 + 504,
            T0 + 704,
            T0 + 804
        )
    );
    // Nothing but the file, its state, and no temporary left behind.
    assert_eq!(
        file_names(&dir.path().join("firewall")),
        ["blocklist.txt", "blocklist.txt.state"]
    );
}

#[test]
fn blocklist_writes_nftables_and_ipset_files_with_the_time_each_ban_has_left() {
    let mut capture = String::new();
    attack(&mut capture, "198.51.100.20", 400, 400); // until 1000
    attack(&mut capture, "2001:db8::5", 500, 500); // until 1100
    let dir = app_dir(&blocklist_app(r#"ban_time_s = 596, format = "nftables""#));
    replay(dir.path(), &capture);
    assert_eq!(
        read(dir.path(), "blocklist.nft"),
        "# Written by correlator's blocklist handler; load with: nft -f FILE\n\
         table inet correlator\n\
         delete table inet correlator\n\
         table inet correlator {\n\
         \tset blocklist_v4 {\n\
         \t\ttype ipv4_addr\n\
         \t\tflags timeout\n\
         \t\telements = { 198.51.100.20 timeout 496s }\n\
         \t}\n\
         \tset blocklist_v6 {\n\
         \t\ttype ipv6_addr\n\
         \t\tflags timeout\n\
         \t\telements = { 2001:db8::5 timeout 596s }\n\
         \t}\n\
         \tchain input {\n\
         \t\ttype filter hook input priority filter - 1; policy accept;\n\
         \t\tip saddr @blocklist_v4 drop\n\
         \t\tip6 saddr @blocklist_v6 drop\n\
         \t}\n\
         }\n"
    );
    let dir = app_dir(&blocklist_app(
        r#"ban_time_s = -1, format = "ipset", set_name = "ssh_guessers", file = "sets/ssh.ipset""#,
    ));
    std::fs::create_dir_all(dir.path().join("firewall/sets")).expect("sub-directory");
    replay(dir.path(), &capture);
    assert_eq!(
        read(dir.path(), "sets/ssh.ipset"),
        "create ssh_guessers_v4_new hash:ip family inet timeout 0 -exist\n\
         flush ssh_guessers_v4_new\n\
         add ssh_guessers_v4_new 198.51.100.20 timeout 0 -exist\n\
         create ssh_guessers_v4 hash:ip family inet timeout 0 -exist\n\
         swap ssh_guessers_v4_new ssh_guessers_v4\n\
         destroy ssh_guessers_v4_new\n\
         create ssh_guessers_v6_new hash:ip family inet6 timeout 0 -exist\n\
         flush ssh_guessers_v6_new\n\
         add ssh_guessers_v6_new 2001:db8::5 timeout 0 -exist\n\
         create ssh_guessers_v6 hash:ip family inet6 timeout 0 -exist\n\
         swap ssh_guessers_v6_new ssh_guessers_v6\n\
         destroy ssh_guessers_v6_new\n"
    );
}

#[test]
fn blocklist_bans_survive_a_restart_and_end_by_the_record_time_of_later_runs() {
    let dir = app_dir(&blocklist_app("ban_time_s = 300"));
    let mut first = String::new();
    attack(&mut first, "192.0.2.7", 0, 100); // until 304
    attack(&mut first, "198.51.100.20", 200, 200); // until 504
    replay(dir.path(), &first);
    assert_eq!(
        read(dir.path(), "blocklist.txt"),
        "192.0.2.7\n198.51.100.20\n"
    );
    // The next run starts with them, and lifts each once its time passed.
    let mut second = String::new();
    attack(&mut second, "203.0.113.9", 400, 300); // until 704
    replay(dir.path(), &second);
    assert_eq!(
        read(dir.path(), "blocklist.txt"),
        "198.51.100.20\n203.0.113.9\n"
    );
    let mut third = String::new();
    attack(&mut third, "203.0.113.10", 600, 400);
    replay(dir.path(), &third);
    assert_eq!(
        read(dir.path(), "blocklist.txt"),
        "203.0.113.9\n203.0.113.10\n"
    );
}

#[test]
fn blocklist_takes_only_addresses_from_event_text() {
    // The report module's Notice carries each record's hostname, which a
    // sender chooses freely.
    let app = r#"
[modules.Report]
component = "builtin:report"
[handlers.block]
component = "builtin:blocklist"
filter = 'event.kind == "Notice"'
grants = { dir = "firewall" }
config = { format = "nftables" }
"#;
    let dir = app_dir(app);
    let capture = "<13>1 2023-02-20T15:00:00Z 192.0.2.50 app - - - fine\n\
                   <13>1 2023-02-20T15:00:01Z 1.2.3.4;flush-ruleset app - - - evil\n\
                   <13>1 2023-02-20T15:00:02Z }} app - - - evil\n";
    let run = replay(dir.path(), capture);
    let nft = read(dir.path(), "blocklist.nft");
    assert_has(&nft, "elements = { 192.0.2.50 timeout 598s }");
    assert!(!nft.contains("flush"), "{nft}");
    assert_eq!(nft.matches('}').count(), 5, "{nft}");
    assert_has(
        &run.stderr,
        "\"1.2.3.4;flush-ruleset\" in field \"host\" is not an IP address",
    );
    assert_has(&run.stderr, "\"}}\" in field \"host\" is not an IP address");
}

#[test]
fn blocklist_settings_are_checked_before_any_record_is_read() {
    for (config, expected) in [
        (
            r#"ignore = ["10.0.0.0/33"]"#,
            "ignore: \"10.0.0.0/33\": the prefix must be 0 to 32",
        ),
        (
            r#"format = "pf""#,
            "format must be \"list\", \"nftables\" or \"ipset\", not \"pf\"",
        ),
        (
            "ban_time_s = 0",
            "ban_time_s must be -1 (for ever) or at least 1, not 0",
        ),
        (
            r#"set_name = "x; flush ruleset""#,
            "set_name \"x; flush ruleset\" must be 1 to 24 letters, digits and _, starting with a letter",
        ),
    ] {
        let dir = app_dir(&blocklist_app(config));
        std::fs::write(dir.path().join("input.cap"), "").expect("write capture");
        let run = correlator(
            dir.path(),
            &["run", "--app", "app.toml", "--read-file", "input.cap"],
        );
        assert_eq!(run.code, Some(1), "{config}: {}", run.stderr);
        assert_has(
            &run.stderr,
            &format!("error: handler \"block\" refused to start: {expected}\n"),
        );
    }
}

#[test]
fn a_reader_never_sees_a_blocklist_half_written() {
    const ATTACKERS: u32 = 3_000;
    let dir = app_dir(&blocklist_app("ban_time_s = -1"));
    let mut capture = String::new();
    for n in 0..ATTACKERS {
        let address = format!("198.18.{}.{}", n / 250, n % 250 + 1);
        attack(&mut capture, &address, n * 2, 10 + n * 3);
    }
    let file = dir.path().join("firewall").join("blocklist.txt");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (reads, run) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&file) {
                    reads.push(text);
                }
            }
            reads
        });
        let run = replay(dir.path(), &capture);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (reader.join().expect("reader"), run)
    });
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!reads.is_empty(), "the reader read nothing");
    let mut sizes = std::collections::BTreeSet::new();
    for text in &reads {
        // Whole: every line an address, the last one ended.
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "cut short: {text:?}"
        );
        for line in text.lines() {
            assert!(line.parse::<std::net::IpAddr>().is_ok(), "{line:?}");
        }
        sizes.insert(text.lines().count());
    }
    eprintln!("{} reads, {} different lengths", reads.len(), sizes.len());
    assert_eq!(
        read(dir.path(), "blocklist.txt").lines().count(),
        ATTACKERS as usize
    );
}

/// Run `script` with `sh` in a network namespace of its own (inside a user
/// namespace, so that it needs no privilege and touches nothing of the
/// machine's firewall); its standard output.
fn in_own_network_namespace(script: &str) -> String {
    let output = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "sh", "-c", script])
        .output()
        .expect("util-linux's unshare runs");
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_nftables_and_ipset_files_load_into_the_real_tools_and_load_again() {
    for tool in ["/usr/sbin/nft", "/usr/sbin/ipset"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is not installed (apt-get install nftables ipset; ./test.sh does)"
        );
    }
    let mut capture = String::new();
    attack(&mut capture, "198.51.100.20", 400, 400);
    attack(&mut capture, "2001:db8::5", 500, 500);
    let dir = app_dir(&blocklist_app(r#"ban_time_s = 3600, format = "nftables""#));
    replay(dir.path(), &capture);
    let file = dir.path().join("firewall/blocklist.nft");
    // Loaded twice: the second replaces the first whole.
    let listed = in_own_network_namespace(&format!(
        "/usr/sbin/nft -f {file} && /usr/sbin/nft -f {file} && /usr/sbin/nft list table inet correlator",
        file = file.display()
    ));
    assert_has(&listed, "elements = { 198.51.100.20 timeout 58m20s expires");
    assert_has(&listed, "elements = { 2001:db8::5 timeout 1h expires");
    assert_has(&listed, "ip saddr @blocklist_v4 drop");
    assert_eq!(listed.matches("set blocklist_v4").count(), 1, "{listed}");

    let dir = app_dir(&blocklist_app(r#"ban_time_s = -1, format = "ipset""#));
    replay(dir.path(), &capture);
    let file = dir.path().join("firewall/blocklist.ipset");
    let listed = in_own_network_namespace(&format!(
        "/usr/sbin/ipset restore -f {file} && /usr/sbin/ipset restore -f {file} && /usr/sbin/ipset list",
        file = file.display()
    ));
    assert_has(&listed, "Name: blocklist_v4\n");
    assert_has(&listed, "Members:\n198.51.100.20 timeout 0\n");
    assert_has(&listed, "Members:\n2001:db8::5 timeout 0\n");
    assert!(
        !listed.contains("_new"),
        "the temporary sets are gone: {listed}"
    );
}

#[test]
fn the_shipped_systemd_units_load_the_file_they_watch() {
    let units = workspace().join("apps/systemd");
    let read = |name: &str| {
        std::fs::read_to_string(units.join(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
    };
    let value = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
            .to_owned()
    };
    let path_unit = read("correlator-blocklist.path");
    let service = read("correlator-blocklist.service");
    let watched = value(&path_unit, "PathChanged");
    assert_eq!(value(&path_unit, "Unit"), "correlator-blocklist.service");
    assert_eq!(
        value(&service, "ExecStart"),
        format!("/usr/sbin/nft -f {watched}")
    );
    assert_eq!(value(&service, "ConditionPathExists"), watched);
    assert_eq!(value(&service, "Type"), "oneshot");
    // The handler's default name for the nftables format.
    assert!(watched.ends_with("/blocklist.nft"), "{watched}");
}

/// A real HTTP server (Python's http.server, `tests/servers/http_sink.py`)
/// on 127.0.0.1 that records every request and answers from `plan`;
/// stopped when dropped.
struct HttpSink {
    server: TestServer,
    port: u16,
}

/// A test server's process, the JSON lines it records, and its scratch
/// directory; the process is stopped when dropped.
struct TestServer {
    child: std::process::Child,
    record: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Every line recorded so far.
    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HttpSink {
    fn start(plan: &str) -> HttpSink {
        Self::start_on(plan, 0)
    }

    /// On `port` (0: one the kernel chooses).
    fn start_on(plan: &str, port: u16) -> HttpSink {
        let dir = tempfile::tempdir().expect("temp dir");
        let record = dir.path().join("requests.jsonl");
        let mut command = std::process::Command::new("python3");
        command
            .arg(workspace().join("tests/servers/http_sink.py"))
            .arg(&record)
            .arg(plan)
            .arg(port.to_string());
        let (child, first) = spawn_server(command);
        let port = first
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no port: {first:?}"));
        HttpSink {
            server: TestServer {
                child,
                record,
                _dir: dir,
            },
            port,
        }
    }

    /// Every request so far, in the order answered.
    fn requests(&self) -> Vec<serde_json::Value> {
        self.server.records()
    }
}

/// Start a test server; its first line on standard output (once it is
/// ready).
fn spawn_server(mut command: std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("{command:?} does not start ({error}; ./test.sh installs what it needs)")
        });
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("the server says it is ready");
    (child, first)
}

/// The sshd module over the sample capture (four events), every event to a
/// webhook handler with `config` granted `grant`.
fn webhook_app(config: &str, grant: &str) -> String {
    format!(
        r#"
[modules.OpenSSH]
component = "builtin:sshd"
config = {{ login_failure_limit = 5, login_failure_window = 300 }}
[handlers.hook]
component = "builtin:webhook"
grants = {{ {grant} }}
config = {{ {config} }}
"#
    )
}

/// Replay the sample capture in `dir` with `options` and `env`.
fn replay_sample(dir: &Path, options: &[&str], env: &[(&str, &str)]) -> Run {
    let capture = sample_capture();
    let mut args = vec![
        "run",
        "--app",
        "app.toml",
        "--read-file",
        capture.to_str().expect("UTF-8 path"),
        "-o",
        "state.enabled=false",
    ];
    for option in options {
        args.extend(["-o", option]);
    }
    correlator_with_env(dir, &args, env)
}

/// The kinds of the events in the bodies of `requests` answered 200, sorted.
fn accepted_kinds(requests: &[serde_json::Value]) -> Vec<String> {
    let mut kinds: Vec<String> = requests
        .iter()
        .filter(|request| request["status"] == 200)
        .map(|request| {
            let body: serde_json::Value =
                serde_json::from_str(request["body"].as_str().unwrap_or("")).expect("a JSON body");
            body["kind"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    kinds.sort();
    kinds
}

const SAMPLE_KINDS: [&str; 4] = [
    "SSHDLoginFailed",
    "SSHDLoginSucceeded",
    "SSHDLoginSucceeded",
    "SSHDStats",
];

#[test]
fn webhook_delivers_every_event_exactly_once_after_failures_and_honours_retry_after() {
    let sink = HttpSink::start("500,500,429:1,200");
    let port = sink.port;
    let dir = app_dir(&webhook_app(
        &format!(r#"url = "http://127.0.0.1:{port}/hook""#),
        &format!(r#"network = ["127.0.0.1:{port}"]"#),
    ));
    let run = replay_sample(dir.path(), &["delivery.retry_base_ms=50"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let requests = sink.requests();
    assert_eq!(accepted_kinds(&requests), SAMPLE_KINDS);
    let statuses: Vec<u64> = requests
        .iter()
        .map(|request| request["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [500, 500, 429, 200, 200, 200, 200]);
    // The first event was tried four times; the 429 asked for a second.
    assert_eq!(requests[0]["body"], requests[3]["body"]);
    let time = |index: usize| requests[index]["time"].as_f64().unwrap_or(0.0);
    assert!(time(3) - time(2) >= 1.0, "Retry-After: 1 honoured");
    assert!(time(2) - time(0) < 1.0, "backoff from 50 ms");
    for request in &requests {
        assert_eq!(request["method"], "POST");
        assert_eq!(request["path"], "/hook");
        assert_eq!(request["headers"]["content-type"], "application/json");
    }
    assert_has(&run.stderr, "submitted=4 delivered=4 retries=3 dead=0");
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`, hex.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use sha2::Digest as _;
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = sha2::Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = sha2::Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn webhook_presets_headers_and_signatures_come_from_configuration_and_granted_secrets() {
    let sink = HttpSink::start("200");
    let port = sink.port;
    let dir = app_dir(&webhook_app(
        &format!(
            r#"url = "http://127.0.0.1:{port}/pd", preset = "pagerduty", routing_key_secret = "pd_key", dedup_field = "addr", hmac_secret = "signing", authorization_secret = "token", headers = "X-Team=secops; X-Env=test""#
        ),
        &format!(r#"network = ["127.0.0.1:{port}"], secrets = ["pd_key", "signing", "token"]"#),
    ));
    let env = [
        ("CORRELATOR_SECRET_PD_KEY", "R0UT1NG-K3Y"),
        ("CORRELATOR_SECRET_SIGNING", "s1gn1ng-s3cr3t"),
        ("CORRELATOR_SECRET_TOKEN", "Bearer t0k3n"),
    ];
    let run = replay_sample(dir.path(), &[], &env);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let requests = sink.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        let body = request["body"].as_str().unwrap_or("");
        let headers = &request["headers"];
        assert_eq!(headers["authorization"], "Bearer t0k3n");
        assert_eq!(headers["x-team"], "secops");
        assert_eq!(headers["x-env"], "test");
        assert_eq!(
            headers["x-correlator-signature"],
            format!(
                "sha256={}",
                hmac_sha256_hex(b"s1gn1ng-s3cr3t", body.as_bytes())
            )
        );
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(body["routing_key"], "R0UT1NG-K3Y");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["payload"]["source"], "OpenSSH");
    }
    let failed = requests
        .iter()
        .map(|request| {
            serde_json::from_str::<serde_json::Value>(request["body"].as_str().unwrap_or(""))
                .expect("JSON")
        })
        .find(|body| body["payload"]["component"] == "SSHDLoginFailed")
        .expect("the failed login");
    assert_eq!(failed["dedup_key"], "OpenSSH/SSHDLoginFailed/192.168.1.85");
    assert_eq!(failed["payload"]["severity"], "error");
    // No secret reaches the log.
    for (_, value) in env {
        assert!(!run.stderr.contains(value), "{value} in:\n{}", run.stderr);
    }
}

#[test]
fn a_permanent_refusal_sets_each_event_aside_after_one_try() {
    let sink = HttpSink::start("403");
    let port = sink.port;
    let dir = app_dir(&webhook_app(
        &format!(r#"url = "http://127.0.0.1:{port}/x", preset = "slack""#),
        &format!(r#"network = ["127.0.0.1:{port}"]"#),
    ));
    let run = replay_sample(dir.path(), &[], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(sink.requests().len(), 4, "one try each");
    assert_has(
        &run.stderr,
        "delivery given up: the destination answered 403 Forbidden",
    );
    assert_has(&run.stderr, "submitted=4 delivered=0 retries=0 dead=4");
    let texts: Vec<String> = sink
        .requests()
        .iter()
        .map(|request| {
            serde_json::from_str::<serde_json::Value>(request["body"].as_str().unwrap_or(""))
                .expect("JSON")["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        texts.contains(&"[OpenSSH :: SSHDStats] 2 sessions, 1 denied, 0 lockouts, 0 expired, 0 partial, 0 evicted".to_owned()),
        "{texts:?}"
    );
}

#[test]
fn a_dead_destination_holds_up_neither_the_records_nor_the_other_handlers() {
    // Nothing listens there: every try fails to connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let app = format!(
        "{}\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n",
        webhook_app(
            &format!(r#"url = "http://127.0.0.1:{port}/x""#),
            &format!(r#"network = ["127.0.0.1:{port}"]"#),
        )
    );
    let dir = app_dir(&app);
    let started = std::time::Instant::now();
    let run = replay_sample(
        dir.path(),
        &["delivery.retry_base_ms=100", "delivery.shutdown_wait_s=1"],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert_eq!(
        json_lines(&run.stdout).len(),
        4,
        "the console got every event"
    );
    assert_has(&run.stderr, "delivery failed (cannot connect to 127.0.0.1:");
    assert_has(
        &run.stderr,
        "deliveries not accepted by the end of the run are given up handler=hook waiting=4",
    );
}

#[test]
fn a_destination_that_is_not_granted_is_refused_and_the_grant_is_required_at_load() {
    let dir = app_dir(&webhook_app(
        r#"url = "http://127.0.0.1:9/x""#,
        r#"network = ["127.0.0.1:10"]"#,
    ));
    let run = replay_sample(dir.path(), &[], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_has(
        &run.stderr,
        "127.0.0.1:9 is not among the network destinations granted to this handler",
    );
    let dir = app_dir(&webhook_app(r#"url = "http://127.0.0.1:9/x""#, ""));
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1));
    assert_has(
        &run.stderr,
        "handler \"hook\" (builtin:webhook) imports correlator:plugin/delivery@0.1.0, which needs network destinations to deliver to: grants = { network = [\"HOST:PORT\"] }",
    );
}

/// The webhook app posting to `port`, without the statistics events (which
/// every run dispatches anew at its end).
fn logins_webhook_app(port: u16) -> String {
    webhook_app(
        &format!(r#"url = "http://127.0.0.1:{port}/hook""#),
        &format!(r#"network = ["127.0.0.1:{port}"]"#),
    )
    .replace(
        "component = \"builtin:webhook\"\n",
        "component = \"builtin:webhook\"\nfilter = 'event.kind != \"SSHDStats\"'\n",
    )
}

/// The kinds of the sample capture's events but the statistics.
const LOGIN_KINDS: [&str; 3] = [
    "SSHDLoginFailed",
    "SSHDLoginSucceeded",
    "SSHDLoginSucceeded",
];

/// Replay `capture` (a file name in `dir`) with durable state on.
fn replay_with_state(dir: &Path, capture: &str, options: &[&str]) -> Run {
    let mut args = vec!["run", "--app", "app.toml", "--read-file", capture];
    for option in options {
        args.extend(["-o", option]);
    }
    correlator(dir, &args)
}

#[test]
fn deliveries_still_waiting_when_a_run_ends_are_sent_by_the_next_run_once() {
    let down = HttpSink::start("503");
    let port = down.port;
    let dir = app_dir(&logins_webhook_app(port));
    let capture = sample_capture();
    let capture = capture.to_str().expect("UTF-8 path");
    let first = replay_with_state(
        dir.path(),
        capture,
        &["delivery.retry_base_ms=100", "delivery.shutdown_wait_s=1"],
    );
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert!(accepted_kinds(&down.requests()).is_empty());
    assert_has(
        &first.stderr,
        "deliveries not accepted by the end of the run are given up handler=hook waiting=3",
    );
    drop(down);
    // The destination is back; the next run (of nothing) sends what waited.
    let up = HttpSink::start_on("200", port);
    std::fs::write(dir.path().join("empty.cap"), "").expect("write capture");
    let second = replay_with_state(dir.path(), "empty.cap", &[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_has(
        &second.stderr,
        "taking up the deliveries an earlier run left waiting resumed=3",
    );
    assert_eq!(accepted_kinds(&up.requests()), LOGIN_KINDS);
    // Done with: a third run sends nothing again.
    let third = replay_with_state(dir.path(), "empty.cap", &[]);
    assert_eq!(third.code, Some(0), "{}", third.stderr);
    assert_eq!(up.requests().len(), 3);
}

#[test]
fn kill_9_while_deliveries_are_retried_loses_none_of_them() {
    let down = HttpSink::start("503");
    let port = down.port;
    let dir = app_dir(&logins_webhook_app(port));
    let capture = sample_capture();
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_correlator"))
        .args(["run", "--app", "app.toml", "--read-file"])
        .arg(&capture)
        .args([
            "-o",
            "delivery.retry_base_ms=50",
            "-o",
            "delivery.shutdown_wait_s=60",
        ])
        .current_dir(dir.path())
        .env(
            "XDG_CACHE_HOME",
            workspace().join("target").join("test-cache"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the runtime starts");
    // Killed while it retries, after the replay's last checkpoint.
    let started = std::time::Instant::now();
    while down.requests().len() < 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no retries"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run.kill().expect("kill -9");
    let _ = run.wait();
    drop(down);
    let up = HttpSink::start_on("200", port);
    std::fs::write(dir.path().join("empty.cap"), "").expect("write capture");
    let next = replay_with_state(dir.path(), "empty.cap", &[]);
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert_eq!(accepted_kinds(&up.requests()), LOGIN_KINDS);
}

/// The sshd module over the sample capture, its error events to the SMS
/// handler with `config`, granted `grant` (which must grant a directory:
/// the handler reads template files), and the secret `twilio_token`.
fn sms_app(config: &str, grant: &str) -> String {
    format!(
        r#"
[modules.OpenSSH]
component = "builtin:sshd"
config = {{ login_failure_limit = 5, login_failure_window = 300 }}
[handlers.text]
component = "builtin:sms"
filter = 'event.severity == "error"'
grants = {{ {grant}, secrets = ["twilio_token"] }}
config = {{ account_sid = "AC123", token_secret = "twilio_token", from = "+15559999", to = ["+15550001", "+15550002"], {config} }}
"#
    )
}

/// The fields of a form body.
fn form_fields(body: &str) -> std::collections::BTreeMap<String, String> {
    let decode = |text: &str| {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut index = 0;
        while index < bytes.len() {
            if bytes[index] == b'%' && index + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                index += 3;
            } else {
                out.push(bytes[index]);
                index += 1;
            }
        }
        String::from_utf8(out).expect("UTF-8")
    };
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (decode(name), decode(value)))
        .collect()
}

const TWILIO_TOKEN: (&str, &str) = ("CORRELATOR_SECRET_TWILIO_TOKEN", "t0k3n");

#[test]
fn sms_sends_the_originals_text_to_every_recipient_through_a_twilio_compatible_api() {
    let sink = HttpSink::start("500,429:1,200");
    let port = sink.port;
    let dir = app_dir(&sms_app(
        &format!(r#"api_base = "http://127.0.0.1:{port}/""#),
        &format!(r#"network = ["127.0.0.1:{port}"], dir = "templates", dir_mode = "read-only""#),
    ));
    std::fs::create_dir(dir.path().join("templates")).expect("mkdir");
    let run = replay_sample(dir.path(), &["delivery.retry_base_ms=50"], &[TWILIO_TOKEN]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let requests = sink.requests();
    let statuses: Vec<u64> = requests
        .iter()
        .map(|request| request["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [500, 429, 200, 200]);
    // The 429 asked for a second, and got it.
    let time = |index: usize| requests[index]["time"].as_f64().unwrap_or(0.0);
    assert!(time(2) - time(1) >= 1.0, "Retry-After: 1 honoured");
    let mut recipients = Vec::new();
    for request in requests.iter().filter(|request| request["status"] == 200) {
        assert_eq!(request["path"], "/2010-04-01/Accounts/AC123/Messages.json");
        assert_eq!(
            request["headers"]["authorization"],
            "Basic QUMxMjM6dDBrM24="
        );
        assert_eq!(
            request["headers"]["content-type"],
            "application/x-www-form-urlencoded"
        );
        let form = form_fields(request["body"].as_str().unwrap_or(""));
        assert_eq!(form["From"], "+15559999");
        let body = &form["Body"];
        assert!(body.starts_with("On 20"), "{body}");
        assert!(
            body.ends_with(" the event SSHDLoginFailed occurred. The message is: User testguy from host 192.168.1.85 port 60142 failed to log in after 3 failed passwords"),
            "{body}"
        );
        recipients.push(form["To"].clone());
    }
    recipients.sort();
    assert_eq!(recipients, ["+15550001", "+15550002"]);
    assert!(!run.stderr.contains("t0k3n"));
    assert!(!run.stderr.contains("QUMxMjM6dDBrM24"));
}

#[test]
fn sms_templates_come_from_the_granted_directory_and_cannot_reach_anything_else() {
    let sink = HttpSink::start("200");
    let port = sink.port;
    let dir = app_dir(&sms_app(
        &format!(r#"api_base = "http://127.0.0.1:{port}", template_file = "alert.j2""#),
        &format!(r#"network = ["127.0.0.1:{port}"], dir = "templates""#),
    ));
    std::fs::create_dir(dir.path().join("templates")).expect("mkdir");
    std::fs::write(
        dir.path().join("templates/alert.j2"),
        "{{ severity|upper }} {{ kind }} from {{ fields.addr }}",
    )
    .expect("write template");
    let run = replay_sample(dir.path(), &[], &[TWILIO_TOKEN]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let bodies: Vec<String> = sink
        .requests()
        .iter()
        .map(|request| form_fields(request["body"].as_str().unwrap_or(""))["Body"].clone())
        .collect();
    assert_eq!(
        bodies,
        [
            "ERROR SSHDLoginFailed from 192.168.1.85",
            "ERROR SSHDLoginFailed from 192.168.1.85"
        ]
    );
    for (template, error) in [
        (
            r#"template = "{{ env('HOME') }}""#,
            "the template cannot render: unknown function: env is unknown",
        ),
        (
            r#"template = "{% include '/etc/passwd' %}""#,
            "the template does not compile: syntax error: unknown statement include",
        ),
    ] {
        let dir = app_dir(&sms_app(
            &format!(r#"api_base = "http://127.0.0.1:{port}", {template}"#),
            &format!(r#"network = ["127.0.0.1:{port}"], dir = "templates""#),
        ));
        let run = replay_sample(dir.path(), &[], &[TWILIO_TOKEN]);
        assert_eq!(run.code, Some(1), "{template}: {}", run.stderr);
        assert_has(
            &run.stderr,
            &format!("error: handler \"text\" refused to start: {error}"),
        );
    }
}

#[test]
fn dead_letters_are_kept_listed_sent_again_and_purged() {
    let refusing = HttpSink::start("403");
    let port = refusing.port;
    let dir = app_dir(&logins_webhook_app(port));
    let capture = sample_capture();
    let first = replay_with_state(dir.path(), capture.to_str().expect("UTF-8 path"), &[]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    drop(refusing);
    let outbox = |args: &[&str]| {
        let mut all = vec!["outbox", "--app", "app.toml"];
        all.extend(args);
        let run = correlator(dir.path(), &all);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        run.stdout
    };
    let listed = outbox(&["list"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "{listed}");
    for (line, number) in lines[..3].iter().zip(1..) {
        assert!(
            line.starts_with(&format!(
                "dead hook #{number}: POST http://127.0.0.1:{port}/hook, "
            )),
            "{line}"
        );
        assert!(
            line.ends_with(": the destination answered 403 Forbidden"),
            "{line}"
        );
    }
    assert_eq!(lines[3], "0 waiting, 3 dead");
    let check = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert_has(
        &check.stdout,
        "state ./app.state.redb: 0 deliveries wait in outboxes, 3 dead letters (correlator outbox --app app.toml list)\n",
    );
    assert_eq!(
        outbox(&["retry", "1", "3"]),
        "2 dead letters back in their outbox: the next run delivers them\n"
    );
    assert!(outbox(&["list"]).ends_with("2 waiting, 1 dead\n"));
    // The destination takes them now.
    let up = HttpSink::start_on("200", port);
    std::fs::write(dir.path().join("empty.cap"), "").expect("write capture");
    let second = replay_with_state(dir.path(), "empty.cap", &[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(up.requests().len(), 2);
    assert_eq!(
        outbox(&["purge", "--dead", "--handler", "hook"]),
        "1 dead letters deleted\n"
    );
    assert_eq!(outbox(&["list"]), "0 waiting, 0 dead\n");
}

/// A CA and a certificate for `localhost` signed by it, as `ca.pem`,
/// `server.pem` and `server.key` in `dir`.
fn make_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let certificate = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("server.pem"), certificate.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
}

/// A real SMTP server (Debian's python3-aiosmtpd, `tests/servers/smtp_sink.py`)
/// on 127.0.0.1:`port`; stopped when dropped.
struct SmtpSink(TestServer);

impl SmtpSink {
    /// `mode` is plain, starttls or tls (with the certificates of
    /// `certificates`); `login` requires authentication.
    fn start(mode: &str, port: u16, certificates: &Path, login: Option<(&str, &str)>) -> SmtpSink {
        let python = Path::new("/usr/bin/python3");
        assert!(
            std::process::Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .status()
                .is_ok_and(|status| status.success()),
            "Debian's python3-aiosmtpd is not installed (./test.sh installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let record = dir.path().join("mail.jsonl");
        let mut command = std::process::Command::new(python);
        command
            .arg(workspace().join("tests/servers/smtp_sink.py"))
            .arg(&record)
            .arg(mode)
            .arg(port.to_string());
        if mode != "plain" {
            command
                .arg(certificates.join("server.pem"))
                .arg(certificates.join("server.key"));
        }
        if let Some((user, password)) = login {
            command.args([user, password]);
        }
        let (child, first) = spawn_server(command);
        assert_eq!(first.trim(), "ready");
        SmtpSink(TestServer {
            child,
            record,
            _dir: dir,
        })
    }

    /// Every message accepted so far.
    fn messages(&self) -> Vec<serde_json::Value> {
        self.0.records()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The sshd module over the sample capture, its error events to the
/// e-mail handler with `config`, granted `grant`.
fn email_app(config: &str, grant: &str) -> String {
    format!(
        r#"
[modules.OpenSSH]
component = "builtin:sshd"
config = {{ login_failure_limit = 5, login_failure_window = 300 }}
[handlers.mail]
component = "builtin:email"
filter = 'event.severity == "error"'
grants = {{ dir = "templates", {grant} }}
config = {{ from = "correlator@example.com", to = ["ops@example.com", "sec@example.com"], {config} }}
"#
    )
}

const FAILED_LOGIN: &str =
    "User testguy from host 192.168.1.85 port 60142 failed to log in after 3 failed passwords";

#[test]
fn email_over_starttls_with_a_password_sends_each_event_as_the_default_templates_say() {
    let dir = app_dir("");
    make_certificates(dir.path());
    let port = free_port();
    let sink = SmtpSink::start("starttls", port, dir.path(), Some(("alerts", "s3cr3t")));
    std::fs::write(
        dir.path().join("app.toml"),
        email_app(
            &format!(r#"smtp_server = "localhost:{port}", tls = "starttls", username = "alerts", password_secret = "smtp_password""#),
            &format!(r#"network = ["localhost:{port}"], secrets = ["smtp_password"]"#),
        ),
    )
    .expect("write app");
    let run = replay_sample(
        dir.path(),
        &["delivery.tls_ca_file=ca.pem"],
        &[("CORRELATOR_SECRET_SMTP_PASSWORD", "s3cr3t")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message["from"], "correlator@example.com");
    assert_eq!(
        message["to"],
        serde_json::json!(["ops@example.com", "sec@example.com"])
    );
    assert_eq!(message["tls"], true);
    assert_eq!(message["user"], "alerts");
    assert_eq!(
        message["subject"],
        format!("[OpenSSH :: SSHDLoginFailed] {FAILED_LOGIN}")
    );
    let text = message["text"].as_str().unwrap_or("");
    assert!(
        text.starts_with(&format!(
            "{FAILED_LOGIN}\n\nModule: OpenSSH\nEvent: SSHDLoginFailed\nSeverity: error\nTime: 20"
        )),
        "{text}"
    );
    assert!(text.contains("\naddr: 192.168.1.85\n"), "{text}");
    assert!(text.contains("\nuser: testguy\n"), "{text}");
    assert!(!run.stderr.contains("s3cr3t"));
    assert_has(&run.stderr, "submitted=1 delivered=1 retries=0 dead=0");
}

#[test]
fn email_over_tls_with_html_and_a_subject_the_template_sets() {
    let dir = app_dir("");
    make_certificates(dir.path());
    let port = free_port();
    let sink = SmtpSink::start("tls", port, dir.path(), None);
    std::fs::create_dir(dir.path().join("templates")).expect("mkdir");
    std::fs::write(
        dir.path().join("templates/alert.txt"),
        "Subject: Block {{ fields.addr }} now\n\n{{ fields.user }} failed {{ fields.failures }} times.",
    )
    .expect("write template");
    std::fs::write(
        dir.path().join("app.toml"),
        email_app(
            &format!(r#"smtp_server = "localhost:{port}", tls = "tls", template_file = "alert.txt", html_template = "<p>{{{{ summary }}}}</p>""#),
            &format!(r#"network = ["localhost:{port}"]"#),
        ),
    )
    .expect("write app");
    let run = replay_sample(dir.path(), &["delivery.tls_ca_file=ca.pem"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["tls"], true);
    assert_eq!(messages[0]["subject"], "Block 192.168.1.85 now");
    assert_eq!(messages[0]["text"], "testguy failed 3 times.");
    assert_eq!(messages[0]["html"], format!("<p>{FAILED_LOGIN}</p>"));
}

#[test]
fn email_to_a_server_down_at_start_arrives_once_it_is_up_and_event_text_adds_no_header() {
    // The report module's Notice carries a message with a line break (an
    // octet-counted capture entry), which the subject takes.
    let port = free_port();
    let app = format!(
        r#"
[modules.Report]
component = "builtin:report"
[handlers.mail]
component = "builtin:email"
filter = 'event.kind == "Notice"'
grants = {{ network = ["127.0.0.1:{port}"], dir = "templates" }}
config = {{ smtp_server = "127.0.0.1:{port}", tls = "none", from = "correlator@example.com", to = "ops@example.com", subject = "{{{{ fields.message }}}}" }}
"#
    );
    let dir = app_dir(&app);
    let message = "login failed\r\nBcc: everyone@example.com";
    let line = format!("<13>1 2023-02-20T15:00:00Z host app - - - {message}");
    std::fs::write(
        dir.path().join("input.cap"),
        format!("{} {line}\n", line.len()),
    )
    .expect("write capture");
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_correlator"))
        .args(["run", "--app", "app.toml", "--read-file", "input.cap"])
        .args([
            "-o",
            "state.enabled=false",
            "-o",
            "delivery.retry_base_ms=200",
            "-o",
            "delivery.shutdown_wait_s=60",
        ])
        .current_dir(dir.path())
        .env(
            "XDG_CACHE_HOME",
            workspace().join("target").join("test-cache"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.txt")).expect("stderr"))
        .spawn()
        .expect("the runtime starts");
    // It tries and fails while nothing listens.
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(dir.path().join("stderr.txt"))
        .unwrap_or_default()
        .contains("delivery failed (cannot connect to 127.0.0.1:")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no failed try"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sink = SmtpSink::start("plain", port, dir.path(), None);
    let status = run.wait().expect("the run ends");
    assert!(status.success());
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        messages[0]["subject"],
        "login failed  Bcc: everyone@example.com"
    );
    let headers: Vec<&str> = messages[0]["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    assert!(!headers.contains(&"bcc"), "{headers:?}");
    assert_eq!(messages[0]["to"], serde_json::json!(["ops@example.com"]));
}

/// The sshd module (three failed passwords from a host within 300 s make
/// `SSHDAttemptsExceeded`) and the webhook handler posting to `port` the
/// events `filter` selects, told as `notify` says.
fn notify_app(port: u16, filter: &str, notify: &str) -> String {
    format!(
        r#"
[modules.OpenSSH]
component = "builtin:sshd"
config = {{ login_failure_limit = 3, login_failure_window = 300 }}
[handlers.hook]
component = "builtin:webhook"
filter = '{filter}'
grants = {{ network = ["127.0.0.1:{port}"] }}
config = {{ url = "http://127.0.0.1:{port}/hook" }}
notify = {{ {notify} }}
"#
    )
}

/// The JSON bodies `sink` accepted, in the order received.
fn accepted_bodies(sink: &HttpSink) -> Vec<serde_json::Value> {
    sink.requests()
        .iter()
        .filter(|request| request["status"] == 200)
        .map(|request| serde_json::from_str(request["body"].as_str().unwrap_or("")).expect("JSON"))
        .collect()
}

#[test]
fn grouping_sends_an_attacker_once_and_folds_its_repeats_into_one_reminder() {
    let sink = HttpSink::start("200");
    let dir = app_dir(&notify_app(
        sink.port,
        r#"event.kind == "SSHDAttemptsExceeded""#,
        r#"group_by = ["host"], group_wait_s = 60, group_interval_s = 600, repeat_interval_s = 3600"#,
    ));
    // 203.0.113.1 reaches the limit at +4 s, +104 s and +304 s;
    // 203.0.113.2 at +204 s.
    let mut capture = String::new();
    brute_force(&mut capture, "203.0.113.1", 0, 2, 3, 100);
    brute_force(&mut capture, "203.0.113.1", 100, 2, 3, 200);
    brute_force(&mut capture, "203.0.113.2", 200, 2, 3, 300);
    brute_force(&mut capture, "203.0.113.1", 300, 2, 3, 400);
    let run = replay(dir.path(), &capture);
    assert_has(&run.stderr, "submitted=3 delivered=3 retries=0 dead=0");
    let exceeded = |host: &str, first: &str, at: &str| {
        serde_json::json!({
            "module": "OpenSSH",
            "kind": "SSHDAttemptsExceeded",
            "severity": "error",
            "time": format!("2023-02-20T15:{at}Z"),
            "summary": format!("Host {host} reached 3 failed passwords within 300 seconds"),
            "fields": {
                "host": host,
                "count": 3,
                "window": 300,
                "users": "root",
                "servers": "server",
                "first": format!("2023-02-20T15:{first}Z"),
                "last": format!("2023-02-20T15:{at}Z"),
            },
        })
    };
    assert_eq!(
        accepted_bodies(&sink),
        [
            // Each attacker once, as its event, after the group's wait
            // (which the records' time measures);
            exceeded("203.0.113.1", "00:00", "00:04"),
            exceeded("203.0.113.2", "03:20", "03:24"),
            // the first one's two repeats in one reminder at the end.
            serde_json::json!({
                "module": "OpenSSH",
                "kind": "Digest",
                "severity": "error",
                "time": "2023-02-20T15:05:04Z",
                "summary": "2 repeats of events already sent for host=\"203.0.113.1\"\n- latest repeat: SSHDAttemptsExceeded: Host 203.0.113.1 reached 3 failed passwords within 300 seconds",
                "fields": {
                    "reason": "repeat",
                    "group": "host=\"203.0.113.1\"",
                    "events": 0,
                    "repeats": 2,
                    "first": "2023-02-20T15:05:04Z",
                    "kinds": "SSHDAttemptsExceeded",
                    "host": "203.0.113.1",
                },
            }),
        ]
    );
}

#[test]
fn the_rate_limit_holds_back_and_sends_one_digest_instead_of_dropping() {
    let sink = HttpSink::start("200");
    let dir = app_dir(&notify_app(
        sink.port,
        r#"event.kind == "SSHDLoginFailed""#,
        "rate_limit = { messages = 2, per_s = 3600 }",
    ));
    let mut capture = String::new();
    brute_force(&mut capture, "203.0.113.1", 0, 2, 3, 100);
    brute_force(&mut capture, "203.0.113.2", 10, 2, 2, 200);
    let run = replay(dir.path(), &capture);
    assert_has(&run.stderr, "submitted=3 delivered=3 retries=0 dead=0");
    let bodies = accepted_bodies(&sink);
    let summaries: Vec<&str> = bodies
        .iter()
        .map(|body| body["summary"].as_str().unwrap_or(""))
        .collect();
    let failed = |host: &str, port: u32| {
        format!("User root from host {host} port {port} failed to log in after 1 failed password")
    };
    assert_eq!(
        summaries,
        [
            failed("203.0.113.1", 40_000),
            failed("203.0.113.1", 40_001),
            format!(
                "3 messages (3 events) held back by the rate limit of 2 messages per 3600 s\n- SSHDLoginFailed: {}\n- SSHDLoginFailed: {}\n- SSHDLoginFailed: {}",
                failed("203.0.113.1", 40_002),
                failed("203.0.113.2", 40_000),
                failed("203.0.113.2", 40_001),
            ),
        ]
    );
    assert_eq!(bodies[2]["kind"], "Digest");
    assert_eq!(bodies[2]["fields"]["reason"], "rate-limit");
    assert_eq!(bodies[2]["fields"]["events"], 3);
    assert_eq!(bodies[2]["fields"]["first"], "2023-02-20T15:00:04Z");
    assert_eq!(bodies[2]["time"], "2023-02-20T15:00:12Z");
}

#[test]
fn a_notify_policy_that_will_not_do_is_refused_where_it_is_written() {
    let dir = app_dir(&notify_app(9, "true", "group_wait_s = 5"));
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_has(
        &run.stderr,
        "app.toml line 10 column 10: handler \"hook\": notify: group_wait_s, group_interval_s and repeat_interval_s need group_by (group_by = [] puts every event in one group)",
    );
    let dir = app_dir(&notify_app(
        9,
        "true",
        "group_by = [\"host\"], group_wiat_s = 5",
    ));
    let run = correlator(dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_has(&run.stderr, "unknown field `group_wiat_s`");
}

#[test]
fn events_logged_as_json_go_through_run_events_again_unchanged() {
    // The events of the sample capture, as the JSON log handler writes them.
    let logged = replay_json(
        SSHD_JSON_APP,
        &std::fs::read_to_string(sample_capture()).expect("sample"),
        &["state.enabled=false", "parser.rfc3164_year=2023"],
    );
    assert_eq!(logged.len(), 4);
    let mut lines: String = logged.iter().map(|event| format!("{event}\n")).collect();
    // A line that is no event is passed over, naming its line and why.
    lines.push_str("{\"time\":\"2023-02-20T15:15:00Z\",\"module\":\"OpenSSH\",\"kind\":\"SSHDLoginFailed\",\"fields\":{\"user\":\"x\"}}\n");
    let dir = app_dir(SSHD_JSON_APP);
    std::fs::write(dir.path().join("events.jsonl"), &lines).expect("write");
    let run = correlator(
        dir.path(),
        &[
            "run",
            "--app",
            "app.toml",
            "--events",
            "events.jsonl",
            "-o",
            "state.enabled=false",
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // Typed by the module's declarations, each event is written again as
    // it was: times with their offsets, floats, integers.
    assert_eq!(json_lines(&run.stdout), logged);
    assert_has(
        &run.stderr,
        "line 5 is not an event, passed over: no field \"addr\" (SSHDLoginFailed declares it)",
    );
    assert_has(&run.stderr, "events=4 refused=1 delivered=4");
    // A file with no event at all is an error.
    std::fs::write(dir.path().join("none.jsonl"), "not json\n").expect("write");
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--events", "none.jsonl"],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_has(
        &run.stderr,
        "error: no line of none.jsonl is an event (1 refused; the first are logged above with why)",
    );
}
