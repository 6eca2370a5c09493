//! Replay throughput of the real `correlator` binary over a generated,
//! sshd-heavy capture (sessions, brute force, invalid users, scans; 64
//! servers; IPv4 and IPv6), printing records per second.
//!
//! `cargo bench -p correlator --bench replay` (1,000,000 records; set
//! CORRELATOR_BENCH_RECORDS to change). The log handler writes JSON to
//! /dev/null, so handler work is measured too. Durable state is measured
//! on (checkpoints every second into the run directory) and off. Set
//! CORRELATOR_BENCH_BASELINE to an older build of the binary to run its
//! defaults in the same rounds and print the change against it.

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
    // Four set-ups, alternating, so that all see the same machine: the
    // default (limits on, durable state on, starting empty each round),
    // checkpoints ten times a second, state off, and limits off too. The
    // differences are what checkpoints and the sandbox's limits cost.
    let mut setups: Vec<(String, &str, &[&str])> = vec![
        ("limits, state".into(), binary, &["--discard-all-state"]),
        (
            "limits, state every 0.1 s".into(),
            binary,
            &["--discard-all-state", "-o", "state.checkpoint_interval=0.1"],
        ),
        (
            "limits, no state".into(),
            binary,
            &["-o", "state.enabled=false"],
        ),
        (
            "no limits, no state".into(),
            binary,
            &[
                "-o",
                "state.enabled=false",
                "-o",
                "system.call_time_limits=false",
            ],
        ),
    ];
    // CORRELATOR_BENCH_BASELINE names an older build of the binary: its
    // defaults run in the same rounds, so that a change is measured against
    // what came before on the same machine at the same time.
    let baseline = std::env::var("CORRELATOR_BENCH_BASELINE").ok();
    if let Some(baseline) = &baseline {
        setups.push((
            format!("baseline {baseline}: limits, state"),
            baseline,
            &["--discard-all-state"],
        ));
    }
    let mut best = vec![f64::MAX; setups.len()];
    for round in 1..=4 {
        for (index, (name, program, args)) in setups.iter().enumerate() {
            let started = Instant::now();
            let status = Command::new(program)
                .args(["run", "--app"])
                .arg(&app)
                .arg("--read-file")
                .arg(&capture)
                .args(*args)
                .current_dir(&dir)
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .status()
                .expect("run correlator");
            let seconds = started.elapsed().as_secs_f64();
            assert!(status.success(), "correlator failed");
            println!(
                "round {round}, {name}: {lines} records in {seconds:.3} s = {:.0} records/s (whole process, start-up included)",
                lines as f64 / seconds
            );
            best[index] = best[index].min(seconds);
        }
    }
    let rate = |index: usize| lines as f64 / best[index];
    println!(
        "replay: best {:.0} records/s with the defaults (limits and durable state, checkpoints every second), {:.0} with checkpoints every 0.1 s, {:.0} without state (state costs {:.1}%, or {:.1}% at ten checkpoints a second), {:.0} without limits either (limits cost {:.1}%), over {lines} sshd-heavy records",
        rate(0),
        rate(1),
        rate(2),
        (best[0] / best[2] - 1.0) * 100.0,
        (best[1] / best[2] - 1.0) * 100.0,
        rate(3),
        (best[2] / best[3] - 1.0) * 100.0
    );
    if baseline.is_some() {
        println!(
            "baseline: best {:.0} records/s with the defaults; this build is {:+.1}% against it",
            rate(4),
            (rate(0) / rate(4) - 1.0) * 100.0
        );
    }
    if std::env::var_os("CORRELATOR_BENCH_KEEP").is_some() {
        println!("capture and app kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
