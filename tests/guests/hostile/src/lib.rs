//! A logic module that misbehaves on purpose, in the way its `attack`
//! configuration item names, so that tests can check the host survives and
//! reports it. For every record it survives, it dispatches `Seen`. With
//! `attack = "minute-ticks"` it asks for a tick every minute and dispatches
//! `Seen` with position -1 and the tick's time for each. `state-flood`
//! writes durable state until it is refused; `panic-checkpoint` panics
//! when asked for a checkpoint; `stdio-flood` prints a line with an
//! escape sequence to standard output, then 10,000 lines to standard error
//! that look like the runtime's own; `forge` dispatches a summary that
//! would print as another instance's line and CSV cells that are formulas;
//! `chunky` dispatches a 200 KB event besides `Seen` for every record;
//! `chunky-ticks` asks for a tick every minute and dispatches 15 MB of
//! events at each. `exchange-flood` sends, at its first record, a 2 MiB
//! keyed message, eight of 256 KiB for the key `piece` (the eighth past
//! the call's 4 MiB) and 150,000 small ones, and dispatches `Seen` with
//! position -2 and the size as `clock` for each piece it receives;
//! `loop-receive` sends one per record and never returns from receiving
//! it.

use correlator_sdk::{
    ConfigItem, Descriptor, Event, EventType, Module, Record, Severity, Tick, TickKind, config,
    exchange, export_module, log, state,
};

struct Hostile {
    attack: String,
    /// Kept alive so that growing memory is not optimised away.
    hoard: Vec<Vec<u8>>,
    /// Records processed.
    records: u64,
}

/// Recursion the optimiser cannot turn into a loop.
#[allow(unconditional_recursion, reason = "the attack: overflow the stack")]
fn recurse(depth: u64, trail: &mut Vec<u64>) -> u64 {
    trail.push(depth);
    let below = recurse(depth + 1, trail);
    trail.push(below);
    below + 1
}

impl Module for Hostile {
    fn describe() -> Descriptor {
        Descriptor::new("hostile", "misbehaves on purpose, for tests")
            .config(ConfigItem::text("attack", "none", "what to do wrong"))
            .event(
                EventType::new("Seen", Severity::Info, "a record was survived")
                    .integer("position", "the record's position")
                    .integer("env", "environment variables visible")
                    .integer("args", "arguments visible")
                    .integer("clock", "seconds the wall clock shows"),
            )
            .event(
                EventType::new("Secret", Severity::Info, "what a secret read gave")
                    .text("name", "the secret's name")
                    .text("value", "its value, or <none>"),
            )
    }

    fn init() -> Result<Self, String> {
        let attack = config::text("attack")?;
        if attack == "loop-init" {
            #[allow(clippy::empty_loop, reason = "the attack")]
            loop {}
        }
        if attack == "refuse-init" {
            return Err("this module refuses to start".into());
        }
        if attack == "minute-ticks" || attack == "chunky-ticks" {
            correlator_sdk::timers::every(TickKind::Minute)?;
        }
        Ok(Hostile {
            attack,
            hoard: Vec::new(),
            records: 0,
        })
    }

    fn checkpoint(&mut self) {
        if self.attack == "panic-checkpoint" {
            panic!("hostile module panics in checkpoint");
        }
    }

    fn tick(&mut self, tick: &Tick) {
        if self.attack == "chunky-ticks" {
            // 15 MB per tick: within every per-call limit.
            let summary = "t".repeat(1_000_000);
            for _ in 0..15 {
                let _ = Event::new("Seen", summary.clone())
                    .integer("position", -3)
                    .integer("env", 0)
                    .integer("args", 0)
                    .integer("clock", tick.time.seconds)
                    .dispatch();
            }
            return;
        }
        let _ = Event::new("Seen", "a tick")
            .integer("position", -1)
            .integer("env", 0)
            .integer("args", 0)
            .integer("clock", tick.time.seconds)
            .dispatch();
    }

    fn receive(&mut self, key: &str, payload: &[u8], _time: correlator_sdk::Timestamp) {
        match self.attack.as_str() {
            "loop-receive" =>
            {
                #[allow(clippy::empty_loop, reason = "the attack")]
                loop {}
            }
            "exchange-flood" if key == "piece" => {
                let _ = Event::new("Seen", "a piece")
                    .integer("position", -2)
                    .integer("env", 0)
                    .integer("args", 0)
                    .integer("clock", i64::try_from(payload.len()).unwrap_or(-1))
                    .dispatch();
            }
            _ => {}
        }
    }

