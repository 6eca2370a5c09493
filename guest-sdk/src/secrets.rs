//! Secrets the app file grants this instance by name.
//!
//! ```no_run
//! fn smtp_password() -> Result<String, String> {
//!     correlator_sdk::secrets::get("smtp_password")
//!         .ok_or_else(|| "the app file must grant the secret \"smtp_password\"".to_owned())
//! }
//! ```

use crate::sys::secrets as host;

/// The value of a granted secret; `None` for a name the app file did not
/// grant. The host checked at start-up that every granted secret exists.
pub fn get(name: &str) -> Option<String> {
    host::get(name)
}

/// The value of the secret that configuration item `key` names; the error
/// says which grant to add when it is not granted.
pub fn named_by(key: &str, name: &str) -> Result<String, String> {
    get(name).ok_or_else(|| {
        format!(
            "{key} names the secret \"{name}\", which the app file does not grant (grants = {{ secrets = [\"{name}\"] }})"
        )
    })
}
