//! The network front-end, end to end: the real binary listening on
//! 127.0.0.1 (ports chosen by the kernel and read from its log), real
//! senders (util-linux `logger`, rsyslog, a TLS client) and hand-made
//! streams for the framing's corner cases.

mod common;

use common::relp::RelpClient;
use common::*;
use serde_json::Value;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for something that should take well under a
/// second; only reached when the test is failing.
const PATIENCE: Duration = Duration::from_secs(120);

/// `correlator run` listening in a scratch directory.
struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Server {
    /// Start `app` listening on TCP (and whatever `args` add) on ports the
    /// kernel picks; return once it says where it listens.
    fn start(app: &str, args: &[&str]) -> Server {
        let dir = app_dir(app);
        Self::start_in(dir, args)
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Server {
        Self::launch(dir, Self::command(args))
    }

    /// `correlator run` of the directory's `app.toml` with `args`.
    fn command(args: &[&str]) -> Command {
        let mut command = correlator_command();
        command
            .args(["run", "--app", "app.toml", "-o", "listen.tcp=127.0.0.1:0"])
            .args(args);
        command
    }

    /// Run `command` in `dir`, its output in files there; return once the
    /// server says where it listens.
    fn launch(dir: tempfile::TempDir, mut command: Command) -> Server {
        let stdout = std::fs::File::create(dir.path().join("stdout.txt")).expect("stdout file");
        let stderr = std::fs::File::create(dir.path().join("stderr.txt")).expect("stderr file");
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("the server starts");
        let mut server = Server {
            child: Some(child),
            dir,
        };
        server.wait_until("it listens", |server| {
            server.stderr().contains("listening for syslog over TCP on")
        });
        server
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr.txt")).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.path("stdout.txt")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Where it listens for `kind` (TCP, UDP or TLS), from its log.
    fn address(&self, kind: &str) -> SocketAddr {
        let marker = format!("listening for syslog over {kind} on ");
        let stderr = self.stderr();
        let line = stderr
            .lines()
            .find_map(|line| line.split_once(&marker).map(|(_, address)| address))
            .unwrap_or_else(|| panic!("no {kind} address in:\n{stderr}"));
        line.trim().parse().expect("an address")
    }

    /// Poll until `done`, failing the test (with the server's log) if it
    /// exits first or `PATIENCE` runs out.
    fn wait_until(&mut self, what: &str, done: impl Fn(&Server) -> bool) {
        let started = Instant::now();
        loop {
            if done(self) {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the server exited ({status}) while waiting until {what}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                started.elapsed() < PATIENCE,
                "gave up waiting until {what}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until standard output holds `count` lines.
    fn wait_for_lines(&mut self, count: usize) {
        self.wait_until(&format!("{count} lines are out"), |server| {
            server.stdout().lines().count() >= count
        });
    }

    /// Send SIGTERM and wait for the exit; the directory stays.
    fn stop(&mut self) -> Run {
        signal(self.pid(), "TERM");
        self.wait_for_exit()
    }

    /// Wait for the exit (after a signal was sent); the directory stays.
    fn wait_for_exit(&mut self) -> Run {
        let started = Instant::now();
        let mut child = self.child.take().expect("running");
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("no exit after SIGTERM:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The `fields.message` of every Notice, sorted (connections race).
fn notice_messages(events: &[Value]) -> Vec<String> {
    let mut messages: Vec<String> = of_kind(events, "Notice")
        .iter()
        .map(|event| event["fields"]["message"].as_str().unwrap_or("").to_owned())
        .collect();
    messages.sort();
    messages
}

/// The value of `name=` in the last log line that has `marker`.
fn logged_count(stderr: &str, marker: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|line| line.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in:\n{stderr}"));
    let key = format!(" {name}=");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number in {line}"))
}

/// util-linux's logger must be installed (the test script installs it): a
/// test that needs it fails without it.
fn require_logger() {
    let found = Command::new("logger")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "util-linux `logger` is not installed (apt-get install bsdutils; ./test.sh does)"
    );
}

fn run_logger(args: &[&str]) {
    let output = Command::new("logger")
        .args(args)
        .output()
        .expect("logger runs");
    assert!(
        output.status.success(),
        "logger {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn logger_messages_over_tcp_and_udp_in_both_formats_arrive_exactly_once_with_their_sender() {
    require_logger();
    let mut server = Server::start(REPORT_APP, &["-o", "listen.udp=127.0.0.1:0"]);
    let tcp = server.address("TCP");
    let udp = server.address("UDP");
    let (tcp_port, udp_port) = (tcp.port().to_string(), udp.port().to_string());
    let variants: [(&str, &[&str]); 5] = [
        ("tcp-5424", &["--tcp", "--rfc5424", "-P", &tcp_port]),
        ("tcp-3164", &["--tcp", "--rfc3164", "-P", &tcp_port]),
        (
            "tcp-octet",
            &["--tcp", "--octet-count", "--rfc5424", "-P", &tcp_port],
        ),
        ("udp-5424", &["--udp", "--rfc5424", "-P", &udp_port]),
        ("udp-3164", &["--udp", "--rfc3164", "-P", &udp_port]),
    ];
    let mut expected = Vec::new();
    for (name, args) in variants {
        for n in 1..=3 {
            let message = format!("message {n} via {name}");
            let mut all = vec!["-n", "127.0.0.1", "-t", "testtag"];
            all.extend_from_slice(args);
            all.push(&message);
            run_logger(&all);
            expected.push(message);
        }
    }
    expected.sort();
    server.wait_for_lines(expected.len());
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    assert_eq!(notice_messages(&events), expected);
    for notice in of_kind(&events, "Notice") {
        assert_eq!(notice["fields"]["program"], "testtag", "{notice}");
        let peer = notice["fields"]["peer"].as_str().unwrap_or("");
        assert!(peer.starts_with("127.0.0.1:"), "peer of {notice}");
    }
    let stats = of_kind(&events, "ReportStats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0]["fields"]["records"], 15);
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "messages"),
        15
    );
}

/// An RFC 5424 record with `message`, as a sender would frame it itself.
fn record(message: &str) -> String {
    format!("<13>1 2026-11-27T10:00:00Z host app - - - {message}")
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

#[test]
fn framing_corner_cases_on_connections_at_once() {
    let mut server = Server::start(
        REPORT_APP,
        &[
            "-o",
            "listen.max_message_bytes=512",
            "-o",
            "listen.report_interval_s=0",
        ],
    );
    let address = server.address("TCP");
    let long = "x".repeat(2000);
    let long_record = record(&format!("long {long}"));
    let senders: Vec<std::thread::JoinHandle<()>> = vec![
        // Trailer framing, with and without CR.
        std::thread::spawn(move || {
            let mut stream = connect(address);
            let text = format!("{}\n{}\r\n", record("lf one"), record("lf two"));
            stream.write_all(text.as_bytes()).expect("write");
        }),
        // Octet counting with line breaks inside the message.
        std::thread::spawn(move || {
            let mut stream = connect(address);
            let message = record("octet\nsecond line\nthird");
            let text = format!("{} {message}", message.len());
            stream.write_all(text.as_bytes()).expect("write");
        }),
        // Longer than the maximum: truncated to 512 bytes, and counted.
        {
            let text = format!("{long_record}\n");
            std::thread::spawn(move || {
                let mut stream = connect(address);
                stream.write_all(text.as_bytes()).expect("write");
            })
        },
        // Garbage: not a record, counted; the connection goes on.
        std::thread::spawn(move || {
            let mut stream = connect(address);
            stream
                .write_all(b"\x01\x02garbage \xff\xfe\n")
                .expect("write");
            stream
                .write_all(format!("{}\n", record("after garbage")).as_bytes())
                .expect("write");
        }),
        // A slow sender: one byte at a time.
        std::thread::spawn(move || {
            let mut stream = connect(address);
            let text = format!("{}\n", record("slow, one byte at a time"));
            for byte in text.as_bytes() {
                stream.write_all(&[*byte]).expect("write");
                std::thread::sleep(Duration::from_millis(2));
            }
        }),
        // Dropped mid-frame: the octet-counted frame is lost and counted;
        // a trailer frame without its trailer is a whole message.
        std::thread::spawn(move || {
            let mut stream = connect(address);
            let text = format!("{}\n100 {}", record("before the cut"), record("cut"));
            stream.write_all(text.as_bytes()).expect("write");
        }),
        std::thread::spawn(move || {
            let mut stream = connect(address);
            let text = record("no trailer at the end");
            stream.write_all(text.as_bytes()).expect("write");
        }),
    ];
    for sender in senders {
        sender.join().expect("sender");
    }
    let truncated_message = long_record[record("").len()..512].to_owned();
    let mut expected: Vec<String> = [
        "lf one",
        "lf two",
        "octet\nsecond line\nthird",
        "after garbage",
        "slow, one byte at a time",
        "before the cut",
        "no trailer at the end",
    ]
    .iter()
    .map(|m| (*m).to_owned())
    .chain([truncated_message])
    .collect();
    expected.sort();
    server.wait_for_lines(expected.len());
    // Every connection has ended; the server has counted the cut one.
    server.wait_until("the connections are closed", |server| {
        std::fs::read_to_string(server.path("stderr.txt"))
            .unwrap_or_default()
            .contains("connection ended inside an octet-counted message")
    });
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    assert_eq!(notice_messages(&events), expected);
    let count = |name| logged_count(&run.stderr, "listener stopped", name);
    assert_eq!(count("messages"), 9);
    assert_eq!(count("truncated"), 1);
    assert_eq!(count("incomplete"), 1);
    assert_eq!(count("connections"), 7);
    assert_eq!(
        logged_count(
            &run.stderr,
            "every received message processed",
            "unparsable"
        ),
        1
    );
    assert_has(&run.stderr, "not a syslog record, skipped");
}

#[test]
fn oversized_messages_are_dropped_when_configured_and_counted() {
    let mut server = Server::start(
        REPORT_APP,
        &[
            "-o",
            "listen.max_message_bytes=512",
            "-o",
            "listen.oversize=drop",
            "-o",
            "listen.udp=127.0.0.1:0",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let tcp = server.address("TCP");
    let udp = server.address("UDP");
    let long = record(&"y".repeat(1000));
    let mut stream = connect(tcp);
    let text = format!("{long}\n{}\n{} {long}", record("kept"), long.len());
    stream.write_all(text.as_bytes()).expect("write");
    drop(stream);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket.send_to(long.as_bytes(), udp).expect("send");
    socket
        .send_to(record("kept too").as_bytes(), udp)
        .expect("send");
    server.wait_for_lines(2);
    server.wait_until("three drops are counted", |server| {
        server.stderr().contains("dropped_oversize=3")
    });
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        notice_messages(&json_lines(&run.stdout)),
        ["kept", "kept too"]
    );
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "dropped_oversize"),
        3
    );
}

/// Wait until the periodic count line says at least `count` messages.
fn wait_for_messages(server: &mut Server, count: u64) {
    server.wait_until(&format!("{count} messages are received"), |server| {
        server
            .stderr()
            .lines()
            .rev()
            .find(|line| line.contains("listener counts so far"))
            .is_some_and(|line| logged_count(line, "listener counts so far", "messages") >= count)
    });
}

#[test]
fn records_received_and_written_to_a_capture_replay_to_the_same_events() {
    let mut server = Server::start(
        SSHD_JSON_APP,
        &[
            "--write-file",
            "received.cap",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let address = server.address("TCP");
    let sample = std::fs::read_to_string(sample_capture()).expect("sample capture");
    // One connection, so that order is kept; framings alternate, and one
    // message has line breaks (a capture entry a line cannot hold).
    let mut stream = connect(address);
    let mut sent = String::new();
    for (index, line) in sample.lines().enumerate() {
        if index % 2 == 0 {
            sent.push_str(&format!("{line}\n"));
        } else {
            sent.push_str(&format!("{} {line}", line.len()));
        }
    }
    // On the sample's day: a replay gives the ticks of the record time it
    // crosses (a midnight would give statistics), the listener those of
    // the wall clock.
    let multi_line =
        "<13>1 2023-02-20T20:15:00Z host app - - - a message\nwith two line breaks\nin it";
    sent.push_str(&format!("{} {multi_line}", multi_line.len()));
    stream.write_all(sent.as_bytes()).expect("write");
    drop(stream);
    let total = sample.lines().count() as u64 + 1;
    wait_for_messages(&mut server, total);
    let listened = server.stop();
    assert_eq!(listened.code, Some(0), "{}", listened.stderr);
    let events = json_lines(&listened.stdout);
    assert_eq!(
        events
            .iter()
            .map(|event| event["kind"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        [
            "SSHDLoginSucceeded",
            "SSHDLoginSucceeded",
            "SSHDLoginFailed",
            "SSHDStats"
        ]
    );

    let dir = app_dir(SSHD_JSON_APP);
    let capture =
        std::fs::read_to_string(server.path("received.cap")).expect("the capture was written");
    assert_eq!(
        capture,
        format!("{sample}{} {multi_line}\n", multi_line.len())
    );
    std::fs::write(dir.path().join("received.cap"), &capture).expect("copy capture");
    let replayed = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "--read-file", "received.cap"],
    );
    assert_eq!(replayed.code, Some(0), "{}", replayed.stderr);
    assert_eq!(replayed.stdout, listened.stdout);
    assert_has(&replayed.stderr, &format!("records={total}"));
}

/// The report module, every notice to a handler that is slow on purpose,
/// and only the statistics to standard output.
fn slow_app(spin: u64) -> String {
    let guest = env!("CORRELATOR_TEST_GUEST_HOSTILE_HANDLER");
    format!(
        "[modules.Report]\ncomponent = 'builtin:report'\n\
         [handlers.slow]\ncomponent = '{guest}'\nfilter = 'event.kind == \"Notice\"'\n\
         config = {{ attack = \"slow\", spin = {spin} }}\nlimits = {{ call_timeout_ms = 60000 }}\n\
         [handlers.console]\ncomponent = 'builtin:log'\nfilter = 'event.kind == \"ReportStats\"'\n\
         config = {{ format = \"json\" }}\n"
    )
}

/// Write numbered records `m1`, `m2`, ... until `limit` or until the
/// server closes the connection; returns how many were written whole.
fn send_numbered(address: SocketAddr, limit: u64, padding: usize) -> u64 {
    let mut stream = std::io::BufWriter::with_capacity(64 * 1024, connect(address));
    let pad = "p".repeat(padding);
    for n in 1..=limit {
        if stream
            .write_all(format!("{}\n", record(&format!("m{n} {pad}"))).as_bytes())
            .is_err()
        {
            return n - 1;
        }
    }
    if stream.flush().is_err() {
        return 0;
    }
    limit
}

#[test]
fn sigterm_during_a_stream_loses_nothing_that_was_received() {
    let mut server = Server::start(
        &slow_app(2_000),
        &[
            "--write-file",
            "received.cap",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let address = server.address("TCP");
    let sender = std::thread::spawn(move || send_numbered(address, 100_000_000, 0));
    wait_for_messages(&mut server, 20_000);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let sent = sender.join().expect("sender");
    let received = logged_count(&run.stderr, "listener stopped", "messages");
    assert!(received >= 20_000, "received {received}");
    // The sender was still going: the server stopped while it streamed.
    assert!(sent < 100_000_000);
    // Every message received went through the module...
    let events = json_lines(&run.stdout);
    let stats = of_kind(&events, "ReportStats");
    assert_eq!(stats.len(), 1, "{}", run.stdout);
    assert_eq!(stats[0]["fields"]["records"], received);
    // ... and they are the first ones sent, in order, with no gap.
    let capture = std::fs::read_to_string(server.path("received.cap")).expect("capture");
    let mut count = 0u64;
    for (index, line) in capture.lines().enumerate() {
        let expected = record(&format!("m{} ", index + 1));
        assert_eq!(line, expected, "entry {}", index + 1);
        count += 1;
    }
    assert_eq!(count, received);
    assert_has(&run.stderr, "SIGTERM: no longer accepting");
}

/// Resident memory now (`VmRSS:`) or at its peak (`VmHWM:`), from /proc.
fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_slow_handler_holds_senders_back_with_bounded_memory_and_everything_is_processed() {
    const MESSAGES: u64 = 400_000;
    const PADDING: usize = 1_500;
    // The stream is about 620 MB and the handler takes seconds over it; the
    // server may hold only a small part at any time: its queues, batches
    // and events in flight (and the allocator's slack) come to some 70 MB
    // for messages this long, whatever the length of the stream.
    const GROWTH_BOUND_KIB: u64 = 150 * 1024;
    let mut server = Server::start(&slow_app(10_000), &["-o", "listen.report_interval_s=1"]);
    let address = server.address("TCP");
    // What start-up left resident (more when components were compiled)
    // is not what is measured: reset the peak to what is resident now.
    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").expect("reset VmHWM");
    let baseline = rss_kib(server.pid(), "VmRSS:");
    let senders: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || send_numbered(address, MESSAGES / 4, PADDING)))
        .collect();
    let pid = server.pid();
    server.wait_until("every message is received", |server| {
        let received = server
            .stderr()
            .lines()
            .rev()
            .find(|line| line.contains("listener counts so far"))
            .map(|line| logged_count(line, "listener counts so far", "messages"));
        received == Some(MESSAGES)
    });
    let peak = rss_kib(pid, "VmHWM:");
    eprintln!("resident memory: {baseline} KiB before the load, {peak} KiB at its peak");
    for sender in senders {
        assert_eq!(sender.join().expect("sender"), MESSAGES / 4);
    }
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(peak > 0 && baseline > 0, "no resident memory read");
    assert!(
        peak - baseline.min(peak) < GROWTH_BOUND_KIB,
        "resident memory grew from {baseline} KiB to {peak} KiB, more than {GROWTH_BOUND_KIB} KiB"
    );
    let events = json_lines(&run.stdout);
    let stats = of_kind(&events, "ReportStats");
    assert_eq!(stats[0]["fields"]["records"], MESSAGES);
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "messages"),
        MESSAGES
    );
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "incomplete"),
        0
    );
}

/// A CA, a server certificate for localhost signed by it, a client
/// certificate signed by it and one signed by a stranger, as PEM files in
/// `dir`.
fn make_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let authority = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
    };
    let ca = authority("test CA");
    let stranger = authority("stranger CA");
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write PEM");
    write("ca.pem", ca.pem());
    for (name, names, issuer) in [
        ("server", vec!["localhost".to_owned()], &ca),
        ("client", vec!["client.test".to_owned()], &ca),
        ("stranger", vec!["stranger.test".to_owned()], &stranger),
    ] {
        let key = KeyPair::generate().expect("key");
        let certificate = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, issuer)
            .expect("certificate");
        write(&format!("{name}.pem"), certificate.pem());
        write(&format!("{name}.key"), key.serialize_pem());
    }
}

/// Send `messages` octet-counted over TLS (RFC 5425) as `identity` (a
/// certificate and key in `dir`, or none); the error if the server refuses.
fn send_tls(
    address: SocketAddr,
    dir: &std::path::Path,
    identity: Option<&str>,
    messages: &[String],
) -> Result<(), String> {
    let mut stream = tls_client(address, dir, identity);
    let mut text = String::new();
    for message in messages {
        text.push_str(&format!("{} {message}", message.len()));
    }
    stream
        .write_all(text.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|error| error.to_string())?;
    stream.conn.send_close_notify();
    stream.flush().map_err(|error| error.to_string())?;
    // The server's answer: its close, or the alert that refuses us.
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut stream, &mut rest) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

/// A TLS connection to `address` trusting the CA in `dir`, as `identity`
/// (a certificate and key in `dir`, or none); the handshake happens at the
/// first write.
fn tls_client(
    address: SocketAddr,
    dir: &std::path::Path,
    identity: Option<&str>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca.pem") {
        roots.add(certificate.expect("CA")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(name) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                    .expect("certificate")
                    .map(|c| c.expect("certificate"))
                    .collect(),
                PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).expect("key"),
            )
            .expect("client auth"),
    };
    let server_name = ServerName::try_from("localhost").expect("name");
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), server_name)
        .expect("client connection");
    rustls::StreamOwned::new(connection, connect(address))
}

