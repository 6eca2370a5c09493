//! Test a module or handler natively, with plain `cargo test`: an in-memory
//! host stands in for the runtime (native builds only).
//!
//! Every SDK call that reaches the host — [`crate::config`],
//! [`crate::Event::dispatch`], [`crate::state`], [`crate::timers`],
//! [`crate::log`], [`crate::secrets`], [`crate::delivery`], [`crate::now`] —
//! goes to a [`TestHost`] in a native build: set configuration values and
//! secrets, drive the module with records and ticks through the same code
//! the component runs, and look at the events it dispatched, the state it
//! wrote, what it logged and what it would have sent. The host checks
//! events as the runtime does: an undeclared kind or field, a missing one
//! or a wrong type is refused with the runtime's reason.
//!
//! ```
//! use correlator_sdk::testing::{TestHost, TestRecord};
//! use correlator_sdk::{Descriptor, Event, EventType, Module, Record, Severity, Value, config};
//!
//! struct Hello {
//!     greeting: String,
//! }
//!
//! impl Module for Hello {
//!     fn describe() -> Descriptor {
//!         Descriptor::new("hello", "says hello for every record")
//!             .config(correlator_sdk::ConfigItem::text("greeting", "hello", "what to say"))
//!             .event(EventType::new("Hello", Severity::Info, "a record was seen")
//!                 .text("host", "the record's hostname"))
//!     }
//!     fn init() -> Result<Self, String> {
//!         Ok(Hello { greeting: config::text("greeting")? })
//!     }
//!     fn process(&mut self, record: &Record<'_>) {
//!         let _ = Event::new("Hello", format!("{} from {}", self.greeting, record.hostname))
//!             .text("host", record.hostname)
//!             .dispatch();
//!     }
//! }
//!
//! let host = TestHost::new();
//! host.set_config("greeting", Value::Text("hi".into()));
//! let mut module: Hello = host.start().unwrap();
//! host.process(&mut module, &[TestRecord::new(1_676_905_967, "web1", "app", "hi there")]);
//! let events = host.take_events();
//! assert_eq!(events.len(), 1);
//! assert_eq!(events[0].summary, "hi from web1");
//! assert_eq!(events[0].text("host"), Some("web1"));
//! ```

use crate::__bindings::{self as wit, RecordBatch, Value, ValueType};
use crate::{Module, Tick, TickKind, Timestamp};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// An event a module dispatched, with its fields by name.
#[derive(Debug, Clone)]
pub struct TestEvent {
    /// Its kind.
    pub kind: String,
    /// Its one-line summary.
    pub summary: String,
    /// Its time: the record's being processed, else the host's clock.
    pub time: Timestamp,
    /// Its fields, in the order set.
    pub fields: Vec<(String, Value)>,
}

impl TestEvent {
    /// The field `name`.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value)
    }

    /// The text (or e-mail) field `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.field(name)? {
            Value::Text(text) | Value::Email(text) => Some(text),
            _ => None,
        }
    }

    /// The integer field `name`.
    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.field(name)? {
            Value::Integer(integer) => Some(*integer),
            _ => None,
        }
    }
}

/// A record to hand a module, as the runtime would have parsed it.
#[derive(Debug, Clone)]
pub struct TestRecord {
    /// When it was written.
    pub timestamp: Timestamp,
    /// Syslog facility (0-23).
    pub facility: u8,
    /// Syslog severity (0-7).
    pub severity: u8,
    /// The host that wrote it.
    pub hostname: String,
    /// The program.
    pub app_name: String,
    /// Its process id, as written.
    pub proc_id: String,
    /// RFC 5424 MSGID.
    pub msg_id: String,
    /// RFC 5424 structured data, as written.
    pub structured_data: String,
    /// The message.
    pub message: String,
    /// The network peer that sent it (empty: a file).
    pub peer: String,
}

