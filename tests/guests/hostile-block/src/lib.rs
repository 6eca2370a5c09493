//! A logic module that blocks inside a WASI call, not in its own code, in
//! whichever export its granted directory names: a file `process` there
//! makes `process` block, a file `checkpoint` makes `checkpoint` block, and
//! so on for every export of the `stateful-logic-module` world. `describe`
//! also blocks when the module was granted no directory (as under
//! `correlator inspect`). A marker file holding `fifo` first opens the
//! FIFO `fifo` for reading (which waits for a writer, unless the host
//! refuses it), then sleeps for an hour, as any other content does.
//!
//! A file `declared-kind` makes `describe` declare an event type of that
//! name.
//!
//! Built from the WIT without the SDK so that `state-version` can be
//! steered too: it is 1 while a file `v1` exists, else 2, so that a second
//! run hands the first run's state to `migrate`.

#![allow(missing_docs, reason = "a test guest")]
#![allow(unsafe_code, reason = "the export glue wit-bindgen generates")]

wit_bindgen::generate!({
    world: "stateful-logic-module",
    path: "../../../wit",
    generate_all,
});

use correlator::plugin::types::{Descriptor, EventDecl, RecordBatch, Severity, TimerTick};
use exports::correlator::plugin::{durable, logic};

struct HostileBlock;

/// Block in a WASI call if the granted directory holds a file `export`.
fn block_if_named(export: &str) {
    if let Ok(how) = std::fs::read_to_string(export) {
        block(&how);
    }
}

fn block(how: &str) {
    if how.trim() == "fifo" {
        // Opening a FIFO for reading waits for a writer that never comes.
        let _ = std::fs::read("fifo");
    }
    std::thread::sleep(std::time::Duration::from_secs(3600));
}

impl logic::Guest for HostileBlock {
    fn describe() -> Descriptor {
        if std::fs::read_dir(".").is_err() {
            block("sleep");
        }
        block_if_named("describe");
        // A file `declared-kind` names an event type to declare, so that
        // tests can see which names the host refuses.
        let events = std::fs::read_to_string("declared-kind")
            .map(|kind| {
                vec![EventDecl {
                    kind,
                    severity: Severity::Info,
                    description: "a name the test chose".into(),
                    fields: Vec::new(),
                }]
            })
            .unwrap_or_default();
        Descriptor {
            name: "hostile-block".into(),
            description: "blocks in a WASI call, for tests".into(),
            config: Vec::new(),
            events,
        }
    }

    fn init() -> Result<(), String> {
        block_if_named("init");
        correlator::plugin::timers::every(correlator::plugin::types::TickKind::Minute)?;
        // Something to checkpoint, so that state is kept at every version.
        correlator::plugin::state::set("seen", b"1")
    }

    fn process(_batch: RecordBatch) {
        block_if_named("process");
    }

    fn tick(_tick: TimerTick) {
        block_if_named("tick");
    }

    fn statistics(_reset: bool) {
        block_if_named("statistics");
    }
}

impl durable::Guest for HostileBlock {
    fn state_version() -> u32 {
        block_if_named("state-version");
        if std::fs::metadata("v1").is_ok() {
            1
        } else {
            2
        }
    }

    fn migrate(_stored_version: u32) -> Result<(), String> {
        block_if_named("migrate");
        Ok(())
    }

    fn checkpoint() {
        block_if_named("checkpoint");
    }
}

export!(HostileBlock);