#[test]
fn tls_with_client_certificates_takes_the_trusted_and_refuses_the_rest() {
    let dir = app_dir(REPORT_APP);
    make_pki(dir.path());
    let mut server = Server::start_in(
        dir,
        &[
            "-o",
            "listen.tls=127.0.0.1:0",
            "-o",
            "listen.tls_certificate=server.pem",
            "-o",
            "listen.tls_key=server.key",
            "-o",
            "listen.tls_client_ca=ca.pem",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let address = server.address("TLS");
    let trusted: Vec<String> = (1..=3)
        .map(|n| record(&format!("over TLS {n}\nwith a line break")))
        .collect();
    send_tls(address, server.dir.path(), Some("client"), &trusted).expect("trusted client");
    let refused = [record("from a stranger")];
    let stranger = send_tls(address, server.dir.path(), Some("stranger"), &refused);
    assert!(stranger.is_err(), "a stranger's certificate was taken");
    let anonymous = send_tls(address, server.dir.path(), None, &refused);
    assert!(
        anonymous.is_err(),
        "a client without a certificate was taken"
    );
    server.wait_for_lines(3);
    server.wait_until("both refusals are counted", |server| {
        server.stderr().contains("tls_failures=2")
    });
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    assert_eq!(
        notice_messages(&events),
        (1..=3)
            .map(|n| format!("over TLS {n}\nwith a line break"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "tls_failures"),
        2
    );
    assert_has(&run.stderr, "TLS handshake failed");
}

#[test]
fn tls_settings_are_checked_before_anything_runs() {
    let dir = app_dir(REPORT_APP);
    make_pki(dir.path());
    let check = |options: &[&str]| {
        let mut args = vec!["check", "--app", "app.toml"];
        for option in options {
            args.extend(["-o", option]);
        }
        correlator(dir.path(), &args)
    };
    let run = check(&["listen.tls=127.0.0.1:6514"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "error: listen.tls or listen.relp_tls is set: listen.tls_certificate and listen.tls_key must name PEM files\n"
    );
    let run = check(&[
        "listen.tls=127.0.0.1:6514",
        "listen.tls_certificate=missing.pem",
        "listen.tls_key=server.key",
    ]);
    assert_eq!(run.code, Some(1));
    assert_has(
        &run.stderr,
        "error: listen.tls_certificate: cannot read certificates from missing.pem:",
    );
    let run = check(&[
        "listen.tls=127.0.0.1:6514",
        "listen.tls_certificate=server.pem",
        "listen.tls_key=client.key",
    ]);
    assert_eq!(run.code, Some(1));
    assert_has(
        &run.stderr,
        "error: listen.tls_certificate and listen.tls_key do not make a usable pair",
    );
    let run = check(&[
        "listen.tls=127.0.0.1:6514",
        "listen.tls_certificate=server.pem",
        "listen.tls_key=server.key",
        "listen.tls_client_ca=ca.pem",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn listener_settings_and_bind_failures_name_the_item() {
    let dir = app_dir(REPORT_APP);
    let run = correlator(
        dir.path(),
        &[
            "run",
            "--app",
            "app.toml",
            "-o",
            "listen.tcp=localhost:5140",
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_has(
        &run.stderr,
        "error: listen.tcp: \"localhost:5140\" is not IP:PORT (e.g. 127.0.0.1:5140 or [::1]:5140)\n",
    );
    for (option, message) in [
        (
            "listen.oversize=chop",
            "error: listen.oversize must be \"truncate\" or \"drop\", not \"chop\"\n",
        ),
        (
            "listen.trailer=cr",
            "error: listen.trailer must be \"lf\" or \"nul\", not \"cr\"\n",
        ),
        (
            "listen.max_message_bytes=100",
            "error: listen.max_message_bytes must be between 480 (RFC 5426's minimum) and 16777216, not 100\n",
        ),
    ] {
        let run = correlator(dir.path(), &["check", "--app", "app.toml", "-o", option]);
        assert_eq!(run.code, Some(1), "{option}");
        assert_eq!(run.stderr, message);
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address");
    let run = correlator(
        dir.path(),
        &[
            "run",
            "--app",
            "app.toml",
            "-o",
            &format!("listen.tcp={address}"),
        ],
    );
    assert_eq!(run.code, Some(1));
    assert_has(
        &run.stderr,
        &format!("error: listen.tcp: cannot listen on {address}: Address already in use"),
    );
    let run = correlator(
        dir.path(),
        &["run", "--app", "app.toml", "-o", "listen.tcp="],
    );
    assert_eq!(run.code, Some(1));
    assert_has(
        &run.stderr,
        "error: nothing to listen on: listen.tcp, listen.udp, listen.tls, listen.relp and listen.relp_tls are all empty",
    );
}

#[test]
fn connections_past_the_limit_and_idle_ones_are_closed_and_counted() {
    let mut server = Server::start(
        REPORT_APP,
        &[
            "-o",
            "listen.max_connections=2",
            "-o",
            "listen.idle_timeout_s=1",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let address = server.address("TCP");
    let mut first = connect(address);
    let mut second = connect(address);
    first
        .write_all(format!("{}\n", record("first")).as_bytes())
        .expect("write");
    second
        .write_all(format!("{}\n", record("second")).as_bytes())
        .expect("write");
    server.wait_for_lines(2);
    // A third is closed at once: reading gives the end of the stream.
    let mut third = connect(address);
    third
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut buffer = [0u8; 16];
    let read = std::io::Read::read(&mut third, &mut buffer);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the third connection was served: {read:?}"
    );
    // The first two say nothing more and are closed for it.
    for stream in [&mut first, &mut second] {
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let read = std::io::Read::read(stream, &mut buffer);
        assert!(matches!(read, Ok(0)), "an idle connection stayed: {read:?}");
    }
    // Room again: a new connection is served.
    let mut fourth = connect(address);
    fourth
        .write_all(format!("{}\n", record("fourth")).as_bytes())
        .expect("write");
    drop(fourth);
    server.wait_for_lines(3);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        notice_messages(&json_lines(&run.stdout)),
        ["first", "fourth", "second"]
    );
    let count = |name| logged_count(&run.stderr, "listener stopped", name);
    assert_eq!(count("refused_connections"), 1);
    assert_eq!(count("idle_closed"), 2);
    assert_eq!(count("connections"), 3);
}

#[test]
fn a_second_signal_exits_at_once() {
    // A handler slow enough that the first signal's drain takes long.
    let mut server = Server::start(&slow_app(2_000_000), &["-o", "listen.report_interval_s=1"]);
    let address = server.address("TCP");
    let sender = std::thread::spawn(move || send_numbered(address, 5_000, 0));
    wait_for_messages(&mut server, 5_000);
    signal(server.pid(), "INT");
    server.wait_until("the first signal is taken", |server| {
        server.stderr().contains("SIGINT: no longer accepting")
    });
    let run = server.stop();
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert_has(
        &run.stderr,
        "correlator: second SIGTERM: exiting at once; events in flight are lost",
    );
    assert_eq!(sender.join().expect("sender"), 5_000);
}

/// rsyslogd in a scratch directory, taking messages on a Unix socket of
/// its own (no port to pick) and doing what the given actions say; killed
/// when dropped.
struct Rsyslog {
    daemon: Child,
    socket: PathBuf,
    _work: tempfile::TempDir,
}

impl Rsyslog {
    fn start(actions: &str) -> Rsyslog {
        let rsyslogd = rsyslogd();
        require_logger();
        let work = tempfile::tempdir().expect("temp dir");
        let socket = work.path().join("in.sock");
        let config = format!(
            "global(workDirectory=\"{work}\")\n\
             module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
             input(type=\"imuxsock\" Socket=\"{socket}\" RateLimit.Interval=\"0\")\n\
             {actions}",
            work = work.path().display(),
            socket = socket.display(),
        );
        std::fs::write(work.path().join("rsyslog.conf"), config).expect("config");
        let daemon = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(work.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(work.path().join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd starts");
        let started = Instant::now();
        while !socket.exists() {
            assert!(started.elapsed() < PATIENCE, "rsyslogd made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Rsyslog {
            daemon,
            socket,
            _work: work,
        }
    }

    /// Log every line of `lines` through rsyslog with `logger`, as `tag`.
    fn log(&self, tag: &str, lines: &str) {
        let mut logger = Command::new("logger")
            .arg("-u")
            .arg(&self.socket)
            .args(["-t", tag])
            .stdin(Stdio::piped())
            .spawn()
            .expect("logger runs");
        logger
            .stdin
            .take()
            .expect("stdin")
            .write_all(lines.as_bytes())
            .expect("feed logger");
        assert!(logger.wait().expect("logger").success());
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// rsyslog's daemon, which must be installed (the test script installs
/// it): a test that needs it fails without it.
fn rsyslogd() -> PathBuf {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("rsyslogd is not installed (apt-get install rsyslog; ./test.sh does)")
}

#[test]
fn rsyslog_forwarding_in_syslog_protocol_format_delivers_every_message_once() {
    const MESSAGES: usize = 2_000;
    let mut server = Server::start(REPORT_APP, &[]);
    let port = server.address("TCP").port();
    // rsyslog forwards to us octet-counted in RFC 5424.
    let rsyslog = Rsyslog::start(&format!(
        "*.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{port}\" protocol=\"tcp\" \
         TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\")\n"
    ));
    let lines: String = (1..=MESSAGES)
        .map(|n| format!("forwarded message {n} with some words\n"))
        .collect();
    rsyslog.log("viarsyslog", &lines);
    server.wait_for_lines(MESSAGES);
    drop(rsyslog);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    // rsyslog keeps the space after the tag's colon in %msg%.
    let mut messages: Vec<String> = notice_messages(&events)
        .into_iter()
        .map(|message| message.trim_start().to_owned())
        .collect();
    messages.sort();
    let mut expected: Vec<String> = lines.lines().map(str::to_owned).collect();
    expected.sort();
    assert_eq!(messages, expected);
    for notice in of_kind(&events, "Notice") {
        assert_eq!(notice["fields"]["program"], "viarsyslog");
    }
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "messages"),
        MESSAGES as u64
    );
}

#[test]
fn write_file_without_a_name_writes_todays_capture_and_moves_older_ones_aside() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run_dir = format!("system.run_dir={}", runs.path().display());
    for round in 1..=3 {
        let mut server = Server::start(REPORT_APP, &["--write-file", "-o", &run_dir]);
        let mut stream = connect(server.address("TCP"));
        stream
            .write_all(format!("{}\n", record(&format!("round {round}"))).as_bytes())
            .expect("write");
        drop(stream);
        server.wait_for_lines(1);
        let run = server.stop();
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    let today = Command::new("date")
        .args(["-u", "+%Y%m%d"])
        .output()
        .expect("date");
    let today = String::from_utf8_lossy(&today.stdout).trim().to_owned();
    let read = |name: String| std::fs::read_to_string(runs.path().join(name)).unwrap_or_default();
    assert_eq!(
        read(format!("{today}.cap")),
        format!("{}\n", record("round 3"))
    );
    assert_eq!(
        read(format!("{today}_1.cap")),
        format!("{}\n", record("round 2"))
    );
    assert_eq!(
        read(format!("{today}_2.cap")),
        format!("{}\n", record("round 1"))
    );
}

#[test]
fn an_instance_that_aborts_the_run_stops_the_listener_too() {
    let app = format!(
        "[modules.bad]\ncomponent = '{}'\nconfig = {{ attack = \"poison\" }}\non_failure = \"abort\"\n\
         [handlers.console]\ncomponent = \"builtin:log\"\n",
        env!("CORRELATOR_TEST_GUEST_HOSTILE")
    );
    let mut server = Server::start(&app, &[]);
    let mut stream = connect(server.address("TCP"));
    stream
        .write_all(format!("{}\n{}\n", record("fine"), record("POISON")).as_bytes())
        .expect("write");
    // The connection stays open: the run must end anyway.
    let mut child = server.child.take().expect("running");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the run did not end:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    assert_has(
        &server.stderr(),
        "error: instance \"bad\" failed and its on_failure policy is abort: trapped on unreachable code (a panic or an abort)\n",
    );
    drop(stream);
}

#[test]
fn out_of_file_descriptors_accepting_is_logged_and_the_server_goes_on() {
    // Room for start-up and a few connections only.
    let correlator = Server::command(&["-o", "listen.report_interval_s=1"]);
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -n 24 && exec \"$@\"", "sh"])
        .arg(correlator.get_program())
        .args(correlator.get_args())
        .envs(
            correlator
                .get_envs()
                .filter_map(|(key, value)| Some((key, value?))),
        );
    let mut server = Server::launch(app_dir(REPORT_APP), command);
    let address = server.address("TCP");
    // More connections than descriptors: the kernel queues the rest until
    // the server can accept them.
    let mut streams: Vec<TcpStream> = (0..20)
        .map(|n| {
            let mut stream = connect(address);
            stream
                .write_all(format!("{}\n", record(&format!("connection {n}"))).as_bytes())
                .expect("write");
            stream
        })
        .collect();
    server.wait_until("accepting fails", |server| {
        server.stderr().contains("cannot accept a connection")
    });
    // Closing frees descriptors: every queued connection is served in turn.
    streams.clear();
    server.wait_for_lines(20);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut expected: Vec<String> = (0..20).map(|n| format!("connection {n}")).collect();
    expected.sort();
    assert_eq!(notice_messages(&json_lines(&run.stdout)), expected);
    assert!(logged_count(&run.stderr, "listener stopped", "accept_errors") > 0);
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "connections"),
        20
    );
    assert_has(&run.stderr, "cannot accept a connection: ");
}

#[test]
fn udp_datagrams_the_pipeline_cannot_take_are_counted_as_dropped() {
    const SENT: u64 = 60_000;
    let mut server = Server::start(
        &slow_app(200_000),
        &[
            "-o",
            "listen.udp=127.0.0.1:0",
            "-o",
            "listen.udp_queue_mib=1",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let udp = server.address("UDP");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for n in 1..=SENT {
        socket
            .send_to(record(&format!("datagram {n}")).as_bytes(), udp)
            .expect("send");
    }
    server.wait_until("drops are counted", |server| {
        server.stderr().contains(
            "UDP datagrams dropped: the pipeline is behind and listen.udp_queue_mib is full",
        )
    });
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let taken = logged_count(&run.stderr, "listener stopped", "messages");
    let dropped = logged_count(&run.stderr, "listener stopped", "dropped_udp");
    assert!(dropped > 0);
    // The kernel may drop some too (it does not tell); none are counted
    // twice.
    assert!(taken + dropped <= SENT, "{taken} taken, {dropped} dropped");
    // Every datagram taken is processed.
    let events = json_lines(&run.stdout);
    assert_eq!(
        of_kind(&events, "ReportStats")[0]["fields"]["records"],
        taken
    );
}

#[test]
fn a_nul_trailer_keeps_line_breaks_inside_messages() {
    let mut server = Server::start(REPORT_APP, &["-o", "listen.trailer=nul"]);
    let mut stream = connect(server.address("TCP"));
    let text = format!(
        "{}\0{}\0{}",
        record("first\nstill the first"),
        record("second"),
        record("third, at the end of the stream")
    );
    stream.write_all(text.as_bytes()).expect("write");
    drop(stream);
    server.wait_for_lines(3);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        notice_messages(&json_lines(&run.stdout)),
        [
            "first\nstill the first",
            "second",
            "third, at the end of the stream"
        ]
    );
}

#[test]
fn sigterm_as_senders_finish_processes_what_they_wrote_before_it() {
    const PER_CONNECTION: u64 = 40_000;
    // The pipeline is behind, so much of what was sent still waits in the
    // kernel's socket buffers when the signal comes.
    let mut server = Server::start(&slow_app(5_000), &[]);
    let address = server.address("TCP");
    let streams: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = connect(address);
            let text: String = (1..=PER_CONNECTION)
                .map(|n| format!("{}\n", record(&format!("m{n}"))))
                .collect();
            stream.write_all(text.as_bytes()).expect("write");
            stream
        })
        .collect();
    // Written, and the connections stay open: now the signal.
    let run = server.stop();
    drop(streams);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    assert_eq!(
        of_kind(&events, "ReportStats")[0]["fields"]["records"],
        4 * PER_CONNECTION
    );
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "incomplete"),
        0
    );
}

#[test]
fn while_listening_ticks_follow_the_wall_clock() {
    let app = format!(
        "[modules.ticking]\ncomponent = '{}'\nconfig = {{ attack = \"minute-ticks\" }}\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n",
        env!("CORRELATOR_TEST_GUEST_HOSTILE")
    );
    let mut server = Server::start(&app, &[]);
    // No record comes: the next minute's boundary still gives a tick.
    server.wait_for_lines(1);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    let tick = &events[0];
    assert_eq!(tick["kind"], "Seen");
    assert_eq!(tick["fields"]["position"], -1);
    let at = tick["fields"]["clock"].as_i64().unwrap_or(-1);
    assert_eq!(at % 60, 0, "a tick on a minute's boundary: {tick}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    assert!(
        (0..=PATIENCE.as_secs() as i64).contains(&(now - at)),
        "the tick at {at} is not the wall clock's last minute (now {now})"
    );
}

#[test]
fn a_listener_stopped_by_sigterm_keeps_its_state_and_the_next_one_counts_on() {
    let (before, after) = brute_force_split();
    let mut first = Server::start(SSHD_JSON_APP, &[]);
    connect(first.address("TCP"))
        .write_all(before.as_bytes())
        .expect("send");
    first.wait_for_lines(3);
    let stopped = first.stop();
    assert_eq!(stopped.code, Some(0), "{}", stopped.stderr);
    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().expect("temp dir"));
    let mut second = Server::start_in(dir, &[]);
    assert_has(
        &second.stderr(),
        "continuing from the state checkpoint after record 6 of network",
    );
    connect(second.address("TCP"))
        .write_all(after.as_bytes())
        .expect("send");
    // Three failed logins and the lockout, which comes at the fifth failure.
    second.wait_for_lines(4);
    let run = second.stop();
    let events = json_lines(&run.stdout);
    let exceeded = of_kind(&events, "SSHDAttemptsExceeded");
    assert_eq!(exceeded.len(), 1, "{events:?}");
    assert_eq!(exceeded[0]["fields"]["host"], "198.51.100.7");
    assert_eq!(of_kind(&events, "SSHDStats")[0]["fields"]["lockouts"], 1);
}

#[test]
fn a_module_backing_off_while_listening_keeps_its_records_and_holds_no_one_back() {
    // "bad" fails on every POISON record; its fourth failure starts a
    // back-off of 400 ms. Its backlog holds 64 KiB (about 600 of these
    // records); "Report" must get every record meanwhile, without waiting.
    let app = format!(
        "[modules.bad]\ncomponent = '{}'\nconfig = {{ attack = \"poison\" }}\nlimits = {{ backlog_kib = 64 }}\n\
         [modules.Report]\ncomponent = \"builtin:report\"\n\
         [handlers.console]\ncomponent = \"builtin:log\"\nconfig = {{ format = \"json\" }}\n",
        env!("CORRELATOR_TEST_GUEST_HOSTILE")
    );
    let mut server = Server::start(&app, &[]);
    let mut stream = connect(server.address("TCP"));
    for failure in 1..=3 {
        stream
            .write_all(format!("{}\n", record(&format!("POISON {failure}"))).as_bytes())
            .expect("write");
        server.wait_until(&format!("failure {failure}"), |server| {
            server.stderr().matches("instance failed").count() == failure
        });
    }
    // The fourth poisoned record, and right behind it 5,000 records that
    // arrive while "bad" backs off.
    let total = 5_004;
    let mut burst = format!("{}\n", record("POISON 4"));
    for n in 5..=total {
        burst.push_str(&record(&format!("fine {n:05}")));
        burst.push('\n');
    }
    stream.write_all(burst.as_bytes()).expect("write");
    drop(stream);
    server.wait_until("the back-off is over", |server| {
        server.stderr().contains("waits 400 ms")
    });
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_has(
        &run.stderr,
        "records dropped: the instance is backing off and its backlog is full (limits.backlog_kib); they are counted instance=bad limit_kib=64\n",
    );
    let dropped = logged_count(
        &run.stderr,
        "records dropped while the module backed off",
        "dropped",
    );
    // At most what the backlog could not hold (it holds about 580).
    assert!((1..=total - 4 - 500).contains(&dropped), "{dropped}");
    let events = json_lines(&run.stdout);
    // Report got every record, in order.
    let reported: Vec<String> = of_kind(&events, "Notice")
        .iter()
        .map(|event| event["fields"]["message"].as_str().unwrap_or("").to_owned())
        .collect();
    let mut expected: Vec<String> = (1..=4).map(|n| format!("POISON {n}")).collect();
    expected.extend((5..=total).map(|n| format!("fine {n:05}")));
    assert_eq!(reported, expected);
    // "bad" saw every record up to where its backlog filled, in order, but
    // the poisoned ones; the rest are the dropped ones.
    let seen: Vec<u64> = of_kind(&events, "Seen")
        .iter()
        .map(|event| event["fields"]["position"].as_u64().unwrap_or(0))
        .collect();
    let last_kept = total - dropped;
    assert_eq!(seen, (5..=last_kept).collect::<Vec<u64>>());
    // Report was not held back: its last record came out before "bad"
    // worked off its backlog.
    let line_of = |needle: &str| {
        run.stdout
            .lines()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in the output"))
    };
    assert!(
        line_of(&format!("fine {total:05}")) < line_of(&format!("\"position\":{last_kept}")),
        "Report's last record waited for bad's backlog"
    );
}

/// Raise this process's soft limit on open files to the hard one (the
/// tests below hold thousands of connections).
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .expect("raise the open-file limit");
}

#[test]
fn silent_connections_cannot_lock_a_sender_out() {
    raise_open_file_limit();
    let mut server = Server::start(
        REPORT_APP,
        &[
            "-o",
            "listen.first_byte_timeout_s=3",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let address = server.address("TCP");
    // A sender that keeps sending, one record every 2 ms on one connection,
    // while 2,000 connections open and say nothing.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut stream = connect(address);
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                stream
                    .write_all(format!("{}\n", record(&format!("steady {sent:06}"))).as_bytes())
                    .expect("the steady sender's connection stays open");
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    server.wait_for_lines(1);
    let silent: Vec<TcpStream> = (0..2_000).map(|_| connect(address)).collect();
    // A new sender after the flood gets a slot too (a silent one's).
    let mut late = connect(address);
    late.write_all(format!("{}\n", record("late")).as_bytes())
        .expect("write");
    drop(late);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().expect("the steady sender");
    server.wait_for_lines(sent + 1);
    // Every silent connection is closed: to make room, or once its first
    // byte is overdue.
    server.wait_until("every silent connection is closed", |server| {
        let stderr = server.stderr();
        let count = |name| logged_count(&stderr, "listener counts so far", name);
        stderr.contains("listener counts so far")
            && count("evicted_silent") + count("silent_closed") == 2_000
    });
    drop(silent);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut expected: Vec<String> = (0..sent).map(|n| format!("steady {n:06}")).collect();
    expected.push("late".into());
    expected.sort();
    assert_eq!(notice_messages(&json_lines(&run.stdout)), expected);
    let count = |name| logged_count(&run.stderr, "listener stopped", name);
    assert_eq!(count("connections"), 2_002);
    assert_eq!(count("refused_connections"), 0);
    assert_eq!(count("evicted_silent") + count("silent_closed"), 2_000);
    // 256 slots per address, one of them the steady sender's: most silent
    // connections were closed to make room.
    assert!(count("evicted_silent") >= 1_000, "{}", run.stderr);
    assert_has(
        &run.stderr,
        "closing a connection that has sent nothing to make room for a new one: every slot was taken (further ones are counted as evicted_silent)",
    );
}

#[test]
fn a_connection_made_after_sigterm_is_refused_not_acknowledged() {
    // A slow pipeline with records queued keeps the process busy finishing
    // them well after the signal.
    let mut server = Server::start(&slow_app(20_000), &[]);
    let address = server.address("TCP");
    let mut stream = connect(address);
    let text: String = (1..=40_000)
        .map(|n| format!("{}\n", record(&format!("m{n}"))))
        .collect();
    stream.write_all(text.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    signal(server.pid(), "TERM");
    server.wait_until("the signal is taken", |server| {
        server.stderr().contains("no longer accepting")
    });
    std::thread::sleep(Duration::from_millis(30));
    let late = TcpStream::connect_timeout(&address, Duration::from_secs(5));
    let still_running = server
        .child
        .as_mut()
        .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
    assert!(still_running, "the run ended before the late connection");
    match late {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(_) => panic!("a connection made after SIGTERM was accepted"),
    }
    drop(stream);
    let run = server.wait_for_exit();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    assert_eq!(
        of_kind(&events, "ReportStats")[0]["fields"]["records"],
        40_000
    );
}

/// Bytes of `stream`'s data its peer's kernel has acknowledged, from
/// `TCP_INFO` (`tcpi_bytes_acked`, at byte 120 of Linux's `struct
/// tcp_info`; the `libc` crate's struct stops short of it), less the one
/// the SYN counts for. It stays readable after the connection is reset.
#[allow(
    unsafe_code,
    reason = "getsockopt has no safe wrapper among the dependencies"
)]
fn bytes_acked(stream: &TcpStream) -> u64 {
    use std::os::fd::AsRawFd as _;
    let mut info = [0u8; 256];
    let mut length = libc::socklen_t::try_from(info.len()).expect("256 fits");
    // SAFETY: `info` is writable for `length` bytes, and the kernel writes
    // at most that many and says how many in `length`.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &raw mut length,
        )
    };
    assert_eq!(result, 0, "getsockopt(TCP_INFO)");
    assert!(length >= 128, "this kernel's tcp_info has no bytes_acked");
    let mut acked = [0u8; 8];
    acked.copy_from_slice(&info[120..128]);
    u64::from_ne_bytes(acked).saturating_sub(1)
}

/// Record `n`, always the same length, so that a byte count says which
/// records it covers.
fn fixed_record(n: u64) -> String {
    format!("{}\n", record(&format!("rec {n:09}")))
}

#[test]
fn sigterm_under_full_speed_load_loses_nothing_the_kernel_acknowledged() {
    let record_bytes = fixed_record(0).len() as u64;
    // Every record counted; every thousandth one printed, to see which
    // came.
    let app = "[modules.Report]\ncomponent = 'builtin:report'\n\
               [handlers.console]\ncomponent = 'builtin:log'\nconfig = { format = \"json\" }\n\
               filter = 'event.kind == \"ReportStats\" || has(event.fields.message) && event.fields.message.endsWith(\"000\")'\n";
    let mut next = 0u64;
    let mut processed = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    for restart in 0..5 {
        let mut server = Server::start(app, &["-o", "state.enabled=false"]);
        let address = server.address("TCP");
        let start = next;
        // The sender writes as fast as it can until the server stops.
        let sender = std::thread::spawn(move || {
            let mut stream = connect(address);
            let mut n = start;
            loop {
                let batch: String = (n..n + 1_000).map(fixed_record).collect();
                if stream.write_all(batch.as_bytes()).is_err() {
                    break;
                }
                n += 1_000;
            }
            // What the server's kernel acknowledged is all it may count on;
            // the rest is sent again to the next server.
            start + bytes_acked(&stream) / record_bytes
        });
        std::thread::sleep(Duration::from_millis(300 + 100 * restart));
        let run = server.stop();
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        next = sender.join().expect("the sender");
        let events = json_lines(&run.stdout);
        let stats = of_kind(&events, "ReportStats");
        processed += stats[0]["fields"]["records"].as_u64().expect("a count");
        for notice in of_kind(&events, "Notice") {
            let message = notice["fields"]["message"].as_str().expect("a message");
            let number: u64 = message
                .trim_start_matches("rec ")
                .parse()
                .expect("a record number");
            assert!(seen.insert(number), "record {number} came twice");
        }
        assert!(next > start, "restart {restart}: nothing was sent");
    }
    // Exactly the records whose bytes were acknowledged were processed:
    // none lost, none twice.
    assert_eq!(processed, next);
    let missing: Vec<u64> = (0..next)
        .filter(|n| n % 1_000 == 0 && !seen.contains(n))
        .take(10)
        .collect();
    assert_eq!(missing, [0u64; 0], "records never processed");
    assert_eq!(seen.len() as u64, next.div_ceil(1_000));
}

#[test]
fn a_million_udp_datagrams_as_fast_as_one_sender_sends_lose_none_in_the_program() {
    const SENT: u64 = 1_000_000;
    let app = "[modules.Report]\ncomponent = 'builtin:report'\n\
               [handlers.console]\ncomponent = 'builtin:log'\nconfig = { format = \"json\" }\n\
               filter = 'event.kind == \"ReportStats\"'\n";
    let mut server = Server::start(
        app,
        &[
            "-o",
            "listen.udp=127.0.0.1:0",
            "-o",
            "listen.report_interval_s=1",
            "-o",
            "state.enabled=false",
        ],
    );
    let udp = server.address("UDP");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let kernel_drops_before = udp_receive_buffer_errors();
    let started = Instant::now();
    for n in 1..=SENT {
        socket
            .send_to(record(&format!("datagram {n:07}")).as_bytes(), udp)
            .expect("send");
    }
    let rate = SENT as f64 / started.elapsed().as_secs_f64();
    // Wait until the counts stop changing: everything sent has been taken
    // (or dropped by the kernel, which the program cannot see).
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(1_500));
        let stderr = server.stderr();
        let counts = stderr
            .lines()
            .rev()
            .find(|line| line.contains("listener counts so far"))
            .unwrap_or("")
            .split("messages=")
            .nth(1)
            .unwrap_or("")
            .to_owned();
        if counts == last {
            break;
        }
        last = counts;
    }
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let taken = logged_count(&run.stderr, "listener stopped", "messages");
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "dropped_udp"),
        0,
        "sent at {rate:.0}/s, {taken} taken"
    );
    // Whatever the program did not take, the kernel dropped (and counted,
    // machine-wide): nothing went missing inside the program.
    let kernel_drops = udp_receive_buffer_errors() - kernel_drops_before;
    assert!(
        taken + kernel_drops >= SENT,
        "{taken} taken, {kernel_drops} dropped by the kernel, of {SENT}"
    );
    let events = json_lines(&run.stdout);
    assert_eq!(
        of_kind(&events, "ReportStats")[0]["fields"]["records"],
        taken
    );
    eprintln!(
        "{SENT} datagrams sent at {rate:.0}/s: {taken} taken, {kernel_drops} dropped by the kernel, none by the program"
    );
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer
/// (`RcvbufErrors` in /proc/net/snmp), machine-wide.
fn udp_receive_buffer_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("/proc/net/snmp");
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .expect("RcvbufErrors in /proc/net/snmp")
}

