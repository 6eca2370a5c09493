//! Durable state: what a module keeps across restarts of the host.
//!
//! The host keeps each instance's keys and values in its store and makes
//! writes durable at checkpoints: it calls [`Module::checkpoint`], the
//! module writes what changed, and the host commits every module's writes
//! at once with the stream position they reach. [`Module::init`] reads the
//! state back. After a crash a module starts from the last checkpoint,
//! never from half of one.
//!
//! Keep state in ordinary Rust values while processing, and write them in
//! `checkpoint` with [`save`]; that costs one write per checkpoint, not one
//! per record:
//!
//! ```
//! use correlator_sdk::{state, Module};
//! # use correlator_sdk::{Descriptor, Record};
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Counts {
//!     records: u64,
//! }
//!
//! struct Counter {
//!     counts: Counts,
//! }
//!
//! impl Module for Counter {
//! #   fn describe() -> Descriptor { Descriptor::new("counter", "counts records") }
//!     fn init() -> Result<Self, String> {
//!         let counts = state::load("counts")?.unwrap_or_default();
//!         Ok(Counter { counts })
//!     }
//!     fn process(&mut self, _record: &Record<'_>) {
//!         self.counts.records += 1;
//!     }
//!     fn checkpoint(&mut self) {
//!         if let Err(error) = state::save("counts", &self.counts) {
//!             correlator_sdk::log::warn(&error);
//!         }
//!     }
//! }
//! ```
//!
//! [`Module::checkpoint`]: crate::Module::checkpoint
//! [`Module::init`]: crate::Module::init

use crate::__bindings::module::correlator::plugin::state as host;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The bytes stored under `key`, with this run's writes applied.
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::get(key)
}

/// Store `value` under `key`. Refused when the key is empty or longer than
/// 1024 bytes, or when the instance's state would outgrow its
/// `limits.state_mib`.
pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
    host::set(key, value)
}

/// Remove `key`.
pub fn delete(key: &str) {
    host::delete(key);
}

/// Every key the instance has, sorted.
pub fn keys() -> Vec<String> {
    host::keys()
}

/// Store `value` under `key`, serialised compactly (postcard).
pub fn save<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), String> {
    let bytes = postcard::to_stdvec(value)
        .map_err(|error| format!("cannot serialise state \"{key}\": {error}"))?;
    host::set(key, &bytes)
}

/// The value stored under `key` by [`save`], if there is one. An error
/// (naming the key) when the bytes do not deserialise as `T`: state written
/// by another layout, which [`Module::migrate`](crate::Module::migrate)
/// should have rewritten.
pub fn load<T: DeserializeOwned>(key: &str) -> Result<Option<T>, String> {
    let Some(bytes) = host::get(key) else {
        return Ok(None);
    };
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|error| format!("state \"{key}\" does not read as this version's layout: {error}"))
}