impl TestRecord {
    /// A record written at `seconds` (since the epoch, UTC) by `app_name`
    /// on `hostname`, saying `message` (facility auth, severity info).
    pub fn new(seconds: i64, hostname: &str, app_name: &str, message: &str) -> TestRecord {
        TestRecord {
            timestamp: Timestamp {
                seconds,
                nanoseconds: 0,
                offset_minutes: 0,
            },
            facility: 4,
            severity: 6,
            hostname: hostname.to_owned(),
            app_name: app_name.to_owned(),
            proc_id: String::new(),
            msg_id: String::new(),
            structured_data: String::new(),
            message: message.to_owned(),
            peer: String::new(),
        }
    }

    /// The same record with process id `proc_id`.
    pub fn pid(mut self, proc_id: &str) -> TestRecord {
        proc_id.clone_into(&mut self.proc_id);
        self
    }
}

/// Something logged through [`crate::log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// What was said.
    pub message: String,
}

/// What the test host holds for the current thread's test.
#[derive(Default)]
struct World {
    /// Values set by the test, by key.
    config_set: BTreeMap<String, Value>,
    /// Items the started component declared: key → default.
    declared: Option<BTreeMap<String, Value>>,
    secrets: BTreeMap<String, String>,
    now: Option<Timestamp>,
    events: Vec<TestEvent>,
    state: BTreeMap<String, Vec<u8>>,
    logs: Vec<LogLine>,
    timers: Vec<(TickKind, Option<(u8, u8)>)>,
    requests: Vec<wit::handler::correlator::plugin::delivery::HttpRequest>,
    mails: Vec<wit::handler::correlator::plugin::delivery::MailRequest>,
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World::default());
}

fn with_world<R>(f: impl FnOnce(&mut World) -> R) -> R {
    WORLD.with(|world| f(&mut world.borrow_mut()))
}