/// 20,000 sshd records from 64 servers, one a second, in time order:
/// failed passwords from 40 addresses spread over every server (so that
/// each address's count, and its alerts, need every server's records), and
/// some logins.
fn many_servers_capture() -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let start = 1_676_905_200u64; // 2023-02-20T15:00:00Z
    let mut second = 0;
    while lines.len() < 20_000 {
        let server = usize::try_from(next(64)).expect("small");
        let pid = 1_000 + lines.len();
        let address = format!("203.0.113.{}", next(40));
        let port = 1_024 + next(60_000);
        let message = if next(10) == 0 {
            format!(
                "Accepted password for user{} from {address} port {port} ssh2",
                next(9)
            )
        } else {
            format!("Failed password for root from {address} port {port} ssh2")
        };
        for text in [
            message,
            format!("Connection closed by {address} port {port} [preauth]"),
        ] {
            let time = start + second;
            second += 1;
            let (h, m, s) = (time / 3600 % 24, time / 60 % 60, time % 60);
            lines.push((
                server,
                format!(
                    "<86>1 2023-02-20T{h:02}:{m:02}:{s:02}Z node{server} sshd {pid} - - {text}"
                ),
            ));
        }
    }
    lines
}

/// [`many_servers_capture`], and the events of one replay of it.
fn many_servers_and_their_events() -> (Vec<(usize, String)>, Vec<Value>) {
    let capture = many_servers_capture();
    let whole: String = capture
        .iter()
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    let expected = replay_json(SSHD_JSON_APP, &whole, &["state.enabled=false"]);
    (capture, expected)
}

