//! An event handler that fails on purpose, in the way its `attack`
//! configuration item names: `poison` panics on failed-login events,
//! `loop` never returns from any event.

use correlator_sdk::{ConfigItem, DeliveredEvent, Descriptor, Handler, config, export_handler};

struct HostileHandler {
    attack: String,
}

impl Handler for HostileHandler {
    fn describe() -> Descriptor {
        Descriptor::new("hostile-handler", "fails on purpose, for tests").config(ConfigItem::text(
            "attack",
            "none",
            "what to do wrong",
        ))
    }

    fn init() -> Result<Self, String> {
        Ok(HostileHandler {
            attack: config::text("attack")?,
        })
    }

    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
        match self.attack.as_str() {
            "poison" if event.kind == "SSHDLoginFailed" => panic!("a poisoned event"),
            "loop" =>
            {
                #[allow(clippy::empty_loop, reason = "the attack")]
                loop {}
            }
            "refuse" => Err(format!("will not handle {}", event.kind)),
            _ => Ok(()),
        }
    }
}

export_handler!(HostileHandler);
