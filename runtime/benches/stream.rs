//! Records per second through NATS JetStream workers, beside one plain
//! process over the same records in the same run.
//!
//! `cargo bench -p correlator --bench stream` generates 1,000,000 sshd
//! records (CORRELATOR_BENCH_RECORDS changes that), and measures:
//!
//! - **plain**: `correlator run --read-file` with the sshd module and the
//!   JSON log handler (to /dev/null), start to exit;
//! - **W workers** (1, 2 and 4; CORRELATOR_BENCH_WORKERS changes that):
//!   a nats-server (JetStream, on 127.0.0.1, its store under the system's
//!   temporary directory), W workers running the same app, started on an
//!   empty stream and left to share its 8 partitions; then one front-end
//!   publishes the capture, and the clock runs from its start until every
//!   partition's consumer has acknowledged its last message (which a
//!   worker does only once a state checkpoint, copied into JetStream,
//!   covers it: checkpoints every 0.2 s here). A fresh stream per round.
//!
//! - **front-end**: the front-end alone publishing the capture into a
//!   fresh stream, start to exit (it exits once JetStream has acknowledged
//!   every message), with no worker reading: what publishing costs.
//!
//! For each it prints the records per second and the processor time per
//! record of every process involved (front-end, workers, nats-server):
//! the stream path's overhead per record is the difference from plain's.
//! Three rounds (CORRELATOR_BENCH_ROUNDS); the best of each is printed at
//! the end. CORRELATOR_BENCH_BASELINE names an older build of the binary:
//! its plain run and its front-end run in the same rounds.

mod sshd_traffic;

use futures_util::StreamExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// Partitions of the benchmark's streams.
const PARTITIONS: u32 = 8;

/// Longest wait for anything.
const PATIENCE: Duration = Duration::from_secs(300);

