//! A logic module that, at its first record, tries to read and write files
//! inside and outside the directory it was granted, and reports each try as
//! a `Probe` event: `ok` or `denied: KIND`. With a file `fill` in its
//! directory it also tries to fill the disk: an 8 MiB file, then 2,000
//! empty files.

use correlator_sdk::{Descriptor, Event, EventType, Module, Record, Severity, export_module};
use std::io::Write as _;

struct HostileFs {
    probed: bool,
}

fn outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(error) => format!("denied: {:?}", error.kind()),
    }
}

/// `ok`, or the error as the guest's C library describes it.
fn failure(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(error) => format!("denied: {error}"),
    }
}

/// Write `mib` MiB to `path`, one MiB at a time.
fn write_mib(path: &str, mib: usize) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..mib {
        file.write_all(&chunk)?;
    }
    Ok(())
}

/// Create `count` empty files.
fn create_files(count: usize) -> std::io::Result<()> {
    for n in 0..count {
        std::fs::File::create(format!("empty-{n}"))?;
    }
    Ok(())
}

fn write(path: &str) -> std::io::Result<()> {
    std::fs::File::create(path)?.write_all(b"written by a guest\n")
}

impl Module for HostileFs {
    fn describe() -> Descriptor {
        Descriptor::new("hostile-fs", "tries files it may not touch, for tests").event(
            EventType::new("Probe", Severity::Info, "one try")
                .text("probe", "what was tried")
                .text("outcome", "ok, or denied and why"),
        )
    }

    fn init() -> Result<Self, String> {
        Ok(HostileFs { probed: false })
    }

    fn process(&mut self, _record: &Record<'_>) {
        if std::mem::replace(&mut self.probed, true) {
            return;
        }
        let probes = [
            ("read /etc/passwd", outcome(std::fs::read("/etc/passwd"))),
            (
                "read ../outside.txt",
                outcome(std::fs::read("../outside.txt")),
            ),
            ("read link-out", outcome(std::fs::read("link-out"))),
            ("stat link-out", outcome(std::fs::metadata("link-out"))),
            (
                "stat ../outside.txt",
                outcome(std::fs::metadata("../outside.txt")),
            ),
            ("write ../escape.txt", outcome(write("../escape.txt"))),
            ("write link-out", outcome(write("link-out"))),
            ("write inside.txt", outcome(write("inside.txt"))),
            ("read inside.txt", outcome(std::fs::read("inside.txt"))),
            // A FIFO the test put in the granted directory: opening it
            // would wait for a writer.
            ("read fifo", outcome(std::fs::read("fifo"))),
        ];
        let mut probes = probes.to_vec();
        if std::fs::metadata("fill").is_ok() {
            // Fill the disk: one large file, then many empty ones.
            probes.push(("write 8 MiB", failure(write_mib("big.bin", 8))));
            probes.push(("create 2000 files", failure(create_files(2000))));
        }
        for (probe, outcome) in probes {
            let _ = Event::new("Probe", format!("{probe}: {outcome}"))
                .text("probe", probe)
                .text("outcome", outcome)
                .dispatch();
        }
    }
}

export_module!(HostileFs);