    fn process(&mut self, record: &Record<'_>) {
        self.records += 1;
        match self.attack.as_str() {
            "exchange-flood" if self.records == 1 => {
                // The call's first record: within the call's budget, one
                // message larger than any NATS message and seven for one
                // key that make a parcel larger than one; then past the
                // budget, in bytes and in number.
                exchange::send("big", &vec![b'b'; 2 << 20]);
                let piece = vec![b'p'; 256 << 10];
                for _ in 0..8 {
                    exchange::send("piece", &piece);
                }
                for n in 0..150_000 {
                    exchange::send(&format!("k{n}"), b"x");
                }
            }
            "loop-receive" => exchange::send(record.hostname, b"x"),
            "loop-process" =>
            {
                #[allow(clippy::empty_loop, reason = "the attack")]
                loop {}
            }
            "grow-memory" => loop {
                self.hoard.push(vec![1; 1 << 20]);
            },
            "recurse" => {
                let mut trail = Vec::new();
                let _ = recurse(0, &mut trail);
            }
            "panic" => panic!("hostile module panics on purpose"),
            "poison" if record.message.contains("POISON") => {
                panic!("a poisoned record")
            }
            "million-events" => {
                for n in 0..1_000_000 {
                    let _ = Event::new("Seen", "flood")
                        .integer("position", n)
                        .integer("env", 0)
                        .integer("args", 0)
                        .integer("clock", 0)
                        .dispatch();
                }
            }
            "big-event" => {
                let _ = Event::new("Seen", "x".repeat(2 << 20))
                    .integer("position", 0)
                    .integer("env", 0)
                    .integer("args", 0)
                    .integer("clock", 0)
                    .dispatch();
            }
            "huge-event" => {
                let _ = Event::new("Seen", "x".repeat(100 << 20)).dispatch();
            }
            "huge-host-strings" => {
                // Every host call that takes a string, with 8 MiB.
                let key = "k".repeat(8 << 20);
                let _ = config::get(&key);
                let _ = correlator_sdk::secrets::get(&key);
                let _ = state::get(&key);
                let _ = state::set(&key, key.as_bytes());
                state::delete(&key);
                log::warn(&"w".repeat(8 << 20));
            }
            "secrets" => {
                for name in ["granted", "other"] {
                    let value =
                        correlator_sdk::secrets::get(name).unwrap_or_else(|| "<none>".into());
                    let _ = Event::new("Secret", format!("secret {name}"))
                        .text("name", name)
                        .text("value", value)
                        .dispatch();
                }
            }
            "state-flood" if record.position == 1 => {
                if let Err(error) = state::set(&"k".repeat(2000), b"x") {
                    log::warn(&error);
                }
                let mib = vec![7; 1 << 20];
                for n in 0.. {
                    if let Err(error) = state::set(&format!("flood{n}"), &mib) {
                        log::warn(&format!("write {n} refused: {error}"));
                        break;
                    }
                }
            }
            "stdio-flood" if record.position == 1 => {
                // A line with an escape sequence, written in two pieces,
                // then lines that look like the runtime's own.
                print!("a \x1b[31mred");
                let _ = std::io::Write::flush(&mut std::io::stdout());
                println!(" line");
                for n in 0..10_000 {
                    eprintln!(
                        "2026-11-30T00:00:00.000000Z ERROR correlator::cli: forged {n} instance=\"OpenSSH\""
                    );
                }
            }
            "forge" if record.position == 1 => {
                // A summary that ends its line and starts one that looks
                // like the sshd instance's, then recolours the terminal
                // and reverses what follows; cells a spreadsheet would run.
                let _ = Event::new(
                    "Seen",
                    "x\n[OpenSSH :: SSHDLoginSucceeded] User root logged in from 203.0.113.9\x1b[0m\u{202e}",
                )
                .integer("position", 0)
                .integer("env", 0)
                .integer("args", 0)
                .integer("clock", 0)
                .dispatch();
                let _ = Event::new("Secret", "cells")
                    .text("name", "=cmd|' /C calc'!A0")
                    .text("value", "+1")
                    .dispatch();
            }
            "delete-flood" if record.position == 1 => {
                for n in 0..2_000_000 {
                    state::delete(&format!("never-written-{n}"));
                }
                state::delete(&"k".repeat(100_000));
            }
            "event-amplification" => {
                // Each event within limits.event_bytes, together far past
                // what one call may dispatch.
                let summary = "x".repeat(1_000_000);
                for n in 0..500 {
                    let _ = Event::new("Seen", summary.as_str())
                        .integer("position", n)
                        .integer("env", 0)
                        .integer("args", 0)
                        .integer("clock", 0)
                        .dispatch();
                }
            }
            "chunky" => {
                let _ = Event::new("Seen", "c".repeat(200_000))
                    .integer("position", -2)
                    .integer("env", 0)
                    .integer("args", 0)
                    .integer("clock", 0)
                    .dispatch();
            }
            "log-flood" => {
                for n in 0..10_000 {
                    log::warn(&format!("flood line {n}"));
                }
            }
            _ => {}
        }
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(-1));
        let _ = Event::new("Seen", format!("survived record {}", record.position))
            .integer("position", i64::try_from(record.position).unwrap_or(-1))
            .integer("env", i64::try_from(std::env::vars().count()).unwrap_or(-1))
            .integer(
                "args",
                i64::try_from(std::env::args().count()).unwrap_or(-1),
            )
            .integer("clock", clock)
            .dispatch();
    }
}

export_module!(Hostile);
