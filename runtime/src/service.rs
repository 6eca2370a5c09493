//! Telling a service manager how the listener stands (systemd's
//! `Type=notify`): ready once every socket is bound and served, stopping at
//! the first signal. Without `NOTIFY_SOCKET` in the environment (not run by
//! systemd, or `Type=simple`) nothing is sent.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send `state` (`READY=1`, `STOPPING=1`, `STATUS=...` lines) to the
/// socket `NOTIFY_SOCKET` names; `Ok(false)` when there is none. A failure
/// is the caller's to log: the service goes on regardless.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let address = match bytes.strip_prefix(b"@") {
        // An abstract socket (Linux): `@` stands for the leading NUL.
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&path)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(true)
}

/// [`notify`], a failure logged as a warning.
pub fn tell(state: &str) {
    if let Err(error) = notify(state) {
        tracing::warn!("cannot tell the service manager {state:?}: {error}");
    }
}
