//! More than one machine: front-ends publishing into NATS JetStream and
//! workers consuming it, against a real nats-server (started here, with
//! JetStream, on 127.0.0.1), compared with one process over the same
//! records.

mod common;

use common::relp::RelpClient;
use common::*;
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A nats-server with JetStream, on a port of its own on 127.0.0.1, its
/// store in a scratch directory; killed when dropped.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        assert!(
            Path::new(NATS_SERVER).is_file(),
            "{NATS_SERVER} is not installed (apt-get install nats-server; ./test.sh does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = NatsServer {
            child: None,
            port,
            store: tempfile::tempdir().expect("temp dir"),
        };
        server.launch();
        server
    }

    /// Start the server (again) on its port and store, and wait until
    /// JetStream is ready.
    fn launch(&mut self) {
        let log = self.store.path().join("server.log");
        let child = Command::new(NATS_SERVER)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path().join("jetstream"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("Server is ready")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nats-server is not ready after 30 s:\n{said}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the server (SIGTERM), keeping its store.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        terminate(&mut child);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Partitions of the tests' streams.
const PARTITIONS: u32 = 8;

/// Held by each test while it runs: each starts a server, front-ends and
/// up to three workers, so they run one at a time, as they would on the
/// machines they stand for, rather than starving each other of the two
/// cores a CI machine has.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Wait for the other tests of this file to finish.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `[config]` of an app on the stream `stream` of `nats` in `role`,
/// with short leases and frequent checkpoints.
fn stream_config(nats: &NatsServer, stream: &str, role: &str) -> String {
    format!(
        "[config]\nstream.role = \"{role}\"\nstream.nats_url = \"{}\"\nstream.name = \"{stream}\"\nstream.partitions = {PARTITIONS}\nstream.lease_s = 3\nstate.checkpoint_interval = 0.2\n",
        nats.url()
    )
}

/// A directory with `front.toml` (a front-end) and `worker.toml` (the
/// sshd module and the JSON log handler) on stream `stream`, and the
/// capture `input.cap`.
fn stream_dir(nats: &NatsServer, stream: &str, capture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("front.toml"),
        stream_config(nats, stream, "publish"),
    )
    .expect("write front.toml");
    std::fs::write(
        dir.path().join("worker.toml"),
        format!("{}{SSHD_JSON_APP}", stream_config(nats, stream, "work")),
    )
    .expect("write worker.toml");
    std::fs::write(dir.path().join("input.cap"), capture).expect("write capture");
    dir
}

/// Publish `capture` (a file in `dir`) through the front-end.
fn publish(dir: &Path, capture: &str) -> Run {
    let run = correlator(dir, &["run", "--app", "front.toml", "--read-file", capture]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run
}

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `count` sshd records from 64 servers, in time order: logins (a session
/// each), failed logins and brute forces of 6 failed passwords from
/// addresses of one server each, and failed passwords from 40 addresses
/// that try every server, so that their counts (and `SSHDAttemptsExceeded`)
/// need every server's records, whatever partitions the servers are in.
fn sshd_capture(count: usize) -> String {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut steps = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::new();
    let mut lines = 0;
    let mut second = 0u64;
    let mut pid = 1000u64;
    while lines < count {
        let server = rng.below(64);
        pid += 1;
        let addr = format!("10.{server}.{}.{}", rng.below(4), rng.below(250));
        let port = 1024 + rng.below(60_000);
        let kind = rng.below(12);
        let roaming = format!("203.0.113.{}", rng.below(40));
        let user = format!("user{}", rng.below(20));
        let mut line = |text: &str, out: &mut String| {
            second += steps.below(2);
            let time = 1_676_905_200 + second;
            // 2023-02-20 and the days after it (a day is 86,400 s).
            let day = 20 + (time - 1_676_851_200) / 86_400;
            let (h, m, s) = (time / 3600 % 24, time / 60 % 60, time % 60);
            let _ = writeln!(
                out,
                "<86>1 2023-02-{day:02}T{h:02}:{m:02}:{s:02}Z node{server} sshd {pid} - - {text}"
            );
            lines += 1;
        };
        match kind {
            0..=5 => {
                line(
                    &format!("Accepted password for {user} from {addr} port {port} ssh2"),
                    &mut out,
                );
                line(
                    &format!("pam_unix(sshd:session): session opened for user {user} by (uid=0)"),
                    &mut out,
                );
                line(
                    &format!("pam_unix(sshd:session): session closed for user {user}"),
                    &mut out,
                );
            }
            6..=8 => {
                line(
                    &format!("Failed password for root from {addr} port {port} ssh2"),
                    &mut out,
                );
                line(
                    &format!(
                        "Connection closed by authenticating user root {addr} port {port} [preauth]"
                    ),
                    &mut out,
                );
            }
            10 | 11 => {
                line(
                    &format!("Failed password for root from {roaming} port {port} ssh2"),
                    &mut out,
                );
                line(
                    &format!(
                        "Connection closed by authenticating user root {roaming} port {port} [preauth]"
                    ),
                    &mut out,
                );
            }
            _ => {
                for _ in 0..6 {
                    line(
                        &format!(
                            "Failed password for invalid user admin from {addr} port {port} ssh2"
                        ),
                        &mut out,
                    );
                }
                line(
                    &format!(
                        "Connection closed by invalid user admin {addr} port {port} [preauth]"
                    ),
                    &mut out,
                );
            }
        }
    }
    // Exactly `count`: the last group may be cut short.
    out.lines()
        .take(count)
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The event lines of a JSON log, statistics aside (each partition counts
/// its own), sorted.
fn events_without_statistics(stdout: &str) -> Vec<String> {
    let mut events: Vec<String> = stdout
        .lines()
        .filter(|line| !line.contains("\"kind\":\"SSHDStats\""))
        .map(str::to_owned)
        .collect();
    events.sort();
    events
}

/// The sum of each counter of the `SSHDStats` events in `stdout`.
fn statistics_sum(stdout: &str) -> std::collections::BTreeMap<String, i64> {
    let mut sums = std::collections::BTreeMap::new();
    for event in json_lines(stdout)
        .iter()
        .filter(|event| event["kind"] == "SSHDStats")
    {
        for (name, value) in event["fields"].as_object().expect("fields") {
            *sums.entry(name.clone()).or_default() += value.as_i64().expect("a count");
        }
    }
    sums
}

/// One process's events over `capture`, and its statistics.
fn one_process(capture: &str) -> (Vec<String>, std::collections::BTreeMap<String, i64>) {
    let dir = app_dir(SSHD_JSON_APP);
    let run = replay_in(dir.path(), capture, &["state.enabled=false"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    (
        events_without_statistics(&run.stdout),
        statistics_sum(&run.stdout),
    )
}

/// How many partitions `worker` holds now, as its log tells.
fn held(worker: &Background) -> usize {
    let stderr = worker.stderr();
    stderr
        .matches("took partition")
        .count()
        .saturating_sub(stderr.matches("let partition").count())
        .saturating_sub(
            stderr
                .matches("handed over without a last checkpoint")
                .count(),
        )
}

/// Start `count` workers in `dir` (runs `first`, `first + 1`, ...) and
/// wait until they share the partitions.
fn start_workers(dir: &Path, first: u32, count: u32) -> Vec<Background> {
    // One after another, each once it has set itself up (its streams and
    // buckets made or found), as an operator adds workers.
    let mut workers: Vec<Background> = Vec::new();
    for run in first..first + count {
        let mut worker = Background::start(dir, run, &["run", "--app", "worker.toml"]);
        worker.wait_until("working", |worker| {
            worker.stderr().contains("working on stream")
        });
        workers.push(worker);
    }
    let share = PARTITIONS.div_ceil(count) as usize;
    let started = Instant::now();
    loop {
        let holding: Vec<usize> = workers.iter().map(held).collect();
        if holding.iter().sum::<usize>() == PARTITIONS as usize
            && holding.iter().all(|&n| n >= 1 && n <= share)
        {
            return workers;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the workers do not share the partitions ({holding:?}):\n{}",
            workers[0].stderr()
        );
        // A worker that exited says why.
        for worker in &mut workers {
            worker.wait_until("running", |_| true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every event line the workers wrote so far, statistics aside.
fn all_events(workers: &[Background]) -> Vec<String> {
    let mut events: Vec<String> = workers
        .iter()
        .flat_map(|worker| events_without_statistics(&worker.stdout()))
        .collect();
    events.sort();
    events
}

/// `seen` (sorted) is `expected`; if not, fail naming what is missing,
/// what is extra and what the workers warned of.
fn assert_same_events(seen: &[String], expected: &[String], what: &str, workers: &[Background]) {
    if seen == expected {
        return;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|event| seen.binary_search(event).is_err())
        .collect();
    let mut unique = seen.to_vec();
    unique.dedup();
    let extra: Vec<&String> = unique
        .iter()
        .filter(|event| expected.binary_search(event).is_err())
        .collect();
    let repeated: Vec<&String> = seen
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| &pair[0])
        .collect();
    let warnings: Vec<String> = workers
        .iter()
        .flat_map(|worker| {
            worker
                .stderr()
                .lines()
                .filter(|line| line.contains("WARN") || line.contains("ERROR"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    panic!(
        "{what}: {} events, {} expected; {} missing, such as {:#?}; {} extra, such as {:#?}; {} repeated, such as {:#?}\nwarnings: {warnings:#?}",
        seen.len(),
        expected.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
        repeated.len(),
        &repeated[..repeated.len().min(5)],
    );
}

/// Wait until the workers have written `expected` events (statistics
/// aside), counting repeats once.
fn wait_for_events(workers: &mut [Background], expected: usize) {
    let started = Instant::now();
    loop {
        let mut events = all_events(workers);
        events.dedup();
        if events.len() >= expected {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{} of {expected} events after {PATIENCE:?}:\n{}",
            events.len(),
            workers[0].stderr()
        );
        for worker in workers.iter_mut() {
            worker.wait_until("running", |_| true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stop every worker with SIGTERM, all at once (so that none takes over
/// partitions another let go, and reports their statistics again); each
/// must exit 0.
fn stop_all(workers: &mut [Background]) {
    let codes = Background::stop_together(workers);
    for (worker, code) in workers.iter().zip(codes) {
        assert_eq!(code, Some(0), "{}", worker.stderr());
    }
}

#[test]
fn one_and_three_workers_give_the_events_of_one_process() {
    let _alone = alone();
    let capture = sshd_capture(200_000);
    let (expected, expected_statistics) = one_process(&capture);
    assert!(expected.len() > 50_000, "{}", expected.len());
    for kind in [
        "SSHDLoginSucceeded",
        "SSHDLoginFailed",
        "SSHDAttemptsExceeded",
    ] {
        assert!(
            expected
                .iter()
                .any(|line| line.contains(&format!("\"kind\":\"{kind}\""))),
            "no {kind}"
        );
    }
    let nats = NatsServer::start();
    for (stream, count) in [("ONE", 1), ("THREE", 3)] {
        let dir = stream_dir(&nats, stream, &capture);
        let mut workers = start_workers(dir.path(), 1, count);
        let published = publish(dir.path(), "input.cap");
        assert_has(&published.stderr, "records=200000 unparsable=0");
        wait_for_events(&mut workers, expected.len());
        stop_all(&mut workers);
        assert_same_events(
            &all_events(&workers),
            &expected,
            &format!("{count} workers, each event once"),
            &workers,
        );
        for worker in &workers {
            assert!(!worker.stdout().is_empty(), "every worker had a share");
        }
        let statistics = workers
            .iter()
            .map(|worker| statistics_sum(&worker.stdout()))
            .fold(std::collections::BTreeMap::new(), |mut sum, one| {
                for (name, value) in one {
                    *sum.entry(name).or_insert(0) += value;
                }
                sum
            });
        assert_eq!(
            statistics, expected_statistics,
            "{count} workers' statistics add up"
        );
    }
}

/// Six servers whose hostnames fall in six different partitions.
fn servers_in_different_partitions() -> Vec<String> {
    let mut servers: Vec<String> = Vec::new();
    let mut partitions = Vec::new();
    for n in 0.. {
        let name = format!("web{n}");
        let partition = correlator::stream::partition_of(&name, PARTITIONS);
        if !partitions.contains(&partition) {
            partitions.push(partition);
            servers.push(name);
        }
        if servers.len() == 6 {
            return servers;
        }
    }
    unreachable!("partitions run out")
}

#[test]
fn a_brute_force_spread_over_six_servers_in_different_partitions_is_counted_whole() {
    let _alone = alone();
    let servers = servers_in_different_partitions();
    let mut capture = String::new();
    let mut second = 0;
    // Two attackers, each trying the six servers in turn, twice, one
    // password every 7 s; a login elsewhere between; every server's own
    // logins.
    for round in 0..2 {
        for (n, server) in servers.iter().enumerate() {
            for (attacker, pid) in [("198.51.100.66", 100), ("198.51.100.77", 200)] {
                second += 7;
                let text = format!(
                    "<86>1 2023-02-20T15:{:02}:{:02}Z {server} sshd {} - - Failed password for root from {attacker} port {} ssh2",
                    second / 60,
                    second % 60,
                    pid + round * 10 + n,
                    40_000 + second
                );
                capture.push_str(&text);
                capture.push('\n');
            }
        }
    }
    let (expected, _) = one_process(&capture);
    let exceeded: Vec<&String> = expected
        .iter()
        .filter(|line| line.contains("SSHDAttemptsExceeded"))
        .collect();
    assert_eq!(exceeded.len(), 4, "{expected:#?}");
    assert!(
        exceeded[0].contains(&format!("\"servers\":\"{}\"", {
            let mut five: Vec<&str> = servers[..5].iter().map(String::as_str).collect();
            five.sort_unstable();
            five.join(", ")
        })),
        "{}",
        exceeded[0]
    );
    let nats = NatsServer::start();
    let dir = stream_dir(&nats, "SPREAD", &capture);
    let mut workers = start_workers(dir.path(), 1, 3);
    publish(dir.path(), "input.cap");
    wait_for_events(&mut workers, expected.len());
    stop_all(&mut workers);
    assert_eq!(all_events(&workers), expected);
}

/// Three workers half-way through a 200k-record capture on stream
/// `stream`: the first half published, the first worker (the victim of
/// the test) has processed records and a checkpoint has been taken (and
/// copied into JetStream); `second.cap` is there to publish.
struct HalfWay {
    /// The events of one process over the whole capture.
    expected: Vec<String>,
    _nats: NatsServer,
    dir: tempfile::TempDir,
    workers: Vec<Background>,
}

fn half_way(stream: &str) -> HalfWay {
    let capture = sshd_capture(200_000);
    let (expected, _) = one_process(&capture);
    let lines: Vec<&str> = capture.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let nats = NatsServer::start();
    let dir = stream_dir(&nats, stream, &capture);
    std::fs::write(dir.path().join("first.cap"), first.join("\n") + "\n").expect("write");
    std::fs::write(dir.path().join("second.cap"), second.join("\n") + "\n").expect("write");
    let mut workers = start_workers(dir.path(), 1, 3);
    publish(dir.path(), "first.cap");
    workers[0].wait_until("processing records", |worker| {
        worker.stdout().lines().count() > 1000
            && worker.stderr().contains("state checkpoint committed")
    });
    HalfWay {
        expected,
        _nats: nats,
        dir,
        workers,
    }
}

#[test]
fn a_worker_killed_mid_stream_has_its_partitions_taken_over_and_no_event_is_lost() {
    let _alone = alone();
    let HalfWay {
        expected,
        _nats,
        dir,
        mut workers,
    } = half_way("KILLED");
    let victim_partitions = held(&workers[0]);
    workers[0].kill();
    publish(dir.path(), "second.cap");
    let mut survivors = workers.split_off(1);
    let victim = workers.pop().expect("the victim");
    wait_for_every_event(&mut survivors, &[&victim], &expected);
    let holding: usize = survivors.iter().map(held).sum();
    assert_eq!(
        holding, PARTITIONS as usize,
        "the victim's {victim_partitions} partitions are taken over"
    );
    stop_all(&mut survivors);
    let mut seen = all_events(&survivors);
    seen.extend(events_without_statistics(&victim.stdout()));
    seen.sort();
    only_the_victims_work_repeated(seen, &expected, &victim);
    // The survivors took the victim's partitions over from its snapshots.
    assert!(
        survivors
            .iter()
            .any(|worker| worker.stderr().contains("restored state snapshot")),
        "{}",
        survivors[0].stderr()
    );
}

/// Wait until `running` and `stopped` (workers no longer running) have
/// written every one of `expected` events; fail naming the missing ones,
/// and what their servers' events were, if that takes longer than
/// [`PATIENCE`].
fn wait_for_every_event(running: &mut [Background], stopped: &[&Background], expected: &[String]) {
    let unique_so_far = |running: &[Background]| {
        let mut seen = all_events(running);
        for worker in stopped {
            seen.extend(events_without_statistics(&worker.stdout()));
        }
        seen.sort();
        seen.dedup();
        seen
    };
    let started = Instant::now();
    while unique_so_far(running).len() < expected.len() {
        if started.elapsed() > PATIENCE {
            let unique = unique_so_far(running);
            let missing: Vec<&String> = expected
                .iter()
                .filter(|event| unique.binary_search(event).is_err())
                .take(5)
                .collect();
            let hosts: Vec<String> = missing
                .iter()
                .filter_map(|event| {
                    let (_, rest) = event.split_once("\"host\":\"")?;
                    Some(rest.split('"').next()?.to_owned())
                })
                .collect();
            let alike: Vec<&String> = unique
                .iter()
                .filter(|event| {
                    hosts
                        .iter()
                        .any(|host| event.contains(&format!("\"host\":\"{host}\"")))
                })
                .collect();
            panic!(
                "events are missing after {PATIENCE:?}, such as {missing:#?}\nevents of the same hosts: {alike:#?}\n{}",
                running
                    .iter()
                    .chain(stopped.iter().copied())
                    .map(|worker| worker.stderr())
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            );
        }
        for worker in running.iter_mut() {
            worker.wait_until("running", |_| true);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `seen` (every event the workers wrote, sorted) is `expected` with
/// repeats, and every repeat is an event `victim` wrote: the work it did
/// since its last checkpoint, done again by the partitions' next owners.
fn only_the_victims_work_repeated(seen: Vec<String>, expected: &[String], victim: &Background) {
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(
        unique, expected,
        "every event, once the repeats are counted once"
    );
    let written_by_victim = events_without_statistics(&victim.stdout());
    let repeated = seen.len() - unique.len();
    assert!(
        repeated <= written_by_victim.len(),
        "{repeated} repeats, the victim wrote {}",
        written_by_victim.len()
    );
    for pair in seen.windows(2).filter(|pair| pair[0] == pair[1]) {
        assert!(
            written_by_victim.binary_search(&pair[0]).is_ok(),
            "repeated but not the victim's: {}",
            pair[0]
        );
    }
}

#[test]
fn a_worker_paused_past_its_leases_is_fenced_off_and_no_event_is_lost() {
    let _alone = alone();
    let HalfWay {
        expected,
        _nats,
        dir,
        mut workers,
    } = half_way("PAUSED");
    // Paused (as by a long stall of its machine) past its leases (3 s):
    // the others take its partitions over and go on with the second half.
    let victims_share = held(&workers[0]);
    workers[0].signal("STOP");
    let others_hold_all = |workers: &[Background]| {
        workers[1..].iter().map(held).sum::<usize>() == PARTITIONS as usize
    };
    let started = Instant::now();
    while !others_hold_all(&workers) {
        assert!(
            started.elapsed() < PATIENCE,
            "the paused worker's partitions are not taken over:\n{}",
            workers[1].stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    publish(dir.path(), "second.cap");
    // Woken, it knows at once that its leases lapsed (monotonic time
    // went on while it was stopped), or, if stopped within a commit, the
    // commit finds the state entry rewritten: each of its runs ends,
    // publishing and committing nothing more, and the worker goes on.
    workers[0].signal("CONT");
    workers[0].wait_until("fenced off", |worker| {
        worker
            .stderr()
            .matches("handed over without a last checkpoint")
            .count()
            == victims_share
    });
    wait_for_every_event(&mut workers, &[], &expected);
    stop_all(&mut workers);
    only_the_victims_work_repeated(all_events(&workers), &expected, &workers[0]);
    let victim = workers[0].stderr();
    assert!(!victim.contains("panicked"), "the paused worker:\n{victim}");
}

#[test]
fn hostile_modules_flooding_or_stalling_the_exchange_do_not_stop_a_worker() {
    let _alone = alone();
    let capture = sshd_capture(20_000);
    let (expected, _) = one_process(&capture);
    let nats = NatsServer::start();
    let dir = stream_dir(&nats, "HOSTILE", &capture);
    // Beside the sshd module: one that sends keyed messages past every
    // budget (150,000 in one call, 2 MiB ones, 2 MiB per 500 records),
    // and one that never returns from receiving one.
    let worker = dir.path().join("worker.toml");
    let mut app = std::fs::read_to_string(&worker).expect("read");
    for (name, attack, timeout) in [
        ("flood", "exchange-flood", 10_000),
        ("looper", "loop-receive", 100),
    ] {
        write!(
            app,
            "[modules.{name}]\ncomponent = '{}'\nconfig = {{ attack = \"{attack}\" }}\nlimits = {{ call_timeout_ms = {timeout} }}\n",
            env!("CORRELATOR_TEST_GUEST_HOSTILE")
        )
        .expect("write to a string");
    }
    std::fs::write(&worker, app).expect("write");
    let mut workers = start_workers(dir.path(), 1, 1);
    publish(dir.path(), "input.cap");
    let sshd_events = |workers: &[Background]| -> Vec<String> {
        all_events(workers)
            .into_iter()
            .filter(|event| event.contains("\"module\":\"OpenSSH\""))
            .collect()
    };
    let started = Instant::now();
    while sshd_events(&workers).len() < expected.len() {
        assert!(
            started.elapsed() < PATIENCE,
            "{} of {} sshd events after {PATIENCE:?}:\n{}",
            sshd_events(&workers).len(),
            expected.len(),
            workers[0].stderr()
        );
        workers[0].wait_until("running", |_| true);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_all(&mut workers);
    assert_same_events(
        &sshd_events(&workers),
        &expected,
        "the sshd module beside hostile ones",
        &workers,
    );
    // Each partition's flood instance sent seven pieces of 256 KiB within
    // its budget (8 of them, 8 x 1.75 MiB for one partition, in pieces
    // of at most the server's 1 MiB): all arrived.
    let pieces: Vec<String> = all_events(&workers)
        .into_iter()
        .filter(|event| event.contains("\"module\":\"flood\"") && event.contains("\"position\":-2"))
        .collect();
    assert_eq!(
        pieces.len(),
        7 * PARTITIONS as usize,
        "{pieces:?}\n{}",
        workers[0].stderr()
    );
    assert!(
        pieces
            .iter()
            .all(|event| event.contains("\"clock\":262144")),
        "{pieces:?}"
    );
    let stderr = workers[0].stderr();
    assert_has(
        &stderr,
        "keyed messages past the call's budget (100000 messages, 4 MiB) are dropped and counted instance=flood",
    );
    assert_has(
        &stderr,
        "keyed messages are larger than the NATS server takes (1047552 bytes); they are dropped",
    );
    assert_has(
        &stderr,
        "instance failed: ran longer than its call time limit (100 ms) instance=looper call=\"receive\"",
    );
}

#[test]
fn the_nats_server_restarted_mid_stream_loses_nothing_and_repeats_nothing() {
    let _alone = alone();
    let capture = sshd_capture(100_000);
    let (expected, _) = one_process(&capture);
    let lines: Vec<&str> = capture.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let mut nats = NatsServer::start();
    let dir = stream_dir(&nats, "RESTARTED", &capture);
    // Leases outlast the restart.
    for app in ["front.toml", "worker.toml"] {
        let path = dir.path().join(app);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(
            &path,
            text.replace("stream.lease_s = 3", "stream.lease_s = 30"),
        )
        .expect("write");
    }
    std::fs::write(dir.path().join("first.cap"), first.join("\n") + "\n").expect("write");
    std::fs::write(dir.path().join("second.cap"), second.join("\n") + "\n").expect("write");
    let mut workers = start_workers(dir.path(), 1, 2);
    publish(dir.path(), "first.cap");
    workers[0].wait_until("processing records", |worker| !worker.stdout().is_empty());
    nats.stop();
    std::thread::sleep(Duration::from_secs(1));
    nats.launch();
    publish(dir.path(), "second.cap");
    wait_for_events(&mut workers, expected.len());
    stop_all(&mut workers);
    assert_same_events(
        &all_events(&workers),
        &expected,
        "each event exactly once",
        &workers,
    );
    assert!(
        workers
            .iter()
            .any(|worker| worker.stderr().contains("disconnected from NATS")),
        "{}",
        workers[0].stderr()
    );
}

#[test]
fn a_relp_front_end_answers_only_once_jetstream_has_the_records() {
    let _alone = alone();
    let mut nats = NatsServer::start();
    let dir = stream_dir(&nats, "RELP", "");
    std::fs::write(
        dir.path().join("report.toml"),
        format!("{}{REPORT_APP}", stream_config(&nats, "RELP", "work")),
    )
    .expect("write report.toml");
    let mut front = Background::start(
        dir.path(),
        1,
        &[
            "run",
            "--app",
            "front.toml",
            "-o",
            "listen.tcp=",
            "-o",
            "listen.relp=127.0.0.1:0",
        ],
    );
    let marker = "listening for syslog over RELP on ";
    front.wait_until("listening", |front| front.stderr().contains(marker));
    let stderr = front.stderr();
    let (_, rest) = stderr.split_once(marker).expect("the RELP address");
    let address: std::net::SocketAddr = rest
        .split_whitespace()
        .next()
        .and_then(|address| address.parse().ok())
        .expect("an address");
    let connection = TcpStream::connect(address).expect("connect");
    let probe = connection.try_clone().expect("a second handle");
    let (mut client, _) = RelpClient::open(connection);
    let record = |n: u32| {
        format!(
            "<13>1 2023-02-20T15:00:{:02}Z web{n} app - - - relp {n}",
            n % 60
        )
    };
    for n in 1..=20 {
        let txnr = client.send("syslog", &record(n));
        assert_eq!(client.answer(), Some((txnr, "200 OK".to_owned())));
    }
    // JetStream is down: a message is not answered.
    nats.stop();
    let unanswered = client.send("syslog", &record(21));
    std::thread::sleep(Duration::from_secs(2));
    probe.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    assert_eq!(
        probe.peek(&mut byte).map_err(|error| error.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "no answer while JetStream is down"
    );
    probe.set_nonblocking(false).expect("blocking");
    nats.launch();
    assert_eq!(client.answer(), Some((unanswered, "200 OK".to_owned())));
    assert_eq!(front.stop(), Some(0), "{}", front.stderr());
    // The stream holds the 21 records, each once.
    let mut worker = Background::start(dir.path(), 2, &["run", "--app", "report.toml"]);
    worker.wait_until("every record", |worker| {
        worker.stdout().lines().count() >= 21
    });
    assert_eq!(worker.stop(), Some(0), "{}", worker.stderr());
    let mut messages: Vec<String> = json_lines(&worker.stdout())
        .iter()
        .filter(|event| event["kind"] == "Notice")
        .map(|event| {
            event["fields"]["message"]
                .as_str()
                .expect("a message")
                .to_owned()
        })
        .collect();
    messages.sort();
    let mut expected: Vec<String> = (1..=21).map(|n| format!("relp {n}")).collect();
    expected.sort();
    assert_eq!(messages, expected);
}

#[test]
fn check_names_the_stream_its_partitions_and_who_holds_them() {
    let _alone = alone();
    let nats = NatsServer::start();
    let capture = sshd_capture(1_000);
    let dir = stream_dir(&nats, "CHECKED", &capture);
    let check = correlator(dir.path(), &["check", "--app", "worker.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert_has(&check.stdout, "stream CHECKED: not there yet");
    publish(dir.path(), "input.cap");
    let mut workers = start_workers(dir.path(), 1, 1);
    wait_for_events(&mut workers, 1);
    let check = correlator(dir.path(), &["check", "--app", "worker.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert_has(
        &check.stdout,
        &format!("stream CHECKED: {PARTITIONS} partitions,"),
    );
    assert_has(&check.stdout, "workers of app worker: 1 alive");
    assert_has(&check.stdout, "partition 0: held by ");
    stop_all(&mut workers);
    let check = correlator(dir.path(), &["check", "--app", "worker.toml"]);
    assert_has(
        &check.stdout,
        "partition 0: held by no one, state after message ",
    );
    // Another partition count than the stream's is refused, naming both.
    let check = correlator(
        dir.path(),
        &["check", "--app", "worker.toml", "-o", "stream.partitions=4"],
    );
    assert_eq!(check.code, Some(1));
    assert_has(
        &check.stderr,
        "stream CHECKED says \"correlator records, 8 partitions by hostname\", and this app expects \"correlator records, 4 partitions by hostname\"",
    );
    // The example apps of the README's "More than one machine" check.
    for app in ["front.toml", "worker.toml"] {
        let path = workspace().join("apps").join("cluster").join(app);
        let url = format!("stream.nats_url={}", nats.url());
        let check = correlator(
            dir.path(),
            &["check", "--app", path.to_str().expect("UTF-8"), "-o", &url],
        );
        assert_eq!(check.code, Some(0), "{app}: {}", check.stderr);
        assert_has(&check.stdout, "stream CORRELATOR: not there yet");
    }
    // No server: the item is named.
    let check = correlator(
        dir.path(),
        &[
            "check",
            "--app",
            "worker.toml",
            "-o",
            "stream.nats_url=nats://127.0.0.1:1",
        ],
    );
    assert_eq!(check.code, Some(1));
    assert_has(
        &check.stderr,
        "error: stream.nats_url: the stream cannot be checked: no NATS server answered at nats://127.0.0.1:1 within 5 s",
    );
}
