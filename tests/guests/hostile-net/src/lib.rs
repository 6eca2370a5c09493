//! A logic module that, at its first record, opens a TCP connection to the
//! `target` its configuration names and writes a line, reporting the try as
//! a `Probe` event: `ok` or `denied: KIND`. std::net makes it import
//! `wasi:sockets`, which only a network grant allows.

use correlator_sdk::{
    ConfigItem, Descriptor, Event, EventType, Module, Record, Severity, config, export_module,
};
use std::io::Write as _;

struct HostileNet {
    target: String,
    probed: bool,
}

impl Module for HostileNet {
    fn describe() -> Descriptor {
        Descriptor::new("hostile-net", "connects where it is told, for tests")
            .config(ConfigItem::text(
                "target",
                "127.0.0.1:9",
                "IP:PORT to connect to",
            ))
            .event(
                EventType::new("Probe", Severity::Info, "one try")
                    .text("probe", "what was tried")
                    .text("outcome", "ok, or denied and why"),
            )
    }

    fn init() -> Result<Self, String> {
        Ok(HostileNet {
            target: config::text("target")?,
            probed: false,
        })
    }

    fn process(&mut self, _record: &Record<'_>) {
        if std::mem::replace(&mut self.probed, true) {
            return;
        }
        let outcome = match std::net::TcpStream::connect(&self.target)
            .and_then(|mut stream| stream.write_all(b"hello from a guest\n"))
        {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!("denied: {:?}", error.kind()),
        };
        let _ = Event::new("Probe", format!("connect {}: {outcome}", self.target))
            .text("probe", format!("connect {}", self.target))
            .text("outcome", outcome)
            .dispatch();
    }
}

export_module!(HostileNet);
