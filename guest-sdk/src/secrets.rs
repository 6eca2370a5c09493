//! Secrets the app file grants this instance by name.
//!
//! ```no_run
//! fn smtp_password() -> Result<String, String> {
//!     correlator_sdk::secrets::get("smtp_password")
//!         .ok_or_else(|| "the app file must grant the secret \"smtp_password\"".to_owned())
//! }
//! ```

use crate::__bindings::module::correlator::plugin::secrets as host;

/// The value of a granted secret; `None` for a name the app file did not
/// grant. The host checked at start-up that every granted secret exists.
pub fn get(name: &str) -> Option<String> {
    host::get(name)
}