/// Listen with the sshd module (and `args`), send each server's records
/// of `capture` over one of `connections` connections, in its own order,
/// all connections at once, as forwarders that keep their connections open
/// send them, and stop once all 20,000 are in. The run must succeed.
fn send_per_server(capture: &[(usize, String)], connections: usize, args: &[&str]) -> Run {
    let mut all = vec![
        "-o",
        "state.enabled=false",
        "-o",
        "listen.report_interval_s=1",
    ];
    all.extend(args);
    let mut server = Server::start(SSHD_JSON_APP, &all);
    let address = server.address("TCP");
    let mut loads = vec![String::new(); connections];
    for (node, line) in capture {
        loads[node % connections].push_str(line);
        loads[node % connections].push('\n');
    }
    let streams: Vec<TcpStream> = (0..connections).map(|_| connect(address)).collect();
    // The listener knows every connection before the records come (a
    // sender's records are waited for from when its connection is known).
    server.wait_until("every connection is open", |server| {
        server.stderr().contains(&format!(" open={connections} "))
    });
    std::thread::scope(|scope| {
        for (load, mut stream) in loads.iter().zip(streams) {
            scope.spawn(move || {
                stream.write_all(load.as_bytes()).expect("write");
            });
        }
    });
    server.wait_until("every record is in", |server| {
        server.stderr().contains("messages=20000 ")
    });
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run
}

