//! The host's interfaces as the SDK calls them: in a component, the imports
//! wit-bindgen generated; in a native build (a module's own `cargo test`),
//! the in-memory host of [`crate::testing`], so that a module's unit tests
//! call its real [`crate::Module`] implementation.

#[cfg(target_arch = "wasm32")]
pub(crate) use crate::__bindings::handler::correlator::plugin::delivery;
#[cfg(target_arch = "wasm32")]
pub(crate) use crate::__bindings::module::correlator::plugin::{
    clock, config, events, exchange, secrets, state, timers,
};
#[cfg(target_arch = "wasm32")]
pub(crate) use crate::__bindings::module::wasi::logging::logging;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::host::{
    clock, config, delivery, events, exchange, logging, secrets, state, timers,
};
