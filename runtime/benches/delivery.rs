//! Alerts through the webhook handler, measured end to end on the real
//! binary: `cargo bench -p correlator --bench delivery`.
//!
//! 1. correlator listens on TCP and runs the report module (a Notice per
//!    record) with a webhook handler whose filter takes the Notices of
//!    records marked `alert N`; this process sends 1,000,000 records at
//!    100,000 a second over one connection, every 100th an alert (10,000
//!    in all), to a local HTTP server of its own that answers 200. It
//!    prints the alert latency, from the moment the record was written to
//!    the socket to the moment its request reached the server (p50, p99,
//!    max), and the delivery rate.
//! 2. The same with a destination where nothing listens (every try fails;
//!    the first retry comes after an hour): 100,000 alerts as fast as they
//!    can be sent, then the peak resident memory of the runtime holding
//!    them all in its outbox.
//!
//! CORRELATOR_BENCH_RECORDS changes the number of records of part 1.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Records a second sent in part 1.
const RATE: u64 = 100_000;

/// Every this many records, one is an alert.
const ALERT_EVERY: u64 = 100;

/// Alerts waiting for a dead destination in part 2.
const WAITING_ALERTS: u64 = 100_000;

fn main() {
    let records: u64 = std::env::var("CORRELATOR_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir =
        std::env::temp_dir().join(format!("correlator-delivery-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // Part 1: a live destination.
    let arrivals: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let server = serve_http(Arc::clone(&arrivals));
    let mut runtime = start(&dir, server.port());
    let address = listening_address(&dir, &mut runtime);
    let mut stream = TcpStream::connect(address).expect("connect");
    let mut sent_at = Vec::with_capacity((records / ALERT_EVERY) as usize);
    let started = Instant::now();
    let mut batch = String::new();
    for n in 0..records {
        let alert = n % ALERT_EVERY == 0;
        if alert {
            batch.push_str(&format!(
                "<13>1 2026-11-30T10:00:00Z host app - - - alert {}\n",
                n / ALERT_EVERY
            ));
        } else {
            batch.push_str(&format!(
                "<13>1 2026-11-30T10:00:00Z host app - - - record {n}\n"
            ));
        }
        // A write every 1,000 records, paced to RATE.
        if (n + 1) % 1_000 == 0 || n + 1 == records {
            let due = started + Duration::from_nanos((n + 1) * 1_000_000_000 / RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            stream.write_all(batch.as_bytes()).expect("send");
            let now = Instant::now();
            let alerts_in_batch = batch.matches(" alert ").count();
            sent_at.extend(std::iter::repeat_n(now, alerts_in_batch));
            batch.clear();
        }
    }
    let sending = started.elapsed();
    let alerts = sent_at.len();
    let patience = Instant::now();
    while arrivals.lock().map_or(0, |a| a.len()) < alerts
        && patience.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stream);
    stop(&mut runtime);
    let arrived = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let mut latencies: Vec<Duration> = arrived
        .iter()
        .filter_map(|(number, at)| {
            let sent = sent_at.get(usize::try_from(*number).ok()?)?;
            Some(at.saturating_duration_since(*sent))
        })
        .collect();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let first = arrived.iter().map(|(_, at)| *at).min();
    let last = arrived.iter().map(|(_, at)| *at).max();
    let span = first
        .zip(last)
        .map_or(0.0, |(first, last)| (last - first).as_secs_f64());
    println!(
        "{records} records at {:.0}/s, {alerts} alerts: {} delivered, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.0} deliveries/s",
        records as f64 / sending.as_secs_f64(),
        arrived.len(),
        percentile(0.50).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        arrived.len() as f64 / span.max(f64::EPSILON),
    );

    // Part 2: a dead destination.
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let _ = std::fs::remove_file(dir.join("correlator.log"));
    let mut runtime = start(&dir, dead_port);
    let address = listening_address(&dir, &mut runtime);
    let before = rss_kib(runtime.id(), "VmRSS:");
    let mut stream = TcpStream::connect(address).expect("connect");
    let mut batch = String::new();
    for n in 0..WAITING_ALERTS {
        batch.push_str(&format!(
            "<13>1 2026-11-30T10:00:00Z host app - - - alert {n}\n"
        ));
        if batch.len() > 64 * 1024 {
            stream.write_all(batch.as_bytes()).expect("send");
            batch.clear();
        }
    }
    stream.write_all(batch.as_bytes()).expect("send");
    drop(stream);
    // Until every alert is handed over (the log's count), then a moment.
    let patience = Instant::now();
    loop {
        let log = std::fs::read_to_string(dir.join("correlator.log")).unwrap_or_default();
        if log.contains(&format!("messages={WAITING_ALERTS}"))
            || patience.elapsed() > Duration::from_secs(120)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let peak = rss_kib(runtime.id(), "VmHWM:");
    stop(&mut runtime);
    let log = std::fs::read_to_string(dir.join("correlator.log")).unwrap_or_default();
    let submitted = log
        .lines()
        .rev()
        .find_map(|line| line.split_once(" submitted="))
        .and_then(|(_, rest)| rest.split(' ').next().map(str::to_owned))
        .unwrap_or_default();
    println!(
        "{WAITING_ALERTS} alerts for a dead destination: {submitted} handed over; resident memory {} MiB before, peak {} MiB",
        before / 1024,
        peak / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// correlator listening on TCP, the report module's alert Notices to a
/// webhook at `port`, state off (part 1 measures delivery, not commits).
fn start(dir: &Path, port: u16) -> Child {
    let app = dir.join("bench.toml");
    std::fs::write(
        &app,
        format!(
            "[modules.Report]\ncomponent = \"builtin:report\"\n\
             [handlers.hook]\ncomponent = \"builtin:webhook\"\n\
             filter = 'event.kind == \"Notice\" && event.fields.message.startsWith(\"alert \")'\n\
             grants = {{ network = [\"127.0.0.1:{port}\"] }}\n\
             config = {{ url = \"http://127.0.0.1:{port}/hook\" }}\n"
        ),
    )
    .expect("write app");
    Command::new(env!("CARGO_BIN_EXE_correlator"))
        .args(["run", "--app"])
        .arg(&app)
        .args([
            "-o",
            "listen.tcp=127.0.0.1:0",
            "-o",
            "state.enabled=false",
            "-o",
            "listen.report_interval_s=1",
            "-o",
            "delivery.retry_base_ms=3600000",
            "-o",
            "delivery.shutdown_wait_s=0",
        ])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("correlator.log")).expect("log file"))
        .spawn()
        .expect("run correlator")
}

fn listening_address(dir: &Path, child: &mut Child) -> SocketAddr {
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(dir.join("correlator.log")).unwrap_or_default();
        if let Some(address) = log
            .lines()
            .find_map(|line| line.split_once("listening for syslog over TCP on "))
            .and_then(|(_, address)| address.trim().parse().ok())
        {
            return address;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("correlator exited ({status}):\n{log}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "correlator does not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A small HTTP/1.1 server on 127.0.0.1: answers every request 200 and
/// notes when the alert numbered in its body arrived.
struct HttpServer {
    port: u16,
}

impl HttpServer {
    fn port(&self) -> u16 {
        self.port
    }
}

fn serve_http(arrivals: Arc<Mutex<Vec<(u64, Instant)>>>) -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let arrivals = Arc::clone(&arrivals);
            std::thread::spawn(move || answer(stream, &arrivals));
        }
    });
    HttpServer { port }
}

fn answer(stream: TcpStream, arrivals: &Mutex<Vec<(u64, Instant)>>) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(clone) => clone,
        Err(_) => return,
    });
    let mut stream = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line and headers.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let arrived = Instant::now();
        let text = String::from_utf8_lossy(&body);
        if let Some(number) = text
            .split_once("\"message\":\"alert ")
            .and_then(|(_, rest)| rest.split('"').next())
            .and_then(|number| number.parse().ok())
            && let Ok(mut arrivals) = arrivals.lock()
        {
            arrivals.push((number, arrived));
        }
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