#[test]
fn one_server_per_connection_gives_the_events_of_a_replay_over_1_8_and_64_connections() {
    let (capture, expected) = many_servers_and_their_events();
    assert!(of_kind(&expected, "SSHDAttemptsExceeded").len() > 100);
    for connections in [1, 8, 64] {
        let run = send_per_server(&capture, connections, &[]);
        let events = json_lines(&run.stdout);
        assert_eq!(events.len(), expected.len(), "{connections} connections");
        assert!(
            events == expected,
            "{connections} connections: the events differ from the replay's"
        );
    }
}

#[test]
fn senders_whose_clocks_differ_by_seconds_give_the_events_of_their_records_in_time_order() {
    // Two forwarders; the odd servers' clocks run 45.5 s behind. With a
    // reorder window longer than that, the modules see every record in
    // record-time order: the events of a replay of them sorted by time.
    let mut capture = many_servers_capture();
    for (server, line) in &mut capture {
        if *server % 2 == 1 {
            let time = &line[6..26];
            let parsed = time_of(time) - 46;
            let (h, m, s) = (parsed / 3600 % 24, parsed / 60 % 60, parsed % 60);
            *line = line.replacen(
                &format!("{time} "),
                &format!("2023-02-20T{h:02}:{m:02}:{s:02}.500000Z "),
                1,
            );
        }
    }
    let mut sorted: Vec<&String> = capture.iter().map(|(_, line)| line).collect();
    // By time: whole seconds, then the half seconds of the late clocks.
    sorted.sort_by_key(|line| (time_of(&line[6..26]), line.contains(".500000Z")));
    let whole: String = sorted.iter().map(|line| format!("{line}\n")).collect();
    let expected = replay_json(SSHD_JSON_APP, &whole, &["state.enabled=false"]);
    let run = send_per_server(&capture, 2, &["-o", "listen.reorder_ms=60000"]);
    let events = json_lines(&run.stdout);
    assert_eq!(events.len(), expected.len());
    assert!(
        events == expected,
        "the events differ from the sorted replay's"
    );
}

