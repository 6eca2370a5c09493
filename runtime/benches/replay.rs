//! Replay throughput of the real `correlator` binary over a generated,
//! sshd-heavy capture (sessions, brute force, invalid users, scans; several
//! servers; IPv4 and IPv6), printing records per second.
//!
//! `cargo bench -p correlator --bench replay` (1,000,000 records; set
//! CORRELATOR_BENCH_RECORDS to change). The log handler writes JSON to
//! /dev/null, so handler work is measured too.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

mod sshd_traffic;

use sshd_traffic::generate;

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
