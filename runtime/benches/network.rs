//! Network throughput of the real `correlator` binary, beside rsyslog
//! receiving the same load on the same machine in the same run.
//!
//! `cargo bench -p correlator --bench network` generates 1,000,000 sshd-heavy
//! RFC 5424 records (CORRELATOR_BENCH_RECORDS changes that) and sends them
//! over loopback TCP, newline-framed, from this process's own sender with 1,
//! 8 and 64 connections, as fast as the receiver takes them. The capture
//! is logged by 64 servers; each server's records go over one connection,
//! in order, as its forwarder would send them (with 64 connections, one
//! server each; with fewer, several share one, as through a relay).
//!
//! correlator runs the sshd module and the JSON log handler (to /dev/null):
//! the clock runs from the first byte sent until the process has exited
//! after SIGTERM, which it gets once every connection has been read to its
//! end, so every message has been received and fully processed by then.
//! rsyslog (imtcp, writing one byte and a newline per message to a file) is
//! timed from the first byte until its file holds every message. Messages
//! lost are those sent minus those counted by the receiver.
//!
//! Five rounds (CORRELATOR_BENCH_ROUNDS), each receiver and connection
//! count in turn (each round and count starting with another receiver);
//! the best rate of each is printed at the end.
//!
//! Then UDP: one sender sends every message as a datagram as fast as it
//! can, to correlator (SIGTERM once sent: it still takes what waits in the
//! kernel) and to rsyslog's imudp (until its file stops growing for a
//! second); what each loses at that rate is printed.
//!
//! Then RELP: the same loads over 8 connections from this process's own
//! RELP client (a window of 1,024 unanswered messages, as omrelp may be
//! set to), to correlator (`listen.relp`; it answers a message once a
//! state checkpoint covers it) and to rsyslog's imrelp (which answers once
//! the message is in its queue; timed until its file holds every message
//! too).
//!
//! CORRELATOR_BENCH_BASELINE names an older build of the binary, measured
//! over TCP in the same rounds.
//!
//! CORRELATOR_BENCH_OPTIONS adds `--option`s to correlator's command line,
//! separated by spaces (e.g. `system.call_time_limits=false`).
//! CORRELATOR_BENCH_ONLY=correlator leaves rsyslog out (to profile one
//! receiver alone), and CORRELATOR_BENCH_CONNECTIONS=64 measures one
//! connection count only.

mod sshd_traffic;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a receiver that has stopped making progress.
const STALL: Duration = Duration::from_secs(30);