/// The in-memory host of this thread's test. Tests run on threads of their
/// own, so each has its own; [`TestHost::new`] starts it empty.
pub struct TestHost {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// An empty host: no configuration set, no state, nothing dispatched.
    pub fn new() -> TestHost {
        with_world(|world| *world = World::default());
        TestHost {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Set configuration item `key` (as `config = { KEY = VALUE }` in an
    /// app file would): [`TestHost::start`] refuses a key the component
    /// does not declare, or a value of another type.
    pub fn set_config(&self, key: &str, value: Value) {
        with_world(|world| world.config_set.insert(key.to_owned(), value));
    }

    /// Grant secret `name` with `value`.
    pub fn set_secret(&self, name: &str, value: &str) {
        with_world(|world| world.secrets.insert(name.to_owned(), value.to_owned()));
    }

    /// Set the stream clock ([`crate::now`], and the time of events
    /// dispatched outside a record).
    pub fn set_now(&self, now: Timestamp) {
        with_world(|world| world.now = Some(now));
    }

    /// Start module `M` as the runtime does: its configuration items get
    /// their defaults and the values set, its event types are learnt, and
    /// [`Module::init`] runs (on the state this host holds: see
    /// [`TestHost::restart`]).
    pub fn start<M: Module>(&self) -> Result<M, String> {
        let descriptor = M::describe().into_wit();
        self.declare_config(&descriptor)?;
        crate::__declare_events(&descriptor);
        M::init()
    }

    /// Take a checkpoint of `module` and start a new instance on the state
    /// it wrote, as a restart of the runtime would.
    pub fn restart<M: Module>(&self, mut module: M) -> Result<M, String> {
        module.checkpoint();
        drop(module);
        self.start()
    }

    /// Start handler `H` as the runtime does (configuration as for
    /// [`TestHost::start`]).
    pub fn start_handler<H: crate::Handler>(&self) -> Result<H, String> {
        self.declare_config(&H::describe().into_wit())?;
        H::init()
    }

    fn declare_config(&self, descriptor: &wit::Descriptor) -> Result<(), String> {
        let declared: BTreeMap<String, Value> = descriptor
            .config
            .iter()
            .map(|item| (item.key.clone(), item.default.clone()))
            .collect();
        let types: BTreeMap<&str, ValueType> = descriptor
            .config
            .iter()
            .map(|item| (item.key.as_str(), item.value_type))
            .collect();
        with_world(|world| {
            for (key, value) in &world.config_set {
                let Some(&declared_type) = types.get(key.as_str()) else {
                    return Err(format!(
                        "configuration item \"{key}\" is not declared by {}",
                        descriptor.name
                    ));
                };
                if !type_fits(value, declared_type) {
                    return Err(format!(
                        "configuration item \"{key}\" should be {}, not {value:?}",
                        type_name(declared_type)
                    ));
                }
            }
            world.declared = Some(declared);
            // A new instance asks for its ticks again.
            world.timers.clear();
            Ok(())
        })
    }

    /// Hand `records` to `module` as one batch, through
    /// [`Module::process_batch`], as the runtime does.
    pub fn process<M: Module>(&self, module: &mut M, records: &[TestRecord]) {
        let mut batch = RecordBatch {
            text: String::new(),
            spans: Vec::new(),
            seconds: Vec::new(),
            nanoseconds: Vec::new(),
            offset_minutes: Vec::new(),
            priorities: Vec::new(),
            positions: Vec::new(),
        };
        for (position, record) in (1..).zip(records) {
            for field in [
                &record.hostname,
                &record.app_name,
                &record.proc_id,
                &record.msg_id,
                &record.structured_data,
                &record.message,
                &record.peer,
            ] {
                let start = u32::try_from(batch.text.len()).unwrap_or(u32::MAX);
                batch.text.push_str(field);
                let length = u32::try_from(field.len()).unwrap_or(u32::MAX);
                batch.spans.extend([start, length]);
            }
            batch.seconds.push(record.timestamp.seconds);
            batch.nanoseconds.push(record.timestamp.nanoseconds);
            batch.offset_minutes.push(record.timestamp.offset_minutes);
            batch
                .priorities
                .push(record.facility << 3 | (record.severity & 7));
            batch.positions.push(position);
        }
        // The stream clock follows the records.
        if let Some(last) = records.last() {
            self.set_now(last.timestamp);
        }
        module.process_batch(&crate::Batch::new(&batch));
        crate::__end_batch();
    }

    /// Give `module` a tick of `kind` at `time` (the clock moves there).
    pub fn tick<M: Module>(&self, module: &mut M, kind: TickKind, time: Timestamp) {
        self.set_now(time);
        module.tick(&Tick { kind, time });
    }

    /// Have `module` dispatch its statistics.
    pub fn statistics<M: Module>(&self, module: &mut M, reset: bool) {
        module.statistics(reset);
    }

    /// Hand `events` to `handler`, as the runtime does: one result each.
    pub fn handle<H: crate::Handler>(
        &self,
        handler: &mut H,
        events: &[crate::DeliveredEvent],
    ) -> Vec<Result<(), String>> {
        handler.handle_batch(events)
    }

    /// The events dispatched so far.
    pub fn events(&self) -> Vec<TestEvent> {
        with_world(|world| world.events.clone())
    }

    /// The events dispatched so far, forgotten here.
    pub fn take_events(&self) -> Vec<TestEvent> {
        with_world(|world| std::mem::take(&mut world.events))
    }

    /// The value stored under `key`.
    pub fn state(&self, key: &str) -> Option<Vec<u8>> {
        with_world(|world| world.state.get(key).cloned())
    }

    /// Every state key, sorted.
    pub fn state_keys(&self) -> Vec<String> {
        with_world(|world| world.state.keys().cloned().collect())
    }

    /// What was logged so far.
    pub fn logs(&self) -> Vec<LogLine> {
        with_world(|world| world.logs.clone())
    }

    /// The ticks asked for: the kind, and for a daily one its hour and
    /// minute.
    pub fn timers(&self) -> Vec<(TickKind, Option<(u8, u8)>)> {
        with_world(|world| world.timers.clone())
    }

    /// The HTTP requests a handler put in its outbox (never sent).
    pub fn requests(&self) -> Vec<wit::handler::correlator::plugin::delivery::HttpRequest> {
        with_world(|world| world.requests.clone())
    }

    /// The e-mails a handler put in its outbox (never sent).
    pub fn mails(&self) -> Vec<wit::handler::correlator::plugin::delivery::MailRequest> {
        with_world(|world| world.mails.clone())
    }
}

/// How a type is named in a sentence.
fn type_name(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Integer => "an integer",
        ValueType::Float => "a float",
        ValueType::Text => "text",
        ValueType::Boolean => "a boolean",
        ValueType::Email => "an e-mail address",
        ValueType::Timestamp => "a timestamp",
    }
}

fn type_fits(value: &Value, value_type: ValueType) -> bool {
    matches!(
        (value, value_type),
        (Value::Integer(_), ValueType::Integer)
            | (Value::Float(_) | Value::Integer(_), ValueType::Float)
            | (Value::Text(_), ValueType::Text)
            | (Value::Boolean(_), ValueType::Boolean)
            | (Value::Email(_) | Value::Text(_), ValueType::Email)
            | (Value::Timestamp(_), ValueType::Timestamp)
    )
}

/// The host's clock, or the epoch when the test set none.
fn now() -> Timestamp {
    with_world(|world| world.now).unwrap_or(Timestamp {
        seconds: 0,
        nanoseconds: 0,
        offset_minutes: 0,
    })
}

/// The host's interfaces, with the signatures of the generated imports
/// ([`crate::sys`] picks these in a native build).
pub(crate) mod host {
    pub(crate) mod config {
        use super::super::with_world;
        use crate::Value;

        pub(crate) fn get(key: &str) -> Option<Value> {
            with_world(|world| match &world.declared {
                // Started: declared items only, set or default.
                Some(declared) => {
                    let default = declared.get(key)?;
                    Some(world.config_set.get(key).unwrap_or(default).clone())
                }
                // Not started through the host: what the test set.
                None => world.config_set.get(key).cloned(),
            })
        }
    }

    pub(crate) mod clock {
        use crate::Timestamp;

        pub(crate) fn now() -> Timestamp {
            super::super::now()
        }
    }

    /// One process: every key is the instance's own, and the SDK delivers
    /// keyed messages itself.
    pub(crate) mod exchange {
        pub(crate) fn partitioned() -> bool {
            false
        }

        pub(crate) fn send(_record: u32, _key: &str, _payload: &[u8]) {}
    }

    pub(crate) mod secrets {
        pub(crate) fn get(name: &str) -> Option<String> {
            super::super::with_world(|world| world.secrets.get(name).cloned())
        }
    }

    pub(crate) mod timers {
        use super::super::with_world;
        use crate::TickKind;

        pub(crate) fn every(kind: TickKind) -> Result<(), String> {
            if matches!(kind, TickKind::Daily) {
                return Err("daily ticks are asked for with timers::daily_at".to_owned());
            }
            with_world(|world| {
                if !world.timers.contains(&(kind, None)) {
                    world.timers.push((kind, None));
                }
            });
            Ok(())
        }

        pub(crate) fn daily_at(hour: u8, minute: u8) -> Result<(), String> {
            if hour > 23 || minute > 59 {
                return Err(format!("{hour}:{minute:02} is not a time of day"));
            }
            with_world(|world| {
                let tick = (TickKind::Daily, Some((hour, minute)));
                if !world.timers.contains(&tick) {
                    world.timers.push(tick);
                }
            });
            Ok(())
        }
    }

    pub(crate) mod state {
        use super::super::with_world;

        pub(crate) fn get(key: &str) -> Option<Vec<u8>> {
            with_world(|world| world.state.get(key).cloned())
        }

        pub(crate) fn set(key: &str, value: &[u8]) -> Result<(), String> {
            if key.is_empty() || key.len() > 1024 {
                return Err(format!(
                    "a state key is 1 to 1024 bytes long, not {}",
                    key.len()
                ));
            }
            with_world(|world| world.state.insert(key.to_owned(), value.to_vec()));
            Ok(())
        }

        pub(crate) fn delete(key: &str) {
            with_world(|world| world.state.remove(key));
        }

        pub(crate) fn keys() -> Vec<String> {
            with_world(|world| world.state.keys().cloned().collect())
        }
    }

    pub(crate) mod logging {
        pub(crate) use crate::__bindings::module::wasi::logging::logging::Level;

        pub(crate) fn log(level: Level, _context: &str, message: &str) {
            let level = match level {
                Level::Trace | Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error | Level::Critical => "error",
            };
            super::super::with_world(|world| {
                world.logs.push(super::super::LogLine {
                    level,
                    message: message.to_owned(),
                });
            });
        }
    }

    pub(crate) mod delivery {
        pub use crate::__bindings::handler::correlator::plugin::delivery::MailSecurity;
        pub(crate) use crate::__bindings::handler::correlator::plugin::delivery::{
            HttpRequest, MailRequest,
        };

        pub(crate) fn send_http(request: &HttpRequest) -> Result<(), String> {
            super::super::with_world(|world| world.requests.push(request.clone()));
            Ok(())
        }

        pub(crate) fn send_mail(request: &MailRequest) -> Result<(), String> {
            super::super::with_world(|world| world.mails.push(request.clone()));
            Ok(())
        }
    }

    pub(crate) mod events {
        use super::super::{TestEvent, now, type_fits, with_world};
        use crate::__bindings::module::correlator::plugin::types::Event;
        use crate::{DispatchError, Timestamp};

        pub(crate) fn triggered_by(_index: u32) {}

        pub(crate) fn dispatch(event: &Event) -> Result<(), DispatchError> {
            let Some(declared) = crate::event::declared_by_kind(&event.kind) else {
                return Err(DispatchError::UndeclaredKind(event.kind.clone()));
            };
            let mut seen: Vec<&str> = Vec::new();
            for field in &event.fields {
                let Some((_, value_type)) =
                    declared.fields.iter().find(|(name, _)| *name == field.name)
                else {
                    return Err(DispatchError::UndeclaredField(field.name.clone()));
                };
                if !type_fits(&field.value, *value_type) {
                    return Err(DispatchError::WrongType(field.name.clone()));
                }
                if seen.contains(&field.name.as_str()) {
                    return Err(DispatchError::DuplicateField(field.name.clone()));
                }
                seen.push(&field.name);
            }
            if let Some((missing, _)) = declared
                .fields
                .iter()
                .find(|(name, _)| !seen.contains(&name.as_str()))
            {
                return Err(DispatchError::MissingField(missing.clone()));
            }
            let fields = event
                .fields
                .iter()
                .map(|field| (field.name.clone(), field.value.clone()))
                .collect();
            record(&event.kind, &event.summary, fields, event.time);
            Ok(())
        }

        pub(crate) fn dispatch_encoded(
            index: u32,
            summary: &str,
            values: &[u8],
            time: Option<Timestamp>,
        ) -> Result<(), DispatchError> {
            let Some(declared) = crate::event::declared_by_index(index) else {
                return Err(DispatchError::UndeclaredKind(format!("#{index}")));
            };
            let decoded = crate::event::decode(&declared.fields, values);
            if decoded.len() < declared.fields.len() {
                let missing = &declared.fields[decoded.len()].0;
                return Err(DispatchError::MissingField(missing.clone()));
            }
            let fields = declared
                .fields
                .iter()
                .map(|(name, _)| name.clone())
                .zip(decoded)
                .collect();
            record(&declared.kind, summary, fields, time);
            Ok(())
        }

        fn record(
            kind: &str,
            summary: &str,
            fields: Vec<(String, crate::Value)>,
            time: Option<Timestamp>,
        ) {
            let time = time.unwrap_or_else(now);
            with_world(|world| {
                world.events.push(TestEvent {
                    kind: kind.to_owned(),
                    summary: summary.to_owned(),
                    time,
                    fields,
                });
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ConfigItem, DeliveredEvent, Descriptor, Event, EventType, Handler, Record, Severity,
    };

    /// Counts records per host, saves the counts, and says so.
    struct Counter {
        seen: BTreeMap<String, i64>,
    }

    impl Module for Counter {
        fn describe() -> Descriptor {
            Descriptor::new("counter", "counts records per host")
                .config(ConfigItem::integer("every", 2, "report every this many"))
                .event(
                    EventType::new("Counted", Severity::Info, "a host sent `every` more")
                        .text("host", "the host")
                        .integer("records", "records so far"),
                )
        }

        fn init() -> Result<Self, String> {
            crate::timers::every(TickKind::Minute)?;
            let seen = crate::state::load("seen")?.unwrap_or_default();
            Ok(Counter { seen })
        }

        fn process(&mut self, record: &Record<'_>) {
            let every = crate::config::integer("every").unwrap_or(1);
            let seen = self.seen.entry(record.hostname.to_owned()).or_default();
            *seen += 1;
            if *seen % every == 0 {
                // Fields out of declared order: the event goes by name.
                let _ = Event::new("Counted", format!("{} sent {seen}", record.hostname))
                    .integer("records", *seen)
                    .text("host", record.hostname)
                    .dispatch();
            }
        }

        fn tick(&mut self, _tick: &Tick) {
            crate::log::info(&format!("{} hosts", self.seen.len()));
            let refused = Event::new("Counted", "no host")
                .text("host", "-")
                .dispatch();
            crate::log::warn(&format!("{refused:?}"));
        }

        fn checkpoint(&mut self) {
            let _ = crate::state::save("seen", &self.seen);
        }
    }

    #[test]
    fn a_module_runs_on_the_test_host_as_in_the_runtime() {
        let host = TestHost::new();
        host.set_config("every", Value::Integer(2));
        let mut counter: Counter = host.start().expect("starts");
        let at = |second: i64| TestRecord::new(1_000 + second, "web1", "app", "hello");
        host.process(&mut counter, &[at(0), at(1), at(2)]);
        let events = host.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (
                events[0].kind.as_str(),
                events[0].summary.as_str(),
                events[0].time.seconds
            ),
            ("Counted", "web1 sent 2", 1_001)
        );
        assert_eq!(
            (events[0].text("host"), events[0].integer("records")),
            (Some("web1"), Some(2))
        );
        // Restarted on its checkpoint, it counts on.
        let mut counter = host.restart(counter).expect("starts again");
        host.process(&mut counter, &[at(3)]);
        assert_eq!(host.take_events()[0].summary, "web1 sent 4");
        // A tick at a time of its own; an event missing a field is refused
        // with the runtime's reason.
        let time = Timestamp {
            seconds: 1_060,
            nanoseconds: 0,
            offset_minutes: 0,
        };
        host.tick(&mut counter, TickKind::Minute, time);
        assert_eq!(
            host.logs(),
            [
                LogLine {
                    level: "info",
                    message: "1 hosts".into()
                },
                LogLine {
                    level: "warn",
                    message: "Err(DispatchError::MissingField(\"records\"))".into()
                },
            ]
        );
        assert!(host.events().is_empty());
        assert_eq!(host.timers(), [(TickKind::Minute, None)]);
        assert_eq!(host.state_keys(), ["seen"]);
    }

    /// Sends each record's message keyed by its text, and once more from
    /// `receive` for a message of "echo".
    struct Relay {
        received: Vec<(String, Vec<u8>, i64)>,
    }

    impl Module for Relay {
        fn describe() -> Descriptor {
            Descriptor::new("relay", "sends keyed messages")
        }

        fn init() -> Result<Self, String> {
            Ok(Relay {
                received: Vec::new(),
            })
        }

        fn process(&mut self, record: &Record<'_>) {
            crate::exchange::send(record.message, record.hostname.as_bytes());
            crate::exchange::send("", b"");
        }

        fn receive(&mut self, key: &str, payload: &[u8], time: Timestamp) {
            self.received
                .push((key.to_owned(), payload.to_vec(), time.seconds));
            if key == "echo" {
                crate::exchange::send("echoed", payload);
            }
        }
    }

    #[test]
    fn in_one_process_keyed_messages_come_back_after_their_record_in_order() {
        let host = TestHost::new();
        let mut relay: Relay = host.start().expect("starts");
        host.process(
            &mut relay,
            &[
                TestRecord::new(10, "web1", "app", "192.0.2.7"),
                TestRecord::new(11, "web2", "app", "echo"),
                TestRecord::new(12, "web3", "app", "2001:db8::1"),
            ],
        );
        let received: Vec<(&str, &[u8], i64)> = relay
            .received
            .iter()
            .map(|(key, payload, time)| (key.as_str(), payload.as_slice(), *time))
            .collect();
        assert_eq!(
            received,
            [
                ("192.0.2.7", &b"web1"[..], 10),
                ("", &b""[..], 10),
                ("echo", &b"web2"[..], 11),
                ("", &b""[..], 11),
                ("echoed", &b"web2"[..], 11),
                ("2001:db8::1", &b"web3"[..], 12),
                ("", &b""[..], 12),
            ]
        );
    }

    #[test]
    fn configuration_the_component_does_not_declare_or_of_another_type_is_refused() {
        let host = TestHost::new();
        host.set_config("evry", Value::Integer(2));
        assert_eq!(
            host.start::<Counter>().err().as_deref(),
            Some("configuration item \"evry\" is not declared by counter")
        );
        let host = TestHost::new();
        host.set_config("every", Value::Text("2".into()));
        assert_eq!(
            host.start::<Counter>().err().as_deref(),
            Some("configuration item \"every\" should be an integer, not Value::Text(\"2\")")
        );
    }

    /// Posts every event to a granted URL with a secret token.
    struct Poster {
        url: String,
        token: String,
    }

    impl Handler for Poster {
        fn describe() -> Descriptor {
            Descriptor::new("poster", "posts events")
                .config(ConfigItem::text("url", "", "where to"))
        }

        fn init() -> Result<Self, String> {
            Ok(Poster {
                url: crate::config::required_text("url")?,
                token: crate::secrets::named_by("token", "token")?,
            })
        }

        fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String> {
            let headers = [("Authorization".to_owned(), format!("Bearer {}", self.token))];
            crate::delivery::post_json(&self.url, &headers, event.summary.clone().into_bytes())
        }
    }

    #[test]
    fn a_handlers_requests_are_kept_not_sent() {
        let host = TestHost::new();
        host.set_config("url", Value::Text("https://hooks.example.org/in".into()));
        assert_eq!(
            host.start_handler::<Poster>().err().as_deref(),
            Some(
                "token names the secret \"token\", which the app file does not grant (grants = { secrets = [\"token\"] })"
            )
        );
        host.set_secret("token", "s3cret");
        let mut poster: Poster = host.start_handler().expect("starts");
        let event = DeliveredEvent {
            module: "OpenSSH".into(),
            kind: "SSHDLoginFailed".into(),
            severity: Severity::Error,
            summary: "a failed login".into(),
            fields: Vec::new(),
            time: Timestamp {
                seconds: 1_000,
                nanoseconds: 0,
                offset_minutes: 0,
            },
        };
        assert_eq!(host.handle(&mut poster, &[event]), [Ok(())]);
        let requests = host.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            (
                requests[0].method.as_str(),
                requests[0].url.as_str(),
                requests[0].body.as_slice()
            ),
            (
                "POST",
                "https://hooks.example.org/in",
                b"a failed login".as_slice()
            )
        );
        assert!(
            requests[0]
                .headers
                .contains(&("Authorization".to_owned(), "Bearer s3cret".to_owned()))
        );
    }
}
