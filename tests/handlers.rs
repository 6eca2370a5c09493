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
    std::fs::write(dir.join("input.cap"), capture).expect("write capture");
    let run = correlator(
        dir,
        &[
            "run",
            "--app",
            "app.toml",
            "--read-file",
            "input.cap",
            "-o",
            "state.enabled=false",
        ],
    );
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
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("firewall"))
        .expect("granted directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["blocklist.txt", "blocklist.txt.state"]);
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
    std::fs::write(dir.path().join("input.cap"), &capture).expect("write capture");
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
        let run = correlator(
            dir.path(),
            &[
                "run",
                "--app",
                "app.toml",
                "--read-file",
                "input.cap",
                "-o",
                "state.enabled=false",
            ],
        );
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