fn main() {
    let count: usize = std::env::var("CORRELATOR_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("correlator-netbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut text = String::with_capacity(count * 120);
    sshd_traffic::generate(count, &mut text);
    let lines: Vec<&str> = text.lines().collect();
    let app = dir.join("bench.toml");
    std::fs::write(
        &app,
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = { format = \"json\" }\n",
    )
    .expect("write app");
    let only_correlator =
        std::env::var("CORRELATOR_BENCH_ONLY").is_ok_and(|only| only == "correlator");
    let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists() && !only_correlator);
    if rsyslogd.is_none() && !only_correlator {
        println!("rsyslogd not found (apt-get install rsyslog): measuring correlator alone");
    }
    println!(
        "{} messages, {} MB, over loopback TCP",
        lines.len(),
        text.len() / 1_000_000
    );
    let rounds: usize = std::env::var("CORRELATOR_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let sent = lines.len() as u64;
    // The receivers alternate so that both see the same machine.
    let mut ours = Tally::new("correlator", "received and processed by the sshd module");
    // An older build of the binary, measured in the same rounds.
    let baseline = std::env::var_os("CORRELATOR_BENCH_BASELINE").map(PathBuf::from);
    let mut before = Tally::new("baseline", "received and processed by the sshd module");
    let mut theirs = Tally::new("rsyslog", "received and written to a file");
    let measured: Option<usize> = std::env::var("CORRELATOR_BENCH_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok());
    let slots = || {
        CONNECTIONS
            .into_iter()
            .enumerate()
            .filter(|(_, connections)| measured.is_none_or(|only| only == *connections))
    };
    for round in 1..=rounds {
        for (slot, connections) in slots() {
            let loads = split(&lines, connections);
            // Each round starts with another receiver, so that none always
            // runs right after the same one (whose exit, or the kernel's
            // work for it, may still take the machine for a moment).
            for turn in 0..3 {
                match (round + slot + turn) % 3 {
                    0 => ours.add(
                        round,
                        slot,
                        sent,
                        correlator(ours_binary(), &app, &dir, &loads),
                    ),
                    1 => {
                        if let Some(binary) = &baseline {
                            before.add(round, slot, sent, correlator(binary, &app, &dir, &loads));
                        }
                    }
                    _ => {
                        if let Some(rsyslogd) = &rsyslogd {
                            theirs.add(round, slot, sent, rsyslog(rsyslogd, &dir, &loads, sent));
                        }
                    }
                }
            }
        }
    }
    // UDP: one sender, one datagram per message, as fast as it can send;
    // what matters is what each receiver loses at that rate.
    let measure_udp = measured.is_none();
    let mut udp_best = [(0.0f64, 0u64); 2];
    if measure_udp {
        for round in 1..=rounds {
            let before = kernel_udp_drops();
            let measured = correlator_udp(&app, &dir, &lines);
            udp_best[0] = print_round(round, "UDP", "correlator", sent, &measured, udp_best[0]);
            say_kernel_drops(before);
            if let Some(rsyslogd) = &rsyslogd {
                let before = kernel_udp_drops();
                let measured = rsyslog_udp(rsyslogd, &dir, &lines);
                udp_best[1] = print_round(round, "UDP", "rsyslog", sent, &measured, udp_best[1]);
                say_kernel_drops(before);
            }
        }
    }
    // RELP: acknowledged delivery, beside rsyslog's own RELP receiver.
    let mut relp_best = [(0.0f64, 0u64); 2];
    if measured.is_none() {
        let loads = split(&lines, RELP_CONNECTIONS);
        for round in 1..=rounds {
            let measured = correlator_relp(&app, &dir, &loads);
            relp_best[0] = print_round(round, "RELP", "correlator", sent, &measured, relp_best[0]);
            if let Some(rsyslogd) = &rsyslogd {
                let measured = rsyslog_relp(rsyslogd, &dir, &loads, sent);
                relp_best[1] = print_round(round, "RELP", "rsyslog", sent, &measured, relp_best[1]);
            }
        }
    }
    for (slot, _) in slots() {
        ours.print_best(rounds, slot);
        if baseline.is_some() {
            before.print_best(rounds, slot);
        }
        if rsyslogd.is_some() {
            theirs.print_best(rounds, slot);
        }
    }
    if measure_udp {
        println!(
            "best of {rounds}, UDP:            correlator {:>9.0} messages/s taken ({} lost in all rounds)",
            udp_best[0].0, udp_best[0].1
        );
        if rsyslogd.is_some() {
            println!(
                "best of {rounds}, UDP:            rsyslog    {:>9.0} messages/s taken ({} lost in all rounds)",
                udp_best[1].0, udp_best[1].1
            );
        }
    }
    if measured.is_none() {
        println!(
            "best of {rounds}, RELP ({RELP_CONNECTIONS} conns): correlator {:>9.0} messages/s answered after a checkpoint ({} lost in all rounds)",
            relp_best[0].0, relp_best[0].1
        );
        if rsyslogd.is_some() {
            println!(
                "best of {rounds}, RELP ({RELP_CONNECTIONS} conns): rsyslog    {:>9.0} messages/s answered and written to a file ({} lost in all rounds)",
                relp_best[1].0, relp_best[1].1
            );
        }
    }
    if std::env::var_os("CORRELATOR_BENCH_KEEP").is_some() {
        println!("files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Each connection's bytes, newline-framed. Every server's records go over
/// one connection, in the order it logged them, as a server's forwarder
/// sends them: with 64 connections each server has its own, with fewer
/// they share (a relay). Sessions are therefore never torn across
/// connections, whose relative progress the benchmark does not control.
fn split(lines: &[&str], connections: usize) -> Vec<Vec<u8>> {
    let mut loads = vec![Vec::with_capacity(lines.len() / connections * 130); connections];
    for line in lines {
        let bytes = &mut loads[server_of(line) % connections];
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    loads
}

/// The number of the server (`nodeN`, the hostname) that logged `line`.
fn server_of(line: &str) -> usize {
    line.split(' ')
        .nth(2)
        .and_then(|host| host.strip_prefix("node"))
        .and_then(|number| number.parse().ok())
        .expect("generated lines name their server nodeN")
}

/// Send every load on a connection of its own, at once; return when the
/// receiver has read each to its end (it closes its side then).
fn send_all(address: SocketAddr, loads: &[Vec<u8>]) {
    std::thread::scope(|scope| {
        for load in loads {
            scope.spawn(move || {
                let mut stream = TcpStream::connect(address).expect("connect");
                for piece in load.chunks(256 * 1024) {
                    stream.write_all(piece).expect("send");
                }
                stream.shutdown(Shutdown::Write).expect("shutdown");
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            });
        }
    });
}

struct Measured {
    seconds: f64,
    received: u64,
    /// Processor time the receiver used (user and system, all threads,
    /// start to exit), where known: steadier than the rate on a busy
    /// machine, so that two builds compare even when the rates are noisy.
    cpu_seconds: Option<f64>,
}

/// Processor time of this process's children that have been waited for,
/// in seconds (`cutime` + `cstime` of /proc/self/stat).
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(13)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// Connection counts measured, in order.
const CONNECTIONS: [usize; 3] = [1, 8, 64];

/// One receiver's best rate and messages lost, per connection count.
struct Tally {
    name: &'static str,
    what: &'static str,
    best: [f64; CONNECTIONS.len()],
    lost: [u64; CONNECTIONS.len()],
    cpu: [Vec<f64>; CONNECTIONS.len()],
}

impl Tally {
    fn new(name: &'static str, what: &'static str) -> Self {
        Tally {
            name,
            what,
            best: [0.0; CONNECTIONS.len()],
            lost: [0; CONNECTIONS.len()],
            cpu: Default::default(),
        }
    }

    /// Print and keep one round's result.
    fn add(&mut self, round: usize, slot: usize, sent: u64, measured: Measured) {
        let rate = measured.received as f64 / measured.seconds;
        let lost = sent - measured.received;
        let cpu = measured
            .cpu_seconds
            .map(|cpu| format!(", {cpu:.2} s of CPU"))
            .unwrap_or_default();
        println!(
            "round {round}, {:>2} connections: {:<10} {rate:>9.0} messages/s, {lost} lost{cpu}",
            CONNECTIONS[slot], self.name
        );
        self.best[slot] = self.best[slot].max(rate);
        self.lost[slot] += lost;
        self.cpu[slot].extend(measured.cpu_seconds);
    }

    fn print_best(&self, rounds: usize, slot: usize) {
        let mut cpu = self.cpu[slot].clone();
        cpu.sort_by(f64::total_cmp);
        let cpu = cpu
            .get(cpu.len().saturating_sub(1) / 2)
            .map(|median| format!(", median {median:.2} s of CPU"))
            .unwrap_or_default();
        println!(
            "best of {rounds}, {:>2} connections: {:<10} {:>9.0} messages/s {} ({} lost in all rounds{cpu})",
            CONNECTIONS[slot], self.name, self.best[slot], self.what, self.lost[slot]
        );
    }
}

/// The binary under test.
fn ours_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_correlator"))
}

fn correlator(binary: &Path, app: &Path, dir: &Path, loads: &[Vec<u8>]) -> Measured {
    let options: Vec<String> = std::env::var("CORRELATOR_BENCH_OPTIONS")
        .unwrap_or_default()
        .split_whitespace()
        .flat_map(|option| ["-o".to_owned(), option.to_owned()])
        .collect();
    let mut args = vec!["-o".to_owned(), "listen.tcp=127.0.0.1:0".to_owned()];
    args.extend(options);
    run_correlator(binary, app, dir, &args, "TCP", |address| {
        send_all(address, loads);
    })
}

/// Run `binary` listening with `args` until `send` has sent to its
/// `kind` address, then SIGTERM: the time from the first byte to the exit,
/// and the messages it says it took.
fn run_correlator(
    binary: &Path,
    app: &Path,
    dir: &Path,
    args: &[String],
    kind: &str,
    send: impl FnOnce(SocketAddr),
) -> Measured {
    let log = dir.join("correlator.log");
    // Durable state on, as by default, but each round from nothing (unless
    // CORRELATOR_BENCH_OPTIONS turns it off).
    let state_off = args.iter().any(|arg| arg == "state.enabled=false");
    let fresh: &[&str] = if state_off {
        &[]
    } else {
        &["--discard-all-state"]
    };
    let mut child = Command::new(binary)
        .args(["run", "--app"])
        .arg(app)
        .args(args)
        .args(fresh)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("run correlator");
    let marker = format!("listening for syslog over {kind} on ");
    let address: SocketAddr = wait_for(&mut child, "correlator listens", || {
        std::fs::read_to_string(&log).ok().and_then(|text| {
            text.lines()
                .find_map(|line| line.split_once(&marker).map(|(_, a)| a.trim().to_owned()))
                .and_then(|address| address.parse().ok())
        })
    });
    let started = Instant::now();
    send(address);
    // At SIGTERM the listener still takes what the kernel holds.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let cpu_before = children_cpu_seconds();
    let exit = child.wait().expect("wait");
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = Some(children_cpu_seconds() - cpu_before);
    assert!(exit.success(), "correlator failed: see {}", log.display());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let received = text
        .lines()
        .find(|line| line.contains("listener stopped"))
        .and_then(|line| line.split_once(" messages="))
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(0);
    Measured {
        seconds,
        received,
        cpu_seconds,
    }
}

fn rsyslog(rsyslogd: &Path, dir: &Path, loads: &[Vec<u8>], expected: u64) -> Measured {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let out = dir.join("rsyslog.out");
    let _ = std::fs::remove_file(&out);
    let mut child = start_rsyslog(
        rsyslogd,
        dir,
        "rsyslog",
        &format!(
            "module(load=\"imtcp\" MaxSessions=\"1000\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n"
        ),
        &out,
    );
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(&mut child, "rsyslog listens", || {
        TcpStream::connect(address).ok().map(|_| ())
    });
    // The probe connection above sent nothing; start from an empty file.
    let started = Instant::now();
    send_all(address, loads);
    let received = wait_for_file(&out, expected);
    let seconds = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    Measured {
        seconds,
        received,
        cpu_seconds: None,
    }
}

/// Start rsyslogd with `input` (module and input lines), writing one byte
/// and a newline per message to `out`; `name` names its files in `dir`.
fn start_rsyslog(rsyslogd: &Path, dir: &Path, name: &str, input: &str, out: &Path) -> Child {
    let config = dir.join(format!("{name}.conf"));
    std::fs::write(
        &config,
        format!(
            "global(workDirectory=\"{dir}\")\n{input}\
             template(name=\"one\" type=\"string\" string=\"x\\n\")\n\
             *.* action(type=\"omfile\" file=\"{out}\" template=\"one\")\n",
            dir = dir.display(),
            out = out.display()
        ),
    )
    .expect("rsyslog config");
    Command::new(rsyslogd)
        .arg("-n")
        .arg("-f")
        .arg(&config)
        .arg("-i")
        .arg(dir.join(format!("{name}.pid")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run rsyslogd")
}

/// Poll `ready` until it gives a value; panics if `child` exits first.
fn wait_for<T>(child: &mut Child, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = ready() {
            return value;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}) before {what}");
        }
        assert!(started.elapsed() < STALL, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Print one UDP or RELP round; returns the best rate and the messages
/// lost so far.
fn print_round(
    round: usize,
    kind: &str,
    name: &str,
    sent: u64,
    measured: &Measured,
    best: (f64, u64),
) -> (f64, u64) {
    let rate = measured.received as f64 / measured.seconds;
    let lost = sent - measured.received.min(sent);
    println!("round {round}, {kind:<16} {name:<10} {rate:>9.0} messages/s, {lost} lost");
    (best.0.max(rate), best.1 + lost)
}

/// Datagrams the kernel dropped so far for want of room in a receive
/// buffer (`RcvbufErrors` of /proc/net/snmp), machine-wide.
fn kernel_udp_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut rows = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// Say how many of a round's lost datagrams the kernel dropped (its
/// receive buffer was full: the receiver did not read in time), as against
/// those the receiver itself dropped.
fn say_kernel_drops(before: u64) {
    let dropped = kernel_udp_drops().saturating_sub(before);
    if dropped > 0 {
        println!("    of them dropped by the kernel (receive buffer full): {dropped}");
    }
}

/// RELP connections measured.
const RELP_CONNECTIONS: usize = 8;

/// Messages a RELP client sends before it waits for answers.
const RELP_WINDOW: usize = 1024;

/// Send every load over a RELP session of its own, at once; return when
/// every message has been answered and each session closed.
fn send_relp(address: SocketAddr, loads: &[Vec<u8>]) {
    std::thread::scope(|scope| {
        for load in loads {
            scope.spawn(move || relp_session(address, load));
        }
    });
}

/// One RELP session: `open`, every line of `load` as `syslog` with at most
/// [`RELP_WINDOW`] unanswered, then `close`.
fn relp_session(address: SocketAddr, load: &[u8]) {
    use std::io::BufRead as _;
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut answers =
        std::io::BufReader::with_capacity(64 * 1024, stream.try_clone().expect("clone the stream"));
    let mut read_answer = || -> (u64, Vec<u8>) {
        let mut field = Vec::new();
        answers.read_until(b' ', &mut field).expect("txnr");
        let txnr = std::str::from_utf8(field.trim_ascii())
            .ok()
            .and_then(|t| t.parse().ok());
        field.clear();
        answers.read_until(b' ', &mut field).expect("command");
        assert_eq!(field, b"rsp ", "an answer");
        let mut length = 0usize;
        let mut byte = [0u8];
        loop {
            answers.read_exact(&mut byte).expect("length");
            match byte[0] {
                digit @ b'0'..=b'9' => length = length * 10 + usize::from(digit - b'0'),
                _ => break,
            }
        }
        let mut data = vec![0u8; length];
        if length > 0 {
            answers.read_exact(&mut data).expect("data");
            answers.read_exact(&mut byte).expect("trailer");
        }
        (txnr.expect("a transaction number"), data)
    };
    let frame = |out: &mut Vec<u8>, txnr: u64, command: &str, data: &[u8]| {
        out.extend_from_slice(format!("{txnr} {command} {} ", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.push(b'\n');
    };
    let mut out = Vec::new();
    frame(
        &mut out,
        1,
        "open",
        b"relp_version=0\nrelp_software=bench\ncommands=syslog",
    );
    stream.write_all(&out).expect("open");
    out.clear();
    assert!(read_answer().1.starts_with(b"200 OK"), "open refused");
    let mut lines = load
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty());
    let mut txnr = 2;
    let mut unanswered = 0;
    let mut more = true;
    while more || unanswered > 0 {
        // Top the window up once half of it is answered.
        if more && unanswered <= RELP_WINDOW / 2 {
            while unanswered < RELP_WINDOW {
                let Some(line) = lines.next() else {
                    more = false;
                    break;
                };
                frame(&mut out, txnr, "syslog", line);
                txnr += 1;
                unanswered += 1;
            }
            stream.write_all(&out).expect("send");
            out.clear();
        }
        if unanswered > 0 {
            assert_eq!(read_answer().1, b"200 OK");
            unanswered -= 1;
        }
    }
    stream
        .write_all(format!("{txnr} close 0\n").as_bytes())
        .expect("close");
    let _ = read_answer();
}

fn correlator_relp(app: &Path, dir: &Path, loads: &[Vec<u8>]) -> Measured {
    let args = ["listen.tcp=", "listen.relp=127.0.0.1:0"]
        .iter()
        .flat_map(|option| ["-o".to_owned(), (*option).to_owned()])
        .collect::<Vec<_>>();
    run_correlator(ours_binary(), app, dir, &args, "RELP", |address| {
        send_relp(address, loads);
    })
}

fn rsyslog_relp(rsyslogd: &Path, dir: &Path, loads: &[Vec<u8>], expected: u64) -> Measured {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let out = dir.join("rsyslog-relp.out");
    let _ = std::fs::remove_file(&out);
    let mut child = start_rsyslog(
        rsyslogd,
        dir,
        "rsyslog-relp",
        &format!(
            "module(load=\"imrelp\")\n\
             input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{port}\" MaxDataSize=\"65536\")\n"
        ),
        &out,
    );
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(&mut child, "rsyslog listens", || {
        TcpStream::connect(address).ok().map(|_| ())
    });
    let started = Instant::now();
    send_relp(address, loads);
    let received = wait_for_file(&out, expected);
    let seconds = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    Measured {
        seconds,
        received,
        cpu_seconds: None,
    }
}

/// Wait until `out` holds `expected` messages (two bytes each), or stops
/// growing for [`STALL`]; the messages it holds.
fn wait_for_file(out: &Path, expected: u64) -> u64 {
    let mut last = (0, Instant::now());
    loop {
        let received = std::fs::metadata(out).map_or(0, |m| m.len() / 2);
        if received >= expected {
            return received;
        }
        if received != last.0 {
            last = (received, Instant::now());
        } else if last.1.elapsed() > STALL {
            return received;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Send every line as one datagram to `address`, as fast as one sender
/// can.
fn send_datagrams(address: SocketAddr, lines: &[&str]) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    for line in lines {
        socket.send_to(line.as_bytes(), address).expect("send");
    }
}

fn correlator_udp(app: &Path, dir: &Path, lines: &[&str]) -> Measured {
    let args = ["listen.tcp=", "listen.udp=127.0.0.1:0"]
        .iter()
        .flat_map(|option| ["-o".to_owned(), (*option).to_owned()])
        .collect::<Vec<_>>();
    run_correlator(ours_binary(), app, dir, &args, "UDP", |address| {
        send_datagrams(address, lines);
    })
}

fn rsyslog_udp(rsyslogd: &Path, dir: &Path, lines: &[&str]) -> Measured {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free port")
        .port();
    let out = dir.join("rsyslog-udp.out");
    let _ = std::fs::remove_file(&out);
    let mut child = start_rsyslog(
        rsyslogd,
        dir,
        "rsyslog-udp",
        &format!(
            "module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\")\n"
        ),
        &out,
    );
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    // rsyslog says nothing when imudp is ready: probe until a datagram
    // comes out.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    wait_for(&mut child, "rsyslog listens", || {
        let _ = probe.send_to(b"<13>1 2026-11-27T10:00:00Z probe app - - - probe", address);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::metadata(&out)
            .ok()
            .filter(|m| m.len() > 0)
            .map(|_| ())
    });
    let before = std::fs::metadata(&out).map_or(0, |m| m.len() / 2);
    let started = Instant::now();
    send_datagrams(address, lines);
    // Taken once the file stops growing for a second.
    let mut last = (0, Instant::now());
    loop {
        let written = std::fs::metadata(&out).map_or(0, |m| m.len() / 2);
        if written != last.0 {
            last = (written, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = (last.1 - started).as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    Measured {
        seconds,
        received: last.0 - before,
        cpu_seconds: None,
    }
}
