//! The guest SDK for correlator: write logic modules and event handlers in
//! plain Rust and compile them to `wasm32-wasip2` components.
//!
//! A module is a type that implements [`Module`] and is exported with
//! [`export_module!`]; a handler implements [`Handler`] and is exported with
//! [`export_handler!`]. The SDK hides the generated WIT bindings: records
//! arrive as [`Record`]s borrowing the host's batch buffer, events leave
//! through [`Event`], configuration is read with [`config`], and
//! [`CountOverTime`] counts occurrences in a sliding window of record time.
//!
//! ```
//! use correlator_sdk::{export_module, Descriptor, Event, EventType, Module, Record, Severity};
//!
//! struct Hello;
//!
//! impl Module for Hello {
//!     fn describe() -> Descriptor {
//!         Descriptor::new("hello", "says hello for every record")
//!             .event(EventType::new("Hello", Severity::Info, "a record was seen")
//!                 .text("host", "the record's hostname"))
//!     }
//!     fn init() -> Result<Self, String> {
//!         Ok(Hello)
//!     }
//!     fn process(&mut self, record: &Record<'_>) {
//!         let _ = Event::new("Hello", format!("hello from {}", record.hostname))
//!             .text("host", record.hostname)
//!             .dispatch();
//!     }
//! }
//!
//! export_module!(Hello);
//! ```

extern crate self as correlator_sdk;

mod describe;
mod event;
mod packed;
mod record;
mod sys;
mod time;
mod window;

pub mod collections;
pub mod config;
pub mod delivery;
pub mod exchange;
pub mod log;
pub mod secrets;
pub mod state;
#[cfg(feature = "templates")]
pub mod template;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod text;
pub mod timers;

#[doc(hidden)]
pub mod __bindings;

/// Components allocate with talc rather than the dlmalloc of Rust's
/// WebAssembly targets: a module allocates for most records (connections,
/// names, events) and talc takes about half as long per allocation (the
/// sshd module spent 6% of its time per record in dlmalloc). A component
/// that sets its own `#[global_allocator]` turns the SDK's `talc` feature
/// off (`default-features = false`).
#[cfg(all(
    feature = "talc",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

pub use __bindings::{
    DeliveredEvent, DispatchError, Field, Severity, Tick, TickKind, Timestamp, Value, ValueType,
};
pub use describe::{ConfigItem, Descriptor, EventType};
#[doc(hidden)]
pub use event::__declare_events;
pub use event::Event;
#[doc(hidden)]
pub use packed::{__unpack_events, __unpack_events_into};
#[doc(hidden)]
pub use record::__end_batch;
pub use record::{Batch, Record};
pub use window::CountOverTime;

/// The time of the latest record the host handed to any module: the stream's
/// clock. Use record timestamps for windows; use this in ticks and handlers.
pub fn now() -> Timestamp {
    sys::clock::now()
}

/// A logic module: looks at records and dispatches events.
///
/// The host makes one instance per `[modules.NAME]` of the app file, calls
/// [`Module::describe`], then [`Module::init`], then [`Module::process`] for
/// every record in stream order.
pub trait Module: Sized + 'static {
    /// Name, description, configuration items and event types. Must not
    /// depend on configuration: the host calls it before `init`.
    fn describe() -> Descriptor;

    /// Make the instance, reading configuration through [`config`]. An error
    /// stops the runtime's start-up with its message.
    fn init() -> Result<Self, String>;

    /// Look at one record.
    fn process(&mut self, record: &Record<'_>);

    /// Look at a batch of records. The default calls [`Module::process`] for
    /// each; override it only to amortise work across a batch.
    fn process_batch(&mut self, batch: &Batch<'_>) {
        for record in batch.records() {
            self.process(&record);
            exchange::deliver_waiting(self);
        }
    }

    /// A message [`exchange::send`] sent for `key`, a key this instance
    /// owns, at `time` (its sending record's). In one process that is
    /// right after the record that sent it; on workers, once the message
    /// reached the partition that owns the key. The default ignores it.
    fn receive(&mut self, key: &str, payload: &[u8], time: Timestamp) {
        let _ = (key, payload, time);
    }

    /// A timer tick. The default ignores it.
    fn tick(&mut self, tick: &Tick) {
        let _ = tick;
    }

    /// Dispatch the module's statistics as an event, and zero them when
    /// `reset` is set. The default has no statistics.
    fn statistics(&mut self, reset: bool) {
        let _ = reset;
    }

    /// The version of the layout of what the module keeps in [`state`].
    /// Raise it when that layout changes, and read the older layouts in
    /// [`Module::migrate`]: the host refuses to start a module on state
    /// written by a newer version, and hands older state to `migrate`.
    const STATE_VERSION: u32 = 1;

    /// The store holds state written by this module at `stored_version`
    /// (older than [`Module::STATE_VERSION`]): rewrite it in the current
    /// layout with [`state`]'s functions. Called before [`Module::init`],
    /// which then reads the migrated state. An error stops start-up with its
    /// message; the default refuses, so that state is never misread.
    fn migrate(stored_version: u32) -> Result<(), String> {
        Err(format!(
            "cannot read state written at version {stored_version} (this version is {}); discard it with --discard-state",
            Self::STATE_VERSION
        ))
    }

    /// Write what changed since the last checkpoint to [`state`] (for
    /// example with [`state::save`]). The host calls it every
    /// `state.checkpoint_interval`, at the end of a replay and on shutdown,
    /// and commits every module's writes at once. [`Module::init`] reads
    /// the state back with [`state::load`]. The default writes nothing:
    /// the module starts empty after a restart.
    fn checkpoint(&mut self) {}
}