#[test]
fn a_sender_far_ahead_of_another_waits_in_the_kernel_not_in_memory() {
    // One connection says one record and stays open; another sends 20 MB
    // of records ten seconds newer. They wait for the first sender (a
    // reorder window of a minute), but past a MiB of them the fast
    // connection is no longer read: the rest stays with the kernel and the
    // sender, whose writes stop, until the slow sender catches up.
    const AHEAD: usize = 100_000;
    let mut server = Server::start(
        REPORT_APP,
        &[
            "-o",
            "listen.reorder_ms=60000",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let address = server.address("TCP");
    let at = |second: u32, message: &str| {
        format!("<13>1 2026-11-27T10:00:{second:02}Z host app - - - {message}\n")
    };
    let mut behind = connect(address);
    behind
        .write_all(at(0, "behind 0").as_bytes())
        .expect("write");
    server.wait_for_lines(1);
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ahead = {
        let finished = std::sync::Arc::clone(&finished);
        let text: String = (0..AHEAD)
            .map(|n| at(10, &format!("ahead {n:06} {:100}", "")))
            .collect();
        std::thread::spawn(move || {
            let mut stream = connect(address);
            stream.write_all(text.as_bytes()).expect("write ahead");
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            stream
        })
    };
    server.wait_until("the fast connection is paused", |server| {
        let stderr = server.stderr();
        stderr.contains("listener counts so far")
            && logged_count(&stderr, "listener counts so far", "paused_reads") > 0
    });
    // Paused, and the sender cannot finish writing: nothing is read.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !finished.load(std::sync::atomic::Ordering::SeqCst),
        "20 MB were taken from a paused connection"
    );
    assert_eq!(server.stdout().lines().count(), 1);
    // The slow sender catches up: everything flows, in time order.
    behind
        .write_all(at(20, "behind 1").as_bytes())
        .expect("write");
    drop(behind);
    let stream = ahead.join().expect("the fast sender");
    drop(stream);
    server.wait_for_lines(AHEAD + 2);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let messages: Vec<String> = of_kind(&json_lines(&run.stdout), "Notice")
        .iter()
        .map(|event| {
            event["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .trim_end()
                .to_owned()
        })
        .collect();
    let mut expected = vec!["behind 0".to_owned()];
    expected.extend((0..AHEAD).map(|n| format!("ahead {n:06}")));
    expected.push("behind 1".to_owned());
    assert_eq!(messages.len(), expected.len());
    assert!(messages == expected, "records out of order");
    assert!(logged_count(&run.stderr, "listener stopped", "paused_reads") >= 1);
}

#[test]
fn a_service_manager_hears_ready_once_it_listens_and_stopping_at_sigterm() {
    // As systemd's Type=notify does: a datagram socket in NOTIFY_SOCKET.
    let dir = app_dir(REPORT_APP);
    let socket_path = dir.path().join("notify.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    manager
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut command = Server::command(&[]);
    command.env("NOTIFY_SOCKET", &socket_path);
    let mut server = Server::launch(dir, command);
    let mut buffer = [0u8; 256];
    let received = |buffer: &mut [u8]| {
        let count = manager.recv(buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..count]).into_owned()
    };
    assert_eq!(received(&mut buffer), "READY=1\nSTATUS=listening");
    // Ready means served: a record sent now is taken.
    let mut stream = connect(server.address("TCP"));
    stream
        .write_all(format!("{}\n", record("after ready")).as_bytes())
        .expect("write");
    drop(stream);
    server.wait_for_lines(1);
    signal(server.pid(), "TERM");
    assert_eq!(
        received(&mut buffer),
        "STOPPING=1\nSTATUS=finishing what was received"
    );
    let run = server.wait_for_exit();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(notice_messages(&json_lines(&run.stdout)), ["after ready"]);
}

#[test]
fn sighup_makes_handlers_open_their_files_again_after_a_rotation() {
    let app = "[modules.Report]\ncomponent = \"builtin:report\"\n\
               [handlers.audit]\ncomponent = \"builtin:csv\"\n\
               filter = 'event.kind == \"Notice\"'\ngrants = { dir = \"audit\" }\n\
               [handlers.console]\ncomponent = \"builtin:log\"\nconfig = { format = \"json\" }\n";
    let mut server = Server::start(app, &[]);
    let address = server.address("TCP");
    let send = |message: &str| {
        let mut stream = connect(address);
        stream
            .write_all(format!("{}\n", record(message)).as_bytes())
            .expect("write");
    };
    send("before");
    server.wait_for_lines(1);
    // logrotate moves the file; the handler still holds it open.
    let audit = server.path("audit");
    let file = "Report-Notice-2026-11-27.csv";
    server.wait_until("the row is written", |server| {
        std::fs::read_to_string(server.path("audit").join(file))
            .is_ok_and(|text| text.contains("before"))
    });
    std::fs::rename(audit.join(file), audit.join("rotated.csv")).expect("rotate");
    signal(server.pid(), "HUP");
    server.wait_until("SIGHUP is taken", |server| {
        server
            .stderr()
            .contains("SIGHUP: handlers granted a directory start afresh")
    });
    send("after");
    server.wait_for_lines(2);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let rows = |name: &str| -> Vec<String> {
        std::fs::read_to_string(audit.join(name))
            .expect("a csv file")
            .lines()
            .map(|line| line.split(',').nth(3).unwrap_or_default().to_owned())
            .collect()
    };
    // The old rows stay in the moved file; the new go to a new one, with
    // its header.
    assert_eq!(rows("rotated.csv"), ["message", "before"]);
    assert_eq!(rows(file), ["message", "after"]);
    assert_has(&run.stderr, "started afresh: its files are opened again");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    // The unit as shipped, with the binary where the test built it.
    let unit = std::fs::read_to_string(workspace().join("runtime/systemd/correlator.service"))
        .expect("the unit file");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("correlator.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/correlator",
            env!("CARGO_BIN_EXE_correlator"),
        ),
    )
    .expect("write the unit");
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) runs");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&verify.stderr), "");
    for setting in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=correlator",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|line| line == setting), "{setting}");
    }
}

