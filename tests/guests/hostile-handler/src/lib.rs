//! An event handler that fails on purpose, in the way its `attack`
//! configuration item names: `poison` panics on failed-login events,
//! `panic` on every event,
//! `loop` never returns from any event, `refuse` fails every event, `slow`
//! spends `spin` iterations of busy work on each (to make a pipeline fall
//! behind), `sleep` sleeps an hour in every `handle` and `sleep-init` in
//! `init` (blocking in a WASI call, where no epoch deadline reaches);
//! `choke` traps on any event whose summary is over 100 KB (as a handler
//! out of memory would) and prints `module kind` for every other once
//! its batch is done.

use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, config, export_handler};

struct HostileHandler {
    attack: String,
    spin: u64,
    /// What `choke` handled in this batch, printed when the batch is done.
    handled: String,
}

impl Handler for HostileHandler {
    fn describe() -> Descriptor {
        Descriptor::new("hostile-handler", "fails on purpose, for tests")
            .config(ConfigItem::text("attack", "none", "what to do wrong"))
            .config(ConfigItem::integer(
                "spin",
                0,
                "iterations of busy work per event for attack = \"slow\"",
            ))
    }

    fn init() -> Result<Self, String> {
        let attack = config::text("attack")?;
        if attack == "sleep-init" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        Ok(HostileHandler {
            attack,
            handled: String::new(),
            spin: u64::try_from(config::integer("spin")?).unwrap_or(0),
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        match self.attack.as_str() {
            "poison" if event.kind == "SSHDLoginFailed" => panic!("a poisoned event"),
            "panic" => panic!("fails on every event"),
            "loop" =>
            {
                #[allow(clippy::empty_loop, reason = "the attack")]
                loop {}
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(())
            }
            "choke" if event.summary.len() > 100_000 => panic!("choking on a large event"),
            "choke" => {
                self.handled
                    .push_str(&format!("{} {}\n", event.module, event.kind));
                Ok(())
            }
            "refuse" => Err(format!("will not handle {}", event.kind)),
            "slow" => {
                let mut state = 0u64;
                for step in 0..self.spin {
                    state = std::hint::black_box(state.wrapping_mul(31).wrapping_add(step));
                }
                std::hint::black_box(state);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn flush(&mut self) {
        print!("{}", std::mem::take(&mut self.handled));
    }
}

export_handler!(HostileHandler);
