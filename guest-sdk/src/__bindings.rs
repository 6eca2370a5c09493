//! The generated WIT bindings, one `generate!` per world. The handler world
//! reuses the module world's shared interfaces so both see the same types.
//! Not part of the public API: the export macros refer to it.
#![allow(missing_docs, reason = "generated code")]

/// Bindings of the `keyed-logic-module` world: every module the SDK
/// builds exports `durable` (a module without state has nothing to write)
/// and `keyed` (one that sends nothing through `exchange` gets nothing).
pub mod module {
    wit_bindgen::generate!({
        world: "keyed-logic-module",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_logic_module",
        default_bindings_module: "$crate::__bindings::module",
        runtime_path: "::correlator_sdk::__rt",
        generate_all,
    });
}

/// Bindings of the `packed-event-handler` world: every handler the SDK
/// builds also takes its events packed.
pub mod handler {
    wit_bindgen::generate!({
        world: "packed-event-handler",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_event_handler",
        default_bindings_module: "$crate::__bindings::handler",
        runtime_path: "::correlator_sdk::__rt",
        with: {
            "correlator:plugin/types@0.1.0": super::module::correlator::plugin::types,
            "correlator:plugin/config@0.1.0": super::module::correlator::plugin::config,
            "correlator:plugin/clock@0.1.0": super::module::correlator::plugin::clock,
            "correlator:plugin/secrets@0.1.0": super::module::correlator::plugin::secrets,
            "wasi:logging/logging@0.1.0-draft": super::module::wasi::logging::logging,
        },
    });
}

pub use module::correlator::plugin::events::DispatchError;
pub use module::correlator::plugin::types::{
    ConfigItem, DeliveredEvent, Descriptor, EventDecl, Field, FieldDecl, RecordBatch, Severity,
    TickKind, TimerTick as Tick, Timestamp, Value, ValueType,
};
