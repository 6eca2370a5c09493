//! The host's generated WIT bindings: one `bindgen!` per world. The handler
//! world reuses the module world's shared interfaces, so each host interface
//! is implemented once.
#![allow(missing_docs, reason = "generated code")]

/// Bindings of the `logic-module` world.
pub mod module {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "logic-module",
        additional_derives: [PartialEq],
        // Dispatch traps when a guest exceeds its event limits,
        // and the state store's reads trap when the store cannot be read.
        imports: {
            "correlator:plugin/events.dispatch": trappable,
            "correlator:plugin/events.dispatch-values": trappable,
            "correlator:plugin/events.dispatch-encoded": trappable,
            "correlator:plugin/state.get": trappable,
            "correlator:plugin/state.keys": trappable,
            "correlator:plugin/state.set": trappable,
        },
        // Calls into guests are futures, so that a call blocked in a WASI
        // host call (a sleep, a socket, a file) is bounded by a timeout.
        exports: { default: async },
    });
}

/// Bindings of the `event-handler` world.
pub mod handler {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "event-handler",
        with: {
            "correlator:plugin/types": super::module::correlator::plugin::types,
            "correlator:plugin/config": super::module::correlator::plugin::config,
            "correlator:plugin/clock": super::module::correlator::plugin::clock,
            "correlator:plugin/secrets": super::module::correlator::plugin::secrets,
            "wasi:logging/logging": super::module::wasi::logging::logging,
        },
        exports: { default: async },
    });
}
