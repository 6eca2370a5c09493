//! The Transmission module: `transmission-daemon` says when a torrent has
//! finished downloading (`NAME State changed from "Incomplete" to
//! "Complete"`); this dispatches `TransmissionCompleted { server, torrent }`
//! for each, and counts them in its statistics (kept across restarts).

use correlator_sdk::{
    Descriptor, Event, EventType, Module, Record, Severity, export_module, state,
};

/// What transmission-daemon writes when a torrent completes.
const COMPLETED: &str = " State changed from \"Incomplete\" to \"Complete\"";

struct Transmission {
    completed: i64,
}

impl Module for Transmission {
    fn describe() -> Descriptor {
        Descriptor::new(
            "transmission",
            "torrents transmission-daemon finished downloading",
        )
        .event(
            EventType::new(
                "TransmissionCompleted",
                Severity::Info,
                "a torrent finished downloading",
            )
            .text("server", "the host transmission-daemon runs on")
            .text("torrent", "the torrent's name"),
        )
        .event(
            EventType::new(
                "TransmissionStats",
                Severity::Info,
                "torrents completed since the last reset",
            )
            .integer("completed", "torrents that finished downloading"),
        )
    }

    fn init() -> Result<Self, String> {
        Ok(Transmission {
            completed: state::load("completed")?.unwrap_or(0),
        })
    }

    fn process(&mut self, record: &Record<'_>) {
        if record.app_name != "transmission-daemon" {
            return;
        }
        let Some(torrent) = completed_torrent(record.message) else {
            return;
        };
        self.completed += 1;
        let _ = Event::new(
            "TransmissionCompleted",
            format!("{} finished downloading {torrent}", record.hostname),
        )
        .text("server", record.hostname)
        .text("torrent", torrent)
        .dispatch();
    }

    fn statistics(&mut self, reset: bool) {
        let _ = Event::new(
            "TransmissionStats",
            format!("{} torrents completed", self.completed),
        )
        .integer("completed", self.completed)
        .dispatch();
        if reset {
            self.completed = 0;
        }
    }

    fn checkpoint(&mut self) {
        if let Err(error) = state::save("completed", &self.completed) {
            correlator_sdk::log::error(&format!("count not saved: {error}"));
        }
    }
}

/// The torrent a completion message names: what precedes the state change,
/// without the `[time]` newer versions write first.
fn completed_torrent(message: &str) -> Option<&str> {
    let (before, _) = message.split_once(COMPLETED)?;
    let torrent = match before.strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map_or(before, |(_, name)| name),
        None => before,
    };
    let torrent = torrent.trim();
    (!torrent.is_empty()).then_some(torrent)
}

export_module!(Transmission);

#[cfg(test)]
mod tests {
    use super::*;
    use correlator_sdk::testing::{TestHost, TestRecord};

    #[test]
    fn the_torrent_is_what_precedes_the_state_change() {
        assert_eq!(
            completed_torrent(
                "[2026-11-30 10:00:01.123] debian-12.iso State changed from \"Incomplete\" to \"Complete\" (torrent.cc:2005)"
            ),
            Some("debian-12.iso")
        );
        assert_eq!(
            completed_torrent(
                "My Show S01E01 State changed from \"Incomplete\" to \"Complete\" (torrent.c:1881)"
            ),
            Some("My Show S01E01")
        );
        assert_eq!(
            completed_torrent("debian-12.iso State changed from \"Incomplete\" to \"Seeding\""),
            None
        );
    }

    #[test]
    fn completions_are_dispatched_and_counted_across_a_restart() {
        let host = TestHost::new();
        let mut module: Transmission = host.start().expect("starts");
        let line =
            "debian-12.iso State changed from \"Incomplete\" to \"Complete\" (torrent.c:1881)";
        host.process(
            &mut module,
            &[
                TestRecord::new(1_764_496_800, "nas", "transmission-daemon", line),
                TestRecord::new(1_764_496_801, "nas", "sshd", line),
            ],
        );
        let events = host.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].text("server"), events[0].text("torrent")),
            (Some("nas"), Some("debian-12.iso"))
        );
        let mut module = host.restart(module).expect("starts again");
        host.statistics(&mut module, false);
        assert_eq!(host.take_events()[0].integer("completed"), Some(1));
    }
}