/// Seconds since the epoch of `2023-02-20THH:MM:SS` (the captures here are
/// of that day).
fn time_of(text: &str) -> u64 {
    let field = |range: std::ops::Range<usize>| -> u64 {
        text.get(range)
            .and_then(|digits| digits.parse().ok())
            .expect("a two-digit field")
    };
    1_676_851_200 + field(11..13) * 3600 + field(14..16) * 60 + field(17..19)
}

/// The offers a RELP client hears in answer to `open`.
fn relp_offers() -> String {
    format!(
        "200 OK\nrelp_version=0\nrelp_software=correlator,{}\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    )
}

#[test]
fn relp_answers_each_message_in_order_once_its_events_are_handled() {
    const MESSAGES: u64 = 100;
    let mut server = Server::start(
        REPORT_APP,
        &["-o", "listen.relp=127.0.0.1:0", "-o", "state.enabled=false"],
    );
    let (mut client, offers) = RelpClient::open(connect(server.address("RELP")));
    assert_eq!(offers, relp_offers());
    let sent: Vec<u64> = (1..=MESSAGES)
        .map(|n| client.send("syslog", &record(&format!("relp {n}"))))
        .collect();
    let unknown = client.send("frobnicate", "");
    for (n, txnr) in (1..=MESSAGES).zip(&sent) {
        assert_eq!(client.answer(), Some((*txnr, "200 OK".to_owned())));
        // Answered only once its event is out.
        assert_has(&server.stdout(), &format!("\"message\":\"relp {n}\""));
    }
    assert_eq!(
        client.answer(),
        Some((unknown, "500 command not supported".to_owned()))
    );
    let close = client.send("close", "");
    assert_eq!(client.answer(), Some((close, "200 OK".to_owned())));
    assert_eq!(client.answer(), None, "the server closes after close");

    // A session open at shutdown: what was sent is answered, then the
    // server says it closes.
    let (mut client, _) = RelpClient::open(connect(server.address("RELP")));
    let last = client.send("syslog", &record("relp last"));
    server.wait_for_lines(MESSAGES as usize + 1);
    signal(server.pid(), "TERM");
    assert_eq!(client.answer(), Some((last, "200 OK".to_owned())));
    assert_eq!(client.answer(), Some((0, "serverclose".to_owned())));
    assert_eq!(client.answer(), None);
    let run = server.wait_for_exit();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut expected: Vec<String> = (1..=MESSAGES).map(|n| format!("relp {n}")).collect();
    expected.push("relp last".to_owned());
    expected.sort();
    assert_eq!(notice_messages(&json_lines(&run.stdout)), expected);
    assert_eq!(
        logged_count(&run.stderr, "listener stopped", "messages"),
        MESSAGES + 1
    );
}

#[test]
fn relp_over_tls_answers_once_a_checkpoint_covers_the_messages() {
    const MESSAGES: u64 = 50;
    let dir = app_dir(REPORT_APP);
    make_pki(dir.path());
    let mut server = Server::start_in(
        dir,
        &[
            "-o",
            "listen.relp_tls=127.0.0.1:0",
            "-o",
            "listen.tls_certificate=server.pem",
            "-o",
            "listen.tls_key=server.key",
            // Far past the test: only the senders' wait makes a checkpoint.
            "-o",
            "state.checkpoint_interval=3600",
        ],
    );
    let address = server.address("RELP over TLS");
    let (mut client, offers) = RelpClient::open(tls_client(address, server.dir.path(), None));
    assert_eq!(offers, relp_offers());
    let sent: Vec<u64> = (1..=MESSAGES)
        .map(|n| client.send("syslog", &record(&format!("safe {n}"))))
        .collect();
    for txnr in &sent {
        assert_eq!(client.answer(), Some((*txnr, "200 OK".to_owned())));
    }
    // Every answered message is in the store: killed now, the checkpoint
    // covers all of them.
    signal(server.pid(), "KILL");
    let _ = server.wait_for_exit();
    let check = correlator(server.dir.path(), &["check", "--app", "app.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert_has(
        &check.stdout,
        &format!("checkpoint after record {MESSAGES} of network ("),
    );
}

/// rsyslog forwarding over RELP to `port`, resending every second until
/// answered, its window larger than its batches (a batch larger than the
/// window stalls librelp's corked socket for 200 ms per window).
fn omrelp_to(port: u16) -> Rsyslog {
    Rsyslog::start(&format!(
        "main_queue(queue.size=\"200000\")\n\
         module(load=\"omrelp\")\n\
         *.* action(type=\"omrelp\" target=\"127.0.0.1\" port=\"{port}\" \
         template=\"RSYSLOG_SyslogProtocol23Format\" windowSize=\"1024\" \
         action.resumeRetryCount=\"-1\" action.resumeInterval=\"1\")\n"
    ))
}

#[test]
fn rsyslog_omrelp_loses_nothing_when_the_runtime_is_killed_and_restarted() {
    const MESSAGES: usize = 60_000;
    const KILLS: usize = 3;
    // A port of our own that every run takes again: rsyslog reconnects to it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let relp = format!("listen.relp=127.0.0.1:{port}");
    let dir = app_dir(REPORT_APP);
    let start = |dir: tempfile::TempDir| Server::start_in(dir, &["-o", &relp]);
    let mut server = start(dir);
    let rsyslog = omrelp_to(port);
    let lines: String = (1..=MESSAGES).map(|n| format!("relayed {n}\n")).collect();
    let feeder = std::thread::spawn(move || {
        // In parts, so that the kills land while messages flow.
        for part in lines.lines().collect::<Vec<_>>().chunks(2_000) {
            rsyslog.log("viarelp", &(part.join("\n") + "\n"));
            std::thread::sleep(Duration::from_millis(30));
        }
        rsyslog
    });
    let mut outputs = Vec::new();
    for kill in 1..=KILLS {
        server.wait_until("records flow", |server| {
            server.stdout().lines().count() >= kill * 5_000
        });
        signal(server.pid(), "KILL");
        let _ = server.wait_for_exit();
        outputs.push(server.stdout());
        // The next run in the same directory: same state, new output.
        std::fs::rename(
            server.path("stdout.txt"),
            server.path(&format!("stdout-{kill}.txt")),
        )
        .expect("keep the output");
        let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
        server = start(dir);
    }
    let received = |server: &Server, outputs: &[String]| {
        let mut seen = std::collections::HashSet::new();
        for text in outputs
            .iter()
            .map(String::as_str)
            .chain([server.stdout().as_str()])
        {
            seen.extend(relayed_messages(text));
        }
        seen
    };
    server.wait_until("every message is in", |server| {
        received(server, &outputs).len() >= MESSAGES
    });
    let rsyslog = feeder.join().expect("feeder");
    drop(rsyslog);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    outputs.push(run.stdout);
    let mut all: Vec<String> = outputs
        .iter()
        .flat_map(|text| relayed_messages(text))
        .collect();
    let total = all.len();
    all.sort();
    all.dedup();
    let expected: Vec<String> = {
        let mut expected: Vec<String> = (1..=MESSAGES).map(|n| format!("relayed {n}")).collect();
        expected.sort();
        expected
    };
    assert_eq!(all, expected, "every message arrives, none lost");
    // Duplicates: what was processed after a run's last checkpoint and
    // sent again by rsyslog (at most one window per kill).
    let duplicates = total - MESSAGES;
    eprintln!("{KILLS} kills: {duplicates} duplicates");
    assert!(
        duplicates <= KILLS * 1024,
        "{duplicates} duplicates for {KILLS} kills with a window of 1024"
    );
}

/// The messages of the Notices in `text`, trimmed; a line that a kill cut
/// short is not an event (its message was not answered, and comes again).
fn relayed_messages(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["kind"] == "Notice")
        .filter_map(|event| Some(event["fields"]["message"].as_str()?.trim().to_owned()))
        .collect()
}

/// The sshd module (three failed passwords make `SSHDAttemptsExceeded`),
/// its attack events to the console grouped by host with `group_wait_s`.
fn grouped_attacks_app(group_wait_s: u32) -> String {
    format!(
        r#"
[modules.OpenSSH]
component = "builtin:sshd"
config = {{ login_failure_limit = 3 }}
[handlers.console]
component = "builtin:log"
config = {{ format = "json" }}
filter = 'event.kind == "SSHDAttemptsExceeded"'
notify = {{ group_by = ["host"], group_wait_s = {group_wait_s} }}
"#
    )
}

#[test]
fn events_a_group_waits_with_survive_kill_9_and_go_out_when_the_wall_clock_says() {
    let mut server = Server::start(
        &grouped_attacks_app(3600),
        &[
            "-o",
            "listen.relp=127.0.0.1:0",
            "-o",
            "state.checkpoint_interval=3600",
        ],
    );
    let (mut client, _) = RelpClient::open(connect(server.address("RELP")));
    let mut capture = String::new();
    brute_force(&mut capture, "203.0.113.9", 0, 2, 3, 100);
    let sent: Vec<u64> = capture
        .lines()
        .map(|line| client.send("syslog", line))
        .collect();
    // Answered once a checkpoint covers the records: it holds the group.
    for txnr in &sent {
        assert_eq!(client.answer(), Some((*txnr, "200 OK".to_owned())));
    }
    assert_eq!(server.stdout(), "", "the group waits an hour");
    signal(server.pid(), "KILL");
    let _ = server.wait_for_exit();
    let list = correlator(server.dir.path(), &["outbox", "--app", "app.toml", "list"]);
    assert_eq!(
        list.stdout,
        "notifier console: 1 event and 0 repeats wait in 1 group; 0 messages held by the rate limit (sent when their wait ends in the next run)\n0 waiting, 0 dead\n"
    );

    // Restarted with a wait of one second, long past: the event goes out
    // at once, with no record to move anything.
    std::fs::write(server.path("app.toml"), grouped_attacks_app(1)).expect("write app");
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
    let mut server = Server::start_in(dir, &[]);
    server.wait_for_lines(1);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_lines(&run.stdout);
    assert_eq!(events.len(), 1, "{}", run.stdout);
    assert_eq!(events[0]["kind"], "SSHDAttemptsExceeded");
    assert_eq!(events[0]["fields"]["host"], "203.0.113.9");

    // Sent is sent: the next run has nothing to send.
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
    let mut server = Server::start_in(dir, &[]);
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

/// `GET path` from an HTTP server: its status line and its body.
fn http_get(address: SocketAddr, path: &str) -> (String, String) {
    use std::io::Read as _;
    let mut stream = TcpStream::connect(address).expect("connect to the metrics endpoint");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/plain\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {response}"));
    let status = head.lines().next().unwrap_or_default().to_owned();
    assert_has(head, "Content-Type: text/plain; version=0.0.4");
    (status, body.to_owned())
}

/// The value of the sample `series` (name and labels, as rendered).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[test]
fn the_metrics_endpoint_counts_what_a_listener_under_load_was_sent() {
    let (capture, expected) = many_servers_and_their_events();
    let mut server = Server::start(
        SSHD_JSON_APP,
        &[
            "-o",
            "metrics.listen=127.0.0.1:0",
            "-o",
            "listen.report_interval_s=1",
        ],
    );
    let endpoint: SocketAddr = server
        .stderr()
        .lines()
        .find_map(|line| line.split_once("metrics on http://"))
        .and_then(|(_, rest)| rest.strip_suffix("/metrics"))
        .expect("the log says where the metrics are")
        .parse()
        .expect("an address");
    let address = server.address("TCP");
    // Eight forwarders, each with its servers' records, and one sender of
    // five lines that are not syslog.
    let mut loads = vec![String::new(); 8];
    for (node, line) in &capture {
        loads[node % 8].push_str(line);
        loads[node % 8].push('\n');
    }
    loads.push((0..5).map(|n| format!("not syslog {n}\n")).collect());
    let streams: Vec<TcpStream> = loads.iter().map(|_| connect(address)).collect();
    // The listener knows every connection before the records come, so
    // that records are taken in time order across them.
    server.wait_until("every connection is open", |server| {
        server.stderr().contains(" open=9 ")
    });
    let mut scrapes_under_load = Vec::new();
    std::thread::scope(|scope| {
        for (load, mut stream) in loads.iter().zip(streams) {
            scope.spawn(move || {
                stream.write_all(load.as_bytes()).expect("write");
            });
        }
        for _ in 0..5 {
            let (status, body) = http_get(endpoint, "/metrics");
            assert_eq!(status, "HTTP/1.1 200 OK");
            scrapes_under_load.push(body);
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let parsed = "correlator_records_total{input=\"network\",result=\"parsed\"}";
    let mut last = 0.0;
    for body in &scrapes_under_load {
        let value = sample(body, parsed).expect("records counted");
        assert!(value >= last && value <= 20_000.0, "{value} after {last}");
        last = value;
    }

    // Every kind but the statistics, which come at the end.
    let mut kinds = std::collections::BTreeMap::new();
    for event in &expected {
        let kind = event["kind"].as_str().expect("a kind");
        if kind != "SSHDStats" {
            *kinds.entry(kind).or_insert(0.0) += 1.0;
        }
    }
    let wanted = |body: &str| {
        kinds.iter().all(|(kind, count)| {
            sample(
                body,
                &format!("correlator_events_total{{module=\"OpenSSH\",kind=\"{kind}\"}}"),
            ) == Some(*count)
        })
    };
    let started = Instant::now();
    let body = loop {
        let (_, body) = http_get(endpoint, "/metrics");
        if sample(&body, parsed) == Some(20_000.0) && wanted(&body) {
            break body;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the counts never reached what was sent: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for (series, value) in [
        (
            "correlator_records_total{input=\"network\",result=\"unparsable\"}",
            5.0,
        ),
        ("correlator_connections_total", 9.0),
        ("correlator_messages_received_total", 20_005.0),
        (
            "correlator_messages_lost_total{reason=\"udp_pipeline_full\"}",
            0.0,
        ),
        (
            "correlator_instance_failures_total{instance=\"OpenSSH\",role=\"module\"}",
            0.0,
        ),
        (
            "correlator_instance_restarts_total{instance=\"console\",role=\"handler\"}",
            0.0,
        ),
    ] {
        assert_eq!(sample(&body, series), Some(value), "{series} in {body}");
    }
    let handed = sample(
        &body,
        "correlator_handler_events_total{handler=\"console\"}",
    )
    .expect("the console's events");
    assert_eq!(handed, kinds.values().sum::<f64>());
    for series in [
        "correlator_instance_calls_total{instance=\"OpenSSH\",role=\"module\"}",
        "correlator_instance_call_seconds_total{instance=\"OpenSSH\",role=\"module\"}",
        "correlator_instance_memory_bytes{instance=\"OpenSSH\",role=\"module\"}",
    ] {
        assert!(
            sample(&body, series).is_some_and(|v| v > 0.0),
            "{series} in {body}"
        );
    }
    // Labels name instances and kinds, never a sender.
    assert!(!body.contains("127.0.0.1"), "{body}");
    assert_eq!(http_get(endpoint, "/").0, "HTTP/1.1 404 Not Found");
    let run = server.stop();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}