fn main() {
    let count: usize = env_number("CORRELATOR_BENCH_RECORDS", 1_000_000);
    let rounds: usize = env_number("CORRELATOR_BENCH_ROUNDS", 3);
    let worker_counts: Vec<u32> = std::env::var("CORRELATOR_BENCH_WORKERS")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1, 2, 4]);
    assert!(
        Path::new(NATS_SERVER).is_file(),
        "{NATS_SERVER} is not installed (apt-get install nats-server)"
    );
    let dir = std::env::temp_dir().join(format!("correlator-streambench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut text = String::with_capacity(count * 120);
    sshd_traffic::generate(count, &mut text);
    std::fs::write(dir.join("input.cap"), &text).expect("write capture");
    drop(text);
    let app = "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = { format = \"json\" }\n";
    std::fs::write(dir.join("plain.toml"), app).expect("write app");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut nats = Command::new(NATS_SERVER)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("jetstream"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    wait(|| {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "{count} records from {} servers, {PARTITIONS} partitions, nats-server {url}",
        sshd_traffic::SERVERS
    );
    let mut best: Vec<(String, f64, f64)> = Vec::new();
    let mut keep = |name: String, rate: f64, cpu_per_record: f64| match best
        .iter_mut()
        .find(|(known, _, _)| *known == name)
    {
        Some(entry) if entry.1 < rate => *entry = (name, rate, cpu_per_record),
        Some(_) => {}
        None => best.push((name, rate, cpu_per_record)),
    };
    let binary = env!("CARGO_BIN_EXE_correlator");
    let baseline = std::env::var("CORRELATOR_BENCH_BASELINE").ok();
    let binaries: Vec<(&str, &str)> = std::iter::once(("", binary))
        .chain(baseline.as_deref().map(|older| (" (baseline)", older)))
        .collect();
    for round in 1..=rounds {
        for &(label, program) in &binaries {
            let (rate, cpu) = plain(program, &dir, count);
            println!(
                "round {round}: plain{label}: {:.0} records/s, {:.2} µs CPU/record",
                rate,
                cpu * 1e6
            );
            keep(format!("plain{label}"), rate, cpu);
        }
        for (index, &(label, program)) in binaries.iter().enumerate() {
            let stream = format!("BENCH{round}F{index}");
            let (rate, cpu) = front_end_alone(program, &dir, &url, &stream, nats.id(), count);
            println!(
                "round {round}: front-end{label}: {:.0} records/s, {:.2} µs CPU/record (front-end and nats-server)",
                rate,
                cpu * 1e6
            );
            keep(format!("front-end{label}"), rate, cpu);
        }
        for &workers in &worker_counts {
            let stream = format!("BENCH{round}W{workers}");
            let (rate, cpu) = through_workers(&dir, &url, &stream, workers, nats.id(), count);
            println!(
                "round {round}: {workers} workers: {:.0} records/s, {:.2} µs CPU/record (front-end, workers and nats-server)",
                rate,
                cpu * 1e6
            );
            keep(format!("{workers} workers"), rate, cpu);
        }
    }
    let _ = nats.kill();
    let _ = nats.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!("best of {rounds} rounds:");
    let plain_cpu = best.first().map_or(0.0, |(_, _, cpu)| *cpu);
    for (name, rate, cpu) in &best {
        println!(
            "  {name:>21}: {:>9.0} records/s, {:.2} µs CPU/record ({:+.2} µs against plain)",
            rate,
            cpu * 1e6,
            (cpu - plain_cpu) * 1e6
        );
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Poll `ready` until it gives something, for at most [`PATIENCE`].
fn wait<T>(mut ready: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "nothing after {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn correlator() -> Command {
    correlator_at(env!("CARGO_BIN_EXE_correlator"))
}

fn correlator_at(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("RUST_LOG", "warn");
    command
}

/// The app file of a front-end or a worker on `stream`.
fn stream_config(role: &str, url: &str, stream: &str) -> String {
    format!(
        "[config]\nstream.role = \"{role}\"\nstream.nats_url = \"{url}\"\nstream.name = \"{stream}\"\nstream.partitions = {PARTITIONS}\nstate.checkpoint_interval = 0.2\n"
    )
}

/// One plain replay: records per second and CPU seconds per record.
fn plain(program: &str, dir: &Path, count: usize) -> (f64, f64) {
    let cpu_before = children_cpu_seconds();
    let started = Instant::now();
    let status = correlator_at(program)
        .args(["run", "--app", "plain.toml", "--read-file", "input.cap"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .expect("correlator runs");
    assert!(status.success());
    let seconds = started.elapsed().as_secs_f64();
    let cpu = children_cpu_seconds() - cpu_before;
    (count as f64 / seconds, cpu / count as f64)
}

/// W workers on a fresh stream, then the capture published: records per
/// second from the publishing's start until every partition is
/// acknowledged, and CPU seconds per record of every process.
fn through_workers(
    dir: &Path,
    url: &str,
    stream: &str,
    workers: u32,
    nats_pid: u32,
    count: usize,
) -> (f64, f64) {
    let config = |role: &str| stream_config(role, url, stream);
    std::fs::write(dir.join("front.toml"), config("publish")).expect("write");
    std::fs::write(
        dir.join("worker.toml"),
        config("work") + &std::fs::read_to_string(dir.join("plain.toml")).expect("read"),
    )
    .expect("write");
    let mut running: Vec<Child> = (0..workers)
        .map(|n| {
            let run_dir = dir.join(format!("{stream}-{n}"));
            std::fs::create_dir_all(&run_dir).expect("run dir");
            correlator()
                .env("RUST_LOG", "warn,correlator::stream::worker=info")
                .args(["run", "--app", "worker.toml", "-o"])
                .arg(format!("system.run_dir={}", run_dir.display()))
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(run_dir.join("stderr.txt")).expect("stderr"))
                .spawn()
                .expect("a worker starts")
        })
        .collect();
    // Every partition held, shared.
    let share = PARTITIONS.div_ceil(workers) as usize;
    wait(|| {
        let held: Vec<usize> = (0..workers)
            .map(|n| {
                let log = std::fs::read_to_string(dir.join(format!("{stream}-{n}/stderr.txt")))
                    .unwrap_or_default();
                log.matches("took partition")
                    .count()
                    .saturating_sub(log.matches("let partition").count())
            })
            .collect();
        (held.iter().sum::<usize>() == PARTITIONS as usize && held.iter().all(|&n| n <= share))
            .then_some(())
    });
    let cpu_of = |pids: &[u32]| {
        pids.iter()
            .map(|&pid| process_cpu_seconds(pid))
            .sum::<f64>()
    };
    let pids: Vec<u32> = running.iter().map(Child::id).chain([nats_pid]).collect();
    let cpu_before = cpu_of(&pids) + children_cpu_seconds();
    let started = Instant::now();
    let status = correlator()
        .args(["run", "--app", "front.toml", "--read-file", "input.cap"])
        .current_dir(dir)
        .status()
        .expect("the front-end runs");
    assert!(status.success());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(all_acknowledged(url, stream));
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_of(&pids) + children_cpu_seconds() - cpu_before;
    for worker in &mut running {
        let _ = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status();
        let _ = worker.wait();
    }
    (count as f64 / seconds, cpu / count as f64)
}

/// The front-end alone publishing the capture into a fresh stream: records
/// per second from its start to its exit (once JetStream has acknowledged
/// every message), and CPU seconds per record of it and nats-server.
fn front_end_alone(
    program: &str,
    dir: &Path,
    url: &str,
    stream: &str,
    nats_pid: u32,
    count: usize,
) -> (f64, f64) {
    let app = format!("{stream}.toml");
    std::fs::write(dir.join(&app), stream_config("publish", url, stream)).expect("write");
    let cpu_before = process_cpu_seconds(nats_pid) + children_cpu_seconds();
    let started = Instant::now();
    let status = correlator_at(program)
        .args(["run", "--app", &app, "--read-file", "input.cap"])
        .current_dir(dir)
        .status()
        .expect("the front-end runs");
    assert!(status.success());
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds(nats_pid) + children_cpu_seconds() - cpu_before;
    (count as f64 / seconds, cpu / count as f64)
}

/// Wait until every partition's last message is acknowledged.
async fn all_acknowledged(url: &str, stream: &str) {
    let client = async_nats::connect(url).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    let records = jetstream.get_stream(stream).await.expect("the stream");
    let mut last = Vec::new();
    for partition in 0..PARTITIONS {
        let subject = format!("{stream}.records.{partition}");
        let sequence = records
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_or(0, |message| message.sequence);
        last.push(sequence);
    }
    let started = Instant::now();
    for (partition, last) in last.into_iter().enumerate() {
        if last == 0 {
            continue;
        }
        let subject = format!("{stream}.records.{partition}");
        loop {
            // Each owner reads through a consumer of its own: the
            // partition's progress is the furthest any has come.
            let mut acknowledged = 0;
            let mut consumers = records.consumers();
            while let Some(Ok(info)) = consumers.next().await {
                if info.config.filter_subject == subject {
                    acknowledged = acknowledged.max(info.ack_floor.stream_sequence);
                }
            }
            if acknowledged >= last {
                break;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "partition {partition} not acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Processor time of this process's children that have been waited for,
/// in seconds (`cutime` + `cstime` of /proc/self/stat).
fn children_cpu_seconds() -> f64 {
    stat_seconds("self", 13)
}

/// Processor time of process `pid` so far (`utime` + `stime`).
fn process_cpu_seconds(pid: u32) -> f64 {
    stat_seconds(&pid.to_string(), 11)
}

/// Two clock-tick fields of /proc/PROC/stat from `skip` fields after the
/// command name, in seconds.
fn stat_seconds(process: &str, skip: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(skip)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}
