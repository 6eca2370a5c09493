//! Correlation by a key other than the record's server.
//!
//! Records may be split between workers by their hostname (the runtime's
//! "More than one machine"), so what a module counts per something else
//! (failed passwords per attacking address) would see only some servers.
//! Send what you correlate on with [`send`], keyed by what you correlate
//! by, and do the counting in [`crate::Module::receive`]: the runtime
//! hands every message to the instance that owns its key, in the order of
//! the records that sent them, so that the counts are whole.
//!
//! In one process an instance owns every key: a message sent while a
//! record is processed is received right after that record, by the same
//! instance, without leaving it. Keep the two halves apart (what
//! `process` keeps per server, what `receive` keeps per key), and the
//! module counts the same either way.
//!
//! On workers a message waits until every partition has passed its
//! record, so it comes later than the receiving partition's own records,
//! and that partition's ticks run ahead of it. Let what `receive` keeps
//! age by the times of the messages themselves (the `time` it is given),
//! never by a tick's: a tick that forgets a key's entries as old would
//! lose them for the messages still on their way.

use std::cell::{Cell, RefCell};

thread_local! {
    /// Whether messages go through the host (the instance runs one
    /// partition of a stream).
    static PARTITIONED: Cell<bool> = const { Cell::new(false) };
    /// Messages sent while a record is processed, in one process: received
    /// once it is.
    static WAITING: RefCell<Waiting> = const { RefCell::new(Waiting::new()) };
    /// The buffers of the messages delivered last, kept for the next ones.
    static SPARE: RefCell<Waiting> = const { RefCell::new(Waiting::new()) };
}

/// Messages waiting in one process, end to end in buffers that are kept
/// from record to record: once they have grown, sending allocates nothing
/// (a module sends on most records it matches).
#[derive(Default)]
struct Waiting {
    keys: String,
    payloads: Vec<u8>,
    /// Each message's key and payload lengths, in the order sent.
    lengths: Vec<(usize, usize)>,
}

impl Waiting {
    const fn new() -> Waiting {
        Waiting {
            keys: String::new(),
            payloads: Vec::new(),
            lengths: Vec::new(),
        }
    }

    fn push(&mut self, key: &str, payload: &[u8]) {
        self.keys.push_str(key);
        self.payloads.extend_from_slice(payload);
        self.lengths.push((key.len(), payload.len()));
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.payloads.clear();
        self.lengths.clear();
    }
}

/// Hand `payload` to the instance that owns `key`, which gets it in
/// [`crate::Module::receive`] with the time of the record being processed.
/// Send from [`crate::Module::process`]: messages sent elsewhere (a tick)
/// count as sent after the batch's last record.
pub fn send(key: &str, payload: &[u8]) {
    if PARTITIONED.with(Cell::get) {
        let record = crate::record::current_index().unwrap_or(u32::MAX);
        crate::sys::exchange::send(record, key, payload);
    } else {
        WAITING.with(|waiting| waiting.borrow_mut().push(key, payload));
    }
}

/// Ask the host, once the instance starts, whether it runs partitioned.
#[doc(hidden)]
pub fn __start() {
    PARTITIONED.with(|partitioned| partitioned.set(crate::sys::exchange::partitioned()));
}

/// Hand `module` what was sent while the record just processed was (in
/// one process). The default [`crate::Module::process_batch`] calls it
/// after each record; one that overrides it must too.
pub fn deliver_waiting<M: crate::Module>(module: &mut M) {
    // What `receive` sends in turn waits in the spare buffers, and is
    // delivered in the next round.
    while WAITING.with_borrow(|waiting| !waiting.lengths.is_empty()) {
        let mut delivering = WAITING.replace(SPARE.take());
        let time = crate::record::current_time().unwrap_or_else(crate::now);
        let (mut key_at, mut payload_at) = (0, 0);
        for &(key_length, payload_length) in &delivering.lengths {
            let key = &delivering.keys[key_at..key_at + key_length];
            let payload = &delivering.payloads[payload_at..payload_at + payload_length];
            module.receive(key, payload, time);
            key_at += key_length;
            payload_at += payload_length;
        }
        delivering.clear();
        SPARE.set(delivering);
    }
}

/// Hand `module` keyed messages the host routed to it, each with its
/// sending record's time as the time of the events it dispatches.
#[doc(hidden)]
pub fn __receive<M: crate::Module>(
    module: &mut M,
    messages: Vec<crate::__bindings::module::exports::correlator::plugin::keyed::KeyedMessage>,
) {
    for message in messages {
        crate::record::with_time(message.time, || {
            module.receive(&message.key, &message.payload, message.time);
        });
    }
    crate::__end_batch();
}