/// An event handler: acts on the events its filter selects.
pub trait Handler: Sized + 'static {
    /// Name, description and configuration items. The host calls it before
    /// `init`.
    fn describe() -> Descriptor;

    /// Make the instance, reading configuration through [`config`]. An error
    /// stops the runtime's start-up with its message.
    fn init() -> Result<Self, String>;

    /// Act on one event; an error is logged by the host with its message.
    fn handle(&mut self, event: &DeliveredEvent) -> Result<(), String>;

    /// Act on a batch of events, one result per event. The default calls
    /// [`Handler::handle`] for each and then [`Handler::flush`].
    fn handle_batch(&mut self, events: &[DeliveredEvent]) -> Vec<Result<(), String>> {
        let results = events.iter().map(|event| self.handle(event)).collect();
        self.flush();
        results
    }

    /// Called after every batch: write out what was buffered.
    fn flush(&mut self) {}
}

/// Export a [`Module`] type as the component's logic module.
///
/// Use it once, at the top level of the crate.
#[macro_export]
macro_rules! export_module {
    ($ty:ty) => {
        const _: () = {
            struct __CorrelatorModuleExport;

            ::std::thread_local! {
                static __INSTANCE: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            fn __with<R>(f: impl FnOnce(&mut $ty) -> R) -> ::std::option::Option<R> {
                __INSTANCE.with(|cell| cell.borrow_mut().as_mut().map(f))
            }

            impl $crate::__bindings::module::exports::correlator::plugin::logic::Guest
                for __CorrelatorModuleExport
            {
                fn describe() -> $crate::__bindings::Descriptor {
                    <$ty as $crate::Module>::describe().into_wit()
                }

                fn init() -> ::std::result::Result<(), ::std::string::String> {
                    // A fresh instance gets no `describe` call: learn the
                    // event types here, for dispatch by index.
                    $crate::__declare_events(&<$ty as $crate::Module>::describe().into_wit());
                    $crate::exchange::__start();
                    let instance = <$ty as $crate::Module>::init()?;
                    __INSTANCE
                        .with(|cell| *cell.borrow_mut() = ::std::option::Option::Some(instance));
                    ::std::result::Result::Ok(())
                }

                fn process(batch: $crate::__bindings::RecordBatch) {
                    let batch = $crate::Batch::new(&batch);
                    __with(|module| <$ty as $crate::Module>::process_batch(module, &batch));
                    $crate::__end_batch();
                }

                fn tick(tick: $crate::Tick) {
                    __with(|module| <$ty as $crate::Module>::tick(module, &tick));
                }

                fn statistics(reset: bool) {
                    __with(|module| <$ty as $crate::Module>::statistics(module, reset));
                }
            }

            impl $crate::__bindings::module::exports::correlator::plugin::durable::Guest
                for __CorrelatorModuleExport
            {
                fn state_version() -> u32 {
                    <$ty as $crate::Module>::STATE_VERSION
                }

                fn migrate(
                    stored_version: u32,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    <$ty as $crate::Module>::migrate(stored_version)
                }

                fn checkpoint() {
                    __with(|module| <$ty as $crate::Module>::checkpoint(module));
                }
            }

            impl $crate::__bindings::module::exports::correlator::plugin::keyed::Guest
                for __CorrelatorModuleExport
            {
                fn receive(
                    messages: ::std::vec::Vec<
                        $crate::__bindings::module::exports::correlator::plugin::keyed::KeyedMessage,
                    >,
                ) {
                    __with(|module| $crate::exchange::__receive(module, messages));
                }
            }

            // Exported names like `correlator:plugin/logic@0.1.0#process` only
            // make sense (and only link) in a wasm component; natively the
            // crate still builds, so its unit tests run on the host.
            #[cfg(target_arch = "wasm32")]
            $crate::__bindings::module::__export_logic_module!(__CorrelatorModuleExport);

            // Natively nothing calls the exports; this keeps the module's
            // code from counting as dead there.
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(dead_code, reason = "a root for native builds, never called")]
            fn __native_root() {
                use $crate::__bindings::module::exports::correlator::plugin::logic::Guest as _;
                let _ = __CorrelatorModuleExport::describe;
                let _ = __CorrelatorModuleExport::init;
                let _ = __CorrelatorModuleExport::process;
                let _ = __CorrelatorModuleExport::tick;
                let _ = __CorrelatorModuleExport::statistics;
                use $crate::__bindings::module::exports::correlator::plugin::durable::Guest as _;
                let _ = __CorrelatorModuleExport::state_version;
                let _ = __CorrelatorModuleExport::migrate;
                let _ = __CorrelatorModuleExport::checkpoint;
                use $crate::__bindings::module::exports::correlator::plugin::keyed::Guest as _;
                let _ = __CorrelatorModuleExport::receive;
            }
        };
    };
}

