//! Replay throughput of the real `correlator` binary over a generated,
//! sshd-heavy capture (sessions, brute force, invalid users, scans; several
//! servers; IPv4 and IPv6), printing records per second.
//!
//! `cargo bench -p correlator --bench replay` (1,000,000 records; set
//! CORRELATOR_BENCH_RECORDS to change). The log handler writes JSON to
//! /dev/null, so handler work is measured too.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

/// A deterministic xorshift generator: the same capture on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Write `count` records of sshd traffic (plus a few other programs) to
/// `out`, one RFC 5424 line each.
fn generate(count: usize, out: &mut String) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut written = 0;
    let mut pid = 10_000u64;
    let mut second = 1_676_923_967u64;
    while written < count {
        pid += 1;
        second += rng.below(3);
        let host = format!("node{}", rng.below(4));
        let addr = if rng.below(5) == 0 {
            format!("2001:db8::{:x}", rng.below(4096))
        } else {
            format!("203.0.{}.{}", rng.below(64), rng.below(250))
        };
        let port = 1024 + rng.below(60_000);
        let time = format_time(second, rng.below(1_000_000));
        let mut line = |message: &str, pid: u64, out: &mut String| {
            let _ = writeln!(out, "<86>1 {time} {host} sshd {pid} - - {message}");
            written += 1;
        };
        match rng.below(10) {
            0..=2 => {
                let user = format!("user{}", rng.below(50));
                line(
                    &format!(
                        "Accepted publickey for {user} from {addr} port {port} ssh2: ED25519 SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
                    ),
                    pid,
                    out,
                );
                line(
                    &format!(
                        "pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"
                    ),
                    pid,
                    out,
                );
                line(
                    &format!(
                        "Received disconnect from {addr} port {port}:11: disconnected by user"
                    ),
                    pid + 1,
                    out,
                );
                line(
                    &format!("Disconnected from user {user} {addr} port {port}"),
                    pid + 1,
                    out,
                );
                line(
                    &format!("pam_unix(sshd:session): session closed for user {user}"),
                    pid,
                    out,
                );
            }
            3..=6 => {
                let user = ["root", "admin", "oracle", "test", "ubuntu"][rng.below(5) as usize];
                line(
                    &format!("Invalid user {user} from {addr} port {port}"),
                    pid,
                    out,
                );
                for _ in 0..1 + rng.below(5) {
                    line(
                        &format!(
                            "Failed password for invalid user {user} from {addr} port {port} ssh2"
                        ),
                        pid,
                        out,
                    );
                }
                line(
                    &format!(
                        "Connection closed by invalid user {user} {addr} port {port} [preauth]"
                    ),
                    pid,
                    out,
                );
            }
            7..=8 => {
                line(
                    &format!("Connection closed by {addr} port {port} [preauth]"),
                    pid,
                    out,
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "<30>1 {time} {host} systemd 1 - - Started Session {pid} of user root."
                );
                written += 1;
            }
        }
    }
}

fn format_time(second: u64, micros: u64) -> String {
    let day = second / 86_400;
    let rest = second % 86_400;
    // Days since 2023-02-20 (day 19408) stay within the month for the sizes used here.
    let date = 20 + (day - 19_408);
    format!(
        "2023-02-{date:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn main() {
    let count: usize = std::env::var("CORRELATOR_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("correlator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let capture = dir.join("sshd-heavy.cap");
    let mut text = String::with_capacity(count * 120);
    generate(count, &mut text);
    let lines = text.lines().count();
    std::fs::File::create(&capture)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("write capture");
    let app = dir.join("bench.toml");
    std::fs::write(
        &app,
        "[modules.OpenSSH]\ncomponent = \"builtin:sshd\"\n[handlers.console]\ncomponent = \"builtin:log\"\nconfig = { format = \"json\" }\n",
    )
    .expect("write app");

    let binary = env!("CARGO_BIN_EXE_correlator");
    // Limits on (the default) and off, alternating, so that both see the
    // same machine: the difference is what the sandbox's limits cost.
    let mut best = [f64::MAX, f64::MAX];
    for round in 1..=4 {
        for (index, limits) in ["true", "false"].into_iter().enumerate() {
            let started = Instant::now();
            let status = Command::new(binary)
                .args(["run", "--app"])
                .arg(&app)
                .arg("--read-file")
                .arg(&capture)
                .args(["--option", &format!("system.call_time_limits={limits}")])
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .status()
                .expect("run correlator");
            let seconds = started.elapsed().as_secs_f64();
            assert!(status.success(), "correlator failed");
            println!(
                "round {round}, limits {limits}: {lines} records in {seconds:.3} s = {:.0} records/s (whole process, start-up included)",
                lines as f64 / seconds
            );
            best[index] = best[index].min(seconds);
        }
    }
    println!(
        "replay: best {:.0} records/s with the default limits, {:.0} records/s without (limits cost {:.1}%), over {lines} sshd-heavy records",
        lines as f64 / best[0],
        lines as f64 / best[1],
        (best[0] / best[1] - 1.0) * 100.0
    );
    if std::env::var_os("CORRELATOR_BENCH_KEEP").is_some() {
        println!("capture and app kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
