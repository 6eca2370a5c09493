//! Log lines to the host's diagnostics (`wasi:logging`). The host tags them
//! with the instance name and may limit their rate; they go to standard
//! error, never into the event stream.

use crate::sys::logging::{Level, log};

/// Something a developer of the module wants to see with `RUST_LOG=debug`.
pub fn debug(message: &str) {
    log(Level::Debug, "", message);
}

/// Normal operation worth noting.
pub fn info(message: &str) {
    log(Level::Info, "", message);
}

/// Something unexpected that the module handled.
pub fn warn(message: &str) {
    log(Level::Warn, "", message);
}

/// Something the module could not handle.
pub fn error(message: &str) {
    log(Level::Error, "", message);
}