/// Export a [`Handler`] type as the component's event handler.
///
/// Use it once, at the top level of the crate.
#[macro_export]
macro_rules! export_handler {
    ($ty:ty) => {
        const _: () = {
            struct __CorrelatorHandlerExport;

            ::std::thread_local! {
                static __INSTANCE: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            impl $crate::__bindings::handler::exports::correlator::plugin::handler::Guest
                for __CorrelatorHandlerExport
            {
                fn describe() -> $crate::__bindings::Descriptor {
                    <$ty as $crate::Handler>::describe().into_wit()
                }

                fn init() -> ::std::result::Result<(), ::std::string::String> {
                    let instance = <$ty as $crate::Handler>::init()?;
                    __INSTANCE
                        .with(|cell| *cell.borrow_mut() = ::std::option::Option::Some(instance));
                    ::std::result::Result::Ok(())
                }

                fn handle(
                    events: ::std::vec::Vec<$crate::DeliveredEvent>,
                ) -> ::std::vec::Vec<::std::result::Result<(), ::std::string::String>> {
                    __handle_events(&events)
                }
            }

            fn __handle_events(
                events: &[$crate::DeliveredEvent],
            ) -> ::std::vec::Vec<::std::result::Result<(), ::std::string::String>> {
                __INSTANCE.with(|cell| match cell.borrow_mut().as_mut() {
                    ::std::option::Option::Some(handler) => {
                        <$ty as $crate::Handler>::handle_batch(handler, events)
                    }
                    ::std::option::Option::None => events
                        .iter()
                        .map(|_| ::std::result::Result::Err("handler is not initialised".into()))
                        .collect(),
                })
            }

            ::std::thread_local! {
                // The events of the last packed batch: the next batch is
                // unpacked over them, reusing their room.
                static __EVENTS: ::std::cell::RefCell<::std::vec::Vec<$crate::DeliveredEvent>> =
                    const { ::std::cell::RefCell::new(::std::vec::Vec::new()) };
            }

            // The same batch, packed into one byte list by the host.
            impl $crate::__bindings::handler::exports::correlator::plugin::packed_handler::Guest
                for __CorrelatorHandlerExport
            {
                fn handle_packed(
                    events: ::std::vec::Vec<u8>,
                ) -> ::std::vec::Vec<::std::result::Result<(), ::std::string::String>> {
                    __EVENTS.with(|cell| {
                        let mut unpacked = cell.borrow_mut();
                        match $crate::__unpack_events_into(&events, &mut unpacked) {
                            ::std::result::Result::Ok(count) => {
                                __handle_events(unpacked.get(..count).unwrap_or_default())
                            }
                            // The host counts every event without a result as
                            // failed, and logs this one message.
                            ::std::result::Result::Err(error) => ::std::vec![::std::result::Result::Err(
                                ::std::format!("cannot unpack the events: {error}")
                            )],
                        }
                    })
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::__bindings::handler::__export_event_handler!(__CorrelatorHandlerExport);

            #[cfg(not(target_arch = "wasm32"))]
            #[allow(dead_code, reason = "a root for native builds, never called")]
            fn __native_root() {
                use $crate::__bindings::handler::exports::correlator::plugin::handler::Guest as _;
                let _ = __CorrelatorHandlerExport::describe;
                let _ = __CorrelatorHandlerExport::init;
                let _ = __CorrelatorHandlerExport::handle;
                let _ = <__CorrelatorHandlerExport as $crate::__bindings::handler::exports::correlator::plugin::packed_handler::Guest>::handle_packed;
            }
        };
    };
}
